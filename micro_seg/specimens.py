"""Group a batch's fields (images) into specimens and compute field statistics.

ASTM E112 section 15 (and E562, E1245, E1382): over the ``n`` fields of a
specimen, report the mean, the sample standard deviation, the 95 % confidence
half-width ``t(0.975, n-1) s / sqrt(n)`` and ``%RA = 100 CI / mean``.  The grain
size number G of a specimen is computed **from the mean** of the field values of
``N_A`` (planimetric) or of the mean lineal intercept ``l``, never as the mean of
per-field G values.

Examples
--------
>>> specimen_of("steel_A/field_01.tif", group_by="folder")
'steel_A'
>>> specimen_of("S12_f3.tif", group_by=r"regex:^(S\\d+)_")
'S12'
>>> rows = specimen_table([
...     {"path": "a/1.tif", "specimen": "a", "status": "ok", "grains_per_mm2": 1984.0},
...     {"path": "a/2.tif", "specimen": "a", "status": "ok", "grains_per_mm2": 1984.0}])
>>> round(rows[0]["G_planimetric"], 2), rows[0]["n_fields"]
(8.0, 2)
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping

from micro_seg.errors import MicroSegError

__all__ = ["GroupByError", "parse_group_by", "specimen_of", "specimen_table", "FIELD_QUANTITIES"]

TOP_LEVEL_SPECIMEN = "(top level)"

# Per-field quantities averaged over a specimen's fields (exact column names or prefixes).
FIELD_QUANTITIES = (
    "grains_per_mm2",
    "mean_intercept_um",
    "mean_intercept_circles_um",
    "mean_area_um2",
    "mean_ecd_um",
    "grains_per_px2",
    "mean_intercept_px",
    "mean_area_px2",
    "defects_area_fraction",
    "defects_density_per_mm2",
    "defects_count",
    "defects_mean_ecd_um",
)
FIELD_PREFIXES = ("phase_fraction_",)
#: Quantities in pixel units: averaged over a specimen's fields only where those fields share one pixel size
#: (all at the same calibration, or all uncalibrated); their physical twins are always averaged.
PIXEL_QUANTITIES = ("grains_per_px2", "mean_intercept_px", "mean_area_px2")


class GroupByError(MicroSegError, ValueError):
    """A ``--group-by`` value is not ``folder`` or a valid ``regex:<pattern>``."""


def parse_group_by(group_by: str) -> tuple[str, re.Pattern | None]:
    """Validate a ``group_by`` value; returns ``("folder", None)`` or ``("regex", pattern)``.

    Examples
    --------
    >>> parse_group_by("folder")
    ('folder', None)
    >>> parse_group_by("regex:(?P<specimen>S[0-9]+)")[0]
    'regex'
    """
    if group_by == "folder":
        return "folder", None
    if group_by.startswith("regex:"):
        pattern = group_by[len("regex:"):]
        if not pattern:
            raise GroupByError("--group-by regex: needs a pattern, e.g. regex:^(S[0-9]+)_")
        try:
            return "regex", re.compile(pattern)
        except re.error as exc:
            raise GroupByError(f"--group-by {group_by!r}: invalid regular expression: {exc}") from exc
    raise GroupByError(f"--group-by {group_by!r}: expected 'folder' or 'regex:<pattern>'")


def specimen_of(relpath: str, *, group_by: str = "folder") -> str | None:
    """Specimen name of an image given its path relative to the batch input folder.

    ``folder``: the image's folder (``"(top level)"`` for images directly in the
    input folder).  ``regex:<pattern>``: ``re.search`` on the relative path; the
    specimen is the named group ``specimen`` if present, else group 1, else the
    whole match.  An image that does not match, or whose match is empty, belongs
    to no specimen (``None``) and is left out of the specimen statistics.
    """
    mode, pattern = parse_group_by(group_by)
    if mode == "folder":
        parent = PurePosixPath(relpath).parent.as_posix()
        return TOP_LEVEL_SPECIMEN if parent in ("", ".") else parent
    m = pattern.search(relpath)
    if m is None:
        return None
    if "specimen" in pattern.groupindex:
        name = m.group("specimen")
    else:
        name = m.group(1) if pattern.groups else m.group(0)
    return name or None  # an empty match (``(\d*)`` on a name without digits) names no specimen


def _is_field_quantity(key: str) -> bool:
    if key in FIELD_QUANTITIES:
        return True
    return any(key.startswith(p) for p in FIELD_PREFIXES) and not key.startswith(
        ("phase_fraction_ci95_", "phase_fraction_ra_percent_"))


def _finite(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def specimen_table(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row of field statistics per specimen from per-image rows.

    Parameters
    ----------
    rows : iterable of mapping, or DataFrame
        Per-image rows with ``specimen``, ``status`` and flat measurement keys
        (as in ``images.csv``; ``pandas.read_csv`` of it is taken as its rows).  Failed images and images without a specimen are
        counted but not averaged.

    Returns
    -------
    list of dict
        Sorted by specimen; keys ``specimen``, ``n_fields``, ``n_failed``,
        ``n_uncalibrated``, then for each field quantity ``q``: ``q_n`` (the
        fields with a finite value of ``q``, which the statistics are over: a
        field without any intercept has no mean intercept), ``q_mean``,
        ``q_sd``, ``q_ci95``, ``q_ra_percent`` (pixel-unit quantities only where
        the fields share one pixel size: a mean of pixel counts at 0.2 and
        0.5 um/px means nothing), and the derived
        ``G_planimetric`` (from mean ``grains_per_mm2``), ``G_intercept`` with
        ``G_intercept_ci95_low/high`` (from mean ``mean_intercept_um`` and its CI;
        where the interval of N_A or l reaches 0, the G bound it would give is
        left empty and the other one kept).
    """
    from micro_seg.measure import astm
    from micro_seg.measure.stats import field_statistics

    from micro_seg.errors import ResultsTableError

    if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # a DataFrame (pd.read_csv of images.csv) iterates
        if "specimen" in rows.columns and rows["specimen"].dtype.kind in "biuf":  # its column names, not its rows
            # pandas read the names as numbers: '007' came back as specimen 7.0 (7 without an empty cell), silently
            raise ResultsTableError("specimen_table: the specimen column was read as numbers, so names such as '007' "
                                    "or '1' are no longer as written (7.0, 1.0); read images.csv with "
                                    "pd.read_csv(path, dtype={'specimen': str})")
        rows = rows.to_dict("records")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    failed: dict[str, int] = {}
    for row in rows:
        if not isinstance(row, Mapping):
            raise ResultsTableError(f"specimen_table: a row is a {type(row).__name__}, not a mapping of column "
                                    "names to values (one per image, as in images.csv)")
        spec = row.get("specimen")
        if spec in (None, "") or (isinstance(spec, float) and math.isnan(spec)):  # an empty cell read by pandas
            continue
        if row.get("status") != "ok":
            failed[spec] = failed.get(spec, 0) + 1
            groups.setdefault(spec, [])
            continue
        groups.setdefault(spec, []).append(row)
    out = []
    for spec in sorted(groups):
        fields = groups[spec]
        rec: dict[str, Any] = {
            "specimen": spec,
            "n_fields": len(fields),
            "n_failed": failed.get(spec, 0),
            "n_uncalibrated": sum(1 for r in fields if _finite(r.get("pixel_size_um")) is None),
        }
        keys: list[str] = []
        for r in fields:
            for k in r:
                if _is_field_quantity(k) and k not in keys:
                    keys.append(k)
        stats = {}
        for k in keys:
            if k in PIXEL_QUANTITIES and len({_finite(r.get("pixel_size_um")) for r in fields
                                              if _finite(r.get(k)) is not None}) > 1:
                continue  # pixel counts at different (or unknown and known) pixel sizes do not pool
            st = field_statistics([v for v in (_finite(r.get(k)) for r in fields) if v is not None])
            stats[k] = st
            rec[f"{k}_n"] = st["n"]  # fields with a finite value: may be fewer than n_fields
            rec[f"{k}_mean"] = st["mean"]
            rec[f"{k}_sd"] = st["sd"]
            rec[f"{k}_ci95"] = st["ci95"]
            rec[f"{k}_ra_percent"] = st["ra_percent"]
        na = stats.get("grains_per_mm2", {}).get("mean")
        if na is not None and math.isfinite(na) and na > 0:
            rec["G_planimetric"] = astm.g_from_grains_per_mm2(na)
            ci = stats["grains_per_mm2"]["ci95"]
            if math.isfinite(ci):
                # an interval reaching N_A = 0 has no lower G bound (G -> -inf); its upper bound still holds
                if na - ci > 0:
                    rec["G_planimetric_ci95_low"] = astm.g_from_grains_per_mm2(na - ci)
                rec["G_planimetric_ci95_high"] = astm.g_from_grains_per_mm2(na + ci)
        lm = stats.get("mean_intercept_um", {}).get("mean")
        if lm is not None and math.isfinite(lm) and lm > 0:
            rec["G_intercept"] = astm.g_from_intercept(lm / 1000.0)
            ci = stats["mean_intercept_um"]["ci95"]
            if math.isfinite(ci):
                # a longer intercept means a smaller G: the bounds swap; an interval reaching l = 0 has no upper G
                # bound (G -> +inf), its lower bound still holds
                rec["G_intercept_ci95_low"] = astm.g_from_intercept((lm + ci) / 1000.0)
                if lm - ci > 0:
                    rec["G_intercept_ci95_high"] = astm.g_from_intercept((lm - ci) / 1000.0)
        out.append(rec)
    return out
