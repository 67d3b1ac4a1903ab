"""Annotate widget: class schema, scribble layer, assisted labelling, save training pairs.

Workflow: pick the image, type the class names (comma-separated; colours come
from a colour-blind-safe palette), press **New annotation layer** and paint
scribbles (0 = unlabelled, value ``i`` = the i-th class).  Assists:

* **Start from prediction** copies a Segment result (class labels) into the
  unlabelled pixels of the annotation layer (painted pixels are kept) so you
  only correct its mistakes;
* **Click fills superpixel**: each click fills the whole superpixel under the
  cursor (computed once per image in a worker, tile by tile: progress, and
  **Cancel** stops it on a huge image);
* **Next uncertain region** zooms to the window the model is least sure about
  that you have not annotated yet (active learning);
* **Save pair** writes ``images/<name>.tif``, ``labels/<name>.tif`` (with the
  calibration) and ``classes.json`` (the schema) into a training folder that
  the Train widget and ``micro-seg train`` read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from micro_seg.io import CLASS_SCHEMA_FILE
from napari_plugin._common import (
    JobRunner,
    databar_rows,
    image_link,
    layer_pixel_size_um,
    made_from,
    multiscale_problem,
    notify_error,
    notify_info,
    notify_warning,
    units_kwargs,
    viewer_camera,
)
from napari_plugin._layers import (
    PALETTE,
    class_colormap,
    connect_layer_events,
    layer_chooser,
    ms_meta,
    parse_class_schema,
)

__all__ = ["AnnotateWidget", "save_training_pair", "read_class_schema", "uncertain_window"]

SCHEMA_FILE = CLASS_SCHEMA_FILE  # the schema file micro-seg train reads the class names from


def _is_annotation(layer) -> bool:
    return ms_meta(layer).get("kind") == "annotations"


def _is_prediction(layer) -> bool:
    return ms_meta(layer).get("kind") in ("classes", "grains")


def _is_uncertainty(layer) -> bool:
    return ms_meta(layer).get("kind") == "uncertainty"


def not_one_image(image) -> str:
    """Why image layer ``image`` cannot be annotated or trained on ("" for a 2-D grey or RGB image): a stack or
    a volume would get an annotation layer of its first two axes (a slice of the stack's shape, not its pixels)."""
    if multiscale_problem(image):
        return multiscale_problem(image)
    shape = np.shape(image.data)
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4)):
        return ""
    return (f"'{image.name}' has shape {shape}: annotations need a 2-D grey or RGB image "
            "(split stacks into single images first)")


def _not_annotations_of(layer, image, layers=()) -> str:
    """Why annotation ``layer`` does not belong to ``image`` ("" when it does): another size, or made for another
    image (by the image id or name the annotation layer recorded; see :func:`made_from` for ``layers``)."""
    if image is None:
        return "no image is picked"
    shape, ann = tuple(np.shape(image.data)[:2]), tuple(np.shape(layer.data)[:2])
    if ann != shape:
        return (f"'{layer.name}' ({ann[0]} x {ann[1]} px) is not the size of '{image.name}' "
                f"({shape[0]} x {shape[1]} px)")
    ms = ms_meta(layer)
    if (ms.get("image_id") or ms.get("image")) and not made_from(layer, image, layers):
        return f"'{layer.name}' was made for '{ms.get('image')}', not '{image.name}'"
    return ""


def read_class_schema(folder: str | Path) -> dict | None:
    """The class schema (``{"classes": [...], "colors": [...]}``) saved in a training folder."""
    path = Path(folder) / SCHEMA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("classes") else None


def save_training_pair(
    folder: str | Path,
    name: str,
    image: np.ndarray,
    annotations: np.ndarray,
    *,
    classes: list[str],
    colors: list[str] | None = None,
    pixel_size_um: float | None = None,
) -> tuple[Path, Path]:
    """Write one image/annotation pair and the class schema into a training folder.

    Layout: ``folder/images/<name>.tif``, ``folder/labels/<name>.tif`` (0 =
    unlabelled, ``i`` = ``classes[i-1]``), ``folder/classes.json``.
    """
    import tifffile

    from micro_seg.errors import TrainingDataError
    from micro_seg.io import write_labels

    folder = Path(folder)
    old = read_class_schema(folder)
    if old is not None and list(old["classes"]) != list(classes):
        raise TrainingDataError(
            f"{folder}: this training folder uses classes {old['classes']}, not {classes}; "
            "choose another folder or use the same class names"
        )
    top = int(np.max(annotations)) if np.size(annotations) else 0
    if classes and top > len(classes):  # training would refuse the folder later
        raise TrainingDataError(f"{name}: annotation value {top} but only {len(classes)} classes "
                                f"({', '.join(classes)}); paint with labels 1..{len(classes)}")
    img_path = folder / "images" / f"{name}.tif"
    lab_path = folder / "labels" / f"{name}.tif"
    if img_path.is_file():  # the same image again updates its annotations; another image never replaces a pair
        try:
            arr = np.asarray(image)
            same = np.array_equal(tifffile.imread(img_path), arr, equal_nan=arr.dtype.kind in "fc")
        except Exception:  # unreadable: not this image
            same = False
        if not same:
            raise TrainingDataError(f"{img_path}: the training folder already holds another image named {name!r}; "
                                    "it is not replaced: rename the image layer or choose another training folder")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if pixel_size_um:
        kwargs = {"resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um), "resolutionunit": "CENTIMETER"}
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    # labels first: write_labels picks the dtype and refuses what is not a label image (negative values), before
    # the image is written, so a refused pair leaves no image without its labels
    write_labels(lab_path, annotations, pixel_size_um=pixel_size_um)
    tifffile.imwrite(img_path, image, photometric="rgb" if rgb else "minisblack", **kwargs)
    schema = {"classes": list(classes), "colors": list(colors or PALETTE[: len(classes)]),
              "label_convention": "0 = unlabelled, i = classes[i-1]"}
    (folder / SCHEMA_FILE).write_text(json.dumps(schema, indent=2), encoding="utf-8")
    return img_path, lab_path


def uncertain_window(uncertainty: np.ndarray, annotated: np.ndarray | None, *, window: int) -> tuple[int, int, int, int]:
    """The ``window`` x ``window`` block with the highest mean uncertainty, skipping annotated blocks.

    Returns ``(row0, col0, row1, col1)``.  A block counts as annotated when
    more than 5 % of its pixels carry a label.
    """
    rows, cols = uncertainty.shape[:2]
    w = max(8, min(int(window), rows, cols))
    nr, nc = max(1, rows // w), max(1, cols // w)
    u = np.asarray(uncertainty[: nr * w, : nc * w], dtype=np.float64)
    means = u.reshape(nr, w, nc, w).mean(axis=(1, 3))
    if annotated is not None:
        a = (np.asarray(annotated[: nr * w, : nc * w]) > 0).reshape(nr, w, nc, w).mean(axis=(1, 3))
        means = np.where(a > 0.05, -np.inf, means)
    if not np.isfinite(means).any():
        means = u.reshape(nr, w, nc, w).mean(axis=(1, 3))
    r, c = np.unravel_index(int(np.argmax(means)), means.shape)
    return int(r * w), int(c * w), int(r * w + w), int(c * w + w)


@dataclass(frozen=True)
class SuperpixelParams:
    image: np.ndarray
    size_px: int


#: Side of the tiles superpixels are computed in: progress and Cancel between tiles, and bounded memory on a
#: huge image (SLIC on a whole 16k x 16k image would take minutes and several GB); superpixels end at tile edges.
SUPERPIXEL_TILE = 2048


def _superpixel_job(params: SuperpixelParams, cancel):
    """SLIC superpixels of about ``size_px`` x ``size_px`` pixels, tile by tile (a generator run in a worker:
    yields ``(tiles done, tiles)``, stops with CancelledError when ``cancel`` is set, returns the labels)."""
    from skimage.segmentation import slic

    from micro_seg.errors import CancelledError

    data = params.image
    rgb = data.ndim == 3
    rows, cols = data.shape[:2]
    step = max(1, (rows * cols) // 4_000_000)  # grey levels for the contrast stretch from about 4 MP
    sample = np.asarray(data[::step], dtype=np.float32)
    lo, hi = np.percentile(sample[..., :3] if rgb else sample, (0.5, 99.5))
    out = np.zeros((rows, cols), np.int32)
    tiles = [(r, c) for r in range(0, rows, SUPERPIXEL_TILE) for c in range(0, cols, SUPERPIXEL_TILE)]
    offset = 0
    for i, (r, c) in enumerate(tiles):
        if cancel.is_set():
            raise CancelledError("superpixels cancelled")
        img = np.asarray(data[r:r + SUPERPIXEL_TILE, c:c + SUPERPIXEL_TILE], dtype=np.float32)
        if rgb:
            img = img[..., :3]
        img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
        n = max(4, int(img.shape[0] * img.shape[1] / max(params.size_px, 2) ** 2))
        lab = slic(img, n_segments=n, compactness=0.3 if not rgb else 10, channel_axis=-1 if rgb else None,
                   start_label=1, enforce_connectivity=True)
        out[r:r + lab.shape[0], c:c + lab.shape[1]] = lab + offset
        offset += int(lab.max())
        yield {"done": i + 1, "total": len(tiles), "message": f"tile {i + 1}/{len(tiles)}"}
    return out


class AnnotateWidget(Container):
    """Dock widget for building training annotations (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._superpixels: np.ndarray | None = None
        self._superpixel_key: tuple | None = None

        self._image = ComboBox(label="Image", choices=layer_chooser(napari_viewer, "Image", lambda l: not _is_uncertainty(l)))
        self._classes = LineEdit(label="Classes", value="matrix, precipitate",
                                 tooltip="Class names, comma-separated, optionally with a colour: 'matrix, pore:#D55E00'. "
                                         "Label 1 = first class; 0 = unlabelled.")
        self._new_btn = PushButton(text="New annotation layer")
        self._annotations = ComboBox(label="Annotations", choices=layer_chooser(napari_viewer, "Labels", _is_annotation))
        self._prediction = ComboBox(label="Prediction", choices=layer_chooser(napari_viewer, "Labels", _is_prediction))
        self._from_pred_btn = PushButton(text="Start from prediction")
        self._from_pred_btn.tooltip = ("Fill the unlabelled pixels of the annotation layer with the prediction's "
                                       "classes; pixels you painted keep their label.")
        self._sp_size = SpinBox(label="Superpixel size (px)", value=24, min=4, max=512)
        self._sp_mode = CheckBox(text="Click fills superpixel")
        self._uncertainty = ComboBox(label="Uncertainty", choices=layer_chooser(napari_viewer, "Image", _is_uncertainty))
        self._window = SpinBox(label="Review window (px)", value=256, min=32, max=4096, step=32)
        self._next_btn = PushButton(text="Next uncertain region")
        self._folder = FileEdit(label="Training folder", mode="d", value=str(Path.home() / "micro-seg-training"))
        self._save_btn = PushButton(text="Save image + annotations")
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=100)
        self._cancel_btn = PushButton(text="Cancel")
        self._status = Label(label="Status", value="Pick an image, then New annotation layer")
        self._runner = JobRunner(progress_bar=self._progress, cancel_button=self._cancel_btn, status_label=self._status)

        self.extend([
            self._image, self._classes, self._new_btn, self._annotations, self._prediction,
            self._from_pred_btn, self._sp_size, self._sp_mode, self._uncertainty, self._window,
            self._next_btn, self._folder, self._save_btn, self._progress, self._cancel_btn, self._status,
        ])
        self._new_btn.changed.connect(self.new_annotation_layer)
        self._from_pred_btn.changed.connect(self.start_from_prediction)
        self._sp_mode.changed.connect(self._toggle_superpixel_mode)
        self._next_btn.changed.connect(self.next_uncertain_region)
        self._save_btn.changed.connect(self.save_pair)
        connect_layer_events(napari_viewer, self)
        self.reset_choices()

    # ------------------------------------------------------------ schema / layer
    def _schema(self) -> tuple[list[str], list[str]]:
        return parse_class_schema(self._classes.value)

    def new_annotation_layer(self, *_: Any):
        """Add an empty annotation Labels layer over the chosen image, coloured by the schema."""
        image = self._image.value
        if image is None:
            notify_warning("Open a micrograph first (File > Open), then pick it under Image.")
            return None
        names, colors = self._schema()
        if len(names) < 2:
            notify_warning("Type at least two class names, comma-separated (e.g. 'matrix, precipitate').")
            return None
        if len(set(names)) != len(names):
            notify_warning(f"Class names must be different: {', '.join(names)}.")
            return None
        why = not_one_image(image)
        if why:
            notify_warning(why + ".")
            return None
        shape = np.asarray(image.data).shape[:2]
        meta = {"micro_seg": {"kind": "annotations", "classes": names, "colors": colors,
                              "image": image.name, "image_id": image_link(image, self._viewer.layers),
                              "pixel_size_um": layer_pixel_size_um(image)}}
        layer = self._viewer.add_labels(
            np.zeros(shape, dtype=np.uint8), name=f"{image.name} annotations", scale=image.scale[-2:],
            translate=image.translate[-2:],  # over the image's pixels: strokes label the pixels painted on
            metadata=meta, colormap=class_colormap(len(names), colors), opacity=0.6, **units_kwargs(image),
        )
        layer.brush_size = 10
        layer.selected_label = 1
        layer.mode = "paint"
        self._annotations.reset_choices()
        self._annotations.value = layer
        self._status.value = "Paint: label 1 = " + names[0] + ", 2 = " + names[1] + (" ..." if len(names) > 2 else "")
        return layer

    def _annotation_layer(self, *, create: bool = False):
        layer = self._annotations.value
        if layer is None and create:
            layer = self.new_annotation_layer()
        if layer is None and not create:
            notify_warning("No annotation layer: press 'New annotation layer' first.")
        return layer

    def start_from_prediction(self, *_: Any) -> None:
        """Copy the chosen prediction into the annotation layer's unlabelled pixels (1-based classes) to correct it;
        pixels already painted keep their label."""
        pred = self._prediction.value
        if pred is None:
            notify_warning("No prediction: run the Segment widget on this image first.")
            return
        pm = ms_meta(pred)
        classes = list(pm.get("classes") or [])
        if pm.get("kind") == "grains":
            data = pm.get("class_labels")
            if data is None:
                notify_warning(f"'{pred.name}' holds grain instances without class labels; "
                               "re-run Segment to get a prediction you can correct.")
                return
            data = np.asarray(data)
        else:
            data = np.asarray(pred.data)
        if not classes:
            notify_warning(f"'{pred.name}' does not say its class names; re-run Segment.")
            return
        image = self._image.value
        if image is not None and data.ndim == 2 and databar_rows(image) and \
                tuple(data.shape) == (np.shape(image.data)[0] - databar_rows(image), np.shape(image.data)[1]):
            # labels of the part above the SEM data bar, as segment and batch write them (and File > Save now, then
            # File > Open): padded to the image's height, the bar rows left unlabelled (-1 + 1 = 0 below)
            data = np.pad(data.astype(np.int64), [(0, databar_rows(image)), (0, 0)], constant_values=-1)
        if image is not None and tuple(data.shape[:2]) != tuple(np.shape(image.data)[:2]):
            notify_error(f"'{pred.name}' ({data.shape[0]} x {data.shape[1]} px) is not a prediction of "
                         f"'{image.name}' ({np.shape(image.data)[0]} x {np.shape(image.data)[1]} px): segment this "
                         "image first, or pick its prediction")
            return
        pm_image = pm.get("image")
        if image is not None and (pm.get("image_id") or pm_image) and not made_from(pred, image, self._viewer.layers):
            # fields of one size: another field's classes would fill this one's annotations
            notify_error(f"'{pred.name}' is a prediction of '{pm_image}', not '{image.name}': segment this image "
                         "first, or pick its prediction")
            return
        layer = self._annotations.value
        if image is not None and layer is not None and layer.data.shape == data.shape:
            ms = ms_meta(layer)
            if (ms.get("image_id") or ms.get("image")) and not made_from(layer, image, self._viewer.layers):
                notify_warning(f"'{layer.name}' was made for '{ms.get('image')}', not '{image.name}': nothing was "
                               "copied. Pick the annotations of this image under Annotations (or pick its image).")
                return
        self._classes.value = ", ".join(classes)
        if layer is None or list(ms_meta(layer).get("classes") or []) != classes or layer.data.shape != data.shape:
            layer = self.new_annotation_layer()
            if layer is None:
                return
        new = (data.astype(np.int64) + 1).astype(np.uint8 if len(classes) < 255 else np.uint16)
        old = np.asarray(layer.data)
        kept = int(np.count_nonzero(old))
        if kept and old.dtype.kind in "ui" and int(new.max()) <= np.iinfo(old.dtype).max:
            # the user's strokes stay: only unlabelled pixels take the prediction, as one edit napari can undo
            # (setting layer.data would also drop the undo history of the strokes)
            unlabelled = np.nonzero(old == 0)
            layer.data_setitem(unlabelled, new[unlabelled])
        else:
            if kept:
                new = np.where(old > 0, old, new).astype(np.result_type(old.dtype, new.dtype))
            layer.data = new
        layer.selected_label = 1
        self._status.value = f"Copied '{pred.name}': paint over its mistakes"
        if kept:
            notify_info(f"Filled the unlabelled pixels of '{layer.name}' from '{pred.name}'; your {kept} painted "
                        "pixel(s) were kept.")

    # ------------------------------------------------------------ superpixels
    def _toggle_superpixel_mode(self, on: bool) -> None:
        layer = self._annotations.value
        if not on:
            if layer is not None and self._on_click in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.remove(self._on_click)
            return
        if layer is None:
            notify_warning("No annotation layer: press 'New annotation layer' first.")
            self._sp_mode.value = False
            return
        why = _not_annotations_of(layer, self._image.value, self._viewer.layers)
        if why:
            notify_warning(f"Superpixels come from the image picked under Image, but {why}: pick the image these "
                           "annotations are for (or make a new annotation layer for this image).")
            self._sp_mode.value = False
            return
        self.compute_superpixels()
        layer.mode = "pan_zoom"
        if self._on_click not in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.append(self._on_click)
        self._viewer.layers.selection.active = layer

    def compute_superpixels(self):
        """Compute superpixels of the chosen image in a worker (cached per image and size)."""
        image = self._image.value
        if image is None:
            notify_warning("Pick the image to annotate under Image.")
            return None
        if multiscale_problem(image):
            notify_warning(multiscale_problem(image) + ".")
            return None
        data = np.asarray(image.data)
        if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
            notify_warning(f"'{image.name}' has shape {data.shape}: superpixels need a 2-D grey or RGB image "
                           "(split stacks into single images first).")
            return None
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            notify_warning(f"'{image.name}' has NaN or infinite pixels: superpixels need finite values "
                           "(replace them, e.g. with the image's median, first).")
            return None
        key = (id(image.data), self._sp_size.value)
        if self._superpixel_key == key and self._superpixels is not None:
            return None

        def done(labels: np.ndarray) -> None:
            self._superpixels = labels
            self._superpixel_key = key
            self._superpixel_image = image
            self._status.value = f"{int(labels.max())} superpixels: click to fill with the selected label"

        return self._runner.start(_superpixel_job, SuperpixelParams(data, int(self._sp_size.value)),
                                  on_done=done, description="Superpixels")

    def fill_superpixel_at(self, row: float, col: float, label: int | None = None) -> int:
        """Fill the superpixel containing data pixel (row, col) with ``label``; returns pixels set."""
        layer = self._annotations.value
        if layer is None or self._superpixels is None:
            notify_warning("Superpixels are not ready yet: wait for the progress bar, then click again.")
            return 0
        why = _not_annotations_of(layer, getattr(self, "_superpixel_image", None), self._viewer.layers)
        if why:
            notify_warning(f"The superpixels were computed for another image: {why}. Nothing was filled; pick the "
                           "image these annotations are for under Image and tick 'Click fills superpixel' again.")
            return 0
        r, c = int(round(row)), int(round(col))
        sp = self._superpixels
        if not (0 <= r < sp.shape[0] and 0 <= c < sp.shape[1]):
            return 0
        value = layer.selected_label if label is None else int(label)
        idx = np.nonzero(sp == sp[r, c])
        layer.data_setitem(idx, value)
        return int(idx[0].size)

    def _on_click(self, layer, event):
        start = tuple(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if moved and np.hypot(*(np.subtract(event.position, start)[-2:])) > 3 * float(layer.scale[-1]):
            return
        row, col = layer.world_to_data(event.position)[-2:]
        self.fill_superpixel_at(row, col)

    # ------------------------------------------------------------ active learning
    def next_uncertain_region(self, *_: Any):
        """Centre and zoom the view on the most uncertain window not yet annotated."""
        unc = self._uncertainty.value
        if unc is None:
            notify_warning("No uncertainty layer: run the Segment widget first (it adds one).")
            return None
        ann = self._annotations.value
        annotated = np.asarray(ann.data) if ann is not None and ann.data.shape == unc.data.shape else None
        r0, c0, r1, c1 = uncertain_window(np.asarray(unc.data), annotated, window=self._window.value)
        scale = np.asarray(unc.scale[-2:], dtype=float)
        centre = tuple(np.asarray(unc.data_to_world(((r0 + r1) / 2, (c0 + c1) / 2)), float)[-2:])  # with its offset
        camera = viewer_camera(self._viewer)
        camera.center = centre
        canvas = getattr(self._viewer.window, "_qt_viewer", None)
        size = min(canvas.canvas.size) if canvas is not None else 600
        camera.zoom = size / ((r1 - r0) * scale[0]) * 0.9
        mean_u = float(np.asarray(unc.data[r0:r1, c0:c1], dtype=float).mean())
        self._status.value = f"Rows {r0}-{r1}, cols {c0}-{c1}: mean uncertainty {mean_u:.2f}"
        return (r0, c0, r1, c1)

    # ------------------------------------------------------------ save
    def save_pair(self, *_: Any):
        """Save the chosen image and its annotations to the training folder."""
        image, layer = self._image.value, self._annotations.value
        if image is None or layer is None:
            notify_warning("Pick an image and an annotation layer (press 'New annotation layer').")
            return None
        why = not_one_image(image)
        if why:
            notify_error(why + "; nothing was saved")
            return None
        ann = np.asarray(layer.data)
        if not ann.any():
            notify_warning(f"'{layer.name}' is empty: paint a few strokes of every class "
                           "(or click superpixels) before saving.")
            return None
        if tuple(ann.shape[:2]) != tuple(np.shape(image.data)[:2]):
            notify_error(f"'{layer.name}' ({ann.shape[0]} x {ann.shape[1]} px) does not match '{image.name}' "
                         f"({np.shape(image.data)[0]} x {np.shape(image.data)[1]} px): annotations must cover their "
                         "image pixel for pixel; pick the annotation layer made for this image")
            return None
        why = _not_annotations_of(layer, image, self._viewer.layers)
        if why:  # fields of one size: the pair would hold one image's pixels with another's strokes
            notify_error(f"{why}: nothing was saved; pick the image these annotations are for under Image")
            return None
        classes = list(ms_meta(layer).get("classes") or [])
        present = sorted(int(v) for v in np.unique(ann) if v)
        if len(present) < 2:
            notify_warning(f"Only class '{classes[present[0] - 1] if classes else present[0]}' is annotated: "
                           "label at least two classes so the model can tell them apart.")
            return None
        folder = Path(str(self._folder.value)).expanduser()
        name = image.name.replace(" ", "_").replace("/", "_")
        try:
            paths = save_training_pair(folder, name, np.asarray(image.data), ann, classes=classes,
                                       colors=ms_meta(layer).get("colors"), pixel_size_um=layer_pixel_size_um(image))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            from napari_plugin._common import describe_error

            notify_error(describe_error(exc) if not isinstance(exc, OSError) else f"{folder}: cannot write ({exc}); choose another training folder.")
            return None
        n = len(list((folder / "labels").glob("*.tif")))
        self._status.value = f"Saved {name} ({n} pair(s) in folder)"
        notify_info(f"Saved {paths[1].name}: {n} annotated image(s) in {folder}.")
        return paths
