"""Validate grain label images and build grains from boundary masks.

Label images: each grain its own positive integer, ``0`` = boundary or
background.  Boundary pixels carry no grain; before measuring they are
assigned to the nearest grain (Euclidean distance transform), which puts the
grain boundary on the medial line of the traced boundary band.

Boundary masks (``labels_from_boundaries``), step by step:

1. ``mask != 0`` is the boundary.  Gaps in the traced network are closed by
   dilating it with a disk of radius ``close_gaps_px`` (default 1 px: gaps up
   to 2 px wide close; ``0`` disables; at most :func:`max_close_gaps_px`).
2. The grains are the 4-connected components of the non-boundary pixels (4-,
   not 8-connectivity, so two grains never leak into each other through the
   corner of a diagonal 1-px boundary).
3. Components smaller than ``min_grain_px`` pixels (fragments inside thick
   boundaries, specks of noise) are dropped into the boundary.
4. Every boundary pixel goes to its nearest grain (distance-transform
   watershed), which restores the pixels removed by the dilation and leaves a
   tessellation whose boundaries lie on the centre lines of the traced ones.

Examples
--------
>>> import numpy as np
>>> mask = np.zeros((20, 20), bool); mask[:, 10] = True; mask[10, :] = True
>>> labels = labels_from_boundaries(mask)
>>> int(labels.max()), int((labels == 0).sum())
(4, 0)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from micro_seg.errors import InvalidImageError

__all__ = ["prepare_labels", "labels_from_boundaries", "binary_boundary_mask", "boundary_levels_note", "fill_boundaries",
           "inverted_mask_hint", "max_close_gaps_px", "single_label_regions", "split_label_values", "wide_zero_fraction", "zero_bits", "restore_zeros"]

#: Largest gap-closing radius (pixels) of :func:`labels_from_boundaries`: it closes gaps up to 64 px
#: wide, far more than the breaks a tracing or a segmentation leaves, and it also erases every grain
#: narrower than about twice the radius.  SciPy's disk dilation needs memory growing as the fourth
#: power of the radius (0.1 GB at 32 px, 1.7 GB at 64 px, 8.5 GB at 96 px, whatever the image size).
MAX_CLOSE_GAPS_PX = 32


def _check_2d(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        msg = f"{what}: expected a 2-D image (rows x cols), got shape {image.shape}"
        raise InvalidImageError(msg)
    if image.shape[0] < 2 or image.shape[1] < 2:
        msg = f"{what}: image of {image.shape[0]} x {image.shape[1]} pixels is too small to measure"
        raise InvalidImageError(msg)
    return image


#: Pixels per block when counting or relabelling a label image block by block: ``np.bincount`` and
#: fancy indexing cast an int32 image to int64 first (8 bytes per pixel, 2.1 GB at 16k x 16k).
BLOCK_PIXELS = 1 << 22


def row_blocks(image: np.ndarray):
    """Row slices of about :data:`BLOCK_PIXELS` pixels covering ``image``."""
    step = max(1, BLOCK_PIXELS // max(1, int(np.prod(image.shape[1:]))))
    for r0 in range(0, image.shape[0], step):
        yield slice(r0, min(image.shape[0], r0 + step))


def label_counts(labels: np.ndarray, length: int) -> np.ndarray:
    """Pixel count of every label value ``0..length-1`` (int64), counted block by block.

    Equals ``np.bincount(labels.ravel(), minlength=length)`` for labels in
    ``0..length-1`` without its whole-image int64 copy.

    Examples
    --------
    >>> label_counts(np.array([[0, 2], [2, 2]], np.int32), 4).tolist()
    [1, 0, 3, 0]
    """
    hist = np.zeros(int(length), dtype=np.int64)
    for rows in row_blocks(labels):
        hist += np.bincount(labels[rows].ravel(), minlength=int(length))
    return hist


#: Row strips (and the halo of rows around each) in which :func:`fill_boundaries` works on large images.
FILL_STRIP_ROWS, FILL_HALO_ROWS = 512, 32


def fill_boundaries(labels: np.ndarray, *, strip_rows: int = FILL_STRIP_ROWS, halo: int = FILL_HALO_ROWS,
                    overwrite_input: bool = False) -> np.ndarray:
    """Assign every 0 pixel to the nearest non-zero label (Euclidean distance).

    A whole-image distance transform costs 13 bytes per pixel (3.5 GB at
    16k x 16k), so images taller than two strips are filled strip by strip,
    each with ``halo`` rows of context: a pixel whose nearest label lies
    within the halo finds it at the same distance as in the whole image (a
    tie between equally near grains could in principle be broken the other
    way; on an 8k x 8k segmentation no pixel of 10 million differed), and if
    any pixel's nearest label is farther away the whole image is transformed
    after all.

    ``overwrite_input=True`` fills ``labels`` itself (it must be writable)
    and returns it, with the same values as a filled copy: no image-sized
    copy (1 GB for a 16k x 16k int32 image).

    Examples
    --------
    >>> fill_boundaries(np.array([[1, 0, 0, 2]])).tolist()
    [[1, 1, 2, 2]]
    """
    labels = np.asarray(labels)
    zero = labels == 0
    if not zero.any():
        return labels
    if zero.all():
        msg = "labels: no grain in the image (all pixels are 0)"
        raise InvalidImageError(msg)
    if labels.shape[0] > 2 * strip_rows:
        # filling in place, a strip that needs the whole-image transform after all finds earlier strips filled:
        # the packed 0 mask (1 bit per pixel) puts them back first
        bits = np.packbits(zero, axis=1) if overwrite_input else None
        del zero
        out = _fill_in_strips(labels, strip_rows, halo, in_place=overwrite_input)
        if out is not None:
            return out
        if bits is not None:
            restore_zeros(labels, bits)
        zero = labels == 0
    idx = ndi.distance_transform_edt(zero, return_distances=False, return_indices=True)
    if overwrite_input:
        labels[...] = labels[tuple(idx)]
        return labels
    return labels[tuple(idx)]


def zero_bits(labels: np.ndarray) -> np.ndarray | None:
    """The 0 pixels of ``labels`` packed 8 per byte along the rows (``np.packbits``), or None if there are none.

    Row block by row block, so no whole-image mask is made (268 MB at 16k x 16k).

    Examples
    --------
    >>> lab = np.array([[1, 0, 2], [0, 3, 3]])
    >>> bits = zero_bits(lab); lab[lab == 0] = 9
    >>> restore_zeros(lab, bits); lab.tolist()
    [[1, 0, 2], [0, 3, 3]]
    """
    bits = np.concatenate([np.packbits(labels[rows] == 0, axis=1) for rows in row_blocks(labels)])
    return bits if bits.any() else None


def restore_zeros(labels: np.ndarray, bits: np.ndarray) -> None:
    """Set the pixels marked in ``bits`` (from :func:`zero_bits`) back to 0, in place."""
    cols = labels.shape[1]
    for rows in row_blocks(labels):
        labels[rows][np.unpackbits(bits[rows], axis=1, count=cols).view(bool)] = 0


def _fill_in_strips(labels: np.ndarray, strip_rows: int, halo: int, *, in_place: bool = False) -> np.ndarray | None:
    """:func:`fill_boundaries` strip by strip; None when a nearest label may lie beyond a strip's halo.

    Only the feature transform (nearest-label indices) is computed; distances are taken for the core's 0
    pixels alone (the distance map would cost another 8 bytes per window pixel and its sqrt pass 16 more).
    ``in_place``: ``labels`` itself is filled; the halo above each strip is read from a copy of those rows
    taken before they were filled, so the result is the same as the copy's.
    """
    rows = labels.shape[0]
    in_place = in_place and halo <= strip_rows  # the saved rows above a strip then lie in one strip
    out = labels if in_place else labels.copy()
    above = None  # in place: the input's rows just above the current strip, as they were before filling
    for r0 in range(0, rows, strip_rows):
        r1 = min(rows, r0 + strip_rows)
        w0, w1 = max(0, r0 - halo), min(rows, r1 + halo)
        has_zero = bool((labels[r0:r1] == 0).any())
        if in_place:
            window = labels[w0:w1] if above is None or not has_zero else np.concatenate([above, labels[r0:w1]])
            above = labels[max(0, r1 - halo) : r1].copy()
        else:
            window = labels[w0:w1]
        if not has_zero:
            continue
        zero = window == 0
        if zero.all():
            return None
        idx = ndi.distance_transform_edt(zero, return_distances=False, return_indices=True)
        core = slice(r0 - w0, r1 - w0)
        zr, zc = np.nonzero(zero[core])  # the core's 0 pixels (row within the core, column)
        near_r, near_c = idx[0][core][zr, zc], idx[1][core][zr, zc]
        del idx
        d2 = (near_r.astype(np.int64) - (zr + core.start)) ** 2 + (near_c.astype(np.int64) - zc) ** 2
        if d2.size and int(d2.max()) > halo * halo:  # a label outside the window could be nearer
            return None
        out[r0 + zr, zc] = window[near_r, near_c]
    return out


def whole_float_labels(labels: np.ndarray, what: str, stored_as: np.dtype | None = None) -> np.ndarray:
    """A floating-point label image as int64, refused unless every value is a whole number the float type
    holds exactly (``stored_as``: the file's type if it was widened on reading, e.g. float16 read as float32).

    Above ``2 ** (mantissa bits + 1)`` (2048 for float16, 16777216 for float32) not every whole number exists in
    the type, so neighbouring labels may already have been merged: a silent wrong count, hence refused.

    Examples
    --------
    >>> whole_float_labels(np.array([[0.0, 2048.0]], dtype=np.float16), "a").tolist()
    [[0, 2048]]
    >>> try:
    ...     whole_float_labels(np.array([[0.0, 4096.0]], dtype=np.float16), "a")
    ... except InvalidImageError as exc:
    ...     print(str(exc).split(";")[0])
    a: label values up to 4096 in a float16 image: float16 holds whole numbers exactly only up to 2048, so neighbouring labels may have been merged
    """
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        raise InvalidImageError(f"{what}: floating-point image with values that are not whole numbers is not a label image")
    return exact_float_labels(labels, what, stored_as)


def exact_float_labels(labels: np.ndarray, what: str, stored_as: np.dtype | None = None) -> np.ndarray:
    """:func:`whole_float_labels` for values already known to be finite whole numbers: the exactness check and
    the cast only."""
    fdtype = np.dtype(stored_as or labels.dtype)
    exact = 2 ** (np.finfo(fdtype).nmant + 1)
    top = float(np.abs(labels).max()) if labels.size else 0.0
    if top > exact:
        raise InvalidImageError(
            f"{what}: label values up to {top:.0f} in a {fdtype.name} image: {fdtype.name} holds whole numbers "
            f"exactly only up to {exact}, so neighbouring labels may have been merged; save labels as integers")
    return labels.astype(np.int64)


def prepare_labels(
    labels: np.ndarray, *, what: str = "labels", return_counts: bool = False, overwrite_input: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a label image and relabel it ``1..N`` (int32) with 0 pixels filled.

    Parameters
    ----------
    labels : ndarray, shape (rows, cols)
        Integer labels (integral floats accepted), ``0`` = boundary.
    what : str
        Name used in error messages (a file name, say).
    return_counts : bool, optional
        Also return the pixel count of every output label (index 0 unused).
    overwrite_input : bool, optional
        An input already labelled ``1..N`` has its 0 pixels filled in place
        (no image-sized copy; see :func:`zero_bits` / :func:`restore_zeros`
        to put them back).  A relabelled image is always filled in place,
        being a new array already.

    Returns
    -------
    labels : ndarray of int32
        Consecutive labels ``1..N``, no zeros.
    original : ndarray
        ``original[k]`` is the input label of grain ``k`` (``original[0] = 0``).
    counts : ndarray of int64, only with ``return_counts``

    Examples
    --------
    >>> lab, orig = prepare_labels(np.array([[7, 7, 0, 3], [7, 7, 3, 3]]))
    >>> lab.tolist(), orig.tolist()
    ([[2, 2, 2, 1], [2, 2, 1, 1]], [0, 3, 7])
    """
    labels = _check_2d(labels, what)
    if labels.dtype == bool:
        msg = f"{what}: a boolean mask is not a label image (use a boundary mask with --boundary, or label it)"
        raise InvalidImageError(msg)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating):
            msg = f"{what}: dtype {labels.dtype} is not an integer label image"
            raise InvalidImageError(msg)
        labels = whole_float_labels(labels, what)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        msg = f"{what}: negative label {lo}; grain labels must be >= 0"
        raise InvalidImageError(msg)
    if hi == 0:
        msg = f"{what}: no grain in the image (all pixels are 0)"
        raise InvalidImageError(msg)
    counts = None
    if hi <= 4 * labels.size + 1024:
        hist = label_counts(labels, hi + 1)
        present = hist > 0
        present[0] = False
        original = np.concatenate([[0], np.flatnonzero(present)])
        if original.size == hi + 1:  # already 1..N: no relabelling pass
            out = labels
            counts = hist
        else:
            lut = np.zeros(hi + 1, dtype=np.int32)
            lut[original[1:]] = np.arange(1, original.size, dtype=np.int32)
            out = np.empty(labels.shape, dtype=np.int32)
            for rows in row_blocks(labels):
                out[rows] = lut[labels[rows]]
            counts = np.concatenate([[hist[0]], hist[original[1:]]])
    else:
        original, inverse = np.unique(labels, return_inverse=True)
        if original[0] != 0:  # a 0 of the values' own type: [0] (int64) with uint64 would make float64 values
            original = np.concatenate([np.zeros(1, original.dtype), original])
            inverse = inverse + 1
        out = inverse.reshape(labels.shape).astype(np.int32)
    if counts is None or counts[0] > 0:
        out = fill_boundaries(out, overwrite_input=(overwrite_input and out.flags.writeable) or out is not labels)
        counts = None
    out = np.ascontiguousarray(out, dtype=np.int32)
    if not return_counts:
        return out, original
    if counts is None:
        counts = label_counts(out, original.size)
    return out, original, counts.astype(np.int64)


def max_close_gaps_px(shape: tuple[int, ...]) -> int:
    """Largest sensible gap-closing radius for an image of ``shape`` (rows, cols).

    :data:`MAX_CLOSE_GAPS_PX`, and at most a quarter of the shorter side (a
    larger disk would swallow every grain of the image), but never below the
    default of 1 px.

    Examples
    --------
    >>> max_close_gaps_px((512, 512)), max_close_gaps_px((100, 400))
    (32, 25)
    """
    return int(max(1, min(MAX_CLOSE_GAPS_PX, min(int(shape[0]), int(shape[1])) // 4)))


def single_label_regions(labels: np.ndarray) -> int:
    """Number of separate regions of a label image holding one non-zero value.

    The larger of: the 8-connected pieces of the non-zero pixels and the
    4-connected regions of the 0 pixels (the grains of a boundary mask read as
    labels).  A genuine one-grain image has 1; a binary boundary or grain mask
    passed as labels has many.  Only meaningful when the image has a single
    non-zero value.

    Examples
    --------
    >>> mask = np.zeros((20, 20), np.uint8); mask[:, 10] = 1; mask[10, :] = 1
    >>> single_label_regions(mask), single_label_regions(np.ones((5, 5), int))
    (4, 1)
    """
    nonzero = np.asarray(labels) != 0
    _, n_pieces = ndi.label(nonzero, structure=np.ones((3, 3), bool))
    _, n_holes = ndi.label(~nonzero)
    return int(max(n_pieces, n_holes))


#: A label value whose bounding box is more than this many times its pixel count is checked for
#: disconnected pieces by :func:`split_label_values` (a compact grain fills a good part of its box).
SPREAD_BOX_RATIO = 4.0


def split_label_values(labels: np.ndarray, areas: np.ndarray, *, budget_px: int | None = None) -> tuple[int, int, int, int]:
    """Label values of ``labels`` (``1..N``) that form several separate 8-connected regions.

    Only values spread over a bounding box more than :data:`SPREAD_BOX_RATIO`
    times their pixel count (``areas[i]`` = pixels of value ``i + 1``) can be
    split and are labelled, each in its own box; once ``budget_px`` box pixels
    (default four times the image, at least 2**25) are spent, the rest of them are sampled
    evenly.  Wrapped labels (8-bit label images of more than 255 grains), a
    class map or a raw micrograph read as labels have many values in many
    regions; instance labels have none, but for a few grains cut by the image
    edge.

    Returns ``(n_checked, n_split, n_regions, n_spread)``: values labelled,
    those of them in several regions, the regions of those, and all the
    spread values (checked or not).

    Examples
    --------
    >>> lab = np.full((6, 6), 2, np.int32); lab[0, 0] = lab[5, 5] = 1   # value 1 in two corners
    >>> split_label_values(lab, np.bincount(lab.ravel())[1:])
    (1, 1, 2, 1)
    """
    labels = np.asarray(labels)
    areas = np.asarray(areas, dtype=np.float64)
    boxes = ndi.find_objects(labels, max_label=areas.size)
    box_px = np.array([0 if b is None else (b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes],
                      dtype=np.float64)
    spread = np.flatnonzero((areas > 0) & (box_px > SPREAD_BOX_RATIO * np.maximum(areas, 1)))
    if not spread.size:
        return 0, 0, 0, 0
    budget = max(4 * labels.size, 1 << 25) if budget_px is None else int(budget_px)
    if box_px[spread].sum() > budget:  # an even sample that fits the budget
        k = max(1, int(spread.size * budget / box_px[spread].sum()))
        spread_checked = spread[np.linspace(0, spread.size - 1, k).astype(int)]
    else:
        spread_checked = spread
    n_split = n_regions = 0
    eight = np.ones((3, 3), bool)
    for i in spread_checked:
        _, pieces = ndi.label(labels[boxes[i]] == i + 1, structure=eight)
        if pieces > 1:
            n_split += 1
            n_regions += pieces
    return int(spread_checked.size), n_split, n_regions, int(spread.size)


#: Radius (pixels) of the square erosion of :func:`wide_zero_fraction`: 0 bands up to ``2 * r + 1`` px
#: wide (traced or predicted boundaries) vanish; what remains is 0 area wider than any boundary.
WIDE_ZERO_RADIUS_PX = 3


def wide_zero_fraction(labels: np.ndarray, radius: int = WIDE_ZERO_RADIUS_PX) -> float:
    """Share of the image in 0 regions wider than a boundary: 0 pixels left by an erosion of ``radius`` px.

    Erodes ``labels == 0`` with a ``(2 r + 1)``-px square (the image edge
    erodes too), row block by row block.  Boundaries of a label image give 0;
    an unlabelled area (a hole, background, a cropped-off part set to 0) gives
    its share of the image.

    Examples
    --------
    >>> lab = np.ones((40, 40), np.int32); lab[:, 10] = 0; lab[:, 20:22] = 0   # boundaries: 1 and 2 px wide
    >>> wide_zero_fraction(lab)
    0.0
    >>> lab[:, 30:] = 0   # a 10-px band at the edge: 4 x 34 px survive the 3-px erosion (the edge erodes too)
    >>> wide_zero_fraction(lab)
    0.085
    """
    labels = np.asarray(labels)
    r = int(radius)
    rows = labels.shape[0]
    structure = np.ones((2 * r + 1, 2 * r + 1), bool)
    left = 0
    for block in row_blocks(labels):
        lo, hi = max(0, block.start - r), min(rows, block.stop + r)
        zero = labels[lo:hi] == 0
        if not zero.any():
            continue
        eroded = ndi.binary_erosion(zero, structure=structure)
        left += int(eroded[block.start - lo : block.stop - lo].sum())
    return left / float(labels.size) if labels.size else 0.0


#: A boundary mask with at most this many distinct values is a mask with a few kinds of boundary (``!= 0``); with
#: more it is a lossy (JPEG) or anti-aliased picture of one, thresholded half-way.
FEW_MASK_LEVELS = 8


def _n_levels(data: np.ndarray) -> int:
    """Distinct values of ``data`` (from a strided sample of about 4 MP when it is larger)."""
    step = max(1, int(np.sqrt(data.size / 4e6)))
    sample = data[::step, ::step] if data.ndim == 2 else data
    if sample.dtype.kind in "ub" and sample.dtype.itemsize <= 2:
        return int(np.count_nonzero(np.bincount(sample.ravel().astype(np.int64, copy=False))))
    return int(np.unique(sample).size)


def boundary_levels_note(data: np.ndarray, what: str) -> str | None:
    """A warning when a boundary mask holds a few different non-zero values (all taken as boundary), else None.

    A mask such as 1 = grain boundary, 2 = twin trace is read with ``!= 0``: the twins count as grain boundaries
    (annealing twins are not grain boundaries for ASTM E112; G comes out too fine).  The warning names the values
    and how to keep only the grain boundaries.  A binary mask (one non-zero value: 0/1, 0/255, boolean) and a
    mask of many grey levels (more than :data:`FEW_MASK_LEVELS`, see :func:`binary_boundary_mask`) give None.

    Examples
    --------
    >>> boundary_levels_note(np.array([[0, 1, 2]], np.uint8), "twins.png").split(";")[0]
    'twins.png: 2 different non-zero values (1, 2) in the boundary mask, all taken as grain boundary'
    >>> boundary_levels_note(np.array([[0, 255]], np.uint8), "b.png") is None
    True
    """
    data = np.asarray(data)
    if data.dtype == bool or not data.size:
        return None
    lo, hi = data.min(), data.max()
    if not np.count_nonzero((data != lo) & (data != hi)) or _n_levels(data) > FEW_MASK_LEVELS:
        return None
    step = max(1, int(np.sqrt(data.size / 4e6)))
    sample = data[::step, ::step] if data.ndim == 2 else data
    levels = np.unique(sample)
    levels = levels[levels != 0]
    if levels.size < 2:
        return None
    shown = ", ".join(f"{v:g}" for v in levels.tolist())
    return (f"{what}: {levels.size} different non-zero values ({shown}) in the boundary mask, all taken as grain "
            "boundary; if a value marks other lines (annealing twins are not grain boundaries for ASTM E112), "
            "give the grain-boundary value alone: micro-seg measure grains --boundary --boundary-value V "
            "(boundary_value=V in measure_grains_from_boundaries)")


def binary_boundary_mask(data: np.ndarray, what: str) -> tuple[np.ndarray, str | None]:
    """A boundary mask file's pixels as a boolean mask (non-zero = boundary), and a warning or None.

    A mask with many grey levels (more than :data:`FEW_MASK_LEVELS`: JPEG ringing, anti-aliased lines) is not
    binary: ``!= 0`` would take every faint grey pixel next to a line as boundary too (a third of the image for a
    JPEG at quality 90, grains erased or merged, G too coarse).  It is thresholded half-way between its darkest
    and brightest values instead, with a warning.  A few values (1 = grain boundary, 2 = twin boundary) are all
    boundary, with the warning of :func:`boundary_levels_note`.

    Examples
    --------
    >>> m, note = binary_boundary_mask(np.array([[0, 3, 6, 9, 12, 240, 245, 250, 252, 255]], np.uint8), "b.jpg")
    >>> m.astype(int).tolist(), note.split(";")[0]
    ([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]], 'b.jpg: the boundary mask is not binary (80.0 % of its pixels are neither 0 nor 255)')
    >>> m, note = binary_boundary_mask(np.array([[0, 1, 2]], np.uint8), "twins.png")
    >>> m.tolist(), "--boundary-value" in note
    ([[False, True, True]], True)
    """
    lo, hi = (data.min(), data.max()) if data.size else (0, 0)
    other = int(np.count_nonzero((data != lo) & (data != hi)))
    if not other or _n_levels(data) <= FEW_MASK_LEVELS:  # a few values: e.g. 1 = grain, 2 = twin boundary
        return data != 0, boundary_levels_note(data, what) if other else None
    mid = (float(lo) + float(hi)) / 2.0
    note = (f"{what}: the boundary mask is not binary ({100 * other / data.size:.1f} % of its pixels are neither "
            f"{lo:g} nor {hi:g}); pixels above {mid:g} are taken as boundary (JPEG or anti-aliasing? save masks as "
            "PNG or TIFF with two values, or pick the boundary value with --boundary-value)")
    return data > mid, note


#: A boundary mask with more than this share of its pixels boundary is most likely inverted (dark lines on a
#: light background read with non-zero = boundary): the grain interiors become boundary, the lines grains.
INVERTED_MASK_SHARE = 0.5


def inverted_mask_hint(mask: np.ndarray) -> str | None:
    """``"NN % of the image is boundary: is the mask inverted ...?"`` when more than :data:`INVERTED_MASK_SHARE`
    of ``mask`` is non-zero, else None.

    Examples
    --------
    >>> inverted_mask_hint(np.array([[0, 1, 1, 1]])).split(":")[0]
    '75 % of the image is boundary'
    >>> inverted_mask_hint(np.array([[0, 0, 0, 1]])) is None
    True
    """
    share = float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0
    if share <= INVERTED_MASK_SHARE:
        return None
    return (f"{100 * share:.0f} % of the image is boundary: is the mask inverted (dark lines on a light "
            "background)? give the lines' value (micro-seg measure grains --boundary-value 0; boundary_value=0 in "
            "measure_grains_from_boundaries)")


def labels_from_boundaries(
    mask: np.ndarray,
    *,
    close_gaps_px: int = 1,
    min_grain_px: int = 8,
    what: str = "boundary mask",
) -> np.ndarray:
    """Grain labels from a boundary mask (non-zero = boundary); see the module notes.

    Parameters
    ----------
    mask : ndarray, shape (rows, cols)
        Boundary mask: non-zero (True) pixels are grain boundary.
    close_gaps_px : int, optional
        Radius of the disk the boundary is dilated with before labelling; gaps up
        to ``2 * close_gaps_px`` pixels wide are closed. ``0`` disables; at most
        :func:`max_close_gaps_px` (32 px, a quarter of the shorter side).  The
        dilation also shrinks every grain: grains only a few times wider than
        the disk can fall below ``min_grain_px`` and go to their neighbours
        (with grains about 10 px across, 1 px cost a few percent of the grains,
        G about 0.1 too coarse, in a QA test): use ``0`` for masks whose
        boundaries are closed already.
    min_grain_px : int, optional
        Components smaller than this (in pixels) are not grains.
    what : str
        Name used in error messages.

    Returns
    -------
    ndarray of int32
        Labels ``1..N`` covering every pixel.

    Examples
    --------
    >>> mask = np.zeros((30, 30), bool); mask[:, 15] = True; mask[15, :14] = True
    >>> int(labels_from_boundaries(mask, close_gaps_px=1).max())  # 1-px gap closed
    3
    >>> int(labels_from_boundaries(mask, close_gaps_px=0).max())
    2
    """
    mask = _check_2d(mask, what)
    if close_gaps_px < 0 or min_grain_px < 0:
        msg = f"close_gaps_px={close_gaps_px}, min_grain_px={min_grain_px}: must be >= 0"
        raise ValueError(msg)
    if close_gaps_px > max_close_gaps_px(mask.shape):
        msg = (f"close_gaps_px={close_gaps_px}: at most {max_close_gaps_px(mask.shape)} px for a "
               f"{mask.shape[0]} x {mask.shape[1]} image (see MAX_CLOSE_GAPS_PX)")
        raise ValueError(msg)
    boundary = mask != 0
    if not boundary.any():
        msg = f"{what}: no boundary pixels (every pixel is 0)"
        raise InvalidImageError(msg)
    if close_gaps_px > 0:
        r = int(close_gaps_px)
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        boundary = ndi.binary_dilation(boundary, structure=(yy * yy + xx * xx) <= r * r)
    grains, n = ndi.label(~boundary)
    if n == 0:
        msg = f"{what}: no grain interior left (the whole image is boundary)"
        raise InvalidImageError(msg)
    if min_grain_px > 1:
        sizes = np.bincount(grains.ravel(), minlength=n + 1)
        small = sizes < min_grain_px
        small[0] = True
        if small[1:].all():
            msg = f"{what}: every region is smaller than min_grain_px={min_grain_px}"
            hint = inverted_mask_hint(mask)
            if hint:
                msg += f"; {hint}"
            raise InvalidImageError(msg)
        grains[small[grains]] = 0
    labels, _ = prepare_labels(grains, what=what)
    return labels
