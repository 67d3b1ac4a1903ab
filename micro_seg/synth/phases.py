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
