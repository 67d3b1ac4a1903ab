"""Synthetic multi-phase micrographs with exact class truth and area fractions.

Examples
--------
>>> from micro_seg.synth import phase_micrograph
>>> s = phase_micrograph((128, 128), fractions=(0.6, 0.4), seed=0)
>>> s.fractions.round(3).tolist()
[0.6, 0.4]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from micro_seg.synth._rng import as_rng, check_positive, check_shape
from micro_seg.synth.fields import smooth_noise
from micro_seg.synth.layers import (
    apply_blur,
    apply_illumination,
    apply_noise,
    pit_layer,
    scratch_layer,
    to_uint,
)
from micro_seg.synth.micrograph import degradations
from micro_seg.synth.phases import _check_fractions, phase_map

__all__ = ["SynthPhases", "phase_micrograph"]

_LEVELS = {
    # optical bright field: bright matrix, dark etched second phase, grey third
    "optical": (0.85, 0.32, 0.58, 0.18),
    # SEM backscatter: heavier-element phases brighter
    "sem": (0.35, 0.78, 0.58, 0.92),
}


@dataclass
class SynthPhases:
    """A synthetic multi-phase micrograph and its truth.

    Attributes
    ----------
    image : ndarray
        uint8 / uint16 grey image.
    classes : ndarray of uint8
        Class labels ``0..K-1`` (value i means ``class_names[i]``).
    fractions : ndarray of float
        Exact area fraction of each class in ``classes``.
    class_names : tuple of str
        Phase names.
    pixel_size_um : float
        Pixel size in micrometres.
    meta : dict
        Generation parameters (target fractions included).
    """

    image: np.ndarray
    classes: np.ndarray
    fractions: np.ndarray
    class_names: tuple[str, ...]
    pixel_size_um: float
    meta: dict = field(default_factory=dict)


def phase_micrograph(
    shape: Sequence[int] = (512, 512),
    *,
    fractions: Sequence[float] = (0.7, 0.3),
    structure: str = "blobs",
    style: str = "optical",
    difficulty: str | float = "medium",
    class_names: Sequence[str] | None = None,
    levels: Sequence[float] | None = None,
    correlation_px: float = 10.0,
    n_grains: float = 200,
    radius_px: float = 6.0,
    pixel_size_um: float = 0.5,
    bit_depth: int = 8,
    seed: int | np.random.Generator | None = 0,
) -> SynthPhases:
    """Two- to four-phase micrograph with class truth and exact area fractions.

    Parameters
    ----------
    shape : (rows, cols), optional
        Image size in pixels.
    fractions : sequence of float, optional
        Target area fractions, class 0 (matrix) first; they sum to 1.
    structure : {"blobs", "grains", "disks"}, optional
        Morphology (see :func:`micro_seg.synth.phases.phase_map`).
    style : {"optical", "sem"}, optional
        Grey levels of the phases: optical (bright matrix, dark phases) or SEM
        backscatter (dark matrix, bright phases); override with ``levels``.
    difficulty : {"clean", "easy", "medium", "hard"} or float, optional
        Texture, illumination, blur, noise, pits and scratches (as in
        :func:`micro_seg.synth.grain_micrograph`).
    class_names : sequence of str, optional
        Default ``("matrix", "phase1", ...)``.
    levels : sequence of float, optional
        Mean grey level of each phase in ``[0, 1]``.
    correlation_px, n_grains, radius_px : float, optional
        Size scale of the chosen structure.
    pixel_size_um : float, optional
        Pixel size recorded in the result.
    bit_depth : {8, 16}, optional
        Output dtype.
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    SynthPhases

    Examples
    --------
    >>> s = phase_micrograph((96, 96), fractions=(0.5, 0.3, 0.2), structure="grains",
    ...                      style="sem", seed=2)
    >>> s.class_names, s.classes.max()
    (('matrix', 'phase1', 'phase2'), np.uint8(2))
    """
    shape = check_shape(shape)
    f = _check_fractions(fractions)
    k = len(f)
    if style not in _LEVELS:
        msg = f"style={style!r}: expected 'optical' or 'sem'"
        raise ValueError(msg)
    names = tuple(class_names) if class_names is not None else (
        ("matrix",) + tuple(f"phase{i}" for i in range(1, k))
    )
    if len(names) != k:
        msg = f"class_names={class_names!r}: expected {k} names (one per fraction)"
        raise ValueError(msg)
    lev = np.asarray(levels if levels is not None else _LEVELS[style][:k], np.float32)
    if lev.shape != (k,) or np.any((lev < 0) | (lev > 1)):
        msg = f"levels={levels!r}: expected {k} values in [0, 1]"
        raise ValueError(msg)
    px = check_positive("pixel_size_um", pixel_size_um)
    deg = degradations(difficulty)
    rng = as_rng(seed)
    classes = phase_map(
        shape, fractions=f, structure=structure, correlation_px=correlation_px,
        n_grains=n_grains, radius_px=radius_px, seed=rng,
    )
    # scene: phase level + texture inside phases, softened interfaces
    scene = lev[classes]
    tex = smooth_noise(shape, correlation_px=3.0, seed=rng)
    scene = scene + (0.02 + 0.05 * deg.grain_shading / 0.06) * tex
    if style == "optical":  # etched interfaces: a faint dark rim
        edge = ndi.morphological_gradient(classes, size=3) > 0
        scene = scene * (1.0 - 0.12 * ndi.gaussian_filter(edge.astype(np.float32), 0.8))
    scene = ndi.gaussian_filter(scene, 0.6)
    scene = scene * (1 - pit_layer(shape, density=deg.pit_density / 3, seed=rng))
    scratches = scratch_layer(shape, count=deg.scratch_count // 2, seed=rng)
    scene = scene * (1 - scratches) if style == "optical" else scene + 0.4 * scratches
    img = apply_illumination(
        scene, gradient=deg.illumination_gradient, vignetting=deg.vignetting, seed=rng
    )
    img = apply_blur(img, sigma_px=deg.blur_sigma_px)
    img = apply_noise(img, sd=deg.noise_sd, photons=deg.photons, seed=rng)
    counts = np.bincount(classes.ravel(), minlength=k)
    meta = {
        "shape": list(shape),
        "target_fractions": f.tolist(),
        "structure": structure,
        "style": style,
        "difficulty": difficulty,
        "levels": lev.tolist(),
        "correlation_px": correlation_px,
        "n_grains": n_grains,
        "radius_px": radius_px,
        "bit_depth": bit_depth,
        "seed": seed if isinstance(seed, (int, type(None))) else "generator",
    }
    return SynthPhases(
        image=to_uint(img, bit_depth=bit_depth),
        classes=classes,
        fractions=counts / classes.size,
        class_names=names,
        pixel_size_um=px,
        meta=meta,
    )
