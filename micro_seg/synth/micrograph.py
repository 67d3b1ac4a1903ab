"""One call to a realistic synthetic grain micrograph with its exact ground truth.

Examples
--------
>>> from micro_seg.synth import grain_micrograph
>>> s = grain_micrograph((128, 128), n_grains=30, difficulty="hard", seed=0)
>>> s.image.dtype, s.labels.dtype, s.n_grains == int(s.labels.max())
(dtype('uint8'), dtype('int32'), True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from micro_seg.synth._rng import as_rng, check_positive, check_shape
from micro_seg.synth.grains import voronoi_labels
from micro_seg.synth.layers import (
    apply_blur,
    apply_illumination,
    apply_noise,
    pit_layer,
    scratch_layer,
    to_uint,
)
from micro_seg.synth.render import (
    grain_boundaries,
    twin_boundaries,
    render_etched_optical,
    render_sem,
    render_tint,
)
from micro_seg.synth.twins import add_twins

__all__ = ["GrainDegradations", "SynthGrains", "degradations", "grain_micrograph", "STYLES",
           "DIFFICULTIES"]

STYLES = ("optical", "sem", "tint")
DIFFICULTIES = {"clean": 0.0, "easy": 0.25, "medium": 0.5, "hard": 1.0}


@dataclass(frozen=True)
class GrainDegradations:
    """Everything that makes a synthetic grain micrograph hard (see :func:`degradations`).

    Attributes
    ----------
    waviness : float
        Boundary curvature (fraction of the grain spacing).
    roughness : float
        Small-scale boundary jaggedness (fraction of the grain spacing); the
        tint style adds 0.04.
    boundary_width_px : float
        Groove width (FWHM) in the optical style.
    boundary_depth : float
        Groove darkness at full etch (optical).
    fade_fraction : float
        Fraction of boundary segments with incomplete etching (optical) or a
        look-alike neighbour (SEM / tint).
    contrast_spread : float
        Spread of etch strength (and line width) among fully etched boundary
        segments (optical): weak boundaries are faint and thin, as in real sections.
    twin_probability : float
        Chance that a grain contains annealing twins.
    twin_contrast : float
        Twin-line strength relative to grain boundaries (optical).
    junction_fraction : float
        Fraction of triple junctions with a dark patch (optical).
    grain_shading : float
        Grain-to-grain brightness spread (optical).
    pit_density : float
        Etch pits per pixel^2.
    scratch_count : int
        Number of polishing scratches.
    illumination_gradient, vignetting : float
        Uneven illumination (relative amplitudes).
    blur_sigma_px : float
        Gaussian blur.
    noise_sd : float
        Additive Gaussian noise (fraction of full scale).
    photons : float or None
        Full-scale count for Poisson noise (None: off).
    scan_line_sd : float
        Per-row offset noise (SEM style only).
    """

    waviness: float = 0.15
    roughness: float = 0.0
    boundary_width_px: float = 2.0
    boundary_depth: float = 0.75
    fade_fraction: float = 0.0
    contrast_spread: float = 0.2
    twin_probability: float = 0.0
    twin_contrast: float = 0.6
    junction_fraction: float = 0.0
    grain_shading: float = 0.02
    pit_density: float = 0.0
    scratch_count: int = 0
    illumination_gradient: float = 0.0
    vignetting: float = 0.0
    blur_sigma_px: float = 0.5
    noise_sd: float = 0.01
    photons: float | None = None
    scan_line_sd: float = 0.0


_CLEAN = GrainDegradations()
_HARD = GrainDegradations(
    waviness=0.25,
    roughness=0.05,
    boundary_width_px=2.4,
    boundary_depth=0.6,
    fade_fraction=0.45,
    contrast_spread=0.8,
    twin_probability=0.6,
    twin_contrast=0.7,
    junction_fraction=0.35,
    grain_shading=0.06,
    pit_density=6e-4,
    scratch_count=8,
    illumination_gradient=0.45,
    vignetting=0.4,
    blur_sigma_px=1.4,
    noise_sd=0.02,
    photons=400.0,
    scan_line_sd=0.03,
)


def degradations(difficulty: str | float = "medium", **overrides) -> GrainDegradations:
    """Degradation settings for a difficulty, optionally overriding single fields.

    Parameters
    ----------
    difficulty : {"clean", "easy", "medium", "hard"} or float in [0, 1]
        Settings interpolate linearly between clean (0) and hard (1).
    **overrides
        Any :class:`GrainDegradations` field.

    Examples
    --------
    >>> degradations("clean").twin_probability
    0.0
    >>> degradations(1.0, scratch_count=0).scratch_count
    0
    """
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            msg = f"difficulty={difficulty!r}: expected one of {list(DIFFICULTIES)} or a number"
            raise ValueError(msg)
        t = DIFFICULTIES[difficulty]
    else:
        t = float(difficulty)
        if not 0.0 <= t <= 1.0:
            msg = f"difficulty={difficulty!r}: a number must be in [0, 1]"
            raise ValueError(msg)
    values = {}
    for f in dataclasses.fields(GrainDegradations):
        a, b = getattr(_CLEAN, f.name), getattr(_HARD, f.name)
        if f.name == "photons":
            # Poisson noise fades in: photons from very many (no noise) down to the hard value
            values[f.name] = None if t == 0 else float(b / t**2)
        elif f.name == "scratch_count":
            values[f.name] = int(round(a + t * (b - a)))
        else:
            values[f.name] = float(a + t * (b - a))
    valid = {f.name for f in dataclasses.fields(GrainDegradations)}
    unknown = set(overrides) - valid
    if unknown:
        msg = f"unknown degradation(s) {sorted(unknown)}: valid are {sorted(valid)}"
        raise TypeError(msg)
    values.update(overrides)
    return GrainDegradations(**values)


@dataclass
class SynthGrains:
    """A synthetic grain micrograph and its ground truth.

    Attributes
    ----------
    image : ndarray
        uint8 / uint16, ``(rows, cols)`` or ``(rows, cols, 3)`` for the tint style.
    labels : ndarray of int32
        Grain instance truth, grains ``1..N`` (twins merged into their parent grain).
    boundaries : ndarray of bool
        True grain boundaries (1-2 px line from ``labels``; twin boundaries excluded).
    n_grains : int
        Exact number of grains in ``labels`` (edge grains included).
    pixel_size_um : float
        Pixel size in micrometres.
    twin_mask : ndarray of bool
        Pixels inside annealing-twin bands.
    twin_boundaries : ndarray of bool
        Twin-boundary lines (visible in the image, *not* grain boundaries): the
        negatives a grain-boundary detector must learn to ignore.
    meta : dict
        All generation parameters, plus ``grains_per_mm2`` (the structure's true
        density, from the seed density) and ``mean_area_um2`` of the structure.
    artefact_mask : ndarray of bool
        Pixels of visible etch pits and polishing scratches (the layer darkens or
        brightens them by more than 10%): preparation artefacts, *not* grain
        boundaries.
    """

    image: np.ndarray
    labels: np.ndarray
    boundaries: np.ndarray
    n_grains: int
    pixel_size_um: float
    twin_mask: np.ndarray
    twin_boundaries: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    artefact_mask: np.ndarray | None = None


def grain_micrograph(
    shape: Sequence[int] = (512, 512),
    *,
    n_grains: float = 150,
    kind: str = "poisson",
    style: str = "optical",
    difficulty: str | float = "medium",
    aspect_ratio: float = 1.0,
    angle_deg: float = 0.0,
    pixel_size_um: float = 0.5,
    bit_depth: int = 8,
    seed: int | np.random.Generator | None = 0,
    kind_options: dict | None = None,
    **overrides,
) -> SynthGrains:
    """Synthetic grain micrograph with exact truth (labels, boundaries, grain count).

    Parameters
    ----------
    shape : (rows, cols), optional
        Image size in pixels.
    n_grains : float, optional
        Grains per field area (the structure's density times the field area).
    kind : {"poisson", "hardcore", "lattice", "bimodal"}, optional
        Grain structure (see :func:`micro_seg.synth.voronoi_labels`).
    style : {"optical", "sem", "tint"}, optional
        Etched bright-field optical (dark boundary grooves), SEM channelling
        contrast (no lines), or colour tint etch (RGB).
    difficulty : {"clean", "easy", "medium", "hard"} or float, optional
        Preset of degradations (see :func:`degradations`).
    aspect_ratio, angle_deg : float, optional
        Rolled / elongated grains (long axis at ``angle_deg`` from the columns).
    pixel_size_um : float, optional
        Pixel size recorded in the result (micrometres).
    bit_depth : {8, 16}, optional
        Output image dtype.
    seed : int or Generator, optional
        Random seed; the same arguments and seed give the same result.
    kind_options : dict, optional
        Extra keywords for :func:`micro_seg.synth.voronoi_labels` (``hardcore``,
        ``jitter``, ``size_ratio``, ``coarse_area_fraction``).
    **overrides
        Any field of :class:`GrainDegradations`, e.g. ``twin_probability=0.8``.

    Returns
    -------
    SynthGrains

    Examples
    --------
    >>> s = grain_micrograph((96, 96), n_grains=20, style="sem", seed=1, twin_probability=1.0)
    >>> bool(s.twin_mask.any()), s.image.shape
    (True, (96, 96))
    """
    shape = check_shape(shape)
    if style not in STYLES:
        msg = f"style={style!r}: expected one of {', '.join(map(repr, STYLES))}"
        raise ValueError(msg)
    px = check_positive("pixel_size_um", pixel_size_um)
    deg = degradations(difficulty, **overrides)
    rng = as_rng(seed)
    labels = voronoi_labels(
        shape, n_grains=n_grains, seed=rng, kind=kind, aspect_ratio=aspect_ratio,
        angle_deg=angle_deg, waviness=deg.waviness,
        roughness=deg.roughness + (0.04 if style == "tint" else 0.0), **(kind_options or {}),
    )
    twin_ids, twin_parent = add_twins(labels, probability=deg.twin_probability, seed=rng)
    if style == "optical":
        scene = render_etched_optical(
            labels, boundary_width_px=deg.boundary_width_px, boundary_depth=deg.boundary_depth,
            twin_ids=twin_ids, twin_parent=twin_parent, twin_contrast=deg.twin_contrast,
            fade_fraction=deg.fade_fraction, contrast_spread=deg.contrast_spread,
            junction_fraction=deg.junction_fraction,
            grain_shading=deg.grain_shading, seed=rng,
        )
    elif style == "sem":
        scene = render_sem(
            labels, twin_ids=twin_ids, twin_parent=twin_parent,
            fade_fraction=deg.fade_fraction, seed=rng,
        )
    else:
        scene = render_tint(
            labels, twin_ids=twin_ids, twin_parent=twin_parent,
            fade_fraction=deg.fade_fraction, seed=rng,
        )
    pits = pit_layer(shape, density=deg.pit_density, seed=rng)
    scratches = scratch_layer(shape, count=deg.scratch_count, seed=rng,
                              width_px=1.0 if style != "sem" else 1.5)
    artefacts = (pits > 0.1) | (scratches > 0.1)
    if scene.ndim == 3:
        pits, scratches = pits[..., None], scratches[..., None]
    scene = scene * (1 - pits)
    if style == "sem":  # SEM scratches show bright and dark edges; keep it simple: bright
        scene = np.clip(scene + 0.5 * scratches, 0, 1)
    else:
        scene = scene * (1 - scratches)
    img = apply_illumination(
        scene, gradient=deg.illumination_gradient, vignetting=deg.vignetting, seed=rng
    )
    img = apply_blur(img, sigma_px=deg.blur_sigma_px)
    img = apply_noise(
        img, sd=deg.noise_sd, photons=deg.photons,
        scan_line_sd=deg.scan_line_sd if style == "sem" else 0.0, seed=rng,
    )
    image = to_uint(img, bit_depth=bit_depth)
    n_true = int(labels.max())
    density_px = float(n_grains) / (shape[0] * shape[1])
    meta = {
        "shape": list(shape),
        "n_grains_density_param": float(n_grains),
        "kind": kind,
        "style": style,
        "difficulty": difficulty,
        "aspect_ratio": aspect_ratio,
        "angle_deg": angle_deg,
        "bit_depth": bit_depth,
        "seed": seed if isinstance(seed, (int, type(None))) else "generator",
        "kind_options": dict(kind_options or {}),
        "degradations": dataclasses.asdict(deg),
        "n_twins": int(len(twin_parent)),
        "grains_per_mm2": density_px / (px * 1e-3) ** 2,
        "mean_area_um2": px**2 / density_px,
    }
    return SynthGrains(
        image=image,
        labels=labels,
        boundaries=grain_boundaries(labels),
        n_grains=n_true,
        pixel_size_um=px,
        twin_mask=twin_ids > 0,
        twin_boundaries=twin_boundaries(labels, twin_ids),
        meta=meta,
        artefact_mask=artefacts,
    )
