"""Image degradations shared by all synthetic micrographs.

Every ``*_layer`` function returns a float32 map in ``[0, 1]`` (1 = full
effect) that a renderer combines with its scene, e.g. ``image * (1 - layer)``
for dark features. The ``apply_*`` functions transform a float image in
``[0, 1]``.

Examples
--------
>>> import numpy as np
>>> from micro_seg.synth.layers import pit_layer, to_uint
>>> pits = pit_layer((64, 64), density=0.002, seed=0)
>>> img = to_uint(0.8 * (1 - 0.7 * pits), bit_depth=8)
>>> img.dtype
dtype('uint8')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from micro_seg.synth._rng import as_rng, check_positive, check_shape
from micro_seg.synth.fields import illumination_field

__all__ = [
    "pit_layer",
    "scratch_layer",
    "apply_illumination",
    "apply_blur",
    "apply_noise",
    "to_uint",
]


def _splat(acc: np.ndarray, pts: np.ndarray, weights: np.ndarray) -> None:
    """Add ``weights`` at sub-pixel points ``pts`` (row, col) with bilinear spreading."""
    rows, cols = acc.shape
    r0 = np.floor(pts[:, 0]).astype(np.int64)
    c0 = np.floor(pts[:, 1]).astype(np.int64)
    fr = pts[:, 0] - r0
    fc = pts[:, 1] - c0
    for dr, dc, w in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        r, c = r0 + dr, c0 + dc
        ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        np.add.at(acc, (r[ok], c[ok]), (weights * w)[ok])


def pit_layer(
    shape: Sequence[int],
    *,
    density: float,
    seed: int | np.random.Generator | None = None,
    radius_px: tuple[float, float] = (0.6, 2.2),
    strength: tuple[float, float] = (0.35, 0.95),
) -> np.ndarray:
    """Small round dark dots (etch pits, dust), as a darkness map in ``[0, 1]``.

    Parameters
    ----------
    shape : (rows, cols)
        Output shape.
    density : float
        Pits per pixel^2.
    seed : int or Generator, optional
        Random seed.
    radius_px, strength : (float, float), optional
        Uniform ranges of the pit radius and of the darkness at its centre.

    Examples
    --------
    >>> float(pit_layer((32, 32), density=0, seed=0).max())
    0.0
    """
    rows, cols = check_shape(shape)
    dens = check_positive("density", density, allow_zero=True)
    rng = as_rng(seed)
    n = rng.poisson(dens * rows * cols)
    out = np.zeros((rows, cols), np.float32)
    if n == 0:
        return out
    pts = rng.random((n, 2)) * [rows, cols] - 0.5
    rad = rng.uniform(*radius_px, n)
    amp = rng.uniform(*strength, n)
    # two size classes, each blurred once: peak of a blurred unit impulse is 1/(2 pi s^2)
    for small in (True, False):
        sel = (rad < 1.3) if small else (rad >= 1.3)
        if not sel.any():
            continue
        sigma = 0.8 if small else 1.6
        acc = np.zeros((rows, cols), np.float32)
        _splat(acc, pts[sel], amp[sel] * 2 * np.pi * sigma**2)
        out += ndi.gaussian_filter(acc, sigma).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def scratch_layer(
    shape: Sequence[int],
    *,
    count: int,
    seed: int | np.random.Generator | None = None,
    width_px: float = 1.0,
    strength: tuple[float, float] = (0.25, 0.7),
    curvature: float = 0.6,
) -> np.ndarray:
    """Long thin polishing scratches (straight or gently curved) in ``[0, 1]``.

    Scratches start outside the field and cross a large part of it; their
    strength varies along their length.

    Parameters
    ----------
    shape : (rows, cols)
        Output shape.
    count : int
        Number of scratches.
    seed : int or Generator, optional
        Random seed.
    width_px : float, optional
        Typical line width (FWHM, pixels); each scratch varies around it.
    strength : (float, float), optional
        Range of the peak darkness (or brightness) of a scratch.
    curvature : float, optional
        Maximum total turning angle of a scratch in radians (0 = straight).

    Examples
    --------
    >>> s = scratch_layer((64, 64), count=2, seed=0)
    >>> bool(s.max() > 0.1)
    True
    """
    rows, cols = check_shape(shape)
    count = int(count)
    if count < 0:
        msg = f"count={count!r}: must be >= 0"
        raise ValueError(msg)
    check_positive("width_px", width_px)
    rng = as_rng(seed)
    out = np.zeros((rows, cols), np.float32)
    diag = float(np.hypot(rows, cols))
    groups: dict[float, np.ndarray] = {}
    for _ in range(count):
        # a random line through a point of the field, extended far beyond it
        centre = rng.random(2) * [rows, cols]
        heading = rng.uniform(0, np.pi)
        length = rng.uniform(0.5, 1.3) * diag
        turn = rng.uniform(-curvature, curvature)
        step = 0.5
        s = np.arange(-length / 2, length / 2, step)
        ang = heading + turn * s / length
        pts = np.cumsum(np.stack([np.sin(ang), np.cos(ang)], axis=1) * step, axis=0)
        pts += centre - pts[len(pts) // 2]
        wobble = np.interp(s, np.linspace(s[0], s[-1], 8), rng.standard_normal(8))
        along = np.clip(1.0 + 0.4 * wobble, 0.15, 1.4)
        amp = rng.uniform(*strength) * along
        # quantised widths: one blur per width class keeps big images fast
        sigma = float(np.clip(np.round(width_px * rng.uniform(0.6, 1.5) / 2.355 / 0.25) * 0.25,
                              0.5, None))
        acc = groups.setdefault(sigma, np.zeros((rows, cols), np.float32))
        # line density 1 per pixel length -> blurred peak 1/(sqrt(2 pi) sigma)
        _splat(acc, pts, amp * step * np.sqrt(2 * np.pi) * sigma)
    for sigma, acc in groups.items():
        out += ndi.gaussian_filter(acc, sigma).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def apply_illumination(
    image: np.ndarray,
    *,
    gradient: float = 0.0,
    vignetting: float = 0.0,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Multiply by a smooth uneven-illumination field (linear ramp and vignetting).

    Works on grey ``(rows, cols)`` and colour ``(rows, cols, 3)`` images.

    Examples
    --------
    >>> img = np.full((20, 20), 0.8, np.float32)
    >>> out = apply_illumination(img, gradient=0.3, seed=0)
    >>> bool(out.std() > 0)
    True
    """
    field = illumination_field(image.shape[:2], gradient=gradient, vignetting=vignetting, seed=seed)
    if image.ndim == 3:
        field = field[..., None]
    return (image * field).astype(np.float32)


def apply_blur(image: np.ndarray, *, sigma_px: float) -> np.ndarray:
    """Gaussian optical blur (per channel for colour images).

    Examples
    --------
    >>> float(apply_blur(np.eye(5, dtype=np.float32), sigma_px=0).sum())
    5.0
    """
    s = check_positive("sigma_px", sigma_px, allow_zero=True)
    if s == 0:
        return image.astype(np.float32)
    sig = (s, s, 0) if image.ndim == 3 else s
    return ndi.gaussian_filter(image.astype(np.float32), sig)


def apply_noise(
    image: np.ndarray,
    *,
    sd: float = 0.0,
    photons: float | None = None,
    scan_line_sd: float = 0.0,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Shot (Poisson) noise, additive Gaussian noise and SEM scan-line jitter.

    Parameters
    ----------
    image : ndarray
        Float image in ``[0, 1]``.
    sd : float, optional
        Standard deviation of additive Gaussian noise (fraction of full scale).
    photons : float, optional
        Photon / electron count at full scale for Poisson noise (smaller is
        noisier); from 20 counts up, drawn from its Gaussian approximation.
    scan_line_sd : float, optional
        Standard deviation of a per-row offset (SEM scan lines).
    seed : int or Generator, optional
        Random seed.

    Examples
    --------
    >>> img = np.full((50, 50), 0.5, np.float32)
    >>> 0.015 < float(apply_noise(img, sd=0.02, seed=0).std()) < 0.025
    True
    """
    rng = as_rng(seed)
    out = np.clip(image.astype(np.float32), 0.0, None)
    if photons is not None:
        ph = check_positive("photons", photons)
        if ph >= 20:  # Gaussian approximation of Poisson statistics, much faster
            noise = rng.standard_normal(out.shape, dtype=np.float32)
            out = out + np.sqrt(out / ph) * noise
        else:
            out = (rng.poisson(out * ph) / ph).astype(np.float32)
    if sd:
        check_positive("sd", sd)
        out = out + np.float32(sd) * rng.standard_normal(out.shape, dtype=np.float32)
    if scan_line_sd:
        check_positive("scan_line_sd", scan_line_sd)
        rows_off = rng.normal(0.0, scan_line_sd, out.shape[0]).astype(np.float32)
        out = out + (rows_off[:, None, None] if out.ndim == 3 else rows_off[:, None])
    return out


def to_uint(image: np.ndarray, *, bit_depth: int = 8) -> np.ndarray:
    """Clip a float image in ``[0, 1]`` and quantise it to ``uint8`` or ``uint16``.

    Examples
    --------
    >>> to_uint(np.array([0.0, 0.5, 1.2]), bit_depth=8).tolist()
    [0, 128, 255]
    """
    if bit_depth not in (8, 16):
        msg = f"bit_depth={bit_depth!r}: expected 8 or 16"
        raise ValueError(msg)
    top = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.round(np.clip(image, 0.0, 1.0) * top).astype(dtype)

