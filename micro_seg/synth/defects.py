"""Synthetic polished sections with pores, cracks and inclusions, and their truth.

Class labels: 0 background, 1 pore, 2 crack, 3 inclusion. Objects never touch
(each is placed where a 2-pixel ring around it is free), so every instance is
one connected region and the counts are exact.

Examples
--------
>>> from micro_seg.synth import defect_micrograph
>>> s = defect_micrograph((160, 160), n_pores=5, n_cracks=1, n_inclusions=4, seed=0)
>>> s.counts
{'pore': 5, 'crack': 1, 'inclusion': 4}
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
    scratch_layer,
    to_uint,
)
from micro_seg.synth.micrograph import degradations

__all__ = ["DEFECT_CLASSES", "SynthDefects", "defect_micrograph", "pore_mask", "crack_mask",
           "inclusion_mask"]

DEFECT_CLASSES = ("background", "pore", "crack", "inclusion")


@dataclass
class SynthDefects:
    """A synthetic polished section with defects, and its truth.

    Attributes
    ----------
    image : ndarray
        uint8 / uint16 grey image.
    classes : ndarray of uint8
        0 background, 1 pore, 2 crack, 3 inclusion (see ``class_names``).
    instances : ndarray of int32
        One label per object (``1..n``), 0 background.
    counts : dict
        Exact number of objects per class name.
    class_names : tuple of str
        ``("background", "pore", "crack", "inclusion")``.
    pixel_size_um : float
        Pixel size in micrometres.
    meta : dict
        Generation parameters.
    """

    image: np.ndarray
    classes: np.ndarray
    instances: np.ndarray
    counts: dict
    class_names: tuple[str, ...]
    pixel_size_um: float
    meta: dict = field(default_factory=dict)


def pore_mask(radius_px: float, *, irregularity: float = 0.15,
              seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Boolean mask of one roundish pore (radius modulated by low harmonics).

    Examples
    --------
    >>> m = pore_mask(6, irregularity=0, seed=0)
    >>> abs(int(m.sum()) - round(np.pi * 36)) < 10
    True
    """
    rng = as_rng(seed)
    r = check_positive("radius_px", radius_px)
    half = int(np.ceil(r * (1 + 3 * irregularity))) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    theta = np.arctan2(yy, xx)
    rad = np.full_like(theta, r)
    for k in range(2, 6):
        amp = r * irregularity / k * rng.standard_normal()
        rad += amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy, xx) <= rad


def inclusion_mask(length_px: float, aspect_ratio: float, angle_deg: float) -> np.ndarray:
    """Boolean mask of an elongated (elliptical) inclusion.

    Examples
    --------
    >>> m = inclusion_mask(20, 4, 0)
    >>> m.shape[1] > m.shape[0]
    True
    """
    a = check_positive("length_px", length_px) / 2
    b = max(0.8, a / check_positive("aspect_ratio", aspect_ratio))
    t = np.deg2rad(angle_deg)
    half = int(np.ceil(a)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    u = xx * np.cos(t) - yy * np.sin(t)
    v = xx * np.sin(t) + yy * np.cos(t)
    m = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def crack_mask(length_px: float, *, width_px: float = 2.0,
               seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Boolean mask of one jagged crack (persistent random walk, tapering ends, a branch).

    Examples
    --------
    >>> m = crack_mask(60, seed=1)
    >>> bool(m.sum() > 60)
    True
    """
    rng = as_rng(seed)
    length = check_positive("length_px", length_px)
    w = check_positive("width_px", width_px)

    def walk(n_steps, heading):
        turns = rng.normal(0, 0.35, n_steps)
        heading = heading + np.cumsum(0.15 * turns) + 0.5 * turns  # jagged but persistent
        return np.cumsum(np.stack([np.sin(heading), np.cos(heading)], axis=1) * 0.7, axis=0)

    n = int(length / 0.7)
    main = walk(n, rng.uniform(0, np.pi))
    s = np.linspace(0, 1, n)
    widths = [w * np.sin(np.pi * np.clip(s, 0.02, 0.98)) ** 0.5]
    paths = [main]
    if n > 40 and rng.random() < 0.6:  # a side branch
        j = int(rng.integers(n // 4, 3 * n // 4))
        nb = int(n * rng.uniform(0.15, 0.35))
        br = main[j] + walk(nb, rng.uniform(0, 2 * np.pi))
        paths.append(br)
        widths.append(w * 0.6 * np.linspace(1, 0.3, nb))
    pts = np.vstack(paths)
    wid = np.concatenate(widths)
    lo = np.floor(pts.min(axis=0)) - np.ceil(w) - 2
    pts = pts - lo
    shape = tuple((np.ceil(pts.max(axis=0)) + np.ceil(w) + 3).astype(int))
    mask = np.zeros(shape, bool)
    for rad in np.unique(np.round(np.maximum(wid, 0.6) / 2 * 2) / 2):  # half-pixel radius bins
        sel = np.round(np.maximum(wid, 0.6) / 2 * 2) / 2 == rad
        seedimg = np.zeros(shape, bool)
        rr = np.round(pts[sel, 0]).astype(int)
        cc = np.round(pts[sel, 1]).astype(int)
        seedimg[rr, cc] = True
        if rad >= 1.0:
            seedimg = ndi.distance_transform_edt(~seedimg) <= rad
        mask |= seedimg
    # one connected piece (8-connectivity)
    lab, n_cc = ndi.label(mask, structure=np.ones((3, 3)))
    if n_cc > 1:
        mask = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return mask


def _place(occupied: np.ndarray, obj: np.ndarray, rng: np.random.Generator,
           tries: int = 60) -> tuple[int, int] | None:
    """Random top-left corner where ``obj`` plus a 2-px ring is free and fully inside."""
    rows, cols = occupied.shape
    h, w = obj.shape
    if h >= rows or w >= cols:
        return None
    ring = ndi.binary_dilation(np.pad(obj, 2), iterations=2)
    for _ in range(tries):
        r = int(rng.integers(0, rows - h + 1))
        c = int(rng.integers(0, cols - w + 1))
        r0, c0 = r - 2, c - 2
        rs0, cs0 = max(r0, 0), max(c0, 0)
        rs1, cs1 = min(r0 + h + 4, rows), min(c0 + w + 4, cols)
        sub = ring[rs0 - r0 : rs1 - r0, cs0 - c0 : cs1 - c0]
        if not (occupied[rs0:rs1, cs0:cs1] & sub).any():
            return r, c
    return None


def defect_micrograph(
    shape: Sequence[int] = (512, 512),
    *,
    n_pores: int = 25,
    n_cracks: int = 2,
    n_inclusions: int = 20,
    pore_radius_px: tuple[float, float] = (2.0, 12.0),
    crack_length_px: tuple[float, float] = (60.0, 200.0),
    inclusion_length_px: tuple[float, float] = (6.0, 30.0),
    inclusion_angle_deg: float = 0.0,
    difficulty: str | float = "medium",
    pixel_size_um: float = 0.5,
    bit_depth: int = 8,
    seed: int | np.random.Generator | None = 0,
) -> SynthDefects:
    """Polished section with pores, cracks and inclusions: image, classes, instances, counts.

    Pores are round dark blobs (radius log-uniform in ``pore_radius_px``),
    cracks thin jagged dark lines (occasionally branched), inclusions small
    elongated dark-grey particles roughly aligned with ``inclusion_angle_deg``
    (the rolling direction). Polishing scratches and stains (by ``difficulty``)
    are preparation artefacts, not defects: they are not in the truth.

    Parameters
    ----------
    shape : (rows, cols), optional
        Image size.
    n_pores, n_cracks, n_inclusions : int, optional
        Exact object counts (an object that finds no free room is dropped and
        the counts report what was placed).
    pore_radius_px, crack_length_px, inclusion_length_px : (float, float), optional
        Size ranges.
    inclusion_angle_deg : float, optional
        Mean inclusion orientation (degrees counter-clockwise from the columns).
    difficulty : {"clean", "easy", "medium", "hard"} or float, optional
        Degradations (illumination, blur, noise, scratches, stains).
    pixel_size_um : float, optional
        Pixel size recorded in the result.
    bit_depth : {8, 16}, optional
        Output dtype.
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    SynthDefects

    Examples
    --------
    >>> s = defect_micrograph((128, 128), n_pores=3, n_cracks=0, n_inclusions=0, seed=1)
    >>> int(s.instances.max()), sorted(set(s.classes.ravel().tolist()))
    (3, [0, 1])
    """
    shape = check_shape(shape)
    counts_in = {"pore": int(n_pores), "crack": int(n_cracks), "inclusion": int(n_inclusions)}
    for name, v in counts_in.items():
        if v < 0:
            msg = f"n_{name}s={v!r}: must be >= 0"
            raise ValueError(msg)
    px = check_positive("pixel_size_um", pixel_size_um)
    deg = degradations(difficulty)
    rng = as_rng(seed)
    classes = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.int32)
    occupied = np.zeros(shape, bool)
    counts = {"pore": 0, "crack": 0, "inclusion": 0}
    shade = np.zeros(shape, np.float32)  # darkness of each object's pixels
    objects = (
        [("crack", 2)] * counts_in["crack"]
        + [("pore", 1)] * counts_in["pore"]
        + [("inclusion", 3)] * counts_in["inclusion"]
    )  # big, awkward objects first
    for name, cls in objects:
        if name == "pore":
            lo, hi = np.log(pore_radius_px[0]), np.log(pore_radius_px[1])
            r = float(np.exp(rng.uniform(lo, hi)))
            obj = pore_mask(r, irregularity=rng.uniform(0.03, 0.25), seed=rng)
            dark = rng.uniform(0.8, 0.92)
        elif name == "crack":
            obj = crack_mask(rng.uniform(*crack_length_px), width_px=rng.uniform(1.5, 3.5),
                             seed=rng)
            dark = rng.uniform(0.7, 0.88)
        else:
            obj = inclusion_mask(
                rng.uniform(*inclusion_length_px), rng.uniform(2.0, 6.0),
                inclusion_angle_deg + rng.normal(0, 12),
            )
            dark = rng.uniform(0.4, 0.55)
        at = _place(occupied, obj, rng)
        if at is None:
            continue
        r, c = at
        sl = (slice(r, r + obj.shape[0]), slice(c, c + obj.shape[1]))
        occupied[sl] |= obj
        classes[sl][obj] = cls
        counts[name] += 1
        instances[sl][obj] = int(instances.max()) + 1
        shade[sl][obj] = dark
    # polished matrix: bright, faint texture, stains
    scene = 0.82 + 0.012 * smooth_noise(shape, correlation_px=4.0, seed=rng)
    stains = np.clip(smooth_noise(shape, correlation_px=min(shape) / 6, seed=rng) - 1.0, 0, None)
    scene = scene * (1 - 0.25 * deg.fade_fraction * stains)
    soft = ndi.gaussian_filter(shade, 0.6)  # anti-aliased object edges
    scene = scene * (1 - np.maximum(soft, shade * 0.9))
    scene = scene * (1 - scratch_layer(shape, count=deg.scratch_count, seed=rng,
                                       strength=(0.1, 0.35)))
    img = apply_illumination(
        scene, gradient=deg.illumination_gradient, vignetting=deg.vignetting, seed=rng
    )
    img = apply_blur(img, sigma_px=deg.blur_sigma_px)
    img = apply_noise(img, sd=deg.noise_sd, photons=deg.photons, seed=rng)
    meta = {
        "shape": list(shape),
        "requested": counts_in,
        "pore_radius_px": list(pore_radius_px),
        "crack_length_px": list(crack_length_px),
        "inclusion_length_px": list(inclusion_length_px),
        "inclusion_angle_deg": inclusion_angle_deg,
        "difficulty": difficulty,
        "bit_depth": bit_depth,
        "seed": seed if isinstance(seed, (int, type(None))) else "generator",
    }
    return SynthDefects(
        image=to_uint(img, bit_depth=bit_depth),
        classes=classes,
        instances=instances,
        counts=counts,
        class_names=DEFECT_CLASSES,
        pixel_size_um=px,
        meta=meta,
    )
