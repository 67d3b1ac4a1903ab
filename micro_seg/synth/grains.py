"""Grain structures as label images: Voronoi tessellations of seeded point patterns.

Every function returns an ``int32`` label image where each pixel belongs to one
grain (labels ``1..N``, consecutive, no background), so the exact grain count is
``labels.max()``.  A pixel belongs to the grain of its nearest seed (distance
measured between pixel centres and seeds, in an optionally anisotropic metric for
rolled structures).

By default (``crop=True``) the field is a window cut out of an infinite
structure: seeds are also placed in a margin around the field at the same
density, so the grains cut by the image edge are truncated exactly as in a real
section, and ``n_grains / (rows * cols)`` is the true number of grains per unit
area (the quantity ASTM E112 estimates).

Examples
--------
>>> from micro_seg.synth import voronoi_labels
>>> labels = voronoi_labels((128, 128), n_grains=40, seed=0)
>>> labels.dtype, int(labels.min())
(dtype('int32'), 1)
>>> int(labels.max()) == len(set(labels.ravel().tolist()))
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from micro_seg.synth._rng import as_rng, check_positive, check_shape

__all__ = [
    "GRAIN_KINDS",
    "grain_seeds",
    "voronoi_from_seeds",
    "voronoi_labels",
    "relabel_consecutive",
    "wavy_displacement",
    "merge_fragments",
]

GRAIN_KINDS = ("poisson", "hardcore", "lattice", "bimodal")

_CHUNK_PIXELS = 1 << 20  # pixels per KD-tree query: bounds memory at ~50 MB


def relabel_consecutive(keys: np.ndarray) -> np.ndarray:
    """Map arbitrary non-negative integer keys to consecutive labels ``1..N`` (int32).

    Labels follow the order of the keys, so the result is deterministic.

    Examples
    --------
    >>> relabel_consecutive(np.array([[7, 7], [2, 9]])).tolist()
    [[2, 2], [1, 3]]
    """
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.zeros(keys.shape, np.int32)
    flat = keys.ravel().astype(np.int64, copy=False)
    if int(flat.max()) > 4 * flat.size + 1024:  # sparse keys: sort instead of a huge table
        _, inverse = np.unique(flat, return_inverse=True)
        return (inverse.astype(np.int32) + 1).reshape(keys.shape)
    present = np.bincount(flat) > 0
    lut = np.cumsum(present).astype(np.int32)
    return lut[flat].reshape(keys.shape)


def _metric_matrix(aspect_ratio: float, angle_deg: float) -> np.ndarray:
    """Linear map (rows, cols) -> metric space that turns elongated cells isotropic.

    Grains come out elongated ``aspect_ratio`` times along the direction at
    ``angle_deg`` counter-clockwise from the column (x) axis, as seen on screen.
    The map has determinant 1, so densities are preserved.
    """
    t = np.deg2rad(angle_deg)
    u = np.array([-np.sin(t), np.cos(t)])  # long axis in (row, col)
    v = np.array([np.cos(t), np.sin(t)])  # short axis
    s = np.sqrt(aspect_ratio)
    return np.stack([u / s, v * s])  # rows of the matrix: coordinates in metric space


def _query_nearest(
    shape: tuple[int, int],
    tree: cKDTree,
    *,
    matrix: np.ndarray | None = None,
    distance_upper_bound: float = np.inf,
    extra_dims: int = 0,
    displacement: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest seed index and distance for every pixel centre, in row chunks."""
    rows, cols = shape
    idx = np.empty(shape, np.int64)
    dist = np.empty(shape, np.float32)
    step = max(1, _CHUNK_PIXELS // cols)
    cc = np.arange(cols, dtype=np.float64)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        rr, cg = np.meshgrid(np.arange(r0, r1, dtype=np.float64), cc, indexing="ij")
        if displacement is not None:
            rr = rr + displacement[0][r0:r1]
            cg = cg + displacement[1][r0:r1]
        pts = np.stack([rr.ravel(), cg.ravel()], axis=1)
        if matrix is not None:
            pts = pts @ matrix.T
        if extra_dims:
            pts = np.hstack([pts, np.zeros((pts.shape[0], extra_dims))])
        d, i = tree.query(pts, k=1, distance_upper_bound=distance_upper_bound)
        idx[r0:r1] = i.reshape(r1 - r0, cols)
        dist[r0:r1] = d.reshape(r1 - r0, cols)
    return idx, dist


def merge_fragments(labels: np.ndarray) -> np.ndarray:
    """Make every label one 8-connected piece: stray fragments join their main neighbour.

    Pixelisation of thin slivers (or a strong warp) can split a cell; truth
    labels must be single grains, so the smaller pieces of a split label are
    given to the label they share the longest border with. Returns consecutive
    labels ``1..N`` (int32).

    Examples
    --------
    >>> lab = np.array([[1, 2, 1], [2, 2, 2]])
    >>> merge_fragments(lab).tolist()
    [[1, 2, 2], [2, 2, 2]]
    """
    from scipy import ndimage as ndi
    from skimage.measure import label as cc_label

    labels = np.asarray(labels)
    comp = cc_label(labels, background=-1, connectivity=2)
    n_lab = len(np.unique(labels))
    if comp.max() == n_lab:
        return relabel_consecutive(labels)
    out = labels.astype(np.int64).copy()
    # size of each component and the label it carries
    sizes = np.bincount(comp.ravel())
    owner = np.zeros(len(sizes), np.int64)
    owner[comp.ravel()] = labels.ravel()
    # largest component per label
    order = np.lexsort((-sizes[1:], owner[1:])) + 1
    first = np.ones(len(order), bool)
    first[1:] = owner[order[1:]] != owner[order[:-1]]
    stray = order[~first]
    slices = ndi.find_objects(comp)
    for k in stray:
        sl = slices[k - 1]
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        piece = comp[sl] == k
        ring = ndi.binary_dilation(piece, structure=np.ones((3, 3), bool)) & ~piece
        neigh = out[sl][ring]
        neigh = neigh[neigh != owner[k]]
        if neigh.size:
            vals, counts = np.unique(neigh, return_counts=True)
            out[sl][piece] = vals[np.argmax(counts)]
    return relabel_consecutive(out)


def voronoi_from_seeds(
    shape: Sequence[int],
    seeds: np.ndarray,
    *,
    aspect_ratio: float = 1.0,
    angle_deg: float = 0.0,
    weights: np.ndarray | None = None,
    displacement: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Assign every pixel to its nearest seed and return the seed index per pixel.

    Parameters
    ----------
    shape : (rows, cols)
        Output shape. Pixel ``(r, c)`` has its centre at coordinates ``(r, c)``.
    seeds : ndarray, shape (K, 2)
        Seed coordinates ``(row, col)``; they may lie outside the field.
    aspect_ratio, angle_deg : float, optional
        Anisotropic metric: cells are stretched ``aspect_ratio`` times along the
        direction ``angle_deg`` counter-clockwise from the column axis.
    weights : ndarray, shape (K,), optional
        Power-diagram weights (pixel^2, in metric space): a pixel goes to the
        seed minimising ``d^2 - w``. Larger weight, larger cell.
    displacement : (ndarray, ndarray), optional
        Per-pixel shifts ``(d_row, d_col)`` applied to the pixel centres before
        the query. A smooth field with gradients well below 1 bends the straight
        Voronoi edges into curved boundaries while keeping every cell in one piece.

    Returns
    -------
    ndarray of int64, shape (rows, cols)
        Index into ``seeds`` of the seed owning each pixel (not relabelled).

    Examples
    --------
    >>> idx = voronoi_from_seeds((4, 6), np.array([[1.0, 0.0], [1.0, 5.0]]))
    >>> idx[0].tolist()
    [0, 0, 0, 1, 1, 1]
    """
    shape = check_shape(shape)
    seeds = np.asarray(seeds, dtype=np.float64)
    if seeds.ndim != 2 or seeds.shape[1] != 2 or len(seeds) == 0:
        msg = f"seeds with shape {seeds.shape}: expected (K >= 1, 2)"
        raise ValueError(msg)
    check_positive("aspect_ratio", aspect_ratio)
    matrix = None
    pts = seeds
    if aspect_ratio != 1.0:
        matrix = _metric_matrix(aspect_ratio, angle_deg)
        pts = seeds @ matrix.T
    extra = 0
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(seeds),) or not np.all(np.isfinite(w)):
            msg = f"weights with shape {w.shape}: expected {len(seeds)} finite values"
            raise ValueError(msg)
        # Lift to 3-D: |p - s|^2 + (W - w) is minimised by the power-diagram owner.
        pts = np.hstack([pts, np.sqrt(w.max() - w)[:, None]])
        extra = 1
    if displacement is not None:
        displacement = tuple(np.asarray(d, dtype=np.float64) for d in displacement)
        if len(displacement) != 2 or any(d.shape != shape for d in displacement):
            msg = f"displacement: expected two arrays of shape {shape}"
            raise ValueError(msg)
    tree = cKDTree(pts)
    idx, _ = _query_nearest(
        shape, tree, matrix=matrix, extra_dims=extra, displacement=displacement
    )
    return idx


def wavy_displacement(
    shape: Sequence[int],
    *,
    amplitude_px: float,
    correlation_px: float,
    seed: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement field that makes grain boundaries curved.

    The correlation length is kept above 4 times the amplitude so the warp
    stays one-to-one (grains remain in one piece).

    Examples
    --------
    >>> dr, dc = wavy_displacement((32, 32), amplitude_px=2, correlation_px=10, seed=0)
    >>> dr.shape
    (32, 32)
    """
    from micro_seg.synth.fields import smooth_noise

    amp = check_positive("amplitude_px", amplitude_px, allow_zero=True)
    corr = max(check_positive("correlation_px", correlation_px), 4.0 * amp)
    rng = as_rng(seed)
    return (
        amp * smooth_noise(shape, correlation_px=corr, seed=rng),
        amp * smooth_noise(shape, correlation_px=corr, seed=rng),
    )


# --------------------------------------------------------------------- seeds


def _uniform(rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo + rng.random((n, 2)) * (hi - lo)


def _hardcore(
    rng: np.random.Generator, n_target: int, lo: np.ndarray, hi: np.ndarray, dmin: float
) -> np.ndarray:
    """Random sequential adsorption with minimum distance ``dmin``, in vectorised rounds."""
    accepted = np.empty((0, 2))
    for _ in range(200):
        need = n_target - len(accepted)
        if need <= 0:
            break
        cand = _uniform(rng, max(2 * need, 64), lo, hi)
        if len(accepted):
            d, _ = cKDTree(accepted).query(cand, k=1)
            cand = cand[d >= dmin]
        if len(cand) == 0:
            continue
        # Within the batch, keep the candidates with the smallest mark among their
        # conflicting neighbours: two kept points can never conflict.
        mark = rng.random(len(cand))
        pairs = cKDTree(cand).query_pairs(dmin, output_type="ndarray")
        keep = np.ones(len(cand), bool)
        if len(pairs):
            a, b = pairs[:, 0], pairs[:, 1]
            loser = np.where(mark[a] < mark[b], b, a)
            keep[loser] = False
        accepted = np.vstack([accepted, cand[keep][:need]])
    return accepted


def _lattice(
    rng: np.random.Generator, spacing: float, lo: np.ndarray, hi: np.ndarray, jitter: float
) -> np.ndarray:
    """Hexagonal lattice at random orientation and offset, Gaussian-perturbed."""
    centre = (lo + hi) / 2
    half = np.linalg.norm(hi - lo) / 2 + 2 * spacing
    n = int(np.ceil(half / spacing)) + 1
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    x = (i + 0.5 * j) * spacing
    y = j * (np.sqrt(3) / 2) * spacing
    t = rng.uniform(0, np.pi / 3)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = np.stack([x.ravel(), y.ravel()], axis=1) @ rot.T
    pts += centre + rng.uniform(-0.5, 0.5, 2) * spacing
    pts += rng.normal(0, jitter * spacing, pts.shape)
    inside = np.all((pts >= lo) & (pts <= hi), axis=1)
    return pts[inside]


def grain_seeds(
    shape: Sequence[int],
    *,
    n_grains: float,
    kind: str = "poisson",
    seed: int | np.random.Generator | None = None,
    crop: bool = True,
    aspect_ratio: float = 1.0,
    angle_deg: float = 0.0,
    hardcore: float = 0.7,
    jitter: float = 0.12,
) -> np.ndarray:
    """Seed points of a grain tessellation: ``n_grains`` per field area.

    Parameters
    ----------
    shape : (rows, cols)
        Field size in pixels.
    n_grains : float
        Seeds per field area (the density is ``n_grains / (rows * cols)``).
        For ``kind="poisson"`` exactly ``n_grains`` seeds fall inside the field.
    kind : {"poisson", "hardcore", "lattice"}
        ``"poisson"``: uniform random (Poisson-Voronoi, broad size spread);
        ``"hardcore"``: random with a minimum distance of ``hardcore`` times the
        hexagonal spacing (more uniform grains);
        ``"lattice"``: hexagonal lattice perturbed by ``jitter`` times the spacing
        (most regular).
    seed : int or Generator, optional
        Random seed.
    crop : bool, optional
        Also place seeds in a margin around the field (see module docstring).
    aspect_ratio, angle_deg : float, optional
        Metric of the tessellation (see :func:`voronoi_from_seeds`); regular seed
        patterns are built in the metric space so rolled grains stay regular.
    hardcore : float, optional
        Minimum distance / hexagonal spacing for ``"hardcore"`` (0 < h <= 0.72).
    jitter : float, optional
        Standard deviation / spacing for ``"lattice"``.

    Returns
    -------
    ndarray, shape (K, 2)
        Seed coordinates ``(row, col)`` in pixel units (outside seeds included).

    Examples
    --------
    >>> s = grain_seeds((100, 100), n_grains=25, seed=1, crop=False)
    >>> s.shape
    (25, 2)
    """
    rows, cols = check_shape(shape)
    n = check_positive("n_grains", n_grains)
    check_positive("aspect_ratio", aspect_ratio)
    if kind not in ("poisson", "hardcore", "lattice"):
        msg = f"kind={kind!r}: expected one of 'poisson', 'hardcore', 'lattice'"
        raise ValueError(msg)
    rng = as_rng(seed)
    area = float(rows * cols)
    density = n / area
    spacing = np.sqrt(area / n)
    a = max(aspect_ratio, 1.0 / aspect_ratio)
    margin = 4.0 * spacing * np.sqrt(a) if crop else 0.0
    lo = np.array([-0.5 - margin, -0.5 - margin])
    hi = np.array([rows - 0.5 + margin, cols - 0.5 + margin])

    if kind == "poisson":
        inside = _uniform(rng, int(round(n)), np.array([-0.5, -0.5]), hi - margin)
        if not crop:
            return inside
        ext_area = float(np.prod(hi - lo))
        k = rng.poisson(density * ext_area * 1.0)
        ring = _uniform(rng, k, lo, hi)
        in_field = np.all((ring >= -0.5) & (ring <= hi - margin), axis=1)
        return np.vstack([inside, ring[~in_field]])

    # Regular patterns: build in metric space over the mapped extended window.
    matrix = _metric_matrix(aspect_ratio, angle_deg) if aspect_ratio != 1.0 else np.eye(2)
    corners = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]])
    mc = corners @ matrix.T
    mlo, mhi = mc.min(axis=0), mc.max(axis=0)
    hex_spacing = np.sqrt(2.0 / (np.sqrt(3.0) * density))
    if kind == "hardcore":
        if not 0 < hardcore <= 0.72:
            msg = f"hardcore={hardcore!r}: must be in (0, 0.72] (random packing jams above)"
            raise ValueError(msg)
        n_box = int(round(density * float(np.prod(mhi - mlo))))
        pts = _hardcore(rng, n_box, mlo, mhi, hardcore * hex_spacing)
    else:
        check_positive("jitter", jitter, allow_zero=True)
        pts = _lattice(rng, hex_spacing, mlo, mhi, jitter)
    seeds = pts @ np.linalg.inv(matrix).T
    keep = np.all((seeds >= lo) & (seeds <= hi), axis=1)
    return seeds[keep]


# --------------------------------------------------------------------- labels


def _warp(shape, spacing, waviness, roughness, rng):
    """Sum of the wavy (grain-scale) and rough (sub-grain) displacement fields, or None."""
    from micro_seg.synth.fields import smooth_noise

    disp = None
    if waviness > 0:
        disp = wavy_displacement(
            shape, amplitude_px=waviness * spacing, correlation_px=0.8 * spacing, seed=rng
        )
    if roughness > 0:
        corr = max(1.5, spacing / 10)
        amp = roughness * spacing
        fine = (amp * smooth_noise(shape, correlation_px=corr, seed=rng),
                amp * smooth_noise(shape, correlation_px=corr, seed=rng))
        disp = fine if disp is None else (disp[0] + fine[0], disp[1] + fine[1])
    return disp


def voronoi_labels(
    shape: Sequence[int],
    *,
    n_grains: float,
    seed: int | np.random.Generator | None = None,
    kind: str = "poisson",
    crop: bool = True,
    aspect_ratio: float = 1.0,
    angle_deg: float = 0.0,
    hardcore: float = 0.7,
    jitter: float = 0.12,
    size_ratio: float = 10.0,
    coarse_area_fraction: float = 0.5,
    waviness: float = 0.0,
    roughness: float = 0.0,
) -> np.ndarray:
    """Grain label image of a Voronoi tessellation (labels ``1..N``, int32).

    Parameters
    ----------
    shape : (rows, cols)
        Field size in pixels.
    n_grains : float
        Grains per field area (expected number of grain centres in the field).
        The number of grains in the image, ``labels.max()``, is larger because
        grains cut by the edge are counted too (unless ``crop=False``).
    seed : int or Generator, optional
        Random seed; the same seed gives the same image.
    kind : {"poisson", "hardcore", "lattice", "bimodal"}
        Seed pattern (see :func:`grain_seeds`). ``"bimodal"`` gives a duplex
        structure: coarse grains, a fraction of which is replaced by clusters of
        fine grains (``size_ratio`` = mean coarse / fine area, the coarse grains
        cover about ``coarse_area_fraction`` of the field).
    crop : bool, optional
        Treat the field as a window into an infinite structure (default).
    aspect_ratio, angle_deg : float, optional
        Rolled / elongated grains: length / width ratio and direction of the
        long axis (degrees counter-clockwise from the column axis).
    hardcore, jitter : float, optional
        Regularity of ``"hardcore"`` / ``"lattice"`` seeds.
    size_ratio, coarse_area_fraction : float, optional
        Shape of the ``"bimodal"`` size distribution.
    waviness : float, optional
        Curvature of the boundaries: amplitude of a smooth random warp as a
        fraction of the mean grain spacing ``sqrt(area / n_grains)``; 0 gives
        straight Voronoi edges, 0.1-0.2 looks like real annealed grains.
    roughness : float, optional
        Small-scale jaggedness of the boundaries (amplitude of a fine warp,
        correlation length a tenth of the spacing, as a fraction of the
        spacing); 0.03-0.08 gives the ragged boundaries of colour-etched sections.
        Split-off fragments are merged back, so every grain stays one piece.

    Returns
    -------
    ndarray of int32, shape (rows, cols)
        Grain labels ``1..N``; every pixel belongs to a grain.

    Examples
    --------
    >>> lab = voronoi_labels((64, 96), n_grains=30, seed=3, kind="hardcore")
    >>> lab.shape, lab.dtype
    ((64, 96), dtype('int32'))
    """
    shape = check_shape(shape)
    if kind not in GRAIN_KINDS:
        msg = f"kind={kind!r}: expected one of {', '.join(map(repr, GRAIN_KINDS))}"
        raise ValueError(msg)
    rng = as_rng(seed)
    n = check_positive("n_grains", n_grains)
    common = dict(crop=crop, aspect_ratio=aspect_ratio, angle_deg=angle_deg)
    geometry = dict(aspect_ratio=aspect_ratio, angle_deg=angle_deg)
    wav = check_positive("waviness", waviness, allow_zero=True)
    rough = check_positive("roughness", roughness, allow_zero=True)
    if kind != "bimodal":
        seeds = grain_seeds(
            shape, n_grains=n_grains, kind=kind, seed=rng, hardcore=hardcore,
            jitter=jitter, **common,
        )
        spacing = np.sqrt(shape[0] * shape[1] / n)
        geometry["displacement"] = _warp(shape, spacing, wav, rough, rng)
        idx = voronoi_from_seeds(shape, seeds, **geometry)
        return merge_fragments(idx)

    s = check_positive("size_ratio", size_ratio)
    fc = float(coarse_area_fraction)
    if not 0.0 < fc < 1.0:
        msg = f"coarse_area_fraction={coarse_area_fraction!r}: must be in (0, 1)"
        raise ValueError(msg)
    # n = A/a_c * (fc + (1 - fc) * s)  ->  coarse seeds per field and fine seeds per field
    n_coarse = n / (fc + (1.0 - fc) * s)
    coarse_seeds = grain_seeds(shape, n_grains=n_coarse, kind="poisson", seed=rng, **common)
    fine_seeds = grain_seeds(shape, n_grains=n_coarse * s, kind="poisson", seed=rng, **common)
    spacing = np.sqrt(shape[0] * shape[1] / (n_coarse * s))
    geometry["displacement"] = _warp(shape, spacing, wav, rough, rng)
    coarse = voronoi_from_seeds(shape, coarse_seeds, **geometry)
    fine = voronoi_from_seeds(shape, fine_seeds, **geometry)
    subdivided = rng.random(len(coarse_seeds)) >= fc
    # fine grain = fine cell intersected with its coarse cell (convex -> one piece)
    key = np.where(subdivided[coarse], len(coarse_seeds) * (1 + fine) + coarse, coarse)
    return merge_fragments(relabel_consecutive(key))
