"""Phase structures with known area fractions: Boolean disk models and more.

Examples
--------
>>> from micro_seg.synth import boolean_disks, boolean_disks_fraction
>>> mask = boolean_disks((256, 256), intensity=0.002, radius=6, seed=0)
>>> round(boolean_disks_fraction(0.002, 6), 3)
0.202
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from micro_seg.synth._rng import as_rng, check_positive, check_shape
from micro_seg.synth.grains import _query_nearest

__all__ = ["boolean_disks", "boolean_disks_fraction", "boolean_germs"]


def boolean_disks_fraction(intensity: float, radius: float) -> float:
    """Expected covered area fraction of a Boolean disk model, ``1 - exp(-lambda pi r^2)``.

    Parameters
    ----------
    intensity : float
        Germs per pixel^2 (``lambda``).
    radius : float
        Disk radius in pixels.

    Examples
    --------
    >>> round(boolean_disks_fraction(0.01, 3.0), 4)
    0.2463
    """
    lam = check_positive("intensity", intensity, allow_zero=True)
    r = check_positive("radius", radius, allow_zero=True)
    return float(1.0 - np.exp(-lam * np.pi * r * r))


def boolean_germs(
    shape: Sequence[int],
    *,
    intensity: float,
    radius: float,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Poisson germs (disk centres) over the field extended by ``radius`` on each side.

    Germs outside the field still cover its edge pixels, so coverage is
    unbiased up to the border.

    Returns
    -------
    ndarray, shape (K, 2)
        Germ coordinates ``(row, col)``; pixel ``(r, c)`` has its centre at ``(r, c)``.

    Examples
    --------
    >>> boolean_germs((50, 50), intensity=0.01, radius=2, seed=0).shape[1]
    2
    """
    rows, cols = check_shape(shape)
    lam = check_positive("intensity", intensity, allow_zero=True)
    r = check_positive("radius", radius, allow_zero=True)
    rng = as_rng(seed)
    lo = np.array([-0.5 - r, -0.5 - r])
    hi = np.array([rows - 0.5 + r, cols - 0.5 + r])
    k = rng.poisson(lam * float(np.prod(hi - lo)))
    return lo + rng.random((k, 2)) * (hi - lo)


def boolean_disks(
    shape: Sequence[int],
    *,
    intensity: float,
    radius: float,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Boolean model of disks: union of disks of ``radius`` px around Poisson germs.

    A pixel is covered when its centre lies within ``radius`` of a germ. The
    expected covered fraction is :func:`boolean_disks_fraction` ``(intensity, radius)``,
    also near the edges (germs fall in an extended window).

    Parameters
    ----------
    shape : (rows, cols)
        Field size in pixels.
    intensity : float
        Germs per pixel^2.
    radius : float
        Disk radius in pixels.
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    ndarray of bool, shape (rows, cols)
        True where covered.

    Examples
    --------
    >>> m = boolean_disks((64, 64), intensity=0.005, radius=4, seed=2)
    >>> m.dtype, m.shape
    (dtype('bool'), (64, 64))
    """
    shape = check_shape(shape)
    germs = boolean_germs(shape, intensity=intensity, radius=radius, seed=seed)
    if len(germs) == 0:
        return np.zeros(shape, bool)
    _, dist = _query_nearest(shape, cKDTree(germs), distance_upper_bound=radius * (1 + 1e-9) + 1e-9)
    return np.isfinite(dist)


# ---------------------------------------------------------------- class maps

PHASE_STRUCTURES = ("blobs", "grains", "disks")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or not 2 <= len(f) <= 4 or np.any(~np.isfinite(f)) or np.any(f <= 0):
        msg = f"fractions={fractions!r}: expected 2-4 positive numbers (one per phase)"
        raise ValueError(msg)
    if abs(f.sum() - 1.0) > 1e-6:
        msg = f"fractions={fractions!r}: must sum to 1 (they sum to {f.sum():.6g})"
        raise ValueError(msg)
    return f


def phase_map(
    shape: Sequence[int],
    *,
    fractions: Sequence[float] = (0.7, 0.3),
    structure: str = "blobs",
    correlation_px: float = 10.0,
    n_grains: float = 200,
    radius_px: float = 6.0,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Class label image (uint8, ``0..K-1``) of a K-phase structure.

    Parameters
    ----------
    shape : (rows, cols)
        Field size in pixels.
    fractions : sequence of float
        Target area fraction of each phase (class 0 first, usually the matrix);
        2 to 4 phases, summing to 1.
    structure : {"blobs", "grains", "disks"}
        ``"blobs"``: thresholded smooth Gaussian random fields (interpenetrating
        phases); the fractions are met exactly, to the pixel.
        ``"grains"``: Voronoi grains, each assigned wholly to a phase (duplex
        grain structures); fractions met to within about one grain area.
        ``"disks"``: Boolean models of disks of ``radius_px`` (particles); each
        minor phase is random around its target, as in a real section.
    correlation_px : float, optional
        Size scale of ``"blobs"``.
    n_grains : float, optional
        Grains per field for ``"grains"``.
    radius_px : float, optional
        Disk radius for ``"disks"`` (the second minor phase uses 0.6 times it).
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    ndarray of uint8

    Examples
    --------
    >>> m = phase_map((100, 100), fractions=(0.75, 0.25), seed=0)
    >>> float((m == 1).mean())
    0.25
    """
    from micro_seg.synth.fields import smooth_noise
    from micro_seg.synth.grains import voronoi_labels

    rows, cols = check_shape(shape)
    f = _check_fractions(fractions)
    if structure not in PHASE_STRUCTURES:
        msg = f"structure={structure!r}: expected one of {', '.join(map(repr, PHASE_STRUCTURES))}"
        raise ValueError(msg)
    rng = as_rng(seed)
    n = rows * cols
    out = np.zeros((rows, cols), np.uint8)
    if structure == "blobs":
        corr = check_positive("correlation_px", correlation_px)
        free = np.ones(n, bool)
        flat = out.ravel()
        for k in range(1, len(f)):
            field = smooth_noise((rows, cols), correlation_px=corr, seed=rng).ravel()
            want = int(round(f[k] * n))
            cand = np.flatnonzero(free)
            take = cand[np.argsort(-field[cand], kind="stable")[:want]]
            flat[take] = k
            free[take] = False
        return flat.reshape(rows, cols)
    if structure == "grains":
        labels = voronoi_labels((rows, cols), n_grains=n_grains, seed=rng, waviness=0.12)
        areas = np.bincount(labels.ravel())[1:]
        phase_of = np.zeros(len(areas) + 1, np.uint8)
        deficit = f * n
        for g in rng.permutation(len(areas)):
            k = int(np.argmax(deficit / f))  # phase furthest (relatively) below its target
            phase_of[g + 1] = k
            deficit[k] -= areas[g]
        return phase_of[labels]
    # disks: successive Boolean models in the space left free
    r = check_positive("radius_px", radius_px)
    remaining = 1.0
    for k in range(1, len(f)):
        rad = r * (0.6 ** (k - 1))
        target = f[k] / remaining  # fraction of the still-free area
        lam = -np.log(max(1e-9, 1.0 - target)) / (np.pi * rad * rad)
        disks = boolean_disks((rows, cols), intensity=lam, radius=rad, seed=rng)
        out[disks & (out == 0)] = k
        remaining -= f[k]
    return out
