"""Annealing twins: straight, parallel-sided bands crossing a grain.

Twins are *not* grain boundaries for ASTM E112: the truth keeps the parent
grain's label; only the rendered image shows the twin band and its boundaries.

Examples
--------
>>> from micro_seg.synth import voronoi_labels
>>> from micro_seg.synth.twins import add_twins
>>> labels = voronoi_labels((128, 128), n_grains=12, seed=0)
>>> twin_ids, parent = add_twins(labels, probability=1.0, seed=0)
>>> bool(twin_ids.max() > 0), bool(((twin_ids > 0) <= (labels > 0)).all())
(True, True)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from micro_seg.synth._rng import as_rng

__all__ = ["add_twins"]


def add_twins(
    labels: np.ndarray,
    *,
    probability: float,
    seed: int | np.random.Generator | None = None,
    max_per_grain: int = 3,
    width_fraction: tuple[float, float] = (0.06, 0.22),
    min_area_px: int = 120,
    min_width_px: float = 2.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Place twin bands inside grains of a label image.

    Parameters
    ----------
    labels : ndarray of int, shape (rows, cols)
        Grain labels ``1..N``.
    probability : float
        Chance that a grain (of at least ``min_area_px`` pixels) is twinned.
    seed : int or Generator, optional
        Random seed.
    max_per_grain : int, optional
        Up to this many parallel bands per twinned grain.
    width_fraction : (float, float), optional
        Band width as a fraction of the grain's equivalent diameter (uniform range).
    min_area_px : int, optional
        Smaller grains are never twinned.
    min_width_px : float, optional
        Bands are at least this wide so both twin boundaries are visible.

    Returns
    -------
    twin_ids : ndarray of int32
        0 outside twins, ``k >= 1`` inside twin band ``k``.
    parent : ndarray of int32
        ``parent[k - 1]`` is the grain label containing twin ``k``.

    Examples
    --------
    >>> lab = np.ones((40, 40), np.int32)
    >>> t, p = add_twins(lab, probability=1.0, seed=3, max_per_grain=1)
    >>> p.tolist(), bool(0 < (t > 0).mean() < 0.5)
    ([1], True)
    """
    labels = np.asarray(labels)
    if not 0.0 <= probability <= 1.0:
        msg = f"probability={probability!r}: must be in [0, 1]"
        raise ValueError(msg)
    rng = as_rng(seed)
    twin_ids = np.zeros(labels.shape, np.int32)
    parents: list[int] = []
    if probability == 0.0:
        return twin_ids, np.zeros(0, np.int32)
    slices = ndi.find_objects(labels)
    for lab0, sl in enumerate(slices):
        if sl is None or rng.random() >= probability:
            continue
        lab = lab0 + 1
        mask = labels[sl] == lab
        area = int(mask.sum())
        if area < min_area_px:
            continue
        rr, cc = np.nonzero(mask)
        rc, ccen = rr.mean(), cc.mean()
        diam = 2.0 * np.sqrt(area / np.pi)
        theta = rng.uniform(0, np.pi)
        normal = np.array([np.sin(theta), np.cos(theta)])
        grid_r, grid_c = np.mgrid[: mask.shape[0], : mask.shape[1]]
        proj = (grid_r - rc) * normal[0] + (grid_c - ccen) * normal[1]
        extent = np.abs(proj[mask]).max()
        n_bands = int(rng.integers(1, max_per_grain + 1))
        for _ in range(n_bands):
            width = max(min_width_px, rng.uniform(*width_fraction) * diam)
            if width > 0.6 * extent:
                continue
            offset = rng.uniform(-0.7, 0.7) * (extent - width / 2)
            band = mask & (np.abs(proj - offset) < width / 2) & (twin_ids[sl] == 0)
            if band.sum() < 3 * width:
                continue
            parents.append(lab)
            twin_ids[sl][band] = len(parents)
    return twin_ids, np.asarray(parents, np.int32)
