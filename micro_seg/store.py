"""The results store of a batch: one embedded SQLite database, ``results.sqlite``.

Tables
------
``runs``
    One row per invocation of a batch: start/finish time, input and output folder,
    model name and weights sha256, software version, parameters (JSON), counts.
``images``
    One row per input file (unique ``relpath``, POSIX path relative to the input
    folder): status ``ok`` / ``failed``, error, input sha256, size and mtime,
    calibration, model and parameter hashes used, output files, QC verdict.
``measurements``
    ``(image_id, key) -> value`` (numbers in ``value``, text in ``text``), the
    per-image summary numbers (``n_grains``, ``G_planimetric``, ...).
``objects``
    One row per measured object (grain, defect, ...) with its properties as JSON
    (queryable with ``json_extract``).
``flags``
    Warnings and QC findings per image (``source``, ``check_name``, ``severity``,
    ``value``, ``limit_value``, ``message``).

The database runs in WAL mode and every image is written in a single transaction
(:meth:`ResultsStore.record`): the row, its measurements, objects and flags
appear together or not at all, so a batch killed at any moment leaves no
half-recorded image.  Only the process that runs the batch writes to it.

Examples
--------
>>> import tempfile, pathlib
>>> from micro_seg.store import ResultsStore
>>> with ResultsStore(pathlib.Path(tempfile.mkdtemp()) / "results.sqlite") as store:
...     store.schema_version()
1
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from micro_seg.interrupts import deferred_interrupts

__all__ = ["ResultsStore", "SCHEMA_VERSION", "file_name_of", "utc_now", "utf8_text"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_utc TEXT NOT NULL,
    finished_utc TEXT,
    status TEXT NOT NULL,
    in_dir TEXT NOT NULL,
    out_dir TEXT NOT NULL,
    model_name TEXT,
    model_task TEXT,
    model_sha256 TEXT,
    software_version TEXT NOT NULL,
    parameters TEXT NOT NULL,
    host TEXT,
    python TEXT,
    workers INTEGER,
    scheduler TEXT,
    n_discovered INTEGER,
    n_processed INTEGER,
    n_skipped INTEGER,
    n_ok INTEGER,
    n_failed INTEGER
);
CREATE TABLE IF NOT EXISTS images (
    image_id INTEGER PRIMARY KEY,
    relpath TEXT NOT NULL UNIQUE,
    abspath TEXT NOT NULL,
    size_bytes INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    error_type TEXT,
    retryable INTEGER NOT NULL DEFAULT 0,
    specimen TEXT,
    rows INTEGER,
    cols INTEGER,
    channels INTEGER,
    dtype TEXT,
    pixel_size_um REAL,
    calibration_source TEXT,
    databar_rows INTEGER,
    model_name TEXT,
    model_sha256 TEXT,
    params_sha256 TEXT,
    software_version TEXT,
    labels_path TEXT,
    overlay_path TEXT,
    objects_path TEXT,
    qc_verdict TEXT,
    seconds REAL,
    worker TEXT,
    run_id INTEGER REFERENCES runs(run_id),
    processed_utc TEXT,
    last_seen_run INTEGER
);
CREATE TABLE IF NOT EXISTS measurements (
    image_id INTEGER NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    ord INTEGER NOT NULL,
    value,  -- no type affinity: integers stay integers, floats floats
    text TEXT,
    PRIMARY KEY (image_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    image_id INTEGER NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    props TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_image ON objects(image_id, kind, object_id);
CREATE TABLE IF NOT EXISTS flags (
    image_id INTEGER NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    check_name TEXT NOT NULL,
    severity TEXT NOT NULL,
    value TEXT,
    limit_value TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS flags_image ON flags(image_id);
"""

# Columns of ``images`` a result may set (everything but the keys the store manages).
_IMAGE_FIELDS = (
    "abspath", "size_bytes", "mtime_ns", "sha256", "status", "error", "error_type", "retryable",
    "specimen", "rows", "cols", "channels", "dtype", "pixel_size_um", "calibration_source",
    "databar_rows", "model_name", "model_sha256", "params_sha256", "software_version",
    "labels_path", "overlay_path", "objects_path", "qc_verdict", "seconds", "worker",
    "processed_utc",
)


def utf8_text(text: str) -> str:
    r"""``text`` as UTF-8 can hold it: the bytes of a file name that is not UTF-8 (Python's surrogate escapes, e.g. a
    Latin-1 ``µ`` from an old archive) written as ``\xb5``; other text unchanged.

    >>> utf8_text("\udcb5m_field.tif"), utf8_text("µm_field.tif")
    ('\\xb5m_field.tif', 'µm_field.tif')
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_name_of(text: str) -> str:
    r"""The name Python gives the file :func:`utf8_text` wrote as ``text`` (``\xb5`` back to the byte it stands
    for, as a surrogate escape), to open it again; other text unchanged.

    >>> file_name_of("\\xb5m_field.tif") == "\udcb5m_field.tif", file_name_of("µm_field.tif")
    (True, 'µm_field.tif')
    """
    return re.sub(r"\\x([89a-f][0-9a-f])", lambda m: chr(0xDC00 + int(m[1], 16)), text)


def _utf8_values(values: Iterable[Any]) -> list[Any]:
    return [utf8_text(v) if isinstance(v, str) else v for v in values]


def utc_now() -> str:
    """Current UTC time as ISO 8601 with seconds (``2026-01-31T12:00:00Z``)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _clean_number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _read_only(exc: sqlite3.Error) -> bool:
    return "readonly" in str(exc) or "read-only" in str(exc)


def _storage_problem(exc: sqlite3.Error) -> bool:
    """The database's storage failed (full, I/O, read-only, locked), not the SQL."""
    text = str(exc).lower()
    return _read_only(exc) or any(w in text for w in ("full", "disk i/o", "locked", "unable to open"))


def _empty_wal(wal: Path) -> bool:
    try:
        return wal.stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _store_error(path: Path, exc: sqlite3.Error, *, writing: bool = False) -> Exception:
    """A results store that cannot be opened or written, as a one-line user error naming the file."""
    from micro_seg.errors import OutputPathError

    text = str(exc)
    if _read_only(exc):
        return OutputPathError(f"cannot write results store {path}: read-only (check the permissions of the "
                               f"file, its -wal/-shm files and its folder)")
    if "full" in text:
        return OutputPathError(f"cannot write results store {path}: {text}; free some space and re-run the same "
                               "command: the images already recorded are kept")
    return OutputPathError(f"cannot {'write' if writing else 'open'} results store {path}: {text}")


class ResultsStore:
    """Read and write the batch results database.

    Parameters
    ----------
    path : str or Path
        The ``results.sqlite`` file; created (with its folder) when missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> db = pathlib.Path(tempfile.mkdtemp()) / "results.sqlite"
    >>> with ResultsStore(db) as store:
    ...     run = store.start_run(in_dir="in", out_dir="out", software_version="0",
    ...                           parameters={"model": "m"})
    ...     image_id = store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok"},
    ...                             measurements={"n_grains": 12}, run_id=run)
    ...     store.measurements()[image_id]
    {'n_grains': 12}
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = None
        self._opened = False
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        existed = {wal: wal.exists(), shm: shm.exists()}
        try:
            try:
                self._open()
            except sqlite3.Error as exc:
                if not (_read_only(exc) and self._drop_stale_shm(wal, shm)):
                    raise
                self._open()  # a read-only -shm left by a failed run, the database itself writable: once more
            self._opened = True
        except sqlite3.Error as exc:
            if self._con is not None:
                self._con.close()
            for p in (wal, shm):  # the empty -wal/-shm this failed open created must not block the next run
                if not existed[p] and _empty_wal(wal):
                    try:
                        p.unlink()
                    except OSError:
                        pass
            raise _store_error(self.path, exc) from None

    def _drop_stale_shm(self, wal: Path, shm: Path) -> bool:
        """Remove a -shm file this process cannot write, left next to a writable database with an
        empty write-ahead log (it only indexes the log, and sqlite rebuilds it); True if removed."""
        if self._con is not None:
            self._con.close()
            self._con = None
        if not (shm.exists() and not os.access(shm, os.W_OK) and os.access(self.path, os.W_OK)
                and _empty_wal(wal)):
            return False
        try:
            shm.unlink()
            if wal.exists():
                wal.unlink()
        except OSError:
            return False
        return True

    def _open(self) -> None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (explicit transactions).
        self._con = sqlite3.connect(str(self.path), isolation_level=None, timeout=60.0)
        self._con.row_factory = sqlite3.Row
        self._con.execute("PRAGMA journal_mode=WAL")
        # NORMAL is crash-safe for process crashes (kill -9) in WAL mode; only an OS
        # crash or power cut can lose the last commits, never corrupt the database.
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute("PRAGMA foreign_keys=ON")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._con.execute(statement)
            self._con.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            # a write even when the tables exist: a read-only store fails here, before any image is processed
            self._con.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")

    # -- plumbing ---------------------------------------------------------------------
    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (checkpointing the WAL into the main file)."""
        try:
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception); a Ctrl-C / SIGTERM arriving
        meanwhile takes effect after the ``COMMIT`` or ``ROLLBACK``, never between ``BEGIN`` and the ``try``."""
        with deferred_interrupts():
            try:
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    yield self._con
                    self._con.execute("COMMIT")
                except BaseException:  # also a failed COMMIT (disk full): nothing half-written stays pending
                    try:
                        self._con.execute("ROLLBACK")
                    except sqlite3.Error:  # (a full disk can fail the rollback too): the original error matters
                        pass
                    raise
            except sqlite3.OperationalError as exc:  # disk full, I/O error, read-only: one line naming the file
                if not self._opened or not _storage_problem(exc):  # __init__ handles a failed open itself; a
                    raise  # bad statement is a bug, not the user's disk
                raise _store_error(self.path, exc, writing=True) from None

    def schema_version(self) -> int:
        row = self._con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Run a read-only query and return all rows."""
        return self._con.execute(sql, tuple(params)).fetchall()

    # -- runs -------------------------------------------------------------------------
    def start_run(self, *, in_dir: str, out_dir: str, software_version: str, parameters: Mapping[str, Any],
                  model_name: str | None = None, model_task: str | None = None,
                  model_sha256: str | None = None, workers: int | None = None,
                  scheduler: str | None = None) -> int:
        """Insert a ``running`` row into ``runs`` and return its ``run_id``."""
        import platform
        import sys

        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO runs(started_utc, status, in_dir, out_dir, model_name, model_task, model_sha256,"
                " software_version, parameters, host, python, workers, scheduler)"
                " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (utc_now(), utf8_text(in_dir), utf8_text(out_dir), model_name, model_task, model_sha256,
                 software_version,
                 json.dumps(dict(parameters), sort_keys=True, default=_json_default), platform.node(),
                 sys.version.split()[0], workers, scheduler),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, *, status: str, counts: Mapping[str, int]) -> None:
        """Set a run's final status (``finished`` / ``cancelled`` / ``interrupted`` / ``error``) and counts."""
        keys = ("n_discovered", "n_processed", "n_skipped", "n_ok", "n_failed")
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET finished_utc=?, status=?, " + ", ".join(f"{k}=?" for k in keys) + " WHERE run_id=?",
                (utc_now(), status, *(counts.get(k) for k in keys), run_id),
            )

    def runs(self) -> list[dict]:
        """All runs, oldest first, ``parameters`` decoded."""
        out = []
        for row in self._con.execute("SELECT * FROM runs ORDER BY run_id"):
            d = dict(row)
            d["parameters"] = json.loads(d["parameters"])
            out.append(d)
        return out

    # -- images -----------------------------------------------------------------------
    def image(self, relpath: str) -> dict | None:
        """The ``images`` row of one input (or ``None``)."""
        row = self._con.execute("SELECT * FROM images WHERE relpath=?", (relpath,)).fetchone()
        return dict(row) if row else None

    def images(self, *, seen_in_run: int | None = None) -> list[dict]:
        """``images`` rows sorted by ``relpath`` (only those seen in a run when given)."""
        if seen_in_run is None:
            rows = self._con.execute("SELECT * FROM images ORDER BY relpath")
        else:
            rows = self._con.execute("SELECT * FROM images WHERE last_seen_run=? ORDER BY relpath", (seen_in_run,))
        return [dict(r) for r in rows]

    def known_images(self) -> dict[str, dict]:
        """``relpath -> row`` of the fields used to decide whether an image is done (and its output files)."""
        rows = self._con.execute(
            "SELECT relpath, status, size_bytes, mtime_ns, sha256, model_sha256, params_sha256, retryable, software_version,"
            " labels_path, overlay_path, objects_path FROM images"
        )
        return {r["relpath"]: dict(r) for r in rows}

    def output_in_use(self, rel: str, *, by_other_than: str) -> bool:
        """True when an image other than ``by_other_than`` records ``rel`` as its label, overlay or object file
        (output stems are reassigned when files come and go, so an old row's file may now be another image's)."""
        row = self._con.execute(
            "SELECT 1 FROM images WHERE relpath != ? AND (labels_path = ? OR overlay_path = ? OR objects_path = ?)"
            " LIMIT 1", (by_other_than, rel, rel, rel)).fetchone()
        return row is not None

    def mark_seen(self, relpaths: Iterable[str], run_id: int, specimens: Mapping[str, str | None]) -> None:
        """Record that these (already finished) inputs belong to ``run_id``."""
        with self.transaction() as con:
            con.executemany(
                "UPDATE images SET last_seen_run=?, specimen=? WHERE relpath=?",
                [(run_id, *_utf8_values((specimens.get(p), p))) for p in relpaths],
            )

    def update_stat(self, relpath: str, *, size_bytes: int, mtime_ns: int) -> None:
        """Refresh size/mtime of an input whose content (sha256) did not change."""
        with self.transaction() as con:
            con.execute("UPDATE images SET size_bytes=?, mtime_ns=? WHERE relpath=?",
                        (size_bytes, mtime_ns, utf8_text(relpath)))

    def record(self, relpath: str, fields: Mapping[str, Any], *, measurements: Mapping[str, Any] | None = None,
               objects: Mapping[str, Mapping[str, list]] | None = None,
               flags: Iterable[Mapping[str, Any]] = (), run_id: int | None = None) -> int:
        """Write one image's result atomically, replacing any earlier result of it.

        Parameters
        ----------
        relpath : str
            Key of the input (POSIX path relative to the input folder).
        fields : mapping
            Values of ``images`` columns (``status`` is required).
        measurements : mapping, optional
            ``key -> number or text`` (order kept in ``ord``).
        objects : mapping, optional
            ``kind -> {column -> list}``; column ``label`` (if present) is the object id.
        flags : iterable of mapping
            Keys ``source``, ``check`` (or ``check_name``), ``severity``, ``value``,
            ``limit``, ``message``.
        run_id : int, optional
            Run that produced this result (also marks the image seen in it).

        Returns
        -------
        int
            The ``image_id``.
        """
        unknown = set(fields) - set(_IMAGE_FIELDS)
        if unknown:
            raise KeyError(f"unknown images column(s): {sorted(unknown)}")
        relpath = utf8_text(relpath)  # text only: a file name that is not UTF-8 would fail the INSERT
        cols = list(fields)
        values = _utf8_values(fields[c] for c in cols)
        with self.transaction() as con:
            row = con.execute("SELECT image_id FROM images WHERE relpath=?", (relpath,)).fetchone()
            if row is None:
                cur = con.execute(
                    f"INSERT INTO images(relpath, run_id, last_seen_run, {', '.join(cols)})"
                    f" VALUES (?, ?, ?, {', '.join('?' * len(cols))})",
                    (relpath, run_id, run_id, *values),
                )
                image_id = int(cur.lastrowid)
            else:
                image_id = int(row[0])
                # Reset every managed column so nothing of an earlier result survives.
                reset = {c: None for c in _IMAGE_FIELDS}
                reset["retryable"] = 0
                reset.update(fields)
                con.execute(
                    f"UPDATE images SET run_id=?, last_seen_run=?, {', '.join(f'{c}=?' for c in reset)}"
                    " WHERE image_id=?",
                    (run_id, run_id, *_utf8_values(reset.values()), image_id),
                )
                for table in ("measurements", "objects", "flags"):
                    con.execute(f"DELETE FROM {table} WHERE image_id=?", (image_id,))
            if measurements:
                rows = []
                for i, (key, value) in enumerate(measurements.items()):
                    number = _clean_number(value) if not isinstance(value, str) else None
                    if number is not None and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                        number = int(value)
                    text = utf8_text(value) if isinstance(value, str) else None
                    if text is None and number is None and value is not None and not _not_finite(value):
                        text = json.dumps(value, default=_json_default)
                    rows.append((image_id, str(key), i, number, text))
                con.executemany(
                    "INSERT INTO measurements(image_id, key, ord, value, text) VALUES (?, ?, ?, ?, ?)", rows
                )
            for kind, table in (objects or {}).items():
                con.executemany(
                    "INSERT INTO objects(image_id, kind, object_id, props) VALUES (?, ?, ?, ?)",
                    _object_rows(image_id, kind, table),
                )
            flag_rows = [
                (image_id, str(f.get("source", "engine")), str(f.get("check", f.get("check_name", ""))),
                 str(f.get("severity", "warning")), _text(f.get("value")), _text(f.get("limit")),
                 _text(f.get("message")))
                for f in flags
            ]
            if flag_rows:
                con.executemany(
                    "INSERT INTO flags(image_id, source, check_name, severity, value, limit_value, message)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", flag_rows
                )
        return image_id

    # -- reading results back ---------------------------------------------------------
    def measurements(self, *, seen_in_run: int | None = None) -> dict[int, dict[str, Any]]:
        """``image_id -> {key: value}`` in each image's original key order."""
        sql = "SELECT m.image_id, m.key, m.value, m.text FROM measurements m"
        params: tuple = ()
        if seen_in_run is not None:
            sql += " JOIN images i ON i.image_id = m.image_id WHERE i.last_seen_run=?"
            params = (seen_in_run,)
        sql += " ORDER BY m.image_id, m.ord"
        out: dict[int, dict[str, Any]] = {}
        for image_id, key, value, text in self._con.execute(sql, params):
            out.setdefault(image_id, {})[key] = text if text is not None else value
        return out

    def measurement_keys(self, *, seen_in_run: int | None = None) -> list[str]:
        """All measurement keys, ordered by first appearance (image order, then key order)."""
        sql = ("SELECT m.key, MIN(i.relpath) AS first_path, MIN(m.ord) AS o FROM measurements m"
               " JOIN images i ON i.image_id = m.image_id")
        params: tuple = ()
        if seen_in_run is not None:
            sql += " WHERE i.last_seen_run=?"
            params = (seen_in_run,)
        sql += " GROUP BY m.key ORDER BY o, first_path, m.key"
        return [r[0] for r in self._con.execute(sql, params)]

    def flags(self, *, seen_in_run: int | None = None) -> list[dict]:
        """All flags joined with their image's ``relpath``."""
        sql = ("SELECT i.relpath, f.source, f.check_name, f.severity, f.value, f.limit_value, f.message"
               " FROM flags f JOIN images i ON i.image_id = f.image_id")
        params: tuple = ()
        if seen_in_run is not None:
            sql += " WHERE i.last_seen_run=?"
            params = (seen_in_run,)
        sql += " ORDER BY i.relpath, f.rowid"
        return [dict(r) for r in self._con.execute(sql, params)]

    def iter_objects(self, *, seen_in_run: int | None = None, chunk: int = 20000) -> Iterator[list[dict]]:
        """Yield object rows in chunks: dicts with ``path``, ``specimen``, ``kind``,
        ``object_id`` and the stored properties, ordered by path, kind, object id."""
        sql = ("SELECT i.relpath, i.specimen, o.kind, o.object_id, o.props FROM objects o"
               " JOIN images i ON i.image_id = o.image_id")
        params: tuple = ()
        if seen_in_run is not None:
            sql += " WHERE i.last_seen_run=?"
            params = (seen_in_run,)
        sql += " ORDER BY i.relpath, o.kind, o.object_id"
        cur = self._con.execute(sql, params)
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            out = []
            for relpath, specimen, kind, object_id, props in rows:
                d = {"path": relpath, "specimen": specimen, "kind": kind, "object_id": object_id}
                d.update(json.loads(props))
                out.append(d)
            yield out


def _not_finite(value: Any) -> bool:
    """True for NaN and, like NaN a missing value here, +-inf (a mean over no intercepts): stored as NULL, not as
    the text 'Infinity'."""
    if isinstance(value, (str, bytes)):
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return utf8_text(value)
    return json.dumps(value, default=_json_default)


def _object_rows(image_id: int, kind: str, table: Mapping[str, list]) -> Iterator[tuple]:
    columns = list(table)
    if not columns:
        return
    n = len(table[columns[0]])
    id_col = "label" if "label" in table else None
    for i in range(n):
        props = {}
        for c in columns:
            v = table[c][i]
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            props[c] = v
        object_id = int(props[id_col]) if id_col else i + 1
        yield image_id, str(kind), object_id, json.dumps(props, default=_json_default)
