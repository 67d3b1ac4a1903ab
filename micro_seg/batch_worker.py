"""The per-image work of a batch, run inside worker processes (local or dask).

:func:`process_image` reads and calibrates one micrograph, segments it with the
model, post-processes and measures the result, writes the calibrated label TIFF,
an overlay PNG and the per-object table (each written atomically: temporary file
then ``os.replace``), and returns an :class:`ImageResult`.  It never touches the
results database: the batch driver records the result only after the outputs
exist, so a crash at any moment never leaves an image marked done without its
files.

:func:`safe_process` wraps any per-image function so that an exception becomes a
``failed`` result carrying the error (failures are isolated per image).

Examples
--------
>>> from micro_seg.batch_worker import flatten_measurements
>>> flatten_measurements({"n_grains": 3, "ci95": [1.0, 2.0], "phase_fractions": {"a": 0.5}})
{'n_grains': 3, 'ci95_low': 1.0, 'ci95_high': 2.0, 'phase_fraction_a': 0.5}
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from micro_seg.errors import OutputPathError
from micro_seg.registry import sha256_file  # also re-exported (batch.py imports it from here)

__all__ = [
    "BatchConfig",
    "check_segment_options",
    "ImageResult",
    "process_image",
    "safe_process",
    "init_worker",
    "atomic_path",
    "sha256_file",
    "flatten_measurements",
    "output_stem",
    "output_files",
    "render_overlay",
    "overlay_preview",
]

OVERLAY_MAX_SIDE = 2048  # overlays larger than this are downsampled (they are for eyes, not numbers)


@dataclass(frozen=True)
class BatchConfig:
    """Frozen, picklable parameters of one batch (sent to every worker).

    Parameters
    ----------
    in_dir, out_dir : str
        Absolute input and output folders.
    model : str or None
        Model name or model folder (``None`` only with a custom per-image function).
    pixel_size_um : float or None
        Override of every image's calibration (``None``: read from each file).
    torch_threads : int or None
        Torch intra-op threads in each worker (``None``: leave torch's default).
    write_labels, write_overlay, write_objects : bool
        Which per-image output files to write.
    spec : str or None
        QC specification file (issue 7); ``None`` = QC not run.
    options : tuple of (str, value)
        How to segment every image (kept hashable; see :func:`check_segment_options`);
        part of the parameters hash, so changing them redoes the images.
    databar_rows : int or None
        Rows of the SEM data bar of every image (``0`` = none); ``None``: detected in each image.
        Part of the parameters hash when given.
    """

    in_dir: str
    out_dir: str
    model: str | None
    pixel_size_um: float | None = None
    torch_threads: int | None = None
    write_labels: bool = True
    write_overlay: bool = True
    write_objects: bool = True
    spec: str | None = None
    options: tuple = ()
    databar_rows: int | None = None

    def processing_parameters(self) -> dict[str, Any]:
        """The parameters that change per-image results (hashed to decide redo)."""
        params = {
            "model": self.model,
            "pixel_size_um": self.pixel_size_um,
            "spec": self.spec,
            "options": [list(kv) for kv in self.options],
        }
        if self.databar_rows is not None:  # only when given: the batches detecting it keep their earlier hash
            params["databar_rows"] = self.databar_rows
        return params


#: Options of :func:`~micro_seg.postprocess.segment_image` a batch can set: inference ...
PREDICT_OPTIONS = ("tile_size", "overlap", "tta", "backend")
#: ... and grain post-processing.
POSTPROCESS_OPTIONS = ("min_grain_px", "threshold", "split_ratio", "marker_threshold")


def check_segment_options(options: Mapping[str, Any] | None, *, task: str | None) -> tuple:
    """Check a batch's segmentation options; returns them as a sorted tuple of pairs (for :class:`BatchConfig`).

    Keys: ``tile_size`` and ``overlap`` (pixels), ``tta`` (bool), ``backend``
    (``"torch"`` / ``"onnx"``; onnx must be installed) and, for grain models
    (``task == "grains"``), ``min_grain_px``, ``threshold``, ``split_ratio``,
    ``marker_threshold``.
    ``None`` values are left out (the model card's defaults apply).  A bad
    option fails the whole batch before its first image, not every image.

    Raises
    ------
    ModelError, MicroSegError
        An unknown key, a value out of range, a post-processing option for a
        model that is not a grain model, or a backend that is not installed.

    Examples
    --------
    >>> check_segment_options({"tta": True, "split_ratio": 3, "tile_size": None}, task="grains")
    (('split_ratio', 3), ('tta', True))
    >>> check_segment_options({"split_ratio": 3}, task="semantic")
    Traceback (most recent call last):
    ...
    micro_seg.errors.ModelError: post-processing option split_ratio applies to grain models only; this model's task is semantic
    """
    from micro_seg.errors import ModelError
    from micro_seg.inference import check_backend_available
    from micro_seg.registry import check_postprocess_values

    # numpy numbers (a value from an array or a table) as Python ones: they were refused as 'must be a finite number
    # >= 0, got np.float32(0.4)', and the batch's parameters are hashed as JSON
    given = {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(given) - set(PREDICT_OPTIONS) - set(POSTPROCESS_OPTIONS))
    if unknown:
        raise ModelError(f"unknown segmentation option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(PREDICT_OPTIONS + POSTPROCESS_OPTIONS)}")
    for key in ("tile_size", "overlap"):
        if key in given:
            v = given[key]
            low = 16 if key == "tile_size" else 0
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ModelError(f"{key} must be a whole number of pixels >= {low}, got {v!r}")
            given[key] = int(v)
    if "overlap" in given and "tile_size" in given and given["overlap"] >= given["tile_size"]:
        raise ModelError(f"overlap {given['overlap']} must be smaller than the tile size {given['tile_size']}")
    if "tta" in given:
        given["tta"] = bool(given["tta"])
    if "backend" in given:
        given["backend"] = check_backend_available(given["backend"])
    post = {k: given[k] for k in POSTPROCESS_OPTIONS if k in given}
    if post and task != "grains":
        raise ModelError(f"post-processing option {next(iter(post))} applies to grain models only; "
                         f"this model's task is {task}")
    check_postprocess_values(post)
    return tuple(sorted(given.items()))


@dataclass
class ImageResult:
    """What one image produced (or why it failed); picklable, no arrays."""

    relpath: str
    status: str  # "ok" | "failed"
    error: str | None = None
    error_type: str | None = None
    retryable: bool = False
    sha256: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    shape: tuple | None = None
    dtype: str | None = None
    pixel_size_um: float | None = None
    calibration_source: str | None = None
    databar_rows: int | None = None
    model_name: str | None = None
    model_sha256: str | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, dict[str, list]] = field(default_factory=dict)
    flags: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> path relative to out_dir
    qc_verdict: str | None = None
    seconds: float = 0.0
    worker: str | None = None


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------
def _process_umask() -> int:
    """The process's file-creation mask (read once, at import, while nothing else runs)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success ``os.replace`` it into place.

    A reader never sees a half-written ``final``: either the old file or the
    complete new one.  On an exception the temporary file is removed.  The
    temporary name keeps the final suffix (writers that look at it still work).
    The file gets the permissions of a plain ``open`` under the user's umask
    (e.g. 0644), not the temporary file's private 0600, so colleagues on shared
    storage can read the results.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    >>> oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_UMASK)
    True
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:  # data on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, final)
    except BaseException:
        try:
            tmp_path.unlink()
        except FileNotFoundError:
            pass
        raise


def output_stem(relpath: str) -> str:
    """Output name stem for an input: its relative path without the extension.

    Inputs that differ only by extension (``a.tif``, ``a.png``) are told apart by
    :func:`micro_seg.batch.discover_images`, which passes ``a_tif``-style stems.

    Examples
    --------
    >>> output_stem("sub/field_01.tif")
    'sub/field_01'
    """
    p = Path(relpath)
    return (p.parent / p.stem).as_posix()


def output_files(stem: str) -> dict[str, str]:
    """The label, overlay and object files (relative to OUT_DIR) that :func:`process_image` writes for an output
    stem; :func:`micro_seg.batch.run_batch` checks them against other images' recorded files.

    >>> output_files("sub/f")["labels"]
    'labels/sub/f_labels.tif'
    """
    return {"labels": f"labels/{stem}_labels.tif", "overlay": f"overlays/{stem}_overlay.png",
            "objects": f"objects/{stem}_objects.csv"}


def flatten_measurements(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested measurement summary into ``key -> scalar``.

    Nested dicts join keys with ``_`` (``phase_fractions`` -> ``phase_fraction_<name>``,
    ``ci95`` -> ``ci95_<name>``); 2-element lists become ``_low`` / ``_high``;
    other lists ``_0``, ``_1``, ...  Tables (DataFrames) and arrays are dropped.
    """
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if name.endswith("phase_fractions"):
            name = name[: -len("phase_fractions")] + "phase_fraction"
        if isinstance(value, Mapping):
            out.update(flatten_measurements(value, prefix=f"{name}_"))
        elif isinstance(value, (list, tuple)):
            if all(_is_scalar(v) for v in value):
                suffixes = ("low", "high") if len(value) == 2 else [str(i) for i in range(len(value))]
                for s, v in zip(suffixes, value):
                    out[f"{name}_{s}"] = _scalar(v)
        elif _is_scalar(value):
            out[name] = _scalar(value)
    return out


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, np.generic))


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _table_columns(table: Any) -> dict[str, list]:
    """A per-object table (DataFrame, dict of columns, structured array) as ``{col: list}``."""
    if table is None:
        return {}
    if hasattr(table, "to_dict") and hasattr(table, "columns"):  # pandas DataFrame
        return {str(c): table[c].tolist() for c in table.columns}
    if isinstance(table, Mapping):
        return {str(c): np.asarray(v).tolist() for c, v in table.items()}
    if isinstance(table, np.ndarray) and table.dtype.names:
        return {c: table[c].tolist() for c in table.dtype.names}
    raise TypeError(f"unsupported per-object table type {type(table).__name__}")


# ----------------------------------------------------------------------------------------
# worker process set-up and model cache
# ----------------------------------------------------------------------------------------
_MODEL_CACHE: dict[str, Any] = {}


def _zombie(pid: int) -> bool:
    """Whether process ``pid`` (known to exist) is a zombie: dead, not yet reaped (False where /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (pid reused): treat as gone
        return False
    return not _zombie(pid)


#: micro-seg's own per-process temporaries, exactly as its writers name them: ``.<stem>_probabilities.tif.<pid>.part``
#: and ``.<stem>_uncertainty.tif.<pid>.part`` (segment's :func:`~micro_seg.commands.segment.write_probabilities`),
#: ``.<name>.tif.<pid>.<8 hex>.tmp`` (:func:`micro_seg.io.write_labels`).  Nothing looser: a hidden
#: ``.<name>.<number>.part`` of another program (a downloader's chunk 3) is not ours to delete.
_PID_TEMPORARY = re.compile(r"\.(?:.+_(?:probabilities|uncertainty)\.tif\.(?P<pid>\d+)\.part"
                            r"|.+\.tiff?\.(?P<pid_labels>\d+)\.[0-9a-f]{8}\.tmp)")
#: A temporary is only swept once untouched for this long (seconds): the PID in its name says nothing about a
#: process on another machine sharing the folder (NFS) or in another container, whose write is still going on
#: (a live writer keeps the file's modification time fresh).
STALE_TEMPORARY_AGE_S = 3600.0


def _pid_in_use(pid: int) -> bool:
    """Whether a process with this PID exists here (another user's counts: it may be micro-seg writing; a zombie
    does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user: perhaps their micro-seg, mid-write
        return True
    except (OverflowError, ValueError, OSError):
        return True  # cannot tell: keep the file
    return not _zombie(pid)


def stale_temporary(path: str | os.PathLike[str], *, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary that a micro-seg process killed mid-write left behind: its name is one of
    micro-seg's per-process temporaries (:data:`_PID_TEMPORARY`), it has not been touched for
    :data:`STALE_TEMPORARY_AGE_S` (a writer on another machine sharing the folder keeps it fresh) and no process
    with the PID it names exists here (another process's, whoever owns it, is never touched).

    Examples
    --------
    >>> stale_temporary(f".a_probabilities.tif.{os.getpid()}.part"), stale_temporary("a_probabilities.tif.1.part")
    (False, False)
    >>> stale_temporary(".video.mp4.3.part")  # another program's numbered part: never ours
    False
    """
    m = _PID_TEMPORARY.fullmatch(Path(path).name)
    if m is None:
        return False
    pid = int(m["pid"] or m["pid_labels"])
    if pid == os.getpid() or not 0 < pid < 2**22:  # not a PID this machine can have: not judged, kept
        return False
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
    except OSError:
        return False
    return age >= STALE_TEMPORARY_AGE_S and not _pid_in_use(pid)


def sweep_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the :func:`stale_temporary` files directly in ``folder``; returns how many."""
    n = 0
    with contextlib.suppress(OSError):
        for p in Path(folder).iterdir():
            if p.name.startswith(".") and stale_temporary(p) and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    n += 1
    return n


def _stop_orphaned_forkserver(pid: int) -> None:
    """The batch driver is gone: stop the multiprocessing forkserver it started for us
    (it holds a preloaded torch and would otherwise linger)."""
    import signal

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"multiprocessing.forkserver" in fh.read():
                os.kill(pid, signal.SIGTERM)
    except OSError:
        pass


def _watch_parent(parent_pid: int, driver_pid: int | None = None, interval: float = 1.0) -> None:
    """Exit this worker when its parent or the batch driver is gone (a killed batch
    leaves no orphans, even when the multiprocessing forkserver outlives it)."""
    import threading

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid or (driver_pid is not None and not _alive(driver_pid)):
                _stop_orphaned_forkserver(parent_pid)
                os._exit(1)

    threading.Thread(target=loop, name="micro-seg-parent-watch", daemon=True).start()


def init_worker(torch_threads: int | None, watch_parent: bool | int = False) -> None:
    """Initializer of each worker process: limit torch threads to its share.

    With ``watch_parent`` (True, or the batch driver's pid) the worker exits by
    itself as soon as its parent process or the driver dies (so killing a batch
    never leaves orphaned workers behind).
    """
    if watch_parent:
        driver = watch_parent if not isinstance(watch_parent, bool) else None
        _watch_parent(os.getppid(), driver)
    if torch_threads:
        if watch_parent:  # a worker process of ours: libraries started later get the same share
            os.environ["OMP_NUM_THREADS"] = str(torch_threads)
        _set_torch_threads(int(torch_threads))
        try:
            import torch

            torch.set_num_interop_threads(1)
        except (ImportError, RuntimeError):  # already set in this process
            pass


def _load_model(spec: str) -> Any:
    """Load (once per process) the model named ``spec``; keeps one model cached."""
    model = _MODEL_CACHE.get(spec)
    if model is None:
        from micro_seg.registry import load_model

        _MODEL_CACHE.clear()
        model = load_model(spec)
        _MODEL_CACHE[spec] = model
    return model


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ----------------------------------------------------------------------------------------
# the per-image function
# ----------------------------------------------------------------------------------------
class OutputWriteError(OutputPathError):
    """An image's outputs could not be written to OUT_DIR (permissions, disk full...).

    Not a fault of the input: the failure is retryable, so a re-run after
    fixing OUT_DIR redoes the image.
    """


def safe_process(path: str, config: BatchConfig, process: Callable | None = None,
                 outputs_stem: str | None = None) -> ImageResult:
    """Run ``process(path, config)`` (default :func:`process_image`), never raising.

    Any exception becomes an :class:`ImageResult` with ``status="failed"`` and the
    error text (``"<ErrorClass>: <message>"``).  Errors of micro-seg's own classes
    (bad or unsupported input) are final; anything else (a bug, out of memory,
    an output that could not be written: :class:`OutputWriteError`) is marked
    ``retryable`` so a re-run tries the image again.
    """
    from micro_seg.errors import MicroSegError

    t0 = time.perf_counter()
    relpath = Path(path).relative_to(config.in_dir).as_posix()
    threads = config.torch_threads or _dask_worker_threads()
    if threads:
        _set_torch_threads(threads)
    try:
        fn = process or process_image
        if fn is process_image:
            result = process_image(path, config, outputs_stem=outputs_stem)
        else:
            result = fn(path, config)
    except MemoryError:
        result = ImageResult(relpath, "failed", error=f"MemoryError: {path}: out of memory",
                             error_type="MemoryError", retryable=True)
    except Exception as exc:  # noqa: BLE001 - failures are isolated per image by design
        msg = str(exc) or repr(exc)
        result = ImageResult(relpath, "failed", error=f"{type(exc).__name__}: {msg}",
                             error_type=type(exc).__name__,
                             retryable=isinstance(exc, OutputWriteError) or not isinstance(exc, MicroSegError))
    if result.status == "failed" and (result.sha256 is None or result.size_bytes is None):
        try:  # record what the failed input was, so a fixed file is noticed and redone
            st = os.stat(path)
            result.size_bytes, result.mtime_ns = st.st_size, st.st_mtime_ns
            result.sha256 = sha256_file(path)
        except OSError:
            pass
    result.seconds = time.perf_counter() - t0
    result.worker = _worker_name()
    return result


def _dask_worker_threads() -> int | None:
    """Inside a dask worker: its CPU share per task thread (cores // worker threads)."""
    import sys

    if "distributed" not in sys.modules:  # not a dask worker (and do not pay for the import)
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    nthreads = getattr(getattr(worker, "state", worker), "nthreads", None) or 1
    return max(1, (os.cpu_count() or 1) // int(nthreads))


def _set_torch_threads(n: int) -> None:
    """Torch intra-op threads for this process, through the engine's setting (so the
    first prediction does not reset it to all cores)."""
    from micro_seg.inference import configure_threads

    import torch

    if torch.get_num_threads() != n or not _threads_set.get(n):
        configure_threads(n)
        _threads_set.clear()
        _threads_set[n] = True


_threads_set: dict[int, bool] = {}


def process_image(path: str, config: BatchConfig, *, outputs_stem: str | None = None) -> ImageResult:
    """Read, calibrate, segment, measure (and QC) one micrograph and write its outputs.

    The same engine functions as ``micro-seg analyze`` run here:
    :func:`micro_seg.io.read_micrograph`, :func:`micro_seg.postprocess.segment_image`
    (tiled :func:`~micro_seg.inference.predict` + post-processing) and
    :func:`~micro_seg.measure.measure_grains` (grain models) or
    :func:`~micro_seg.measure.measure_phases` / :func:`~micro_seg.measure.measure_defects`
    (semantic models); with a QC spec, :func:`micro_seg.qc.evaluate`.  As in
    ``micro-seg segment``, the pixels are released once inference is done, so
    a huge image is post-processed without them: the QC pixel checks and the
    overlay's downsampled preview are taken before.

    Parameters
    ----------
    path : str
        The input image (inside ``config.in_dir``).
    config : BatchConfig
        Batch parameters (model, calibration override, output folder, QC spec).
    outputs_stem : str, optional
        Output name stem, relative to the output sub-folders (default: the
        input's relative path without its extension).

    Returns
    -------
    ImageResult
        ``status="ok"`` with calibration, flat measurements, per-object tables,
        flags, QC verdict and the output files written (labels TIFF with the
        calibration, overlay PNG, objects CSV).  Errors raise; use
        :func:`safe_process` to turn them into ``failed`` results.

    Examples
    --------
    >>> from micro_seg.batch_worker import BatchConfig, process_image
    >>> cfg = BatchConfig(in_dir="/data", out_dir="/data/results", model="grain-boundaries")
    >>> result = process_image("/data/steel/field_01.tif", cfg)  # doctest: +SKIP
    >>> result.measurements["G_planimetric"]  # doctest: +SKIP
    8.1
    """
    from micro_seg.io import read_micrograph, write_labels
    from micro_seg.postprocess import segment_image
    from micro_seg.qc import pixel_quality

    relpath = Path(path).relative_to(config.in_dir).as_posix()
    stem = outputs_stem or output_stem(relpath)
    out_dir = Path(config.out_dir)
    st = os.stat(path)
    sha = sha256_file(path)
    mg = read_micrograph(path, pixel_size_um=config.pixel_size_um, databar_rows=config.databar_rows)
    shape, dtype = tuple(int(s) for s in mg.data.shape), str(mg.data.dtype)
    px = mg.pixel_size_um
    model = _load_model(config.model)
    card = model.card
    flags: list[dict[str, Any]] = []
    if px is None:
        flags.append({"source": "calibration", "check": "missing_calibration", "severity": "warning",
                      "message": "no pixel size in the file and none given: results are in pixel units"})
    for w in mg.reader_warnings:
        flags.append({"source": "io", "check": "read", "severity": "warning", "message": w})

    # What needs the pixels after inference is taken now, so that they are released before
    # post-processing (a 16k x 16k 8-bit image is 268 MB): the QC pixel checks and the overlay's preview.
    spec = _load_spec(config.spec) if config.spec else None
    quality = pixel_quality(mg, spec) if spec else None
    preview = overlay_preview(mg.analysis_data) if config.write_overlay else None
    options = dict(config.options)
    post = {k: options.pop(k) for k in POSTPROCESS_OPTIONS if k in options}
    seg = segment_image(mg, model, pixel_size_um=px, release_image=True, keep_prediction=False,
                        postprocess_options=post, **options)
    for w in seg.warnings:
        flags.append({"source": "segment", "check": "model", "severity": "warning", "message": str(w)})
    nested, summary, tables = measure_segmentation(seg, pixel_size_um=px, what=str(path))
    for w in nested.pop("_warnings", []):
        flags.append({"source": "measure", "check": "measurement", "severity": "warning", "message": str(w)})

    qc_verdict = None
    if spec is not None:
        qc_verdict = _run_qc(mg, spec, nested, flags, quality)

    labels = seg.labels
    grains = card.task == "grains"
    outputs: dict[str, str] = {}
    objects = {kind: _table_columns(t) for kind, t in tables.items()}
    names = output_files(stem)
    try:
        if config.write_labels:
            rel = names["labels"]
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            write_labels(out_dir / rel, labels, pixel_size_um=px,  # atomic (tmp + rename)
                         classes=None if grains else list(card.classes), instances=grains)
            outputs["labels"] = rel
        if config.write_overlay:
            rel = names["overlay"]
            with atomic_path(out_dir / rel) as tmp:
                render_overlay(preview, labels, kind="instances" if grains else "classes").save(
                    tmp, format="PNG", compress_level=1)
            outputs["overlay"] = rel
        if config.write_objects and objects:
            rel = names["objects"]
            with atomic_path(out_dir / rel) as tmp:
                _write_objects_csv(tmp, objects)
            outputs["objects"] = rel
    except OSError as exc:  # OUT_DIR not writable (permissions, disk full, a file where a folder goes)
        raise OutputWriteError(f"{out_dir / rel}: cannot write this output of {relpath}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None

    return ImageResult(
        relpath=relpath, status="ok", sha256=sha, size_bytes=st.st_size, mtime_ns=st.st_mtime_ns,
        shape=shape, dtype=dtype, pixel_size_um=px,
        calibration_source=mg.calibration_source, databar_rows=int(mg.databar_rows or 0),
        model_name=card.name, model_sha256=card.weights_sha256, measurements=summary, objects=objects,
        flags=flags, outputs=outputs, qc_verdict=qc_verdict,
    )


# Nested parts of a summary left out of the flat per-image row (they stay in the per-field
# and per-object tables): distributions, per-field statistics, point-count details.
_NOT_IN_ROW = {"distributions", "fields", "point_count", "warnings", "pixel_size_um", "units", "image_shape",
               "field_mean_fractions", "area_px"}


def _flat_phases(summary: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    renames = {"phase_fractions": "phase_fraction", "ci95": "phase_fraction_ci95",
               "ra_percent": "phase_fraction_ra_percent", "area_um2": "phase_area_um2"}
    for key, value in summary.items():
        if key in _NOT_IN_ROW:
            continue
        if isinstance(value, Mapping):
            prefix = renames.get(key, key)
            for name, v in value.items():
                if _is_scalar(v):
                    out[f"{prefix}_{name}"] = _scalar(v)
        elif _is_scalar(value):
            out[f"phases_{key}" if key == "n_fields" else key] = _scalar(value)
    return out


def measure_segmentation(seg: Any, *, pixel_size_um: float | None, what: str = "image",
                         fields: Any = "auto") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Measure a :class:`~micro_seg.postprocess.Segmentation` as its model's task says.

    Returns ``(nested, flat, tables)``: ``nested`` as printed by ``micro-seg
    analyze`` (``{"grains": ...}`` or ``{"phases": ..., "defects": ...}``, plus
    ``"_warnings"``), ``flat`` the per-image row (grain keys as in ``measure
    grains``; ``phase_fraction_<class>``...; defect keys prefixed ``defects_``)
    and ``tables`` the per-object tables by kind (``grains``, ``phases``,
    ``defects``).  ``fields`` is the field grid for the confidence intervals
    (``"auto"``, ``None`` or ``(rows, cols)``); phases use 5 x 5 for ``"auto"``.
    """
    from micro_seg.errors import InvalidImageError
    from micro_seg.measure import measure_defects, measure_grains, measure_phases
    from micro_seg.qc import PER_CLASS_DEFECT_KEYS

    card = seg.card
    nested: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    warnings: list[str] = []
    flat: dict[str, Any] = {}
    if card.task == "grains":
        if int(np.max(seg.labels)) == 0:
            raise InvalidImageError(f"{what}: the model found no grains (all boundary)")
        # boundaries filled in place and put back: a filled copy of a 16k x 16k segmentation is 1 GB
        g = measure_grains(seg.labels, pixel_size_um=pixel_size_um, fields=fields, what=what, overwrite_input=True)
        nested["grains"] = g.summary
        tables["grains"] = g.grains
        warnings += list(g.warnings)
        flat.update(flatten_measurements({k: v for k, v in g.summary.items() if k not in _NOT_IN_ROW}))
    else:
        p = measure_phases(seg.labels, pixel_size_um=pixel_size_um, names=list(card.classes),
                           fields=(5, 5) if fields == "auto" else fields, what=what)
        nested["phases"] = p.summary
        tables["phases"] = p.table
        warnings += list(p.warnings)
        flat.update(_flat_phases(p.summary))
        defects = getattr(seg.result, "defects", None) or {}
        if defects:
            combined = np.zeros(seg.labels.shape, np.int32)
            offset = 0
            by_class = {}
            for name, inst in defects.items():
                inst = np.asarray(inst)
                # instances from post-processing are connected components: no class-map check needed
                by_class[name] = measure_defects(inst, pixel_size_um=pixel_size_um, fields=fields,
                                                 what=f"{what} ({name})", check_pieces=False).summary
                combined[inst > 0] = inst[inst > 0] + offset
                offset += int(inst.max())
            for name, summary in by_class.items():  # the headline numbers per class, as QC specs may judge them
                flat.update({f"defects_{name}_{k}": summary.get(k) for k in PER_CLASS_DEFECT_KEYS})
            d = measure_defects(combined, pixel_size_um=pixel_size_um, fields=fields, what=what, check_pieces=False)
            nested["defects"] = d.summary
            nested["defects_by_class"] = by_class
            table = d.table.copy()
            if "label" in table.columns:  # which defect class each object belongs to
                cls = np.empty(len(table), dtype=object)
                bounds, start = [], 0
                for name, inst in defects.items():
                    n = int(np.asarray(inst).max())
                    bounds.append((start, start + n, name))
                    start += n
                for i, lab in enumerate(table["label"].to_numpy()):
                    cls[i] = next((nm for lo, hi, nm in bounds if lo < lab <= hi), "")
                table["defect_class"] = cls
            tables["defects"] = table
            warnings += list(d.warnings)
            flat.update(flatten_measurements({k: v for k, v in d.summary.items() if k not in _NOT_IN_ROW},
                                             prefix="defects_"))
    nested["_warnings"] = list(dict.fromkeys(warnings))
    return nested, flat, tables


_SPEC_CACHE: dict[str, Any] = {}


def _load_spec(spec_path: str) -> Any:
    """The QC spec, parsed once per worker (the last one used is cached)."""
    from micro_seg import qc

    spec = _SPEC_CACHE.get(spec_path)
    if spec is None:
        spec = qc.load_spec(spec_path)
        _SPEC_CACHE.clear()
        _SPEC_CACHE[spec_path] = spec
    return spec


def _run_qc(mg: Any, spec: Any, nested: Mapping[str, Any], flags: list, quality: Mapping[str, float] | None) -> str:
    """Judge the image against the QC spec (``quality``: its pixel checks, measured before the pixels were
    released); reasons become ``qc`` flags."""
    from micro_seg import qc

    result = qc.evaluate(mg, spec, measurements={k: v for k, v in nested.items() if not k.startswith("_")},
                         quality=quality)
    for r in result.reasons:
        flags.append({"source": "qc", "check": r.check, "severity": r.severity, "value": r.value,
                      "limit": r.limit, "message": r.message})
    return result.verdict


def _write_objects_csv(path: Path, objects: Mapping[str, Mapping[str, list]]) -> None:
    import csv

    columns: list[str] = ["kind"]
    for table in objects.values():
        for c in table:
            if c not in columns:
                columns.append(c)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for kind, table in objects.items():
            n = len(next(iter(table.values()))) if table else 0
            for i in range(n):
                writer.writerow([kind] + [_csv_value(table[c][i]) if c in table else "" for c in columns[1:]])


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if np.isfinite(v) else ""
    return v


# ----------------------------------------------------------------------------------------
# overlay
# ----------------------------------------------------------------------------------------
_PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]],
    dtype=np.uint8,
)


def _display_gray(image: np.ndarray) -> np.ndarray:
    """An image as uint8 RGB for display (0.5-99.5 percentile stretch)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].astype(np.float32)
    else:
        if img.ndim == 3:
            img = img[..., 0]
        img = np.repeat(img.astype(np.float32)[..., None], 3, axis=-1)
    sample = img[:: max(1, img.shape[0] // 256), :: max(1, img.shape[1] // 256)]  # percentiles of a subsample
    finite = sample[np.isfinite(sample)]
    lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((img - lo) / (hi - lo), 0, 1) * 255.0
    return np.nan_to_num(out).astype(np.uint8)


def _edges(lab: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from a 4-neighbour's (both sides of every boundary)."""
    edges = np.zeros(lab.shape, bool)
    dr = lab[1:, :] != lab[:-1, :]
    dc = lab[:, 1:] != lab[:, :-1]
    edges[1:, :] |= dr
    edges[:-1, :] |= dr
    edges[:, 1:] |= dc
    edges[:, :-1] |= dc
    return edges


def _overlay_step(shape: tuple[int, ...], max_side: int) -> int:
    return max(1, int(np.ceil(max(shape[:2]) / max_side)))


def overlay_preview(image: np.ndarray, *, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """A copy of the pixels :func:`render_overlay` shows (every ``step``-th row and column), so the full image can
    be released before the overlay is drawn.

    >>> import numpy as np
    >>> overlay_preview(np.zeros((5000, 3000), np.uint8)).shape
    (1667, 1000)
    """
    image = np.asarray(image)
    step = _overlay_step(image.shape, max_side)
    return image[::step, ::step].copy()


def render_overlay(image: np.ndarray, labels: np.ndarray, *, kind: str = "instances",
                   max_side: int = OVERLAY_MAX_SIDE):
    """An RGB PIL image of the micrograph with the segmentation drawn on it.

    ``kind="instances"`` outlines every object (grain boundaries) in red;
    ``kind="classes"`` tints each class (class 0 untinted) and outlines it.
    Images larger than ``max_side`` are shown downsampled; ``image`` may be
    the full image or its :func:`overlay_preview`.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((8, 8), int); labels[:, 4:] = 1
    >>> render_overlay(np.zeros((8, 8)), labels, kind="classes").size
    (8, 8)
    """
    from PIL import Image

    labels = np.asarray(labels)
    step = _overlay_step(labels.shape, max_side)
    lab = labels[::step, ::step]
    img = np.asarray(image)
    if img.shape[:2] != lab.shape:  # a full-size image (not already an overlay_preview)
        img = img[::step, ::step]
    if img.shape[:2] != lab.shape:
        raise ValueError(f"image {img.shape[:2]} and labels {labels.shape} do not match")
    rgb = _display_gray(img)
    edges = _edges(lab)
    if kind == "instances":
        rgb[edges] = (255, 40, 40)
        rgb[lab == 0] = (rgb[lab == 0] * 0.5 + np.array([255, 40, 40]) * 0.5).astype(np.uint8)
    else:
        colours = _PALETTE[(lab.astype(np.int64) - 1) % len(_PALETTE)]
        tint = lab > 0
        rgb[tint] = (rgb[tint] * 0.6 + colours[tint] * 0.4).astype(np.uint8)
        rgb[edges & tint] = colours[edges & tint]
    return Image.fromarray(rgb, mode="RGB")


def result_from_dict(d: Mapping[str, Any]) -> ImageResult:
    """Rebuild an :class:`ImageResult` from ``dataclasses.asdict`` output."""
    names = {f.name for f in dataclasses.fields(ImageResult)}
    return ImageResult(**{k: v for k, v in d.items() if k in names})
