"""Defects, pores, particles and inclusions: per-object table and E1245-style summary.

Objects come from a binary mask (8-connected components of the non-zero
pixels) or from an instance label image (each object its own integer, 0 =
matrix; any image with more than one distinct non-zero value is taken as
instance labels).

Per object (pixels are unit squares, so a one-pixel object has area 1,
Feret max sqrt(2), Feret min 1 and solidity 1):

* ``label``: the object's value in an instance label image (so rows join
  back to the image), or its connected-component number ``1..N`` in a mask
  (bool, or one non-zero value: a single object labelled 7 is label 1);
* ``area``, ``ecd`` (equivalent circle diameter ``2 sqrt(A / pi)``), centroid;
* ``perimeter``: Crofton estimate from boundary crossings on rows, columns and
  both diagonals (unbiased for smooth shapes, unlike pixel-edge counts; a
  straight edge reads 5 % short along the rows, columns or diagonals and up to
  3 % long between them, so a square of side ``s`` along the pixel axes has
  ``P = 3.79 s``, circularity 0.87 instead of pi / 4 = 0.785);
* ``feret_max`` / ``feret_min``: largest and smallest caliper width of the
  convex hull of the object's pixel squares (rotating calipers);
* ``aspect_ratio = feret_max / feret_min``; ``circularity = 4 pi A / P^2``
  (1 for a disk, clipped to 1); ``solidity = A / convex area`` (pixel
  centres inside the convex hull of the pixel centres: 1 for any digital
  convex shape; scikit-image's ``area_convex`` rasterises the hull of the
  pixel squares and is larger: its solidity of a digital disk is 0.78 at
  radius 3 px, 0.97 at 25 px);
* ``nn_distance``: distance from the centroid to the nearest other object's
  centroid;
* ``touches_edge``: the object is cut by the image edge.

Per image: count, area fraction ``A_A``, number density ``N_A`` (objects per
mm^2, edge-corrected as in Jeffries' planimetric count: an object cut by the image
edge counts 1/2, one holding an image corner 1/4, so a field does not run high by
the objects it shares with its neighbours), means of the object measures over the
objects *not* cut by the edge (a cut object's size and shape are those of its
visible part: E1382 leaves border grains out of size statistics the same way; when
every object is cut, over all of them, with a warning), maxima over all objects (a
cut object's size is a lower bound of its own), mean free path
``lambda = (1 - A_A) / N_L`` (E1245; ``N_L`` = objects intercepted per unit
length of the row and column test lines), and per-field ``A_A``, ``N_A`` with
mean, s, 95 % CI and %RA (E1245 reports these field statistics).  A field grid
given explicitly must leave fields of at least 16 px a side
(:data:`~micro_seg.measure.stats.MIN_FIELD_SIDE_PX`).

Inputs that are probably not a mask are measured as given, with a warning:
an instance label whose pixels fall into several disconnected pieces (a class
map read as instances: each class counts as one object), and objects covering
:data:`FULL_COVER_WARN` (99 %) or more of the image (a raw micrograph), or more than half
of it (:data:`INVERTED_WARN`: an inverted mask?).

Examples
--------
>>> import numpy as np
>>> mask = np.zeros((50, 50), bool); mask[10:20, 10:20] = True; mask[30:32, 30:40] = True
>>> res = measure_defects(mask, pixel_size_um=1.0, fields=None)
>>> res.summary["count"], res.summary["area_fraction"]
(2, 0.048)
>>> res.table["feret_min_um"].round(3).tolist()
[10.0, 2.0]
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from micro_seg.errors import InvalidImageError
from micro_seg.measure._units import NO_SCALE_WARNING, as_input_array, check_pixel_size
from micro_seg.measure.labels import exact_float_labels, row_blocks
from micro_seg.measure.intercept import line_intercepts
from micro_seg.measure.stats import check_field_size, field_grid, field_statistics

__all__ = ["DefectMeasurement", "measure_defects", "convex_hull_measures"]

#: Area fraction from which a "mask" is suspected of being a raw micrograph or a class map (warning only):
#: pores, particles or inclusions covering 99 % of a section leave no matrix to speak of.
FULL_COVER_WARN = 0.99
#: objects covering more than half of a section outnumber the matrix: more often an inverted mask than a material.
INVERTED_WARN = 0.5


@dataclass
class DefectMeasurement:
    """Result of :func:`measure_defects`: ``summary`` dict, per-object ``table``, per-field ``fields``.

    ``labels`` holds the measured objects as ``1..N`` in the table's row order (row ``i`` is the pixels of value
    ``i + 1``); the table's ``label`` column is the object's value in the instance label image given (as in the
    grain table), or its number ``1..N`` among the connected components of a binary mask (an image with one non-zero
    value is read as one)."""

    summary: dict
    table: pd.DataFrame
    fields: pd.DataFrame
    labels: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The summary as plain JSON data (a copy for ``json.dumps``): numpy numbers as Python ones, and a value that
        cannot be computed (NaN or infinite, e.g. the mean intercept of an image of one grain) as None."""
        from micro_seg.jsonable import to_jsonable

        return to_jsonable(self.summary)


def _unique_points(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.unique(np.stack([a, b], 1), axis=0)`` for whole-number coordinates (int64 rows), by sorting one int64
    key per point: the same sorted rows several times faster than ``axis=0``."""
    a = np.asarray(a).astype(np.int64)
    b = np.asarray(b).astype(np.int64)
    a0, b0 = int(a.min()), int(b.min())
    span = int(b.max()) - b0 + 1
    key = np.unique((a - a0) * span + (b - b0))
    return np.stack([key // span + a0, key % span + b0], 1)


def _lattice_points_in_hull(r: np.ndarray, c: np.ndarray) -> float:
    """Number of pixel centres inside or on the convex hull of the given pixel centres (Pick)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = _unique_points(r, c)
    if len(pts) <= 2:
        if len(pts) == 1:
            return 1.0
        d = np.abs(pts[1] - pts[0])
        return float(math.gcd(int(d[0]), int(d[1])) + 1)
    try:
        hull = ConvexHull(pts.astype(np.float64))
    except QhullError:  # collinear centres: a digital segment
        span = pts.max(0) - pts.min(0)
        return float(math.gcd(int(span[0]), int(span[1])) + 1)
    v = pts[hull.vertices]
    w = np.roll(v, -1, axis=0)
    e = np.abs(w - v)
    boundary = float(np.gcd(e[:, 0], e[:, 1]).sum())
    area = abs(int((v[:, 0] * w[:, 1] - w[:, 0] * v[:, 1]).sum())) / 2.0  # shoelace, exact for whole numbers
    # Pick: A = I + B/2 - 1  ->  I + B = A + B/2 + 1
    return area + boundary / 2.0 + 1.0


def convex_hull_measures(rows: np.ndarray, cols: np.ndarray) -> tuple[float, float, float]:
    """Feret max, Feret min and convex area (pixels) of a set of pixels (whole-number coordinates).

    The Feret (caliper) diameters are those of the convex hull of the pixels
    taken as unit squares; the convex area is the number of pixel centres inside
    the convex hull of the pixel centres (Pick's theorem), so that solidity =
    area / convex area is 1 for any digital convex shape (scikit-image's
    ``area_convex`` is larger: it rasterises the hull of the pixel squares).

    Examples
    --------
    >>> fmax, fmin, area = convex_hull_measures(np.array([0]), np.array([0]))
    >>> round(fmax, 4), fmin, area
    (1.4142, 1.0, 1.0)
    """
    from scipy.spatial import ConvexHull

    r = np.asarray(rows).astype(np.int64)
    c = np.asarray(cols).astype(np.int64)
    # the pixel squares' corners, in half pixels (whole numbers), without repeats
    pts = _unique_points(np.concatenate([2 * r - 1, 2 * r - 1, 2 * r + 1, 2 * r + 1]),
                         np.concatenate([2 * c - 1, 2 * c + 1, 2 * c - 1, 2 * c + 1])) / 2.0
    hull = ConvexHull(pts)  # unit squares are never degenerate
    v = pts[hull.vertices]
    d2 = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    fmax = float(np.sqrt(d2.max()))
    # rotating calipers: for every hull edge, the farthest vertex from its line
    e = np.roll(v, -1, axis=0) - v
    norm = np.hypot(e[:, 0], e[:, 1])
    ok = norm > 0
    e, v0, norm = e[ok], v[ok], norm[ok]
    cross = np.abs(e[:, 0][:, None] * (v[None, :, 1] - v0[:, 1][:, None]) - e[:, 1][:, None] * (v[None, :, 0] - v0[:, 0][:, None]))
    widths = cross.max(axis=1) / norm
    return fmax, float(widths.min()), _lattice_points_in_hull(r, c)


def _centroids(labels: np.ndarray, n: int, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (row, col) of every object ``1..n``, from per-label sums of the pixel coordinates (row block by row
    block: no image-sized weights).  The sums are whole numbers, exact in float64, so each centroid equals the mean
    of its pixels' coordinates."""
    sum_r = np.zeros(n + 1)
    sum_c = np.zeros(n + 1)
    cols = labels.shape[1]
    col_index = np.arange(cols, dtype=np.float64)
    for rows in row_blocks(labels):
        block = labels[rows].ravel()
        sum_r += np.bincount(block, weights=np.repeat(np.arange(rows.start, rows.stop, dtype=np.float64), cols),
                             minlength=n + 1)
        sum_c += np.bincount(block, weights=np.tile(col_index, rows.stop - rows.start), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sum_r[1:] / areas[1:], sum_c[1:] / areas[1:]


#: Objects of at most this many run ends (pixels that end a horizontal run of an object: the hull's candidates)
#: have their hull measures looked up by shape: small shapes repeat (a mask of 30,000 specks holds a few hundred
#: distinct ones) and their measures do not depend on where they lie.
HULL_CACHE_MAX_POINTS = 32


def _hull_measures(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feret max, Feret min and convex area (:func:`convex_hull_measures`) of every object ``1..n``.

    The hull of an object is that of the two end pixels of each of its horizontal runs (every other pixel lies
    between two of them on its row), found for all objects in one pass over the image; only the hull itself is
    computed object by object, and small shapes once each (:data:`HULL_CACHE_MAX_POINTS`).
    """
    fmax, fmin, hull_area = np.zeros(n), np.zeros(n), np.zeros(n)
    if not n:
        return fmax, fmin, hull_area
    rows, cols = labels.shape
    parts = []
    for block in row_blocks(labels):
        lab = labels[block]
        ends = lab != 0
        ends[:, 1:-1] &= (lab[:, 1:-1] != lab[:, :-2]) | (lab[:, 1:-1] != lab[:, 2:])
        rr, cc = np.nonzero(ends)
        parts.append((lab[rr, cc], rr + block.start, cc))
    lab_e = np.concatenate([p[0] for p in parts])
    order = np.argsort(lab_e, kind="stable")
    lab_e = lab_e[order]
    rr = np.concatenate([p[1] for p in parts])[order]
    cc = np.concatenate([p[2] for p in parts])[order]
    del parts, order
    bounds = np.searchsorted(lab_e, np.arange(1, n + 2))
    cache: dict[bytes, tuple[float, float, float]] = {}
    for k in range(n):
        i0, i1 = bounds[k], bounds[k + 1]
        if i0 == i1:
            continue
        r, c = rr[i0:i1], cc[i0:i1]
        if i1 - i0 > HULL_CACHE_MAX_POINTS:
            fmax[k], fmin[k], hull_area[k] = convex_hull_measures(r, c)
            continue
        r, c = r - r.min(), c - c.min()  # the shape, wherever it lies (its points in row-major order)
        key = np.concatenate([r, c]).astype(np.int32).tobytes()
        found = cache.get(key)
        if found is None:
            found = cache[key] = convex_hull_measures(r, c)
        fmax[k], fmin[k], hull_area[k] = found
    return fmax, fmin, hull_area


def _objects(mask: np.ndarray, what: str, connectivity: int) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Objects ``1..n`` of a binary mask or instance label image; also, for instances, the label value of each
    object (object ``k`` is the pixels of value ``values[k - 1]``), None for a binary mask."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        msg = f"{what}: expected a 2-D mask or label image (rows x cols), got shape {mask.shape}"
        raise InvalidImageError(msg)
    if mask.shape[0] < 2 or mask.shape[1] < 2:
        msg = f"{what}: image of {mask.shape[0]} x {mask.shape[1]} pixels is too small to measure"
        raise InvalidImageError(msg)
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        if not (np.issubdtype(mask.dtype, np.floating) and np.all(np.isfinite(mask)) and np.all(mask == np.round(mask))):
            msg = f"{what}: dtype {mask.dtype} is neither a binary mask nor integer labels"
            raise InvalidImageError(msg)
        mask = exact_float_labels(mask, what)  # refuses values the float type cannot hold apart
    if mask.dtype != bool and mask.min() < 0:
        msg = f"{what}: negative value {int(mask.min())} in a mask / label image"
        raise InvalidImageError(msg)
    nonzero = mask != 0
    if mask.dtype == bool:
        values = np.array([1])
    elif int(mask.max()) <= 4 * mask.size + 1024:
        values = np.flatnonzero(np.bincount(mask.ravel()))
        values = values[values > 0]
    else:
        values = np.unique(mask[nonzero])
    if mask.dtype == bool or values.size <= 1:
        structure = ndi.generate_binary_structure(2, connectivity)
        labels, n = ndi.label(nonzero, structure=structure)
        return labels.astype(np.int32), int(n), None
    # instance labels: relabel 1..N, keep 0 as matrix
    lut = np.zeros(int(values.max()) + 1, dtype=np.int32) if values.max() < 4 * mask.size + 1024 else None
    if lut is not None:
        lut[values] = np.arange(1, values.size + 1, dtype=np.int32)
        return lut[mask], int(values.size), values
    # huge label values: rank each pixel's value among the non-zero values (0 stays matrix even when absent)
    ranks = np.searchsorted(values, mask).astype(np.int32) + 1
    ranks[~nonzero] = 0
    return ranks, int(values.size), values


def _split_labels(labels: np.ndarray, n: int, connectivity: int) -> tuple[int, int, int]:
    """Labels of an instance image that fall into several pieces: (n split, pieces of those, most pieces of one).

    A class map (value = class, each class many particles) read as instances has every
    class split into its particles.

    Examples
    --------
    >>> lab = np.array([[1, 0, 1], [0, 0, 0], [2, 0, 1]], np.int32)
    >>> _split_labels(lab, 2, 1)
    (1, 3, 3)
    """
    from skimage.measure import label as label_pieces

    pieces = label_pieces(labels, background=0, connectivity=connectivity)
    n_pieces = int(pieces.max())
    if n_pieces <= n:
        return 0, 0, 0
    value_of_piece = np.zeros(n_pieces + 1, dtype=np.int64)
    value_of_piece[pieces.ravel()] = labels.ravel()
    per_label = np.bincount(value_of_piece[1:], minlength=n + 1)[1:]
    split = per_label > 1
    return int(split.sum()), int(per_label[split].sum()), int(per_label.max())


def _field_slices(shape: tuple[int, int], fields: str | int | tuple[int, int] | None, what: str) -> list:
    """The E1245 field grid: "auto" 5 x 5 (fewer for small images), or the grid asked for (fields >= 16 px)."""
    rows, cols = shape
    if fields is None:
        return [(slice(0, rows), slice(0, cols))]
    if isinstance(fields, str):
        if fields != "auto":
            msg = f"fields={fields!r}: expected 'auto', an int, a (rows, cols) pair or None"
            raise ValueError(msg)
        # "auto": 5 x 5 fields, fewer for small images (fields of >= 16 px)
        return field_grid((rows, cols), fields=(min(5, max(1, rows // 16)), min(5, max(1, cols // 16))))
    return field_grid((rows, cols), fields=check_field_size((rows, cols), fields, what=what))


def measure_defects(
    mask: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    connectivity: int = 2,
    min_size_px: int = 1,
    fields: str | int | tuple[int, int] | None = "auto",
    what: str = "mask",
    check_pieces: bool = True,
) -> DefectMeasurement:
    """Measure pores / defects / particles in a binary mask or instance label image.

    Parameters
    ----------
    mask : ndarray, shape (rows, cols)
        Binary mask (non-zero = object) or instance labels (0 = matrix).
    pixel_size_um : float, optional
        Pixel size in micrometres; ``None`` gives pixel units and null ``_um`` values.
    connectivity : {1, 2}, optional
        Pixel connectivity used to split a binary mask into objects (2 = 8-connected).
    min_size_px : int, optional
        Objects smaller than this many pixels are ignored (noise): left out of the count,
        the table and the area fraction; the summary reports how many
        (``n_removed_small``) and their area (``removed_area_fraction``), with a warning.
    fields : "auto", int, (n_rows, n_cols) or None, optional
        Field grid for the E1245 field statistics ("auto": 5 x 5, fewer for small images).
        A grid given explicitly must leave fields of >= 16 px a side (else
        :class:`~micro_seg.errors.InvalidImageError`).
    what : str, optional
        Name of the input for messages.
    check_pieces : bool, optional
        Warn when instance labels fall into disconnected pieces (a class map
        given as instances).  Callers measuring instances that are connected by
        construction (a segmentation's post-processing) pass False: the check
        labels the whole image again (8 bytes per pixel).

    Returns
    -------
    DefectMeasurement

    Examples
    --------
    >>> m = np.zeros((40, 40), bool); m[5:10, 5:10] = True
    >>> measure_defects(m, fields=None).summary["mean_ecd_um"] is None
    True
    """
    mask = as_input_array(mask, what)
    px = check_pixel_size(pixel_size_um)
    if connectivity not in (1, 2):
        msg = f"connectivity={connectivity!r}: expected 1 (4-connected) or 2 (8-connected)"
        raise ValueError(msg)
    # "3" was a bare TypeError ('<' not supported between str and int); NaN removed nothing, silently
    if isinstance(min_size_px, bool) or not isinstance(min_size_px, numbers.Real) or not min_size_px >= 0:
        msg = f"min_size_px={min_size_px!r}: must be a number of pixels >= 0"
        raise ValueError(msg)
    labels, n, values = _objects(mask, what, connectivity)
    instances = values is not None
    rows, cols = labels.shape
    slices = _field_slices((rows, cols), fields, what)
    warnings: list[str] = []
    if px is None:
        warnings.append(NO_SCALE_WARNING)
    if instances and check_pieces:
        n_split, n_pieces, most = _split_labels(labels, n, connectivity)
        if n_split:
            warnings.append(
                f"{what}: {n_split} of the {n} label values are split into disconnected pieces ({n_pieces} pieces, "
                f"up to {most} for one value): is this a class map rather than an instance mask? each label value "
                "counts as one object; measure a binary mask of each class instead"
            )
    areas = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    n_removed, removed_px = 0, 0.0
    if min_size_px > 1 and n:
        small = areas < min_size_px
        small[0] = False
        if small.any():
            n_removed, removed_px = int(small.sum()), float(areas[small].sum())
            warnings.append(
                f"{what}: {n_removed} object(s) smaller than the minimum size of {min_size_px} px were removed, "
                f"{100 * removed_px / (rows * cols):.3g}% of the image: they are left out of the count, the sizes "
                "and the area fraction (n_removed_small, removed_area_fraction)"
            )
            keep = ~small
            lut = np.cumsum(keep).astype(np.int32) - 1
            lut[small] = 0
            labels = lut[labels]
            n = int(keep.sum() - 1)
            if instances:
                values = values[keep[1:]]
            areas = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    total = float(rows * cols)
    area_fraction = float(areas[1:].sum() / total)

    # Crofton perimeters and N_L from one pass of the line counter (0 = matrix is just another label)
    counts = line_intercepts(labels, n_labels=n)
    per = {c.angle: c.crossings_per_label.astype(np.float64) for c in counts}
    perimeter = (math.pi / 8.0) * (per[0] + per[90] + (per[45] + per[135]) / math.sqrt(2.0))
    # objects intercepted per unit length (rows and columns): entries from the matrix
    entries = float(((labels[:, 1:] != 0) & (labels[:, :-1] == 0)).sum() + ((labels[1:] != 0) & (labels[:-1] == 0)).sum())
    line_len = float(rows * (cols - 1) + cols * (rows - 1))
    n_l = entries / line_len

    edge = np.zeros(n + 1, bool)
    edge[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    # Jeffries weights (as for grains, E112 planimetric): inside 1, cut by the edge 1/2, holding a corner 1/4
    weight = np.where(edge, 0.5, 1.0)
    weight[np.unique(labels[[0, 0, -1, -1], [0, -1, 0, -1]])] = 0.25
    weight[0] = 0.0
    weight = weight[1:]

    cen_r, cen_c = _centroids(labels, n, areas)
    fmax, fmin, hull_area = _hull_measures(labels, n)
    a = areas[1:]
    p = perimeter[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        circ = np.minimum(1.0, 4.0 * math.pi * a / (p * p))
        aspect = fmax / fmin
        solidity = np.minimum(1.0, a / hull_area)
    ecd = 2.0 * np.sqrt(a / math.pi)
    nn = np.full(n, np.nan)
    if n >= 2:
        from scipy.spatial import cKDTree

        pts = np.stack([cen_r, cen_c], 1)
        d, _ = cKDTree(pts).query(pts, k=2)
        nn = d[:, 1]

    table = pd.DataFrame(
        {
            "label": values if instances else np.arange(1, n + 1),
            "area_px": a,
            "ecd_px": ecd,
            "perimeter_px": p,
            "feret_max_px": fmax,
            "feret_min_px": fmin,
            "aspect_ratio": aspect,
            "circularity": circ,
            "solidity": solidity,
            "centroid_row_px": cen_r,
            "centroid_col_px": cen_c,
            "nn_distance_px": nn,
            "touches_edge": edge[1:],
        }
    )
    if px is not None:
        for col, power in (("area", 2), ("ecd", 1), ("perimeter", 1), ("feret_max", 1), ("feret_min", 1),
                           ("centroid_row", 1), ("centroid_col", 1), ("nn_distance", 1)):
            suffix = "_um2" if power == 2 else "_um"
            table[col + suffix] = table[col + "_px"] * px**power

    # ---- fields (E1245)
    field_rows = []
    cr_i = np.clip(np.rint(cen_r).astype(int), 0, rows - 1) if n else np.zeros(0, int)
    cc_i = np.clip(np.rint(cen_c).astype(int), 0, cols - 1) if n else np.zeros(0, int)
    for f, (rs, cs) in enumerate(slices):
        sub = labels[rs, cs]
        inside = (cr_i >= rs.start) & (cr_i < rs.stop) & (cc_i >= cs.start) & (cc_i < cs.stop)
        aa = float((sub != 0).mean())
        na_px = float(weight[inside].sum()) / sub.size  # by centroid (each object once), edge-weighted
        field_rows.append({"field": f, "row_start": rs.start, "row_stop": rs.stop, "col_start": cs.start,
                           "col_stop": cs.stop, "area_fraction": aa, "count": int(inside.sum()),
                           "density_per_px2": na_px,
                           "density_per_mm2": na_px / (px / 1000.0) ** 2 if px is not None else None})
    fields_df = pd.DataFrame(field_rows)
    st_aa = field_statistics(fields_df["area_fraction"].to_numpy())
    st_na = field_statistics(fields_df["density_per_px2"].to_numpy())

    def um(v, power=1):
        return float(v) * px**power if px is not None and v is not None and math.isfinite(v) else None

    def mean_or_none(x):
        x = np.asarray(x, float)
        x = x[np.isfinite(x)]
        return float(x.mean()) if x.size else None

    weighted_count = float(weight.sum())
    density_px = weighted_count / total
    mfp_px = (1.0 - area_fraction) / n_l if n_l > 0 else None
    # size and shape means over the objects the edge does not cut (all of them when every object is cut)
    whole = ~edge[1:] if (n and not edge[1:].all()) else np.ones(n, bool)
    if n and edge[1:].all():
        warnings.append(
            f"{what}: every object touches the image edge, so the mean sizes and shapes are those of cut objects "
            "(too small); image a larger field or use a lower magnification"
        )
    mean_ecd_px = mean_or_none(ecd[whole])
    max_feret_px = float(fmax.max()) if n else None
    max_ecd_px = float(np.nanmax(ecd)) if n else None
    summary: dict[str, Any] = {
        "count": n,
        "area_fraction": area_fraction,
        "density_per_mm2": density_px / (px / 1000.0) ** 2 if px is not None else None,
        "mean_ecd_um": um(mean_ecd_px) if mean_ecd_px is not None else None,
        "max_feret_um": um(max_feret_px) if max_feret_px is not None else None,
        "max_ecd_um": um(max_ecd_px) if max_ecd_px is not None else None,
        "mean_feret_max_um": um(mean_or_none(fmax[whole])) if n else None,
        "mean_feret_min_um": um(mean_or_none(fmin[whole])) if n else None,
        "mean_area_um2": um(mean_or_none(a[whole]), 2) if n else None,
        "max_area_um2": um(float(a.max()), 2) if n else None,
        "mean_nn_distance_um": um(mean_or_none(nn)) if n >= 2 else None,
        "mean_free_path_um": um(mfp_px) if mfp_px is not None else None,
        "pixel_size_um": px,
        "units": "um" if px is not None else "px",
        "density_per_px2": density_px,
        "mean_ecd_px": mean_ecd_px,
        "max_feret_px": max_feret_px,
        "max_ecd_px": max_ecd_px,
        "mean_area_px": mean_or_none(a[whole]) if n else None,
        "mean_nn_distance_px": mean_or_none(nn) if n >= 2 else None,
        "mean_free_path_px": mfp_px,
        "mean_aspect_ratio": mean_or_none(aspect[whole]) if n else None,
        "mean_circularity": mean_or_none(circ[whole]) if n else None,
        "mean_solidity": mean_or_none(solidity[whole]) if n else None,
        "n_touching_edge": int(edge[1:].sum()),
        "n_removed_small": n_removed,  # objects under min_size_px, left out of everything above
        "removed_area_fraction": removed_px / total,
        "edge_weighted_count": weighted_count,
        "fields": {
            "n_fields": len(slices),
            "area_fraction": st_aa,
            "density_per_px2": st_na,
            "density_per_mm2": (
                {k: (v / (px / 1000.0) ** 2 if k in ("mean", "sd", "ci95") and isinstance(v, float) else v)
                 for k, v in st_na.items()} if px is not None else None
            ),
        },
        "area_fraction_ci95": st_aa["ci95"] if math.isfinite(st_aa["ci95"]) else None,  # one field: none
        "density_ci95_per_mm2": (st_na["ci95"] / (px / 1000.0) ** 2
                                 if px is not None and math.isfinite(st_na["ci95"]) else None),
        "warnings": warnings,
    }
    if len(slices) < 2:  # a CI over one field is undefined: null, and said so
        small = isinstance(fields, str)  # "auto" (no other string gets here): it needs 2 x 16 px along an axis
        warnings.append(f"{what}: measured as one field{' (the image is too small to split)' if small else ''}: the "
                        "area fraction and density have no confidence interval (area_fraction_ci95 and "
                        "density_ci95_per_mm2 are null); E1245 field statistics need several fields")
    if area_fraction >= FULL_COVER_WARN:
        warnings.append(
            f"{what}: the objects cover {100 * area_fraction:.1f}% of the image, (nearly) the whole image: is this "
            "a raw micrograph or a class map rather than a mask of pores / particles (0 = matrix)?"
        )
    elif area_fraction > INVERTED_WARN:
        warnings.append(
            f"{what}: the objects cover {100 * area_fraction:.1f}% of the image, more than the matrix: is the mask "
            "inverted? Pores / particles are non-zero and the matrix 0 (a mask with matrix = 1 measures the matrix)"
        )
    if n and np.median(a) < 20:
        warnings.append(
            f"{what}: the median object is only {np.median(a):.0f} px; shape measures (circularity, Feret, "
            "solidity) are dominated by pixelisation at this size"
        )
    return DefectMeasurement(summary=summary, table=table, fields=fields_df, labels=labels, warnings=warnings)
