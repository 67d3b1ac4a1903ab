"""Turn per-pixel probabilities into grains, phases and defect instances.

* :func:`grains_from_boundary_probability` -- a grain model's boundary
  probability -> closed grain instance labels (each grain its own integer,
  0 = boundary), by a marker-controlled watershed: markers are the cores of
  grain interiors (h-maxima of the distance to the nearest boundary), so a
  boundary that fades out for a few pixels still separates two grains;
  fragments smaller than ``min_grain_px`` are merged into their neighbours.
  The output feeds :func:`micro_seg.measure.measure_grains` directly.
* :func:`phases_from_labels` -- class labels with small islands removed
  (optional) -> a phase map for :func:`micro_seg.measure.measure_phases`.
* :func:`defect_instances` -- one instance label image per defect class
  (connected components) for :func:`micro_seg.measure.measure_defects`.
* :func:`postprocess` -- dispatch on the model card's task;
  :func:`segment_image` -- predict + post-process one image (the engine
  behind ``micro-seg segment`` / ``analyze`` and batch).

Examples
--------
>>> import numpy as np
>>> p = np.zeros((40, 60), np.float32); p[:, 29:31] = 1.0   # one vertical boundary
>>> lab = grains_from_boundary_probability(p, min_grain_px=10)
>>> int(lab.max()), sorted(np.unique(lab[:, :25]).tolist()), int(lab[0, 30])
(2, [1], 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from micro_seg.errors import InvalidImageError, ModelError

__all__ = [
    "grains_from_boundary_probability",
    "grains_from_boundary_probability_tiled",
    "phases_from_labels",
    "remove_small_islands",
    "defect_instances",
    "postprocess",
    "grain_settings",
    "PostprocessResult",
    "Segmentation",
    "segment_image",
    "boundary_class_index",
    "BOUNDARY_CLASS_NAMES",
]

#: Grain maps larger than this are post-processed tile by tile (bounded memory).
TILED_POSTPROCESS_ABOVE_PIXELS = 4096 * 4096
#: Core tile side for that: with 256 px of context a 1536^2 working window, whose temporaries
#: (EDT, float64 h-maxima reconstruction, markers) stay near 0.25 GB (2048: ~0.65 GB).
TILED_POSTPROCESS_TILE = 1024
#: Context (px) around each tile of that: at least the minimum, else the widest grain interior, at most the
#: maximum (a 3072^2 working window, ~1 GB of temporaries); wider grains get a warning.
TILED_MARGIN_MIN = 256
TILED_MARGIN_MAX = 1024

#: Class names recognised as the boundary channel of a grain model.
BOUNDARY_CLASS_NAMES = ("boundary", "boundaries", "grain_boundary", "grain-boundary", "gb")


def _check_map(arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidImageError(f"{what}: expected a non-empty 2-D map, got shape {arr.shape}")
    return arr


def grains_from_boundary_probability(
    boundary_probability: np.ndarray,
    *,
    threshold: float = 0.5,
    min_grain_px: int = 16,
    split_ratio: float = 2.0,
    smooth_sigma_px: float = 0.0,
    keep_boundaries: bool = True,
    mask: np.ndarray | None = None,
    marker_threshold: float | None = None,
) -> np.ndarray:
    """Closed grain instance labels from a boundary probability map.

    Parameters
    ----------
    boundary_probability : ndarray, shape (rows, cols)
        Probability (0..1) that a pixel is a grain boundary.
    threshold : float
        Pixels above it are boundary.
    min_grain_px : int
        Grains smaller than this (pixels) are merged into their neighbours.
    split_ratio : float
        Two interior cores stay separate grains when the neck between them
        is ``split_ratio`` times narrower than the smaller core (h-maxima of
        the log distance to the boundary).  So a boundary that fades out for
        a few pixels still separates two grains, while an elongated or
        slightly waisted grain is not split.  Raise it if grains are
        over-split, lower it if grains behind faded boundaries are merged;
        0 disables neck splitting (one grain per closed interior).
    smooth_sigma_px : float
        Optional Gaussian smoothing of the probability before thresholding.
    keep_boundaries : bool
        True: boundary pixels (and watershed lines) are 0, grains 1..N.
        False: every pixel is assigned to a grain (no zeros inside ``mask``).
    mask : ndarray of bool, optional
        Region that holds grains (e.g. not pores); outside it labels are 0.
    marker_threshold : float, optional
        Grain cores (the watershed's markers) are taken from the stricter
        interior ``probability <= marker_threshold`` (below ``threshold``),
        while grains still fill ``probability <= threshold``: a faint boundary
        (probability between the two) then separates two cores, and the flood
        splits the grains along it.  None (default), a value at or above
        ``threshold``, or ``split_ratio <= 1``: cores from the interior.

    Returns
    -------
    ndarray of int32
        Grain labels 1..N (consecutive), 0 = boundary / outside ``mask``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((50, 50)); p[24:26, :] = 0.9; p[:, 24:26] = 0.9
    >>> p[24:26, 10:13] = 0.1   # a gap in one boundary
    >>> int(grains_from_boundary_probability(p).max())
    4
    """
    from skimage.morphology import local_maxima, reconstruction

    # as the CLI, batch and postprocess() check them: a threshold of 3 gave one grain, NaN none, silently
    check_grain_options({"threshold": threshold, "min_grain_px": min_grain_px, "split_ratio": split_ratio,
                         "smooth_sigma_px": smooth_sigma_px, "marker_threshold": marker_threshold})
    prob = _check_map(boundary_probability, "boundary probability").astype(np.float32, copy=False)
    if smooth_sigma_px > 0:
        prob = ndi.gaussian_filter(prob, smooth_sigma_px)
    region = np.ones(prob.shape, bool) if mask is None else np.asarray(mask, bool)
    if region.shape != prob.shape:
        raise InvalidImageError(f"mask shape {region.shape} differs from the probability map {prob.shape}")
    interior = (prob <= threshold) & region
    if not interior.any():
        return np.zeros(prob.shape, np.int32)
    # "never split" (split_ratio <= 1) means one grain per closed interior: no cores from a stricter interior either
    strict = marker_threshold is not None and marker_threshold < threshold and split_ratio > 1
    core = (prob <= marker_threshold) & region if strict else interior
    dist = ndi.distance_transform_edt(core).astype(np.float32)
    # markers: interior cores whose distance to the boundary is split_ratio
    # times the neck joining them (h-maxima of the log distance)
    if split_ratio > 1:
        # regional maxima of the reconstruction are whole plateaus, so one dome
        # gives one marker even where its discrete EDT ridge has ties
        logd = np.log(np.maximum(dist, 0.5))
        rec = reconstruction(logd - float(np.log(split_ratio)), logd, method="dilation")
        peaks = local_maxima(rec, connectivity=2, allow_borders=True) & core
    else:
        peaks = core
    markers, n = ndi.label(peaks, structure=np.ones((3, 3), bool))
    comp, n_comp = ndi.label(interior)
    if n:  # an 8-connected marker touching two interiors (4-connected apart) at a corner: one marker per interior,
        # else the second interior is left without a grain (split_ratio <= 1 lost such grains whole)
        has = markers > 0
        key = markers[has].astype(np.int64) * (n_comp + 1) + comp[has]
        uniq, inverse = np.unique(key, return_inverse=True)
        if uniq.size != n:
            markers[has] = (inverse + 1).astype(markers.dtype)
            n = int(uniq.size)
    # interiors too thin to hold an h-maximum still get a marker of their own
    has_marker = np.bincount(comp[markers > 0], minlength=n_comp + 1) > 0
    missing = ~has_marker[comp] & (comp > 0)
    if missing.any():
        extra, n_extra = ndi.label(missing)
        markers[missing] = extra[missing] + n
        n += n_extra
    scale = float(dist.max()) or 1.0
    elevation = prob - 0.5 * dist / scale
    labels = _flood_components(elevation, markers, comp, n_comp)
    if min_grain_px > 1 and labels.max() > 0:
        # a grain's size is its interior (here: all its pixels)
        areas = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
        small = areas < min_grain_px
        small[0] = False
        if small.any() and not small[1:].all():
            # small grains sharing an interior with larger ones are flooded
            # by them; a small interior enclosed by boundary on its own
            # becomes boundary (measurement gives it to the nearest grain)
            is_small = small[labels]
            redo = np.bincount(comp[is_small], minlength=n_comp + 1) > 0
            redo[0] = False
            labels[is_small] = 0
            _flood_within(labels, elevation, labels, redo[comp])
    if keep_boundaries:
        labels[(prob > threshold) | ~region] = 0
    else:
        labels = _fill_zeros(labels, region)
    return _relabel(labels)


def _flood_within(labels: np.ndarray, elevation: np.ndarray, seeds: np.ndarray, mask: np.ndarray) -> None:
    """Watershed from ``seeds`` restricted to ``mask`` (on its bounding box), written into ``labels`` there."""
    from skimage.segmentation import watershed

    if not mask.any():
        return
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    sub = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    m = mask[sub]
    flooded = watershed(elevation[sub], np.where(m, seeds[sub], 0), mask=m, watershed_line=True)
    labels[sub] = np.where(m, flooded, labels[sub])


def _flood_components(elevation: np.ndarray, markers: np.ndarray, comp: np.ndarray, n_comp: int) -> np.ndarray:
    """Marker-controlled watershed of the grain interiors, one connected interior at a time.

    Boundary pixels are above every interior pixel in ``elevation``, so a
    flood over the whole image fills each connected interior from its own
    markers before crossing any boundary: an interior holding one marker
    simply becomes that grain, and only interiors holding several markers
    (grains joined where their boundary fades) need the watershed, which
    runs on them alone.  Same labels on the interiors as a whole-image
    flood, at a fraction of the cost (most grains are closed).  Returns 0
    outside the interiors and on watershed lines.
    """
    has = markers > 0
    comp_of_marker = np.zeros(int(markers.max()) + 1, np.int64)
    comp_of_marker[markers[has]] = comp[has]  # every marker lies in one interior
    n_markers = np.bincount(comp_of_marker[1:], minlength=n_comp + 1)
    single = n_markers == 1
    lut = np.zeros(n_comp + 1, np.int32)
    ids = np.arange(1, comp_of_marker.size, dtype=np.int32)
    in_single = single[comp_of_marker[1:]]
    lut[comp_of_marker[1:][in_single]] = ids[in_single]
    labels = lut[comp]
    multi = n_markers > 1
    multi[0] = False
    _flood_within(labels, elevation, markers, multi[comp])
    return labels


def tiled_margin(boundary_probability: np.ndarray, threshold: float = 0.5, *, factor: int = 4) -> tuple[int, int]:
    """``(margin, widest)``: the context :func:`grains_from_boundary_probability_tiled` needs so that every grain
    lies whole in the window of the tile that keeps it.  ``widest`` is the largest extent (px) of a connected grain
    interior (``probability <= threshold``, on a ``1/factor`` max-pooled copy, so boundaries survive); the margin is
    that, within :data:`TILED_MARGIN_MIN` .. :data:`TILED_MARGIN_MAX`.

    Examples
    --------
    >>> p = np.zeros((2000, 2000), np.float32); p[:, ::400] = 1; p[::400, :] = 1   # grains of 400 px
    >>> tiled_margin(p)
    (404, 404)
    """
    prob = np.asarray(boundary_probability)
    rows, cols = (prob.shape[0] // factor) * factor, (prob.shape[1] // factor) * factor
    if rows == 0 or cols == 0:
        return TILED_MARGIN_MIN, 0
    small = prob[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor).max(axis=(1, 3))
    comp, n = ndi.label(small <= threshold)
    if n == 0:
        return TILED_MARGIN_MIN, 0
    widest = max(max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndi.find_objects(comp) if s)
    widest = int(widest * factor + 2 * factor)
    return int(min(max(TILED_MARGIN_MIN, widest), TILED_MARGIN_MAX)), widest


def grains_from_boundary_probability_tiled(
    boundary_probability: np.ndarray,
    *,
    tile: int = TILED_POSTPROCESS_TILE,
    margin: int | None = None,
    mask: np.ndarray | None = None,
    warnings: list[str] | None = None,
    **options: Any,
) -> np.ndarray:
    """:func:`grains_from_boundary_probability` tile by tile, for huge images.

    Each core tile is processed with ``margin`` pixels of context; a grain is
    kept by the tile whose core holds its centroid, and pixels already
    claimed by a neighbouring tile's grain are not overwritten (except by a
    complete grain over one cut by a tile's context border).  Grains
    narrower than ``margin`` come out as in the whole-image result (a wider
    grain can be kept by two tiles, in two pieces); memory is that of one
    extended tile plus the int32 output.  By default (``margin=None``) the
    margin is the widest grain interior (:func:`tiled_margin`); when that is
    wider than :data:`TILED_MARGIN_MAX`, a warning is appended to ``warnings``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((300, 300), np.float32); p[:, 149:151] = 1; p[149:151, :] = 1
    >>> lab = grains_from_boundary_probability_tiled(p, tile=128, margin=160, min_grain_px=4)
    >>> int(lab.max())
    4
    """
    check_grain_options(options)  # before the margin is measured with a threshold that is not one
    prob = _check_map(boundary_probability, "boundary probability")
    rows, cols = prob.shape
    if margin is None:
        margin, widest = tiled_margin(prob, float(options.get("threshold", 0.5)))
        if widest > margin and warnings is not None:
            warnings.append(f"grain interiors up to {widest} px across are wider than the {margin} px of context the "
                            f"post-processing of this {rows} x {cols} image works with, tile by tile: grains cut by "
                            "a tile edge may be counted twice (resample the image to smaller grains, or crop it)")
    if rows <= tile + margin and cols <= tile + margin:
        return grains_from_boundary_probability(prob, mask=mask, **options)
    out = np.zeros((rows, cols), np.int32)
    next_id = 1
    for y0 in range(0, rows, tile):
        for x0 in range(0, cols, tile):
            y1, x1 = min(rows, y0 + tile), min(cols, x0 + tile)
            ey0, ex0 = max(0, y0 - margin), max(0, x0 - margin)
            ey1, ex1 = min(rows, y1 + margin), min(cols, x1 + margin)
            sub_mask = None if mask is None else mask[ey0:ey1, ex0:ex1]
            lab = grains_from_boundary_probability(prob[ey0:ey1, ex0:ex1], mask=sub_mask, **options)
            n = int(lab.max())
            if n == 0:
                continue
            rr, cc = np.nonzero(lab)
            ids = lab[rr, cc]
            area = np.bincount(ids, minlength=n + 1).astype(np.float64)
            area[0] = 1.0
            cy = np.bincount(ids, weights=rr, minlength=n + 1) / area + ey0
            cx = np.bincount(ids, weights=cc, minlength=n + 1) / area + ex0
            keep = (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
            keep[0] = False
            # grains cut by the context border (not the image border) may be
            # incomplete: they are written as "weak" (negative ids) and give
            # way to complete grains of other tiles
            cut = np.zeros(n + 1, bool)
            for edge, inner in ((lab[0], ey0 > 0), (lab[-1], ey1 < rows), (lab[:, 0], ex0 > 0), (lab[:, -1], ex1 < cols)):
                if inner:
                    cut[edge] = True
            lut = np.zeros(n + 1, np.int32)
            k = int(keep.sum())
            lut[keep] = np.arange(next_id, next_id + k, dtype=np.int32)
            lut[cut] = -lut[cut]
            next_id += k
            region = out[ey0:ey1, ex0:ex1]
            new = lut[lab]
            strong = (new > 0) & (region <= 0)
            weak = (new < 0) & (region == 0)
            region[strong] = new[strong]
            region[weak] = new[weak]
    np.abs(out, out=out)
    return _relabel(out)


def _fill_zeros(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    zero = (labels == 0) & region
    if zero.any() and labels.max() > 0:
        idx = ndi.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
        labels = np.where(zero, labels[tuple(idx)], labels)
    return labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    n = int(labels.max()) + 1 if labels.size else 1
    present = np.zeros(n, bool)
    # by row blocks: bincount casts its input to int64, a second (double-size) copy of a huge image
    step = max(1, (1 << 22) // max(1, labels.shape[1]))
    for r in range(0, labels.shape[0], step):
        present |= np.bincount(labels[r : r + step].ravel(), minlength=n) > 0
    present[0] = False
    lut = np.zeros(present.size, np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    if labels.dtype == np.int32 and labels.size > (1 << 22):  # in place, same row blocks: no second huge array
        for r in range(0, labels.shape[0], step):
            labels[r : r + step] = lut[labels[r : r + step]]
        return labels
    return lut[labels]


def remove_small_islands(labels: np.ndarray, *, min_island_px: int) -> np.ndarray:
    """Reassign connected patches of a class smaller than ``min_island_px``.

    Each small island takes the class of the nearest pixel outside all small
    islands.  Returns a new array (same dtype).

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((9, 9), np.uint8); lab[4, 4] = 1; lab[:, 7:] = 2
    >>> remove_small_islands(lab, min_island_px=3)[4, 4]
    np.uint8(0)
    """
    labels = _check_map(labels, "class labels")
    if min_island_px <= 1:
        return labels.copy()
    small = np.zeros(labels.shape, bool)
    for cls in np.unique(labels):
        comp, n = ndi.label(labels == cls)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())
        tiny = sizes < min_island_px
        tiny[0] = False
        small |= tiny[comp]
    if not small.any() or small.all():
        return labels.copy()
    idx = ndi.distance_transform_edt(small, return_distances=False, return_indices=True)
    return labels[tuple(idx)]


def phases_from_labels(labels: np.ndarray, *, min_island_px: int = 0) -> np.ndarray:
    """Phase (class) map from class labels, optionally without small islands.

    Examples
    --------
    >>> import numpy as np
    >>> phases_from_labels(np.array([[0, 1], [1, 1]], np.uint8)).tolist()
    [[0, 1], [1, 1]]
    """
    labels = _check_map(labels, "class labels")
    return remove_small_islands(labels, min_island_px=min_island_px) if min_island_px > 1 else labels.copy()


def defect_instances(
    class_labels: np.ndarray,
    *,
    classes: Sequence[str],
    defect_classes: Sequence[str],
    min_area_px: int = 4,
    connectivity: int = 2,
) -> dict[str, np.ndarray]:
    """One instance label image per defect class (connected components).

    Parameters
    ----------
    class_labels : ndarray, shape (rows, cols)
        Class id per pixel (index into ``classes``).
    classes : sequence of str
        Class names of the model.
    defect_classes : sequence of str
        Names of the classes that are countable objects.
    min_area_px : int
        Objects smaller than this are dropped (noise).
    connectivity : {1, 2}
        4- or 8-connectivity of objects.

    Returns
    -------
    dict
        ``{class name: int32 instance labels 1..N (0 = not this class)}``.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((10, 10), np.uint8); lab[1:3, 1:3] = 1; lab[6:9, 6:9] = 1
    >>> inst = defect_instances(lab, classes=["matrix", "pore"], defect_classes=["pore"])
    >>> int(inst["pore"].max())
    2
    """
    class_labels = _check_map(class_labels, "class labels")
    structure = ndi.generate_binary_structure(2, connectivity)
    out = {}
    for name in defect_classes:
        if name not in classes:
            raise ModelError(f"defect class {name!r} not among the model classes {list(classes)}")
        comp, n = ndi.label(class_labels == classes.index(name), structure=structure)
        if n and min_area_px > 1:
            sizes = np.bincount(comp.ravel())
            keep = sizes >= min_area_px
            keep[0] = False
            comp = np.where(keep[comp], comp, 0)
            comp = _relabel(comp)
        out[name] = comp.astype(np.int32)
    return out


@dataclass
class PostprocessResult:
    """Output of :func:`postprocess`.

    ``labels`` is what ``segment`` writes: grain instance labels (0 =
    boundary) for grain models, class labels for semantic models.
    """

    task: str
    labels: np.ndarray
    classes: list[str]
    defects: dict[str, np.ndarray] = field(default_factory=dict)
    class_labels: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)


def boundary_class_index(classes: Sequence[str]) -> int:
    """Index of the boundary class of a grain model (by name).

    Examples
    --------
    >>> boundary_class_index(["grain", "boundary"])
    1
    """
    for i, name in enumerate(classes):
        if name.lower() in BOUNDARY_CLASS_NAMES:
            return i
    raise ModelError(f"grain model classes {list(classes)} have no boundary class (one of {', '.join(BOUNDARY_CLASS_NAMES)})")


def grain_settings(card: Any) -> dict[str, float]:
    """The grain post-processing settings a model runs with unless told otherwise.

    The card's ``postprocess`` values, else the defaults of
    :func:`grains_from_boundary_probability` (what the napari Segment widget
    shows and the CLI's ``--boundary-threshold`` / ``--split-ratio`` /
    ``--min-grain`` / ``--marker-threshold`` default to; ``marker_threshold`` None = off).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> s = grain_settings(SimpleNamespace(postprocess={"split_ratio": 1.5}))
    >>> s["threshold"], s["split_ratio"], s["min_grain_px"]
    (0.5, 1.5, 16)
    """
    import inspect

    params = inspect.signature(grains_from_boundary_probability).parameters
    settings = {k: params[k].default
                for k in ("threshold", "split_ratio", "min_grain_px", "smooth_sigma_px", "marker_threshold")}
    settings.update({k: v for k, v in dict(getattr(card, "postprocess", None) or {}).items() if k in settings})
    return settings


def _card_postprocess(card: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The card's post-processing defaults under run-time ``options``.  A card's ``marker_threshold`` was chosen
    with its ``threshold``: a threshold given at run time (raised to merge grains, lowered to split them) takes over
    alone, without the card's cores, unless a ``marker_threshold`` is given with it.

    >>> from types import SimpleNamespace
    >>> card = SimpleNamespace(postprocess={"threshold": 0.5, "marker_threshold": 0.35})
    >>> "marker_threshold" in _card_postprocess(card, {"threshold": 0.7}), _card_postprocess(card, {})
    (False, {'threshold': 0.5, 'marker_threshold': 0.35})
    """
    defaults = dict(getattr(card, "postprocess", None) or {})
    if "threshold" in options and "marker_threshold" not in options:
        defaults.pop("marker_threshold", None)
    return defaults


#: Numeric grain post-processing options (:func:`grains_from_boundary_probability`), checked by
#: :func:`~micro_seg.registry.check_postprocess_values` (``marker_threshold`` None = off).
GRAIN_VALUE_OPTIONS = ("threshold", "split_ratio", "min_grain_px", "smooth_sigma_px", "marker_threshold")


def check_grain_options(options: dict[str, Any]) -> None:
    """Refuse grain post-processing values the CLI and batch refuse (:func:`~micro_seg.registry.check_postprocess_values`):
    each a finite number >= 0, ``threshold`` and ``marker_threshold`` strictly between 0 and 1; numpy numbers are
    numbers, ``marker_threshold`` None is off.  Other keys are not looked at.

    >>> check_grain_options({"threshold": np.float32(0.4), "split_ratio": 0, "marker_threshold": None, "mask": None})
    >>> check_grain_options({"threshold": 3})
    Traceback (most recent call last):
    ...
    micro_seg.errors.ModelError: post-processing option threshold must be strictly between 0 and 1 (a boundary probability), got 3
    """
    from micro_seg.registry import check_postprocess_values

    check_postprocess_values({k: (v.item() if isinstance(v, np.generic) else v) for k, v in options.items()
                              if k in GRAIN_VALUE_OPTIONS and v is not None})


def postprocess(prediction: Any, card: Any, **options: Any) -> PostprocessResult:
    """Post-process a :class:`~micro_seg.inference.Prediction` as the card's task says.

    Grain models: boundary probability -> grain instances
    (:func:`grains_from_boundary_probability`, ``options`` passed on); pixels
    whose most probable class is neither grain nor boundary (e.g. a pore
    class) are excluded.  Semantic models: class labels (``min_island_px``
    option) plus defect instances for the card's ``defect_classes``.
    The card's own ``postprocess`` defaults apply unless ``options`` override them.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> p = np.zeros((2, 30, 30), np.float32); p[0] = 1; p[:, :, 14:16] = [[[0]], [[1]]]
    >>> pred = SimpleNamespace(labels=p.argmax(0).astype(np.uint8), probabilities=p, probability_classes=[0, 1])
    >>> card = SimpleNamespace(task="grains", classes=["grain", "boundary"], defect_classes=[])
    >>> int(postprocess(pred, card, min_grain_px=4).labels.max())
    2
    """
    from micro_seg.registry import LoadedModel

    if isinstance(card, LoadedModel):  # what load_model returns: its card
        card = card.card
    elif not hasattr(card, "classes"):
        raise ModelError(f"postprocess: card must be a model card (load_model(name).card), got {type(card).__name__}")
    classes = list(card.classes)
    options = {**_card_postprocess(card, options), **options}
    if card.task == "grains":
        # the CLI and batch check these; from Python a threshold of 3 or NaN gave one grain or none, silently, and
        # "0.3" a numpy UFuncTypeError
        check_grain_options(options)
        b = boundary_class_index(classes)
        kept = list(getattr(prediction, "probability_classes", range(len(classes))))
        if prediction.probabilities is None or b not in kept:
            raise ModelError("grain post-processing needs the boundary probabilities; predict with keep_probabilities=True")
        prob = np.asarray(prediction.probabilities[kept.index(b)])  # float16 stays float16 until tiled
        others = [i for i, n in enumerate(classes) if i != b and n.lower() not in ("grain", "grains", "interior")]
        mask = None
        if others:
            mask = ~np.isin(prediction.labels, others)
        warnings: list[str] = []
        if prob.size > TILED_POSTPROCESS_ABOVE_PIXELS:
            labels = grains_from_boundary_probability_tiled(prob, mask=mask, warnings=warnings, **options)
        else:
            labels = grains_from_boundary_probability(prob, mask=mask, **options)
        return PostprocessResult(task="grains", labels=labels, classes=classes, class_labels=prediction.labels,
                                 warnings=warnings)
    if card.task == "semantic":
        min_island = int(options.pop("min_island_px", 0))
        min_area = int(options.pop("min_area_px", 4))
        if options:
            raise ModelError(f"unknown post-processing options for a semantic model: {sorted(options)}")
        labels = phases_from_labels(prediction.labels, min_island_px=min_island)
        defects = defect_instances(labels, classes=classes, defect_classes=list(card.defect_classes or []), min_area_px=min_area)
        return PostprocessResult(task="semantic", labels=labels, classes=classes, defects=defects, class_labels=labels)
    raise ModelError(f"model task {card.task!r} has no pixel post-processing (classification models label whole images)")


@dataclass
class Segmentation:
    """Output of :func:`segment_image`: the prediction, its post-processing, the card."""

    prediction: Any
    result: PostprocessResult
    card: Any
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """Grain instance labels (grain models) or class labels (semantic models)."""
        return self.result.labels


#: Images with a side shorter than this are segmented with a warning: the network sees mostly its own padding.
SMALL_IMAGE_SIDE = 32


#: A model is trusted on pixel sizes up to this factor outside its card's training range.
PIXEL_SIZE_TOLERANCE = 1.5


def pixel_size_outside_range(pixel_size_um: float | None, card) -> tuple[float, float] | None:
    """The card's training pixel-size range when ``pixel_size_um`` lies more than
    :data:`PIXEL_SIZE_TOLERANCE` outside it; None when it fits, or either is unknown.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> card = SimpleNamespace(pixel_size_um_range=(0.2, 0.5))
    >>> pixel_size_outside_range(0.7, card), pixel_size_outside_range(0.8, card)
    (None, (0.2, 0.5))
    """
    rng = getattr(card, "pixel_size_um_range", None)
    if pixel_size_um is None or rng is None:
        return None
    lo, hi = rng
    return None if lo / PIXEL_SIZE_TOLERANCE <= pixel_size_um <= hi * PIXEL_SIZE_TOLERANCE else (lo, hi)


def segment_image(
    image: Any,
    model: Any,
    *,
    pixel_size_um: float | None = None,
    keep_probabilities: bool = False,
    postprocess_options: dict[str, Any] | None = None,
    progress: Any = None,
    cancel: Any = None,
    release_image: bool = False,
    keep_prediction: bool = True,
    **predict_options: Any,
) -> Segmentation:
    """Predict and post-process one image: the engine behind ``segment`` / ``analyze``.

    Parameters
    ----------
    image : ndarray or Micrograph
        The image (a Micrograph's ``analysis_data`` is used).
    model : LoadedModel, str or path
        Model (name, folder or loaded).
    pixel_size_um : float, optional
        Pixel size, only to warn when it lies outside the card's training
        range ``pixel_size_um_range``.
    keep_probabilities : bool
        Keep all class probabilities in ``prediction`` (otherwise only what
        post-processing needs: the boundary channel of grain models).
    postprocess_options : dict, optional
        Passed to :func:`postprocess`.
    progress, cancel
        As for :func:`micro_seg.inference.predict`; ``cancel`` is checked once more before post-processing.
    release_image : bool
        ``image`` is a :class:`~micro_seg.io.Micrograph` whose pixels the
        caller no longer needs: they are released
        (:meth:`~micro_seg.io.Micrograph.release_pixels`) as soon as the
        prediction exists, so post-processing a huge image runs without them.
    keep_prediction : bool
        False: the result keeps only what measuring needs (``result.labels``
        and the defect instances): ``prediction`` is None, and so is a grain
        model's ``result.class_labels``; no uncertainty map is computed.  For
        callers that measure and write no probabilities (``analyze``,
        ``batch``): at 16k x 16k a grain model's prediction holds 1.3 GB.
    **predict_options
        ``tile_size``, ``overlap``, ``tta``, ... for :func:`~micro_seg.inference.predict`.

    Returns
    -------
    Segmentation
    """
    import time

    from micro_seg.errors import CancelledError
    from micro_seg.inference import _as_image, _as_model, _is_cancelled, count_nonfinite, predict

    loaded = _as_model(model)
    card = loaded.card
    warnings: list[str] = []
    if pixel_size_um is None and hasattr(image, "pixel_size_um"):
        pixel_size_um = image.pixel_size_um
    pixels = _as_image(image)  # checked before anything reads its shape: a file name, a 4-D stack are refused clearly
    shape = pixels.shape
    if min(shape[:2]) < SMALL_IMAGE_SIDE:
        warnings.append(f"the image is only {shape[0]} x {shape[1]} pixels: far smaller than the patches the model "
                        f"{card.name!r} learnt from, so its result is unreliable (segment a larger field)")
    # read_micrograph refuses files with NaN / inf pixels; an array can still hold some (a notebook, napari)
    n_bad = count_nonfinite(pixels)
    del pixels  # release_image frees the micrograph's pixels after inference: no reference may outlive them here
    if n_bad:
        warnings.append(f"{n_bad} pixel value(s) are NaN or infinite: the classes found there mean nothing, and "
                        "boundaries may be drawn around them, so objects and grains there are split or lost "
                        "(replace those pixels before measuring)")
    rng = pixel_size_outside_range(pixel_size_um, card)
    if rng is not None:
        warnings.append(
            f"pixel size {pixel_size_um:g} um is outside the range the model {card.name!r} was trained on "
            f"({rng[0]:g}-{rng[1]:g} um); results may be unreliable (resample the image or fine-tune)"
        )
    if keep_probabilities:
        keep: bool | list[int] = True
    elif card.task == "grains":
        keep = [boundary_class_index(card.classes)]
    else:
        keep = False
    t0 = time.perf_counter()
    if release_image and not hasattr(image, "release_pixels"):
        raise TypeError(f"release_image=True needs a Micrograph, got {type(image).__name__}")
    if not keep_prediction:
        predict_options.setdefault("keep_uncertainty", False)
    pred = predict(image, loaded, progress=progress, cancel=cancel, keep_probabilities=keep, **predict_options)
    if _is_cancelled(cancel):  # set during the last tiles: post-processing a huge image takes as long as predicting
        raise CancelledError("segmentation cancelled by the user")
    if release_image:
        image.release_pixels()
    result = postprocess(pred, card, **(postprocess_options or {}))
    warnings.extend(result.warnings)
    if not keep_prediction:
        pred = None
        if result.task == "grains":
            result.class_labels = None
    return Segmentation(prediction=pred, result=result, card=card, seconds=time.perf_counter() - t0, warnings=warnings)
