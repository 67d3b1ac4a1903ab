"""Grain size of a label image: ASTM E112 planimetric and intercept, E1382 areas, E930 ALA.

What is measured (all vectorised over the whole image, no per-grain loop):

* **Planimetric (Jeffries / Saltykov)** on the rectangular image: grains inside
  count 1, grains cut by an edge 1/2, the grains holding the four corner pixels
  1/4 each; ``N_A = count / field area`` and
  ``G = 3.321928 log10(N_A) - 2.954`` (N_A per mm^2).
* **Lineal intercept (Heyn)** on every pixel row, column and diagonal, and the
  **Abrams** three-circle pattern, see :mod:`micro_seg.measure.intercept`;
  ``G = -6.643856 log10(l mm) - 3.288``.
* **Mean grain area (E1382)** over the grains that do not touch the image
  edge; ``G = -3.3223 log10(A mm^2) - 2.955``.
* **ALA (E930)**: the largest grain not touching the edge (a cut grain's
  visible area is only a lower bound), converted with the area formula.
* Distributions of grain area, equivalent circle diameter (ECD) and intercept
  (chord) lengths; neighbour counts from the 4-connected adjacency graph;
  Crofton perimeters from the four line orientations.
* Field statistics (E112 section 15): the image is split into a grid of fields
  (by default about 50 grains each, 2 x 2 to 5 x 5; a grid asked for must leave
  fields of >= 16 px holding >= 1 grain each); per field ``N_A`` and
  ``l``, their mean, ``s``, 95 % Student-t half-width and %RA.  The point
  estimates are those of the whole image; the confidence intervals come from
  the field-to-field scatter.  To combine separate images use
  :func:`combine_grain_fields`, which takes G from the mean ``l`` / ``N_A``
  over the images, never from the mean of G.

Without a pixel size every length and area is reported in pixels (``*_px``
keys), the ``*_um`` / ``*_per_mm2`` keys and all G values are ``None`` and the
result carries a warning.

Examples
--------
>>> from micro_seg.synth import voronoi_labels
>>> labels = voronoi_labels((256, 256), n_grains=200, seed=0)
>>> res = measure_grains(labels, pixel_size_um=1.0)
>>> 8.0 < res.summary["G_planimetric"] < 9.2   # N_A = 200 / 65536 um^2: G = 8.6
True
"""

from __future__ import annotations

import math
import numbers
import warnings as warnings_module
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from micro_seg.errors import InvalidImageError
from micro_seg.measure import astm
from micro_seg.measure._units import NO_SCALE_WARNING, as_input_array, check_pixel_size
from micro_seg.measure.intercept import ANGLES, abrams_pattern, line_intercepts
from micro_seg.measure.labels import (
    WIDE_ZERO_RADIUS_PX,
    boundary_levels_note,
    fill_boundaries,
    inverted_mask_hint,
    label_counts,
    labels_from_boundaries,
    prepare_labels,
    restore_zeros,
    row_blocks,
    single_label_regions,
    split_label_values,
    wide_zero_fraction,
    zero_bits,
)
from micro_seg.measure.stats import auto_field_grid, check_field_size, field_grid, field_index_maps, field_statistics

__all__ = ["GrainMeasurement", "measure_grains", "measure_grains_from_boundaries", "combine_grain_fields"]

#: Share of the label values in several separate regions from which the labels are reported as wrapped
#: or not instance labels (a few grains cut in two by the image edge stay below it).  An 8- or 16-bit image
#: using every value of its type is reported from one value in separate regions (see ``_fills_its_type``).
SPLIT_LABELS_WARN_SHARE = 0.05

#: A boundary network drawn with a value of its own (65535, 255, -1 saved unsigned) instead of 0 is one "grain"
#: between all the others: every crossing becomes grain -> network -> grain, the intercept halves and G_intercept
#: comes out about 2 too high.  It is recognised as a label that neighbours at least this share of the other
#: grains (of at least NETWORK_MIN_GRAINS) and whose pixels lie mostly on its own edge (a thin network, not an
#: abnormally large grain with many small neighbours), and refused.
NETWORK_NEIGHBOUR_SHARE = 0.5
NETWORK_MIN_GRAINS = 20
NETWORK_EDGE_SHARE = 0.5

#: Share of the image in 0 regions much wider than a boundary from which the result warns that an
#: unlabelled area was filled as grain.
WIDE_ZERO_WARN_SHARE = 0.01

#: The E112 tables run from G 00 (-1) to 14; a G more than 2 beyond them (below -3, above 16: grains of
#: about a millimetre or of under a micrometre) is reported with a warning: most often a wrong pixel size.
G_PLAUSIBLE_RANGE = (-3.0, 16.0)

#: Below this mean intercept (pixels) grain measurements carry a pixelisation warning
#: (Coutinho, Rooney & Payton, Metall. Mater. Trans. A 48 (2017): the bias grows quickly
#: once grains are only a few pixels across).
PIXELISATION_WARN_PX = 10.0

#: Grains of fewer than SMALL_GRAIN_PX pixels (under about 2.5 px across) are specks of noise or grains the image
#: cannot resolve; each counts as a grain.  When at least SMALL_GRAIN_WARN_SHARE of the grains are that small the
#: result warns (500 one-pixel specks among 2116 grains raised G_planimetric from 8.01 to 8.33).  A Poisson-Voronoi
#: label image has 0.8 % of its grains below 5 px at mean intercepts of 6-8 px (digital slivers at triple points),
#: 1.7 % at 4.5 px, 5 % at 3.2 px (where the pixelisation warning is given too): 2 % leaves clean labels of
#: measurable grains alone.
SMALL_GRAIN_PX = 5
SMALL_GRAIN_WARN_SHARE = 0.02


@dataclass
class GrainMeasurement:
    """Result of :func:`measure_grains`.

    Attributes
    ----------
    summary : dict
        Per-image numbers (JSON-ready; the ``micro-seg measure grains`` output).
        Contract keys: ``n_grains`` (labels in the image), ``grains_per_mm2``
        (Jeffries N_A), ``G_planimetric``, ``mean_intercept_um`` (Heyn, all
        lines), ``G_intercept``, ``G_intercept_ci95`` (half-width in G units of
        the field-to-field 95 % CI of ``l``), ``mean_area_um2`` (E1382, interior
        grains), ``G_area``, ``ala_G`` (E930), ``pixel_size_um``; plus
        ``mean_ecd_um`` (mean equivalent circle diameter of the interior grains,
        a Hall-Petch ``d`` as ``link --d mean_ecd_um`` takes it), ``_px``
        twins, Abrams results (``*_circles``), per-angle intercepts, field
        statistics (``fields``), distributions and ``warnings``.
    grains : pandas.DataFrame
        One row per grain: ``label`` (input label), ``area_px``, ``ecd_px``,
        ``perimeter_px``, ``centroid_row_px``, ``centroid_col_px``, ``touches_edge``,
        ``n_neighbors`` and, when calibrated, ``area_um2``, ``ecd_um``, ``perimeter_um``.
    fields : pandas.DataFrame
        One row per field: its slices, ``grains_per_px2`` / ``grains_per_mm2``,
        ``mean_intercept_px`` / ``mean_intercept_um``.
    intercepts_px : ndarray
        Complete chord lengths of all test lines (pixels).
    adjacency : ndarray, shape (k, 2)
        Pairs of neighbouring grains (input labels, first < second).
    labels : ndarray or None
        The measured label image (``1..N``; boundaries assigned to grains);
        None when it was the input itself, filled in place
        (``overwrite_input``).
    warnings : list of str
    """

    summary: dict
    grains: pd.DataFrame
    fields: pd.DataFrame
    intercepts_px: np.ndarray
    adjacency: np.ndarray
    labels: np.ndarray | None
    warnings: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """The per-grain table (alias of :attr:`grains`, same name as the other results)."""
        return self.grains

    def to_dict(self) -> dict:
        """The summary as plain JSON data (a copy for ``json.dumps``): numpy numbers as Python ones, and a value that
        cannot be computed (NaN or infinite, e.g. the mean intercept of an image of one grain) as None."""
        from micro_seg.jsonable import to_jsonable

        return to_jsonable(self.summary)


def _dist_summary(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "median": float(p50),
        "p10": float(p10),
        "p90": float(p90),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _scaled(d: dict, factor: float | None) -> dict | None:
    if factor is None:
        return None
    return {k: (v * factor if isinstance(v, float) and k not in ("n", "ra_percent") else v) for k, v in d.items()}


def _g_ci_half_width(g_func, center: float, ci: float) -> float | None:
    """Half-width in G of the interval ``center +- ci`` mapped through ``g_func``."""
    if not (math.isfinite(center) and math.isfinite(ci)) or center - ci <= 0:
        return None
    return abs(g_func(center - ci) - g_func(center + ci)) / 2.0


def _jeffries(labels: np.ndarray, present: np.ndarray | None = None) -> tuple[float, int, int, int, np.ndarray]:
    """Jeffries count of a rectangular field; returns (count, inside, edge, corner, edge_labels)."""
    edges = np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]])
    edge_labels = np.unique(edges)
    corners = np.array([labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]])
    corner_labels = np.unique(corners)
    n_total = int(np.unique(labels).size) if present is None else int(present.sum())
    n_edge_only = edge_labels.size - corner_labels.size
    n_inside = n_total - edge_labels.size
    count = n_inside + 0.5 * n_edge_only + 0.25 * corners.size  # each corner grain 1/4 per corner it holds
    # a grain holding two or more corners counts 1/4 for each (a grain across a whole edge)
    return float(count), int(n_inside), int(n_edge_only), int(corner_labels.size), edge_labels


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy's hash-based unique is several times slower on 1e6 ints)."""
    x = np.sort(x)
    if x.size:
        x = x[np.concatenate([[True], x[1:] != x[:-1]])]
    return x


def _row_runs(labels: np.ndarray, crossings: np.ndarray, col_breaks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Horizontal runs of equal labels (also broken at ``col_breaks``): start, length, label, row, col.

    ``crossings`` are the flat indices of the pixels left of every label change
    along the rows (from the 0 deg intercept pass), so no extra pass over the
    image is needed.
    """
    rows, cols = labels.shape
    row_starts = np.arange(rows, dtype=np.int64) * cols
    forced = (row_starts[:, None] + col_breaks[None, :].astype(np.int64)).ravel()
    starts = np.concatenate([row_starts, crossings.astype(np.int64) + 1, forced])
    starts = _sorted_unique(starts)
    lengths = np.diff(np.append(starts, rows * cols))
    row, col = np.divmod(starts, cols)
    return starts, lengths, labels.ravel()[starts], row, col


def measure_grains(
    labels: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    fields: str | int | tuple[int, int] | None = "auto",
    angles: tuple[int, ...] = ANGLES,
    circles: bool = True,
    what: str = "labels",
    overwrite_input: bool = False,
    min_grain_px: int = 0,
) -> GrainMeasurement:
    """Measure grain size to ASTM E112 / E1382 / E930 from an instance label image.

    Parameters
    ----------
    labels : ndarray of int, shape (rows, cols)
        Each grain its own positive integer; ``0`` = boundary (assigned to the
        nearest grain before measuring).
    pixel_size_um : float, optional
        Pixel size in micrometres. ``None``: results in pixels, G values ``None``.
    fields : "auto", int, (n_rows, n_cols) or None, optional
        Split the image into fields for the field statistics / confidence
        intervals. ``"auto"``: about 50 grains per field, 2 x 2 .. 5 x 5.
        ``None``: no fields (no confidence intervals).  A grid given
        explicitly must leave fields of at least
        :data:`~micro_seg.measure.stats.MIN_FIELD_SIDE_PX` pixels a side and
        at least one grain per field on average (else
        :class:`~micro_seg.errors.InvalidImageError`); below 50 grains per
        field the result warns that the intervals are rough (E1382).
    angles : tuple of int, optional
        Test-line orientations (subset of 0, 45, 90, 135 degrees).
    circles : bool, optional
        Also run the Abrams three-circle pattern (one placement per field).
    what : str, optional
        Name of the input used in error messages and warnings.
    overwrite_input : bool, optional
        Fill the 0 (boundary) pixels of ``labels`` in place while measuring
        and set them back to 0 before returning (also on an error), instead
        of measuring a filled copy: saves an image-sized array (1 GB for a
        16k x 16k int32 image).  ``labels`` must not be read by another
        thread meanwhile.
    min_grain_px : int, optional
        Grains of fewer pixels are merged into their nearest neighbours
        before measuring (specks of noise).  Default 0: nothing is removed;
        the result warns when at least :data:`SMALL_GRAIN_WARN_SHARE` of the
        grains are under :data:`SMALL_GRAIN_PX` pixels.

    Returns
    -------
    GrainMeasurement

    Examples
    --------
    >>> lab = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 25, 0), 25, 1)
    >>> res = measure_grains(lab, pixel_size_um=2.0, fields=None)
    >>> res.summary["n_grains"], res.summary["jeffries_count"]
    (16, 9.0)
    >>> round(res.summary["G_planimetric"], 2)   # 9 grains in 0.04 mm^2
    4.86
    """
    labels = as_input_array(labels, what)
    px = check_pixel_size(pixel_size_um)
    if isinstance(min_grain_px, (bool, np.bool_)) or not isinstance(min_grain_px, (int, np.integer)) or min_grain_px < 0:
        msg = f"min_grain_px={min_grain_px!r}: must be a whole number of pixels >= 0"
        raise ValueError(msg)
    try:
        checked = tuple(int(a) for a in angles)
    except (TypeError, ValueError):
        checked = ()
    if not checked or any(a not in ANGLES for a in checked):
        msg = f"angles={angles!r}: expected one or more of {ANGLES} (degrees from the column axis)"
        raise ValueError(msg)
    angles = checked
    zeros = None
    if overwrite_input and isinstance(labels, np.ndarray) and labels.ndim == 2 and labels.flags.writeable:
        zeros = zero_bits(labels)
    try:
        result = _measure_grains(labels, px, fields=fields, angles=angles, circles=circles, what=what, zeros=zeros,
                                 min_grain_px=int(min_grain_px))
    finally:
        if zeros is not None:
            restore_zeros(labels, zeros)
    if zeros is not None and np.may_share_memory(result.labels, labels):
        result.labels = None  # the filled image was the input itself, and its 0 pixels are back
    return result


def _fills_its_type(dtype: np.dtype, original: np.ndarray) -> bool:
    """True when an 8- or 16-bit unsigned label image uses every value ``1..255`` / ``1..65535``: labels that
    wrapped just past the type's range (270 grains saved as ``uint8``) split only a few values, fewer than
    :data:`SPLIT_LABELS_WARN_SHARE`, but a full type with its low values in separate regions is wrapped
    (see :func:`_wrapped_split`)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        return False
    top = int(np.iinfo(dtype).max)
    return original.size == top + 1 and int(original[-1]) == top


def _wrapped_split(n_split: int, lab: np.ndarray, original: np.ndarray, areas: np.ndarray) -> bool:
    """True when ``n_split`` split values of a full 8/16-bit label image (:func:`_fills_its_type`) look wrapped:
    two or more, or the one split value is 1 (grain 257 saved as ``uint8`` is 1 again); one other value in two
    regions is a grain cut in two or a fragment, as in any label image."""
    if n_split >= 2:
        return True
    p = int(np.searchsorted(original, 1))  # the label of value 1 in ``lab`` (1 unless merged away)
    if n_split < 1 or p >= original.size or int(original[p]) != 1:
        return False
    only = np.zeros(p, dtype=np.float64)
    only[p - 1] = areas[p - 1]
    return split_label_values(lab, only)[1] == 1


def _refuse_boundary_network(lab: np.ndarray, original: np.ndarray, n_neighbors: np.ndarray, what: str) -> None:
    """Refuse labels whose boundaries were drawn with a value of their own (see :data:`NETWORK_NEIGHBOUR_SHARE`)."""
    n = n_neighbors.size
    if n < NETWORK_MIN_GRAINS:
        return
    top = int(np.argmax(n_neighbors))
    if n_neighbors[top] < NETWORK_NEIGHBOUR_SHARE * (n - 1):
        return
    from scipy import ndimage as ndi

    region = lab == top + 1
    area = int(np.count_nonzero(region))
    edge_share = 1.0 - np.count_nonzero(ndi.binary_erosion(region)) / max(area, 1)
    del region
    if edge_share < NETWORK_EDGE_SHARE:
        return
    value = int(original[top + 1])
    raise InvalidImageError(
        f"{what}: label {value} neighbours {int(n_neighbors[top])} of the other {n - 1} grains and is a thin network "
        f"({100 * edge_share:.0f} % of its {area} pixels on its edge): these look like the grain boundaries drawn "
        f"with value {value}, not a grain; measured as one, every boundary would count twice (G about 2 too high). "
        f"Set those pixels to 0 (0 = boundary) or measure a boundary mask (micro-seg measure grains --boundary "
        f"--boundary-value {value})")


def _merge_small_grains(lab: np.ndarray, original: np.ndarray, counts: np.ndarray, min_px: int,
                        what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Grains of fewer than ``min_px`` pixels given to their nearest grains and the rest relabelled ``1..N``:
    ``(labels, original, counts, n_merged)`` as from :func:`prepare_labels`.  ``lab`` itself is not changed."""
    keep = counts >= min_px
    keep[0] = True
    n_small = int(np.count_nonzero(~keep))
    if not n_small:
        return lab, original, counts, 0
    if not keep[1:].any():
        raise InvalidImageError(f"{what}: every grain is smaller than min_grain_px={min_px} pixels")
    lut = np.zeros(counts.size, dtype=np.int32)
    lut[keep] = np.arange(int(keep.sum()), dtype=np.int32)
    out = np.empty(lab.shape, dtype=np.int32)
    for rows in row_blocks(lab):
        out[rows] = lut[lab[rows]]
    out = fill_boundaries(out, overwrite_input=True)
    original = original[keep]
    return out, original, label_counts(out, original.size), n_small


def _measure_grains(labels, px, *, fields, angles, circles, what, zeros, min_grain_px=0) -> GrainMeasurement:
    """:func:`measure_grains` after the pixel-size check; ``zeros``: the input's 0 pixels (:func:`zero_bits`)
    when it may be filled in place, else None."""
    source = np.asarray(labels)  # 0 regions wider than a boundary, before the boundaries are filled
    input_dtype = source.dtype
    if source.ndim == 3 and source.shape[-1] == 1:
        source = source[..., 0]
    wide_zero = wide_zero_fraction(source) if source.ndim == 2 and source.size else 0.0
    del source
    lab, original, counts_px = prepare_labels(labels, what=what, return_counts=True, overwrite_input=zeros is not None)
    full_type = _fills_its_type(input_dtype, original)  # before merging: merged grains leave values unused
    n_merged = 0
    if min_grain_px > 1:
        lab, original, counts_px, n_merged = _merge_small_grains(lab, original, counts_px, min_grain_px, what)
    rows, cols = lab.shape
    n = int(original.size - 1)
    warnings: list[str] = []
    n_small = int(np.count_nonzero(counts_px[1:] < SMALL_GRAIN_PX))
    if n_small >= 2 and n_small >= SMALL_GRAIN_WARN_SHARE * n:
        warnings.append(
            f"{what}: {n_small} of the {n} grains ({100 * n_small / n:.1f} %) are smaller than {SMALL_GRAIN_PX} pixels: "
            "specks of noise, or grains too few pixels across to measure (Coutinho et al. 2017); each counts as a "
            "grain and raises G. Merge them into their neighbours with a minimum grain size (micro-seg measure grains "
            "--min-grain PX; min_grain_px=PX in measure_grains): a label image keeps every grain by default"
        )
    if wide_zero > WIDE_ZERO_WARN_SHARE:
        warnings.append(
            f"{what}: {100 * wide_zero:.1f} % of the image is 0 in regions far wider than a boundary (more than "
            f"{2 * WIDE_ZERO_RADIUS_PX + 1} px across); 0 means grain boundary, so these regions were filled as grain "
            "by their neighbours and the grain areas and G are biased: crop the image to the labelled area "
            "(there is no background / mask value for grains)"
        )
    if px is None:
        warnings.append(NO_SCALE_WARNING)
    if n == 1:  # a binary image read as labels (a boundary or grain mask) is "one grain": say so
        source = np.asarray(labels)
        if zeros is not None:  # filled in place: its 0 pixels are needed here
            source = source.copy()
            restore_zeros(source, zeros)
        n_regions = single_label_regions(source.reshape(lab.shape))
        if n_regions > 1:
            warnings.append(
                f"{what}: only one label value ({original[1]}) in {n_regions} disconnected regions: is this a "
                "boundary mask? measure it as one (micro-seg measure grains --boundary; measure_grains_from_boundaries "
                "in Python); as labels, n_grains counts label values"
            )
    px_mm = px / 1000.0 if px is not None else None

    areas = counts_px[1:].astype(np.float64)
    field_area = float(rows * cols)
    not_instances = False
    if n > 1:  # each value counts as one grain: a value in many places (wrapped labels, a micrograph) is not one
        n_checked, n_split, n_regions, n_spread = split_label_values(lab, areas)
        share = n_split / n_checked * n_spread / n if n_checked else 0.0
        not_instances = (n_split >= 2 and share >= SPLIT_LABELS_WARN_SHARE) or (
            full_type and _wrapped_split(n_split, lab, original, areas))
        if not_instances:
            which = (f"{n_split} of the {n} label values" if n_checked == n_spread
                     else f"{n_split} of {n_checked} label values checked (of {n})")
            warnings.append(
                f"{what}: labels look wrapped or are not instance labels: {which} form {n_regions} separate "
                "regions; each value counts as one grain, so n_grains and G are "
                "wrong. Save grain labels as 16- or 32-bit integers without compression loss (8 bits wrap above 255 "
                "grains, JPEG alters values), or measure a boundary mask (micro-seg measure grains --boundary)"
            )

    # ---- planimetric (whole image)
    count, n_inside, n_edge, n_corner, edge_labels = _jeffries(lab, present=areas > 0)
    touches = np.zeros(n + 1, bool)
    touches[edge_labels] = True
    touches = touches[1:]
    na_px = count / field_area

    # ---- fields
    grid: tuple[int, int] | None
    if fields is None:
        grid = None
    elif isinstance(fields, str):
        if fields != "auto":
            msg = f"fields={fields!r}: expected 'auto', an int, a (rows, cols) pair or None"
            raise ValueError(msg)
        grid = auto_field_grid((rows, cols), count)
    else:
        grid = check_field_size((rows, cols), fields, what=what)
        if grid != (1, 1) and count < grid[0] * grid[1]:
            msg = (f"{what}: --fields {grid[0]}x{grid[1]} gives {grid[0] * grid[1]} fields for about {count:.0f} grains, "
                   f"less than one grain per field: such a field measures its own size, not the grains "
                   f"(E112 / E1382 want many grains per field); use at most {max(1, int(count))} fields")
            raise InvalidImageError(msg)
    field_maps = field_index_maps((rows, cols), fields=grid) if grid is not None else None

    # ---- lineal intercepts (Heyn)
    counts = line_intercepts(lab, angles=tuple(angles), field_maps=field_maps, n_labels=n, keep_pairs=True)
    pl_by_angle = {c.angle: (c.intersections / c.length_px if c.length_px > 0 else math.nan) for c in counts}
    pl = float(np.nanmean(list(pl_by_angle.values())))
    l_px = 1.0 / pl if pl > 0 else math.inf
    n_intersections = float(sum(c.intersections for c in counts))
    line_length_px = float(sum(c.length_px for c in counts))
    # joined angle by angle, each angle's copy freed once copied (a 16k x 16k image has ~40 million chords)
    chords = np.empty(sum(c.chords_px.size for c in counts), np.float64)
    start = 0
    for c in counts:
        chords[start : start + c.chords_px.size] = c.chords_px
        start += c.chords_px.size
        c.chords_px = np.zeros(0)
    crossings = next((c.crossings for c in counts if c.crossings is not None), None)
    if crossings is None:  # 0 deg not among the angles: one row pass for the runs
        crossings = line_intercepts(lab, angles=(0,), n_labels=n, keep_pairs=True)[0].crossings

    # ---- adjacency graph (4-connected pairs from the 0 / 90 deg passes)
    pair_list = [c.pairs for c in counts if c.pairs is not None and len(c.pairs)]
    for c in counts:
        c.pairs = None  # pair_list holds them alone: each is freed once reduced to its distinct pairs
    if 0 not in angles or 90 not in angles:
        extra = line_intercepts(lab, angles=tuple(a for a in (0, 90) if a not in angles), n_labels=n, keep_pairs=True)
        pair_list += [c.pairs for c in extra if c.pairs is not None and len(c.pairs)]
    if pair_list:
        # distinct pairs per pass first: a pass holds one pair per crossing (millions at 16k x 16k), the
        # image only a few per grain
        key_list = []
        while pair_list:
            pairs = pair_list.pop()
            lo = np.minimum(pairs[:, 0], pairs[:, 1]).astype(np.int64)
            hi = np.maximum(pairs[:, 0], pairs[:, 1])
            del pairs
            lo *= n + 1
            lo += hi
            del hi
            key_list.append(_sorted_unique(lo))
            del lo
        keys = _sorted_unique(np.concatenate(key_list))
        adj = np.stack([keys // (n + 1), keys % (n + 1)], axis=1)
        del key_list, keys
    else:
        adj = np.zeros((0, 2), np.int64)
    n_neighbors = (np.bincount(adj[:, 0], minlength=n + 1) + np.bincount(adj[:, 1], minlength=n + 1))[1:]
    if not not_instances:  # labels already reported as wrapped / no instance labels: their own message says why
        _refuse_boundary_network(lab, original, n_neighbors, what)

    # ---- Crofton perimeter per grain (image edges are not boundary)
    per = {c.angle: c.crossings_per_label[1:].astype(np.float64) for c in counts}
    if set(per) == set(ANGLES):
        perimeter_px = (math.pi / 8.0) * (per[0] + per[90] + (per[45] + per[135]) / math.sqrt(2.0))
    else:
        perimeter_px = np.full(n, math.nan)

    # ---- per-field statistics
    field_rows: list[dict[str, Any]] = []
    l_fields = np.zeros(0)
    na_fields = np.zeros(0)
    circ_len, circ_p, arcs = 0.0, 0.0, []
    if grid is not None:
        slices = field_grid((rows, cols), fields=grid)
        nf = len(slices)
        with warnings_module.catch_warnings():  # fields without test lines (1-px fields) are NaN
            warnings_module.simplefilter("ignore", RuntimeWarning)
            pl_f = np.nanmean(
                np.stack([c.field_intersections / np.where(c.field_length_px > 0, c.field_length_px, np.nan)
                          for c in counts]),
                axis=0,
            )
        with np.errstate(divide="ignore"):
            l_fields = np.where(pl_f > 0, 1.0 / pl_f, np.nan)
        na_fields = np.zeros(nf)
        # grains present in each field from the row runs (broken at the field columns)
        col_breaks = np.array(sorted({cs.start for _, cs in slices} - {0}), dtype=np.int64)
        _, run_len, run_lab, run_row, run_col = _row_runs(lab, crossings, col_breaks)
        run_field = field_maps[0][run_row] * grid[1] + field_maps[1][run_col]
        present_all = np.bincount(run_lab.astype(np.int64) * nf + run_field, minlength=(n + 1) * nf).reshape(n + 1, nf) > 0
        del run_len, run_lab, run_row, run_col, run_field
        for k, (rs, cs) in enumerate(slices):
            sub = lab[rs, cs]
            cnt, *_ = _jeffries(sub, present=present_all[:, k])
            na_fields[k] = cnt / float(sub.size)
            row = {"field": k, "row_start": rs.start, "row_stop": rs.stop, "col_start": cs.start, "col_stop": cs.stop,
                   "jeffries_count": cnt, "grains_per_px2": na_fields[k], "mean_intercept_px": l_fields[k]}
            if circles:
                cl, cp, ca = abrams_pattern(sub)
                circ_len += cl
                circ_p += cp
                arcs.append(ca)
                row["circle_intersections"] = cp
                row["mean_intercept_circles_px"] = cl / cp if cp > 0 else math.nan
            field_rows.append(row)
    elif circles:
        circ_len, circ_p, ca = abrams_pattern(lab)
        arcs.append(ca)
    fields_df = pd.DataFrame(field_rows)
    if px is not None and len(fields_df):
        fields_df["grains_per_mm2"] = fields_df["grains_per_px2"] / px_mm**2
        fields_df["mean_intercept_um"] = fields_df["mean_intercept_px"] * px
        if circles:
            fields_df["mean_intercept_circles_um"] = fields_df["mean_intercept_circles_px"] * px

    st_l = field_statistics(l_fields)
    st_na = field_statistics(na_fields)
    l_circ_px = circ_len / circ_p if circ_p > 0 else math.nan

    # ---- areas, E1382 mean area, ALA
    interior = ~touches
    a_int = areas[interior]
    mean_area_px = float(a_int.mean()) if a_int.size else math.nan
    ecd_px = 2.0 * np.sqrt(areas / math.pi)
    if a_int.size:
        ala_idx = int(np.flatnonzero(interior)[np.argmax(a_int)])
        ala_area_px = float(areas[ala_idx])
        ala_label = int(original[ala_idx + 1])
    else:
        ala_area_px, ala_label = math.nan, None
    if n_inside < 50:
        warnings.append(
            f"{what}: only {n_inside} grains lie fully inside the image; E1382 asks for >= 50 per field "
            "(the E1382 mean area and ALA are uncertain)"
        )
    if grid is not None and count / (grid[0] * grid[1]) < 50:
        warnings.append(
            f"{what}: about {count / (grid[0] * grid[1]):.0f} grains per field in a {grid[0]} x {grid[1]} grid "
            "(E1382 asks for >= 50 per field); the confidence intervals are rough"
        )
    if grid is None or grid == (1, 1):  # a CI over one field is undefined: null, and said so
        warnings.append(
            f"{what}: measured as one field: G_intercept and G_planimetric have no confidence interval (their "
            "*_ci95 values are null); E112 section 15 statistics need several fields (--fields auto)"
        )
    if l_px < PIXELISATION_WARN_PX:
        warnings.append(
            f"{what}: grains are only about {l_px:.1f} px across (mean intercept); pixelisation biases the "
            "measurement at this resolution (Coutinho et al. 2017): image at a higher magnification"
        )

    if l_px > min(rows, cols):
        across = (f"the mean intercept (about {l_px:.0f} px) is longer than the image's shorter side "
                  f"({min(rows, cols)} px)" if math.isfinite(l_px)
                  else "no test line crosses a grain boundary (the mean intercept is infinite)")
        warnings.append(
            f"{what}: {across}: too few grain boundaries for an intercept measurement (E112 wants many grains per field); image a "
            "larger area or at a lower magnification"
        )

    # ---- assemble
    def g_or_none(func, value):
        try:
            return func(value) if value is not None and math.isfinite(value) and value > 0 else None
        except ValueError:
            return None

    l_mm = l_px * px_mm if px_mm is not None else None
    na_mm2 = na_px / px_mm**2 if px_mm is not None else None
    area_mm2 = mean_area_px * px_mm**2 if px_mm is not None else None
    G_int = g_or_none(astm.g_from_intercept, l_mm)
    G_pl = g_or_none(astm.g_from_grains_per_mm2, na_mm2)
    G_area = g_or_none(astm.g_from_mean_area, area_mm2)
    ala_G = g_or_none(astm.g_from_mean_area, ala_area_px * px_mm**2 if px_mm is not None else None)
    G_circ = g_or_none(astm.g_from_intercept, l_circ_px * px_mm if px_mm is not None else None)
    G_int_ci = G_pl_ci = None
    if px_mm is not None:
        G_int_ci = _g_ci_half_width(astm.g_from_intercept, l_px * px_mm, st_l["ci95"] * px_mm)
        G_pl_ci = _g_ci_half_width(astm.g_from_grains_per_mm2, na_mm2, st_na["ci95"] / px_mm**2)
        for key, g_ci, st, centre, name in (("G_intercept_ci95", G_int_ci, st_l, l_px, "mean intercept"),
                                            ("G_planimetric_ci95", G_pl_ci, st_na, na_px, "N_A")):
            if g_ci is None and math.isfinite(st["ci95"]) and math.isfinite(centre) and st["ci95"] >= centre:
                warnings.append(  # a null CI says why, as for one field
                    f"{what}: the 95 % confidence interval of the {name} over the {st['n']} fields "
                    f"(+-{100 * st['ci95'] / centre:.0f} %) reaches 0, so no G interval exists: {key} is null; "
                    "use more fields (E112 section 15: the t factor of few fields is large) or image more of "
                    "the specimen")

    g_values = {"G_planimetric": G_pl, "G_intercept": G_int, "G_area": G_area}
    lo_g, hi_g = G_PLAUSIBLE_RANGE
    odd = {k: v for k, v in g_values.items() if v is not None and not lo_g <= v <= hi_g}
    if odd:
        listed = ", ".join(f"{k} {v:.1f}" for k, v in odd.items())
        warnings.append(
            f"{what}: {listed} far outside the ASTM E112 scale (G 00 to 14; plausible {lo_g:g} to {hi_g:g}): check "
            f"the pixel size ({px:g} um/pixel)"
        )

    def um(v, power=1):
        return v * px**power if px is not None and v is not None and math.isfinite(v) else None

    ra_l = st_l["ra_percent"]
    dist_area = _dist_summary(a_int)
    dist_ecd = _dist_summary(ecd_px[interior])
    dist_chord = _dist_summary(chords)
    summary: dict[str, Any] = {
        "n_grains": n,
        "grains_per_mm2": na_mm2,
        "G_planimetric": G_pl,
        "mean_intercept_um": um(l_px),
        "G_intercept": G_int,
        "G_intercept_ci95": G_int_ci,
        "mean_area_um2": um(mean_area_px, 2),
        "G_area": G_area,
        "ala_G": ala_G,
        "pixel_size_um": px,
        "units": "um" if px is not None else "px",

        "image_shape": [rows, cols],
        # planimetric details
        "jeffries_count": count,
        "n_grains_inside": n_inside,
        "n_grains_edge": n_edge,
        "n_grains_corner": n_corner,
        "grains_per_px2": na_px,
        "G_planimetric_ci95": G_pl_ci,
        # intercept details
        "mean_intercept_px": l_px,
        "mean_intercept_ci95_um": um(st_l["ci95"]),
        "mean_intercept_ci95_px": st_l["ci95"],
        "mean_intercept_ra_percent": ra_l,
        "n_intersections": n_intersections,
        "test_line_length_um": um(line_length_px),
        "test_line_length_px": line_length_px,
        "mean_intercept_by_angle_px": {str(a): (1.0 / v if v > 0 else None) for a, v in pl_by_angle.items()},
        "mean_intercept_circles_um": um(l_circ_px) if circles else None,
        "mean_intercept_circles_px": l_circ_px if circles else None,
        "G_intercept_circles": G_circ if circles else None,
        "n_intersections_circles": circ_p if circles else None,
        # areas
        "mean_area_px2": mean_area_px,
        "mean_ecd_um": um(dist_ecd["mean"]) if dist_ecd["n"] else None,  # Hall-Petch d as ECD (interior grains)
        "mean_ecd_px": dist_ecd["mean"] if dist_ecd["n"] else None,
        "mean_area_planimetric_um2": um(1.0 / na_px, 2) if na_px > 0 else None,
        "ala_area_um2": um(ala_area_px, 2),
        "ala_area_px2": ala_area_px,
        "ala_label": ala_label,
        # topology
        "mean_neighbors": float(n_neighbors[interior].mean()) if interior.any() else None,
        "sd_neighbors": float(n_neighbors[interior].std(ddof=1)) if interior.sum() > 1 else None,
        "n_boundaries": int(adj.shape[0]),
        # distributions (interior grains for area/ECD, complete chords for intercepts)
        "distributions": {
            "area_px2": dist_area,
            "ecd_px": dist_ecd,
            "intercept_px": dist_chord,
            "area_um2": _scaled(dist_area, px**2 if px else None),
            "ecd_um": _scaled(dist_ecd, px),
            "intercept_um": _scaled(dist_chord, px),
        },
        "fields": {
            "grid": list(grid) if grid is not None else None,
            "n_fields": len(field_rows),
            "mean_intercept_px": st_l,
            "grains_per_px2": st_na,
            "mean_intercept_um": _scaled(st_l, px),
            "grains_per_mm2": _scaled(st_na, 1.0 / px_mm**2 if px_mm else None),
        },
        "warnings": warnings,
    }
    if min_grain_px > 0:
        summary["small_grains"] = {"min_grain_px": min_grain_px, "n_merged": n_merged}

    table = pd.DataFrame(
        {
            "label": original[1:],
            "area_px": areas,
            "ecd_px": ecd_px,
            "perimeter_px": perimeter_px,
            "touches_edge": touches,
            "n_neighbors": n_neighbors,
        }
    )
    _, run_len, run_lab, run_row, run_col = _row_runs(lab, crossings, np.zeros(0, np.int64))
    run_len = run_len.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cr = np.bincount(run_lab, weights=run_row * run_len, minlength=n + 1)[1:] / areas
        cc = np.bincount(run_lab, weights=(run_col + (run_len - 1) / 2.0) * run_len, minlength=n + 1)[1:] / areas
    table["centroid_row_px"] = cr
    table["centroid_col_px"] = cc
    if px is not None:
        table["area_um2"] = areas * px**2
        table["ecd_um"] = ecd_px * px
        table["perimeter_um"] = perimeter_px * px
        table["centroid_row_um"] = cr * px
        table["centroid_col_um"] = cc * px
    adjacency = np.stack([original[adj[:, 0]], original[adj[:, 1]]], axis=1) if adj.size else adj
    return GrainMeasurement(
        summary=summary,
        grains=table,
        fields=fields_df,
        intercepts_px=chords,
        adjacency=adjacency,
        labels=lab,
        warnings=warnings,
    )


def measure_grains_from_boundaries(
    mask: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    close_gaps_px: int = 1,
    min_grain_px: int = 8,
    boundary_value: float | None = None,
    what: str = "boundary mask",
    **kwargs: Any,
) -> GrainMeasurement:
    """Measure grain size from a boundary mask (non-zero = boundary).

    The mask is turned into grains by :func:`micro_seg.measure.labels.labels_from_boundaries`
    (close gaps, 4-connected labelling, drop fragments, assign boundary pixels to the
    nearest grain), then measured with :func:`measure_grains`.  ``boundary_value``:
    only the pixels equal to it are boundary (e.g. 1 in a mask with 1 = grain boundary,
    2 = twin trace; 0 for dark lines on white).  Without it every non-zero pixel is
    boundary, and a mask with several non-zero values is measured with a warning
    (:func:`~micro_seg.measure.labels.boundary_levels_note`); so is a mask more than
    half boundary (inverted? :func:`~micro_seg.measure.labels.inverted_mask_hint`).

    Examples
    --------
    >>> mask = np.zeros((100, 100), bool); mask[:, ::20] = True; mask[::20, :] = True
    >>> res = measure_grains_from_boundaries(mask, pixel_size_um=1.0, fields=None)
    >>> res.summary["n_grains"]
    25
    """
    mask = as_input_array(mask, what)
    note = None
    if boundary_value is not None:
        if not isinstance(boundary_value, (bool, np.bool_, numbers.Real)):  # "1" matched no pixel, and its message
            raise InvalidImageError(f"{what}: boundary_value={boundary_value!r}: not a number (the pixel value of "
                                    "the boundary lines)")  # was 'Unknown format code g'
        mask = mask == boundary_value
        if not mask.any():
            raise InvalidImageError(f"{what}: no pixel equals boundary_value={boundary_value:g}")
    else:
        note = boundary_levels_note(mask, what)
    labels = labels_from_boundaries(mask, close_gaps_px=close_gaps_px, min_grain_px=min_grain_px, what=what)
    res = measure_grains(labels, pixel_size_um=pixel_size_um, what=what, **kwargs)
    hint = inverted_mask_hint(mask)
    for text in (f"{what}: {hint}" if hint else None, note):
        if text:
            res.warnings.insert(0, text)
    res.summary["from_boundaries"] = {"close_gaps_px": close_gaps_px, "min_grain_px": min_grain_px}
    return res


def combine_grain_fields(results: list[GrainMeasurement] | list[dict]) -> dict:
    """E112 section 15 statistics over several images (fields) of one specimen.

    G comes from the mean ``l`` and the mean ``N_A`` over the fields, never from
    the mean of the per-field G values.

    Parameters
    ----------
    results : list of GrainMeasurement or summary dicts
        All calibrated (same units) or all uncalibrated.

    Returns
    -------
    dict
        ``n_fields``, ``mean_intercept_um`` / ``_px`` statistics, ``grains_per_mm2``
        statistics, ``G_intercept``, ``G_intercept_ci95``, ``G_planimetric``,
        ``G_planimetric_ci95``.

    Examples
    --------
    >>> fake = [{"mean_intercept_um": 10.0, "grains_per_mm2": 8000.0, "pixel_size_um": 1.0},
    ...         {"mean_intercept_um": 12.0, "grains_per_mm2": 6000.0, "pixel_size_um": 1.0}]
    >>> round(combine_grain_fields(fake)["G_intercept"], 3) == round(astm.g_from_intercept(0.011), 3)
    True
    """
    sums = [r.summary if isinstance(r, GrainMeasurement) else r for r in results]
    if not sums:
        msg = "combine_grain_fields: no results given"
        raise ValueError(msg)
    calibrated = [s.get("pixel_size_um") is not None for s in sums]
    if any(calibrated) and not all(calibrated):
        msg = "combine_grain_fields: some fields are calibrated and some are not; cannot mix units"
        raise ValueError(msg)
    out: dict[str, Any] = {"n_fields": len(sums), "units": "um" if all(calibrated) else "px"}
    if all(calibrated):
        st_l = field_statistics([s["mean_intercept_um"] for s in sums])
        st_na = field_statistics([s["grains_per_mm2"] for s in sums])
        out["mean_intercept_um"] = st_l
        out["grains_per_mm2"] = st_na
        l_mm = st_l["mean"] / 1000.0
        out["G_intercept"] = astm.g_from_intercept(l_mm) if l_mm > 0 else None
        out["G_intercept_ci95"] = _g_ci_half_width(astm.g_from_intercept, l_mm, st_l["ci95"] / 1000.0)
        out["G_planimetric"] = astm.g_from_grains_per_mm2(st_na["mean"]) if st_na["mean"] > 0 else None
        out["G_planimetric_ci95"] = _g_ci_half_width(astm.g_from_grains_per_mm2, st_na["mean"], st_na["ci95"])
        pairs = (("mean_intercept_um", st_l), ("grains_per_mm2", st_na))
    else:
        out["mean_intercept_px"] = field_statistics([s["mean_intercept_px"] for s in sums])
        out["grains_per_px2"] = field_statistics([s["grains_per_px2"] for s in sums])
        out["G_intercept"] = out["G_planimetric"] = None
        out["warnings"] = [NO_SCALE_WARNING]
        pairs = (("mean_intercept_px", out["mean_intercept_px"]), ("grains_per_px2", out["grains_per_px2"]))
    for key, st in pairs:  # a field without any intercept has no mean intercept: its statistics are over fewer
        if st["n"] < len(sums):
            out.setdefault("warnings", []).append(
                f"{key} is over {st['n']} of the {len(sums)} fields (the others have no value, e.g. no boundary "
                "crossed by the test lines): its G and CI are not over the same fields as the other statistics")
    from micro_seg.jsonable import to_jsonable

    return to_jsonable(out)  # the s and CI of one field are None (as combine_phase_fields gives them), not NaN
