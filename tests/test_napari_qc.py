"""GUI test of the QC widget: verdict, reasons, offending-defect outlines, Grad-CAM layer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from _napari_helpers import wait_idle  # noqa: E402
from test_quality import grain_micrograph  # noqa: E402


def _tiny_classifier(folder):
    import torch

    from micro_seg.classifier import build_classifier
    from micro_seg.registry import ModelCard, save_model

    torch.manual_seed(0)
    card = ModelCard(name="tiny-clf", task="classification", arch="mscls-s", in_channels=1, classes=["good", "bad"],
                     tile_size=32, extra={"input_size": 32, "ood": {"threshold": 1e9}})
    return save_model(folder, build_classifier("mscls-s", in_channels=1, num_classes=2), card)


def test_qc_widget_flags_big_pore_and_shows_grad_cam(make_napari_viewer, qtbot, tmp_path):
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    img = grain_micrograph(0, shape=(128, 128), n_grains=20)
    pores = np.zeros(img.shape, np.int32)
    pores[10:14, 10:14] = 1            # 4 px: fine
    pores[60:100, 40:46] = 2           # Feret ~40 px = 20 um at 0.5 um/px: too long
    spec = tmp_path / "spec.yaml"
    spec.write_text("image:\n  blur: {max: 0.45}\nmeasurements:\n  defects:\n    max_feret_um: 10\n"
                    "classifier:\n  forbidden_classes: [bad]\n")
    viewer = make_napari_viewer()
    layer = viewer.add_image(img, name="field", scale=(0.5, 0.5),
                             metadata={"micro_seg": {"pixel_size_um": 0.5}})
    viewer.add_labels(pores, name="pores", scale=(0.5, 0.5))
    w = QCWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image.value = layer
    w._labels.value = viewer.layers["pores"]
    w._kind.value = MEASURE_KINDS[2]
    w._spec.value = spec
    w._model.value = str(_tiny_classifier(tmp_path / "clf"))
    w.run()
    wait_idle(qtbot, w)
    result = w.last["result"]
    checks = [r.check for r in result.reasons]
    assert "defects.max_feret_um" in checks and result.verdict == "fail"
    assert w._verdict.value == "FAIL" and "max_feret_um" in w._reasons.value
    assert list(w.last["offending"]) == [2]
    shapes = viewer.layers["QC offending defects"]
    assert len(shapes.data) == 1
    poly = shapes.data[0]
    assert poly[:, 0].min() >= 59 and poly[:, 0].max() <= 100 and poly[:, 1].min() >= 39 and poly[:, 1].max() <= 46
    cam = viewer.layers["Grad-CAM"]
    assert cam.data.shape == img.shape and tuple(cam.scale) == (0.5, 0.5)
    for added in (shapes, cam):  # scaled, and in the units, of the image (napari warned of inconsistent units)
        assert tuple(added.units) == tuple(layer.units) and tuple(added.scale) == tuple(layer.scale), added.units


def test_qc_widget_refuses_labels_that_do_not_cover_the_image(make_napari_viewer, qtbot, tmp_path, notes):
    """Labels of another (smaller) image used to be judged against this one in silence (verdict REVIEW)."""
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    area_fraction: 0.01\n")
    viewer = make_napari_viewer()
    layer = viewer.add_image(grain_micrograph(0, shape=(64, 64), n_grains=10), name="field")
    viewer.add_labels(np.zeros((32, 100), np.int32), name="other pores")
    w = QCWidget(viewer)
    w._image.value, w._labels.value, w._kind.value, w._spec.value = layer, viewer.layers["other pores"], \
        MEASURE_KINDS[2], spec
    w.run()
    assert not w._runner.running and getattr(w, "last", None) is None
    assert any("'other pores' (32 x 100 px) does not cover 'field' (64 x 64 px" in m for _, m in notes), notes
    # taller labels of the same width (another image) used to be cropped to fit and judged: PASS in silence
    taller = np.zeros((200, 64), np.int32)
    taller[100:190] = 1
    w._labels.value = viewer.add_labels(taller, name="taller")
    w.run()
    assert not w._runner.running and getattr(w, "last", None) is None
    assert any("'taller' (200 x 64 px) does not cover 'field' (64 x 64 px" in m for _, m in notes), notes
    # negative label values: refused naming the layer (they were counted as matrix)
    negative = np.zeros((64, 64), np.int32)
    negative[:40, :4] = -3
    w._labels.value = viewer.add_labels(negative, name="neg")
    w.run()
    assert not w._runner.running and getattr(w, "last", None) is None
    assert any("'neg': negative value -3" in m for _, m in notes), notes
    w._image.value = viewer.add_image(np.zeros((2, 3, 32, 32), np.uint8), name="stack4d")
    w._labels.value = None
    w.run()
    assert not w._runner.running and any("'stack4d' has shape (2, 3, 32, 32)" in m for _, m in notes), notes


def test_qc_widget_warns_when_physical_limits_meet_an_uncalibrated_image(make_napari_viewer, qtbot, tmp_path, notes):
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    max_feret_um: 10\n    area_fraction: 0.01\n")
    viewer = make_napari_viewer()
    w = QCWidget(viewer)
    w._image.value = viewer.add_image(grain_micrograph(0, shape=(64, 64), n_grains=10), name="plain")
    w._labels.value = viewer.add_labels(np.zeros((64, 64), np.int32), name="pores")
    w._kind.value, w._spec.value = MEASURE_KINDS[2], spec
    w.run()
    wait_idle(qtbot, w)
    assert any("'plain' has no pixel size" in m and "defects.max_feret_um" in m and "area_fraction" not in m
               for _, m in notes), notes


def _run_qc_job(params):
    import threading

    from napari_plugin._qc_widget import qc_job

    gen = qc_job(params, threading.Event())
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


@pytest.mark.parametrize("layout, verdict, n_offending", [
    ("class map", "pass", 0),        # value 2 = two short cracks far apart: each is under the limit
    ("touching instances", "fail", 1),  # 1 and 2 touch: measured as one 16 px object, over the limit
])
def test_qc_defects_verdict_and_offending_objects_agree(tmp_path, layout, verdict, n_offending):
    """The objects blamed one by one are the objects measured (connected pieces of the non-zero pixels), so the
    verdict and the offending-defect outlines never contradict each other, whatever the label values mean."""
    from napari_plugin._qc_widget import MEASURE_KINDS, QCParams

    labels = np.zeros((128, 128), np.int32)
    if layout == "class map":
        labels[5:9, 5:9] = 1
        labels[20, 10:18] = 2
        labels[100, 100:108] = 2
    else:
        labels[30:34, 30:38] = 1
        labels[30:34, 38:46] = 2
    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    max_feret_um: 10\n")
    out = _run_qc_job(QCParams(image=np.full(labels.shape, 0.5, np.float32), spec_path=str(spec), pixel_size_um=1.0,
                               labels=labels, measure_kind=MEASURE_KINDS[2]))
    assert out["result"].verdict == verdict
    assert len(out["offending"]) == n_offending == len(out["outlines"])


def test_qc_widget_cancel_stops_a_slow_classifier_and_shows_no_verdict(make_napari_viewer, qtbot, tmp_path, notes,
                                                                       monkeypatch):
    """QC has a Cancel button (its "already running" message says to press it); pressed while the classifier
    runs, the job stops before Grad-CAM and no verdict is shown."""
    import threading

    import micro_seg.classifier as clf
    from napari_plugin._qc_widget import QCWidget

    started, release = threading.Event(), threading.Event()
    real_classify, cams = clf.classify, []

    def slow_classify(image, model):
        started.set()
        release.wait(30)
        return real_classify(image, model)

    monkeypatch.setattr(clf, "classify", slow_classify)
    monkeypatch.setattr(clf, "grad_cam", lambda *a, **k: cams.append(1))
    spec = tmp_path / "spec.yaml"
    spec.write_text("classifier:\n  forbidden_classes: [bad]\n")
    viewer = make_napari_viewer()
    w = QCWidget(viewer)
    w._image.value = viewer.add_image(grain_micrograph(0, shape=(64, 64), n_grains=10), name="field")
    w._spec.value = spec
    w._model.value = str(_tiny_classifier(tmp_path / "clf"))
    assert not w._cancel_btn.enabled
    w.run()
    qtbot.waitUntil(started.is_set, timeout=60_000)
    assert w._cancel_btn.enabled
    w.run()  # a second Evaluate while the first runs
    assert any("already running" in m and "press Cancel" in m for s, m in notes if s == "warning")
    w._cancel_btn.changed.emit(True)
    release.set()
    wait_idle(qtbot, w)
    assert w._status.value == "Cancelled" and w.last is None and w._verdict.value == "-" and cams == []


def test_qc_widget_says_when_the_spec_judges_another_kind_of_measurement(make_napari_viewer, qtbot, tmp_path, notes):
    """A defects spec with the labels measured as grains gave 'review' for a measurement never made."""
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    area_fraction: 0.5\n")
    viewer = make_napari_viewer()
    layer = viewer.add_image(grain_micrograph(0, shape=(64, 64), n_grains=10), name="field")
    pores = np.zeros((64, 64), np.int32)
    pores[10:14, 10:14] = 1
    w = QCWidget(viewer)
    w._image.value, w._labels.value, w._spec.value = layer, viewer.add_labels(pores, name="pores"), spec
    w._kind.value = MEASURE_KINDS[0]
    w.run()
    wait_idle(qtbot, w)
    assert getattr(w, "last", None) is None
    assert any("rules for measurements.defects, but the labels are measured as grains" in m for _, m in notes), notes
    w._kind.value = MEASURE_KINDS[2]
    w.run()
    wait_idle(qtbot, w)
    assert w._verdict.value.lower().startswith("pass"), w._verdict.value


def test_qc_widget_takes_kind_and_class_names_from_a_segment_result(make_napari_viewer, qtbot, tmp_path, notes):
    """A classes layer from Segment (classes matrix, pore, crack) judged against phase_fractions.pore gave
    'review: not measured': the fraction was measured under the name '1'."""
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  phases:\n    phase_fractions:\n      pore: [0.05, 0.5]\n")
    viewer = make_napari_viewer()
    image = viewer.add_image(grain_micrograph(0, shape=(64, 64), n_grains=10), name="field")
    classes = np.zeros((64, 64), np.int32)
    classes[:, :16] = 1
    w = QCWidget(viewer)
    w._kind.value = MEASURE_KINDS[0]
    w._image.value, w._spec.value = image, spec
    w._labels.value = viewer.add_labels(classes, name="field classes",
                                        metadata={"micro_seg": {"kind": "classes", "classes": ["matrix", "pore", "crack"]}})
    assert w._kind.value == MEASURE_KINDS[1] and w._names.value == "matrix, pore, crack"
    w.run()
    wait_idle(qtbot, w)
    assert w._verdict.value.lower().startswith("pass"), (w._verdict.value, w._reasons.value)


def test_qc_widget_sees_the_files_magnification(make_napari_viewer, qtbot, tmp_path, notes):
    """A Zeiss SEM TIFF recording 25 000x: the CLI passed a magnification window, the widget said 'the file records
    no magnification' (the reader did not keep it)."""
    from data_builders import grain_image, zeiss_tiff
    from micro_seg.io import read_micrograph
    from napari_plugin._qc_widget import QCWidget
    from napari_plugin._reader import get_reader

    path = tmp_path / "zeiss.tif"
    zeiss_tiff(path, grain_image((256, 256)), value=4.0, unit="nm")
    mag = read_micrograph(path).meta.get("magnification")
    assert mag
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"image:\n  magnification: [{mag / 2}, {mag * 2}]\n")
    viewer = make_napari_viewer()
    data, kwargs, _ = get_reader(str(path))(str(path))[0]
    layer = viewer.add_image(data, **kwargs)
    w = QCWidget(viewer)
    w._image.value, w._spec.value = layer, spec
    w.run()
    wait_idle(qtbot, w)
    assert w._verdict.value.lower().startswith("pass"), (w._verdict.value, w._reasons.value)


def test_qc_failed_run_does_not_keep_the_previous_verdict(make_napari_viewer, qtbot, tmp_path, notes):
    from napari_plugin._qc_widget import QCWidget

    img = grain_micrograph(0, shape=(128, 128), n_grains=20)
    spec = tmp_path / "spec.yaml"
    spec.write_text("image:\n  blur: {max: 0.99}\n")
    viewer = make_napari_viewer()
    layer = viewer.add_image(img, name="field", metadata={"micro_seg": {"pixel_size_um": 0.5}})
    w = QCWidget(viewer)
    w._image.value, w._spec.value = layer, spec
    w.run()
    wait_idle(qtbot, w)
    assert w.last is not None and w._verdict.value in ("PASS", "REVIEW", "FAIL")
    spec.write_text("image: [this is: not a spec\n")  # broken: the run fails
    w.run()
    wait_idle(qtbot, w)
    assert any(s == "error" and "'field'" in m for s, m in notes)
    assert w.last is None and w._verdict.value == "-" and w._reasons.value == ""


def test_qc_widget_measures_the_grains_of_a_boundaries_layer_between_its_lines(make_napari_viewer, qtbot, tmp_path,
                                                                               notes):
    """A "boundaries" layer (the NIST truth: non-zero = grain boundary) was measured as labels: one grain."""
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  grains:\n    n_grains: [20, 30]\n")
    mask = np.zeros((100, 100), np.uint8)
    mask[:, ::20] = mask[::20, :] = 1  # 5 x 5 grains
    viewer = make_napari_viewer()
    image = viewer.add_image(np.full((100, 100), 0.5, np.float32), name="field")
    w = QCWidget(viewer)
    w._kind.value = MEASURE_KINDS[2]
    w._image.value, w._spec.value = image, spec
    w._labels.value = viewer.add_labels(mask, name="field truth", metadata={"micro_seg": {"kind": "boundaries"}})
    assert w._kind.value == MEASURE_KINDS[0]
    w.run()
    wait_idle(qtbot, w)
    assert w._verdict.value.lower().startswith("pass"), (w._verdict.value, w._reasons.value)


@pytest.mark.parametrize("spec_text, kind, names, message", [
    ("measurements:\n  phases:\n    phase_fractions:\n      gamma_prime: [0.05, 0.5]\n", 1, ("matrix", "pore"),
     "measurements.phases.phase_fractions.gamma_prime: the labels have no class 'gamma_prime'; their classes "
     "('Class names', in label order) are: matrix, pore"),
    ("measurements:\n  phases:\n    phase_fraction_ci95_pore: {max: 0.1}\n", 1, (),
     "measurements.phases.phase_fraction_ci95_pore: the labels' classes have no names, so the fractions are named "
     "by class value (0, 1, ...), not 'pore': type the class names"),
    ("measurements:\n  defects:\n    by_class:\n      pore: {area_fraction: 0.1}\n", 2, (),
     "measurements.defects.by_class.pore: the widget measures every non-zero pixel of the labels as one kind of "
     "defect"),
])
def test_qc_job_refuses_a_phase_or_defect_class_the_labels_cannot_give(tmp_path, spec_text, kind, names, message):
    # each came out "review: ... was not measured" on every image, where micro-seg qc --model refuses the spec
    from micro_seg.errors import SpecError
    from napari_plugin._qc_widget import MEASURE_KINDS, QCParams

    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    classes = np.zeros((64, 64), np.int32)
    classes[:, :16] = 1
    params = QCParams(image=np.full(classes.shape, 0.5, np.float32), spec_path=str(spec), pixel_size_um=1.0,
                      labels=classes, measure_kind=MEASURE_KINDS[kind], class_names=names)
    with pytest.raises(SpecError) as info:
        _run_qc_job(params)
    assert str(info.value).startswith(f"{spec}: {message}")
    # the phases the labels have are judged as before: by name, or by class value without names
    for text, names in (("pore: [0.2, 0.3]", ("matrix", "pore")), ("'1': [0.2, 0.3]", ())):
        spec.write_text(f"measurements:\n  phases:\n    phase_fractions:\n      {text}\n")
        out = _run_qc_job(QCParams(image=params.image, spec_path=str(spec), pixel_size_um=1.0, labels=classes,
                                   measure_kind=MEASURE_KINDS[1], class_names=names))
        assert out["result"].verdict == "pass", out["result"].reasons


@pytest.mark.parametrize("scale, units, typed", [((1.0, 1.0), None, 0.5), ((250.0, 250.0), ("nm", "nm"), 0.0)])
def test_qc_outlines_lie_over_the_defect_they_outline(make_napari_viewer, qtbot, tmp_path, scale, units, typed):
    """The outlines were scaled by the pixel size: with 0.5 um/px typed in the widget for an unscaled image they lay
    at half the defect's place and size (rows 30-50 for a defect on rows 60-100), with a napari warning of
    inconsistent units. They are now in the image's own scale, units (also nm) and offset."""
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    img = grain_micrograph(0, shape=(128, 128), n_grains=20)
    pores = np.zeros(img.shape, np.int32)
    pores[60:100, 40:46] = 1  # 40 px long: 20 um at 0.5 um/px, 10 um at 0.25: too long for 5 um
    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    max_feret_um: 5\n")
    viewer = make_napari_viewer()
    extra = {"units": units} if units else {}
    image = viewer.add_image(img, name="field", scale=scale, translate=(7.0, 3.0), **extra)
    labels = viewer.add_labels(pores, name="pores", scale=scale, translate=(7.0, 3.0), **extra)
    w = QCWidget(viewer)
    w._image.value, w._labels.value, w._kind.value = image, labels, MEASURE_KINDS[2]
    w._spec.value = spec
    w._pixel.value = typed
    w.run()
    wait_idle(qtbot, w)
    assert w.last["result"].verdict == "fail" and list(w.last["offending"]) == [1]
    shapes = viewer.layers["QC offending defects"]
    assert tuple(shapes.units) == tuple(image.units)
    lo, hi = shapes.extent.world  # world coordinates, as drawn
    rows = (7.0 + 59.5 * scale[0], 7.0 + 99.5 * scale[0])
    cols = (3.0 + 39.5 * scale[1], 3.0 + 45.5 * scale[1])
    assert lo[0] >= rows[0] - scale[0] and hi[0] <= rows[1] + scale[0]
    assert lo[1] >= cols[0] - scale[1] and hi[1] <= cols[1] + scale[1]
    assert hi[0] - lo[0] >= 39 * scale[0]  # the defect's length, not half of it


def test_qc_widget_refuses_the_labels_of_another_image_of_the_same_size(make_napari_viewer, qtbot, tmp_path, notes):
    """'field2' judged with the Segment result of 'field1' (same size): the verdict named field2 but judged field1's
    pores. Refused, naming the image the labels were made from."""
    from napari_plugin._qc_widget import MEASURE_KINDS, QCWidget

    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    max_feret_um: 5\n")
    viewer = make_napari_viewer()
    img = grain_micrograph(0, shape=(96, 96), n_grains=12)
    cal = {"scale": (0.5, 0.5), "units": ("um", "um")}
    field1, field2 = viewer.add_image(img, name="field1", **cal), viewer.add_image(img[::-1].copy(), name="field2",
                                                                                   **cal)
    pores = np.zeros(img.shape, np.uint8)
    pores[10:40, 10:14] = 1
    labels = viewer.add_labels(pores, name="field1 classes", **cal,
                               metadata={"micro_seg": {"kind": "classes", "image": "field1"}})
    w = QCWidget(viewer)
    w._labels.value, w._kind.value, w._spec.value = labels, MEASURE_KINDS[2], spec
    w._image.value = field2
    w.run()
    assert w._runner.worker is None and w.last is None
    assert any("'field1 classes' was made from 'field1', not 'field2'" in m for s, m in notes if s == "error")
    w._image.value = field1
    w.run()
    wait_idle(qtbot, w)
    assert w.last is not None and w.last["result"].verdict == "fail"
