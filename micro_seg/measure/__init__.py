"""Standards-grade measurements in physical units.

* :func:`measure_grains` / :func:`measure_grains_from_boundaries`: ASTM E112
  planimetric and intercept (Heyn, Abrams) grain size, E1382 mean area, E930 ALA,
  distributions, neighbour counts, field statistics.
* :func:`measure_phases`: area fraction per class, E562 point-count emulation,
  per-field statistics.
* :func:`measure_defects`: pores / particles / inclusions: per-object table
  (ECD, Feret, aspect ratio, circularity, solidity, nearest neighbour) and
  E1245-style per-image summary.
* :mod:`micro_seg.measure.astm`: the E112 relations; :mod:`micro_seg.measure.stats`:
  field statistics (mean, s, Student-t 95 % CI, %RA).

Examples
--------
>>> from micro_seg.measure import g_from_intercept
>>> round(g_from_intercept(0.005), 2)
12.0
"""

from __future__ import annotations

from micro_seg.measure.astm import (
    g_from_grains_per_mm2,
    g_from_intercept,
    g_from_mean_area,
    grains_per_mm2_from_g,
    intercept_from_g,
)
from micro_seg.measure.grains import (
    GrainMeasurement,
    combine_grain_fields,
    measure_grains,
    measure_grains_from_boundaries,
)
from micro_seg.measure.defects import DefectMeasurement, measure_defects
from micro_seg.measure.labels import labels_from_boundaries, prepare_labels
from micro_seg.measure.phases import PhaseMeasurement, combine_phase_fields, measure_phases
from micro_seg.measure.stats import field_grid, field_statistics, t_critical

__all__ = [
    "DefectMeasurement",
    "GrainMeasurement",
    "PhaseMeasurement",
    "measure_defects",
    "measure_phases",
    "combine_grain_fields",
    "combine_phase_fields",
    "field_grid",
    "field_statistics",
    "g_from_grains_per_mm2",
    "g_from_intercept",
    "g_from_mean_area",
    "grains_per_mm2_from_g",
    "intercept_from_g",
    "labels_from_boundaries",
    "measure_grains",
    "measure_grains_from_boundaries",
    "prepare_labels",
    "t_critical",
]
