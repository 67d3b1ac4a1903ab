"""Seeded synthetic microstructures with ground truth (tests, training, demos).

Grain structures (Voronoi tessellations of Poisson, hard-core, lattice and duplex
seed patterns, optionally rolled) come back as label images ``1..N``; phase
structures as boolean masks / class labels with known fractions.

Examples
--------
>>> from micro_seg.synth import voronoi_labels, boolean_disks
>>> voronoi_labels((32, 32), n_grains=5, seed=0).dtype
dtype('int32')
"""

from __future__ import annotations

from micro_seg.synth.grains import (
    GRAIN_KINDS,
    grain_seeds,
    relabel_consecutive,
    voronoi_from_seeds,
    voronoi_labels,
)
from micro_seg.synth.micrograph import (
    DIFFICULTIES,
    STYLES,
    GrainDegradations,
    SynthGrains,
    degradations,
    grain_micrograph,
)
from micro_seg.synth.phases import boolean_disks, boolean_disks_fraction, boolean_germs
from micro_seg.synth.render import (
    grain_boundaries,
    render_etched_optical,
    render_sem,
    render_tint,
)
from micro_seg.synth.twins import add_twins

__all__ = [
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
    "boolean_disks",
    "boolean_disks_fraction",
    "boolean_germs",
    "grain_seeds",
    "relabel_consecutive",
    "voronoi_from_seeds",
    "voronoi_labels",
]
