"""Property tables and batch results: reading, units, sample matching.

Property tables (CSV, XLSX, Parquet) have one row per sample: a sample-id
column, optional processing columns (anneal temperature, time, ...) and
property columns whose unit is part of the column name —
``yield_strength_MPa``, ``yield strength [MPa]``, ``hardness (HV)``.  A
property column without a recognisable unit is refused: numbers without
units are how wrong conclusions are drawn.

Examples
--------
>>> parse_unit("yield_strength [MPa]")
('yield_strength', 'MPa')
>>> parse_unit("hardness_HV10")
('hardness', 'HV10')
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from micro_seg.errors import InputFileNotFoundError, PropertyTableError

__all__ = ["read_property_table", "parse_unit", "numeric_column", "read_results", "is_specimen_table", "sample_keys",
           "id_strings", "RESULT_ID_COLUMNS"]

#: Columns of batch results that identify an image or a specimen: always read as text.
RESULT_ID_COLUMNS = ("path", "specimen")

KNOWN_UNITS = (
    "MPa", "GPa", "kPa", "Pa", "ksi", "psi", "N/mm2", "N/mm^2", "N/mm²", "MN/m2", "MN/m^2", "kgf/mm2",
    "HV", "HV0.1", "HV0.5", "HV1", "HV5", "HV10", "HV30", "HRC", "HRB", "HB", "HBW",
    "J", "J/cm2", "%", "pct", "um", "mm", "nm", "degC", "C", "K", "h", "min", "s",
    "MPa*m^0.5", "MPa·m^0.5", "W/mK", "uOhm*cm",
)
_BRACKET = re.compile(r"^(?P<name>.*?)\s*[\[(](?P<unit>[^\])]+)[\])]\s*$")


def parse_unit(column: str) -> tuple[str, str | None]:
    """Split a column name into (name, unit); unit is None when none is recognisable."""
    col = str(column).strip()
    m = _BRACKET.match(col)
    if m:
        return m.group("name").strip(" _"), m.group("unit").strip()
    for unit in sorted(KNOWN_UNITS, key=len, reverse=True):
        for sep in ("_", " "):
            if col.endswith(sep + unit):
                return col[: -len(unit) - 1].strip(" _"), unit
    return col, None


def id_strings(values: pd.Series) -> pd.Series:
    """Sample ids as text: text stays as written (``'01'`` is not ``'1'``), a number read as a float because
    of an empty cell loses its ``.0`` (``1.0`` -> ``'1'``), an empty cell stays missing.

    Examples
    --------
    >>> id_strings(pd.Series(["01", "1", " A "])).tolist()
    ['01', '1', 'A']
    >>> id_strings(pd.Series([1.0, 2.0, None])).tolist()
    ['1', '2', nan]
    """
    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return np.nan
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    return pd.Series([one(v) for v in values], index=values.index, dtype=object, name=values.name)


def _with_text_ids(df: pd.DataFrame, read, id_columns) -> pd.DataFrame:
    """``df`` with its id columns re-read by ``read(usecols=..., dtype=str, keep_default_na=False)``: a sample named
    ``NA``, ``None`` or ``null`` is that sample, not a missing id (pandas' default reading); an empty cell stays
    missing. Header names are matched without the spaces around them, as the table's columns are named."""
    present = [c for c in df.columns if str(c).strip() in id_columns]
    if present:
        raw = read(usecols=present, dtype=str, keep_default_na=False)
        for c in present:
            df[c] = raw[c].where(raw[c].str.strip() != "", np.nan)
    return df


def _read_text_table(path: Path, sep: str | None = None, *, id_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    r"""A CSV / TSV as spreadsheets save it: UTF-8 (with or without BOM), else Windows-1252 (Excel's "CSV" on
    Windows); the delimiter (comma, semicolon or tab) from the header line unless ``sep`` is given, and with
    semicolons the decimal comma of the locales that use them (``3,5`` is 3.5).

    Examples
    --------
    >>> import tempfile, os
    >>> fn = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(fn, "wb").write("Probe;Rp0,2_MPa\nSt\xe4hl 1;312,5\n".encode("cp1252"))
    >>> _read_text_table(Path(fn)).to_dict("records")
    [{'Probe': 'Stähl 1', 'Rp0,2_MPa': 312.5}]
    """
    import io

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    if sep is None:
        header = next((line for line in text.splitlines() if line.strip()), "")
        counts = {d: header.count(d) for d in (",", ";", "\t")}
        # a tie goes to the semicolon: commas turn up inside names where semicolons delimit ("Rp0,2_MPa")
        sep = max(counts, key=lambda d: (counts[d], d == ";", d == ","))
    df = pd.read_csv(io.StringIO(text), sep=sep, decimal="," if sep == ";" else ".",
                     dtype={c: str for c in id_columns})
    return _with_text_ids(df, lambda **kw: pd.read_csv(io.StringIO(text), sep=sep, **kw), id_columns)


def read_property_table(path: str | Path, *, id_columns: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Read a property table (.csv, .tsv, .xlsx, .parquet); refuse empty or unreadable ones.

    CSV files may use commas, semicolons (with decimal commas) or tabs, in UTF-8 or Windows-1252.
    ``id_columns`` (the sample-id column) are read as text, see :func:`id_strings`: ids ``01`` and ``1``
    are different samples."""
    path = Path(path)
    if not path.exists():
        raise InputFileNotFoundError(f"{path}: property table not found")
    if path.is_dir():
        raise PropertyTableError(f"{path}: is a folder, expected a CSV, XLSX or Parquet table")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            df = _read_text_table(path, id_columns=tuple(id_columns))
        elif suffix == ".tsv":
            df = _read_text_table(path, sep="\t", id_columns=tuple(id_columns))
        elif suffix in (".xlsx", ".xlsm"):
            df = _with_text_ids(pd.read_excel(path, dtype={c: str for c in id_columns}),
                                lambda **kw: pd.read_excel(path, **kw), id_columns)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise PropertyTableError(f"{path}: unsupported table format {suffix!r}; use .csv, .tsv, .xlsx or .parquet")
    except PropertyTableError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise PropertyTableError(f"{path}: the table is empty") from exc
    except ImportError as exc:
        raise PropertyTableError(f"{path}: reading {suffix} needs an extra package ({exc})") from exc
    except Exception as exc:  # parser errors of the three formats differ
        raise PropertyTableError(f"{path}: cannot read the table ({type(exc).__name__}: {exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty or len(df.columns) == 0:
        raise PropertyTableError(f"{path}: the table has no data rows")
    for c in id_columns:
        if c in df.columns:
            df[c] = id_strings(df[c])
    return df


def numeric_column(df: pd.DataFrame, column: str, *, source: str = "table", id_column: str | None = None) -> np.ndarray:
    """Column as floats; a non-numeric cell is an error naming the row and the value."""
    if column not in df.columns:
        raise PropertyTableError(f"{source}: no column {column!r}; columns are: {', '.join(map(str, df.columns))}")
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        who = f"sample {df[id_column].iloc[i]!r}" if id_column and id_column in df.columns else f"row {i + 2}"
        raise PropertyTableError(
            f"{source}: column {column!r} has a non-numeric cell {df[column].iloc[i]!r} at {who} ({int(bad.sum())} such cells)"
        )
    return values.to_numpy(dtype=float)


def read_results(results: str | Path, *, id_columns: tuple[str, ...] | list[str] = RESULT_ID_COLUMNS
                 ) -> tuple[pd.DataFrame, str]:
    """Read batch results: a batch output folder, its images.csv or specimens.csv.

    Returns the table and its source path.  For a folder that is the
    per-image ``images.csv``: samples are aggregated from the fields (images)
    so every CI is computed the same way.  Failed images are kept out of the
    numbers but are reported by the caller.  A ``specimens.csv`` (see
    :func:`is_specimen_table`) already holds one row of field statistics per
    specimen.  ``id_columns`` (image path, specimen, a ``column:`` mapping's
    column) are read as text: specimens ``01`` and ``1`` stay two specimens.
    """
    results = Path(results)
    if results.is_dir():
        candidate = results / "images.csv"
        if not candidate.exists():
            raise InputFileNotFoundError(f"{results}: no images.csv in this folder (is it a micro-seg batch output?)")
        results = candidate
    if not results.exists():
        raise InputFileNotFoundError(f"{results}: results table not found")
    if results.suffix.lower() != ".csv":
        raise PropertyTableError(f"{results}: not batch results: give a batch output folder, or its images.csv "
                                 "or specimens.csv")
    try:
        df = _with_text_ids(pd.read_csv(results, dtype={c: str for c in id_columns}),
                            lambda **kw: pd.read_csv(results, **kw), id_columns)
    except pd.errors.EmptyDataError as exc:
        raise PropertyTableError(f"{results}: the results table is empty") from exc
    if df.empty:
        raise PropertyTableError(f"{results}: the results table has no rows")
    for c in id_columns:
        if c in df.columns:
            df[c] = id_strings(df[c])
    return df, str(results)


def is_specimen_table(df: pd.DataFrame) -> bool:
    """True for a batch's ``specimens.csv``: one row per specimen, field statistics in ``<quantity>_mean`` columns.

    Examples
    --------
    >>> is_specimen_table(pd.DataFrame({"specimen": ["A"], "n_fields": [3], "mean_intercept_um_mean": [12.0]}))
    True
    >>> is_specimen_table(pd.DataFrame({"path": ["A/1.tif"], "specimen": ["A"], "mean_intercept_um": [12.0]}))
    False
    """
    return {"specimen", "n_fields"} <= set(df.columns) and "path" not in df.columns


def sample_keys(df: pd.DataFrame, *, mapping: str = "folder", source: str = "results") -> pd.Series:
    """The sample key of each result row.

    mapping:
      ``"folder"`` — the ``specimen`` column if present, else the image's parent folder name;
      ``"stem"`` — the image file name without extension;
      ``"regex:<pattern>"`` — the first capture group (or whole match) of the pattern searched in the path;
      ``"column:<name>"`` — a column of the results table.
    """
    if mapping == "folder" and "specimen" in df.columns:
        return df["specimen"].astype(str)
    columns = [str(c) for c in df.columns]
    hint = (" (its header is one ';'-separated column: give the batch's own comma-separated table)"
            if len(columns) == 1 and ";" in columns[0] else "")
    if "path" not in df.columns and not mapping.startswith("column:"):
        # not a batch's images.csv (a property table given as RESULTS, a table re-saved with ';' by a spreadsheet)
        raise PropertyTableError(f"{source}: not batch results: no 'path' column (images.csv) to map images to "
                                 f"samples by {mapping}, nor 'specimen' and 'n_fields' (specimens.csv){hint}; "
                                 f"columns are: {', '.join(columns)[:300]}")
    if mapping == "folder":
        return df["path"].map(lambda p: Path(str(p)).parent.name)
    if mapping == "stem":
        return df["path"].map(lambda p: Path(str(p)).stem)
    if mapping.startswith("regex:"):
        try:
            pattern = re.compile(mapping[len("regex:"):])
        except re.error as exc:
            raise PropertyTableError(f"invalid sample regex {mapping[6:]!r}: {exc}") from exc

        def key(p: str) -> str | None:
            m = pattern.search(str(p))
            if not m:
                return None
            return (m.group(1) if m.groups() else m.group(0)) or None  # an empty match names no sample

        return df["path"].map(key)
    if mapping.startswith("column:"):
        col = mapping[len("column:"):]
        if col not in df.columns:
            raise PropertyTableError(f"{source}: no column {col!r} to map samples from{hint}; columns are: "
                                     f"{', '.join(columns)[:300]}")
        return df[col].astype(str)
    raise PropertyTableError(f"unknown sample mapping {mapping!r}; use folder, stem, regex:<pattern> or column:<name>")
