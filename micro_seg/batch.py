"""Batch processing of micrograph folders: resumable, parallel, crash-safe.

:func:`run_batch` finds every file under the input folder (recursively), sends
each supported image to a worker (:func:`micro_seg.batch_worker.process_image`:
read + calibrate, segment, measure, write labels / overlay / object table) and
records each result in ``results.sqlite`` (:class:`micro_seg.store.ResultsStore`)
in one transaction once its output files exist.  At the end it exports
``images.csv``, ``specimens.csv``, ``objects.parquet`` and ``report.html``.

Guarantees
----------
* **Resumable, exactly once.**  An image is done when its row in the database
  says so; every output file is written to a temporary name and renamed, and the
  row is committed only after the files are in place.  Killing the batch at any
  moment (even ``kill -9``) and re-running processes every unfinished image once
  and skips the finished ones (one whose label file has gone from ``out_dir`` is
  redone); exports are rebuilt from the database.
* **Change detection.**  An image is redone when its content (sha256; checked
  when size or mtime changed, always with ``rehash=True``), the model weights
  (sha256) or the processing parameters changed.
* **Failures isolated.**  An unreadable or corrupt image is recorded as
  ``failed`` with its error and the batch goes on; a worker process that dies
  (out of memory, native crash) is replaced and its images retried.  Files that
  are not images (``README.txt``, ``notes.csv``...) are skipped and counted.
* **Bad input refused up front.**  A missing input folder, an input folder
  without images, an output path that is a file, a bad option, spec or model
  (weights checked against their sha256) or an unreachable scheduler raise a
  :class:`~micro_seg.errors.MicroSegError` before anything is written.
* **Bounded memory.**  At most ``2 x workers`` images are in flight, worker
  processes are recycled after ``max_tasks_per_child`` images and exports stream
  from the database.

Layout of ``out_dir``::

    results.sqlite  images.csv  specimens.csv  objects.parquet  report.html
    labels/<relpath stem>_labels.tif     overlays/<relpath stem>_overlay.png
    objects/<relpath stem>_objects.csv

``images.csv`` has one row per image: ``path``, ``status``, ``error``, the
measurements, ``qc_verdict`` / ``qc_reasons`` (each reason led by its severity,
``fail:`` or ``review:``), and ``warnings``: what the reader, the model and the
measurements warned about for that image (no pixel size, too few grains for
E112 / E1382, a constant image...), so a number that comes with a caveat never
looks like any other.

Examples
--------
>>> from micro_seg.batch import run_batch
>>> summary = run_batch("micrographs/", "results/", model="grain-boundaries")  # doctest: +SKIP
>>> summary.n_failed, summary.report  # doctest: +SKIP
(0, PosixPath('results/report.html'))
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import json
import numbers
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from micro_seg import __version__
from micro_seg.batch_worker import (BatchConfig, ImageResult, _load_model, atomic_path, check_segment_options, init_worker,
                                    output_files, safe_process, sha256_file, stale_temporary)
from micro_seg.errors import CancelledError, InputFileNotFoundError, MicroSegError, OutputPathError, SpecError
from micro_seg.interrupts import deferred_interrupts
from micro_seg.specimens import parse_group_by, specimen_of, specimen_table
from micro_seg.store import ResultsStore, utc_now, utf8_text

__all__ = [
    "run_batch",
    "BatchSummary",
    "InputFile",
    "discover_images",
    "read_ignore_file",
    "BatchBusyError",
    "BatchOptionError",
    "export_images_csv",
    "export_specimens_csv",
    "export_objects_parquet",
    "IMAGE_COLUMNS_HEAD",
    "unsupported_extensions",
]

DB_NAME = "results.sqlite"
LOCK_NAME = ".micro-seg-batch.lock"
IGNORED_NAMES = {"thumbs.db", "desktop.ini"}
DASK_CONNECT_TIMEOUT = "20s"
IMAGE_COLUMNS_HEAD = ("path", "status", "error", "specimen", "pixel_size_um", "calibration_source", "units")
IMAGE_COLUMNS_TAIL = ("qc_verdict", "qc_reasons", "warnings", "rows", "cols", "databar_rows", "sha256", "model",
                      "model_sha256", "software_version", "labels", "overlay", "objects")


class BatchBusyError(MicroSegError, RuntimeError):
    """Another batch is already writing to this output folder."""


class BatchOptionError(MicroSegError, ValueError):
    """An option of :func:`run_batch` has an invalid value."""


@dataclass(frozen=True)
class InputFile:
    """One file found under the input folder."""

    path: str  # absolute
    relpath: str  # POSIX, relative to the input folder
    stem: str  # output name stem (relative, POSIX)
    supported: bool
    size_bytes: int
    mtime_ns: int


@dataclass
class BatchSummary:
    """What a batch run did (returned by :func:`run_batch`).

    ``n_images`` counts every image of the current input set; ``n_ok`` and
    ``n_failed`` their status after this run (including images finished by an
    earlier run, ``n_skipped``); ``n_processed`` the images worked on now.
    ``ignored`` lists the files and folders left out by ``exclude`` patterns,
    ``unsupported`` the files skipped because they are not supported images,
    ``warnings`` one line per thing the user should know (images in no
    specimen, skipped symbolic links).
    """

    out_dir: Path
    run_id: int
    n_images: int
    n_ok: int
    n_failed: int
    n_processed: int
    n_skipped: int
    seconds: float
    failures: list[dict[str, str]] = field(default_factory=list)
    database: Path | None = None
    images_csv: Path | None = None
    specimens_csv: Path | None = None
    objects_parquet: Path | None = None
    report: Path | None = None
    model: str | None = None
    model_sha256: str | None = None
    cancelled: bool = False
    ignored: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """3 if any image of the batch failed, else 0 (the CLI contract)."""
        return 3 if self.n_failed else 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------
# discovery
# ----------------------------------------------------------------------------------------
def _supported_extensions() -> tuple[str, ...]:
    from micro_seg.io import SUPPORTED_EXTENSIONS

    return tuple(sorted((e.lower() for e in SUPPORTED_EXTENSIONS), key=len, reverse=True))


def _image_content(path: Path) -> bool:
    """True if the file's first bytes are those of a format the reader decodes (a TIFF named ``.dat``)."""
    from micro_seg.io import _sniff

    try:
        with open(path, "rb") as fh:
            return _sniff(fh.read(32)) is not None
    except OSError:
        return False


def _split_ext(name: str, exts: tuple[str, ...]) -> tuple[str, str | None]:
    low = name.lower()
    for ext in exts:  # longest first: ".ome.tif" before ".tif"
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    return Path(name).stem, None


def _unique_stems(candidates: list[tuple[str, str, bool]]) -> dict[str, str]:
    """Output stems for the files of one folder, no two alike (even ignoring case).

    ``candidates`` holds ``(name, stem, suffixed)``: ``suffixed`` when the stem
    already carries the extension (``x.png`` -> ``x_png``).  A file's plain stem
    wins over a suffixed one (``x_png.tif`` keeps ``x_png``); any other clash
    (``x.png`` as well, or ``x.TIF`` next to ``x.tif``) gets ``_2``, ``_3``...
    in name order, never a stem another file of the folder has, so no two inputs
    write the same labels / overlay / objects files.

    >>> _unique_stems([("x.png", "x_png", True), ("x_png.tif", "x_png", False), ("x.tif", "x_tif", True)])
    {'x_png.tif': 'x_png', 'x.tif': 'x_tif', 'x.png': 'x_png_2'}
    """
    taken: set[str] = set()
    out: dict[str, str] = {}
    clashes: list[tuple[str, str]] = []
    for name, stem, _ in sorted(candidates, key=lambda c: (c[2], c[0])):  # plain stems first
        if stem.casefold() in taken:
            clashes.append((name, stem))
        else:
            taken.add(stem.casefold())
            out[name] = stem
    reserved = taken | {stem.casefold() for _, stem, _ in candidates}
    for name, stem in clashes:
        i = 2
        while f"{stem}_{i}".casefold() in reserved:
            i += 1
        reserved.add(f"{stem}_{i}".casefold())
        out[name] = f"{stem}_{i}"
    return out


#: Longest last part of an output stem, in bytes: the longest file name made from it (``write_labels``' temporary
#: ``.<stem>_labels.tif.<pid>.<8 hex>.tmp``) adds 33 bytes, and a file name may have 255 (ext4, XFS, NTFS, APFS).
MAX_STEM_BYTES = 200


def _fit_name_max(stem: str) -> str:
    """An output stem whose file names fit the file system: a last part longer than :data:`MAX_STEM_BYTES` (a long
    or non-Latin name, 3 bytes a character in UTF-8) is cut there and told apart by 8 hex digits of its sha1.

    >>> _fit_name_max("sub/short"), len(_fit_name_max("晶" * 80).encode()), _fit_name_max("晶" * 80)[-9:]
    ('sub/short', 198, '_38c3ca3e')
    """
    parent, sep, last = stem.rpartition("/")
    raw = last.encode("utf-8")
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    last = raw[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore") + "_" + hashlib.sha1(raw).hexdigest()[:8]
    return parent + sep + last


IGNORE_FILE = ".micro-seg-ignore"


def read_ignore_file(in_dir: str | os.PathLike) -> list[str]:
    """Glob patterns from ``IN_DIR/.micro-seg-ignore`` (one per line, ``#`` comments; a UTF-8 byte order mark, as
    Windows Notepad writes, is not part of the first pattern, and a file in UTF-16, as Windows PowerShell's
    ``"truth/" > .micro-seg-ignore`` writes, is read as such)."""
    import codecs

    p = Path(in_dir) / IGNORE_FILE
    if not p.is_file():
        return []
    try:
        raw = p.read_bytes()
    except OSError as exc:  # not readable by this user (a shared archive): its patterns cannot be left unapplied
        raise BatchOptionError(f"{p}: cannot read this ignore file ({exc.strerror or exc}); make it readable or "
                               "remove it") from None
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    out = []
    for line in raw.decode("utf-16" if utf16 else "utf-8-sig", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _path_match(path: str, pat: str) -> bool:
    """``fnmatch`` where a ``**/`` may also stand for no folder (``**/x.tif`` matches ``x.tif``, as in gitignore)."""
    import fnmatch

    if fnmatch.fnmatch(path, pat):
        return True
    return any(_path_match(path, pat[:i] + pat[i + 3:]) for i in range(len(pat)) if pat.startswith("**/", i))


def _ignored(relpath: str, patterns: Iterable[str], *, is_dir: bool = False) -> bool:
    """gitignore-like matching: ``name/`` a folder anywhere, ``a/b*`` and ``/truth/`` a relative path, ``*.md`` a
    name; ``**/`` any folders or none.

    >>> _ignored("truth", ["/truth/"], is_dir=True), _ignored("a/truth", ["/truth/"], is_dir=True)
    (True, False)
    >>> _ignored("truth/m.tif", ["**/truth/"]), _ignored("x.tif", ["**/x.tif"]), _ignored("a/c.tif", ["a/**/c.tif"])
    (True, True, True)
    """
    import fnmatch

    parts = relpath.split("/")
    for pat in patterns:
        if pat.endswith("/"):
            dpat = pat.rstrip("/")
            dirs = parts if is_dir else parts[:-1]
            if "/" not in dpat:
                if any(fnmatch.fnmatch(d, dpat) for d in dirs):
                    return True
            elif any(_path_match("/".join(dirs[: i + 1]), dpat.lstrip("/")) for i in range(len(dirs))):
                return True  # a slash at the start or in the middle: relative to IN_DIR (or the ignore file's folder)
        elif "/" in pat:
            if _path_match(relpath, pat.lstrip("/")):
                return True
        elif fnmatch.fnmatch(parts[-1], pat):
            return True
    return False


def discover_images(in_dir: str | os.PathLike, *, exclude: Iterable[str | os.PathLike] = (),
                    ignore: Iterable[str] = (), ignored: list[str] | None = None,
                    links: dict[str, list[str]] | None = None) -> list[InputFile]:
    """Every file under ``in_dir`` (recursive, sorted), marked supported or not.

    Hidden files and folders (name starting with ``.``), ``Thumbs.db`` /
    ``desktop.ini``, the ``exclude`` folders (e.g. the output folder inside the
    input folder) and any folder holding a batch database (``results.sqlite``:
    the output folder of another batch, whose labels and overlays are not
    micrographs) are skipped.  A non-image file that shares its name stem
    with an image in the same folder (``field_01.tif`` + ``field_01.txt``, the
    way Hitachi / Zeiss / JEOL SEMs write metadata side-cars) is a side-car, not
    an input.  Files matching an ``ignore`` glob pattern (gitignore-like:
    ``*.md`` any file name, ``truth/`` any folder, ``sub/*.tif`` a relative
    path) are left out and their relative paths appended to ``ignored``, and so
    are those matching a ``.micro-seg-ignore`` of a subfolder, relative to that
    subfolder (IN_DIR's own file is read by :func:`run_batch` into ``ignore``).
    When ``in_dir`` itself holds a batch database, its output folders (``labels/``, ``overlays/``, ``objects/``)
    are skipped too (``links["outputs"]``).  A file reached under two names (a symbolic or hard link to another
    input) is one input (``links["duplicates"]`` lists the others).  Symbolic links to folders are not followed (no loops, no image found
    twice) and dangling links point nowhere: their relative paths go to
    ``links["folders"]`` and ``links["dangling"]`` so they can be reported.  Every
    other file is returned, with ``supported=True`` when the reader can decode
    it: a supported image extension (:data:`micro_seg.io.SUPPORTED_EXTENSIONS`;
    a corrupt file with such a name is still an input, and fails) or, like
    :func:`micro_seg.io.read_micrograph`, content in a supported format (a TIFF
    named ``.dat``).  :func:`run_batch` skips and counts the others (``README.txt``,
    ``notes.csv``...).  Images that differ only by extension get distinct output
    stems (``a_tif``, ``a_png``); no two files ever share an output stem
    (:func:`_unique_stems`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.tif", "a.txt", "notes.md"):
    ...     _ = (d / name).write_bytes(b"x")
    >>> [(f.relpath, f.supported) for f in discover_images(d)]
    [('a.tif', True), ('notes.md', False)]
    """
    root = Path(in_dir).resolve()
    excluded = {Path(e).resolve() for e in exclude}
    patterns = list(ignore)
    exts = _supported_extensions()
    found: list[InputFile] = []
    root_is_output = (root / DB_NAME).is_file()  # IN_DIR is an earlier batch's OUT_DIR: its outputs are no inputs
    # the .micro-seg-ignore files of subfolders, each applying to its own folder's tree (as nested .gitignore files)
    scoped: dict[str, list[tuple[str, list[str]]]] = {"": []}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_here = here.relative_to(root).as_posix()
        rel_here = "" if rel_here == "." else rel_here + "/"
        own = scoped.pop(rel_here, [])
        if rel_here and (here / IGNORE_FILE).is_file():
            own = own + [(rel_here, read_ignore_file(here))]

        def left_out(rel: str, is_dir: bool = False) -> bool:
            return _ignored(rel, patterns, is_dir=is_dir) or any(
                _ignored(rel[len(base):], pats, is_dir=is_dir) for base, pats in own)

        keep_dirs = []
        for d in sorted(dirnames):
            if d.startswith(".") or (here / d).resolve() in excluded or (here / d / DB_NAME).is_file():
                continue
            if root_is_output and not rel_here and d in OUTPUT_SUBDIRS:
                if links is not None:
                    links.setdefault("outputs", []).append(utf8_text(d + "/"))
                continue
            if (here / d).is_symlink():  # os.walk does not descend into it: say so, unless a pattern leaves it out
                if left_out(rel_here + d, is_dir=True):
                    if ignored is not None:
                        ignored.append(utf8_text(rel_here + d + "/"))
                elif links is not None:
                    links.setdefault("folders", []).append(utf8_text(rel_here + d + "/"))
                continue
            if left_out(rel_here + d, is_dir=True):
                if ignored is not None:
                    ignored.append(utf8_text(rel_here + d + "/"))
                continue
            keep_dirs.append(d)
            scoped[rel_here + d + "/"] = own
        dirnames[:] = keep_dirs
        names = []
        for f in sorted(filenames):
            if f.startswith(".") or f.lower() in IGNORED_NAMES:
                continue
            if left_out(rel_here + f):
                if ignored is not None:
                    ignored.append(utf8_text(rel_here + f))
                continue
            names.append(f)
        split = {n: _split_ext(n, exts) for n in names}
        image_stems: dict[str, list[str]] = {}
        for n, (stem, ext) in split.items():
            if ext is not None:
                image_stems.setdefault(stem, []).append(n)
        here_files = []
        for n in names:
            p = here / n
            try:
                st = p.stat()
            except OSError:
                if links is not None and p.is_symlink():
                    links.setdefault("dangling", []).append(utf8_text(rel_here + n))
                continue
            if not p.is_file():
                continue
            stem, ext = split[n]
            if ext is None and stem in image_stems:
                continue  # metadata side-car of an image
            if ext is not None and len(image_stems[stem]) > 1:
                here_files.append((n, p, st, f"{stem}_{ext.lstrip('.').replace('.', '_')}", True))
            else:
                here_files.append((n, p, st, stem, False))
        out_names = _unique_stems([(n, cand, suffixed) for n, _, _, cand, suffixed in here_files])
        for n, p, st, _, _ in here_files:
            # a name that is not UTF-8 (a Latin-1 "µ" from an old archive) is named with \xb5 in the tables and
            # outputs, which must be text; the file itself is opened by its own name (path)
            rel = utf8_text(p.relative_to(root).as_posix())
            out_stem = _fit_name_max(utf8_text((Path(p.relative_to(root).as_posix()).parent / out_names[n]).as_posix()))
            supported = split[n][1] is not None or _image_content(p)
            found.append(InputFile(str(p), rel, out_stem, supported, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.relpath)
    return _drop_second_names(found, links)


def _drop_second_names(found: list[InputFile], links: dict[str, list[str]] | None) -> list[InputFile]:
    """One input per file on disk: a symbolic (or hard) link to a file that is already an input would measure the
    same field twice and make its specimen's confidence interval look tighter than it is.  The file itself (not
    a link) is kept, else the first link by path; the others go to ``links["duplicates"]``."""
    by_file: dict[tuple[int, int], list[InputFile]] = {}
    for f in found:
        try:
            st = os.stat(f.path)
        except OSError:
            continue
        if not st.st_ino:  # no file ids on this file system (st_ino 0): nothing to compare
            return found
        by_file.setdefault((st.st_dev, st.st_ino), []).append(f)
    dropped: set[str] = set()
    for names in by_file.values():
        if len(names) > 1:
            keep = next((f for f in names if not os.path.islink(f.path)), names[0])
            dropped.update(f.relpath for f in names if f is not keep)
    if not dropped:
        return found
    if links is not None:
        links.setdefault("duplicates", []).extend(sorted(dropped))
    return [f for f in found if f.relpath not in dropped]


# ----------------------------------------------------------------------------------------
# executors: yield (InputFile, ImageResult) as results arrive, bounded in-flight work
# ----------------------------------------------------------------------------------------
def _failed_result(f: InputFile, message: str, error_type: str, *, retryable: bool) -> ImageResult:
    return ImageResult(relpath=f.relpath, status="failed", error=f"{error_type}: {message}",
                       error_type=error_type, retryable=retryable, size_bytes=f.size_bytes,
                       mtime_ns=f.mtime_ns)


def _run_inline(files: list[InputFile], config: BatchConfig, process: Callable | None,
                cancelled: Callable[[], bool]) -> Iterator[tuple[InputFile, ImageResult]]:
    init_worker(config.torch_threads)
    for f in files:
        if cancelled():
            return
        yield f, safe_process(f.path, config, process, f.stem)


def _mp_context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Children fork from a server that has already imported the engine (fast start).
        ctx.set_forkserver_preload(["micro_seg.batch_worker", "numpy", "torch"])
        return ctx
    return mp.get_context("spawn")


def _worker_died(f: InputFile) -> ImageResult:
    return _failed_result(
        f, f"{f.path}: the worker process died while processing this image alone (out of memory or a crash "
        "in a native library)", "WorkerDiedError", retryable=True)


def _run_local_pool(files: list[InputFile], config: BatchConfig, process: Callable | None,
                    cancelled: Callable[[], bool], *, workers: int,
                    max_tasks_per_child: int | None) -> Iterator[tuple[InputFile, ImageResult]]:
    """Process images in a pool of worker processes, at most ``2 x workers`` in flight.

    When a worker dies (segfault, OOM killer) the pool breaks and every image in
    flight is lost; those images become *suspects* and are re-run one at a time
    in a fresh pool, so only the image that really kills its worker is recorded
    as failed (``WorkerDiedError``) and its innocent neighbours succeed.
    """
    from collections import deque

    queue = deque(files)
    suspects: deque = deque()
    window = 2 * workers
    while (queue or suspects) and not cancelled():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(), initializer=init_worker,
                                   initargs=(config.torch_threads, os.getpid()),
                                   max_tasks_per_child=max_tasks_per_child)
        pending: dict = {}
        broken = False
        try:
            while not broken:
                if not cancelled():
                    if suspects:
                        if not pending:  # a suspect runs alone
                            f = suspects.popleft()
                            pending[pool.submit(safe_process, f.path, config, process, f.stem)] = (f, True)
                    else:
                        while queue and len(pending) < window:
                            f = queue.popleft()
                            pending[pool.submit(safe_process, f.path, config, process, f.stem)] = (f, False)
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda x: pending[x][0].relpath):
                    f, alone = pending.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        if alone:
                            yield f, _worker_died(f)
                        else:
                            suspects.append(f)
                        continue
                    yield f, result
        except BrokenProcessPool:  # submit() on a pool that just broke
            broken = True
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for f, alone in pending.values():  # lost with the broken pool
            if alone:
                yield f, _worker_died(f)
            else:
                suspects.append(f)


@contextmanager
def _dask_client(scheduler: Any) -> Iterator[Any]:
    """The dask client for ``scheduler`` (None without one): connected before any work, closed at the end."""
    if scheduler is None or hasattr(scheduler, "submit"):  # no scheduler, or the caller's own Client
        yield scheduler
        return
    try:
        from distributed import Client
        from distributed.comm import resolve_address
    except ImportError as exc:  # pragma: no cover - dask[distributed] is a dependency
        raise MicroSegError(f"--scheduler {scheduler}: dask.distributed is not installed") from exc
    try:  # a malformed address fails here, not half-way through building a Client
        resolve_address(str(scheduler))
    except ValueError as exc:
        raise BatchOptionError(f"--scheduler {scheduler}: not a scheduler address (tcp://host:port): {exc}") from None
    except OSError as exc:
        raise MicroSegError(f"--scheduler {scheduler}: cannot connect to the dask scheduler: {exc}") from None
    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise MicroSegError(f"--scheduler {scheduler}: cannot connect to the dask scheduler: {exc}") from exc
    try:
        yield client
    finally:
        client.close()


def _run_dask(files: list[InputFile], config: BatchConfig, process: Callable | None,
              cancelled: Callable[[], bool], *, client: Any) -> Iterator[tuple[InputFile, ImageResult]]:
    from distributed import as_completed

    nthreads = sum(client.nthreads().values()) or 1
    window = 2 * nthreads
    todo = list(reversed(files))
    pending: dict = {}
    ac = None

    def submit_more() -> None:
        while todo and len(pending) < window and not cancelled():
            f = todo.pop()
            key = f"micro-seg-{hashlib.sha1(f.relpath.encode()).hexdigest()[:12]}-{time.time_ns()}"
            fut = client.submit(safe_process, f.path, config, process, f.stem, pure=False, key=key)
            pending[fut] = f
            if ac is not None:
                ac.add(fut)

    submit_more()
    if not pending:
        return
    ac = as_completed(list(pending), loop=client.loop)
    for fut in ac:
        f = pending.pop(fut)
        try:
            result = fut.result()
        except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection...
            result = _failed_result(f, f"{f.path}: dask task failed: {exc}", type(exc).__name__, retryable=True)
        fut.release()
        yield f, result
        if cancelled():
            for other in pending:
                other.cancel()
            return
        submit_more()


# ----------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------
class _Lock:
    """An exclusive ``flock`` on the output folder (released by the OS if we die)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = None

    def __enter__(self) -> "_Lock":
        self.fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.fh.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # ENOLCK, EOPNOTSUPP...: no lock here
                raise OutputPathError(
                    f"{self.path.parent}: cannot lock OUT_DIR ({exc.strerror or exc}): its file system does not "
                    "support file locks (e.g. NFS without a lock daemon), which the batch and its results.sqlite "
                    "need; give an OUT_DIR on a local disk, or ask for locking on that share") from None
            raise BatchBusyError(f"{self.path.parent}: another batch is running in this output folder") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()


def _as_cancel(cancel: Any) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be None, a callable returning bool or a threading.Event")


def _params_sha(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def _needs_work(f: InputFile, row: dict | None, *, model_sha: str | None, params_sha: str,
                rehash: bool, retry_failed: bool = False, redo_other_releases: bool = False) -> tuple[bool, bool]:
    """``(redo, stat_changed_but_same_content)`` for one input given its stored row."""
    if row is None:
        return True, False
    if redo_other_releases and row["software_version"] != __version__:
        return True, False
    if row["status"] == "failed" and (row["retryable"] or retry_failed):
        return True, False
    if row["model_sha256"] != model_sha or row["params_sha256"] != params_sha:
        return True, False
    same_stat = row["size_bytes"] == f.size_bytes and row["mtime_ns"] == f.mtime_ns
    if same_stat and not rehash:
        return False, False
    if row["sha256"] is None:
        return (not same_stat), False
    try:
        same_content = sha256_file(f.path) == row["sha256"]
    except OSError:
        return True, False
    return (not same_content), (same_content and not same_stat)


def run_batch(in_dir: str | os.PathLike, out_dir: str | os.PathLike, *, model: str | os.PathLike | None,
              workers: int | None = None, scheduler: Any = None, group_by: str = "folder",
              spec: str | os.PathLike | None = None, progress: Callable[..., Any] | None = None,
              cancel: Any = None, pixel_size_um: float | None = None, rehash: bool = False,
              retry_failed: bool = False, redo_other_releases: bool = False,
              max_tasks_per_child: int | None = 100, report: bool = True, exclude: Iterable[str] = (),
              segment_options: Mapping[str, Any] | None = None, databar_rows: int | None = None,
              process: Callable[[str, BatchConfig], ImageResult] | None = None) -> BatchSummary:
    """Segment and measure every image under ``in_dir``; results in ``out_dir``.

    Parameters
    ----------
    in_dir : str or Path
        Folder searched recursively for images; other files (``README.txt``,
        ``notes.csv``...) are skipped and listed in ``BatchSummary.unsupported``.
    out_dir : str or Path
        Output folder (created); may be re-used to resume an interrupted batch.
        It may lie inside ``in_dir`` (it is not searched) but not be ``in_dir``.
    model : str or Path
        Model name or model folder (see :mod:`micro_seg.registry`).
    workers : int, optional
        Local worker processes (default: the CPU count); each gets
        ``cpu_count // workers`` torch threads.  ``0`` runs in this process
        (no isolation from native crashes; for debugging).
    scheduler : str or distributed.Client, optional
        Address of a dask.distributed scheduler (``tcp://host:8786``) or a
        ``Client``: the images are processed on its workers instead (the input
        and output folders must be visible to them at the same paths).
    group_by : str
        ``"folder"`` (default) or ``"regex:<pattern>"``: how fields are grouped
        into specimens for ``specimens.csv`` (see :func:`micro_seg.specimens.specimen_of`).
    spec : str or Path, optional
        QC specification (issue 7); without it the ``qc_verdict`` is ``not-run``.
    progress : callable, optional
        Called as ``progress(done, total, relpath, status)`` after each image
        (``status`` ``"ok"`` / ``"failed"``; ``done`` counts images finished in
        this run, ``total`` the images to process in this run), and once as
        ``progress(0, total, None, "start")`` before the first.
    cancel : callable or threading.Event, optional
        When it returns / is set true, no new image is started; finished images
        stay recorded (a re-run resumes) and :class:`~micro_seg.errors.CancelledError`
        is raised.
    pixel_size_um : float, optional
        Calibration for every image, overriding the files' metadata.
    rehash : bool
        Check the sha256 of every finished input (default: only of inputs whose
        size or modification time changed).
    retry_failed : bool
        Redo images that failed in an earlier run although they have not changed (e.g. after raising
        ``MICRO_SEG_MAX_PIXELS``); by default only failures that may pass another time (a worker that died,
        a file being written) are retried.
    redo_other_releases : bool
        Redo finished images that another micro-seg release measured (``images.csv``'s ``software_version``);
        by default they are kept, with a warning that counts them.
    max_tasks_per_child : int or None
        Images a worker process handles before it is replaced (bounds memory
        growth; ``None`` = never replaced).
    report : bool
        Write ``report.html`` (default True).
    exclude : iterable of str
        Glob patterns of files or folders to leave out (gitignore-like, see
        :func:`discover_images`), added to those in ``IN_DIR/.micro-seg-ignore`` (and a subfolder's
        ``.micro-seg-ignore`` applies within that subfolder).
        Left-out files are counted and listed (``BatchSummary.ignored``).
    segment_options : mapping, optional
        How to segment every image: ``tile_size``, ``overlap``, ``tta``,
        ``backend`` and, for grain models, ``min_grain_px``, ``threshold``,
        ``split_ratio`` (as ``micro-seg segment``'s options; see
        :func:`~micro_seg.batch_worker.check_segment_options`).  They are part
        of the parameters hash: changing them redoes the finished images.
    databar_rows : int, optional
        Rows of the SEM data bar at the bottom of every image (``0`` = none), instead of detecting
        it in each; an image with no more rows than that fails (the others go on).  Part of the
        parameters hash: changing it redoes the finished images.
    process : callable, optional
        Replacement for :func:`micro_seg.batch_worker.process_image`
        (``process(path, config) -> ImageResult``; must be picklable), for
        custom pipelines.

    Returns
    -------
    BatchSummary
        Counts, failures (``path``, ``error``), paths of the exports; its
        ``exit_code`` is 3 when any image failed.

    Raises
    ------
    InputFileNotFoundError
        ``in_dir`` (or ``spec``) does not exist.
    BatchOptionError
        ``in_dir`` holds no supported image; ``out_dir`` is ``in_dir``, a file
        or cannot be created; a bad option value.
    ModelError
        Unknown or corrupt model (weights not matching their sha256), or a bad
        ``segment_options`` value.
    MicroSegError
        The ``scheduler`` cannot be reached.
    BatchBusyError
        Another batch is writing to ``out_dir``.
    CancelledError
        ``cancel`` fired (the finished images are kept).

    Examples
    --------
    >>> s = run_batch("micrographs", "results", model="grain-boundaries", workers=2)  # doctest: +SKIP
    >>> print(s.n_ok, s.n_failed, s.images_csv)  # doctest: +SKIP
    200 0 results/images.csv
    """
    t0 = time.perf_counter()
    in_path = Path(in_dir).expanduser()
    if in_path.is_file():
        raise BatchOptionError(f"{in_path}: IN_DIR is a file; batch takes a folder of images "
                               f"(for one image: micro-seg analyze {in_path})")
    if not in_path.is_dir():
        raise InputFileNotFoundError(f"{in_path}: input folder does not exist")
    in_path = in_path.resolve()
    out_path = Path(out_dir).expanduser().resolve()
    _check_out_dir(out_path, in_path)
    parse_group_by(group_by)
    if workers is not None and workers < 0:
        raise BatchOptionError(f"workers={workers}: must be >= 0")
    cancelled = _as_cancel(cancel)
    ignore_patterns = read_ignore_file(in_path) + [str(p) for p in exclude]

    if pixel_size_um is not None:
        from micro_seg.io_calibration import validate_pixel_size

        validate_pixel_size(pixel_size_um, source="--pixel-size", path=in_path)
    if databar_rows is not None and (isinstance(databar_rows, bool) or not isinstance(databar_rows, numbers.Integral)
                                     or databar_rows < 0):
        raise BatchOptionError(f"--databar-rows {databar_rows!r}: must be auto or a whole number of rows >= 0 "
                               "(0 = no data bar)")
    spec_path = qc_spec = None
    if spec is not None:
        spec_path = Path(spec).expanduser().resolve()
        if spec_path.is_dir():
            raise InputFileNotFoundError(f"{spec_path}: --spec is a folder; give the QC spec file (YAML or TOML)")
        if not spec_path.is_file():
            raise InputFileNotFoundError(f"{spec_path}: QC spec file does not exist")
        qc_spec = _check_qc_available(spec_path)

    model_name = model_sha = model_task = None
    model_ref = None
    model_postprocess: dict = {}
    if model is not None:
        from micro_seg.registry import load_card, resolve_model

        folder = resolve_model(model)
        card = load_card(folder)
        model_ref, model_name, model_sha, model_task = str(folder), card.name, card.weights_sha256, card.task
        model_postprocess = dict(card.postprocess or {})
        if qc_spec is not None:
            from micro_seg.qc import check_model_measures

            check_model_measures(qc_spec, card)
    elif process is None:
        raise BatchOptionError("a model is required (--model NAME or a model folder)")
    options = check_segment_options(segment_options, task=model_task)

    ignored: list[str] = []
    warnings: list[str] = []
    links: dict[str, list[str]] = {}
    found = discover_images(in_path, exclude=[out_path], ignore=ignore_patterns, ignored=ignored, links=links)
    links = {kind: sorted(paths) for kind, paths in links.items()}
    if links.get("folders"):
        warnings.append(f"{len(links['folders'])} symbolic link(s) to folders not followed (their images are not "
                        f"processed; give the real folder) ({_first_names(links['folders'])})")
    if links.get("outputs"):
        warnings.append(f"{in_path} holds an earlier batch's results ({DB_NAME}): its output folders "
                        f"{', '.join(links['outputs'])} are not read as micrographs")
    if links.get("duplicates"):
        warnings.append(f"{len(links['duplicates'])} link(s) to an image found under another name skipped (the same "
                        f"file would count as two fields) ({_first_names(links['duplicates'])})")
    if links.get("dangling"):
        warnings.append(f"{len(links['dangling'])} dangling symbolic link(s) skipped (they point to nothing) "
                        f"({_first_names(links['dangling'])})")
    warnings += _unmatched_excludes([str(p) for p in exclude], ignored, in_path, out_path)
    files = [f for f in found if f.supported]
    unsupported = [f.relpath for f in found if not f.supported]
    if not files:
        raise BatchOptionError(_no_images_message(in_path, unsupported, ignored,
                                                  links.get("folders", []) + links.get("dangling", [])))
    if model_ref is not None:
        # weights checked once here: a corrupt or tampered model is bad input, not N failures; the
        # process-wide cache hands this very model to inline processing (--workers 0) instead of a second load
        _load_model(model_ref)

    n_cpu = os.cpu_count() or 1
    if scheduler is not None:
        n_workers, threads = None, None
    else:
        n_workers = n_cpu if workers is None else int(workers)
        threads = max(1, n_cpu // max(1, n_workers))
    config = BatchConfig(in_dir=str(in_path), out_dir=str(out_path), model=model_ref,
                         pixel_size_um=pixel_size_um, torch_threads=threads,
                         spec=str(spec_path) if spec_path else None, options=options,
                         databar_rows=None if databar_rows is None else int(databar_rows))
    params = config.processing_parameters()
    params["model"] = model_name
    if model_postprocess:  # the card's post-processing defaults change results as its weights do (card.yaml edits)
        params["model_postprocess"] = model_postprocess
    params["spec_sha256"] = sha256_file(spec_path) if spec_path else None
    params_sha = _params_sha(params)
    run_params = dict(params, group_by=group_by, exclude=ignore_patterns, workers=n_workers,
                      scheduler=_scheduler_text(scheduler), max_tasks_per_child=max_tasks_per_child, rehash=rehash,
                      process=None if process is None else f"{process.__module__}.{process.__qualname__}")

    with ExitStack() as stack:
        client = stack.enter_context(_dask_client(scheduler))  # an unreachable scheduler fails before any output
        _make_out_dir(out_path)
        stack.enter_context(_Lock(out_path / LOCK_NAME))
        store = stack.enter_context(ResultsStore(out_path / DB_NAME))
        run_id = store.start_run(in_dir=str(in_path), out_dir=str(out_path), software_version=__version__,
                                 parameters=run_params, model_name=model_name, model_task=model_task,
                                 model_sha256=model_sha, workers=n_workers,
                                 scheduler=_scheduler_text(scheduler))
        _sweep_temporaries(out_path)
        specimens = {f.relpath: specimen_of(f.relpath, group_by=group_by) for f in files}
        unmatched = [rel for rel, spec in specimens.items() if spec is None]
        if unmatched and group_by != "folder":
            warnings.append(f"--group-by {group_by}: {len(unmatched)} of {len(files)} image(s) match no specimen and "
                            f"are left out of specimens.csv ({_first_names(unmatched)})")
        known = store.known_images()
        todo: list[InputFile] = []
        skipped: list[str] = []
        failed_before: list[str] = []
        lost_outputs: list[str] = []
        for f in files:
            redo, refresh_stat = _needs_work(f, known.get(f.relpath), model_sha=model_sha,
                                             params_sha=params_sha, rehash=rehash, retry_failed=retry_failed,
                                             redo_other_releases=redo_other_releases)
            if not redo and _outputs_missing(out_path, known[f.relpath]):
                redo = True
                lost_outputs.append(f.relpath)
            if redo:
                todo.append(f)
            else:
                skipped.append(f.relpath)
                if known[f.relpath]["status"] == "failed":
                    failed_before.append(f.relpath)
                if refresh_stat:
                    store.update_stat(f.relpath, size_bytes=f.size_bytes, mtime_ns=f.mtime_ns)
        taken = _outputs_taken_over(files, todo, known)
        if taken:  # redone under their new output stem: their rows would name another image's labels
            redo = {f.relpath for f in todo} | taken
            todo = [f for f in files if f.relpath in redo]
            skipped = [rel for rel in skipped if rel not in taken]
            failed_before = [rel for rel in failed_before if rel not in taken]
        store.mark_seen(skipped, run_id, specimens)
        older = sorted({str(known[rel]["software_version"]) for rel in skipped
                        if known[rel]["software_version"] != __version__})
        if older:
            n_older = sum(known[rel]["software_version"] != __version__ for rel in skipped)
            warnings.append(f"{n_older} finished image(s) were measured by micro-seg {', '.join(older)} (this is "
                            f"{__version__}) and are kept as they are (images.csv: software_version); "
                            "--redo-other-releases measures them again")
        if lost_outputs:
            warnings.append(f"{len(lost_outputs)} finished image(s) had lost their label file (deleted or moved "
                            f"out of {out_path}) and were processed again ({_first_names(lost_outputs)})")
        if failed_before:
            warnings.append(f"{len(failed_before)} image(s) that failed in an earlier run and have not changed were "
                            f"not retried ({_first_names(failed_before)}); --retry-failed retries them")

        warnings[:] = [utf8_text(w) for w in warnings]  # some name IN_DIR, which may not be UTF-8: report.html must be
        common = {"model_name": model_name, "model_sha256": model_sha, "params_sha256": params_sha,
                  "software_version": __version__}
        total = len(todo)
        done = 0
        if progress is not None:
            progress(0, total, None, "start")

        def record(f: InputFile, r: ImageResult) -> None:
            nonlocal done
            with deferred_interrupts():  # a stop after the row's COMMIT still counts it (n_processed = rows)
                _record_result(store, f, r, run_id=run_id, specimen=specimens.get(f.relpath), common=common)
                done += 1
            if r.status != "ok":
                _remove_earlier_outputs(store, out_path, f.relpath, known.get(f.relpath))
            if progress is not None:
                progress(done, total, f.relpath, r.status)

        # Files with other extensions that hold a supported format go to the workers too (a TIFF
        # named .dat is read); corrupt files with an image extension fail there with the reader's message.
        images = todo

        status = "finished"
        try:
            if scheduler is not None:
                results = _run_dask(images, config, process, cancelled, client=client)
            elif n_workers == 0:
                results = _run_inline(images, config, process, cancelled)
            else:
                results = _run_local_pool(images, config, process, cancelled, workers=n_workers,
                                          max_tasks_per_child=max_tasks_per_child)
            for f, r in results:
                record(f, r)
            if cancelled():
                status = "cancelled"
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the CLI turns it into this)
            status = "interrupted"
            raise
        except BaseException:
            status = "error"
            raise
        finally:
            rows = _export_rows(store, run_id)
            n_failed = sum(1 for r in rows if r["status"] == "failed")
            counts = {"n_discovered": len(files), "n_processed": done, "n_skipped": len(skipped),
                      "n_ok": len(rows) - n_failed, "n_failed": n_failed}
            store.finish_run(run_id, status=status, counts=counts)
            if status in ("interrupted", "error"):
                # images redone before the stop have new label files: the tables must say what they now hold
                # (an earlier run's images.csv would point at labels of another model), so they are rewritten
                # from the store, which has every finished image; best effort, the original error goes on
                try:
                    write_exports(store, out_path, run_id, rows=rows, write_report=report, ignored=ignored,
                                  warnings=warnings)
                except Exception:  # noqa: BLE001 (never hide why the run stopped)
                    pass

        warnings += _same_content_warning(store, run_id)
        exports = write_exports(store, out_path, run_id, rows=rows, write_report=report, ignored=ignored,
                                warnings=warnings)
        summary = BatchSummary(
            out_dir=out_path, run_id=run_id, n_images=len(rows), n_ok=len(rows) - n_failed, n_failed=n_failed,
            n_processed=done, n_skipped=len(skipped), seconds=time.perf_counter() - t0,
            failures=[{"path": r["path"], "error": r["error"]} for r in rows if r["status"] == "failed"],
            database=out_path / DB_NAME, model=model_name, model_sha256=model_sha,
            cancelled=status == "cancelled", ignored=ignored, unsupported=unsupported, **exports,
            warnings=warnings,
        )
    if summary.cancelled:
        raise CancelledError(f"{in_path}: batch cancelled after {done} of {total} images; re-run to resume")
    return summary


OUTPUT_SUBDIRS = ("labels", "overlays", "objects")


def _check_out_dir(out_path: Path, in_path: Path) -> None:
    """Refuse an output folder that cannot be created or would be read as input (before any work)."""
    if out_path == in_path:
        raise BatchOptionError(f"{out_path}: OUT_DIR is IN_DIR; a re-run would read the labels and overlays as "
                               f"micrographs: give another folder (e.g. {out_path / 'results'})")
    from micro_seg.io import check_output_folder

    check_output_folder(out_path, "OUT_DIR")


def _make_out_dir(out_path: Path) -> None:
    try:
        out_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchOptionError(f"{out_path}: cannot create OUT_DIR: {exc.strerror or exc}") from exc


def _outputs_missing(out_path: Path, row: Mapping[str, Any]) -> bool:
    """Whether a finished image's recorded label file is gone from OUT_DIR (deleted by hand, a folder moved): the
    row alone would skip it, and images.csv would name a result that does not exist.  Overlays (for eyes, often
    deleted to save space) and per-image object tables (also in objects.parquet and the store) do not count."""
    return row["status"] == "ok" and bool(row.get("labels_path")) and not (out_path / row["labels_path"]).is_file()


def _outputs_taken_over(files: list[InputFile], todo: list[InputFile], known: Mapping[str, dict]) -> set[str]:
    """Finished images (relpaths) whose recorded label / overlay / object file an image processed in this run will
    overwrite.  Output stems are given anew as files come and go (``x_png.tif`` added beside ``x.png`` and
    ``x.tif`` takes the stem ``x_png`` that ``x.png`` had): such an image is redone under its new stem, which may
    in turn take another's file, so this repeats until nothing more is taken.

    A finished image whose recorded file is another input's own output name now is redone too: that input wrote
    it, or will (a batch before this check, run after ``x_png.tif`` was added, left ``x.png``'s row naming it).

    >>> f = [InputFile(f"/in/{n}", n, s, True, 1, 1) for n, s in (("x.png", "x_png_2"), ("x_png.tif", "x_png"))]
    >>> _outputs_taken_over(f, [f[1]], {"x.png": {"labels_path": "labels/x_png_labels.tif"}})
    {'x.png'}
    >>> _outputs_taken_over(f, [], {"x.png": {"labels_path": "labels/x_png_labels.tif"},
    ...                             "x_png.tif": {"labels_path": "labels/x_png_labels.tif"}})
    {'x.png'}
    """
    redo = {f.relpath for f in todo}
    stems = {f.relpath: f.stem for f in files}
    keys = ("labels_path", "overlay_path", "objects_path")
    recorded = {f.relpath: {(known.get(f.relpath) or {}).get(k) for k in keys} - {None} for f in files}
    owner = {name: f.relpath for f in files for name in output_files(f.stem).values()}
    new = redo | {rel for rel, paths in recorded.items() if any(owner.get(p, rel) != rel for p in paths)}
    redo |= new
    claimed: set[str] = set()
    while new:
        for rel in new:
            claimed.update(output_files(stems[rel]).values())
        new = {rel for rel, paths in recorded.items() if rel not in redo and paths & claimed}
        redo |= new
    return redo - {f.relpath for f in todo}


def _same_content_warning(store: ResultsStore, run_id: int) -> list[str]:
    """A warning naming the images of this run whose content (sha256) is another's: a copy (``field (1).tif`` from a
    download, a field filed under two specimens) counts as a second field and makes a specimen's confidence
    interval look tighter than it is.  Links to one file are already one input; copies are left to the user."""
    groups = [r[0].split("\0") for r in store.query(
        "SELECT group_concat(relpath, char(0)) FROM (SELECT sha256, relpath FROM images WHERE last_seen_run = ? AND"
        " status = 'ok' AND sha256 IS NOT NULL ORDER BY relpath) GROUP BY sha256 HAVING count(*) > 1"
        " ORDER BY min(relpath)", (run_id,))]
    if not groups:
        return []
    pairs = [" = ".join(sorted(g)) for g in groups]
    return [f"{sum(len(g) - 1 for g in groups)} image(s) have the same content as another, so one field counts "
            f"more than once in specimens.csv (remove the copies or --exclude them) ({_first_names(pairs)})"]


def _unmatched_excludes(patterns: list[str], ignored: list[str], in_path: Path, out_path: Path) -> list[str]:
    """One warning per ``--exclude`` pattern that left nothing out: a typo, or a path given from the current folder
    (``sample_images/truth/``, shell completion) where patterns are relative to IN_DIR (``truth/``); the files it
    meant were measured, and pooled into their specimens, as micrographs.  A pattern naming a folder the batch
    never reads (OUT_DIR, another batch's output folder, a hidden one) is no slip."""
    out = []
    for pat in dict.fromkeys(patterns):
        # ignored names are text (utf8_text: \xb5 for a byte that is not UTF-8), as the pattern must be to match them
        if any(_ignored(p.rstrip("/"), [utf8_text(pat)], is_dir=p.endswith("/")) for p in ignored):
            continue
        named = (in_path / pat.strip("/")).resolve() if pat.strip("/") and not any(c in pat for c in "*?[") else None
        if named is not None and (named == out_path or (named / DB_NAME).is_file() or named.name.startswith(".")):
            continue
        hint = ""
        try:
            target = Path(pat).expanduser().resolve()
        except (RuntimeError, OSError):  # '~$*' (Office's lock files) is a pattern, not a user's home folder
            target = in_path
        if target != in_path and target.is_relative_to(in_path) and target.exists():
            hint = f"; for {target} give --exclude '{target.relative_to(in_path).as_posix()}{'/' * target.is_dir()}'"
        out.append(f"--exclude '{pat}' left nothing out (patterns are relative to IN_DIR {in_path}, gitignore-like: "
                   f"'*.md', 'truth/', 'sub/*.tif'){hint}")
    return out


def _first_names(names: list[str], limit: int = 3) -> str:
    """``first: a, b, c`` (and how many more) for a warning line.

    >>> _first_names(["a.tif", "b.tif", "c.tif", "d.tif"])
    'first: a.tif, b.tif, c.tif, and 1 more'
    """
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return f"first: {', '.join(names[:limit])}{more}"


def _no_images_message(in_path: Path, unsupported: list[str], ignored: list[str], links: list[str] = ()) -> str:
    """``IN_DIR: no supported images found (supported: ...)``, saying what was found instead."""
    from micro_seg.io import SUPPORTED_EXTENSIONS

    msg = f"{in_path}: no supported images found (supported: {', '.join(SUPPORTED_EXTENSIONS)})"
    others = []
    if unsupported:
        others.append(f"{len(unsupported)} other file(s) skipped ({', '.join(unsupported_extensions(unsupported))})")
    if ignored:
        others.append(f"{len(ignored)} left out by --exclude / {IGNORE_FILE}")
    if links:
        others.append(f"{len(links)} symbolic link(s) not followed or dangling ({_first_names(list(links))})")
    return msg + ("; " + ", ".join(others) if others else "")


def unsupported_extensions(relpaths: Iterable[str]) -> list[str]:
    """Sorted distinct extensions of skipped files (``"(none)"`` for names without one).

    Examples
    --------
    >>> unsupported_extensions(["README.txt", "a/notes.CSV", "b/c.txt", "Makefile"])
    ['(none)', '.csv', '.txt']
    """
    return sorted({Path(r).suffix.lower() or "(none)" for r in relpaths})


def _sweep_temporaries(out_dir: Path) -> int:
    """Delete temporary files left by writers killed mid-write (we hold the folder lock): this run's ``*.tmp*``,
    and the per-process temporaries of other micro-seg commands that are :func:`~micro_seg.batch_worker.stale_temporary`
    (micro-seg's own names, untouched for an hour, their process gone)."""
    n = 0
    candidates = [p for p in out_dir.iterdir() if p.is_file()]
    for sub in OUTPUT_SUBDIRS:
        if (out_dir / sub).is_dir():
            candidates += [p for p in (out_dir / sub).rglob(".*") if p.is_file()]
    for p in candidates:
        if p.name.startswith(".") and (".tmp" in p.name or stale_temporary(p)):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


def _scheduler_text(scheduler: Any) -> str | None:
    if scheduler is None:
        return None
    if hasattr(scheduler, "scheduler") and hasattr(scheduler.scheduler, "address"):
        return str(scheduler.scheduler.address)
    return str(scheduler)


def _check_qc_available(spec_path: Path) -> Any:
    """Fail early (before any image) on a malformed spec; returns the parsed spec."""
    try:
        from micro_seg import qc
    except ImportError:
        raise SpecError(f"{spec_path}: QC specs arrive with issue 7 (micro_seg.qc is not available yet)") from None
    return qc.load_spec(spec_path)


def _remove_earlier_outputs(store: ResultsStore, out_path: Path, relpath: str, row: dict | None) -> None:
    """An image that failed now leaves no label / overlay / object file of its earlier result behind: they showed
    content the image no longer has (it changed) or a model / options no longer used.  A file another image now
    records as its own (its output stem was reassigned) stays."""
    for key in ("labels_path", "overlay_path", "objects_path"):
        rel = (row or {}).get(key)
        if not rel or store.output_in_use(rel, by_other_than=relpath):
            continue
        path = (out_path / rel).resolve()
        if path.is_relative_to(out_path) and path.is_file():
            try:
                path.unlink()
            except OSError:
                pass


def _record_result(store: ResultsStore, f: InputFile, r: ImageResult, *, run_id: int, specimen: str | None,
                   common: dict[str, Any]) -> None:
    shape = r.shape or ()
    fields = {
        "abspath": f.path,
        "size_bytes": r.size_bytes if r.size_bytes is not None else f.size_bytes,
        "mtime_ns": r.mtime_ns if r.mtime_ns is not None else f.mtime_ns,
        "sha256": r.sha256,
        "status": r.status,
        "error": r.error,
        "error_type": r.error_type,
        "retryable": int(bool(r.retryable)),
        "specimen": specimen,
        "rows": shape[0] if len(shape) > 0 else None,
        "cols": shape[1] if len(shape) > 1 else None,
        "channels": shape[2] if len(shape) > 2 else (1 if shape else None),
        "dtype": r.dtype,
        "pixel_size_um": r.pixel_size_um,
        "calibration_source": r.calibration_source,
        "databar_rows": r.databar_rows,
        "labels_path": r.outputs.get("labels"),
        "overlay_path": r.outputs.get("overlay"),
        "objects_path": r.outputs.get("objects"),
        "qc_verdict": r.qc_verdict,
        "seconds": r.seconds,
        "worker": r.worker,
        "processed_utc": utc_now(),
        **common,
    }
    if r.model_name and r.status == "ok":
        fields["model_name"] = r.model_name
    store.record(f.relpath, fields, measurements=r.measurements if r.status == "ok" else None,
                 objects=r.objects if r.status == "ok" else None, flags=r.flags, run_id=run_id)


# ----------------------------------------------------------------------------------------
# exports (streamed from the database, deterministic, atomic)
# ----------------------------------------------------------------------------------------
def _export_rows(store: ResultsStore, run_id: int) -> list[dict[str, Any]]:
    """The rows of ``images.csv`` (dicts, sorted by path) for the images of ``run_id``."""
    images = store.images(seen_in_run=run_id)
    meas = store.measurements(seen_in_run=run_id)
    keys = store.measurement_keys(seen_in_run=run_id)
    qc_reasons: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}  # what the reader, the model and the measurements warned about
    for fl in store.flags(seen_in_run=run_id):
        if fl["source"] == "qc":  # a check that could not run has no value: its message says why
            # each reason with its severity: a "fail" row's reasons may be "review" ones too (a margin, a G_planimetric
            # judged at review), and only the severity tells which of them failed it
            qc_reasons.setdefault(fl["relpath"], []).append(f"{fl['severity']}: " + (
                f"{fl['check_name']}={fl['value']} (limit {fl['limit_value']})" if fl["value"] is not None
                else (fl["message"] if str(fl["message"]).startswith(str(fl["check_name"]))
                      else f"{fl['check_name']}: {fl['message']}")))
        elif fl["message"]:
            notes.setdefault(fl["relpath"], []).append(str(fl["message"]))
    rows = []
    for im in images:
        row: dict[str, Any] = {
            "path": im["relpath"],
            "status": im["status"],
            "error": im["error"] or "",
            "specimen": im["specimen"] if im["specimen"] is not None else "",
            "pixel_size_um": im["pixel_size_um"],
            "calibration_source": im["calibration_source"] or "",
            "units": ("um" if im["pixel_size_um"] else "px") if im["status"] == "ok" else "",
        }
        m = meas.get(im["image_id"], {})
        for k in keys:
            row[k] = m.get(k)
        row.update({
            "qc_verdict": im["qc_verdict"] or ("not-run" if im["status"] == "ok" else ""),
            "qc_reasons": "; ".join(qc_reasons.get(im["relpath"], [])),
            # a number with a warning (a constant image, too few grains for E112) must not look like any other
            "warnings": " | ".join(dict.fromkeys(notes.get(im["relpath"], []))),
            "rows": im["rows"], "cols": im["cols"], "databar_rows": im["databar_rows"],
            "sha256": im["sha256"] or "", "model": im["model_name"] or "", "model_sha256": im["model_sha256"] or "",
            # which release measured this row: a resumed folder can hold rows of two releases (when: results.sqlite,
            # kept out of the table so that two runs on the same images give the same images.csv byte for byte)
            "software_version": im["software_version"] or "",
            "labels": im["labels_path"] or "", "overlay": im["overlay_path"] or "",
            "objects": im["objects_path"] or "",
        })
        rows.append(row)
    return rows


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else ""
    return v


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for r in rows:
                w.writerow([_csv_cell(r.get(c)) for c in columns])


def export_images_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``images.csv``: one row per image, contract columns first."""
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    if not columns:
        columns = list(IMAGE_COLUMNS_HEAD) + list(IMAGE_COLUMNS_TAIL)
    _write_csv(Path(path), rows, columns)
    return Path(path)


def export_specimens_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> tuple[Path, list[dict]]:
    """Write ``specimens.csv`` (field statistics per specimen); returns the rows too."""
    table = specimen_table(rows)
    columns: list[str] = ["specimen", "n_fields", "n_failed", "n_uncalibrated"]
    derived = ["G_planimetric", "G_planimetric_ci95_low", "G_planimetric_ci95_high",
               "G_intercept", "G_intercept_ci95_low", "G_intercept_ci95_high"]
    for r in table:
        for k in r:
            if k not in columns and k not in derived:
                columns.append(k)
    present = [k for k in derived if any(k in r for r in table)]
    columns = columns[:4] + present + columns[4:]
    _write_csv(Path(path), table, columns)
    return Path(path), table


def _arrow_kind(v: Any) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return None


def export_objects_parquet(store: ResultsStore, path: str | os.PathLike, *, run_id: int) -> Path | None:
    """Write every object of the batch to one Parquet file (streamed in chunks).

    Columns: ``path``, ``specimen``, ``kind``, ``object_id`` and the union of the
    per-object properties (missing values null).  Returns None when there are no
    objects (no file written).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, str] = {}
    for chunk in store.iter_objects(seen_in_run=run_id):  # pass 1: schema
        for row in chunk:
            for k, v in row.items():
                t = columns.get(k)
                kind = _arrow_kind(v)
                if kind is None:
                    columns.setdefault(k, t or "null")
                elif t in (None, "null") or t == kind:
                    columns[k] = kind
                elif {t, kind} <= {"bool", "int", "float"}:
                    columns[k] = "float" if "float" in (t, kind) else "int"
                else:
                    columns[k] = "str"
    if not columns:
        return None
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "null": pa.float64()}
    schema = pa.schema([(k, types[t]) for k, t in columns.items()],
                       metadata={GENERATOR_KEY: f"micro-seg {__version__}".encode()})
    out = Path(path)
    with atomic_path(out) as tmp:
        # a Python file, not the path: pyarrow takes only UTF-8 paths (an OUT_DIR named in Latin-1 failed)
        with open(tmp, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:
            for chunk in store.iter_objects(seen_in_run=run_id):  # pass 2: data
                arrays = []
                for k, t in columns.items():
                    vals = [r.get(k) for r in chunk]
                    if t == "str":
                        vals = [None if v is None else str(v) for v in vals]
                    elif t == "float" or t == "null":
                        vals = [None if v is None or isinstance(v, str) else float(v) for v in vals]
                    elif t == "int":
                        vals = [None if v is None or isinstance(v, str) else int(v) for v in vals]
                    arrays.append(pa.array(vals, type=types[t]))
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    return out


#: Key of the schema metadata that marks an ``objects.parquet`` as micro-seg's.
GENERATOR_KEY = b"generator"


def _written_by_micro_seg(path: Path) -> bool:
    """True for an ``objects.parquet`` / ``report.html`` an earlier batch wrote (its generator mark)."""
    if not path.is_file():
        return False
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            with open(path, "rb") as fh:
                meta = pq.read_schema(fh).metadata or {}
            return meta.get(GENERATOR_KEY, b"").startswith(b"micro-seg")
        from micro_seg.report import GENERATOR_MARK

        with open(path, "rb") as fh:
            return GENERATOR_MARK.encode() in fh.read(4096)
    except Exception:  # noqa: BLE001 (unreadable, not parquet, no pyarrow: not ours to delete)
        return False


@contextmanager
def _export_error(path: Path) -> Iterator[None]:
    """An export that cannot be written (disk full, no permission, a folder in its place) is one line naming the
    file, not an internal error: the images are recorded in the store, and a re-run only rewrites the exports."""
    try:
        yield
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot write this batch export: {exc.strerror or exc}; fix that and re-run the "
                              f"same command: the images recorded in {DB_NAME} are kept, not processed again") from None


def write_exports(store: ResultsStore, out_dir: Path, run_id: int, *, rows: list[dict[str, Any]] | None = None,
                  write_report: bool = True, ignored: list[str] | None = None,
                  warnings: list[str] | None = None) -> dict[str, Path | None]:
    """Write ``images.csv``, ``specimens.csv``, ``objects.parquet`` and ``report.html``.

    Raises :class:`~micro_seg.errors.OutputPathError` naming the file when one cannot be written.
    """
    rows = _export_rows(store, run_id) if rows is None else rows
    with _export_error(out_dir / "images.csv"):
        images_csv = export_images_csv(rows, out_dir / "images.csv")
    with _export_error(out_dir / "specimens.csv"):
        specimens_csv, specimen_rows = export_specimens_csv(rows, out_dir / "specimens.csv")
    with _export_error(out_dir / "objects.parquet"):
        objects = export_objects_parquet(store, out_dir / "objects.parquet", run_id=run_id)
    report_path = None
    if write_report:
        from micro_seg.report import write_report as _write_report

        with _export_error(out_dir / "report.html"):
            report_path = _write_report(out_dir / "report.html", store=store, run_id=run_id, image_rows=rows,
                                        specimen_rows=specimen_rows, out_dir=out_dir, ignored=ignored or [],
                                        warnings=warnings or [])
    # an earlier run's object table or report, not rewritten now, would contradict images.csv: they go (only
    # files micro-seg wrote: a user's own report.html in OUT_DIR stays)
    for written, name in ((objects, "objects.parquet"), (report_path, "report.html")):
        if written is None and _written_by_micro_seg(out_dir / name):
            (out_dir / name).unlink()
    return {"images_csv": images_csv, "specimens_csv": specimens_csv, "objects_parquet": objects,
            "report": report_path}
