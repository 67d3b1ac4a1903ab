"""Join batch results to a property table per sample and fit structure -> property relations.

Nothing is dropped silently: failed images, images whose sample key cannot be
derived, result samples without a property row and property rows without
images are all returned (and the CLI prints them).

Examples
--------
>>> link("results/", "properties.csv", on="sample_id")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import re

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from micro_seg.errors import PropertyTableError
from micro_seg.measure import astm
from micro_seg.measure.stats import field_statistics
from micro_seg.properties.hall_petch import RELATIONS, check_grain_size_spread, fit_hall_petch
from micro_seg.properties.regression import fit_linear
from micro_seg.properties.tables import (
    RESULT_ID_COLUMNS, is_specimen_table, numeric_column, parse_unit, read_property_table, read_results, sample_keys,
)

__all__ = ["LinkResult", "aggregate_samples", "specimen_samples", "link", "choose_property"]

GRAIN_SIZE_COLUMNS = ("mean_intercept_um", "mean_ecd_um", "mean_diameter_um")


def _g_intercept(mean_intercept_um: float) -> float:
    return astm.g_from_intercept(mean_intercept_um / 1000.0)


def _g_area(mean_area_um2: float) -> float:
    return astm.g_from_mean_area(mean_area_um2 * 1e-6)


#: A sample's ASTM E112 grain size number is computed from the mean over its fields of the quantity it comes
#: from, never as the mean of the fields' G numbers (E112 section 15): G column -> (field quantity, G of its mean).
G_FROM_MEAN = {
    "G_intercept": ("mean_intercept_um", _g_intercept),
    "G_intercept_circles": ("mean_intercept_circles_um", _g_intercept),
    "G_planimetric": ("grains_per_mm2", astm.g_from_grains_per_mm2),
    "G_area": ("mean_area_um2", _g_area),
}


def _is_g_column(column: str) -> bool:
    """A grain size number column (``G_intercept``, ``ala_G``, ...), not its CI bounds."""
    return (column.startswith("G_") or column == "ala_G") and "ci95" not in column


def _sample_g(agg: pd.DataFrame, column: str) -> pd.DataFrame:
    """``sample`` and the G ``column`` from the per-sample mean of its field quantity (a frame of
    :func:`aggregate_samples` / :func:`specimen_samples` for that quantity)."""
    quantity, to_g = G_FROM_MEAN[column]
    g = [to_g(m) if np.isfinite(m) and m > 0 else np.nan for m in agg[quantity].to_numpy(dtype=float)]
    return pd.DataFrame({"sample": agg["sample"].to_numpy(), column: g})


@dataclass
class LinkResult:
    """Joined per-sample table, the fit, and everything that did not match."""

    samples: pd.DataFrame
    fit: object | None
    summary: dict
    property_column: str | None = None
    warnings: list[str] = field(default_factory=list)


def _is_physical(column: str) -> bool:
    """A quantity in micrometres or millimetres: uncalibrated fields do not have it."""
    return "_um" in column or "_mm" in column


def _uncalibrated_fields(df: pd.DataFrame) -> np.ndarray:
    """Fields (rows of images.csv) without a pixel size; none when the table has no ``pixel_size_um`` column."""
    if "pixel_size_um" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return ~np.isfinite(pd.to_numeric(df["pixel_size_um"], errors="coerce").to_numpy(dtype=float))


def _missing_error(source: str, column: str, samples, *, uncalibrated: bool) -> PropertyTableError:
    """Why samples have no ``column`` value: uncalibrated fields (no micrometres), or nothing measured at all."""
    if uncalibrated:
        return PropertyTableError(f"{source}: {column} is missing for images of sample(s) {_ids(samples)} "
                                  "(uncalibrated images give no grain size in micrometres: re-run with --pixel-size)")
    return PropertyTableError(f"{source}: no field of sample(s) {_ids(samples)} has a {column} value (nothing was "
                              "measured, e.g. no intercept in any field): leave these samples out or re-measure them")


#: Columns micro-seg began to write after batches had been measured without them, each with a column that every
#: row (field) having the measurement has too: a field with that companion but not the column was measured by an
#: earlier micro-seg (a batch resumed in its output folder keeps such rows as they are).
_RECORDED_WITH = {"mean_ecd_um": "mean_area_um2"}


def _predates_error(source: str, column: str, samples, n_fields: int) -> PropertyTableError:
    companion = _RECORDED_WITH[column]
    return PropertyTableError(
        f"{source}: {column} is missing in {n_fields} field(s) of sample(s) {_ids(samples)} that have {companion}: "
        f"they were measured by an earlier micro-seg, which did not record {column} (a batch resumed in the same "
        f"output folder keeps such fields as they are); run the batch again into a new output folder, or use "
        f"another grain size (e.g. mean_intercept_um)")


def aggregate_samples(df: pd.DataFrame, keys: pd.Series, column: str, *, source: str = "results") -> pd.DataFrame:
    """Per-sample field statistics of ``column``: n, mean, s, 95% CI (Student t), %RA, standard error.

    As in ``specimens.csv``, a calibrated field without a value (no intercept
    measured in it) is left out and ``n_fields`` counts the fields that have
    one (:func:`partial_samples` lists the samples concerned); a quantity in
    micrometres is refused for a sample with uncalibrated fields, and any
    quantity for a sample where no field has a value.
    """
    companion = _RECORDED_WITH.get(column)
    if companion is not None and column not in df.columns and companion in df.columns:
        values = np.full(len(df), np.nan)  # a table of an earlier micro-seg: said below, field by field
    else:
        values = numeric_column(df, column, source=source)
    older = (np.isnan(values) & np.isfinite(numeric_column(df, companion, source=source))
             if companion is not None and companion in df.columns else np.zeros(len(df), dtype=bool))
    frame = pd.DataFrame({"sample": keys.to_numpy(), "v": values, "uncal": _uncalibrated_fields(df), "older": older})
    frame = frame[frame["sample"].notna()]
    blank = frame["v"].isna()
    uncalibrated = sorted(set(frame.loc[blank & frame["uncal"], "sample"].astype(str))) if _is_physical(column) else []
    if uncalibrated:
        raise _missing_error(source, column, uncalibrated, uncalibrated=True)
    if frame["older"].any():
        raise _predates_error(source, column, sorted(set(frame.loc[frame["older"], "sample"].astype(str))),
                              int(frame["older"].sum()))
    empty = sorted(str(k) for k, v in frame.groupby("sample")["v"] if v.isna().all())
    if empty:
        raise _missing_error(source, column, empty, uncalibrated=False)
    frame = frame[~blank]
    rows = []
    for key, grp in frame.groupby("sample", sort=True):
        st = field_statistics(grp["v"].to_numpy())
        rows.append({
            "sample": str(key), "n_fields": st["n"], column: st["mean"], f"{column}_sd": st["sd"],
            f"{column}_ci95": st["ci95"], f"{column}_se": st["sd"] / np.sqrt(st["n"]),
            f"{column}_pct_ra": st["ra_percent"],
        })
    return pd.DataFrame(rows)


def specimen_samples(df: pd.DataFrame, column: str, *, source: str = "specimens.csv") -> pd.DataFrame:
    """Per-sample statistics of ``column`` from a batch's ``specimens.csv``, as :func:`aggregate_samples` gives them.

    ``specimens.csv`` holds, per specimen, ``n_fields`` and ``<column>_n``,
    ``_mean``, ``_sd``, ``_ci95`` and ``_ra_percent`` over the fields; ``_n``
    counts the fields that have a value (a field without any intercept has no
    mean intercept), so the standard error is ``sd / sqrt(<column>_n)`` and the
    output's ``n_fields`` is that count (tables written before ``_n`` existed:
    ``n_fields``).  Specimens without a successful field are left
    out.  A quantity in micrometres or millimetres is refused for a specimen
    with uncalibrated fields (its statistics would not cover all ``n_fields``).

    Examples
    --------
    >>> t = pd.DataFrame({"specimen": ["A"], "n_fields": [4], "n_uncalibrated": [0],
    ...                   "mean_intercept_um_mean": [10.0], "mean_intercept_um_sd": [2.0]})
    >>> specimen_samples(t, "mean_intercept_um")[["sample", "n_fields", "mean_intercept_um", "mean_intercept_um_se"]]
      sample  n_fields  mean_intercept_um  mean_intercept_um_se
    0      A         4               10.0                   1.0
    """
    mean_col = f"{column}_mean"
    companion = _RECORDED_WITH.get(column)
    if companion is not None and f"{companion}_n" in df.columns:
        # fields of the specimen with the companion but not the column: measured by an earlier micro-seg
        n_with = numeric_column(df, f"{companion}_n", source=source, id_column="specimen")
        n_col = (numeric_column(df, f"{column}_n", source=source, id_column="specimen")
                 if f"{column}_n" in df.columns else np.zeros(len(df)))
        older = np.nan_to_num(n_with) - np.nan_to_num(n_col)
        if (older > 0).any():
            raise _predates_error(source, column, df.loc[older > 0, "specimen"].astype(str), int(older[older > 0].sum()))
    if mean_col not in df.columns:
        hint = _older_specimens_hint(df, column)
        raise PropertyTableError(f"{source}: no column {mean_col!r} (the specimen mean of {column})"
                                 f"{'; ' + hint if hint else ''}; columns are: {', '.join(map(str, df.columns))}")
    n = numeric_column(df, "n_fields", source=source, id_column="specimen")
    df = df[n > 0].sort_values("specimen", key=lambda c: c.astype(str))
    n = numeric_column(df, "n_fields", source=source, id_column="specimen")

    def stat(suffix: str) -> np.ndarray:
        col = f"{column}_{suffix}"
        return numeric_column(df, col, source=source, id_column="specimen") if col in df.columns else np.full(len(df), np.nan)

    mean = stat("mean")
    specimens = df["specimen"].astype(str)
    uncalibrated = numeric_column(df, "n_uncalibrated", source=source) if "n_uncalibrated" in df.columns else np.zeros(len(df))
    missing = (uncalibrated > 0) & _is_physical(column)  # absent for uncalibrated fields
    if missing.any():
        raise _missing_error(source, column, specimens[missing], uncalibrated=True)
    if np.isnan(mean).any():
        raise _missing_error(source, column, specimens[np.isnan(mean)], uncalibrated=False)
    sd = stat("sd")
    n_col = f"{column}_n"
    if n_col in df.columns:  # the fields the statistics are over
        n = numeric_column(df, n_col, source=source, id_column="specimen")
    return pd.DataFrame({
        "sample": specimens.to_numpy(), "n_fields": n.astype(int), column: mean, f"{column}_sd": sd,
        f"{column}_ci95": stat("ci95"), f"{column}_se": sd / np.sqrt(n), f"{column}_pct_ra": stat("ra_percent"),
    })


def _older_specimens_hint(df: pd.DataFrame, column: str) -> str | None:
    """Why a calibrated batch's specimens.csv may lack the statistics of a field quantity: micro-seg added some
    after the file was written (``mean_intercept_circles_um``); a batch run rewrites it from the fields."""
    from micro_seg.specimens import FIELD_QUANTITIES

    if column in FIELD_QUANTITIES and any(str(c).endswith("_um_mean") for c in df.columns):
        return ("a specimens.csv written by an earlier micro-seg lacks some field statistics: running the batch again "
                "into the same output folder rewrites it (finished images are not measured again), or link the "
                "batch folder or its images.csv")
    return None


def _per_sample(column: str, aggregate, *, available, source: str, hint=lambda c: None) -> pd.DataFrame:
    """``sample`` and the per-sample value of predictor ``column``: ``aggregate(c)`` gives a quantity's
    per-sample statistics, ``available(c)`` whether the results have it.  A G number comes from the
    mean of its field quantity (:data:`G_FROM_MEAN`); other G numbers are refused, never averaged."""
    if column in G_FROM_MEAN:
        quantity = G_FROM_MEAN[column][0]
        if not available(quantity):
            raise PropertyTableError(
                f"{source}: predictor {column}: a sample's G is computed from the mean {quantity} of its fields "
                f"(ASTM E112: G numbers are not averaged), and there is no {quantity} column "
                f"({hint(quantity) or 'was the batch calibrated?'})")
        return _sample_g(aggregate(quantity), column)
    if _is_g_column(column):
        raise PropertyTableError(
            f"{source}: predictor {column}: G numbers of fields are not averaged (ASTM E112); use one of "
            f"{', '.join(G_FROM_MEAN)} (each computed from the mean of its field quantity) or that quantity itself")
    return aggregate(column)[["sample", column]]


def partial_samples(df: pd.DataFrame, keys: pd.Series, column: str) -> list[str]:
    """Samples of images.csv some of whose fields have no ``column`` value (left out by :func:`aggregate_samples`)."""
    if column not in df.columns:
        return []
    blank = pd.to_numeric(df[column], errors="coerce").isna().to_numpy() & keys.notna().to_numpy()
    return sorted(set(keys[blank].astype(str)))


def _partial_specimens(df: pd.DataFrame, column: str, *, source: str) -> list[str]:
    """Specimens whose ``column`` statistics are over fewer fields than they have (``<column>_n < n_fields``)."""
    n_col = f"{column}_n"
    if n_col not in df.columns:
        return []
    n = numeric_column(df, "n_fields", source=source, id_column="specimen")
    k = numeric_column(df, n_col, source=source, id_column="specimen")
    return sorted(df.loc[(n > 0) & (k < n), "specimen"].astype(str))


def _partial_warning(column: str, samples: list[str], what: str) -> str:
    return (f"{column} comes from only some fields of {what} {_ids(samples)} (fields without a value, e.g. without "
            "any intercept, are left out; its CI is over the fields that have one)")


def _ids(ids, limit: int = 10) -> str:
    """Sample ids for a message: all of them when few, else the first ``limit`` and a count."""
    ids = [str(i) for i in ids]
    return ", ".join(ids) if len(ids) <= limit else f"{', '.join(ids[:limit])} and {len(ids) - limit} more"


def choose_property(props: pd.DataFrame, relation: str, name: str | None, *, exclude: set[str], source: str) -> tuple[str, str]:
    """Pick the property column (and its unit) to fit; refuse a column without a unit."""
    if name is not None:
        if name not in props.columns:
            raise PropertyTableError(f"{source}: no property column {name!r}; columns are: {', '.join(props.columns)}")
        _, unit = parse_unit(name)
        if unit is None:
            raise PropertyTableError(
                f"{source}: property column {name!r} has no unit; name it like 'yield_strength_MPa' or 'yield strength [MPa]'"
            )
        return name, unit
    hint = {"hall-petch": ("yield", "proof", "rp0"), "hardness": ("hard", "hv")}.get(relation, ())
    candidates = [c for c in props.columns if c not in exclude and any(h in c.lower() for h in hint)]
    if len(candidates) != 1:
        raise PropertyTableError(
            f"{source}: cannot tell which column to fit (candidates: {candidates or 'none'}); name it with --property"
        )
    return choose_property(props, relation, candidates[0], exclude=exclude, source=source)


#: Stress units converted to MPa for Hall-Petch (so k is in MPa·m^0.5): MPa per unit.
TO_MPA = {"MPa": 1.0, "N/mm2": 1.0, "N/mm^2": 1.0, "MN/m2": 1.0, "MN/m^2": 1.0, "Pa": 1e-6, "kPa": 1e-3,
          "GPa": 1e3, "psi": 6.894757e-3, "ksi": 6.894757, "kgf/mm2": 9.80665, "kgf/mm^2": 9.80665}


def _is_hardness_name(column: str) -> bool:
    """A column named as a hardness (a word ending 'hardness': hardness, nanohardness, Vickers_hardness), not a
    yield strength of a hardened state.

    >>> [c for c in ("hardness_GPa", "nanohardness [MPa]", "work_hardened_yield_MPa", "yield_MPa") if _is_hardness_name(c)]
    ['hardness_GPa', 'nanohardness [MPa]']
    """
    words = re.split(r"[^a-z0-9]+", parse_unit(column)[0].lower())
    return any(w.endswith("hardness") for w in words)


def stress_unit(unit: str | None) -> str | None:
    """The :data:`TO_MPA` spelling of a stress unit as tables write it (any case, ``²`` for ``2``, spaces),
    or ``None`` for a unit that is not a stress (``HV10``, ``%``).

    >>> [stress_unit(u) for u in ("MPa", "Mpa", "N/mm²", "N mm^-2", "KSI", "HV10", "%")]
    ['MPa', 'MPa', 'N/mm2', 'N/mm2', 'ksi', None, None]
    """
    if unit is None:
        return None
    u = str(unit).replace("²", "2").replace("⁻", "-").replace(" ", "").replace("·", "").lower()
    u = {"nmm-2": "n/mm2", "nmm^-2": "n/mm2", "mnm-2": "mn/m2", "mnm^-2": "mn/m2", "kgmm-2": "kgf/mm2",
         "kg/mm2": "kgf/mm2", "kp/mm2": "kgf/mm2"}.get(u, u)
    return next((k for k in TO_MPA if k.lower() == u), None)
#: Strengths above this (MPa) are implausible for a metal: a unit is probably wrong.
IMPLAUSIBLE_MPA = 1e5


def _strength_in_mpa(joined: pd.DataFrame, column: str, unit: str, y: np.ndarray
                     ) -> tuple[pd.DataFrame, str, str, np.ndarray]:
    """Strength values in MPa: a ``_Pa``/``_kPa``/``_GPa``/``_psi``/``_ksi`` (or ``N/mm2``) column is
    converted into a new ``<name>_MPa`` column of ``joined`` (1 ksi = 6.894757 MPa); MPa and units that
    are not stresses are returned unchanged.

    >>> t = pd.DataFrame({"yield_strength_ksi": [50.0]})
    >>> _, col, unit, y = _strength_in_mpa(t, "yield_strength_ksi", "ksi", np.array([50.0]))
    >>> col, unit, round(float(y[0]), 3)
    ('yield_strength_MPa', 'MPa', 344.738)
    """
    factor = TO_MPA.get(unit)
    if factor is None or unit == "MPa":
        return joined, column, unit, y
    new = f"{parse_unit(column)[0]}_MPa"
    if new in joined.columns:
        new = f"{column}_in_MPa"
    y = y * factor
    return joined.assign(**{new: y}), new, "MPa", y


#: Columns ending ``_um`` that are not a grain size (a calibration, a test-line length, an uncertainty).
_NOT_GRAIN_SIZE = ("pixel_size_um", "test_line_length_um")


@contextlib.contextmanager
def _why_samples_are_missing(notes: list[str], source: str, results_source: str):
    """A refused fit names the two tables joined and says which matched samples were left out (blank property
    cells)."""
    try:
        yield
    except PropertyTableError as exc:
        msg = f"{results_source} joined with {source}: {exc}"
        raise PropertyTableError(msg + (f"; {source}: " + "; ".join(notes) if notes else "")) from None


def _is_grain_size_column(column: str) -> bool:
    """A length in micrometres that can serve as d (``mean_intercept_um``, ``mean_intercept_circles_um``).

    >>> [c for c in ("mean_intercept_um", "G_intercept", "mean_area_um2", "mean_intercept_px", "pixel_size_um")
    ...  if _is_grain_size_column(c)]
    ['mean_intercept_um']
    """
    return (column.endswith("_um") and column not in _NOT_GRAIN_SIZE and "ci95" not in column
            and not column.endswith("_se_um"))


def check_d_column(d: str, res: pd.DataFrame, *, specimens: bool, source: str) -> None:
    """Refuse a d that is not a grain-size length in micrometres (a G number, a count, an area, pixels):
    Hall-Petch's k would come out in the wrong units.  The message lists the suitable columns."""
    if _is_grain_size_column(d) or (f"{d}_mean" if specimens else d) not in res.columns:
        return  # a missing column is reported where it is read
    names = [str(c)[: -len("_mean")] if specimens else str(c) for c in res.columns
             if not specimens or str(c).endswith("_mean")]
    suitable = sorted(c for c in names if _is_grain_size_column(c))
    raise PropertyTableError(
        f"{source}: --d {d}: not a grain size in micrometres (d must be a length column ending _um, "
        f"not _um2 or _px); suitable columns: {', '.join(suitable) or 'none (was the batch calibrated?)'}")


def _match_by_number(result_ids: set[str], props: pd.DataFrame, on: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Pair ids that match by whole number only (results ``01`` <-> properties ``1``: a spreadsheet drops leading
    zeros) among those that match nothing by text, when the pairing is one-to-one; returns the property table with
    those ids renamed to the results' and ``{property id: result id}``.

    >>> t = pd.DataFrame({"id": ["1", "2", "7"], "y": [1, 2, 3]})
    >>> _match_by_number({"01", "02", "7", "x"}, t, "id")[1]
    {'1': '01', '2': '02'}
    >>> _match_by_number({"01"}, pd.DataFrame({"id": ["2\u00b2"], "y": [1]}), "id")[1]  # '2²' is no number
    {}
    """
    prop_ids = set(props[on])
    spare_results = sorted(r for r in result_ids - prop_ids if r.isdecimal() and r.isascii())
    spare_props = sorted(p for p in prop_ids - result_ids if p.isdecimal() and p.isascii())
    by_value: dict[int, tuple[list[str], list[str]]] = {}
    for r in spare_results:
        by_value.setdefault(int(r), ([], []))[0].append(r)
    for p in spare_props:
        by_value.setdefault(int(p), ([], []))[1].append(p)
    renamed = {ps[0]: rs[0] for _, (rs, ps) in sorted(by_value.items()) if len(rs) == 1 and len(ps) == 1}
    if not renamed:
        return props, {}
    return props.assign(**{on: props[on].map(lambda v: renamed.get(v, v))}), renamed


def link(
    results: str | Path,
    properties: str | Path,
    *,
    on: str,
    relation: str = "hall-petch",
    property: str | None = None,
    d: str = "mean_intercept_um",
    mapping: str = "folder",
    predictors: list[str] | None = None,
) -> LinkResult:
    """Aggregate batch results per sample, join them to a property table and fit a relation.

    Parameters
    ----------
    results : path
        Batch output folder, its ``images.csv`` or its ``specimens.csv``
        (one row per specimen; its ``<column>_mean`` columns give d).
    properties : path
        Property table (CSV/XLSX/Parquet).
    on : str
        The property table's sample-id column.
    relation : {"hall-petch", "hardness", "linear"}
        ``linear`` fits the property on ``predictors`` (columns of the joined
        table: structure measures and processing columns) with a
        leave-one-out cross-validated error.  A G-number predictor
        (``G_intercept``, ``G_planimetric``, ``G_area``) is computed per sample
        from the mean of its field quantity (mean intercept, N_A, mean area), as
        ASTM E112 requires, from images.csv and specimens.csv alike.
    d : str
        Grain-size column of the results used as d (mean lineal intercept by default).
    mapping : str
        How an image is assigned to a sample (see :func:`sample_keys`).

    Matched samples without a property value (empty, NaN or infinite cell)
    are not fitted and each cause gives one warning.  For ``hall-petch`` and
    ``hardness`` a property value <= 0 is refused (strength and hardness are
    positive), as is a single grain size (two give a warning).
    """
    if relation not in (*RELATIONS, "linear"):
        raise PropertyTableError(f"unknown relation {relation!r}; choose hall-petch, hardness or linear")
    for name, given in (("results", results), ("properties", properties)):
        if not isinstance(given, (str, os.PathLike)):  # a DataFrame was pathlib's bare TypeError
            raise PropertyTableError(f"link: {name} must be a path (a batch output folder or its images.csv; a "
                                     f"property table file), got a {type(given).__name__}: write it first "
                                     "(df.to_csv(path, index=False)), so that its units and ids are read as "
                                     "the file's are")
    id_columns = RESULT_ID_COLUMNS + ((mapping[len("column:"):],) if mapping.startswith("column:") else ())
    res, res_source = read_results(results, id_columns=id_columns)
    props = read_property_table(properties, id_columns=(on,))
    psource = str(properties)
    if on not in props.columns:
        raise PropertyTableError(f"{psource}: no sample-id column {on!r}; columns are: {', '.join(props.columns)}")
    ids = props[on]
    if ids.isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(ids.isna().to_numpy())]
        raise PropertyTableError(f"{psource}: empty sample id in column {on!r} at row(s) {rows}")
    ids = ids.astype(str).str.strip()
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise PropertyTableError(f"{psource}: duplicated sample id(s) in column {on!r}: {', '.join(dup)}")
    props = props.assign(**{on: ids})

    if relation != "linear":
        check_d_column(d, res, specimens=is_specimen_table(res), source=res_source)
    failed = []
    warnings = []
    if is_specimen_table(res):
        if mapping != "folder":
            raise PropertyTableError(f"{res_source}: sample mapping {mapping!r} needs the per-image images.csv; "
                                     "specimens.csv already has one row per specimen")
        n_failed = int(np.nansum(numeric_column(res, "n_failed", source=res_source))) if "n_failed" in res.columns else 0
        if n_failed:
            warnings.append(f"{n_failed} image(s) failed in the batch and are not in the specimen statistics "
                            "(see images.csv)")
        unmapped = []
        columns = [d] + [c for c in (predictors or []) if c != d and (f"{c}_mean" in res.columns or _is_g_column(c))]
        agg = specimen_samples(res, d, source=res_source)
        if agg.empty:
            raise PropertyTableError(f"{res_source}: no specimen has a successfully processed image to link")
        for column in dict.fromkeys(G_FROM_MEAN[c][0] if c in G_FROM_MEAN else c for c in columns):
            partial = _partial_specimens(res, column, source=res_source)
            if partial:
                warnings.append(_partial_warning(column, partial, "specimen(s)"))
        for extra in columns[1:]:
            agg = agg.merge(_per_sample(extra, lambda c: specimen_samples(res, c, source=res_source),
                                        available=lambda c: f"{c}_mean" in res.columns, source=res_source,
                                        hint=lambda c: _older_specimens_hint(res, c)),
                            on="sample")
    else:
        if "status" in res.columns:
            bad = res["status"].astype(str) != "ok"
            failed = res.loc[bad, "path"].astype(str).tolist() if "path" in res.columns else []
            res = res[~bad]
        if res.empty:
            raise PropertyTableError(f"{res_source}: no successfully processed images to link")
        keys = sample_keys(res, mapping=mapping, source=res_source)
        unmapped = res.loc[keys.isna(), "path"].astype(str).tolist() if "path" in res.columns else []
        if keys.isna().all():
            example = f" (e.g. {unmapped[0]})" if unmapped else ""
            raise PropertyTableError(f"{res_source}: sample mapping \"{mapping}\" gives no image a sample{example}: "
                                     "check the pattern or column against the image paths")
        columns = [d] + [c for c in (predictors or []) if c != d and (c in res.columns or _is_g_column(c))]
        agg = aggregate_samples(res, keys, d, source=res_source)
        for column in dict.fromkeys(G_FROM_MEAN[c][0] if c in G_FROM_MEAN else c for c in columns):
            partial = partial_samples(res, keys, column)
            if partial:
                warnings.append(_partial_warning(column, partial, "sample(s)"))
        for extra in columns[1:]:
            agg = agg.merge(_per_sample(extra, lambda c: aggregate_samples(res, keys, c, source=res_source),
                                        available=lambda c: c in res.columns, source=res_source),
                            on="sample")

    props, renamed = _match_by_number(set(agg["sample"]), props, on)
    if renamed:
        pairs = ", ".join(f"{r} = {p}" for p, r in sorted(renamed.items(), key=lambda kv: kv[1])[:5])
        warnings.append(f"{len(renamed)} sample id(s) matched by number, not by text ({pairs}"
                        f"{', ...' if len(renamed) > 5 else ''}): {psource} has them without leading zeros "
                        "(a spreadsheet stores 01 as 1)")
    result_ids, prop_ids = set(agg["sample"]), set(props[on])
    joined = agg.merge(props, left_on="sample", right_on=on, how="inner")
    summary: dict = {
        "n_matched": int(len(joined)),
        "unmatched": sorted((result_ids - prop_ids) | (prop_ids - result_ids)),
        "unmatched_results": sorted(result_ids - prop_ids),
        "unmatched_properties": sorted(prop_ids - result_ids),
        "failed_images": failed,
        "unmapped_images": unmapped,
        "d": d,
        "mapping": mapping,
    }
    if summary["unmatched"]:
        warnings.append(f"{len(summary['unmatched'])} sample id(s) matched on one side only: {', '.join(summary['unmatched'])}")
    if joined.empty:
        raise PropertyTableError(
            f"no sample of {res_source} matches column {on!r} of {psource} "
            f"(results have {sorted(result_ids)[:5]}, the table has {sorted(prop_ids)[:5]})"
        )

    prop_col, unit = choose_property(props, relation if relation != "linear" else "hall-petch", property,
                                     exclude={on}, source=psource)
    y = numeric_column(joined, prop_col, source=psource, id_column=on)
    if relation == "hall-petch":  # k in MPa·m^0.5 whatever the table's stress unit
        stress = stress_unit(unit)
        if stress is None:  # a hardness or another property under sigma0 / k would not be in MPa (the contract)
            raise PropertyTableError(
                f"{psource}: column {prop_col!r} is in {unit}, not a stress unit micro-seg knows: a Hall-Petch fit "
                f"is of a yield strength (sigma0 in MPa, k in MPa·m^0.5) and needs a strength column in "
                f"{', '.join(TO_MPA)}; fit a hardness with --relation hardness, another property with --relation linear")
        if _is_hardness_name(prop_col):  # a hardness in a stress unit (GPa by nanoindentation)
            raise PropertyTableError(
                f"{psource}: column {prop_col!r} is a hardness (by its name), not a yield strength: a Hall-Petch fit "
                f"would report it as sigma0 and k of a yield strength; fit it with --relation hardness (H0 and k in "
                f"{unit} and {unit}·m^0.5)")
        if stress != unit and stress.lower() == unit.strip().lower():  # 'Mpa', 'mPa' (millipascal), 'KSI'
            warnings.append(f"{psource}: column {prop_col!r}: its unit {unit!r} is read as {stress}")
        joined, prop_col, unit, y = _strength_in_mpa(joined, prop_col, stress, y)
        finite = y[np.isfinite(y)]
        if finite.size and np.max(np.abs(finite)) > IMPLAUSIBLE_MPA:
            warnings.append(f"{psource}: column {prop_col!r} has strengths up to {np.max(np.abs(finite)):.4g} MPa, "
                            f"implausible for a metal (> {IMPLAUSIBLE_MPA:g} MPa): check the column's unit")
    dropped_notes = []
    for dropped, what in ((np.isnan(y), "no"), (np.isinf(y), "an infinite")):
        if dropped.any():
            dropped_notes.append(f"{int(dropped.sum())} matched sample(s) have {what} {prop_col} value and are not "
                                 f"fitted: {_ids(joined.loc[dropped, 'sample'])}")
    warnings.extend(dropped_notes)
    keep = np.isfinite(y)
    if relation != "linear":
        impossible = keep & (y <= 0)
        if impossible.any():
            i = int(np.flatnonzero(impossible)[0])
            raise PropertyTableError(
                f"{psource}: column {prop_col!r} has {int(impossible.sum())} value(s) <= 0 (first: {y[i]:g} at sample "
                f"{joined[on].iloc[i]!r}); a {RELATIONS[relation][1]} is positive: correct or remove these rows"
            )
    fitted = joined[keep]
    if relation == "linear":
        names = predictors or [d]
        x = np.column_stack([numeric_column(fitted, c, source="joined table") for c in names])
        with _why_samples_are_missing(dropped_notes, psource, res_source):
            fit = fit_linear(x, y[keep], names=names)
        ci = fit.ci95()
        from micro_seg.jsonable import to_jsonable

        # JSON data as HallPetchFit.as_dict() gives it: the r2 of a property with one value for all samples is None
        summary["fit"] = to_jsonable({
            "relation": "linear", "property": prop_col, "coefficients": dict(zip(fit.names, fit.coef.tolist())),
            "ci95": dict(zip(fit.names, ci.tolist())), "r2": fit.r2, "cv_rmse": fit.cv_rmse,
            "residual_std": fit.resid_std, "n": fit.n, "units": {"property": unit},
        })
        pred = fit.predict(x)
    else:
        spread = check_grain_size_spread(fitted[d].to_numpy(dtype=float), d=d, relation=relation, source=res_source)
        if spread:
            warnings.append(spread)
        se_col = f"{d}_se"
        d_se = fitted[se_col].to_numpy() if se_col in fitted and np.all(np.isfinite(fitted[se_col])) else None
        with _why_samples_are_missing(dropped_notes, psource, res_source):
            fit = fit_hall_petch(fitted[d].to_numpy(), y[keep], relation=relation, d=d,
                                 property_name=parse_unit(prop_col)[0], property_unit=unit, d_se_um=d_se)
        summary["fit"] = fit.as_dict()
        pred = fit.predict(fitted[d].to_numpy(), d_se_um=d_se)
        k_unit = summary["fit"]["units"]["k"]
        if fit.k <= 0:  # finer grains are stronger / harder: a k <= 0 is a pairing mistake or noise, not a material
            warnings.append(f"k = {fit.k:.3g} ± {fit.k_ci95:.3g} {k_unit} is not positive: over these samples the "
                            f"{prop_col} does not rise as grains get finer (a Hall-Petch k is positive); check that "
                            "the values are paired with the right samples")
        elif fit.k - fit.k_ci95 <= 0:
            warnings.append(f"k = {fit.k:.3g} ± {fit.k_ci95:.3g} {k_unit}: its 95% CI includes 0, so these samples do "
                            "not show a grain-size effect with confidence (more samples or a wider spread of grain "
                            "sizes would)")
    joined = joined.copy()
    joined["predicted"] = np.nan
    joined["predicted_ci95"] = np.nan
    joined.loc[keep, "predicted"] = pred["mean"]
    joined.loc[keep, "predicted_ci95"] = pred["ci95"]
    summary["warnings"] = warnings
    return LinkResult(samples=joined, fit=fit, summary=summary, property_column=prop_col, warnings=warnings)
