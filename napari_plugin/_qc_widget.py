"""QC widget: pass / review / fail of the current image against a QC spec.

Pick an image layer, a QC spec file (YAML/TOML, see :mod:`micro_seg.qc`) and
optionally a Labels layer with the segmentation result (what to measure) and a
classification model.  *Evaluate* runs the engine in a worker
(:func:`qc_job`): image-quality checks, measurements of the Labels layer,
classification, :func:`micro_seg.qc.evaluate`.  The widget then shows the
verdict and every reason (check, value, limit), outlines the defects that
break a per-object size limit in a Shapes layer, and adds the classifier's
Grad-CAM heat map as an image layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton

from napari_plugin._common import (
    JobRunner,
    analysis_array,
    box_pixel_size,
    layer_pixel_size_um,
    made_from,
    multiscale_problem,
    notify_error,
    notify_warning,
    pixel_size_box,
    units_kwargs,
)
from napari_plugin._layers import connect_layer_events, layer_chooser, ms_meta

__all__ = ["QCWidget", "QCParams", "qc_job"]

MEASURE_KINDS = ("Grains", "Phases", "Defects (non-zero = defect)")
VERDICT_STYLE = {"pass": "color: #2ca02c; font-weight: bold", "review": "color: #ff9f1c; font-weight: bold",
                 "fail": "color: #d62728; font-weight: bold"}


@dataclass(frozen=True)
class QCParams:
    """Frozen inputs of :func:`qc_job` (never widgets)."""

    image: np.ndarray
    spec_path: str
    pixel_size_um: float | None
    labels: np.ndarray | None = None
    measure_kind: str = MEASURE_KINDS[2]
    class_names: tuple[str, ...] = ()
    classifier: str | None = None
    magnification: float | None = None  # the file's, as the reader recorded it
    boundaries: bool = False  # grains of a boundary mask (non-zero = boundary: a "boundaries" layer, NIST truth)


def _measure(params: QCParams) -> tuple[dict[str, Any], np.ndarray | None]:
    """Measure the Labels layer; returns ``(nested measurements, defect mask or None)``."""
    from micro_seg import measure

    def summary(result: Any) -> dict:
        if isinstance(result, tuple) and len(result) == 2:
            result = result[0]
        if hasattr(result, "summary"):
            result = result.summary
        return dict(result)

    labels = params.labels
    if params.measure_kind == MEASURE_KINDS[0] and params.boundaries:
        res = measure.measure_grains_from_boundaries(labels, pixel_size_um=params.pixel_size_um)
        return {"grains": summary(res)}, None
    if params.measure_kind == MEASURE_KINDS[0]:
        return {"grains": summary(measure.measure_grains(labels, pixel_size_um=params.pixel_size_um))}, None
    if params.measure_kind == MEASURE_KINDS[1]:
        kwargs = {"names": list(params.class_names)} if params.class_names else {}
        return {"phases": summary(measure.measure_phases(labels, pixel_size_um=params.pixel_size_um, **kwargs))}, None
    # the objects judged one by one (offending defects, outlines) are the measurement's own: the connected
    # pieces of the non-zero pixels, whatever the label values (a class map with a value per defect kind, or
    # instances that touch, would otherwise be judged as other objects than the ones measured)
    res = measure.measure_defects(labels > 0, pixel_size_um=params.pixel_size_um)
    return {"defects": summary(res)}, res.labels


def qc_job(params: QCParams, cancel) -> dict[str, Any]:
    """Worker function (generator): evaluate one image; returns the result dict."""
    from micro_seg.errors import CancelledError, SpecError
    from micro_seg.qc import evaluate, load_spec, measured_groups, offending_defects

    yield {"fraction": 0.05, "message": "reading spec"}
    spec = load_spec(params.spec_path)
    kind = {MEASURE_KINDS[0]: "grains", MEASURE_KINDS[1]: "phases", MEASURE_KINDS[2]: "defects"}[params.measure_kind]
    other = [g for g in measured_groups(spec) if params.labels is not None and g != kind]
    if other:  # the verdict would be "review" for a measurement this run never makes
        raise SpecError(f"{params.spec_path}: the spec has rules for {' and '.join(f'measurements.{g}' for g in other)}, "
                        f"but the labels are measured as {kind}: pick what they are under 'Labels are' (one kind per run)")
    if params.labels is not None:
        _check_names(spec, params, kind)
    measurements, defects = (None, None)
    if params.labels is not None:
        yield {"fraction": 0.2, "message": "measuring"}
        measurements, defects = _measure(params)
    if cancel.is_set():
        raise CancelledError("QC cancelled")
    classification = cam = None
    clf_name = params.classifier or spec.classifier_model
    if clf_name:
        from micro_seg.classifier import classify, grad_cam, load_classifier

        yield {"fraction": 0.5, "message": "classifying"}
        model = load_classifier(clf_name)
        classification = classify(params.image, model)
        if cancel.is_set():
            raise CancelledError("QC cancelled")
        yield {"fraction": 0.65, "message": "explaining (Grad-CAM)"}
        cam = grad_cam(params.image, model, target_class=classification.get("class"))  # the class shown
        if cancel.is_set():
            raise CancelledError("QC cancelled")
    yield {"fraction": 0.8, "message": "judging"}
    result = evaluate(params.image, spec, pixel_size_um=params.pixel_size_um, measurements=measurements,
                      classification=classification, magnification=params.magnification)
    offending = offending_defects(defects, spec, pixel_size_um=params.pixel_size_um) if defects is not None else {}
    outlines = _outlines(defects, offending) if offending else []
    if cancel.is_set():  # pressed while judging: no verdict is shown
        raise CancelledError("QC cancelled")
    return {"result": result, "classification": classification, "grad_cam": cam, "offending": offending,
            "outlines": outlines, "spec_name": spec.name}


def _check_names(spec: Any, params: QCParams, kind: str) -> None:
    """Refuse, before measuring, a rule on a phase the labels have no class for, or on one defect class (the widget
    measures the non-zero pixels as one kind of defect): each would come out "review: not measured" on every image
    (``micro-seg qc --model`` refuses them for a model without the class)."""
    from micro_seg.errors import SpecError
    from micro_seg.qc import first_unknown_phase

    names = list(params.class_names)
    unknown = first_unknown_phase(spec, names or None) if kind == "phases" else None
    if unknown and names:
        raise SpecError(f"{params.spec_path}: {unknown[0]}: the labels have no class {unknown[1]!r}; their classes "
                        f"('Class names', in label order) are: {', '.join(names)}")
    if unknown:  # without names the fractions are named by class value
        raise SpecError(f"{params.spec_path}: {unknown[0]}: the labels' classes have no names, so the fractions are "
                        f"named by class value (0, 1, ...), not {unknown[1]!r}: type the class names in label order "
                        "under 'Class names'")
    per_class = [g for g, rules in spec.measurements.items() if rules and g.startswith("defects.by_class.")]
    if kind == "defects" and per_class:
        raise SpecError(f"{params.spec_path}: measurements.{per_class[0]}: the widget measures every non-zero pixel of "
                        "the labels as one kind of defect, so one defect class cannot be judged alone; judge it with "
                        "micro-seg qc --model, or on a batch's images.csv")


def _outlines(labels: np.ndarray, offending: dict[int, str]) -> list[np.ndarray]:
    """One closed polygon (rows, cols) per offending object."""
    from skimage.measure import find_contours, label as cc_label, regionprops

    arr = np.asarray(labels)
    inst = cc_label(arr > 0, connectivity=2) if arr.dtype == bool or arr.max() <= 1 else arr
    polys = []
    for region in regionprops(inst):
        if int(region.label) not in offending:
            continue
        r0, c0, _, _ = region.bbox
        padded = np.pad(region.image.astype(float), 1)
        contours = find_contours(padded, 0.5)
        if contours:
            polys.append(max(contours, key=len) + np.array([r0 - 1, c0 - 1]))
    return polys


def _physical_limits(spec_path: str) -> list[str]:
    """Measurement limits of the spec that need a pixel size (keys in µm, µm² or per mm²)."""
    from micro_seg.errors import MicroSegError
    from micro_seg.qc import load_spec

    try:
        spec = load_spec(spec_path)
    except MicroSegError:  # reported by the job itself
        return []
    return [f"{group}.{key}" for group, rules in spec.measurements.items() for key in rules
            if key.endswith(("_um", "_um2", "_per_mm2")) or key.startswith("G_") or key == "ala_G"]


class QCWidget(Container):
    """Dock widget: verdict and reasons for the current image (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._image = ComboBox(label="Image", choices=layer_chooser(napari_viewer, "Image",
                                                                    lambda l: not l.name.startswith("Grad-CAM")))
        self._labels = ComboBox(label="Measure labels", nullable=True, value=None,
                                choices=layer_chooser(napari_viewer, "Labels"))
        self._kind = ComboBox(label="Labels are", choices=list(MEASURE_KINDS), value=MEASURE_KINDS[2])
        self._names = LineEdit(label="Class names", value="", tooltip="Phase names in label order, comma-separated")
        self._spec = FileEdit(label="QC spec", mode="r", filter="*.yaml *.yml *.toml")
        self._model = LineEdit(label="Classifier", value="", tooltip="Classification model name or folder (optional)")
        self._pixel = pixel_size_box("0 = from the layer's calibration (or uncalibrated)")
        self._run_btn = PushButton(text="Evaluate")
        self._cancel_btn = PushButton(text="Cancel")
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=100)
        self._status = Label(label="Status", value="Pick an image and a QC spec, then Evaluate")
        self._verdict = Label(label="Verdict", value="-")
        self._reasons = Label(label="Reasons", value="")
        self._runner = JobRunner(progress_bar=self._progress, cancel_button=self._cancel_btn, status_label=self._status,
                                 run_button=self._run_btn)
        self.extend([self._image, self._labels, self._kind, self._names, self._spec, self._model, self._pixel,
                     self._run_btn, self._cancel_btn, self._progress, self._status, self._verdict, self._reasons])
        self._run_btn.changed.connect(self.run)
        self._labels.changed.connect(self._labels_changed)
        connect_layer_events(napari_viewer, self)
        self.last: dict[str, Any] | None = None

    def _labels_changed(self, layer) -> None:
        """Take what a Segment result says of itself: grain instances, or classes with their names (a spec's
        phase_fractions.pore needs the name 'pore', not '1')."""
        ms = ms_meta(layer) if layer is not None else {}
        if ms.get("kind") in ("grains", "boundaries"):
            self._kind.value = MEASURE_KINDS[0]
        elif ms.get("kind") == "classes":
            if self._kind.value == MEASURE_KINDS[0]:
                self._kind.value = MEASURE_KINDS[1]
        # this layer's class names, or none: the last layer's names would name (and judge) its phases
        self._names.value = ", ".join(str(c) for c in ms.get("classes") or []) if ms.get("kind") == "classes" else ""

    def params(self) -> QCParams:
        """Read the widgets into a frozen parameter object (GUI thread only)."""
        image_layer = self._image.value
        if image_layer is None:
            raise ValueError("no image layer selected")
        spec = str(self._spec.value or "")
        if not spec or not Path(spec).is_file():
            raise ValueError(f"{spec or '(none)'}: QC spec file not found")
        for layer in (image_layer, self._labels.value):
            if layer is not None and multiscale_problem(layer):
                raise ValueError(multiscale_problem(layer))
        image = np.asarray(analysis_array(image_layer))
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
            raise ValueError(f"'{image_layer.name}' has shape {image.shape}: QC needs a 2-D grey or RGB image "
                             "(split stacks into single images first)")
        px = box_pixel_size(self._pixel.value, image_layer) or layer_pixel_size_um(image_layer)
        labels_layer = self._labels.value
        labels = None
        if labels_layer is not None:
            shape = analysis_array(image_layer).shape[:2]
            labels = np.asarray(labels_layer.data)
            if labels.shape[:2] == tuple(np.shape(image_layer.data)[:2]):
                labels = labels[: shape[0]]  # a segmentation of the whole image also covers the SEM data bar
            if labels.shape[:2] != shape:  # any other size: labels of another image, never cropped to fit
                raise ValueError(f"'{labels_layer.name}' ({np.shape(labels_layer.data)[0]} x "
                                 f"{np.shape(labels_layer.data)[1]} px) does not cover '{image_layer.name}' "
                                 f"({shape[0]} x {shape[1]} px analysed): pick the labels made from this image")
            made = ms_meta(labels_layer)
            if (made.get("image_id") or made.get("image")) and not made_from(labels_layer, image_layer,
                                                                             self._viewer.layers):
                # fields of one size: the verdict would name this image but judge another one's objects
                raise ValueError(f"'{labels_layer.name}' was made from '{made.get('image')}', not "
                                 f"'{image_layer.name}': pick the labels made from this image (or its image)")
        if labels is not None and labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
            raise ValueError(f"'{labels_layer.name}': negative value {int(labels.min())} in a label image "
                             "(labels are 0 for matrix / background and positive for objects or classes)")
        names = tuple(n.strip() for n in self._names.value.split(",") if n.strip())
        return QCParams(image=image, spec_path=spec, pixel_size_um=px,
                        labels=labels, measure_kind=self._kind.value, class_names=names,
                        classifier=self._model.value.strip() or None,
                        magnification=ms_meta(image_layer).get("magnification"),
                        boundaries=labels_layer is not None and ms_meta(labels_layer).get("kind") == "boundaries")

    def run(self, *_: Any) -> None:
        """Start the evaluation in a worker."""
        self._clear_verdict()  # a failed run must not leave the previous verdict on screen
        try:
            params = self.params()
        except ValueError as exc:
            notify_error(str(exc))
            return
        if params.pixel_size_um is None:
            physical = _physical_limits(params.spec_path)
            if physical:
                notify_warning(f"'{self._image.value.name}' has no pixel size, but the spec sets limits in physical "
                               f"units ({', '.join(physical)}): type the pixel size in 'Pixel size (µm/px)', or they "
                               "are judged in pixels or not at all.")
        # the outlines and the Grad-CAM map are in the image's pixel grid: laid over it with its own scale, offset
        # and units (a pixel size typed here for an unscaled image put them at half its size; and a scale without
        # the image's units sets off napari's "inconsistent units" warning)
        image_layer = self._image.value
        self._overlay = {"scale": tuple(image_layer.scale[-2:]), "translate": tuple(image_layer.translate[-2:]),
                         **units_kwargs(image_layer)}
        self._runner.start(qc_job, params, on_done=self._show, description="QC", subject=f"'{self._image.value.name}'")

    def _clear_verdict(self) -> None:
        self.last = None
        self._verdict.value = "-"
        self._verdict.native.setStyleSheet("")
        self._reasons.value = ""

    def _show(self, out: dict[str, Any]) -> None:
        """GUI thread: verdict, reasons, offending-defect outlines, Grad-CAM layer."""
        self.last = out
        result = out["result"]
        self._verdict.value = result.verdict.upper()
        self._verdict.native.setStyleSheet(VERDICT_STYLE.get(result.verdict, ""))
        lines = [f"[{r.severity}] {r.check}: {r.message}" for r in result.reasons]
        lines += [f"[defect {k}] {v}" for k, v in sorted(out["offending"].items())]
        self._reasons.value = "\n".join(lines) if lines else "all checks passed"
        self._status.value = f"{out['spec_name'] or 'spec'}: {result.verdict}"
        name = "QC offending defects"
        if name in self._viewer.layers:
            self._viewer.layers.remove(name)
        if out["outlines"]:
            self._viewer.add_shapes(out["outlines"], shape_type="polygon", edge_color="red", face_color="transparent",
                                    edge_width=2, name=name, **self._overlay)
        cam = out.get("grad_cam")
        if cam is not None:
            label = out["classification"]["class"]
            cam_name = "Grad-CAM"
            if cam_name in self._viewer.layers:
                self._viewer.layers.remove(cam_name)
            self._viewer.add_image(cam, name=cam_name, colormap="inferno", opacity=0.5, blending="additive",
                                   metadata={"micro_seg": {"grad_cam_class": label}}, **self._overlay)
