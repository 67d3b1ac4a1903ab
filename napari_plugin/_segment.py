"""Segment widget: run a model on the selected micrograph in a worker thread.

The engine does the work (:func:`micro_seg.registry.load_model`,
:mod:`micro_seg.inference` tiled prediction that yields progress,
:mod:`micro_seg.postprocess`); this widget passes it a frozen
:class:`SegmentParams`, shows progress, can cancel, and adds the results:

* a Labels layer: class labels (value ``i`` = ``classes[i]``) for semantic
  models, grain instances for grain models;
* an Image layer with the per-pixel uncertainty (used by the Annotate widget's
  "Next uncertain region").

Grain models show their post-processing settings (boundary threshold, neck
split ratio, grain cores, smallest grain), preset to the model card's values:
raise the split ratio when grains come out over-split, lower the threshold when
faint boundaries are missed (as ``micro-seg segment --boundary-threshold`` etc.).
A run uses exactly what is shown, grain cores included (on the command line a
``--boundary-threshold`` given alone turns the card's cores off instead).

The SEM data bar (if the reader found one) is not segmented: its rows are 0.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox

from napari_plugin._common import (
    JobRunner,
    analysis_array,
    box_pixel_size,
    describe_error,
    disconnect_all,
    layer_pixel_size_um,
    multiscale_problem,
    notify_error,
    notify_info,
    notify_warning,
    pad_to_full,
    pixel_size_box,
    progress_fraction,
    image_link,
    recalibrate_with_results,
    units_kwargs,
    start_warm_up,
    watch_layer_events,
)
from napari_plugin._layers import class_colormap, connect_layer_events, layer_chooser, ms_meta
from napari_plugin._train import model_choices, model_events

__all__ = ["SegmentWidget", "SegmentParams", "SegmentResult", "segment_job"]

DISPLAY_STEP_MS = 100  # between the turns that put a result on the canvas (see SegmentWidget._show_result)
_MODEL_CHOICES: dict[str, Any] = {}  # model picker cache, keyed by the model folders' mtimes


@dataclass(frozen=True)
class SegmentParams:
    """What one segmentation run needs (the worker never touches widgets)."""

    image: np.ndarray
    model: str
    full_rows: int = 0  # rows of the full image (analysis rows + SEM data bar); results are padded back
    options: dict = field(default_factory=dict)  # post-processing settings over the card's (grain models)
    tta: bool = False  # test-time augmentation: average the prediction over 4 flips
    # (name, data) of the result layers micro-seg wrote that this run may replace: their digests are computed in the
    # worker (hashing a 16k x 16k layer takes seconds), to tell whether the user edited them
    written: tuple = ()


@dataclass(frozen=True)
class SegmentResult:
    labels: np.ndarray
    class_labels: np.ndarray
    uncertainty: np.ndarray | None
    classes: tuple[str, ...]
    task: str
    model_name: str
    seconds: float
    n_objects: int = 0
    uncertainty_max: float = 1.0
    n_nonfinite: int = 0  # NaN / inf pixel values of the image: their classes mean nothing
    warnings: tuple[str, ...] = ()  # the post-processing's (e.g. grains wider than the tiled context)
    digest: str = ""  # data_digest(labels), computed in the worker
    written_digests: dict = field(default_factory=dict)  # name -> data_digest of SegmentParams.written's data


def segment_job(params: SegmentParams, cancel):
    """Worker generator: load the model, predict tile by tile (yielding progress), post-process."""
    from types import SimpleNamespace

    from micro_seg import inference, postprocess
    from micro_seg.commands.segment import contrast_check
    from micro_seg.errors import CancelledError
    from micro_seg.registry import load_model

    t0 = time.perf_counter()
    yield {"fraction": 0.0, "message": "loading model"}
    model = load_model(params.model)
    card = model.card
    keep: bool | list[int] = False
    if card.task == "grains":
        keep = [postprocess.boundary_class_index(card.classes)]
    gen = inference.predict_iter(params.image, model, keep_probabilities=keep, tta=params.tta, cancel=cancel)
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            prediction = stop.value
            break
        frac, text = progress_fraction(item)
        yield {"fraction": 0.02 + 0.88 * (frac or 0.0), "message": f"tile {text}" if text else "predicting"}
    if cancel.is_set():
        raise CancelledError("segmentation cancelled")
    yield {"fraction": 0.92, "message": "post-processing"}
    result = postprocess.postprocess(prediction, card, **(params.options if card.task == "grains" else {}))
    rows = max(params.full_rows, params.image.shape[0])
    labels = np.asarray(result.labels)
    n_objects = int(labels.max()) if labels.size else 0
    # smallest dtype: cheaper to hand to napari (texture upload in the GUI thread)
    dtype = np.uint8 if n_objects < 256 else (np.uint16 if n_objects < 65536 else np.uint32)
    unc = prediction.uncertainty
    if unc is not None:
        unc = pad_to_full(np.asarray(unc, dtype=np.float32), rows)
    labels = pad_to_full(labels.astype(dtype, copy=False), rows)
    return SegmentResult(
        labels=labels, digest=data_digest(labels),
        written_digests={name: data_digest(data) for name, data in params.written},
        class_labels=pad_to_full(np.asarray(result.class_labels).astype(np.uint8, copy=False), rows),
        uncertainty=unc, classes=tuple(card.classes), task=card.task, model_name=card.name,
        seconds=time.perf_counter() - t0, n_objects=n_objects,
        uncertainty_max=float(unc.max()) if unc is not None else 1.0,
        n_nonfinite=inference.count_nonfinite(params.image),
        # a blank or almost blank field gives a confident-looking map: the CLI's segment and analyze warn, so napari
        warnings=tuple(contrast_check(SimpleNamespace(analysis_data=params.image), "") + list(result.warnings)),
    )


def pixel_size_warning(pixel_size_um: float | None, card) -> str | None:
    """A warning when the image's pixel size is far outside the model's training range."""
    from micro_seg.postprocess import pixel_size_outside_range

    rng = pixel_size_outside_range(pixel_size_um, card)
    if rng is None:
        return None
    return (f"The pixel size {pixel_size_um:g} µm is outside the range model '{card.name}' was trained on "
            f"({rng[0]:g}-{rng[1]:g} µm): check the result, or fine-tune the model on this material (Train widget).")


class SegmentWidget(Container):
    """Dock widget: pick an image and a model, Run; Cancel stops at the next tile."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._image = ComboBox(label="Image", choices=layer_chooser(
            napari_viewer, "Image", lambda l: ms_meta(l).get("kind") != "uncertainty"))
        self._model = ComboBox(label="Model", choices=self._model_choices,
                               tooltip="Shipped models and the ones you trained (Train widget).")
        self._model_folder = FileEdit(label="Or model folder", mode="d", value="",
                                      tooltip="A model folder (card.yaml + model.safetensors) not in the list.")
        self._pixel = pixel_size_box("From the file's calibration; 0 = unknown. Change it to recalibrate the image.",
                                     uncalibrated_text="not calibrated (pixels)")
        self._model_info = Label(label="About model", value="")
        self._threshold = FloatSpinBox(label="Boundary threshold", value=0.5, min=0.01, max=0.99, step=0.05,
                                       tooltip="Boundary probability above which a pixel is boundary: lower it if "
                                       "faint boundaries are missed (grains merge), raise it if noise makes boundaries.")
        self._split = FloatSpinBox(label="Split ratio", value=2.0, min=0.0, max=1000.0, step=0.1,
                                   tooltip="Two grain cores joined by a neck this many times narrower than the smaller "
                                   "core become two grains: raise it if grains are over-split, lower it if grains "
                                   "behind faded boundaries merge; 0 = never split.")
        self._marker = FloatSpinBox(label="Grain cores below", value=0.0, min=0.0, max=0.99, step=0.05,
                                    tooltip="Grain cores are taken from boundary probability below this (under the "
                                    "boundary threshold), so a faint boundary between two cores still splits them; "
                                    "raise it (or set 0 = off) if grains come out split along twins or scratches. "
                                    "At or above the boundary threshold it has no effect.")
        self._min_grain = SpinBox(label="Smallest grain (px)", value=16, min=0, max=10_000_000,
                                  tooltip="Grains smaller than this many pixels are merged into their neighbours.")
        self._grain_settings = (self._threshold, self._split, self._marker, self._min_grain)
        self._tta = CheckBox(label="Test-time augmentation", value=False,
                             tooltip="Average the prediction over 4 flips of the image: steadier boundaries and "
                             "classes, a truer uncertainty map; 4x slower.")
        self._run_btn = PushButton(text="Segment")
        self._cancel_btn = PushButton(text="Cancel")
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=100)
        self._status = Label(label="Status", value="Pick an image and a model, then Segment")
        self._runner = JobRunner(progress_bar=self._progress, cancel_button=self._cancel_btn,
                                 status_label=self._status, run_button=self._run_btn)
        self.extend([self._image, self._model, self._model_folder, self._model_info, *self._grain_settings,
                     self._tta, self._pixel, self._run_btn, self._cancel_btn, self._progress, self._status])
        self._image.changed.connect(self._image_changed)
        self._model.changed.connect(self._update_model_info)
        self._model_folder.changed.connect(self._update_model_info)
        self._pixel.changed.connect(self._pixel_changed)
        self._run_btn.changed.connect(self.run)
        model_events.saved.connect(self._on_model_saved)
        # only the image list depends on the layers: re-reading the model cards on every
        # layer insert would cost GUI time right when the result layers are added
        connect_layer_events(napari_viewer, self._image)
        self.reset_choices()
        self._image_changed(self._image.value)
        self.last_result: SegmentResult | None = None
        self._pending_display = False
        self._update_model_info()
        # one-time costs of the first run (torch, engine, napari's lazy imports) in a thread now
        self._warm_up = start_warm_up()

    @staticmethod
    def _model_choices(_widget=None) -> list[tuple[str, Any]]:
        """The model picker's list, re-read only when a model folder was added or removed.

        napari refreshes every docked widget's choices on each layer insert; reading all
        model cards from disk each time would cost GUI time right when results are added.
        """
        try:
            from micro_seg.registry import model_search_dirs

            key = []
            for folder in model_search_dirs():
                try:
                    key.append((str(folder), folder.stat().st_mtime_ns))
                except OSError:
                    key.append((str(folder), None))
            if _MODEL_CHOICES.get("key") != key:
                _MODEL_CHOICES.update(key=key, choices=model_choices())
            return list(_MODEL_CHOICES["choices"])
        except Exception:  # a broken model folder must not break the widget
            return []

    def _on_model_saved(self, folder: str) -> None:
        try:
            self.select_model(folder)
        except RuntimeError:  # widget already closed
            pass

    def select_model(self, folder_or_name: str) -> None:
        """Select a model in the picker by folder (or name), refreshing the list first."""
        _MODEL_CHOICES.clear()  # a model saved in place keeps its folder's mtime
        self._model.reset_choices()
        for choice in self._model.choices:
            if choice == folder_or_name or str(choice).rstrip("/").endswith("/" + str(folder_or_name)):
                self._model.value = choice
                return

    def _update_model_info(self, *_: Any) -> None:
        """Show what the chosen model segments and at which pixel sizes it was trained."""
        model = self._chosen_model()
        if not model:
            self._model_info.value = "no model: train one (Train widget)"
            self._show_grain_settings(None)
            return
        try:
            from micro_seg.registry import load_card, resolve_model

            card = load_card(resolve_model(model))
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            self._model_info.value = f"cannot read this model ({type(exc).__name__})"
            self._show_grain_settings(None)
            return
        self._show_grain_settings(card)
        text = f"{card.task}: {', '.join(card.classes)}"
        if card.pixel_size_um_range:
            lo, hi = card.pixel_size_um_range
            text += f"\ntrained at {lo:g}-{hi:g} µm/px"
        if card.material:
            text += f"\n{card.material}"
        self._model_info.value = text

    def _show_grain_settings(self, card) -> None:
        """Grain models: show their post-processing settings, preset to the card's values."""
        grains = card is not None and card.task == "grains"
        if grains:
            from micro_seg.postprocess import grain_settings

            settings = grain_settings(card)
            self._threshold.value = float(settings["threshold"])
            self._split.value = float(settings["split_ratio"])
            self._marker.value = float(settings["marker_threshold"] or 0.0)
            self._min_grain.value = int(settings["min_grain_px"])
        for w in self._grain_settings:
            w.visible = grains

    def postprocess_options(self) -> dict:
        """The grain post-processing settings shown, all of them (what the next run uses for a grain model):
        grain cores 0 = off (``marker_threshold`` None)."""
        marker = float(self._marker.value)
        return {"threshold": float(self._threshold.value), "split_ratio": float(self._split.value),
                "marker_threshold": marker if marker > 0 else None, "min_grain_px": int(self._min_grain.value)}

    def _image_changed(self, layer) -> None:
        disconnect_all(getattr(self, "_image_watch", ()))
        self._image_watch = []
        if layer is not None:
            # a scale set from napari's console (or by another widget) is the pixel size a run uses: the box shows it
            # (a stale value there could not be typed again to recalibrate, as it would not change)
            self._image_watch = watch_layer_events(layer, ("scale", "units", "metadata"), self._show_pixel_size)
        self._show_pixel_size()

    def _show_pixel_size(self, *_: Any) -> None:
        layer = self._image.value
        px = layer_pixel_size_um(layer) if layer is not None else None
        try:
            with self._pixel.changed.blocked():
                self._pixel.value = float(px or 0.0)
        except RuntimeError:  # widget already deleted
            pass

    def _pixel_changed(self, value: float) -> None:
        layer = self._image.value
        if layer is not None and value > 0 and box_pixel_size(value, layer) != layer_pixel_size_um(layer):
            recalibrate_with_results(self._viewer.layers, layer, float(value))

    def _chosen_model(self) -> str | None:
        folder = str(self._model_folder.value or "").strip()
        if folder and folder != ".":
            return folder
        return self._model.value

    def run(self, *_: Any):
        """Start segmentation in a worker; returns the worker (None on bad input)."""
        import napari.layers

        layer = self._image.value
        if layer is None:
            selected = self._viewer.layers.selection.active
            if selected is not None and not isinstance(selected, napari.layers.Image):
                notify_warning(f"'{selected.name}' is a {type(selected).__name__} layer: "
                               "Segment needs an image layer. Open a micrograph (File > Open) and pick it under Image.")
            else:
                notify_warning("No image to segment: open a micrograph (File > Open or drag it in).")
            return None
        model = self._chosen_model()
        if not model:
            notify_warning("No model found: install the shipped models or train one in the Train widget.")
            return None
        if multiscale_problem(layer):
            notify_warning(multiscale_problem(layer) + ".")
            return None
        data = analysis_array(layer)
        if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
            notify_warning(f"'{layer.name}' has shape {data.shape}: Segment needs a 2-D grey or RGB image "
                           "(split stacks into single images first).")
            return None
        from micro_seg.postprocess import SMALL_IMAGE_SIDE

        if min(data.shape[:2]) < SMALL_IMAGE_SIDE:
            notify_warning(f"'{layer.name}' is only {data.shape[0]} x {data.shape[1]} pixels: far smaller than the "
                           "patches a model learns from, so its result is unreliable (segment a larger field).")
        if layer_pixel_size_um(layer) is None:
            notify_warning(f"'{layer.name}' has no pixel size: results will be in pixels. "
                           "Type the pixel size in 'Pixel size (µm/px)' to get micrometres.")
        try:
            from micro_seg.registry import load_card, resolve_model

            warning = pixel_size_warning(layer_pixel_size_um(layer), load_card(resolve_model(model)))
        except Exception:  # an unknown model is reported by the worker
            warning = None
        if warning:
            notify_warning(warning)
        params = SegmentParams(image=data, model=str(model), full_rows=int(np.asarray(layer.data).shape[0]),
                               options=self.postprocess_options(), tta=bool(self._tta.value),
                               written=self._watch_written(layer.name))
        # the result belongs to this layer, whatever is picked under Image by the time it is ready
        return self._runner.start(segment_job, params, on_done=lambda result: self._show_result(result, layer),
                                  description="Segmenting", subject=f"'{layer.name}'")

    @property
    def busy(self) -> bool:
        """True while segmenting or while the result is still being put on the canvas."""
        return self._runner.running or self._pending_display

    def _watch_written(self, image_name: str) -> tuple:
        """``(name, data)`` of the result layers of ``image_name`` micro-seg wrote (``name``, ``name [k]``), for the
        worker to hash; their paint / data events are watched until the result is shown (an edit made meanwhile
        counts as an edit, whatever the digest)."""
        self._unwatch_written()
        layers, out = self._viewer.layers, []
        for base in (f"{image_name} grains", f"{image_name} classes"):
            k, candidate = 1, base
            while candidate in layers:
                layer = layers[candidate]
                if ms_meta(layer).get("written") is not None and isinstance(layer.data, np.ndarray):
                    out.append((candidate, layer.data))

                    def edited(_event=None, key=id(layer)):
                        self._edited_since_run.add(key)

                    self._written_watch += watch_layer_events(layer, ("paint", "data"), edited)
                k += 1
                candidate = f"{base} [{k}]"
        self._written_data = tuple(out)
        return self._written_data

    def _unwatch_written(self) -> None:
        disconnect_all(getattr(self, "_written_watch", ()))
        self._written_watch: list = []
        self._edited_since_run: set[int] = set()
        self._written_data: tuple = ()  # the data hashed by the worker (released once the result is shown)

    def _put_layer(self, kind: str, name: str, data: np.ndarray, **kwargs):
        """Update the layer ``name`` in place when it fits (cheap), else (re)create it.

        A Labels layer is replaced only when it still holds what micro-seg wrote into it (the digest kept in its
        metadata): one the user has edited (or made) is kept, and the result goes to a new layer ``name [2]``.
        ``digests``: the digest of ``data`` and of the layers hashed by the worker (:class:`SegmentResult`)."""
        import napari.layers

        layer_type = napari.layers.Labels if kind == "labels" else napari.layers.Image
        if kind == "labels":
            digest, written = kwargs.pop("digests", ("", {}))
            kwargs["metadata"] = {"micro_seg": {**kwargs["metadata"]["micro_seg"],
                                                "written": digest or data_digest(data)}}
            free = self._unedited_name(name, written)
            if free != name:
                notify_warning(f"'{name}' was edited since micro-seg wrote it: it is kept as it is, and the new "
                               f"result is in '{free}'.")
                name = free
        if name in self._viewer.layers:
            old = self._viewer.layers[name]
            if isinstance(old, layer_type) and old.data.shape == data.shape and old.data.dtype == data.dtype:
                old.metadata = kwargs.get("metadata", {})
                old.scale, old.translate = kwargs["scale"], kwargs["translate"]
                if "units" in kwargs:  # the image calibrated in the console since the last run: its unit too
                    old.units = kwargs["units"]
                if "colormap" in kwargs:
                    old.colormap = kwargs["colormap"]
                if "contrast_limits" in kwargs:
                    old.contrast_limits = kwargs["contrast_limits"]
                old.data = data
                return old
            self._viewer.layers.remove(name)
        add = self._viewer.add_labels if kind == "labels" else self._viewer.add_image
        return add(data, name=name, **kwargs)

    def _unedited_name(self, name: str, hashed: dict | None = None) -> str:
        """``name`` when no layer has it or its layer holds what micro-seg wrote there, else the first
        ``name [k]`` (k = 2, 3, ...) that is free or unedited too.  ``hashed``: digests the worker computed of the
        layers' data when the run started (:meth:`_watch_written`), used while that data is the layer's, unedited
        since; a layer without one is hashed here (it appeared or was replaced during the run: rare)."""
        layers, hashed = self._viewer.layers, hashed or {}
        snapshots = {candidate: data for candidate, data in getattr(self, "_written_data", ())}
        k, candidate = 1, name
        while candidate in layers:
            layer = layers[candidate]
            written = ms_meta(layer).get("written")
            if written is not None:
                if candidate in hashed and snapshots.get(candidate) is layer.data:
                    if id(layer) in getattr(self, "_edited_since_run", ()):
                        current = None  # painted / replaced during the run: edited
                    else:
                        current = hashed[candidate]
                else:
                    current = data_digest(layer.data)
                if written == current:
                    break
            k += 1
            candidate = f"{name} [{k}]"
        return candidate

    def _show_result(self, result: SegmentResult, layer) -> None:
        """Put the result of segmenting image ``layer`` on the canvas (GUI thread) in short event-loop turns.

        The result keeps the scale and metadata of the layer it came from, even if another image
        has been picked meanwhile or the layer has been closed (then the result is added on its own).

        Turn 1 adds the labels; later turns (``DISPLAY_STEP_MS`` apart, so the labels get drawn
        and input is handled in between) select them, add the hidden uncertainty layer and show
        the notification.  Real timers: a 0 ms one is a posted call that Qt 6 runs in the same
        turn, before pending timers and paints.
        """
        from qtpy.QtCore import QTimer

        self.last_result = result
        layers = self._viewer.layers
        closed = layer not in layers
        px = layer_pixel_size_um(layer)
        base = {"image": layer.name, "image_id": image_link(layer, layers), "model": result.model_name,
                "classes": list(result.classes), "task": result.task, "pixel_size_um": px,
                "calibration_source": ms_meta(layer).get("calibration_source"),
                "databar_rows": ms_meta(layer).get("databar_rows", 0)}
        common = dict(scale=tuple(layer.scale[-2:]), translate=tuple(layer.translate[-2:]))
        units = units_kwargs(layer)
        with _inserting_without_selecting(layers):
            if result.task == "grains":
                meta = {**base, "kind": "grains", "class_labels": result.class_labels}
                labels = self._put_layer("labels", f"{layer.name} grains", result.labels,
                                         metadata={"micro_seg": meta}, opacity=0.5, **common, **units,
                                         digests=(result.digest, result.written_digests))
            else:
                meta = {**base, "kind": "classes"}
                labels = self._put_layer("labels", f"{layer.name} classes", result.labels,
                                         metadata={"micro_seg": meta}, opacity=0.5,
                                         colormap=class_colormap(len(result.classes), offset=0), **common, **units,
                                         digests=(result.digest, result.written_digests))
        self._unwatch_written()
        what = f"{result.n_objects} grains" if result.task == "grains" else ", ".join(result.classes)
        self._status.value = f"{result.model_name}: {what} in {result.seconds:.1f} s"
        message = f"Segmented '{layer.name}' with {result.model_name} in {result.seconds:.1f} s."
        if closed:
            message += f" '{layer.name}' was closed meanwhile: the result layers are kept on their own."

        def select_labels() -> None:  # rebuilds the layer controls panel: its own turn
            if labels in layers and layers.selection.active is not labels:
                layers.selection.active = labels

        def add_uncertainty() -> None:
            with _inserting_without_selecting(layers):
                self._put_layer("image", f"{layer.name} uncertainty", result.uncertainty,
                                colormap="magma", blending="additive", opacity=0.6, visible=False,
                                contrast_limits=(0.0, max(result.uncertainty_max, 1e-6)),
                                metadata={"micro_seg": {**base, "kind": "uncertainty"}}, **common, **units)

        steps = [select_labels] + ([add_uncertainty] if result.uncertainty is not None else [])
        if result.n_nonfinite:  # counted in the worker, not in the GUI thread
            steps.append(lambda: notify_warning(
                f"'{layer.name}' has {result.n_nonfinite} NaN or infinite pixel value(s): the classes found there "
                "mean nothing (the rest of the image is segmented as usual)."))
        for warning in result.warnings:
            steps.append(lambda w=warning: notify_warning(f"'{layer.name}': {w}"))
        steps.append(lambda: notify_info(message))  # a notification pop-up is a few Qt widgets
        self._pending_display = True

        def next_step() -> None:
            try:
                steps.pop(0)()
            except Exception as exc:  # noqa: BLE001 - shown, never a traceback dialog
                steps.clear()
                notify_error(describe_error(exc))
            if steps:
                QTimer.singleShot(DISPLAY_STEP_MS, next_step)
            else:
                self._pending_display = False

        QTimer.singleShot(DISPLAY_STEP_MS, next_step)


def data_digest(data) -> str:
    """A digest of a layer's pixels (with shape and dtype): tells whether a result layer was edited since written."""
    arr = np.ascontiguousarray(np.asarray(data))
    digest = hashlib.blake2b(f"{arr.shape}{arr.dtype.str}".encode(), digest_size=16)
    digest.update(arr.view(np.uint8).reshape(-1) if arr.size else b"")
    return digest.hexdigest()


@contextmanager
def _inserting_without_selecting(layers):
    """Insert layers without napari selecting them.

    napari makes a newly inserted layer the selected one, which rebuilds the layer
    controls panel and restyles the layer buttons in the same event-loop turn;
    the Segment widget selects the result on a later turn instead.  Does nothing
    when napari's (private) switch is not there.
    """
    activate = getattr(layers, "_activate_on_insert", None)
    if activate is not None:
        layers._activate_on_insert = False
    try:
        yield
    finally:
        if activate is not None:
            layers._activate_on_insert = activate
