"""Helpers shared by the micro-seg widgets: notifications, calibration, workers.

Nothing here computes anything about the image: the engine (:mod:`micro_seg`)
does.  These helpers move data between napari layers and the engine and run
the engine's long jobs in a worker thread with a progress bar and a cancel
button (STYLE.md 9): the worker receives a frozen parameter object, never a
widget, and layers are touched only in the ``yielded`` / ``returned``
handlers, which run in the GUI thread.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from typing import Any, Callable

import numpy as np

__all__ = [
    "notify_error",
    "notify_warning",
    "notify_info",
    "layer_pixel_size_um",
    "analysis_array",
    "set_layer_calibration",
    "image_link",
    "recalibrate_with_results",
    "progress_fraction",
    "viewer_camera",
    "JobRunner",
]

UM = "um"


def notify_error(message: str) -> None:
    """Show ``message`` as a napari error notification (never a traceback dialog)."""
    from napari.utils.notifications import show_error

    show_error(message)


def notify_warning(message: str) -> None:
    """Show ``message`` as a napari warning notification."""
    from napari.utils.notifications import show_warning

    show_warning(message)


def notify_info(message: str) -> None:
    """Show ``message`` as a napari info notification."""
    from napari.utils.notifications import show_info

    show_info(message)


def viewer_camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 on (``viewer.camera`` is deprecated there),
    ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _ms_meta(layer) -> dict:
    meta = getattr(layer, "metadata", None) or {}
    ms = meta.get("micro_seg")
    return ms if isinstance(ms, dict) else {}


def layer_pixel_size_um(layer) -> float | None:
    """Pixel size (um) of a layer: its scale in a length unit, else its micro-seg calibration
    (:func:`shown_pixel_size_um`).

    Returns ``None`` for an uncalibrated layer (scale 1 with no micro-seg calibration).
    """
    if layer is None:
        return None
    return shown_pixel_size_um(_ms_meta(layer).get("pixel_size_um"), layer.scale, getattr(layer, "units", ()))


def shown_pixel_size_um(meta_px, scale, units) -> float | None:
    """The pixel size a layer shows: its ``scale`` in a length unit (what napari's scale bar uses, also after
    ``layer.scale = ...`` in the console), else the micro-seg calibration ``meta_px``; ``meta_px`` exactly when
    the two agree to 1e-9 (a nanometre scale is not turned into 0.5000000001 um).

    >>> shown_pixel_size_um(0.5, (0.3, 0.3), ("um", "um")), shown_pixel_size_um(0.5, (1, 1), ("pixel", "pixel"))
    (0.3, 0.5)
    """
    shown = scale_pixel_size_um(scale, units) if scale is not None else None
    meta = float(meta_px) if meta_px else None
    if shown is None or (meta is not None and abs(shown - meta) <= 1e-9 * meta):
        return meta if meta is not None else shown
    return shown


def scale_pixel_size_um(scale, units) -> float | None:
    """Pixel size (um) of a layer's last two ``scale`` entries in its ``units``: a square pixel in a length unit
    (micrometre, nanometre, millimetre...), also exactly 1 um; ``None`` for a unit-less scale (napari's
    default 'pixel' units) or non-square pixels.

    >>> scale_pixel_size_um((1.0, 1.0), ("micrometer", "micrometer")), scale_pixel_size_um((500, 500), ("nm", "nm"))
    (1.0, 0.5)
    >>> scale_pixel_size_um((0.5, 0.5), ("pixel", "pixel")), scale_pixel_size_um((0.5, 0.25), ("um", "um"))
    (None, None)
    """
    from micro_seg.io_calibration import to_micrometres  # the engine's table of length units

    try:
        sy, sx = (float(v) for v in tuple(scale)[-2:])
        uy, ux = (str(u) for u in tuple(units)[-2:])
    except (TypeError, ValueError):
        return None
    py, px = to_micrometres(sy, uy), to_micrometres(sx, ux)
    if py is None or px is None or not (px > 0 and math.isfinite(px)) or abs(py - px) > 1e-9 * px:
        return None
    return px


def calibration_lost(scale, units) -> str | None:
    """Why a layer's non-trivial ``scale`` gives no pixel size (non-square pixels, no length unit), or None."""
    try:
        sy, sx = (float(v) for v in tuple(scale)[-2:])
    except (TypeError, ValueError):
        return None
    if (sy, sx) == (1.0, 1.0) or scale_pixel_size_um(scale, units) is not None:
        return None
    if sy != sx and scale_pixel_size_um((sx, sx), units) is not None:
        return f"its pixels are not square (scale {sy:g} x {sx:g}); micro-seg needs square pixels"
    return (f"its scale {sx:g} has no length unit (units {', '.join(str(u) for u in tuple(units)[-2:]) or 'none'}); "
            "set the layer's units to micrometre, or give the pixel size in the widget")


#: Decimals of the pixel-size boxes: 1e-8 um steps keep a TEM calibration (4e-05 um/px) and an SEM one (0.00123)
#: exact; magicgui's default (from the step) rounded them to 0.0000 / 0.0012.
PIXEL_SIZE_DECIMALS = 8


def pixel_size_box(tooltip: str, *, label: str = "Pixel size (µm/px)", uncalibrated_text: str | None = None):
    """The pixel-size spin box of the widgets (0 = unknown), precise to :data:`PIXEL_SIZE_DECIMALS` decimals."""
    from magicgui.widgets import FloatSpinBox

    box = FloatSpinBox(label=label, value=0.0, min=0.0, max=1e4, step=0.0001, tooltip=tooltip)
    try:
        box.native.setDecimals(PIXEL_SIZE_DECIMALS)
        if uncalibrated_text:  # show "not calibrated" instead of 0.00000000
            box.native.setSpecialValueText(uncalibrated_text)
    except AttributeError:  # another Qt binding without these
        pass
    return box


def box_pixel_size(value: float, layer) -> float | None:
    """The pixel size a pixel-size box means for ``layer``: the layer's own calibration when the box shows it
    (within the box's rounding), so the exact value is measured; else the typed value; ``None`` for 0."""
    value = float(value)
    if value <= 0:
        return None
    own = layer_pixel_size_um(layer)
    if own and abs(own - value) <= 0.5 * 10.0 ** -PIXEL_SIZE_DECIMALS:
        return own
    return value


def set_layer_calibration(layer, pixel_size_um: float | None) -> None:
    """Set ``scale``/``units`` and the micro-seg metadata of ``layer`` to ``pixel_size_um``."""
    meta = dict(layer.metadata or {})
    ms = dict(meta.get("micro_seg") or {})
    ms["pixel_size_um"] = pixel_size_um
    if pixel_size_um:
        ms.setdefault("calibration_source", "user")
        if ms.get("calibration_source") is None:
            ms["calibration_source"] = "user"
        layer.scale = (pixel_size_um, pixel_size_um)
        try:
            layer.units = (UM, UM)
        except Exception:  # older napari without layer units
            pass
    meta["micro_seg"] = ms
    layer.metadata = meta


def _images_with_id(layers, uid) -> list:
    """The Image layers of ``layers`` whose micro-seg id is ``uid``."""
    import napari.layers

    return [other for other in layers if isinstance(other, napari.layers.Image) and _ms_meta(other).get("id") == uid]


def image_link(layer, layers=()) -> str:
    """The stable id of image ``layer`` (kept in its micro-seg metadata, made on first use): the layers made from it
    record it as ``image_id``, so they stay linked to it when it is renamed.  napari's "Duplicate Layer" copies the
    metadata, id included: a layer sharing its id with another image of ``layers`` gets a new id of its own (unless
    the others are its duplicates, ``source.parent``), so the copy's results and pixel size stay apart."""
    import uuid

    uid = _ms_meta(layer).get("id")
    if uid and any(other is not layer and getattr(getattr(other, "source", None), "parent", None) is not layer
                   for other in _images_with_id(layers, uid)):
        uid = None
    if not uid:
        uid = uuid.uuid4().hex
        meta = dict(layer.metadata or {})
        meta["micro_seg"] = {**_ms_meta(layer), "id": uid}
        layer.metadata = meta
    return str(uid)


def made_from(layer, image, layers=()) -> bool:
    """True when ``layer`` (a result, annotations...) was made from image layer ``image``: by the image's id, else
    (layers that recorded no id: sample truth, batch results; an id several images of ``layers`` share, as a
    duplicated image does; or the id of an image no longer in ``layers``, closed and opened again from its file as a
    new layer) by its name."""
    ms = _ms_meta(layer)
    uid = _ms_meta(image).get("id")
    if ms.get("image_id") and not (uid and len(_images_with_id(layers, uid)) > 1):
        if ms["image_id"] == uid or not layers or _images_with_id(layers, ms["image_id"]):
            return ms["image_id"] == uid
    return ms.get("image") is not None and ms.get("image") == image.name


def recalibrate_with_results(layers, layer, pixel_size_um: float) -> None:
    """Set the pixel size of ``layer``, of the image it was made from and of every layer made from that image, so
    that an image and its results never disagree (whichever of them was recalibrated)."""
    ms = _ms_meta(layer)
    source = layer
    if ms.get("image_id") or ms.get("image"):
        source = next((other for other in layers if other is not layer and made_from(layer, other, layers)), layer)
    for other in layers:
        if other is source or other is layer or made_from(other, source, layers):
            set_layer_calibration(other, pixel_size_um)


def watch_layer_events(layer, names: tuple[str, ...], callback: Callable) -> list[tuple[Any, Callable]]:
    """Connect ``callback`` to the events ``names`` of ``layer`` that exist (``paint`` only on Labels); returns the
    ``(emitter, callback)`` pairs for :func:`disconnect_all`."""
    pairs = []
    for name in names:
        emitter = getattr(layer.events, name, None)
        if emitter is not None:
            emitter.connect(callback)
            pairs.append((emitter, callback))
    return pairs


def edit_history_position(layer) -> tuple[int, int]:
    """Where a Labels layer stands in its undo / redo history (every paint, undo and redo moves it); ``(0, 0)`` for
    other layers.  napari has no public event for undo / redo (they only redraw the layer), so this reads the
    layer's own history lists."""
    return len(getattr(layer, "_undo_history", ())), len(getattr(layer, "_redo_history", ()))


def disconnect_all(pairs) -> None:
    """Disconnect the ``(emitter, callback)`` pairs of :func:`watch_layer_events`; a layer already gone (or a
    callback already disconnected) is not an error."""
    for emitter, callback in pairs:
        try:
            emitter.disconnect(callback)
        except (RuntimeError, ValueError, TypeError):
            pass


def units_kwargs(layer) -> dict:
    """``{"units": ...}`` to give a new layer the same units as ``layer`` (avoids napari's "inconsistent units"
    warning, after which the scale bar drops its unit for every layer); empty when ``layer`` has no length units
    (micrometre, nanometre, millimetre...: a new layer made with ``layer.scale`` must show it in the same unit)."""
    from micro_seg.io_calibration import to_micrometres

    try:
        units = tuple(str(u) for u in layer.units[-2:])
    except Exception:
        return {}
    return {"units": units} if units and all(to_micrometres(1.0, u) is not None for u in units) else {}


def multiscale_problem(layer) -> str:
    """Why ``layer`` cannot be analysed as it is ("" when it can): a multiscale (pyramid) layer, as other readers
    open OME-Zarr or pyramidal TIFFs, whose ``numpy.asarray`` is its *smallest* level while its scale is that of
    its full resolution (grains measured there come out 4x, 16x... too small in um^2, results lie at a fraction of
    the image's size)."""
    import napari.layers

    if not getattr(layer, "multiscale", False):
        return ""
    # the console line gives a layer of the same type (Measure lists Labels only) in the same place and units (a
    # scale without its length unit is no pixel size to micro-seg: the layer would be measured in pixels)
    add = "add_labels" if isinstance(layer, napari.layers.Labels) else "add_image"
    return (f"'{layer.name}' is a multiscale (pyramid) layer: micro-seg analyses one full-resolution 2-D image; "
            "open the file with micro-seg's reader (File > Open with Plugin > micro-seg), or add its full "
            f"resolution as a layer of its own (layer = viewer.layers['{layer.name}']; viewer.{add}(layer.data[0], "
            "scale=layer.scale, translate=layer.translate, units=layer.units, metadata=layer.metadata) in the console)")


def databar_rows(layer) -> int:
    """Rows of the SEM information band at the bottom of ``layer`` (0 if none)."""
    return int(_ms_meta(layer).get("databar_rows") or 0)


def analysis_array(layer) -> np.ndarray:
    """The layer's pixels that should be analysed: the data without the SEM data bar."""
    data = np.asarray(layer.data)
    rows = databar_rows(layer)
    if rows and rows < data.shape[0]:
        data = data[: data.shape[0] - rows]
    return data


def pad_to_full(labels: np.ndarray, full_rows: int, fill: int = 0) -> np.ndarray:
    """Pad ``labels`` (analysis rows only) back to the full image height with ``fill``."""
    if labels.shape[0] >= full_rows:
        return labels
    pad = [(0, full_rows - labels.shape[0])] + [(0, 0)] * (labels.ndim - 1)
    return np.pad(labels, pad, constant_values=fill)


def progress_fraction(item: Any) -> tuple[float | None, str]:
    """Read a progress report from the engine as ``(fraction or None, text)``.

    Accepts a float in [0, 1], a ``(done, total)`` tuple, a mapping with
    ``fraction`` or ``done``/``total`` (and optional ``message``/``stage``), or
    an object with such attributes.
    """
    if item is None:
        return None, ""
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return float(min(max(item, 0.0), 1.0)), ""
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(v, (int, float)) for v in item):
        done, total = item
        return (done / total if total else None), f"{done}/{total}"
    get = item.get if isinstance(item, dict) else (lambda k, d=None: getattr(item, k, d))
    text = str(get("message", "") or get("stage", "") or "")
    frac = get("fraction", None)
    if frac is None:
        done, total = get("done", None), get("total", None)
        if done is None:
            done, total = get("step", None), get("steps", total)
        if done is not None and total:
            frac = float(done) / float(total)
            text = text or f"{done}/{total}"
    if frac is not None and not (isinstance(frac, float) and math.isnan(frac)):
        frac = float(min(max(frac, 0.0), 1.0))
    else:
        frac = None
    return frac, text


def avoid_triton_crash() -> None:
    """Keep torch from loading triton inside the napari process (CPU-only machines).

    The first torch optimizer imports ``torch._dynamo``, which imports triton
    when it is installed (it comes with the CUDA builds of torch).  triton's
    bundled LLVM clashes with the LLVM that Mesa's OpenGL driver has already
    loaded for napari's canvas, and the process segfaults.  Without a GPU
    triton is useless, so we make it unimportable (torch then treats it as
    absent).  Does nothing when triton is already loaded or CUDA is available.
    """
    import sys

    if "triton" in sys.modules:
        return
    try:
        import torch

        if torch.cuda.is_available():
            return
    except Exception:  # torch missing or broken: nothing to protect
        return
    sys.modules["triton"] = None  # type: ignore[assignment]


#: Held by whichever thread first imports torch and the engine (the warm-up, or a job that starts before it): two
#: threads importing them at once can wait on each other's module locks, and Python then hands one of them the
#: half-initialised module ("partially initialized module 'torch' has no attribute 'Tensor'").
_HEAVY_IMPORTS = threading.Lock()


def import_engine(lap: Callable[[str], None] | None = None) -> None:
    """Import torch and the engine modules the jobs use, one thread at a time (see :data:`_HEAVY_IMPORTS`);
    ``lap(step)`` is called after torch and after the engine (the warm-up times them)."""
    with _HEAVY_IMPORTS:
        preload_torch_libraries()
        import torch  # noqa: F401

        avoid_triton_crash()  # every job, not only training: any optimizer made later would load triton
        if lap is not None:
            lap("torch")
        from micro_seg import inference, measure, postprocess, registry  # noqa: F401

        if lap is not None:
            lap("engine")


def _after_engine_imports(func: Callable) -> Callable:
    """``func`` (a plain or generator function) that first imports the engine under :data:`_HEAVY_IMPORTS`."""
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def generator(*args: Any, **kwargs: Any):
            import_engine()
            return (yield from func(*args, **kwargs))

        return generator

    @functools.wraps(func)
    def plain(*args: Any, **kwargs: Any):
        import_engine()
        return func(*args, **kwargs)

    return plain


def describe_error(exc: BaseException) -> str:
    """One line for the user: engine errors as they are, anything else flagged as a bug."""
    from micro_seg.errors import MicroSegError

    if isinstance(exc, MicroSegError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller image (crop it) or close other programs."
    return (
        f"micro-seg internal error ({type(exc).__name__}: {exc}). "
        "Please report it with the image that caused it."
    )


class _JobRuntimeError(Exception):
    """Carries a job's RuntimeError past napari's generator worker (see :func:`_reraise_runtime_errors`)."""

    def __init__(self, error: RuntimeError):
        super().__init__(str(error))
        self.error = error


def _reraise_runtime_errors(func: Callable) -> Callable:
    """Wrap generator function ``func`` so that a RuntimeError it raises reaches ``errored``.

    napari's (superqt's) GeneratorWorker takes a RuntimeError from the generator
    for a deleted Qt object: it only warns "RuntimeError in aborted thread" and
    never emits ``errored`` or ``finished``. torch raises RuntimeError, and so
    does :class:`micro_seg.errors.CancelledError`; the widget would stay busy.
    """

    @functools.wraps(func)
    def job(*args: Any) -> Any:
        try:
            return (yield from func(*args))
        except RuntimeError as exc:
            raise _JobRuntimeError(exc) from exc

    return job


_CLOSING_WORKER: list = []


def _closing_generator_worker() -> type:
    """napari's generator worker class, made to close its generator when asked to quit.

    napari asks every worker to quit when its viewer closes; its own worker then just stops
    iterating, so the job's generator is abandoned with its ``finally`` blocks not run (a batch's
    thread kept running, its folder lock held, and the interpreter aborted at exit).  This one also
    sets the job's cancel event and closes the generator, in the worker thread, before the thread ends.
    """
    if not _CLOSING_WORKER:
        from napari.qt.threading import GeneratorWorker

        class ClosingGeneratorWorker(GeneratorWorker):
            cancel_event: threading.Event | None = None

            def quit(self) -> None:
                if self.cancel_event is not None:
                    self.cancel_event.set()
                super().quit()

            def work(self):
                try:
                    return super().work()
                finally:
                    if self.abort_requested:
                        try:
                            self._gen.close()
                        except BaseException:  # noqa: BLE001 - the viewer is gone: nobody to tell
                            pass

        _CLOSING_WORKER.append(ClosingGeneratorWorker)
    return _CLOSING_WORKER[0]


def qt_deleted(widget) -> bool:
    """True when the Qt object under magicgui ``widget`` has been deleted (its dock or viewer was closed)."""
    try:
        getattr(widget, "native", widget).objectName()
    except RuntimeError:
        return True
    return False


class JobRunner:
    """Run one engine generator at a time in a napari worker, with progress and cancel.

    Parameters
    ----------
    progress_bar, cancel_button, status_label
        magicgui widgets updated by the runner (all optional).
    run_button
        Disabled while a job runs.

    The job is a generator function called as ``func(params, cancel_event)``:
    it yields progress reports (see :func:`progress_fraction`) and returns the
    result, which is passed to ``on_done`` in the GUI thread.
    """

    def __init__(self, *, progress_bar=None, cancel_button=None, status_label=None, run_button=None):
        self.progress_bar = progress_bar
        self.cancel_button = cancel_button
        self.status_label = status_label
        self.run_button = run_button
        self.worker = None
        self._cancel = threading.Event()
        if cancel_button is not None:
            cancel_button.enabled = False
            cancel_button.changed.connect(self.cancel)
        anchor = next((w for w in (status_label, progress_bar, run_button, cancel_button) if w is not None), None)
        if anchor is not None:  # the widget closed while a job runs: stop the job, nobody will see its result
            anchor.native.destroyed.connect(lambda *_: self.abandon())

    def _deleted(self) -> bool:
        return any(qt_deleted(w) for w in (self.progress_bar, self.cancel_button, self.status_label, self.run_button)
                   if w is not None)

    def abandon(self) -> None:
        """Stop the running job for good (its widget is being deleted): set its cancel event and quit the worker,
        which closes a generator job so that its ``finally`` blocks run."""
        # the destroyed signal may come while the garbage collector takes the widget and this runner apart (their
        # attributes already cleared): an exception in a Qt slot aborts the whole napari process
        worker, cancel = getattr(self, "worker", None), getattr(self, "_cancel", None)
        if cancel is not None:
            cancel.set()
        if worker is not None:
            worker.quit()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def status(self, text: str) -> None:
        if self.status_label is not None:
            self.status_label.value = text

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop at its next progress report.

        A generator job sees the cancel event and raises CancelledError itself, so its
        ``finally`` blocks (joining a batch thread, releasing a folder lock) have run before
        the widget is free again.  napari's ``worker.quit()`` would abandon the generator at
        its next report without closing it; it is used only for plain-function jobs, which
        have no report to stop at (their result is then discarded).
        """
        if self.worker is None:
            return
        self._cancel.set()
        if not hasattr(self.worker, "yielded"):
            self.worker.quit()
        self.status("Cancelling...")

    def start(
        self,
        func: Callable,
        params: Any,
        *,
        on_done: Callable[[Any], None],
        on_yield: Callable[[Any], None] | None = None,
        description: str = "",
        subject: str | None = None,
    ):
        """Start ``func(params, cancel_event)`` in a worker thread; returns the worker.

        ``subject`` (e.g. ``"'layer name'"``): what the job works on; an error message that does not name it is
        prefixed with it, so every notification says which layer it is about.
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            notify_warning("A job is already running: " + ("wait for it or press Cancel." if self.cancel_button is not None
                                                           else "wait for it to finish."))
            return None
        self._cancel = threading.Event()
        generator = inspect.isgeneratorfunction(func)
        job = _after_engine_imports(_reraise_runtime_errors(func) if generator else func)
        extra = {"_worker_class": _closing_generator_worker()} if generator else {}
        worker = create_worker(job, params, self._cancel, _ignore_errors=True, _start_thread=False, **extra)
        if generator:
            worker.cancel_event = self._cancel
        self.worker = worker
        deleted = self._deleted  # the handlers below run later: by then the widget may be gone (viewer closed)

        def _yielded(item: Any) -> None:
            if deleted():
                return
            frac, text = progress_fraction(item)
            if self.progress_bar is not None and frac is not None:
                self.progress_bar.value = int(round(frac * 100))
            if text:
                self.status(f"{description} {text}".strip())
            if on_yield is not None:
                on_yield(item)

        def _returned(result: Any) -> None:
            if deleted():
                return
            if self.progress_bar is not None:
                self.progress_bar.value = 100
            try:
                on_done(result)
            except Exception as exc:  # show, never a traceback dialog
                notify_error(describe_error(exc))
                self.status("Failed")

        def _errored(exc: BaseException) -> None:
            from micro_seg.errors import CancelledError

            if isinstance(exc, _JobRuntimeError):
                exc = exc.error
            if deleted():
                return
            if isinstance(exc, CancelledError) or self._cancel.is_set():
                self.status("Cancelled")
                notify_info(f"{description or 'Job'} cancelled.")
                return
            self.status("Failed")
            message = describe_error(exc)
            notify_error(f"{subject}: {message}" if subject and subject not in message else message)

        def _aborted() -> None:
            if deleted():
                return
            self.status("Cancelled")
            notify_info(f"{description or 'Job'} cancelled.")

        def _finished() -> None:
            self.worker = None
            if deleted():
                return
            if self.cancel_button is not None:
                self.cancel_button.enabled = False
            if self.run_button is not None:
                self.run_button.enabled = True

        if hasattr(worker, "yielded"):
            worker.yielded.connect(_yielded)
            worker.aborted.connect(_aborted)
        worker.returned.connect(_returned)
        worker.errored.connect(_errored)
        worker.finished.connect(_finished)
        if self.progress_bar is not None:
            self.progress_bar.value = 0
        if self.cancel_button is not None:
            self.cancel_button.enabled = True
        if self.run_button is not None:
            self.run_button.enabled = False
        self.status(f"{description}...".strip())
        worker.start()
        return worker


def preload_torch_libraries() -> bool:
    """Load torch's native libraries with the GIL released; True when done.

    ``import torch`` spends ~0.3 s in ``dlopen`` of its C++ libraries, and
    Python's importer holds the GIL all that time, so even an import in a
    worker thread freezes napari's event loop for that long.  ``dlopen``
    called through ``ctypes`` releases the GIL: after this, the real
    ``import torch`` finds the libraries already mapped and only runs Python
    code, which shares the GIL with the GUI thread.  Best effort: returns
    False (and the import then works as usual) when torch is absent, already
    imported, or not laid out as expected.
    """
    import ctypes
    import glob
    import importlib.util
    import os
    import sys

    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return False
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            return False
        root = os.path.dirname(spec.origin)
        ext = glob.glob(os.path.join(root, "_C.*.so"))
        if not ext:
            return False
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen
        dlopen.restype = ctypes.c_void_p
        dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        # the order torch uses itself: its global deps first (RTLD_GLOBAL), then the extension
        deps = os.path.join(root, "lib", "libtorch_global_deps.so")
        if os.path.exists(deps) and not dlopen(deps.encode(), os.RTLD_GLOBAL | os.RTLD_LAZY):
            return False
        return bool(dlopen(ext[0].encode(), sys.getdlopenflags()))
    except Exception:  # noqa: BLE001 - an optimisation only
        return False


def warm_up_job() -> dict:
    """Pay the one-time costs of the first segmentation off the GUI thread.

    Run once in a worker thread when a widget that shows results opens: loads
    torch (its libraries without holding the GIL, see
    :func:`preload_torch_libraries`) and the engine modules the job uses, the
    modules napari imports lazily when the first Labels layer is created
    (pandas for layer features, skimage.color for the label colours), and
    builds a small Labels and Image layer and the vispy visuals of napari's
    labels overlays (not attached to any canvas) so that napari's and vispy's
    first-use work (colormaps, shader templates, dash patterns) is done before
    the result arrives.  Returns the seconds spent per step.
    """
    import time

    steps: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = now - t
        t = now

    import_engine(lap)  # under the lock the jobs take too: never two threads importing torch at once
    with _HEAVY_IMPORTS:
        import pandas  # noqa: F401
        import skimage.color  # noqa: F401

    lap("napari lazy imports")

    def labels_and_image_layers() -> None:
        import napari.layers

        napari.layers.Labels(np.zeros((2, 2), np.uint8))
        napari.layers.Image(np.zeros((2, 2), np.float32), colormap="magma", contrast_limits=(0.0, 1.0))

    def overlay_visuals() -> None:  # what napari's labels overlays (polygon, brush outline) are made of
        from vispy.scene.visuals import Line, Polygon
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()  # its patterns are cached per process: 0.1-0.2 s the first time
        Polygon(pos=np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), color="white", border_color="red")
        Line(pos=np.array([[0.0, 0.0], [1.0, 1.0]]))

    for step in (labels_and_image_layers, overlay_visuals):
        try:
            step()
        except Exception:  # noqa: BLE001 - warming is optional; the real run does the work itself
            pass
    lap("layers")
    return steps


_WARM_UP: dict[str, Any] = {}
WARM_UP_DELAY_MS = 1000


def freeze_long_lived_objects() -> int:
    """Exclude everything allocated so far from Python's cyclic garbage collector.

    With torch, pandas and napari loaded, the heap holds ~400,000 objects
    that live as long as the process (modules, classes, functions); each full
    (generation-2) collection walks all of them, 0.2-0.3 s with the GIL held,
    at unpredictable moments -- often right while napari adds a result layer.
    :func:`gc.freeze` moves them to a permanent generation that collections
    skip (it is O(1); young garbage is collected first).  Reference counting
    still frees them as usual; only cyclic garbage created before this call
    stays.  Returns the number of frozen objects.
    """
    import gc

    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count()


def _warm_up_qt_controls(done: Callable[[], None]) -> None:
    """Build (and drop) napari's Qt controls for a Labels and an Image layer, one per turn.

    Qt widgets can only be made in the GUI thread; the first of each kind costs
    0.1-0.2 s (styles, icons), later ones much less.  Done in two event-loop
    turns while the user is still picking an image and a model; then calls ``done``.
    """
    from qtpy.QtCore import QTimer

    def build(kind: str) -> None:
        try:
            import napari.layers
            from napari._qt.layer_controls.qt_layer_controls_container import create_qt_layer_controls

            if kind == "labels":
                layer = napari.layers.Labels(np.zeros((2, 2), np.uint8))
            else:
                layer = napari.layers.Image(np.zeros((2, 2), np.float32), colormap="magma",
                                            contrast_limits=(0.0, 1.0))
            controls = create_qt_layer_controls(layer)
            controls.close()
            controls.deleteLater()
        except Exception:  # noqa: BLE001 - private napari API may move: warming is optional
            pass

    def image_then_done() -> None:
        try:
            build("image")
        finally:
            done()

    build("labels")
    QTimer.singleShot(20, image_then_done)


def start_warm_up():
    """Start the one-time warm-up once per process; returns its worker.

    :func:`warm_up_job` runs in a napari worker thread; when it is done, the
    Qt layer controls are warmed in the GUI thread (:func:`_warm_up_qt_controls`)
    and the objects loaded so far are frozen (:func:`freeze_long_lived_objects`).
    Later calls return the first worker (``None`` once everything has finished).
    """
    if "started" in _WARM_UP:
        return _WARM_UP.get("worker")
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QTimer

    _WARM_UP["started"] = True
    worker = create_worker(warm_up_job, _ignore_errors=True, _start_thread=False)
    _WARM_UP["worker"] = worker

    def current() -> bool:  # False once the state was reset (tests) while this one ran
        return _WARM_UP.get("worker") is worker

    def _done(result: Any) -> None:
        if current():
            _WARM_UP["steps"] = result

    def _errored(exc: BaseException) -> None:  # the real run will load (and report) it itself
        if current():
            _WARM_UP["error"] = exc

    def _all_done() -> None:
        if current():
            freeze_long_lived_objects()
            _WARM_UP["worker"] = None

    def _finished() -> None:
        QTimer.singleShot(20, lambda: _warm_up_qt_controls(_all_done))

    worker.returned.connect(_done)
    worker.errored.connect(_errored)
    worker.finished.connect(_finished)
    # after the widget has been drawn: while torch's libraries load (~0.3 s in the dynamic
    # loader), the GUI thread stalls if it needs the loader too, which drawing new widgets does
    QTimer.singleShot(WARM_UP_DELAY_MS, worker.start)
    return worker


def warm_up_finished() -> bool:
    """True once the warm-up started by :func:`start_warm_up` has ended (or never started)."""
    return _WARM_UP.get("worker") is None
