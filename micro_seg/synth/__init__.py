"""Seeded synthetic microstructures with ground truth (tests, training, demos).

Entry points:

- :func:`grain_micrograph` -> :class:`SynthGrains`: etched optical, SEM or
  colour-tint grain images with instance labels, true boundaries (twins
  excluded), exact grain count, twin mask; difficulty presets add faded
  boundaries, annealing twins, etch pits, scratches, uneven illumination, blur
  and noise.
- :func:`phase_micrograph` -> :class:`SynthPhases`: 2-4 phase structures with
  class labels and exact area fractions.
- :func:`defect_micrograph` -> :class:`SynthDefects`: pores, cracks and
  inclusions with class and instance labels and exact counts.

Building blocks: :func:`voronoi_labels` (Poisson, hard-core, lattice, bimodal,
rolled, wavy grain structures), :func:`boolean_disks` (with
:func:`boolean_disks_fraction`), the renderers and the degradation layers.

Examples
--------
>>> from micro_seg.synth import voronoi_labels, boolean_disks
>>> voronoi_labels((32, 32), n_grains=5, seed=0).dtype
dtype('int32')
"""

from __future__ import annotations

from micro_seg.synth.defects import (
    DEFECT_CLASSES,
    SynthDefects,
    crack_mask,
    defect_micrograph,
    inclusion_mask,
    pore_mask,
)
from micro_seg.synth.fields import illumination_field, smooth_noise
from micro_seg.synth.grains import (
    GRAIN_KINDS,
    grain_seeds,
    merge_fragments,
    relabel_consecutive,
    voronoi_from_seeds,
    voronoi_labels,
    wavy_displacement,
)
from micro_seg.synth.layers import (
    apply_blur,
    apply_illumination,
    apply_noise,
    pit_layer,
    scratch_layer,
    to_uint,
)
from micro_seg.synth.micrograph import (
    DIFFICULTIES,
    STYLES,
    GrainDegradations,
    SynthGrains,
    degradations,
    grain_micrograph,
)
from micro_seg.synth.phase_micrograph import SynthPhases, phase_micrograph
from micro_seg.synth.phases import (
    PHASE_STRUCTURES,
    boolean_disks,
    boolean_disks_fraction,
    boolean_germs,
    phase_map,
)
from micro_seg.synth.render import (
    grain_boundaries,
    render_etched_optical,
    render_sem,
    render_tint,
    twin_boundaries,
)
from micro_seg.synth.twins import add_twins

__all__ = [
    "DEFECT_CLASSES",
    "PHASE_STRUCTURES",
    "SynthDefects",
    "SynthPhases",
    "apply_blur",
    "apply_illumination",
    "apply_noise",
    "crack_mask",
    "defect_micrograph",
    "illumination_field",
    "inclusion_mask",
    "merge_fragments",
    "phase_map",
    "phase_micrograph",
    "pit_layer",
    "pore_mask",
    "scratch_layer",
    "smooth_noise",
    "to_uint",
    "wavy_displacement",
    "DIFFICULTIES",
    "GRAIN_KINDS",
    "STYLES",
    "GrainDegradations",
    "SynthGrains",
    "add_twins",
    "degradations",
    "grain_boundaries",
    "grain_micrograph",
    "render_etched_optical",
    "render_sem",
    "render_tint",
    "twin_boundaries",
    "boolean_disks",
    "boolean_disks_fraction",
    "boolean_germs",
    "grain_seeds",
    "relabel_consecutive",
    "voronoi_from_seeds",
    "voronoi_labels",
]
