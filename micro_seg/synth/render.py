"""Render grain label images as micrographs: etched optical, SEM channelling, colour tint.

Renderers return float32 images in ``[0, 1]`` (grey ``(rows, cols)``, or
``(rows, cols, 3)`` for the colour-tint style) of the clean scene: grains,
boundaries and twins. Illumination, blur, noise, pits and scratches are added by
:mod:`micro_seg.synth.layers` (see :func:`micro_seg.synth.grain_micrograph`).

Examples
--------
>>> from micro_seg.synth import voronoi_labels
>>> from micro_seg.synth.render import grain_boundaries, render_etched_optical
>>> labels = voronoi_labels((96, 96), n_grains=20, seed=0)
>>> img = render_etched_optical(labels, boundary_width_px=2.0, seed=0)
>>> bool(img[grain_boundaries(labels)].mean() < img.mean())
True
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from micro_seg.synth._rng import as_rng, check_positive
from micro_seg.synth.fields import smooth_noise
from micro_seg.synth.layers import _splat

__all__ = [
    "grain_boundaries",
    "twin_boundaries",
    "render_etched_optical",
    "render_sem",
    "render_tint",
    "TINT_PALETTE",
]

# Colour-etch tints seen on real colour-etched sections (e.g. the TBM set):
# blues, lilac, olive / straw and brown.
TINT_PALETTE = np.array(
    [
        [0.33, 0.52, 0.85],
        [0.52, 0.68, 0.92],
        [0.45, 0.42, 0.72],
        [0.68, 0.66, 0.88],
        [0.66, 0.64, 0.36],
        [0.80, 0.78, 0.52],
        [0.55, 0.40, 0.36],
        [0.42, 0.36, 0.55],
    ],
    np.float32,
)


def grain_boundaries(labels: np.ndarray) -> np.ndarray:
    """True grain-boundary mask: a thin (1-2 px) line between differing labels.

    A pixel is on the boundary when one of its 8 neighbours carries a smaller
    label, so every boundary is drawn once, on one side, as a line that
    separates the grains under both 4- and 8-connectivity. The image border is
    not a boundary.

    Examples
    --------
    >>> lab = np.array([[1, 1, 2, 2]] * 2)
    >>> grain_boundaries(lab).astype(int).tolist()
    [[0, 0, 1, 0], [0, 0, 1, 0]]
    """
    labels = np.asarray(labels)
    smallest = ndi.minimum_filter(labels, size=3, mode="nearest")
    return smallest < labels


def twin_boundaries(labels: np.ndarray, twin_ids: np.ndarray) -> np.ndarray:
    """Twin-boundary mask: thin lines where a twin band meets its parent grain (or another band).

    Drawn like :func:`grain_boundaries` (a pixel whose 8-neighbour inside the
    same grain carries a smaller twin-band id, so the line lies inside the band),
    and never on a grain-boundary pixel.

    Examples
    --------
    >>> lab = np.ones((2, 5), int); tw = np.array([[0, 0, 1, 1, 0]] * 2)
    >>> twin_boundaries(lab, tw).astype(int).tolist()
    [[0, 0, 1, 1, 0], [0, 0, 1, 1, 0]]
    """
    labels = np.asarray(labels)
    twin_ids = np.asarray(twin_ids)
    rows, cols = labels.shape
    pl = np.pad(labels, 1, mode="edge")
    pt = np.pad(twin_ids, 1, mode="edge")
    out = np.zeros(labels.shape, bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            nl = pl[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
            nt = pt[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
            out |= (nl == labels) & (nt < twin_ids)
    return out & ~grain_boundaries(labels)


def _interfaces(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels touching another id (4-neighbours, both sides) and that other id."""
    padded = np.pad(ids, 1, mode="edge")
    other = ids.copy()
    rows, cols = ids.shape
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
        take = (nb != ids) & (other == ids)
        other[take] = nb[take]
    return other != ids, other


def _spacing(labels: np.ndarray) -> float:
    n = max(1, len(np.unique(labels)))
    return float(np.sqrt(labels.size / n))


def _render_ids(
    labels: np.ndarray, twin_ids: np.ndarray | None, twin_parent: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Ids of rendered regions (grains, then twins) and the grain each id belongs to."""
    labels = np.asarray(labels).astype(np.int64)
    n = int(labels.max())
    if twin_ids is None or twin_parent is None or len(twin_parent) == 0:
        return labels, np.arange(n + 1)
    ids = np.where(twin_ids > 0, n + twin_ids.astype(np.int64), labels)
    parent = np.concatenate([np.arange(n + 1), np.asarray(twin_parent, np.int64)])
    return ids, parent


def _pair_table(ids, parent, rng):
    """Boundary pixels, their pair index, and whether each pair is a twin boundary."""
    both, other = _interfaces(ids)
    bp = np.nonzero(both)
    a, b = ids[bp], other[bp]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    m = int(ids.max()) + 1
    keys, inv = np.unique(lo * m + hi, return_inverse=True)
    plo, phi = keys // m, keys % m
    is_twin = parent[plo] == parent[phi]
    return both, bp, inv.ravel(), is_twin, plo, phi


def render_etched_optical(
    labels: np.ndarray,
    *,
    boundary_width_px: float = 2.0,
    boundary_depth: float = 0.65,
    twin_ids: np.ndarray | None = None,
    twin_parent: np.ndarray | None = None,
    twin_contrast: float = 0.5,
    fade_fraction: float = 0.0,
    contrast_spread: float = 0.2,
    junction_fraction: float = 0.0,
    grain_shading: float = 0.03,
    brightness: float = 0.9,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Bright-field optical image of an etched section: dark grooves on bright grains.

    Parameters
    ----------
    labels : ndarray of int, shape (rows, cols)
        Grain labels ``1..N``.
    boundary_width_px : float, optional
        Full width at half maximum of the boundary grooves (varies +-25 %
        along each boundary).
    boundary_depth : float, optional
        Darkening at the centre of a fully etched groove (0..1).
    twin_ids, twin_parent : ndarray, optional
        Twin bands from :func:`micro_seg.synth.twins.add_twins`; drawn with their
        own shading and lighter, narrower boundary lines.
    twin_contrast : float, optional
        Strength of twin-boundary lines relative to grain boundaries.
    fade_fraction : float, optional
        Fraction of grain-boundary segments that were incompletely etched:
        their contrast is reduced and varies along their length, vanishing in places.
    contrast_spread : float, optional
        Spread of the etch strength between fully etched boundary segments:
        each segment's contrast is uniform in ``[1 - spread, 1]`` and its width
        scales with it, so weak boundaries are also thin (0..1).
    junction_fraction : float, optional
        Fraction of triple junctions with a dark etched patch (e.g. pearlite / carbide).
    grain_shading : float, optional
        Standard deviation of the per-grain brightness (slight etch tint).
    brightness : float, optional
        Mean grain brightness.
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    ndarray of float32 in [0, 1]

    Examples
    --------
    >>> lab = np.repeat(np.array([[1] * 10 + [2] * 10]), 8, axis=0)
    >>> img = render_etched_optical(lab, seed=0)
    >>> bool(img[:, 9:11].mean() < img[:, :5].mean() - 0.2)
    True
    """
    labels = np.asarray(labels)
    width = check_positive("boundary_width_px", boundary_width_px)
    for name, v in (("fade_fraction", fade_fraction), ("junction_fraction", junction_fraction),
                    ("contrast_spread", contrast_spread),
                    ("boundary_depth", boundary_depth), ("twin_contrast", twin_contrast)):
        if not 0.0 <= v <= 1.0:
            msg = f"{name}={v!r}: must be in [0, 1]"
            raise ValueError(msg)
    rng = as_rng(seed)
    shape = labels.shape
    spacing = _spacing(labels)
    ids, parent = _render_ids(labels, twin_ids, twin_parent)
    n_grain = int(labels.max())

    # grain shading (twins offset from their parent grain)
    level = brightness + grain_shading * rng.standard_normal(len(parent))
    n_tw = len(parent) - n_grain - 1
    if n_tw > 0:
        sign = rng.choice([-1.0, 1.0], n_tw)
        level[n_grain + 1 :] = level[parent[n_grain + 1 :]] + sign * rng.uniform(
            0.5, 1.5, n_tw
        ) * max(grain_shading, 0.01)
    scene = level[ids].astype(np.float32)
    scene += 0.012 * smooth_noise(shape, correlation_px=max(2.0, spacing / 4), seed=rng)

    darkness = np.zeros(shape, np.float32)
    both, bp, inv, is_twin, plo, phi = _pair_table(ids, parent, rng)
    if len(bp[0]):
        g = smooth_noise(shape, correlation_px=max(2.0, spacing / 3), seed=rng)[bp]
        g2 = smooth_noise(shape, correlation_px=max(2.0, spacing / 2), seed=rng)[bp]
        n_pairs = len(is_twin)
        faded = (rng.random(n_pairs) < fade_fraction) & ~is_twin
        strength = rng.uniform(1.0 - contrast_spread, 1.0, n_pairs)
        base = np.where(faded, rng.uniform(-0.45, 0.45, n_pairs), strength)
        base = np.where(is_twin, twin_contrast * rng.uniform(0.7, 1.0, n_pairs), base)
        wobble = np.where(faded[inv], 0.55, 0.1)
        contrast = np.clip(base[inv] + wobble * g, 0.0, 1.0)
        seg_width = np.where(is_twin, 0.6, 0.5 + 0.5 * strength)  # weak etch, thin line
        widths = width * seg_width[inv] * np.clip(1 + 0.25 * g2, 0.5, 1.6)
        cmap = np.zeros(shape, np.float32)
        wmap = np.ones(shape, np.float32)
        cmap[bp] = contrast
        wmap[bp] = widths
        edt, (ir, ic) = ndi.distance_transform_edt(~both, return_indices=True)
        dist = edt.astype(np.float32) + 0.5
        sigma = wmap[ir, ic] / 2.355
        darkness = boundary_depth * cmap[ir, ic] * np.exp(-0.5 * (dist / sigma) ** 2)
        del edt, ir, ic, dist, sigma

    if junction_fraction > 0:
        darkness = 1 - (1 - darkness) * (1 - _junction_layer(labels, junction_fraction, width, rng))
    return np.clip(scene * (1.0 - darkness), 0.0, 1.0).astype(np.float32)


def _junction_layer(labels, fraction, width, rng) -> np.ndarray:
    """Dark irregular patches at a fraction of the triple junctions."""
    a, b = labels[:-1, :-1], labels[:-1, 1:]
    c, d = labels[1:, :-1], labels[1:, 1:]
    distinct = 1 + (b != a) + ((c != a) & (c != b)) + ((d != a) & (d != b) & (d != c))
    jr, jc = np.nonzero(distinct >= 3)
    out = np.zeros(labels.shape, np.float32)
    if len(jr) == 0:
        return out
    # junctions are found as 2x2 blocks; neighbouring blocks of one junction merge below
    keep = rng.random(len(jr)) < fraction
    pts, amps = [], []
    for r, c0 in zip(jr[keep], jc[keep]):
        k = int(rng.integers(3, 12))
        size = width * rng.uniform(1.0, 3.0)
        pts.append(np.array([r + 0.5, c0 + 0.5]) + rng.normal(0, size * 0.6, (k, 2)))
        amps.append(np.full(k, rng.uniform(0.5, 1.0)))
    if not pts:
        return out
    sigma = max(0.8, 0.6 * width)
    acc = np.zeros(labels.shape, np.float64)
    _splat(acc, np.vstack(pts), np.concatenate(amps) * 2 * np.pi * sigma**2 * 0.5)
    return np.clip(ndi.gaussian_filter(acc, sigma), 0, 0.9).astype(np.float32)


def _grain_levels_with_lookalikes(n_ids, parent, pair_lo, pair_hi, is_twin, fade_fraction,
                                  low, high, rng, min_twin_step=0.08):
    """Random per-id levels; a fraction of grains copy a neighbour's level (invisible boundary)."""
    n_grain = int(np.sum(parent == np.arange(len(parent)))) - 1
    level = rng.uniform(low, high, n_ids)
    if fade_fraction > 0 and len(pair_lo):
        gb = ~is_twin & (pair_lo <= n_grain) & (pair_hi <= n_grain)
        lo, hi = pair_lo[gb], pair_hi[gb]
        pick = rng.random(len(lo)) < fade_fraction / 2
        for i, j in zip(lo[pick], hi[pick]):
            level[j] = level[i] + rng.normal(0, 0.012 * (high - low))
    for t in range(n_grain + 1, n_ids):  # twins: a clearly different orientation
        p = parent[t]
        while abs(level[t] - level[p]) < min_twin_step * (high - low) / 0.8:
            level[t] = rng.uniform(low, high)
    return level


def render_sem(
    labels: np.ndarray,
    *,
    twin_ids: np.ndarray | None = None,
    twin_parent: np.ndarray | None = None,
    contrast: float = 0.8,
    fade_fraction: float = 0.0,
    intragrain_gradient: float = 0.06,
    boundary_contrast: float = 0.0,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """SEM-like image with orientation (channelling) contrast: grey level per grain, no lines.

    Parameters
    ----------
    labels : ndarray of int
        Grain labels ``1..N``.
    twin_ids, twin_parent : ndarray, optional
        Twin bands (from :func:`micro_seg.synth.twins.add_twins`), drawn with a
        clearly different grey level than their parent.
    contrast : float, optional
        Range of grain grey levels (centred on 0.5).
    fade_fraction : float, optional
        Fraction of boundaries across which both grains have almost the same
        grey level, so the boundary is nearly invisible (as in real channelling images).
    intragrain_gradient : float, optional
        Typical grey-level ramp across a grain (lattice bending, tilt).
    boundary_contrast : float, optional
        Optional thin bright edge at boundaries (secondary-electron edge effect).
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    ndarray of float32 in [0, 1]

    Examples
    --------
    >>> lab = np.repeat(np.array([[1] * 10 + [2] * 10]), 8, axis=0)
    >>> img = render_sem(lab, seed=1)
    >>> bool(abs(img[:, :8].mean() - img[:, 12:].mean()) > 0.01)
    True
    """
    labels = np.asarray(labels)
    rng = as_rng(seed)
    shape = labels.shape
    spacing = _spacing(labels)
    ids, parent = _render_ids(labels, twin_ids, twin_parent)
    both, bp, inv, is_twin, plo, phi = _pair_table(ids, parent, rng)
    low, high = 0.5 - contrast / 2, 0.5 + contrast / 2
    level = _grain_levels_with_lookalikes(
        len(parent), parent, plo, phi, is_twin, fade_fraction, low, high, rng
    )
    # per-id linear ramp about the region centroid
    flat = ids.ravel()
    rr, cc = np.indices(shape, dtype=np.float32)
    cnt = np.maximum(np.bincount(flat, minlength=len(parent)), 1)
    mr = np.bincount(flat, rr.ravel(), minlength=len(parent)) / cnt
    mc = np.bincount(flat, cc.ravel(), minlength=len(parent)) / cnt
    gr, gc = rng.normal(0, intragrain_gradient / spacing, (2, len(parent)))
    scene = level[ids] + gr[ids] * (rr - mr[ids]) + gc[ids] * (cc - mc[ids])
    scene = scene.astype(np.float32)
    scene += 0.015 * smooth_noise(shape, correlation_px=max(2.0, spacing / 5), seed=rng)
    if boundary_contrast > 0 and len(bp[0]):
        edge = np.zeros(shape, np.float32)
        edge[bp] = boundary_contrast
        scene += ndi.gaussian_filter(edge, 0.7) * 2.5
    return np.clip(scene, 0.0, 1.0)


def render_tint(
    labels: np.ndarray,
    *,
    twin_ids: np.ndarray | None = None,
    twin_parent: np.ndarray | None = None,
    fade_fraction: float = 0.0,
    texture: float = 0.07,
    boundary_depth: float = 0.08,
    palette: np.ndarray | None = None,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Colour-etched (tint-etched) optical image: grains in blue / lilac / straw tints.

    Boundaries show only as colour and texture changes (plus an optional faint
    groove), and neighbouring grains often share a tint: the hardest style for
    boundary detection, similar to the TBM colour-etched micrographs.

    Parameters
    ----------
    labels : ndarray of int
        Grain labels ``1..N``.
    twin_ids, twin_parent : ndarray, optional
        Twin bands, drawn in another tint.
    fade_fraction : float, optional
        Fraction of boundaries where both grains get almost the same tint.
    texture : float, optional
        Strength of the mottled etch texture inside grains.
    boundary_depth : float, optional
        Darkening of a faint groove along boundaries.
    palette : ndarray (K, 3), optional
        Base RGB tints in ``[0, 1]`` (default :data:`TINT_PALETTE`).
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    ndarray of float32, shape (rows, cols, 3), in [0, 1]

    Examples
    --------
    >>> lab = np.repeat(np.array([[1] * 10 + [2] * 10]), 8, axis=0)
    >>> render_tint(lab, seed=0).shape
    (8, 20, 3)
    """
    labels = np.asarray(labels)
    rng = as_rng(seed)
    pal = TINT_PALETTE if palette is None else np.asarray(palette, np.float32)
    shape = labels.shape
    spacing = _spacing(labels)
    ids, parent = _render_ids(labels, twin_ids, twin_parent)
    both, bp, inv, is_twin, plo, phi = _pair_table(ids, parent, rng)
    n_ids = len(parent)
    n_grain = int(labels.max())
    # regional hue families: half of the grains take the tint of a smooth regional field
    flat = ids.ravel()
    rr, cc = np.indices(shape, dtype=np.float32)
    cnt = np.maximum(np.bincount(flat, minlength=n_ids), 1)
    mr = (np.bincount(flat, rr.ravel(), minlength=n_ids) / cnt).astype(int)
    mc = (np.bincount(flat, cc.ravel(), minlength=n_ids) / cnt).astype(int)
    region = smooth_noise(shape, correlation_px=max(4.0, 1.5 * spacing), seed=rng)
    ranks = np.clip(((region[np.clip(mr, 0, shape[0] - 1), np.clip(mc, 0, shape[1] - 1)]
                      + 2.0) / 4.0 * len(pal)).astype(int), 0, len(pal) - 1)
    choice = np.where(rng.random(n_ids) < 0.5, ranks, rng.integers(0, len(pal), n_ids))
    colour = pal[choice] + rng.normal(0, 0.04, (n_ids, 3)).astype(np.float32)
    if fade_fraction > 0 and len(plo):
        gb = ~is_twin
        pick = rng.random(int(gb.sum())) < fade_fraction / 2
        for i, j in zip(plo[gb][pick], phi[gb][pick]):
            colour[j] = colour[i] + rng.normal(0, 0.015, 3)
    for t in range(n_grain + 1, n_ids):
        other = pal[(choice[parent[t]] + rng.integers(1, len(pal))) % len(pal)]
        colour[t] = 0.5 * colour[parent[t]] + 0.5 * other
    # etch films are muted: pull the tints a little towards their grey
    colour = 0.8 * colour + 0.2 * colour.mean(axis=1, keepdims=True)
    scene = colour[ids]
    # etch texture at three scales, partly per channel, plus stains that ignore grains
    for corr, amp in ((spacing / 3, 1.0), (spacing / 8, 0.7), (1.2, 0.45)):
        common = smooth_noise(shape, correlation_px=max(1.2, corr), seed=rng)[..., None]
        tint = rng.normal(0, 1, 3).astype(np.float32)
        tint = 0.7 + 0.3 * tint / (np.linalg.norm(tint) + 1e-6)
        scene = scene + texture * amp * common * tint
    stain = np.stack([smooth_noise(shape, correlation_px=max(4.0, spacing), seed=rng)
                      for _ in range(3)], axis=-1)
    scene = scene + 0.5 * texture * stain
    if boundary_depth > 0 and len(bp[0]):
        edge = np.zeros(shape, np.float32)
        edge[bp] = 1.0
        scene *= 1.0 - boundary_depth * np.clip(ndi.gaussian_filter(edge, 1.0) * 2, 0, 1)[..., None]
    scene = ndi.gaussian_filter(scene, (0.8, 0.8, 0))  # colour bleeding of the etch film
    return np.clip(scene, 0.0, 1.0).astype(np.float32)
