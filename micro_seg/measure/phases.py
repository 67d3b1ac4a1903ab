"""Phase (constituent) fractions: area fraction per class and ASTM E562 point counting.

* **Area fraction** ``A_A`` of every class over the analysed pixels (``A_A = V_V``
  by Delesse).  The uncertainty that matters is field-to-field: the image is
  split into a grid of fields (default 5 x 5), ``A_A`` is measured per field and
  the 95 % confidence half-width is ``t(0.975, n-1) s / sqrt(n)`` (E562 / E1245
  form), with ``%RA = 100 CI / mean``.  Fields count by the pixels they
  analysed (the pooled fraction, and a ratio-estimator interval over the
  effective number of fields, see :func:`_ratio_statistics`): the same as the
  plain form for equal fields, and a field that ``ignore_index`` leaves mostly
  out weighs little.
* **E562 systematic point count emulation**: in every field a square grid of
  ``k x k`` test points is placed (points at the centres of a ``k x k``
  subdivision of the field).  ``P_P`` = fraction of points on the class per
  field; ``V_V`` = mean ``P_P`` +- ``t s / sqrt(n)`` (with ``ignore_index``,
  points on ignored pixels are not counted and fields weigh by the points
  they counted, as for the areas).  By default the grid size
  follows E562's guide for the smallest class fraction present:
  > 20 % -> 16 points, 10-20 % -> 25, 5-10 % -> 49, < 5 % -> 100.  Points
  sample pixel centres, so E562's "point on a boundary counts 1/2" never
  applies.

Examples
--------
>>> import numpy as np
>>> classes = np.zeros((100, 100), int); classes[:, 70:] = 1
>>> res = measure_phases(classes, names=["ferrite", "pearlite"])
>>> res.summary["phase_fractions"]
{'ferrite': 0.7, 'pearlite': 0.3}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from micro_seg.errors import InvalidImageError
from micro_seg.measure._units import as_input_array, check_pixel_size
from micro_seg.measure.labels import exact_float_labels, label_counts
from micro_seg.measure.stats import _check_grid, check_field_size, field_grid, field_statistics

__all__ = ["PhaseMeasurement", "measure_phases", "e562_points_per_field", "combine_phase_fields"]

NO_SCALE_PHASES = "no pixel size: phase areas are reported in pixels (area_px); the fractions do not need a scale"

#: A class map of phases holds a handful of classes (value i = class i).  Above :data:`MANY_CLASSES_WARN`
#: distinct values the result warns; above :data:`MAX_CLASSES` the image is refused: it is almost surely
#: a raw micrograph or an instance label image (a grey micrograph has ~200 distinct values).
MANY_CLASSES_WARN, MAX_CLASSES = 20, 64
#: Largest class value accepted: the classes are counted in arrays indexed by value, and a class map
#: uses small integers 0, 1, 2, ... (a value of 2**40 would need terabytes).
MAX_CLASS_VALUE = 65535


@dataclass
class PhaseMeasurement:
    """Result of :func:`measure_phases`: ``summary`` dict, per-class ``table``, per-field ``fields``."""

    summary: dict
    table: pd.DataFrame
    fields: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The summary as plain JSON data (a copy for ``json.dumps``): numpy numbers as Python ones, and a value that
        cannot be computed (NaN or infinite, e.g. the mean intercept of an image of one grain) as None."""
        from micro_seg.jsonable import to_jsonable

        return to_jsonable(self.summary)


def e562_points_per_field(fraction: float) -> int:
    """Points per field suggested by ASTM E562 for an expected volume fraction.

    Examples
    --------
    >>> [e562_points_per_field(f) for f in (0.03, 0.07, 0.15, 0.4)]
    [100, 49, 25, 16]
    """
    f = float(fraction)
    if f > 0.20:
        return 16
    if f > 0.10:
        return 25
    if f > 0.05:
        return 49
    return 100


def _too_large(top: int, what: str) -> InvalidImageError:
    return InvalidImageError(
        f"{what}: class value {top} is too large for a class label image (at most {MAX_CLASS_VALUE}; "
        "a class map uses the values 0, 1, 2, ... of its classes): is this an instance label image?")


def _class_image(classes: np.ndarray, what: str) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.ndim == 3 and classes.shape[-1] == 1:
        classes = classes[..., 0]
    if classes.ndim != 2:
        msg = f"{what}: expected a 2-D class label image (rows x cols), got shape {classes.shape}"
        raise InvalidImageError(msg)
    if classes.size == 0:
        msg = f"{what}: empty image"
        raise InvalidImageError(msg)
    if classes.dtype == bool:
        return classes.astype(np.int64)
    if not np.issubdtype(classes.dtype, np.integer):
        if np.issubdtype(classes.dtype, np.floating) and np.all(np.isfinite(classes)) and np.all(classes == np.round(classes)):
            if float(classes.max()) > MAX_CLASS_VALUE:  # before the cast, which would wrap huge values (float16: no 65535)
                raise _too_large(int(classes.max()), what)
            return exact_float_labels(classes, what)  # refuses values the float type cannot hold apart
        msg = f"{what}: dtype {classes.dtype} is not an integer class label image"
        raise InvalidImageError(msg)
    if classes.min() < 0:
        msg = f"{what}: negative class value {int(classes.min())}"
        raise InvalidImageError(msg)
    # integer images are kept as they are (a uint8 class map copied to int64 would cost 8 bytes per pixel);
    # np.bincount cannot take uint64 (checked before the cast, which would make values above 2**63 negative)
    if classes.dtype == np.uint64 and int(classes.max()) > MAX_CLASS_VALUE:
        raise _too_large(int(classes.max()), what)
    return classes.astype(np.int64) if classes.dtype == np.uint64 else classes


def _effective_fields(weights: np.ndarray) -> float:
    """Kish's effective number of fields ``(sum w)**2 / sum w**2`` of fields that analysed ``weights`` pixels.

    ``n`` for ``n`` equal fields; about ``k`` where ``k`` fields are whole and the others hold a sliver each.

    >>> _effective_fields(np.array([400.0] * 25)), round(_effective_fields(np.array([400.0] * 6 + [1.0] * 19)), 2)
    (25.0, 6.1)
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w[w > 0]
    if w.size == 0:
        return 0.0
    if np.all(w == w[0]):
        return float(w.size)
    return float(np.sum(w) ** 2 / np.sum(w * w))


def _ratio_statistics(fractions: np.ndarray, weights: np.ndarray, *, confidence: float = 0.95) -> dict:
    """:func:`field_statistics` of per-field fractions whose fields analysed ``weights`` pixels (or points) each.

    The mean is the pooled fraction (sum of hits over sum of analysed pixels / points), the variance the ratio
    estimator's (Cochran, Sampling Techniques, 6.9: ``sum w_i**2 (f_i - mean)**2 / (sum w)**2``) times
    ``n_eff / (n_eff - 1)`` and the interval Student t with ``n_eff - 1`` degrees of freedom, ``n_eff`` the
    effective number of fields (:func:`_effective_fields`).  With equal weights this is exactly E562's plain mean,
    s and t s / sqrt(n) of the field values; where most fields hold a sliver of analysed pixels (the rest ignored)
    they weigh little and count as little: with Cochran's ``n / (n - 1)`` and ``n - 1`` degrees of freedom the
    interval was too narrow (7 whole fields among 25: 95 % intervals covered the truth about 9 times in 10).

    >>> _ratio_statistics(np.array([1.0, 0.0, 0.0]), np.array([4.0, 400.0, 400.0]))["mean"] == 4 / 804
    True
    >>> s = _ratio_statistics(np.array([0.2, 0.4]), np.array([10.0, 10.0])); t = field_statistics([0.2, 0.4])
    >>> s == t
    True
    """
    f = np.asarray(fractions, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(f) & (w > 0)
    f, w = f[keep], w[keep]
    if f.size < 2 or np.all(w == w[0]):  # equal fields (no pixel ignored): E562's formula, exactly
        return field_statistics(f, confidence=confidence)
    from scipy.stats import t

    mean = float(np.sum(w * f) / np.sum(w))
    n_eff = _effective_fields(w)
    if n_eff < 2:  # under 1 degree of freedom: as good as one field, no interval (as for a single field)
        return {"n": int(f.size), "mean": mean, "sd": math.nan, "ci95": math.nan, "ra_percent": math.nan}
    var = float(np.sum((w * (f - mean)) ** 2) / np.sum(w) ** 2) * n_eff / (n_eff - 1)
    ci = float(t.ppf(0.5 + confidence / 2.0, n_eff - 1)) * math.sqrt(var)
    return {"n": int(f.size), "mean": mean, "sd": math.sqrt(var * n_eff), "ci95": ci,
            "ra_percent": 100.0 * ci / mean if mean != 0 else math.nan}


def measure_phases(
    classes: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    names: Sequence[str] | None = None,
    fields: int | tuple[int, int] | None = (5, 5),
    points_per_field: int | None = None,
    ignore_index: int | None = None,
    what: str = "classes",
) -> PhaseMeasurement:
    """Area fraction per class with field statistics and an E562 point-count emulation.

    Parameters
    ----------
    classes : ndarray of int, shape (rows, cols)
        Class label image: value ``i`` is class ``i`` (``names[i]`` when given).
    pixel_size_um : float, optional
        Pixel size in micrometres (only areas need it; fractions do not).
    names : sequence of str, optional
        Class names in label order (0, 1, 2, ...). Without names the keys are
        the class values present, as strings.  Names beyond the largest class
        value in the image are reported as 0 (a model's class absent here).
    fields : int, (n_rows, n_cols) or None, optional
        Field grid for the statistics (default 5 x 5; shrunk for small images).
    points_per_field : int, optional
        E562 grid points per field (a square number is used: 16, 25, 49, 100 ...).
        Default: E562's guide for the smallest class fraction.
    ignore_index : int, optional
        Class value excluded from the analysed area (e.g. unlabelled).
    what : str, optional
        Name of the input for messages.

    Returns
    -------
    PhaseMeasurement

    Raises
    ------
    InvalidImageError
        If the image is not a class label image: negative or non-integer values,
        a class value above :data:`MAX_CLASS_VALUE`, or more than
        :data:`MAX_CLASSES` distinct values (more than :data:`MANY_CLASSES_WARN`
        only warn).

    Examples
    --------
    >>> c = np.zeros((60, 60), int); c[:30] = 2
    >>> measure_phases(c, fields=(2, 2)).summary["phase_fractions"]
    {'0': 0.5, '2': 0.5}
    """
    classes = as_input_array(classes, what)
    px = check_pixel_size(pixel_size_um)
    cls = _class_image(classes, what)
    rows, cols = cls.shape
    warnings: list[str] = []
    if px is None:
        warnings.append(NO_SCALE_PHASES)
    top = int(cls.max())
    if top > MAX_CLASS_VALUE:
        raise _too_large(top, what)
    valid = np.ones(cls.shape, bool) if ignore_index is None else cls != int(ignore_index)
    # whole-image class counts block by block (a masked copy + np.bincount's int64 cast would cost 9 bytes per pixel)
    counts = label_counts(cls, top + 1)
    if ignore_index is not None and 0 <= int(ignore_index) <= top and counts[int(ignore_index)]:
        counts[int(ignore_index)] = 0
    elif ignore_index is not None:  # a mistyped value would leave the pixels meant to be excluded in the fractions
        warnings.append(f"{what}: no pixel has the ignored class value {ignore_index}; every pixel is measured "
                        f"(values present: {', '.join(str(v) for v in np.flatnonzero(counts)[:10])}"
                        f"{', ...' if np.count_nonzero(counts) > 10 else ''})")
    n_valid = int(counts.sum())
    if n_valid == 0:
        msg = f"{what}: every pixel is ignore_index={ignore_index}; nothing to measure"
        raise InvalidImageError(msg)
    n_classes = int(np.count_nonzero(counts))
    if n_classes > MAX_CLASSES:
        msg = (f"{what}: {n_classes} distinct class values; a class label image of phases has a handful "
               f"(at most {MAX_CLASSES} accepted): is this a raw micrograph or an instance label image?")
        raise InvalidImageError(msg)
    if n_classes > MANY_CLASSES_WARN:
        warnings.append(f"{what}: {n_classes} distinct class values; a class label image of phases usually has a "
                        "handful: check that this is a class map (value i = class i)")
    if names is not None:
        if isinstance(names, str):  # its characters would be taken as the names: "fp" -> f, p
            msg = f"names={names!r}: a string, not a sequence of class names (e.g. {names.split(',')!r})"
            raise ValueError(msg)
        if isinstance(names, Mapping):  # iterating it gives its keys: {0: "ferrite"} named class 0 "0", silently
            msg = (f"names={dict(names)!r}: a mapping, not a sequence of class names: give them as a list in label "
                   "order 0, 1, 2, ...")
            raise ValueError(msg)
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            msg = f"names={names!r}: duplicate class names"
            raise ValueError(msg)
        top_named = int(np.flatnonzero(counts).max())  # the ignored value needs no name (255 = unlabelled)
        if top_named >= len(names):
            msg = (f"{what}: class value {top_named} found but only {len(names)} names given "
                   f"({', '.join(names)}); names are in label order 0, 1, 2, ...")
            raise InvalidImageError(msg)
        class_ids = [i for i in range(len(names)) if i != ignore_index]
        keys = [names[i] for i in class_ids]
    else:
        present = np.flatnonzero(counts)
        class_ids = [int(i) for i in present]
        keys = [str(i) for i in class_ids]
    nk = top + 1 if names is None else max(len(names), top + 1)

    counts = np.concatenate([counts, np.zeros(nk - counts.size, np.int64)]).astype(np.float64)
    fractions = {k: float(counts[i] / n_valid) for k, i in zip(keys, class_ids)}

    # ---- fields
    shrink_note = ""
    if fields is not None:
        if isinstance(fields, (int, np.integer)):  # a count asked for: refused if its fields would be tiny
            grid = check_field_size((rows, cols), int(fields), what=what)
        else:  # a grid (the default 5 x 5) shrinks to fields of >= 8 px on a small image
            asked = _check_grid(fields, (rows, cols))  # checked as given: the error names the grid passed
            grid = (min(asked[0], max(1, rows // 8)), min(asked[1], max(1, cols // 8)))
            if grid != asked:  # the CI depends on the grid: say which one was used
                shrink_note = (f"{what}: a {asked[0]} x {asked[1]} field grid would make fields under 8 px "
                               f"on this {rows} x {cols} px image; {grid[0]} x {grid[1]} fields were used")
        slices = field_grid((rows, cols), fields=grid)
    else:
        slices = [(slice(0, rows), slice(0, cols))]
    min_frac = min((f for f in fractions.values() if f > 0), default=1.0)
    try:  # "x" was int()'s "invalid literal for int() with base 10: 'x'", naming no option
        ppf = int(points_per_field) if points_per_field is not None else e562_points_per_field(min_frac)
    except (TypeError, ValueError, OverflowError):
        ppf = 0
    if ppf < 1:
        msg = f"points_per_field={points_per_field!r}: must be a whole number >= 1"
        raise ValueError(msg)
    k = max(1, int(round(math.sqrt(ppf))))
    # no more grid lines than a field has pixel rows / columns: repeated rows would count some pixels twice
    k = min(k, min(min(rs.stop - rs.start, cs.stop - cs.start) for rs, cs in slices))
    if points_per_field is not None and k * k != ppf:  # the point count is over another grid than asked for
        warnings.append(f"{what}: points_per_field={ppf}: the E562 grid is square and at most one point per pixel "
                        f"row of a field; {k} x {k} = {k * k} points per field were used")
    field_area = np.zeros(len(slices))
    field_points = np.zeros(len(slices))
    field_frac = np.full((len(slices), len(class_ids)), np.nan)
    point_frac = np.full((len(slices), len(class_ids)), np.nan)
    n_points_used = 0
    field_rows = []
    for f, (rs, cs) in enumerate(slices):
        sub = cls[rs, cs]
        vsub = valid[rs, cs]
        nv = int(vsub.sum())
        field_area[f] = nv
        if nv:
            c = np.bincount(sub[vsub].ravel(), minlength=nk)
            field_frac[f] = c[class_ids] / nv
        fr_, fc_ = sub.shape
        pr = np.minimum(((np.arange(k) + 0.5) * fr_ / k).astype(int), fr_ - 1)
        pc = np.minimum(((np.arange(k) + 0.5) * fc_ / k).astype(int), fc_ - 1)
        pts = sub[np.ix_(pr, pc)].ravel()
        pv = vsub[np.ix_(pr, pc)].ravel()
        pts = pts[pv]
        n_points_used += int(pts.size)
        field_points[f] = pts.size
        if pts.size:
            pcnt = np.bincount(pts, minlength=nk)
            point_frac[f] = pcnt[class_ids] / pts.size
        row: dict[str, Any] = {"field": f, "row_start": rs.start, "row_stop": rs.stop,
                               "col_start": cs.start, "col_stop": cs.stop, "area_px": nv}
        if px is not None:  # as the per-class table and the grain / defect field tables: physical units too
            row["area_um2"] = nv * px * px
        for j, key in enumerate(keys):
            row[f"fraction_{key}"] = field_frac[f, j]
            row[f"point_fraction_{key}"] = point_frac[f, j]
        field_rows.append(row)
    # fields hold different numbers of analysed pixels / points where --ignore leaves some out (a field that is
    # mostly mount or unlabelled): each field counts by what it analysed, as the pooled fraction does
    fstats = [_ratio_statistics(field_frac[:, j], field_area) for j in range(len(class_ids))]
    pstats = [_ratio_statistics(point_frac[:, j], field_points) for j in range(len(class_ids))]
    if shrink_note:
        warnings.append(shrink_note)
    n_fields = int(np.count_nonzero(field_area))  # fields with analysed pixels: a wholly ignored field is none
    if n_fields == 1:  # a CI over one field is undefined: null, and said so
        warnings.append(f"{what}: only 1 field with analysed pixels: the fractions have no confidence interval "
                        "(ci95 and ra_percent are null); E562 statistics need several fields (>= 5)")
    elif (n_eff := _effective_fields(field_area)) < 2:  # the ratio interval needs >= 1 degree of freedom
        warnings.append(f"{what}: the {n_fields} fields with analysed pixels are so unequal (one holds almost all, "
                        f"the rest ignored) that they count as {n_eff:.1f} fields: the fractions have no confidence "
                        "interval (ci95 and ra_percent are null); E562 statistics need several fields (>= 5)")
    elif n_fields < 5:
        warnings.append(f"{what}: only {n_fields} fields with analysed pixels; confidence intervals need several "
                        "fields (E562: >= 5)")
    elif n_eff < 5:
        warnings.append(f"{what}: the {n_fields} fields with analysed pixels count as {n_eff:.1f} fields (most hold "
                        "few analysed pixels, the rest ignored), and the confidence intervals are as wide as over "
                        f"{n_eff:.1f} fields; E562 statistics need several fields (>= 5)")

    def nz(v):
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

    summary: dict[str, Any] = {
        "phase_fractions": fractions,
        "ci95": {k_: nz(s["ci95"]) for k_, s in zip(keys, fstats)},
        "ra_percent": {k_: nz(s["ra_percent"]) for k_, s in zip(keys, fstats)},
        "field_mean_fractions": {k_: s["mean"] for k_, s in zip(keys, fstats)},
        "area_px": {k_: float(counts[i]) for k_, i in zip(keys, class_ids)},
        "area_um2": {k_: (float(counts[i]) * px * px if px is not None else None) for k_, i in zip(keys, class_ids)},
        "analysed_area_px": n_valid,
        "analysed_area_um2": n_valid * px * px if px is not None else None,
        "n_fields": n_fields,
        "point_count": {
            "method": "ASTM E562 systematic point count (emulated)",
            "points_per_field": k * k,
            "n_points": n_points_used,
            "fractions": {k_: s["mean"] for k_, s in zip(keys, pstats)},
            "ci95": {k_: nz(s["ci95"]) for k_, s in zip(keys, pstats)},
            "ra_percent": {k_: nz(s["ra_percent"]) for k_, s in zip(keys, pstats)},
        },
        "pixel_size_um": px,
        "units": "um" if px is not None else "px",
        "warnings": warnings,
    }
    table = pd.DataFrame(
        {
            "class_id": class_ids,
            "name": keys,
            "area_px": [float(counts[i]) for i in class_ids],
            "area_fraction": [fractions[k_] for k_ in keys],
            "area_fraction_ci95": [s["ci95"] for s in fstats],
            "area_fraction_ra_percent": [s["ra_percent"] for s in fstats],
            "point_fraction": [s["mean"] for s in pstats],
            "point_fraction_ci95": [s["ci95"] for s in pstats],
        }
    )
    if px is not None:
        table["area_um2"] = table["area_px"] * px * px
    return PhaseMeasurement(summary=summary, table=table, fields=pd.DataFrame(field_rows), warnings=warnings)


def combine_phase_fields(results: Sequence[PhaseMeasurement] | Sequence[dict]) -> dict:
    """E562 statistics over several images (fields) of one specimen.

    Each image's area fraction is one field value; returns per class the mean,
    s, 95 % Student-t half-width and %RA.

    Examples
    --------
    >>> a = np.zeros((10, 10), int); a[:, :3] = 1
    >>> b = np.zeros((10, 10), int); b[:, :5] = 1
    >>> out = combine_phase_fields([measure_phases(a, fields=None), measure_phases(b, fields=None)])
    >>> round(out["phase_fractions"]["1"], 3), out["n_fields"]
    (0.4, 2)
    """
    sums = [r.summary if isinstance(r, PhaseMeasurement) else r for r in results]
    if not sums:
        msg = "combine_phase_fields: no results given"
        raise ValueError(msg)
    keys: list[str] = []
    for s in sums:
        keys += [k for k in s["phase_fractions"] if k not in keys]
    stats = {k: field_statistics([s["phase_fractions"].get(k, 0.0) for s in sums]) for k in keys}
    return {
        "n_fields": len(sums),
        "phase_fractions": {k: st["mean"] for k, st in stats.items()},
        "ci95": {k: (st["ci95"] if math.isfinite(st["ci95"]) else None) for k, st in stats.items()},
        "ra_percent": {k: (st["ra_percent"] if math.isfinite(st["ra_percent"]) else None) for k, st in stats.items()},
        "sd": {k: (st["sd"] if math.isfinite(st["sd"]) else None) for k, st in stats.items()},
    }
