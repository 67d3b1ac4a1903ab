"""Processing - structure - property: join measurements to property tables and fit relations.

Public API: :func:`link`, :func:`fit_hall_petch`, :func:`fit_linear`,
:func:`predict_from_reference`, :func:`read_property_table`, plots in
:mod:`micro_seg.properties.plots`.
"""

from micro_seg.properties.hall_petch import HallPetchFit, fit_hall_petch, hall_petch_x
from micro_seg.properties.link import LinkResult, aggregate_samples, link
from micro_seg.properties.reference import REFERENCE_CONSTANTS, predict_from_reference, reference_materials
from micro_seg.properties.regression import LinearFit, fit_linear, loo_cv_rmse
from micro_seg.properties.tables import parse_unit, read_property_table

__all__ = [
    "HallPetchFit", "fit_hall_petch", "hall_petch_x", "LinkResult", "aggregate_samples", "link",
    "REFERENCE_CONSTANTS", "predict_from_reference", "reference_materials", "LinearFit", "fit_linear",
    "loo_cv_rmse", "parse_unit", "read_property_table",
]
