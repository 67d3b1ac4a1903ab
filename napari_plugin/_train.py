"""Train widget: fine-tune a model from annotations in a worker, with a live loss plot.

Sources: the annotation layer of the current image (Annotate widget) or a
training folder written by it (``images/``, ``labels/``, ``classes.json``).
Training runs :func:`micro_seg.training.iter_train_segmenter` in a worker
thread; each progress report updates the progress bar and the plot (loss per
step, validation mean IoU per epoch).  The trained model is saved with
:func:`micro_seg.registry.save_model` into the user model folder, so it
appears at once in every model picker (and in ``micro-seg models list``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    RadioButtons,
    SpinBox,
)
from psygnal import Signal

from micro_seg.augment import AUGMENT_PRESETS
from napari_plugin._common import (JobRunner, analysis_array, avoid_triton_crash, layer_pixel_size_um, notify_info,
                                   notify_warning)
from napari_plugin._layers import connect_layer_events, layer_chooser, ms_meta

__all__ = ["TrainWidget", "TrainParams", "train_job", "model_events", "model_choices"]

NEW_MODEL = "(new model from scratch)"
#: Input scales offered for a new model: (label, factor).
INPUT_SCALE_CHOICES = [("2 (double size)", 2.0), ("1 (as acquired)", 1.0), ("1/2", 0.5), ("1/4", 0.25),
                       ("1/8", 0.125)]


class _ModelEvents:
    """Signals shared by the widgets: a model was trained and saved (payload: its folder)."""

    saved = Signal(str)


model_events = _ModelEvents()


def model_choices(*, tasks: tuple[str, ...] = ("semantic", "grains")) -> list[tuple[str, str]]:
    """(label, value) pairs for a model picker: every model the registry finds."""
    from micro_seg.registry import list_models

    out = []
    for card in list_models():
        if card.task not in tasks:
            continue
        folder = card.extra.get("folder", card.name)
        out.append((f"{card.name}  [{card.task}: {', '.join(card.classes)}]", str(folder)))
    return out


@dataclass(frozen=True)
class TrainParams:
    """Everything a training run needs (no widgets: the worker must not read the GUI)."""

    classes: tuple[str, ...]
    out_dir: str
    name: str
    images: tuple = ()
    labels: tuple = ()
    folder: str | None = None
    base: str | None = None
    epochs: int = 10
    patch_size: int = 128
    batch_size: int = 8
    time_limit_s: float | None = 300.0
    val_fraction: float = 0.0
    arch_kwargs: dict | None = field(default=None, hash=False)
    seed: int = 0
    input_scale: float | None = None  # None: 1 for a new model, the base model's when fine-tuning
    pseudo_label_threshold: float | None = None  # fine-tuning: keep the base model's sure answers where unlabelled
    augment: str = "full"  # micro_seg.augment.AUGMENT_PRESETS
    keep_orientation: bool = False  # no 90-degree rotations
    material: str = ""  # recorded on the card (a fine-tune does not inherit the base model's material)
    pixel_sizes: tuple = ()  # of the images (None = uncalibrated): the card's pixel_size_um_range


def _read_folder(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[float | None]]:
    from micro_seg.errors import TrainingDataError
    from micro_seg.io import read_labels, read_micrograph
    from napari_plugin._annotate import read_class_schema

    schema = read_class_schema(folder)
    if schema is None:
        raise TrainingDataError(f"{folder}: no classes.json; save annotations there with the Annotate widget first")
    images, labels, sizes = [], [], []
    for lab_path in sorted((folder / "labels").glob("*.tif")):
        img_path = folder / "images" / lab_path.name
        if not img_path.is_file():
            raise TrainingDataError(f"{lab_path}: no matching image {img_path}")
        mg = read_micrograph(img_path)
        images.append(mg.data)
        sizes.append(mg.pixel_size_um)
        labels.append(read_labels(lab_path)[0])
    if not images:
        raise TrainingDataError(f"{folder}: no annotated images in {folder / 'labels'}")
    return images, labels, list(schema["classes"]), sizes


def train_job(params: TrainParams, cancel):
    """Worker generator: yields training progress dicts, returns ``(folder, card, history)``."""
    from micro_seg.augment import augment_preset
    from micro_seg.registry import save_model
    from micro_seg.training import iter_train_segmenter, trained_pixel_size_range

    avoid_triton_crash()  # torch's first optimizer may import triton, which crashes next to napari's OpenGL
    yield {"stage": "prepare", "message": "preparing training data"}

    images, labels, classes = list(params.images), list(params.labels), list(params.classes)
    sizes = list(params.pixel_sizes)
    if params.folder:
        images, labels, classes, sizes = _read_folder(Path(params.folder))
    from micro_seg.postprocess import BOUNDARY_CLASS_NAMES

    kwargs: dict[str, Any] = {}
    # a model with a boundary class is a grain model: its results become grain instances
    kwargs["task"] = "grains" if any(c.lower() in BOUNDARY_CLASS_NAMES for c in classes) else "semantic"
    if params.arch_kwargs:
        kwargs["arch_kwargs"] = dict(params.arch_kwargs)
    if params.base:
        kwargs["base"] = params.base
    if params.input_scale is not None:
        kwargs["input_scale"] = float(params.input_scale)
    if params.base and params.pseudo_label_threshold is not None:
        kwargs["pseudo_label_threshold"] = float(params.pseudo_label_threshold)
    # the card records the pixel sizes trained on (a fine-tune's own images', not its base model's range)
    kwargs["card_extra"] = {"pixel_size_um_range": trained_pixel_size_range(sizes)}
    if params.material.strip():
        kwargs["card_extra"]["material"] = params.material.strip()
    result = yield from iter_train_segmenter(
        images, labels, classes=classes, epochs=params.epochs, patch_size=params.patch_size,
        batch_size=params.batch_size, time_limit_s=params.time_limit_s, val_fraction=params.val_fraction,
        seed=params.seed, cancel=cancel, name=params.name, patience=None,
        augment=augment_preset(params.augment, keep_orientation=params.keep_orientation), **kwargs,
    )
    folder = save_model(Path(params.out_dir) / params.name, result.network, result.card, keep_previous=True)
    return str(folder), result.card, list(result.history)


def _other_model_named(name: str, target: Path) -> str | None:
    """The folder of a model called ``name`` other than ``target`` (a shipped model, or one in a MICRO_SEG_MODELS
    folder), or None."""
    from micro_seg.registry import list_models

    try:
        cards = list_models()
    except Exception:  # a broken model folder must not stop training
        return None
    for card in cards:
        folder = card.extra.get("folder")
        if card.name == name and folder and Path(folder).resolve() != Path(target).resolve():
            return str(folder)
    return None


class LossPlot:
    """A small matplotlib figure in the dock: loss per step and validation IoU per epoch."""

    def __init__(self):
        from napari_plugin._plots import dock_figure

        self.figure, self.canvas = dock_figure(height_px=190, figsize=(3.6, 2.2))
        self.ax = self.figure.add_subplot(111)
        self.ax2 = self.ax.twinx()
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.epochs: list[float] = []
        self.ious: list[float] = []
        self._draw()

    def clear(self) -> None:
        self.steps.clear(); self.losses.clear(); self.epochs.clear(); self.ious.clear()
        self._draw()

    def add(self, event: dict) -> None:
        spe = max(int(event.get("steps_per_epoch") or 1), 1)
        if event.get("stage") == "step":
            self.steps.append(event["epoch"] + (event["step"] + 1) / spe)
            self.losses.append(float(event["loss"]))
            if len(self.losses) % 5 == 0:  # redraw at most every 5 steps
                self._draw()
        elif event.get("stage") == "epoch":
            val = event.get("val") or {}
            if val.get("mean_iou") is not None:
                self.epochs.append(event["epoch"] + 1)
                self.ious.append(float(val["mean_iou"]))
            self._draw()

    def _draw(self) -> None:
        ax, ax2 = self.ax, self.ax2
        ax.clear(); ax2.clear()
        from napari_plugin._plots import style_axes

        ax.plot(self.steps, self.losses, color="#56B4E9", lw=1, label="training loss")
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8, color="#56B4E9")
        if self.ious:
            ax2.plot(self.epochs, self.ious, "o-", color="#E69F00", ms=3, label="val. mean IoU")
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("validation mean IoU", fontsize=8, color="#E69F00")
        else:
            ax2.set_yticks([])
        style_axes(ax, ax2)
        if not self.steps:
            ax.text(0.5, 0.5, "loss curve appears here while training", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="#8a8a8a")
        self.canvas.draw_idle()


class TrainWidget(Container):
    """Dock widget that fine-tunes or trains a model (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._source = RadioButtons(label="Train on", choices=["Annotation layer", "Training folder"],
                                    value="Annotation layer", orientation="horizontal")
        self._image = ComboBox(label="Image", choices=layer_chooser(
            napari_viewer, "Image", lambda l: ms_meta(l).get("kind") != "uncertainty"))
        self._annotations = ComboBox(label="Annotations", choices=layer_chooser(
            napari_viewer, "Labels", lambda l: ms_meta(l).get("kind") == "annotations"))
        self._folder = FileEdit(label="Training folder", mode="d", value=str(Path.home() / "micro-seg-training"))
        self._base = ComboBox(label="Start from", choices=self._base_choices,
                              tooltip="Fine-tuning a shipped model needs far fewer labels than training from scratch.")
        self._name = LineEdit(label="New model name", value="my-material")
        self._material = LineEdit(label="Material", value="",
                                  tooltip="What the images show (e.g. 'ferritic steel, nital etch'); recorded on the "
                                          "model card and shown when the model is picked.")
        self._epochs = SpinBox(label="Epochs", value=10, min=1, max=100_000)  # the time limit usually ends it
        self._minutes = FloatSpinBox(label="Time limit (min)", value=5.0, min=0.1, max=600.0, step=0.5)
        self._patch = SpinBox(label="Patch size (px)", value=128, min=16, max=1024, step=16)
        self._scale = ComboBox(
            label="Input scale", value=1.0, choices=INPUT_SCALE_CHOICES,
            tooltip="The network sees the images resized by this factor (1/2 = half size: 4x faster, more context "
                    "per patch; for structures many pixels across; 1/8 for defects that span the whole field). "
                    "Fine-tuning keeps the base model's scale.")
        self._keep_base = CheckBox(
            text="Keep the base model where not annotated", value=True,
            tooltip="Fine-tuning: unannotated pixels the base model is >= 90% sure of are trained on its own answer, "
                    "so a few strokes correct its mistakes without changing what they do not touch.")
        self._augment = ComboBox(
            label="Augment", choices=list(AUGMENT_PRESETS), value="full",
            tooltip="full: flips, rotations, scale, contrast, brightness, gamma, noise and blur; geometric: flips, "
                    "rotations and scale only (subtle, low-contrast targets); none.")
        self._keep_orientation = CheckBox(
            text="Keep orientation (no 90° rotations)", value=False,
            tooltip="For images with a fixed direction: grinding marks, rolling direction, scan lines.")
        self._train_btn = PushButton(text="Train")
        self._cancel_btn = PushButton(text="Cancel")
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=100)
        self._status = Label(label="Status", value="Annotate an image (or pick a folder), then Train")
        self._plot = LossPlot()
        self._runner = JobRunner(progress_bar=self._progress, cancel_button=self._cancel_btn,
                                 status_label=self._status, run_button=self._train_btn)
        self.extend([self._source, self._image, self._annotations, self._folder, self._base, self._name,
                     self._material, self._epochs, self._minutes, self._patch, self._scale, self._keep_base,
                     self._augment, self._keep_orientation, self._train_btn, self._cancel_btn, self._progress,
                     self._status])
        self.native.layout().addWidget(self._plot.canvas)
        self._source.changed.connect(self._update_visibility)
        self._base.changed.connect(self._update_visibility)
        self._train_btn.changed.connect(self.train)
        model_events.saved.connect(self._on_model_saved)
        connect_layer_events(napari_viewer, self)
        self._update_visibility()
        self.reset_choices()
        self.trained: tuple | None = None

    @staticmethod
    def _base_choices(_widget=None) -> list[tuple[str, Any]]:
        try:
            models = model_choices()
        except Exception:  # a broken model folder must not break the widget
            models = []
        return [(NEW_MODEL, None)] + models

    def _on_model_saved(self, _folder: str) -> None:
        try:
            self._base.reset_choices()
        except RuntimeError:
            pass

    def _update_visibility(self, *_: Any) -> None:
        from_layer = self._source.value == "Annotation layer"
        self._image.visible = from_layer
        self._annotations.visible = from_layer
        self._folder.visible = not from_layer
        self._scale.visible = self._base.value is None  # a fine-tuned model keeps its base model's scale
        self._keep_base.visible = self._base.value is not None

    def _params(self, *, arch_kwargs: dict | None = None) -> TrainParams | None:
        from micro_seg.registry import user_models_dir
        from micro_seg.training import DEFAULT_PSEUDO_LABEL_THRESHOLD

        name = self._name.value.strip().replace(" ", "-")
        # '.' and '..' are the model folder itself and its parent: the model would be written over the folder of
        # every user model (which then reads as one model, hiding the others) or beside it
        if not name or name.startswith(".") or any(c in name for c in "/\\:"):
            notify_warning("Type a model name (letters, digits, '-' or '_'), e.g. 'my-steel'.")
            return None
        common = dict(name=name, out_dir=str(user_models_dir()), base=self._base.value,
                      epochs=int(self._epochs.value), patch_size=int(self._patch.value),
                      time_limit_s=float(self._minutes.value) * 60.0, arch_kwargs=arch_kwargs,
                      input_scale=float(self._scale.value) if self._base.value is None else None,
                      pseudo_label_threshold=(DEFAULT_PSEUDO_LABEL_THRESHOLD
                                              if self._base.value is not None and self._keep_base.value else None),
                      augment=str(self._augment.value), keep_orientation=bool(self._keep_orientation.value),
                      material=str(self._material.value))
        if self._source.value == "Training folder":
            folder = Path(str(self._folder.value)).expanduser()
            if not (folder / "labels").is_dir():
                notify_warning(f"{folder} holds no labels/ folder: save annotations there with the Annotate widget.")
                return None
            return TrainParams(classes=(), folder=str(folder), **common)
        image, ann = self._image.value, self._annotations.value
        if image is None or ann is None:
            notify_warning("Pick an image and its annotation layer (Annotate widget > New annotation layer).")
            return None
        import napari.layers

        from napari_plugin._annotate import _not_annotations_of, not_one_image
        from napari_plugin._common import made_from

        why = not_one_image(image)
        if why:
            notify_warning(why.replace("annotations need", "training needs") + ".")
            return None
        labels = np.asarray(ann.data)
        data = np.asarray(image.data)
        if labels.shape != data.shape[:2]:
            notify_warning(f"'{ann.name}' ({labels.shape[0]} x {labels.shape[1]}) does not match "
                           f"'{image.name}' ({data.shape[0]} x {data.shape[1]}): pick the matching image.")
            return None
        why = _not_annotations_of(ann, image, self._viewer.layers)
        if why:  # fields of one size: the strokes of one would teach the model the pixels of another
            mine = [layer.name for layer in self._viewer.layers if isinstance(layer, napari.layers.Image)
                    and layer is not image and made_from(ann, layer, self._viewer.layers)]
            notify_warning(f"{why}: pick " + (f"'{mine[0]}' under Image" if mine else "the image it was made for")
                           + ", or annotations made for this image.")
            return None
        if not labels.any():
            notify_warning(f"'{ann.name}' is empty: paint a few strokes of every class first (Annotate widget).")
            return None
        classes = tuple(ms_meta(ann).get("classes") or ())
        top = int(labels.max())
        if classes and top > len(classes):  # the engine would refuse it as "training pair 0", naming no layer
            notify_warning(f"'{ann.name}' uses label {top}, but its classes are only {len(classes)} "
                           f"({', '.join(f'{i + 1} = {c}' for i, c in enumerate(classes))}): repaint the pixels "
                           f"of label {top} with labels 1..{len(classes)}, or add the missing class name(s) and "
                           "make a new annotation layer (Annotate widget).")
            return None
        present = set(np.unique(labels).tolist()) - {0}
        if len(present) < 2:
            notify_warning("Only one class is annotated: label at least two classes.")
            return None
        data = analysis_array(image)
        labels = labels[: data.shape[0]]
        return TrainParams(classes=classes, images=(data,), labels=(labels,),
                           pixel_sizes=(layer_pixel_size_um(image),), **common)

    def train(self, *_: Any, arch_kwargs: dict | None = None):
        """Start training in a worker; returns the worker (or None when the input is bad)."""
        params = self._params(arch_kwargs=arch_kwargs)
        if params is None:
            return None
        from micro_seg.errors import MicroSegError
        from micro_seg.io import check_output_folder
        from micro_seg.registry import PREVIOUS_DIR

        target = Path(params.out_dir) / params.name
        try:  # before training, not after it: the trained model would have nowhere to go
            check_output_folder(target, f"the model folder for '{params.name}'")
        except MicroSegError as exc:
            notify_warning(f"{exc}: choose another model name.")
            return None
        other = _other_model_named(params.name, target)
        if other is not None:  # models are found by name: one of the two would hide the other everywhere
            notify_warning(f"'{params.name}' is the name of another model ({other}): a model of yours with that name "
                           "would hide it (or be hidden by it) in every model list and in micro-seg --model; choose "
                           "another name.")
            return None
        if target.exists():
            notify_info(f"A model called '{params.name}' exists; it will be replaced when training finishes, and kept "
                        f"in {target / PREVIOUS_DIR} (pick that folder as the model to go back to it).")
        self._plot.clear()
        self._time_limit_s = params.time_limit_s
        return self._runner.start(train_job, params, on_done=self._done, on_yield=self._on_progress,
                                  description="Training")

    def _on_progress(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        self._plot.add(event)
        for warning in event.get("warnings") or ():
            notify_warning(f"Training: {warning}.")
        epochs = max(int(event.get("epochs") or 1), 1)
        spe = max(int(event.get("steps_per_epoch") or 1), 1)
        if event.get("stage") == "step":
            done = event["epoch"] * spe + event["step"] + 1
            frac = done / (epochs * spe)
            limit = getattr(self, "_time_limit_s", None)
            if limit and event.get("seconds") is not None:  # the time limit ends most runs before their epochs
                frac = max(frac, float(event["seconds"]) / limit)
            self._progress.value = int(100 * min(frac, 1.0))
            self._status.value = f"Epoch {event['epoch'] + 1}/{epochs}  loss {event['loss']:.3f}"

    def _done(self, result: tuple) -> None:
        folder, card, history = result
        self.trained = result
        last = history[-1] if history else {}
        iou = ((last.get("val") or {}).get("mean_iou"))
        extra = f", val. mean IoU {iou:.3f}" if iou is not None else ""
        self._status.value = f"Saved model '{card.name}' ({len(history)} epochs{extra})"
        notify_info(f"Model '{card.name}' saved to {folder}; pick it in the Segment widget.")
        model_events.saved.emit(folder)
