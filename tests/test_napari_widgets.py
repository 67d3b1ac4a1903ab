"""GUI tests of the Measure and Annotate widgets, the reader/writer and bad input.

Numbers are checked against truth known by construction (synthetic grain
labels with an exact grain count, Boolean disks with a known covered fraction).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from _napari_helpers import two_phase_image, wait_idle  # noqa: E402
from napari_plugin._common import viewer_camera  # noqa: E402


def _messages(notes, severity=None):
    return [m for s, m in notes if severity is None or s.lower() == severity]


def test_measure_grains_known_count(make_napari_viewer, qtbot, tmp_path):
    from micro_seg.measure import g_from_grains_per_mm2
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import GRAINS, MeasureWidget

    labels = voronoi_labels((300, 400), n_grains=120, seed=3)
    n_true = int(labels.max())
    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels, name="grains", scale=(0.5, 0.5),
                              metadata={"micro_seg": {"kind": "grains", "pixel_size_um": 0.5}})
    w = MeasureWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._labels.value = layer
    assert w._kind.value == GRAINS and w._pixel.value == pytest.approx(0.5)
    w.run()
    wait_idle(qtbot, w)
    s = w.summary
    assert s["n_grains"] == n_true
    # Jeffries count: interior grains + edge grains / 2 (+ corners / 4) over the field area in mm^2
    area_mm2 = 300 * 400 * (0.5e-3) ** 2
    assert s["grains_per_mm2"] == pytest.approx(s["jeffries_count"] / area_mm2, rel=1e-9)
    assert s["G_planimetric"] == pytest.approx(g_from_grains_per_mm2(s["grains_per_mm2"]), abs=1e-9)
    assert s["n_grains_inside"] + s["n_grains_edge"] + s["n_grains_corner"] == n_true
    # per-object table: one row per grain, areas sum to the image, shown on hover as features
    assert len(w.table) == n_true
    assert w.table["area_px"].sum() == labels.size
    assert "area_um2" in layer.features.columns and len(layer.features) == n_true
    assert w.summary_view.model().rowCount() > 5
    # clicking a table row selects that grain and centres the view on it
    row = int(np.argmax(w.table["area_px"].to_numpy()))
    label = w.select_row(row)
    assert layer.selected_label == label and layer.show_selected_label
    rr, cc = np.nonzero(labels == label)
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], (rr.mean() * 0.5, cc.mean() * 0.5), atol=0.5)
    # export: per-grain CSV and summary CSV with units in the names
    import pandas as pd

    w._csv.value = str(tmp_path / "out" / "grains.csv")
    written = w.export_csv()
    table = pd.read_csv(tmp_path / "out" / "grains.csv")
    summary = pd.read_csv(tmp_path / "out" / "grains_summary.csv")
    assert len(table) == n_true and "ecd_um" in table.columns and len(written) == 2
    assert float(summary.set_index("key").loc["G_planimetric", "value"]) == pytest.approx(s["G_planimetric"])


def test_measure_defects_and_phases(make_napari_viewer, qtbot):
    from napari_plugin._measure import DEFECTS, PHASES, MeasureWidget

    _, mask = two_phase_image((256, 256), seed=4)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(mask.astype(np.uint8), name="mask", scale=(0.2, 0.2),
                              metadata={"micro_seg": {"kind": "classes", "classes": ["matrix", "pore"],
                                                      "pixel_size_um": 0.2}})
    w = MeasureWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._labels.value = layer
    assert w._kind.value == PHASES and w._names.value == "matrix, pore"
    w.run()
    wait_idle(qtbot, w)
    assert w.summary["phase_fractions"]["pore"] == pytest.approx(mask.mean(), abs=1e-9)
    w._kind.value = DEFECTS
    w._defect.value = 1
    w.run()
    wait_idle(qtbot, w)
    from skimage.measure import label as cc_label

    assert w.summary["count"] == int(cc_label(mask).max())
    assert w.summary["area_fraction"] == pytest.approx(mask.mean(), abs=1e-9)


def test_annotate_superpixel_fill_and_save(make_napari_viewer, qtbot, tmp_path, notes):
    from micro_seg.io import read_labels
    from napari_plugin._annotate import AnnotateWidget, read_class_schema

    image, truth = two_phase_image((128, 128), seed=2)
    viewer = make_napari_viewer()
    img = viewer.add_image(image, name="img", scale=(0.3, 0.3),
                           metadata={"micro_seg": {"pixel_size_um": 0.3}})
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image.value = img
    w._classes.value = "matrix, particle"
    # empty annotations -> a warning that says what to do, nothing written
    layer = w.new_annotation_layer()
    w._folder.value = str(tmp_path / "train")
    assert w.save_pair() is None
    assert any("empty" in m and "paint" in m for m in _messages(notes, "warning"))
    assert not (tmp_path / "train").exists()
    # click-to-fill a superpixel: every pixel of that superpixel gets the label, nothing else
    w._sp_size.value = 12
    w._sp_mode.value = True
    wait_idle(qtbot, w)
    assert w._superpixels is not None and w._superpixels.shape == image.shape
    rr, cc = np.nonzero(truth)
    r, c = int(rr[len(rr) // 2]), int(cc[len(cc) // 2])
    layer.selected_label = 2
    n = w.fill_superpixel_at(r, c)
    sp = w._superpixels == w._superpixels[r, c]
    assert n == int(sp.sum()) and (layer.data[sp] == 2).all() and (layer.data[~sp] == 0).all()
    # superpixels follow the image: the filled one lies (almost) inside the bright particle
    assert truth[sp].mean() > 0.9
    layer.data_setitem(np.nonzero(~truth & (np.arange(128)[:, None] % 8 == 0)), 1)
    paths = w.save_pair()
    assert paths is not None
    labels, px = read_labels(paths[1])
    np.testing.assert_array_equal(labels, layer.data)
    assert px == pytest.approx(0.3)
    assert read_class_schema(tmp_path / "train")["classes"] == ["matrix", "particle"]


def test_reader_writer_roundtrip_and_bad_files(tmp_path, make_napari_viewer):
    import tifffile

    from micro_seg.io import read_labels
    from napari_plugin._reader import get_reader
    from napari_plugin._writer import write_labels_layer

    path = tmp_path / "cal.tif"
    tifffile.imwrite(path, np.arange(64 * 48, dtype=np.uint16).reshape(64, 48),
                     resolution=(1e4 / 0.125, 1e4 / 0.125), resolutionunit="CENTIMETER")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    data, kwargs, kind = get_reader(str(path))(str(path))[0]
    assert kind == "image" and kwargs["scale"] == pytest.approx((0.125, 0.125))
    assert kwargs["metadata"]["micro_seg"]["calibration_source"] == "tiff-resolution"
    viewer = make_napari_viewer()
    layer = viewer.add_labels((data > 1000).astype(np.uint8), scale=kwargs["scale"], metadata=kwargs["metadata"])
    out = write_labels_layer(str(tmp_path / "labels.tif"), layer.data, layer._get_state())
    labels, px = read_labels(out[0])
    assert px == pytest.approx(0.125) and labels.sum() == (data > 1000).sum()


def test_writer_failures_are_one_clear_error_and_write_nothing(tmp_path):
    """An unwritable place or negative labels: one error naming the layer, the file and the reason (napari's save
    dialog shows it as its notification), and no file."""
    from napari_plugin._writer import LabelsSaveError, write_labels_layer

    meta = {"name": "grains", "metadata": {}}
    with pytest.raises(LabelsSaveError, match=r"Cannot save layer 'grains': /proc/x\.tif: cannot write"):
        write_labels_layer("/proc/x.tif", np.ones((4, 4), np.uint8), meta)
    out = tmp_path / "neg.tif"
    labels = np.zeros((4, 4), np.int32)
    labels[0, 0] = -1
    with pytest.raises(LabelsSaveError, match=r"'grains': .*neg\.tif: label values must be >= 0"):
        write_labels_layer(str(out), labels, meta)
    assert not list(tmp_path.iterdir())


def test_writer_class_names_as_one_string_is_the_save_error(tmp_path):
    """Class names held as one string in the layer's metadata (set from the console) were a bare ValueError out of
    the writer (napari's raw error), not the save message; before that, their letters were recorded as the names."""
    from napari_plugin._writer import LabelsSaveError, write_labels_layer

    meta = {"name": "phases", "metadata": {"micro_seg": {"kind": "classes", "classes": "matrix,pore"}}}
    with pytest.raises(LabelsSaveError, match="Cannot save layer 'phases'.*a string, not a sequence of class names"):
        write_labels_layer(str(tmp_path / "n.tif"), np.array([[0, 1], [1, 0]], np.uint8), meta)
    assert not list(tmp_path.iterdir())


def test_a_saved_grain_layer_is_recorded_as_instances(tmp_path):
    """A grain layer (each grain its own number) saved with File > Save could be given to micro-seg train, which read
    every grain number as a class; saved class maps and annotations stay class labels."""
    from micro_seg.io import labels_are_instances
    from napari_plugin._writer import write_labels_layer

    grains = np.arange(16, dtype=np.uint8).reshape(4, 4)
    (out,) = write_labels_layer(str(tmp_path / "g.tif"), grains, {"metadata": {"micro_seg": {"kind": "grains"}}})
    assert labels_are_instances(out)
    for kind in ("classes", "annotations"):
        (out,) = write_labels_layer(str(tmp_path / f"{kind}.tif"), grains % 2,
                                    {"metadata": {"micro_seg": {"kind": kind, "classes": ["a", "b"]}}})
        assert not labels_are_instances(out)


def test_bad_input_notifications(make_napari_viewer, qtbot, tmp_path, notes):
    """Unreadable file, no calibration, wrong layer type, empty labels -> notifications saying what to do."""
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._reader import get_reader
    from napari_plugin._segment import SegmentWidget
    from napari_plugin._train import TrainWidget

    viewer = make_napari_viewer()
    # unreadable file: the reader shows what is wrong instead of a traceback
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 10)
    reader = get_reader(str(bad))
    assert reader is not None
    assert reader(str(bad)) == [(None,)]
    assert any("broken.tif" in m for m in _messages(notes, "error"))
    # image without calibration: opened, with a warning saying how to set the pixel size
    from PIL import Image

    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "plain.png")
    layers = get_reader(str(tmp_path / "plain.png"))(str(tmp_path / "plain.png"))
    assert layers[0][0].shape == (16, 16) and "scale" not in layers[0][1]
    assert any("plain.png has no pixel-size calibration" in m and "Pixel size (µm/px)" in m
               for m in _messages(notes, "warning"))
    # wrong layer type: only a Points layer is there
    viewer.add_points(np.zeros((3, 2)), name="pts")
    seg, meas, train = SegmentWidget(viewer), MeasureWidget(viewer), TrainWidget(viewer)
    viewer.layers.selection.active = viewer.layers["pts"]
    assert seg.run() is None
    assert meas.run() is None
    msgs = _messages(notes, "warning")
    assert any("'pts' is a Points layer" in m and "image layer" in m for m in msgs)
    assert any("'pts' is a Points layer" in m and "Labels layer" in m for m in msgs)
    # empty annotations for training
    img = viewer.add_image(np.zeros((32, 32), np.uint8), name="plain")
    ann = viewer.add_labels(np.zeros((32, 32), np.uint8), name="ann",
                            metadata={"micro_seg": {"kind": "annotations", "classes": ["a", "b"]}})
    train.reset_choices()
    train._image.value, train._annotations.value = img, ann
    assert train.train() is None
    assert any("'ann' is empty" in m for m in _messages(notes, "warning"))
    # image without calibration: measuring warns that results are in pixels and how to fix it
    lab = viewer.add_labels(np.repeat(np.repeat(np.arange(1, 10).reshape(3, 3), 8, 0), 8, 1), name="uncal")
    meas.reset_choices()
    meas._labels.value = lab
    assert meas._pixel.value == 0
    meas.run()
    wait_idle(qtbot, meas)
    assert any("no pixel size" in m and "Pixel size (µm/px)" in m for m in _messages(notes, "warning"))
    assert meas.summary["n_grains"] == 9 and meas.summary["G_planimetric"] is None
    # engine errors raised in a worker come back as one notification, not a traceback dialog
    seg._model_folder.value = str(tmp_path / "no-such-model")
    seg._image.value = img
    seg.run()
    wait_idle(qtbot, seg)
    assert any("no-such-model" in m for m in _messages(notes, "error"))


def test_segment_warm_up_loads_what_the_first_run_needs(make_napari_viewer, qtbot):
    """Opening the Segment widget starts one warm-up worker that loads torch, the engine and
    napari's lazy imports off the GUI thread, then builds the Qt layer controls once."""
    import sys

    from napari_plugin import _common
    from napari_plugin._segment import SegmentWidget

    _common._WARM_UP.clear()  # as in a fresh napari session
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert widget._warm_up is not None and not _common.warm_up_finished()
    assert SegmentWidget(viewer)._warm_up is widget._warm_up  # once per process, not per widget
    qtbot.waitUntil(_common.warm_up_finished, timeout=180_000)
    assert "error" not in _common._WARM_UP, _common._WARM_UP.get("error")
    steps = _common._WARM_UP["steps"]
    assert list(steps) == ["torch", "engine", "napari lazy imports", "layers"]
    assert all(s >= 0 for s in steps.values())
    for name in ("torch", "micro_seg.inference", "micro_seg.postprocess", "pandas", "skimage.color"):
        assert name in sys.modules, name
    assert _common.preload_torch_libraries() is False  # torch is loaded now: nothing left to do
    import gc

    try:  # what was loaded is out of the cyclic collector's way; later objects are not
        from micro_seg.inference import predict_iter

        young = [predict_iter]
        assert gc.get_freeze_count() > 10_000
        tracked = gc.get_objects()  # the collector's generations, without the frozen objects
        assert not any(o is predict_iter for o in tracked) and any(o is young for o in tracked)
    finally:
        gc.unfreeze()  # the next tests start from an ordinary heap


def test_segment_model_list_follows_model_folders(make_napari_viewer, tmp_path, monkeypatch):
    """The model picker's cache is dropped when a model folder appears."""
    from _napari_helpers import tiny_model
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    before = [str(c) for c in widget._model.choices]
    assert not any(c.endswith("my-new-model") for c in before)
    tiny_model(tmp_path / "my-new-model", name="my-new-model")
    widget._model.reset_choices()
    after = [str(c) for c in widget._model.choices]
    assert sum(c.endswith("my-new-model") for c in after) == 1 and len(after) == len(before) + 1


def _faint_grain_model(folder, k=40.0, **postprocess):
    from data_builders import threshold_net

    from micro_seg.registry import ModelCard, save_model

    card = ModelCard(name="faint-grains", task="grains", arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=["grain", "boundary"], tile_size=64, normalisation={"mode": "minmax"},
                     postprocess=postprocess)
    return save_model(folder, threshold_net(2, 1, k=k), card)


def test_segment_pixel_size_warning_uses_the_engines_rule():
    """The widget warns before a run on the same rule as ``segment_image`` (1.5x outside the card's range)."""
    from types import SimpleNamespace

    from micro_seg.postprocess import PIXEL_SIZE_TOLERANCE
    from napari_plugin._segment import pixel_size_warning

    card = SimpleNamespace(name="m", pixel_size_um_range=(0.2, 0.5))
    assert pixel_size_warning(0.5 * PIXEL_SIZE_TOLERANCE, card) is None
    assert pixel_size_warning(0.2 / PIXEL_SIZE_TOLERANCE, card) is None
    assert pixel_size_warning(None, card) is None
    assert "0.8 µm is outside the range model 'm' was trained on (0.2-0.5 µm)" in pixel_size_warning(0.8, card)
    assert "0.1 µm" in pixel_size_warning(0.1, card)


def _job_result(gen):
    """Run a widget's worker generator to its end; its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_segment_job_uses_grain_settings(tmp_path):
    """A faint boundary (p ~0.29): one grain with the card's threshold 0.5, two when the run asks for 0.2."""
    import threading

    from data_builders import faint_boundary_image
    from napari_plugin._segment import SegmentParams, segment_job

    folder = _faint_grain_model(tmp_path / "faint-grains", threshold=0.5, min_grain_px=4)

    def run(**options):
        return _job_result(segment_job(SegmentParams(image=faint_boundary_image(), model=str(folder),
                                                     options=options), threading.Event()))

    assert run().n_objects == 1
    assert run(threshold=0.2, min_grain_px=4).n_objects == 2
    # an ensemble of two such models (micro-seg models ensemble) runs the same way, with the same answer
    from micro_seg.registry import combine_models

    second = _faint_grain_model(tmp_path / "faint-grains-2", k=50.0, threshold=0.5, min_grain_px=4)
    folder = combine_models([folder, second], tmp_path / "faint-ensemble")
    assert run().n_objects == 1
    assert run(threshold=0.2, min_grain_px=4).n_objects == 2


def test_segment_job_passes_the_post_processings_warnings_on(tmp_path, monkeypatch):
    """The tiled post-processing's 'grains wider than the context' warning reached the CLI but not napari."""
    import threading

    from data_builders import faint_boundary_image
    from micro_seg import postprocess as pp
    from napari_plugin._segment import SegmentParams, segment_job

    folder = _faint_grain_model(tmp_path / "faint-grains", threshold=0.5, min_grain_px=4)
    real = pp.postprocess

    def with_warning(*args, **kwargs):
        result = real(*args, **kwargs)
        result.warnings.append("grain interiors up to 3000 px across are wider than the context")
        return result

    monkeypatch.setattr(pp, "postprocess", with_warning)
    result = _job_result(segment_job(SegmentParams(image=faint_boundary_image(), model=str(folder)), threading.Event()))
    assert result.warnings == ("grain interiors up to 3000 px across are wider than the context",)


def test_segment_job_warns_a_blank_image_as_the_cli_does(tmp_path):
    """A constant layer segmented into a confident-looking map: ``segment`` and ``analyze`` warn, the widget said
    nothing."""
    import threading

    from napari_plugin._segment import SegmentParams, segment_job

    folder = _faint_grain_model(tmp_path / "faint-grains", threshold=0.5, min_grain_px=4)
    result = _job_result(segment_job(SegmentParams(image=np.full((64, 64), 77, np.uint8), model=str(folder)),
                                     threading.Event()))
    assert [w for w in result.warnings if w.startswith("the image is constant (every pixel 77): it has no contrast")]


def test_segment_job_with_test_time_augmentation_equals_the_engines(tmp_path):
    """The Segment widget's TTA box: the job averages over the 4 flips exactly as ``predict(..., tta=True)`` does
    (the uncertainty map shows it: a random network is not flip-invariant)."""
    import threading

    from _napari_helpers import tiny_model, two_phase_image
    from micro_seg.inference import predict
    from micro_seg.registry import load_model
    from napari_plugin._segment import SegmentParams, segment_job

    folder = tiny_model(tmp_path / "tiny")
    img, _ = two_phase_image((64, 80), seed=3)

    def run(tta):
        return _job_result(segment_job(SegmentParams(image=img, model=str(folder), tta=tta), threading.Event()))

    model = load_model(folder)
    for tta in (False, True):
        ref = predict(img, model, tta=tta)
        got = run(tta)
        np.testing.assert_allclose(got.uncertainty, ref.uncertainty, atol=1e-6)
        np.testing.assert_array_equal(got.class_labels, ref.labels)
    assert np.abs(run(True).uncertainty - run(False).uncertainty).max() > 1e-3


def test_segment_widget_grain_settings_follow_the_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Grain models show their post-processing settings preset to the card's; semantic models hide them;
    a run uses what is shown."""
    from _napari_helpers import tiny_model
    from data_builders import faint_boundary_image
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    grains = _faint_grain_model(tmp_path / "faint-grains", split_ratio=1.5, min_grain_px=4)
    semantic = tiny_model(tmp_path / "tiny-phases", name="tiny-phases")
    viewer = make_napari_viewer()
    viewer.add_image(faint_boundary_image(), name="faint")
    widget = SegmentWidget(viewer)
    widget.select_model(str(grains))
    settings = (widget._threshold, widget._split, widget._marker, widget._min_grain)
    assert not any(w.native.isHidden() for w in settings)
    assert widget.postprocess_options() == {"threshold": 0.5, "split_ratio": 1.5, "marker_threshold": None,
                                            "min_grain_px": 4}
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.last_result.n_objects == 1
    widget._threshold.value = 0.2
    widget.run()
    wait_idle(qtbot, widget)
    assert widget.last_result.n_objects == 2
    assert widget.postprocess_options()["threshold"] == 0.2
    widget.select_model(str(semantic))
    assert all(w.native.isHidden() for w in settings)


def test_segment_widget_shows_the_cards_grain_cores_and_runs_what_it_shows(make_napari_viewer, qtbot, tmp_path,
                                                                           monkeypatch):
    """A card's marker_threshold is shown ("Grain cores below") and used; it stays on when the user changes the
    boundary threshold (what is shown is what runs), and 0 turns it off."""
    from data_builders import faint_boundary_image
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    grains = _faint_grain_model(tmp_path / "cored", marker_threshold=0.2, min_grain_px=4)
    viewer = make_napari_viewer()
    viewer.add_image(faint_boundary_image(), name="faint")  # faint boundary at p ~0.29: splits only with cores
    widget = SegmentWidget(viewer)
    widget.select_model(str(grains))
    assert widget._marker.value == pytest.approx(0.2)

    def grains_found():
        widget.run()
        wait_idle(qtbot, widget)
        return widget.last_result.n_objects

    assert grains_found() == 2
    widget._threshold.value = 0.6
    assert grains_found() == 2  # the cores shown still split the grains
    widget._marker.value = 0.0
    assert grains_found() == 1


def _train_widget_on_two_phases(viewer):
    """A Train widget on a 64 x 64 two-phase image fully annotated as matrix / particle."""
    from napari_plugin._train import TrainWidget

    image, truth = two_phase_image((64, 64), seed=1)
    img_layer = viewer.add_image(image, name="img")
    ann = viewer.add_labels(np.where(truth, 2, 1).astype(np.uint8), name="ann",
                            metadata={"micro_seg": {"kind": "annotations", "classes": ["matrix", "particle"]}})
    train = TrainWidget(viewer)
    train._image.value, train._annotations.value = img_layer, ann
    return train


def test_train_widget_input_scale_reaches_the_job(make_napari_viewer):
    """The Train widget offers input scales down to 1/8 (whole-field defects) and hands the choice to training."""
    from napari_plugin._train import INPUT_SCALE_CHOICES

    train = _train_widget_on_two_phases(make_napari_viewer())
    assert [v for _, v in INPUT_SCALE_CHOICES] == [2.0, 1.0, 0.5, 0.25, 0.125]
    assert train._scale.value == 1.0
    train._scale.value = 0.125
    assert train._params().input_scale == 0.125


def test_train_widget_warns_when_patches_are_mostly_padding(make_napari_viewer, notes):
    """At half size a 64-px micrograph is 32 px across: the default 128-px patch would be 94% padding."""
    from napari_plugin._train import train_job

    train = _train_widget_on_two_phases(make_napari_viewer())
    train._scale.value = 0.5
    params = train._params()
    assert params.patch_size == 128
    job = train_job(params, cancel=None)
    start = next(ev for ev in job if ev.get("stage") == "start")  # the real job's first progress report
    job.close()
    train._on_progress(start)
    (msg,) = [m for m in _messages(notes, "warning") if "mostly padding" in m]
    assert "patch size 128 px" in msg and "median 32 x 32 px" in msg and "a patch size of 32 px" in msg


def _job_runner_with_widgets():
    from magicgui.widgets import Label, ProgressBar, PushButton

    from napari_plugin._common import JobRunner

    run_btn, cancel_btn = PushButton(text="Run"), PushButton(text="Cancel")
    runner = JobRunner(progress_bar=ProgressBar(), cancel_button=cancel_btn, status_label=Label(), run_button=run_btn)
    return runner, run_btn, cancel_btn


def test_job_runner_reports_a_runtime_error_and_frees_the_widget(qtbot, notes):
    """A job failing with RuntimeError (torch's error type) is shown and the widget is free again.

    napari's generator worker swallows RuntimeError as "aborted thread" and never
    reports the job finished, which left widgets busy for ever.
    """
    runner, run_btn, cancel_btn = _job_runner_with_widgets()
    done = []

    def job(params, cancel):
        yield (1, 2)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    assert runner.start(job, None, on_done=done.append, description="Segment") is not None
    qtbot.waitUntil(lambda: not runner.running, timeout=20_000)
    assert done == [] and runner.status_label.value == "Failed"
    assert any("mat1 and mat2 shapes" in m for m in _messages(notes, "error"))
    assert run_btn.enabled and not cancel_btn.enabled


def test_job_runner_without_cancel_button_does_not_tell_the_user_to_press_one(qtbot, notes):
    """Measure and Annotate have no Cancel button: a second Run while a job runs says to wait for it."""
    import threading

    from magicgui.widgets import Label

    from napari_plugin._common import JobRunner

    runner = JobRunner(status_label=Label(value=""))
    release, done = threading.Event(), []
    runner.start(lambda params, cancel: release.wait(20), None, on_done=done.append, description="Measuring")
    assert runner.start(lambda params, cancel: None, None, on_done=done.append) is None
    release.set()
    qtbot.waitUntil(lambda: not runner.running, timeout=20_000)
    warnings = _messages(notes, "warning")
    assert any("wait for it to finish" in m for m in warnings) and not any("Cancel" in m for m in warnings)
    assert done == [True]


def test_job_runner_abandon_survives_a_runner_the_garbage_collector_has_cleared(qtbot):
    """A widget and its runner collected as a reference cycle: Python clears the runner's attributes, then Qt sends
    the anchor's destroyed signal, whose slot called abandon() -> AttributeError 'worker' inside a Qt slot, which
    aborts the whole process (seen when a Train widget was collected after a test)."""
    from magicgui.widgets import Label

    from napari_plugin._common import JobRunner

    runner = JobRunner(status_label=Label(value=""))
    runner.__dict__.clear()  # what the collector's clearing of a cycle leaves
    runner.abandon()  # no exception
    runner = JobRunner(status_label=Label(value=""))
    runner.abandon()
    assert runner._cancel.is_set()


def test_job_runner_cancel_frees_the_widget_when_the_job_stops_itself(qtbot, notes):
    """Cancel while the job is between reports: the job raises CancelledError itself before yielding again.

    This is what made ``test_cancel_training_saves_nothing`` flaky: training
    checks the cancel event between batches, so it usually raised first.
    """
    import threading

    from micro_seg.errors import CancelledError

    runner, run_btn, cancel_btn = _job_runner_with_widgets()
    started, done = threading.Event(), []

    def job(params, cancel):
        yield (0, 1)
        started.set()
        while not cancel.wait(0.01):  # busy between two progress reports
            pass
        raise CancelledError("training cancelled")

    runner.start(job, None, on_done=done.append, description="Training")
    qtbot.waitUntil(started.is_set, timeout=20_000)
    cancel_btn.changed.emit(True)
    qtbot.waitUntil(lambda: not runner.running, timeout=20_000)
    assert done == [] and runner.status_label.value == "Cancelled"
    assert any("Training cancelled" in m for m in _messages(notes, "info"))
    assert run_btn.enabled and not cancel_btn.enabled


def test_job_runner_cancel_frees_the_widget_only_after_the_jobs_cleanup(qtbot, notes):
    """The batch widget's job joins its batch thread (which holds the output folder's lock) in a ``finally``:
    Run must not be enabled again before that has happened, or an immediate re-run finds the folder locked."""
    import time

    from micro_seg.errors import CancelledError

    runner, run_btn, cancel_btn = _job_runner_with_widgets()
    cleaned = []

    def job(params, cancel):
        try:
            for i in range(100_000):
                if cancel.is_set():
                    raise CancelledError("batch cancelled")
                time.sleep(0.005)  # busy, then a report: napari's quit() stopped the job at this yield
                yield (i, 100_000)
        finally:
            time.sleep(0.3)  # e.g. waiting for the images in flight
            cleaned.append(True)

    runner.start(job, None, on_done=lambda r: None, description="Batch")
    qtbot.waitUntil(lambda: runner.progress_bar.value >= 0 and runner.status_label.value.startswith("Batch"),
                    timeout=20_000)
    time.sleep(0.05)
    cancel_btn.changed.emit(True)
    qtbot.waitUntil(lambda: not runner.running, timeout=20_000)
    assert cleaned == [True] and run_btn.enabled and runner.status_label.value == "Cancelled"


def test_segment_result_stays_with_the_image_it_came_from(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    """Picking another image, or closing this one, while it is segmented: the result keeps its own image's name
    and scale (it went to whatever was picked by then, or was dropped without a word)."""
    from _napari_helpers import tiny_model
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    model = tiny_model(tmp_path / "tiny-phases", name="tiny-phases")
    viewer = make_napari_viewer()
    field = viewer.add_image(two_phase_image((64, 64), seed=2)[0], name="field", scale=(0.5, 0.5))
    other = viewer.add_image(np.zeros((40, 30), np.uint8), name="other")
    widget = SegmentWidget(viewer)
    widget.select_model(str(model))
    widget._image.value = field
    assert widget.run() is not None
    widget._image.value = other  # the user looks at another image before the result is ready
    wait_idle(qtbot, widget)
    assert "other classes" not in viewer.layers
    result = viewer.layers["field classes"]
    assert result.data.shape == (64, 64) and tuple(result.scale) == (0.5, 0.5)
    assert result.metadata["micro_seg"]["image"] == "field"
    viewer.layers.remove("field classes")
    widget._image.value = field
    assert widget.run() is not None
    viewer.layers.remove(field)  # closed while it is segmented: the result is kept, and the user told
    wait_idle(qtbot, widget)
    assert viewer.layers["field classes"].data.shape == (64, 64)
    assert any("'field' was closed meanwhile" in m for m in _messages(notes, "info"))
    # a 3 x 3 'micrograph' is segmented, with a warning that the result cannot be trusted
    widget._image.value = viewer.add_image(np.zeros((3, 3), np.uint8), name="speck")
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    assert any("'speck' is only 3 x 3 pixels" in m and "unreliable" in m for m in _messages(notes, "warning"))
    # a float image with a few NaN pixels: segmented, and the user told where the result means nothing
    holes = two_phase_image((64, 64), seed=3)[0].astype(np.float32)
    holes[5, 5:8] = np.nan
    widget._image.value = viewer.add_image(holes, name="holes")
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    assert any("'holes' has 3 NaN or infinite pixel value(s)" in m for m in _messages(notes, "warning"))
    assert viewer.layers["holes classes"].data.shape == (64, 64)


def test_train_widget_refuses_a_model_name_it_could_not_save_under(make_napari_viewer, tmp_path, monkeypatch, notes):
    """The model folder's place is a file: refused before training (the trained model used to be lost at the end)."""
    from micro_seg.registry import user_models_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    viewer = make_napari_viewer()
    train = _train_widget_on_two_phases(viewer)
    user_models_dir().mkdir(parents=True, exist_ok=True)
    (user_models_dir() / "taken").write_text("a file, not a model folder")
    train._name.value = "taken"
    assert train.train() is None and not train._runner.running
    assert any("is an existing file" in m and "choose another model name" in m for m in _messages(notes, "warning"))


def test_superpixels_are_computed_tile_by_tile_with_progress_and_cancel(monkeypatch):
    """SLIC ran as one call: no progress and no Cancel on a huge image (minutes, several GB)."""
    import threading

    from micro_seg.errors import CancelledError
    from napari_plugin import _annotate
    from napari_plugin._annotate import SuperpixelParams, _superpixel_job

    monkeypatch.setattr(_annotate, "SUPERPIXEL_TILE", 64)
    image, _ = two_phase_image((150, 130), seed=3)
    gen = _superpixel_job(SuperpixelParams(image, 12), threading.Event())
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            labels = stop.value
            break
    assert [r["done"] for r in reports] == list(range(1, 10)) and {r["total"] for r in reports} == {9}  # 3 x 3 tiles
    assert labels.shape == image.shape and labels.min() >= 1
    # every superpixel lies in one tile, and labels are unique across tiles
    tile_of = (np.arange(150)[:, None] // 64) * 3 + np.arange(130)[None, :] // 64
    for v in np.unique(labels):
        assert len(np.unique(tile_of[labels == v])) == 1
    cancel = threading.Event()
    gen = _superpixel_job(SuperpixelParams(image, 12), cancel)
    next(gen)
    cancel.set()
    with pytest.raises(CancelledError):
        next(gen)


def test_annotate_superpixels_can_be_cancelled(make_napari_viewer, qtbot, monkeypatch, notes):
    from napari_plugin import _annotate
    from napari_plugin._annotate import AnnotateWidget

    monkeypatch.setattr(_annotate, "SUPERPIXEL_TILE", 16)  # 1024 tiles: the job is still running when Cancel comes
    image, _ = two_phase_image((512, 512), seed=4)
    viewer = make_napari_viewer()
    w = AnnotateWidget(viewer)
    w._image.value = viewer.add_image(image, name="img")
    assert not w._cancel_btn.enabled
    assert w.compute_superpixels() is not None and w._cancel_btn.enabled
    w._cancel_btn.clicked.emit()
    wait_idle(qtbot, w)
    assert w._superpixels is None and w._status.value == "Cancelled" and not w._cancel_btn.enabled
    assert any("cancelled" in m for m in _messages(notes, "info"))


def test_annotate_superpixels_refuse_stacks_and_nan_images(make_napari_viewer, notes):
    """A 4-D stack gave '4 superpixels' in silence; NaN pixels ended in an 'internal error' naming no layer."""
    from napari_plugin._annotate import AnnotateWidget

    viewer = make_napari_viewer()
    w = AnnotateWidget(viewer)
    nan_img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    nan_img[3, 4] = np.nan
    for name, data, words in (("stack", np.zeros((2, 2, 32, 32), np.uint8), "has shape (2, 2, 32, 32)"),
                              ("holes", nan_img, "has NaN or infinite pixels")):
        w._image.value = viewer.add_image(data, name=name)
        assert w.compute_superpixels() is None and not w._runner.running
        assert any(f"'{name}' {words}" in m for m in _messages(notes, "warning")), name


def test_measure_warnings_name_the_layer(make_napari_viewer, qtbot, notes):
    """A binary mask measured as grain labels: the warning names the layer, not 'labels'."""
    from napari_plugin._measure import GRAINS, MeasureWidget

    mask = np.zeros((121, 121), np.uint8)
    mask[:, ::40] = 1
    mask[::40, :] = 1
    viewer = make_napari_viewer()
    w = MeasureWidget(viewer)
    w._labels.value = viewer.add_labels(mask, name="binmask")
    w._kind.value = GRAINS
    w.run()
    wait_idle(qtbot, w)
    assert w.summary["n_grains"] == 1
    assert any(m.startswith("'binmask': only one label value (1)") for m in _messages(notes, "warning")), notes


@pytest.mark.parametrize("px", [0.00123, 4e-05])
def test_measure_uses_the_layers_exact_pixel_size_and_boxes_keep_typed_ones(make_napari_viewer, qtbot, px):
    """The pixel-size boxes rounded to the step's decimals: a calibrated 0.00123 um/px layer was measured at 0.0012
    (areas 5% low) and a TEM 4e-05 at 0 (in pixels, 'no pixel size'); QC's box turned a typed 0.125 into 0.13."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._qc_widget import QCWidget

    viewer = make_napari_viewer()
    layer = viewer.add_labels(voronoi_labels((120, 160), n_grains=40, seed=3),
                              metadata={"micro_seg": {"kind": "grains", "pixel_size_um": px}})
    w = MeasureWidget(viewer)
    w._labels.value = layer
    w.run()
    wait_idle(qtbot, w)
    assert w.summary["pixel_size_um"] == px
    q = QCWidget(viewer)
    for typed in (0.125, 0.004, 0.00123):
        q._pixel.value = typed
        assert q._pixel.value == pytest.approx(typed, rel=1e-9)


def test_reader_shows_the_engines_warnings_naming_the_file(tmp_path, notes):
    """A 5-page TIFF opened as page 0 used to say only 'no pixel-size calibration'."""
    import tifffile

    from napari_plugin._reader import read_paths

    tifffile.imwrite(tmp_path / "stack.tif", np.random.default_rng(0).integers(0, 255, (5, 32, 32), np.uint8))
    layers = read_paths(str(tmp_path / "stack.tif"))
    assert layers[0][0].shape == (32, 32)
    warned = _messages(notes, "warning")
    assert any("stack.tif" in m and "5 pages" in m and "only page 0" in m and "page=N" in m for m in warned)


def test_job_errors_name_the_layer(make_napari_viewer, qtbot, tmp_path, notes, monkeypatch):
    """An engine error that does not name the layer ('image has no finite pixel values') is prefixed with it."""
    from _napari_helpers import tiny_model
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.full((96, 96), np.nan, np.float32), name="allnan")
    w = SegmentWidget(viewer)
    w._model_folder.value = str(tiny_model(tmp_path / "models" / "t"))
    w._image.value = layer
    w.run()
    wait_idle(qtbot, w)
    errors = _messages(notes, "error")
    assert errors and all(m.startswith("'allnan': ") and "no finite pixel values" in m for m in errors)


def test_annotate_refuses_a_prediction_or_annotations_of_another_size(make_napari_viewer, tmp_path, notes):
    """A 32 x 80 prediction started a 32 x 80 annotation layer for a 64 x 64 image, and Save wrote the mismatched
    pair (Train refused it later without naming the file)."""
    from napari_plugin._annotate import AnnotateWidget

    viewer = make_napari_viewer()
    img = viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8), name="img")
    p = np.zeros((32, 80), np.uint8)
    p[:, 40:] = 1
    pred = viewer.add_labels(p, name="pred", metadata={"micro_seg": {"kind": "classes", "classes": ["a", "b"]}})
    w = AnnotateWidget(viewer)
    w._image.value, w._prediction.value = img, pred
    w.start_from_prediction()
    assert any("'pred' (32 x 80 px) is not a prediction of 'img' (64 x 64 px)" in m for m in _messages(notes, "error"))
    ann = viewer.add_labels(np.where(p > 0, 2, 1).astype(np.uint8), name="ann",
                            metadata={"micro_seg": {"kind": "annotations", "classes": ["a", "b"]}})
    w.reset_choices()
    w._annotations.value = ann
    w._folder.value = str(tmp_path / "train")
    assert w.save_pair() is None
    assert any("'ann' (32 x 80 px) does not match 'img' (64 x 64 px)" in m for m in _messages(notes, "error"))
    assert not (tmp_path / "train" / "labels").exists()


def test_training_after_the_viewer_opened_does_not_crash_napari(tmp_path):
    """torch imports Triton when the first optimizer is made; on Mesa's software OpenGL (as here, under xvfb)
    loading it after napari's GL context killed the process (segmentation fault). A fresh process is needed:
    in this one an earlier test may have loaded Triton before any GL context."""
    import subprocess
    import sys

    script = tmp_path / "train_after_viewer.py"
    script.write_text(
        "import numpy as np, napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.add_image(np.zeros((8, 8)))\n"
        "from napari_plugin._common import import_engine\n"
        "import_engine()\n"
        "import torch\n"
        "torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())\n"
        "viewer.close()\n"
        "print('trained fine')\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "trained fine" in run.stdout, (run.returncode, run.stderr[-2000:])


def test_training_pair_with_negative_annotations_is_refused_and_leaves_no_image(tmp_path):
    """Annotations used to be cast to uint8, so -1 became class 255; now the pair is refused naming the labels
    file, before the image is written."""
    from micro_seg.errors import InvalidImageError
    from napari_plugin._annotate import save_training_pair

    ann = np.zeros((16, 16), np.int32)
    ann[0, 0], ann[5, 5] = -1, 1
    with pytest.raises(InvalidImageError, match=r"labels/a\.tif: label values must be >= 0"):
        save_training_pair(tmp_path, "a", np.zeros((16, 16), np.uint8), ann, classes=["matrix", "pore"])
    assert not list((tmp_path / "images").iterdir()) and not list((tmp_path / "labels").iterdir())


@pytest.mark.parametrize("scale, units, px, lost", [
    ((1.0, 1.0), ("micrometer", "micrometer"), 1.0, None),  # exactly 1 um/px was taken as uncalibrated
    ((500.0, 500.0), ("nanometer", "nanometer"), 0.5, None),  # another length unit was dropped
    ((0.5, 0.5), ("pixel", "pixel"), None, "has no length unit"),
    ((0.5, 0.25), ("micrometer", "micrometer"), None, "not square"),
])
def test_layer_calibration_in_any_length_unit_is_kept_and_a_lost_one_is_said(tmp_path, notes, scale, units, px, lost):
    from micro_seg.io import read_labels
    from napari_plugin._common import scale_pixel_size_um
    from napari_plugin._writer import write_labels_layer

    assert scale_pixel_size_um(scale, units) == (pytest.approx(px) if px else None)
    meta = {"name": "lab", "metadata": {}, "scale": scale, "units": units}
    out = write_labels_layer(str(tmp_path / "l.tif"), np.eye(8, dtype=np.uint8), meta)
    got = read_labels(out[0])[1]
    assert got == (pytest.approx(px) if px else None)
    warned = [m for s, m in notes if s.lower() == "warning" and "without a pixel size" in m]
    assert bool(warned) == bool(lost) and (not lost or lost in warned[0])


def test_defects_of_a_mask_are_not_shown_by_pixel_value(make_napari_viewer, qtbot):
    """The defects table is numbered by connected piece; set as features of a 0/1 mask, hovering the 400-px particle
    showed the 25-px one's numbers, and selecting row 2 hid the whole layer (no pixel has value 2)."""
    from napari_plugin._measure import DEFECTS, MeasureWidget

    mask = np.zeros((64, 64), np.uint8)
    mask[2:7, 2:7] = 1
    mask[30:50, 30:50] = 1
    viewer = make_napari_viewer()
    layer = viewer.add_labels(mask, name="mask")
    w = MeasureWidget(viewer)
    w._labels.value, w._kind.value = layer, DEFECTS
    w.run()
    wait_idle(qtbot, w)
    assert sorted(w.table["area_px"]) == [25, 400]
    assert "area_px" not in layer.features.columns
    w.select_row(1)
    assert not layer.show_selected_label
    inst = np.zeros((64, 64), np.int32)  # instance labels numbered 1, 2 in order: the table is the layer's values
    inst[2:7, 2:7], inst[30:50, 30:50] = 1, 2
    layer2 = viewer.add_labels(inst, name="inst")
    w._labels.value = layer2
    w.run()
    wait_idle(qtbot, w)
    assert list(layer2.features["area_px"]) == [25, 400]


def test_saving_a_training_pair_never_replaces_another_images_pair(tmp_path):
    """A second image with the same layer name replaced the first pair ('Saved field.tif' was the only notice)."""
    import tifffile

    from micro_seg.errors import TrainingDataError
    from napari_plugin._annotate import save_training_pair

    ann = np.zeros((16, 16), np.uint8)
    ann[:4], ann[-4:] = 1, 2
    first = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img_path, _ = save_training_pair(tmp_path, "field", first, ann, classes=["matrix", "pore"])
    ann[8, 8] = 2
    save_training_pair(tmp_path, "field", first, ann, classes=["matrix", "pore"])  # the same image: updated
    with pytest.raises(TrainingDataError, match="already holds another image named 'field'"):
        save_training_pair(tmp_path, "field", first[::-1].copy(), ann, classes=["matrix", "pore"])
    assert np.array_equal(tifffile.imread(img_path), first)
    ann[0, 0] = 7
    with pytest.raises(TrainingDataError, match="annotation value 7 but only 2 classes"):
        save_training_pair(tmp_path, "other", first, ann, classes=["matrix", "pore"])


def test_measure_follows_a_recalibration_made_in_the_segment_widget(make_napari_viewer, qtbot):
    """Segment recalibrated the image and its grains to 0.25 um/px; Measure still used the 0.5 its box showed."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._segment import SegmentWidget

    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((200, 240), np.uint8), name="img", scale=(0.5, 0.5), units=("um", "um"),
                           metadata={"micro_seg": {"pixel_size_um": 0.5}})
    lab = viewer.add_labels(voronoi_labels((200, 240), n_grains=60, seed=1), name="img grains", scale=(0.5, 0.5),
                            units=("um", "um"),
                            metadata={"micro_seg": {"kind": "grains", "image": "img", "pixel_size_um": 0.5}})
    seg, meas = SegmentWidget(viewer), MeasureWidget(viewer)
    meas._labels.value = lab
    seg._image.value = img
    seg._pixel.value = 0.25
    meas.run()
    wait_idle(qtbot, meas)
    assert meas.summary["pixel_size_um"] == pytest.approx(0.25) and meas._pixel.value == pytest.approx(0.25)
    meas._pixel.value = 0.3  # typed by the user: that wins
    meas.run()
    wait_idle(qtbot, meas)
    assert meas.summary["pixel_size_um"] == pytest.approx(0.3)


def _measure_a_with_b_waiting(make_napari_viewer):
    """A Measure widget measuring grain layer A (started, not waited for), and another grain layer B."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    viewer = make_napari_viewer()
    a = viewer.add_labels(voronoi_labels((96, 96), n_grains=20, seed=1), name="A")
    b = viewer.add_labels(voronoi_labels((96, 96), n_grains=40, seed=2), name="B")
    w = MeasureWidget(viewer)
    w._labels.value = a
    w.run()
    return w, b


def test_switching_the_measured_layer_clears_the_previous_results(make_napari_viewer, qtbot, tmp_path, notes):
    """After measuring A and picking B, A's numbers stayed on screen and Export CSV wrote them for B; and as hover
    values on A, where an edit or a new segmentation of A no longer cleared them (wrong numbers on hover)."""
    w, b = _measure_a_with_b_waiting(make_napari_viewer)
    wait_idle(qtbot, w)
    assert w.summary is not None and w.table_view.model().rowCount() > 0
    a = w._measured_layer
    assert len(a.features) == len(w.table) > 0
    w._labels.value = b
    assert w.summary is None and w.table is None and w.table_view.model().rowCount() == 0
    # nor as hover values on A, no longer watched: A re-segmented in place showed its old grains' areas on hover
    assert len(a.features) == 0
    w.run()
    wait_idle(qtbot, w)
    assert w.summary["n_grains"] != 0 and w._measured_layer is b


def test_saving_a_float_image_with_nan_again_updates_its_pair(tmp_path):
    from napari_plugin._annotate import save_training_pair

    img = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    img[3, 3] = np.nan
    ann = np.zeros((16, 16), np.uint8)
    ann[:4], ann[-4:] = 1, 2
    save_training_pair(tmp_path, "f", img, ann, classes=["a", "b"])
    save_training_pair(tmp_path, "f", img, ann, classes=["a", "b"])  # NaN != NaN must not make it "another image"


def test_a_measurement_finishing_after_another_layer_was_picked_is_not_shown(make_napari_viewer, qtbot, notes):
    w, b = _measure_a_with_b_waiting(make_napari_viewer)
    w._labels.value = b  # before the worker's result reaches the GUI thread
    wait_idle(qtbot, w)
    assert w.summary is None and w._measured_layer is None
    assert any("another layer is picked now" in m for _, m in notes)
    assert w._status.value == "Press Measure for this layer"  # it said "Measuring grain size..." for good


def test_a_measurement_of_a_layer_closed_meanwhile_says_so(make_napari_viewer, qtbot, notes):
    """Closing the measured layer while it was measured: the widget said another layer was picked (none was), and
    its status said "Measuring grain size..." for good."""
    w, b = _measure_a_with_b_waiting(make_napari_viewer)
    viewer = w._viewer
    viewer.layers.remove("A")
    viewer.layers.remove(b)
    wait_idle(qtbot, w)
    assert w.summary is None and w._measured_layer is None
    assert any("'A' was closed while it was measured" in m for _, m in notes)
    assert not any("another layer is picked" in m for _, m in notes)
    assert w._status.value == "Pick a Labels layer"


def _segment_widget_on_a_field(make_napari_viewer, tmp_path, monkeypatch):
    """``(viewer, Segment widget, image layer)``: a tiny phase model picked for a 64 x 64 two-phase field."""
    from _napari_helpers import tiny_model
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    model = tiny_model(tmp_path / "tiny-phases", name="tiny-phases")
    viewer = make_napari_viewer()
    field = viewer.add_image(two_phase_image((64, 64), seed=2)[0], name="field")
    widget = SegmentWidget(viewer)
    widget.select_model(str(model))
    widget._image.value = field
    return viewer, widget, field


def test_segment_again_keeps_a_result_layer_the_user_edited(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    """Segment again over a hand-corrected result: the corrections stay, the new result goes to a new layer."""
    viewer, widget, field = _segment_widget_on_a_field(make_napari_viewer, tmp_path, monkeypatch)
    for _ in range(2):  # an unedited result is simply replaced
        assert widget.run() is not None
        wait_idle(qtbot, widget)
    assert [l.name for l in viewer.layers if l.name.startswith("field classes")] == ["field classes"]
    edited = viewer.layers["field classes"]
    edited.data_setitem((np.arange(10, 20), np.arange(10, 20)), 1)  # the user paints a correction
    edited.data_setitem((np.arange(30, 40), np.arange(10, 20)), 0)
    kept = np.array(edited.data, copy=True)
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    assert viewer.layers["field classes"] is edited and np.array_equal(edited.data, kept)
    assert viewer.layers["field classes [2]"].data.shape == (64, 64)
    assert any("'field classes' was edited" in m and "'field classes [2]'" in m for m in _messages(notes, "warning"))
    assert widget.run() is not None  # the new result, unedited, is replaced by the next run
    wait_idle(qtbot, widget)
    assert "field classes [3]" not in viewer.layers and np.array_equal(edited.data, kept)


def test_segment_again_hashes_the_result_layers_off_the_gui_thread(make_napari_viewer, qtbot, tmp_path, monkeypatch,
                                                                  notes):
    """The edited-layer check hashed the new result and the existing layer on the GUI thread (about 2.5 s frozen for
    a 16k x 16k image): now the worker hashes both; an edit made while segmenting still keeps the layer."""
    import threading

    from napari_plugin import _segment

    on_gui_thread = []
    digest = _segment.data_digest

    def spy(data):
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        return digest(data)

    monkeypatch.setattr(_segment, "data_digest", spy)
    viewer, widget, field = _segment_widget_on_a_field(make_napari_viewer, tmp_path, monkeypatch)
    for _ in range(2):  # the second run hashes the first result (unedited: replaced)
        assert widget.run() is not None
        wait_idle(qtbot, widget)
    assert [l.name for l in viewer.layers if l.name.startswith("field classes")] == ["field classes"]
    assert len(on_gui_thread) == 3 and not any(on_gui_thread)
    layer = viewer.layers["field classes"]
    assert widget.run() is not None
    layer.data_setitem((np.arange(5), np.arange(5)), 1 - layer.data[0, 0])  # an edit while segmenting
    wait_idle(qtbot, widget)
    assert viewer.layers["field classes"] is layer and "field classes [2]" in viewer.layers
    assert not any(on_gui_thread)


def test_start_from_prediction_keeps_the_strokes_already_painted(make_napari_viewer, notes):
    """'Start from prediction' on a layer with scribbles: the prediction fills only the unlabelled pixels."""
    from napari_plugin._annotate import AnnotateWidget

    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    p = np.zeros((32, 32), np.uint8)
    p[:, 16:] = 1  # classes a (left) and b (right): annotation values 1 and 2
    pred = viewer.add_labels(p, name="img classes", metadata={"micro_seg": {"kind": "classes", "classes": ["a", "b"]}})
    w = AnnotateWidget(viewer)
    w._image.value, w._classes.value = img, "a, b"
    layer = w.new_annotation_layer()
    layer.data_setitem((np.full(8, 4), np.arange(20, 28)), 1)  # the user says: these right-hand pixels are 'a'
    w._prediction.value = pred
    w.start_from_prediction()
    assert w._annotations.value is layer
    expected = p + 1
    expected[4, 20:28] = 1
    np.testing.assert_array_equal(layer.data, expected)
    assert any("8 painted pixel(s) were kept" in m for m in _messages(notes, "info"))


def test_start_from_prediction_refuses_another_images_annotations_and_can_be_undone(make_napari_viewer, notes):
    """'Start from prediction' filled the annotations of image A from the prediction of image B (same size), and
    its fill reset napari's undo history (the strokes painted before could no longer be undone)."""
    from napari_plugin._annotate import AnnotateWidget

    viewer = make_napari_viewer()
    a = viewer.add_image(np.zeros((32, 32), np.uint8), name="A")
    b = viewer.add_image(np.zeros((32, 32), np.uint8), name="B")
    p = np.zeros((32, 32), np.uint8)
    p[:, 16:] = 1
    pred = viewer.add_labels(p, name="B classes", metadata={"micro_seg": {"kind": "classes", "classes": ["a", "b"]}})
    w = AnnotateWidget(viewer)
    w._image.value, w._classes.value = a, "a, b"
    layer = w.new_annotation_layer()
    layer.data_setitem((np.full(8, 4), np.arange(20, 28)), 1)  # a stroke on A
    stroke = np.array(layer.data, copy=True)
    w._image.value, w._prediction.value = b, pred
    w._annotations.value = layer
    w.start_from_prediction()
    np.testing.assert_array_equal(layer.data, stroke)
    assert any("was made for 'A', not 'B'" in m for m in _messages(notes, "warning"))
    w._image.value = a  # the prediction is copied into A's annotations: one undoable edit after the stroke
    w.start_from_prediction()
    assert layer.data[0, 0] == 1 and layer.data[0, 20] == 2 and layer.data[4, 20] == 1
    layer.undo()
    np.testing.assert_array_equal(layer.data, stroke)
    layer.undo()
    assert not np.asarray(layer.data).any()


def test_segment_pixel_size_reaches_the_results_of_a_renamed_image(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Rename the image, then correct its pixel size in Segment: its result layers follow (Measure used the old one)."""
    from _napari_helpers import tiny_model
    from napari_plugin._common import layer_pixel_size_um
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    model = tiny_model(tmp_path / "tiny-phases", name="tiny-phases")
    viewer = make_napari_viewer()
    field = viewer.add_image(two_phase_image((64, 64), seed=2)[0], name="field", scale=(0.5, 0.5),
                             units=("um", "um"), metadata={"micro_seg": {"pixel_size_um": 0.5}})
    widget = SegmentWidget(viewer)
    widget.select_model(str(model))
    widget._image.value = field
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    result, unc = viewer.layers["field classes"], viewer.layers["field uncertainty"]
    other = viewer.add_labels(np.zeros((8, 8), np.uint8), name="unrelated", scale=(2.0, 2.0),
                              metadata={"micro_seg": {"kind": "classes", "pixel_size_um": 2.0, "image": "other"}})
    field.name = "field (polished)"
    widget._image.value = field
    widget._pixel.value = 0.25
    assert layer_pixel_size_um(field) == pytest.approx(0.25)
    for layer in (result, unc):
        assert layer_pixel_size_um(layer) == pytest.approx(0.25) and tuple(layer.scale) == pytest.approx((0.25, 0.25))
    assert layer_pixel_size_um(other) == pytest.approx(2.0)


def test_segment_pixel_size_of_a_duplicated_image_leaves_the_originals_results(make_napari_viewer, qtbot, tmp_path,
                                                                               monkeypatch):
    """napari's Duplicate Layer copies the image's metadata, its micro-seg id too: 2.0 um/px typed for the copy
    rescaled the original's results (areas 16 x wrong in Measure)."""
    from _napari_helpers import tiny_model
    from napari.layers._layer_actions import _duplicate_layer

    from napari_plugin._common import layer_pixel_size_um
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    model = tiny_model(tmp_path / "tiny-phases", name="tiny-phases")
    viewer = make_napari_viewer()
    a = viewer.add_image(two_phase_image((64, 64), seed=2)[0], name="A", scale=(0.5, 0.5), units=("um", "um"),
                         metadata={"micro_seg": {"pixel_size_um": 0.5}})
    widget = SegmentWidget(viewer)
    widget.select_model(str(model))
    widget._image.value = a
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    result = viewer.layers["A classes"]
    viewer.layers.selection = {a}
    _duplicate_layer(viewer.layers)
    copy = viewer.layers["A copy"]
    widget._image.value = copy
    widget._pixel.value = 2.0
    assert layer_pixel_size_um(copy) == pytest.approx(2.0)
    for layer in (a, result):
        assert layer_pixel_size_um(layer) == pytest.approx(0.5) and tuple(layer.scale) == pytest.approx((0.5, 0.5))
    assert widget.run() is not None  # the copy's own results link to the copy only
    wait_idle(qtbot, widget)
    assert _ms_id(copy) != _ms_id(a) and viewer.layers["A copy classes"].metadata["micro_seg"]["image_id"] == _ms_id(copy)
    widget._image.value = a
    widget._pixel.value = 0.25
    assert layer_pixel_size_um(result) == pytest.approx(0.25)
    assert layer_pixel_size_um(viewer.layers["A copy classes"]) == pytest.approx(2.0)


def _ms_id(layer):
    return layer.metadata["micro_seg"].get("id")


def test_measure_pixel_size_change_clears_old_numbers_and_recalibrates_image_and_siblings(make_napari_viewer, qtbot,
                                                                                          notes):
    """A new pixel size in Measure: the numbers measured at the old one go (summary, table, hover values, export),
    and the image and its other layers take the new pixel size with the measured layer."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._common import layer_pixel_size_um
    from napari_plugin._measure import MeasureWidget

    labels = voronoi_labels((120, 160), n_grains=20, seed=3)
    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((120, 160), np.uint8), name="img", scale=(0.5, 0.5), units=("um", "um"),
                           metadata={"micro_seg": {"pixel_size_um": 0.5, "id": "img-1"}})
    common = dict(scale=(0.5, 0.5), units=("um", "um"))
    grains = viewer.add_labels(labels, name="img grains", **common, metadata={"micro_seg": {
        "kind": "grains", "image": "img", "image_id": "img-1", "pixel_size_um": 0.5}})
    unc = viewer.add_image(np.zeros((120, 160), np.float32), name="img uncertainty", **common, metadata={
        "micro_seg": {"kind": "uncertainty", "image": "img", "image_id": "img-1", "pixel_size_um": 0.5}})
    w = MeasureWidget(viewer)
    w._labels.value = grains
    w.run()
    wait_idle(qtbot, w)
    area_05 = float(w.summary["mean_area_um2"])
    assert len(grains.features) == len(w.table) > 0
    w._pixel.value = 0.25
    assert w.summary is None and w.table is None and len(grains.features) == 0
    assert w.summary_view.model().rowCount() == 0
    assert w.export_csv() is None and any("press Measure first" in m for m in _messages(notes, "warning"))
    for layer in (img, grains, unc):
        assert layer_pixel_size_um(layer) == pytest.approx(0.25) and tuple(layer.scale) == pytest.approx((0.25, 0.25))
    w.run()
    wait_idle(qtbot, w)
    assert float(w.summary["mean_area_um2"]) == pytest.approx(area_05 / 4)


def test_measure_a_boundary_mask_with_twins_warns_and_measures_the_chosen_boundary_value(make_napari_viewer, qtbot,
                                                                                         notes):
    """A boundary mask with 1 = grain boundary, 2 = twin trace was measured as ``!= 0``: no warning, and the twins
    counted as grain boundaries (G too fine) with no way to keep only the value 1."""
    from skimage.segmentation import find_boundaries

    from micro_seg.measure import measure_grains_from_boundaries
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    mask = find_boundaries(voronoi_labels((200, 200), n_grains=30, seed=4), mode="inner").astype(np.uint8)
    mask[20::40, 5:195] = np.where(mask[20::40, 5:195] == 0, 2, mask[20::40, 5:195])  # twin traces across grains
    viewer = make_napari_viewer()
    layer = viewer.add_labels(mask, name="traced", metadata={"micro_seg": {"kind": "boundaries"}})
    w = MeasureWidget(viewer)
    w._labels.value = layer
    assert w._boundary.value and not w._boundary_value.native.isHidden()
    assert list(w._boundary_value.choices) == [None, 1, 2]
    w.run()
    wait_idle(qtbot, w)
    assert any("2 different non-zero values (1, 2)" in m for m in _messages(notes, "warning"))
    with_twins = w.summary["n_grains"]
    notes.clear()
    w._boundary_value.value = 1
    w.run()
    wait_idle(qtbot, w)
    api = measure_grains_from_boundaries(mask, boundary_value=1, pixel_size_um=None, what="'traced'").summary
    assert w.summary["n_grains"] == api["n_grains"] < with_twins
    assert w.summary["mean_intercept_px"] == pytest.approx(api["mean_intercept_px"])
    assert not any("non-zero values" in m for m in _messages(notes, "warning"))


def _measured_grains(make_napari_viewer, qtbot):
    """A viewer with image 'img' and its grains at 0.5 um/px, measured by a Measure widget."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((120, 160), np.uint8), name="img", scale=(0.5, 0.5), units=("um", "um"),
                           metadata={"micro_seg": {"pixel_size_um": 0.5, "id": "img-1"}})
    grains = viewer.add_labels(voronoi_labels((120, 160), n_grains=20, seed=3), name="img grains", scale=(0.5, 0.5),
                               units=("um", "um"), metadata={"micro_seg": {
                                   "kind": "grains", "image": "img", "image_id": "img-1", "pixel_size_um": 0.5}})
    w = MeasureWidget(viewer)
    w._labels.value = grains
    w.run()
    wait_idle(qtbot, w)
    assert w.summary is not None and len(grains.features) == len(w.table) > 0
    return viewer, img, grains, w


def _cleared(w, layer) -> bool:
    return (w.summary is None and w.table is None and w._measured_layer is None and len(layer.features) == 0
            and w.summary_view.model().rowCount() == 0 and w.table_view.model().rowCount() == 0)


def test_measure_results_go_when_another_widget_recalibrates_the_measured_layer(make_napari_viewer, qtbot, notes):
    """Segment's pixel box recalibrated the measured grains to 0.25 um/px: Measure kept the summary, table, hover
    values and Export CSV measured at 0.5."""
    from napari_plugin._segment import SegmentWidget

    viewer, img, grains, w = _measured_grains(make_napari_viewer, qtbot)
    grains.metadata = {**grains.metadata, "note": "not the pixel size"}  # other metadata: the numbers stay
    assert w.summary is not None
    seg = SegmentWidget(viewer)
    seg._image.value = img
    seg._pixel.value = 0.25
    assert _cleared(w, grains) and "recalibrated" in w._status.value
    assert w.export_csv() is None and any("press Measure first" in m for m in _messages(notes, "warning"))
    w.run()
    wait_idle(qtbot, w)
    assert w.summary["pixel_size_um"] == pytest.approx(0.25)
    seg._pixel.value = 0.5  # and again, after measuring at the new pixel size
    assert _cleared(w, grains)


def test_measure_results_go_when_the_measured_layer_is_edited_or_deleted(make_napari_viewer, qtbot, notes):
    """Painting, filling or erasing the measured labels (or replacing their data) left the old table, hover values
    and Export CSV until Measure was pressed again; a deleted layer's results stayed too."""
    viewer, img, grains, w = _measured_grains(make_napari_viewer, qtbot)
    grains.data_setitem((np.arange(120), np.full(120, 80)), 0)  # a brush / eraser stroke
    assert _cleared(w, grains) and "was edited" in w._status.value
    assert w.export_csv() is None
    w.run()
    wait_idle(qtbot, w)
    assert w.summary is not None
    grains.fill((10, 10), 99)  # the fill bucket
    assert _cleared(w, grains)
    w.run()
    wait_idle(qtbot, w)
    data = np.array(grains.data)
    data[:, :40] = 1
    grains.data = data  # data replaced (a script, Segment's update in place)
    assert _cleared(w, grains)
    w.run()
    wait_idle(qtbot, w)
    assert w.summary is not None
    viewer.layers.remove(grains)
    assert w.summary is None and w.table is None and w._measured_layer is None
    assert w.table_view.model().rowCount() == 0 and w.export_csv() is None


def test_measure_results_go_when_an_edit_is_undone_or_redone(make_napari_viewer, qtbot, notes):
    """Ctrl-Z after measuring put the old pixels back without a paint event: the table, hover values and Export CSV
    still described the painted labels. Undo and redo now clear them; hiding, showing or refreshing the layer does
    not."""
    viewer, img, grains, w = _measured_grains(make_napari_viewer, qtbot)
    grains.paint((30, 30), 99)  # a brush dab, then measure the painted labels
    w.run()
    wait_idle(qtbot, w)
    assert w.summary is not None
    grains.visible = False
    grains.visible = True
    grains.refresh()
    assert w.summary is not None  # nothing changed
    grains.undo()
    assert _cleared(w, grains) and "was edited" in w._status.value
    w.run()
    wait_idle(qtbot, w)
    assert w.summary is not None
    grains.redo()
    assert _cleared(w, grains)


def test_a_scale_set_from_the_console_is_the_pixel_size_micro_seg_uses(make_napari_viewer, qtbot, tmp_path, notes):
    """``layer.scale = (0.3, 0.3)`` in napari's console (micrometre units) changed the scale bar, but Measure kept
    its numbers at 0.5 um/px and File > Save wrote 0.5 um/px (the micro-seg metadata won over what the viewer
    shows). The scale the viewer shows in a length unit is now the pixel size; an unchanged one still reads the
    metadata's exact value."""
    from micro_seg.io import read_labels
    from napari_plugin._common import layer_pixel_size_um
    from napari_plugin._writer import write_labels_layer

    viewer, img, grains, w = _measured_grains(make_napari_viewer, qtbot)
    grains.scale = (0.3, 0.3)
    assert layer_pixel_size_um(grains) == pytest.approx(0.3)
    assert _cleared(w, grains) and "recalibrated" in w._status.value
    out = write_labels_layer(str(tmp_path / "g.tif"), grains.data, grains._get_state())
    assert read_labels(out[0])[1] == pytest.approx(0.3)
    grains.units = ("nm", "nm")
    grains.scale = (500.0, 500.0)
    assert layer_pixel_size_um(grains) == 0.5  # the metadata's 0.5 exactly (not 500 nm's 0.5000000001)


def test_measure_again_after_an_edit_drops_stale_hover_values(make_napari_viewer, qtbot):
    """Erasing a line across the grains renumbers them: the table is no longer by pixel value, and the hover values
    of the first measurement must not stay on the layer."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    labels = voronoi_labels((120, 160), n_grains=20, seed=3)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels, name="grains", metadata={"micro_seg": {"kind": "grains"}})
    w = MeasureWidget(viewer)
    w._labels.value = layer
    w.run()
    wait_idle(qtbot, w)
    assert len(layer.features) == len(w.table) > 0
    layer.data_setitem((np.arange(120), np.full(120, 80)), 0)  # the user erases a line: grains split
    w.run()
    wait_idle(qtbot, w)
    assert not w._ids_are_values and len(layer.features) == 0


def test_train_names_the_annotation_layer_with_a_label_above_its_classes(make_napari_viewer, tmp_path, monkeypatch,
                                                                           notes):
    """Label 3 painted with two classes: refused before training, naming the layer and the fix (the engine's
    'training pair 0: label values must be 0 .. 2' named neither)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    train = _train_widget_on_two_phases(make_napari_viewer())
    ann = train._annotations.value
    ann.data_setitem((np.arange(5), np.arange(5)), 3)
    train._name.value = "three"
    assert train.train() is None and not train._runner.running
    warned = _messages(notes, "warning")
    assert any("'ann' uses label 3" in m and "only 2" in m and "1 = matrix, 2 = particle" in m and "repaint" in m
               and "add the missing class" in m for m in warned), warned


def test_superpixels_only_fill_the_annotations_of_their_own_image(make_napari_viewer, qtbot, notes):
    """Superpixels of one image clicked into the annotations of another: an IndexError for another size, silently
    the wrong regions for the same size; now a warning and nothing changed."""
    from napari_plugin._annotate import AnnotateWidget

    viewer = make_napari_viewer()
    a = viewer.add_image(two_phase_image((64, 64), seed=1)[0], name="a")
    b = viewer.add_image(two_phase_image((64, 64), seed=2)[0], name="b")
    c = viewer.add_image(two_phase_image((32, 48), seed=3)[0], name="c")
    w = AnnotateWidget(viewer)
    w._classes.value = "matrix, particle"
    layers = {}
    for image in (a, b, c):
        w._image.value = image
        layers[image.name] = w.new_annotation_layer()
    w._annotations.value = layers["a"]
    for other in (c, b):  # the annotations of 'a' with another image picked: refused before computing anything
        w._image.value = other
        w._sp_mode.value = True
        assert not w._sp_mode.value and w._superpixels is None
    warned = _messages(notes, "warning")
    assert any("'a annotations' (64 x 64 px) is not the size of 'c' (32 x 48 px)" in m for m in warned), warned
    assert any("'a annotations' was made for 'a', not 'b'" in m for m in warned), warned
    w._image.value = a
    w._sp_size.value = 8
    w._sp_mode.value = True
    wait_idle(qtbot, w)
    assert w._superpixels is not None and w.fill_superpixel_at(10, 10, 1) > 0
    for name in ("c", "b"):  # another annotation layer picked afterwards: a's superpixels are not used on it
        w._annotations.value = layers[name]
        assert w.fill_superpixel_at(20, 40, 1) == 0 and not layers[name].data.any()
    assert any("computed for another image" in m and "not the size of 'a'" in m for m in _messages(notes, "warning"))


def test_annotate_and_train_refuse_a_stack_instead_of_annotating_its_first_two_axes(make_napari_viewer, tmp_path,
                                                                                     notes):
    """A (4, 64, 80) stack is not one image: no annotation layer of shape (4, 64), no pair saved, no training."""
    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._train import TrainWidget

    viewer = make_napari_viewer()
    stack = viewer.add_image(np.zeros((4, 64, 80), np.uint8), name="stack")
    ann = AnnotateWidget(viewer)
    ann.reset_choices()
    ann._image.value = stack
    assert ann.new_annotation_layer() is None
    assert not any(type(layer).__name__ == "Labels" for layer in viewer.layers)
    assert any("'stack' has shape (4, 64, 80)" in m for m in _messages(notes, "warning"))
    # an annotation layer of the stack's first two axes (made by hand, or by an older version): refused too
    strokes = np.zeros((4, 64), np.uint8)
    strokes[0, :10], strokes[1, :10] = 1, 2
    layer = viewer.add_labels(strokes, name="stack annotations",
                              metadata={"micro_seg": {"kind": "annotations", "classes": ["a", "b"], "image": "stack"}})
    ann.reset_choices()
    ann._annotations.value = layer
    ann._folder.value = str(tmp_path / "training")
    assert ann.save_pair() is None
    assert not (tmp_path / "training").exists()
    assert any("'stack' has shape (4, 64, 80)" in m and "nothing was saved" in m for m in _messages(notes, "error"))
    train = TrainWidget(viewer)
    train.reset_choices()
    train._image.value, train._annotations.value = stack, layer
    assert train._params() is None
    assert any("'stack' has shape (4, 64, 80): training needs" in m for m in _messages(notes, "warning"))


def test_a_saved_labels_layer_opens_again_as_labels_with_its_pixel_size_and_classes(make_napari_viewer, qtbot,
                                                                                     tmp_path):
    """File > Save of a Labels layer, then File > Open: a Labels layer again (Measure lists it), same values, same
    pixel size, same class names; a micrograph and segment's float probabilities still open as images."""
    import tifffile

    from micro_seg.commands.segment import write_probabilities
    from napari_plugin._measure import PHASES, MeasureWidget
    from napari_plugin._reader import get_reader
    from napari_plugin._writer import write_labels_layer

    viewer = make_napari_viewer()
    classes = np.zeros((60, 80), np.uint8)
    classes[:, 20:] = 1  # 75 % ferrite, 25 % pearlite, by construction
    classes[:, :20] = 2
    saved = viewer.add_labels(classes, name="steel classes", scale=(0.37, 0.37), units=("um", "um"),
                              metadata={"micro_seg": {"kind": "classes", "classes": ["pore", "ferrite", "pearlite"]}})
    out = write_labels_layer(str(tmp_path / "steel.tif"), saved.data, saved._get_state())[0]
    viewer.layers.clear()
    layers = viewer.open(out, plugin="micro-seg")
    assert [type(layer).__name__ for layer in layers] == ["Labels"]
    layer = layers[0]
    np.testing.assert_array_equal(layer.data, classes)
    assert tuple(layer.scale) == pytest.approx((0.37, 0.37)) and str(layer.units[0]) == "micrometer"
    assert layer.metadata["micro_seg"]["classes"] == ["pore", "ferrite", "pearlite"]
    meas = MeasureWidget(viewer)
    assert meas._labels.value is layer and meas._kind.value == PHASES and meas._pixel.value == pytest.approx(0.37)
    meas.run()
    wait_idle(qtbot, meas)
    assert meas.summary["phase_fractions"] == pytest.approx({"pore": 0.0, "ferrite": 0.75, "pearlite": 0.25})
    # not every TIFF with micro-seg's description is labels: the probabilities, and plain micrographs, are images
    probs = write_probabilities(tmp_path / "steel_probabilities.tif", np.full((2, 60, 80), 0.5, np.float32),
                                classes=["a", "b"], pixel_size_um=0.37)
    tifffile.imwrite(tmp_path / "plain.tif", classes)
    for path in (probs, tmp_path / "plain.tif"):
        assert get_reader(str(path))(str(path))[0][2] == "image"


def test_segment_pixel_box_follows_a_scale_set_from_the_console(make_napari_viewer, monkeypatch):
    """The Segment widget's box kept 0.3 um/px after ``layer.scale = (0.5, 0.5)`` in the console, while a run uses
    0.5 (the layer's): the box misled, and typing 0.3 there changed nothing (the value did not change), so the
    image stayed at 0.5. The box now shows the layer's pixel size, and typing the old one recalibrates."""
    from napari_plugin import _segment
    from napari_plugin._common import layer_pixel_size_um
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setattr(_segment, "start_warm_up", lambda: None)
    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((64, 64), np.uint8), name="steel", scale=(0.3, 0.3), units=("um", "um"))
    seg = SegmentWidget(viewer)
    seg._image.value = img
    assert seg._pixel.value == pytest.approx(0.3)
    img.scale = (0.5, 0.5)
    assert seg._pixel.value == pytest.approx(0.5) == layer_pixel_size_um(img)
    seg._pixel.value = 0.3
    assert layer_pixel_size_um(img) == pytest.approx(0.3)
    other = viewer.add_image(np.zeros((64, 64), np.uint8), name="other", scale=(2.0, 2.0), units=("um", "um"))
    seg._image.value = other
    img.scale = (0.7, 0.7)  # the image no longer picked: the box stays with the picked one
    assert seg._pixel.value == pytest.approx(2.0)


@pytest.mark.parametrize("change", ["fill", "stroke", "undo", "recalibrate"])
def test_measure_numbers_of_labels_edited_while_they_were_measured_are_not_shown(make_napari_viewer, qtbot,
                                                                                   monkeypatch, notes, change):
    """A grain erased (or a stroke, an undo, a new pixel size) while Measure ran: the engine had read the old
    labels, and the widget showed their grain count as the layer's (36 grains where 35 remain), with hover values
    and Export CSV of a grain that no longer exists. Those numbers are now dropped, with a warning."""
    import threading

    from micro_seg import measure

    viewer, img, grains, w = _measured_grains(make_napari_viewer, qtbot)
    grains.paint((5, 5), 77)  # something to undo
    gate, real = threading.Event(), measure.measure_grains

    def measured_before_the_edit(labels, **kwargs):
        result = real(np.array(labels), **kwargs)  # the pixels as they were when the worker read them
        gate.wait(10)
        return result

    monkeypatch.setattr(measure, "measure_grains", measured_before_the_edit)
    assert w.run() is not None
    qtbot.wait(50)
    if change == "fill":
        grains.fill((60, 80), 0)
    elif change == "stroke":
        grains.data_setitem((np.arange(120), np.full(120, 80)), 0)
    elif change == "undo":
        grains.undo()
    else:
        grains.scale = (0.25, 0.25)
    gate.set()
    wait_idle(qtbot, w)
    word = "recalibrated" if change == "recalibrate" else "edited"
    assert _cleared(w, grains) and w.export_csv() is None
    assert any(f"'img grains' was {word} while it was measured" in m for m in _messages(notes, "warning"))
    monkeypatch.setattr(measure, "measure_grains", real)
    w.run()  # measured again: the numbers of the labels as they are now
    wait_idle(qtbot, w)
    assert w.summary["n_grains"] == len(np.setdiff1d(np.unique(grains.data), [0]))
    assert w.summary["pixel_size_um"] == pytest.approx(0.25 if change == "recalibrate" else 0.5)


def test_segment_and_annotate_layers_of_a_nanometre_image_keep_its_units(make_napari_viewer, qtbot, tmp_path,
                                                                         monkeypatch, notes):
    """An image calibrated in nanometres (scale 250, units nm, as other readers open SEM / TEM files): its result
    and annotation layers got scale 250 in *pixel* units, so napari warned of inconsistent units and dropped the
    unit from the scale bar of every layer. They now keep nm, and their pixel size is 0.25 um."""
    from _napari_helpers import tiny_model
    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._common import layer_pixel_size_um
    from napari_plugin._segment import SegmentWidget

    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path))
    model = tiny_model(tmp_path / "tiny-phases", name="tiny-phases")
    viewer = make_napari_viewer()
    field = viewer.add_image(two_phase_image((64, 64), seed=2)[0], name="field", scale=(250, 250), units=("nm", "nm"))
    widget = SegmentWidget(viewer)
    widget.select_model(str(model))
    widget._image.value = field
    assert widget._pixel.value == pytest.approx(0.25)
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    ann = AnnotateWidget(viewer)
    ann._image.value = field
    made = [viewer.layers["field classes"], viewer.layers["field uncertainty"], ann.new_annotation_layer()]
    for layer in made:
        assert [str(u) for u in layer.units] == ["nanometer", "nanometer"] and tuple(layer.scale) == (250, 250)
        assert layer_pixel_size_um(layer) == pytest.approx(0.25)
    assert not any("Inconsistent units" in m for m in _messages(notes))


def test_saving_the_labels_of_an_sem_image_leaves_its_data_bar_out(make_napari_viewer, qtbot, tmp_path):
    """A Segment result of an SEM image is padded with 0 over the data bar, which Measure leaves out. File > Save
    wrote those rows too, so `micro-seg measure` (or napari, reopened) took them for background: G 9.39 instead of
    9.65 here. The file now holds the rows above the bar, as `micro-seg segment` writes them, and measures the same."""
    import json
    import subprocess
    import sys

    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._writer import write_labels_layer

    grains = voronoi_labels((200, 260), n_grains=80, seed=2)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.pad(grains, ((0, 40), (0, 0))), name="sem grains", scale=(0.5, 0.5),
                              units=("um", "um"), metadata={"micro_seg": {"kind": "grains", "databar_rows": 40}})
    meas = MeasureWidget(viewer)
    meas._labels.value = layer
    meas.run()
    wait_idle(qtbot, meas)
    out = write_labels_layer(str(tmp_path / "sem_labels.tif"), layer.data, layer._get_state())[0]
    cli = subprocess.run([sys.executable, "-m", "micro_seg", "measure", "grains", out, "--json"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    got = json.loads(cli.stdout)
    for key in ("n_grains", "G_planimetric", "G_intercept", "grains_per_mm2", "pixel_size_um"):
        assert got[key] == pytest.approx(meas.summary[key]), key


def test_train_widget_refuses_the_name_of_a_shipped_or_other_model(make_napari_viewer, tmp_path, monkeypatch, notes):
    """Fine-tuning grain-boundaries under the name 'grain-boundaries' saved a user model that hid the shipped one in
    every model list and in every `micro-seg ... --model grain-boundaries` (user models come first), without a word;
    a name taken in a MICRO_SEG_MODELS folder hid the new model instead. Both are refused before training; a model
    of one's own is still replaced (with a note)."""
    from _napari_helpers import tiny_model

    from micro_seg.registry import list_models, resolve_model, user_models_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path / "lab-models"))
    tiny_model(tmp_path / "lab-models" / "lab-steel", name="lab-steel")
    tiny_model(user_models_dir() / "mine", name="mine")
    shipped = {card.name for card in list_models() if "lab-models" not in card.extra["folder"]} - {"mine"}
    assert "grain-boundaries" in shipped
    viewer = make_napari_viewer()
    train = _train_widget_on_two_phases(viewer)
    monkeypatch.setattr(train._runner, "start", lambda *a, **k: "started")  # no training: only what is refused
    for name, where in (("grain-boundaries", str(resolve_model("grain-boundaries"))),
                        ("lab-steel", str(tmp_path / "lab-models" / "lab-steel"))):
        train._name.value = name
        assert train.train() is None
        assert any(f"'{name}' is the name of another model ({where})" in m for m in _messages(notes, "warning"))
    train._name.value = "mine"
    assert train.train() == "started"
    mine = user_models_dir() / "mine"
    assert any("A model called 'mine' exists" in m and f"kept in {mine / 'previous'}" in m
               for m in _messages(notes, "info"))


def test_reader_tells_to_re_export_only_a_broken_file(tmp_path, monkeypatch, notes):
    """Every file the reader could not open got "check the file is a complete micrograph (re-export it)", also a
    sound file over the pixel limit (whose fix is to raise MICRO_SEG_MAX_PIXELS) or one with NaN pixels."""
    import tifffile

    from napari_plugin._reader import read_paths

    tifffile.imwrite(tmp_path / "large.tif", np.zeros((64, 80), np.uint8))
    nan = np.ones((8, 8), np.float32)
    nan[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 10)
    monkeypatch.setenv("MICRO_SEG_MAX_PIXELS", "1000")
    for name in ("large.tif", "nan.tif", "broken.tif"):
        assert read_paths(str(tmp_path / name)) == [(None,)]
    errors = _messages(notes, "error")
    large, nan_msg, broken = (next(m for m in errors if m.startswith(f"Cannot open {n}")) for n in
                              ("large.tif", "nan.tif", "broken.tif"))
    assert "MICRO_SEG_MAX_PIXELS" in large and "re-export" not in large
    assert "not finite" in nan_msg and "re-export" not in nan_msg
    assert "re-export it if needed" in broken


def test_layers_of_an_image_with_an_offset_lie_over_it(make_napari_viewer, qtbot):
    """An image placed with an offset (translate: a stage position from another reader, or set in the console): its
    annotation layer lay at the origin, so strokes labelled other pixels than the ones painted over; clicking a
    table row and 'Next uncertain region' centred the view beside the object, by the offset."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._measure import MeasureWidget

    viewer = make_napari_viewer()
    offset, scale = (100.0, 40.0), (0.5, 0.5)
    img = viewer.add_image(np.zeros((120, 160), np.uint8), name="img", scale=scale, translate=offset)
    ann = AnnotateWidget(viewer)
    ann._image.value = img
    layer = ann.new_annotation_layer()
    assert tuple(layer.translate) == offset
    np.testing.assert_allclose(layer.world_to_data(img.data_to_world((30, 70))), (30, 70))  # same pixel
    unc = np.zeros((120, 160), np.float32)
    unc[64:96, 96:128] = 1.0  # the one uncertain 32 x 32 window
    viewer.add_image(unc, name="img uncertainty", scale=scale, translate=offset,
                     metadata={"micro_seg": {"kind": "uncertainty"}})
    ann.reset_choices()
    ann._window.value = 32
    assert ann.next_uncertain_region() == (64, 96, 96, 128)
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], (100 + 80 * 0.5, 40 + 112 * 0.5))
    labels = voronoi_labels((120, 160), n_grains=20, seed=3)
    grains = viewer.add_labels(labels, name="img grains", scale=scale, translate=offset)
    meas = MeasureWidget(viewer)
    meas._labels.value = grains
    meas.run()
    wait_idle(qtbot, meas)
    label = meas.select_row(0)
    rr, cc = np.nonzero(labels == label)
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:],
                               (100 + rr.mean() * 0.5, 40 + cc.mean() * 0.5), atol=0.5)


def test_train_progress_follows_the_time_limit_that_ends_the_run(make_napari_viewer, tmp_path, monkeypatch):
    """With many epochs and a time limit (the usual way: the limit ends the run), the progress bar followed the
    epochs only: 0 % for the whole 5 minutes, then done. It now also follows the time spent of the limit."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    viewer = make_napari_viewer()
    train = _train_widget_on_two_phases(viewer)
    started = []
    monkeypatch.setattr(train._runner, "start", lambda *a, **k: started.append(a) or "started")
    train._name.value = "timed"
    train._epochs.value = 1000
    train._minutes.value = 2.0
    assert train.train() == "started"
    step = {"stage": "step", "epoch": 0, "epochs": 1000, "step": 4, "steps_per_epoch": 10, "loss": 0.5}
    train._on_progress({**step, "seconds": 30.0})
    assert train._progress.value == 25  # 30 s of 120 s; the epochs say 0 %
    train._on_progress({**step, "epoch": 999, "step": 9, "seconds": 60.0})
    assert train._progress.value == 100  # the epochs end first: they say so


def test_multiscale_layers_are_refused_instead_of_analysing_their_smallest_level(make_napari_viewer, qtbot, tmp_path,
                                                                                 notes):
    """A pyramid layer (OME-Zarr or a pyramidal TIFF opened by another reader): numpy sees its smallest level, but its
    scale is the full resolution's, so Measure gave grain areas 4x too small in um^2, Segment a result at half the
    image's size and Annotate a half-size annotation layer, all without a word. Each now says why it cannot."""
    from micro_seg.synth import voronoi_labels
    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._qc_widget import QCWidget
    from napari_plugin._segment import SegmentWidget
    from napari_plugin._train import TrainWidget

    viewer = make_napari_viewer()
    full = voronoi_labels((256, 256), n_grains=40, seed=1)
    grains = viewer.add_labels([full, full[::2, ::2]], name="pyramid grains", multiscale=True, scale=(0.5, 0.5))
    image = viewer.add_image([full.astype(np.uint8), full[::2, ::2].astype(np.uint8)], name="pyramid",
                             multiscale=True, scale=(0.5, 0.5))
    meas = MeasureWidget(viewer)
    meas._labels.value = grains
    assert meas.run() is None
    seg = SegmentWidget(viewer)
    seg._image.value = image
    seg._model_folder.value = str(tmp_path)  # never reached
    assert seg.run() is None
    ann = AnnotateWidget(viewer)
    ann._image.value = image
    assert ann.new_annotation_layer() is None and ann.compute_superpixels() is None
    train = TrainWidget(viewer)
    train._image.value = image
    train._annotations.value = viewer.add_labels(np.ones((256, 256), np.uint8), name="strokes",
                                                 metadata={"micro_seg": {"kind": "annotations", "classes": ["a", "b"]}})
    assert train._params() is None
    qc = QCWidget(viewer)
    qc._image.value = image
    (tmp_path / "spec.yaml").write_text("image:\n  blur: {max: 0.45}\n")
    qc._spec.value = tmp_path / "spec.yaml"
    qc.run()
    assert qc._runner.worker is None
    said = [m for m in _messages(notes) if "is a multiscale (pyramid) layer" in m]
    assert sum("'pyramid grains'" in m for m in said) == 1 and sum("'pyramid'" in m for m in said) == 5
    assert [layer.name for layer in viewer.layers] == ["pyramid grains", "pyramid", "strokes"]


def test_export_never_replaces_another_layers_measurements_without_a_word(make_napari_viewer, qtbot, tmp_path,
                                                                           notes):
    """Measure A, Export; measure B, Export (the path box unchanged): B's table silently replaced A's file. A's file
    now stays and B's goes next to it, with a warning; exporting B again updates B's file; a file picked under
    'Export to' is replaced (the file dialog asked)."""
    import pandas as pd

    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    viewer = make_napari_viewer()
    a = viewer.add_labels(voronoi_labels((96, 96), n_grains=20, seed=1), name="A")
    b = viewer.add_labels(voronoi_labels((96, 96), n_grains=40, seed=2), name="B")
    n_a, n_b = (len(np.setdiff1d(np.unique(layer.data), [0])) for layer in (a, b))
    w = MeasureWidget(viewer)
    w._csv.value = str(tmp_path / "grains.csv")
    for layer in (a, b, b):
        w._labels.value = layer
        w.run()
        wait_idle(qtbot, w)
        w.export_csv()
    assert len(pd.read_csv(tmp_path / "grains.csv")) == n_a  # A's numbers are still there
    assert len(pd.read_csv(tmp_path / "grains_2.csv")) == n_b and (tmp_path / "grains_2_summary.csv").is_file()
    assert not (tmp_path / "grains_3.csv").exists()  # B's second export updated its own file
    assert any("grains.csv holds other measurements" in m and "grains_2.csv" in m for m in _messages(notes, "warning"))
    w._csv._show_file_dialog = lambda *args, **kwargs: str(tmp_path / "grains.csv")  # the user picks it in the
    w._csv.choose_btn.changed.emit(True)  # file dialog, which asked to replace it: replaced
    w.export_csv()
    assert len(pd.read_csv(tmp_path / "grains.csv")) == n_b


def test_class_names_of_one_layer_do_not_name_the_phases_of_the_next(make_napari_viewer, qtbot, notes):
    """Measure (and QC) kept the class names of the last class map picked: a plain 0/1 mask picked next had its
    phase fractions named 'ferrite' and 'pearlite'. A layer without class names now has its fractions named by
    value."""
    from napari_plugin._measure import PHASES, MeasureWidget
    from napari_plugin._qc_widget import QCWidget

    viewer = make_napari_viewer()
    steel = np.zeros((60, 80), np.uint8)
    steel[:, 20:] = 1
    classes = viewer.add_labels(steel, name="steel classes",
                                metadata={"micro_seg": {"kind": "classes", "classes": ["ferrite", "pearlite"]}})
    mask = np.zeros((60, 80), np.uint8)
    mask[:15] = 1  # 25 % of something the user knows
    plain = viewer.add_labels(mask, name="my mask")
    meas, qc = MeasureWidget(viewer), QCWidget(viewer)
    meas._labels.value, qc._labels.value = classes, classes
    assert meas._names.value == qc._names.value == "ferrite, pearlite"
    meas._labels.value, qc._labels.value = plain, plain
    assert meas._names.value == qc._names.value == ""
    assert meas._kind.value == PHASES
    meas.run()
    wait_idle(qtbot, meas)
    assert meas.summary["phase_fractions"] == pytest.approx({"0": 0.75, "1": 0.25})


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_train_widget_refuses_a_model_name_that_is_not_a_folder_of_its_own(make_napari_viewer, tmp_path, monkeypatch,
                                                                             notes, name):
    """'.' passed the name check: the model was written into the user models folder itself (which then reads as one
    model and hides every other), '..' beside it, '.hidden' as a hidden folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    viewer = make_napari_viewer()
    train = _train_widget_on_two_phases(viewer)
    monkeypatch.setattr(train._runner, "start", lambda *a, **k: "started")
    train._name.value = name
    assert train.train() is None
    assert any("Type a model name" in m for m in _messages(notes, "warning"))


def _strokes_painted_on_field1(viewer):
    """Two fields of one size, 'field1' and 'field2', and an Annotate widget whose strokes (the true classes) were
    painted on field1: ``(field1, field2, annotate widget, strokes layer)``."""
    from napari_plugin._annotate import AnnotateWidget

    (one, truth), (two, _) = two_phase_image((64, 64), seed=1), two_phase_image((64, 64), seed=2)
    field1, field2 = viewer.add_image(one, name="field1"), viewer.add_image(two, name="field2")
    ann = AnnotateWidget(viewer)
    ann._image.value = field1
    ann._classes.value = "matrix, particle"
    strokes = ann.new_annotation_layer()
    strokes.data = np.where(truth, 2, 1).astype(np.uint8)
    return field1, field2, ann, strokes


def test_train_refuses_the_annotations_of_another_image_of_the_same_size(make_napari_viewer, tmp_path, monkeypatch,
                                                                         notes):
    """Fields of one size (the usual case): with 'field2' under Image and the strokes made on 'field1' under
    Annotations, Train trained the pixels of field2 with the classes painted on field1, silently. Refused now,
    naming the image the annotations belong to."""
    from napari_plugin._train import TrainWidget

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    viewer = make_napari_viewer()
    field1, field2, ann, strokes = _strokes_painted_on_field1(viewer)
    train = TrainWidget(viewer)
    monkeypatch.setattr(train._runner, "start", lambda *a, **k: "started")
    train._annotations.value = strokes
    train._image.value = field2
    assert train.train() is None
    assert any("'field1 annotations' was made for 'field1', not 'field2'" in m and "pick 'field1' under Image" in m
               for m in _messages(notes, "warning"))
    train._image.value = field1
    assert train.train() == "started"


def test_save_pair_refuses_the_annotations_of_another_image_of_the_same_size(make_napari_viewer, tmp_path, notes):
    """Annotate's Save wrote field2's pixels with the strokes painted on field1 (same size) as a training pair."""
    viewer = make_napari_viewer()
    field1, field2, ann, strokes = _strokes_painted_on_field1(viewer)
    ann._folder.value = str(tmp_path / "training")
    ann._image.value = field2
    assert ann.save_pair() is None and not (tmp_path / "training").exists()
    assert any("made for 'field1', not 'field2'" in m and "nothing was saved" in m for m in _messages(notes, "error"))
    ann._image.value = field1
    assert ann.save_pair() is not None


def test_start_from_prediction_refuses_the_prediction_of_another_image_of_the_same_size(make_napari_viewer, notes):
    """'Start from prediction' with field2 under Image and field1's Segment result under Prediction (same size)
    filled field2's annotations with field1's classes."""
    from napari_plugin._annotate import AnnotateWidget

    viewer = make_napari_viewer()
    field1 = viewer.add_image(np.zeros((32, 32), np.uint8), name="field1")
    field2 = viewer.add_image(np.zeros((32, 32), np.uint8), name="field2")
    classes = np.zeros((32, 32), np.uint8)
    classes[:, 16:] = 1
    pred = viewer.add_labels(classes, name="field1 classes", metadata={"micro_seg": {
        "kind": "classes", "classes": ["matrix", "particle"], "image": "field1"}})
    ann = AnnotateWidget(viewer)
    ann._image.value, ann._prediction.value = field2, pred
    ann.start_from_prediction()
    assert ann._annotations.value is None and len(viewer.layers) == 3
    assert any("'field1 classes' is a prediction of 'field1', not 'field2'" in m for m in _messages(notes, "error"))
    ann._image.value = field1
    ann.start_from_prediction()
    np.testing.assert_array_equal(ann._annotations.value.data, classes + 1)


def test_segment_again_after_calibrating_in_the_console_gives_the_results_its_unit(make_napari_viewer, qtbot,
                                                                                   tmp_path, monkeypatch, notes):
    """Segment, then ``img.scale = (0.5, 0.5); img.units = ("um", "um")`` in the console, then Segment again: the
    result layers, updated in place, took the new scale but kept 'pixel' units (napari's inconsistent-units warning,
    the scale bar without its unit)."""
    viewer, widget, field = _segment_widget_on_a_field(make_napari_viewer, tmp_path, monkeypatch)
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    field.scale, field.units = (0.5, 0.5), ("um", "um")
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    for name in ("field classes", "field uncertainty"):
        layer = viewer.layers[name]
        assert tuple(layer.scale) == (0.5, 0.5) and [str(u) for u in layer.units] == ["micrometer", "micrometer"]


def test_grain_labels_micro_seg_wrote_open_as_labels_and_stay_instances_when_saved_again(make_napari_viewer, qtbot,
                                                                                          tmp_path):
    """segment's grain labels (and File > Save of a grain layer) record 'instances' so that micro-seg train refuses
    them; the reader took that record for 'not labels' and opened them as an Image (Measure does not list it), and
    a reopened layer saved again lost the record (micro-seg train then read each grain number as a class)."""
    from micro_seg.io import labels_are_instances, write_labels
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import GRAINS, MeasureWidget
    from napari_plugin._writer import write_labels_layer

    grains = voronoi_labels((80, 100), n_grains=30, seed=5)
    seg = write_labels(tmp_path / "field_labels.tif", grains, pixel_size_um=0.5, instances=True)  # as segment does
    viewer = make_napari_viewer()
    layers = viewer.open(str(seg), plugin="micro-seg")
    assert [type(layer).__name__ for layer in layers] == ["Labels"]
    layer = layers[0]
    np.testing.assert_array_equal(layer.data, grains)
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5))
    meas = MeasureWidget(viewer)
    assert meas._labels.value is layer and meas._kind.value == GRAINS
    meas.run()
    wait_idle(qtbot, meas)
    assert meas.summary["n_grains"] == int(grains.max())
    out = write_labels_layer(str(tmp_path / "edited.tif"), layer.data, layer._get_state())[0]
    assert labels_are_instances(out)


def test_annotations_still_belong_to_their_image_reopened_from_disk(make_napari_viewer, tmp_path, notes):
    """The image closed and opened again (same file, same name): its annotation layer recorded the id of the closed
    layer, so Save and Train refused the user's strokes ("made for 'field1', not 'field1'"), with no way to save them.
    Another image of that size is still refused."""
    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._train import TrainWidget

    viewer = make_napari_viewer()
    (one, truth), (two, _) = two_phase_image((64, 64), seed=1), two_phase_image((64, 64), seed=2)
    field1 = viewer.add_image(one, name="field1")
    ann = AnnotateWidget(viewer)
    ann._image.value = field1
    ann._classes.value = "matrix, particle"
    strokes = ann.new_annotation_layer()
    strokes.data = np.where(truth, 2, 1).astype(np.uint8)
    viewer.layers.remove(field1)
    again = viewer.add_image(one, name="field1")  # File > Open of the same file
    viewer.add_image(two, name="field2")
    ann._image.value, ann._annotations.value = again, strokes
    ann._folder.value = str(tmp_path / "training")
    assert ann.save_pair() is not None, _messages(notes)
    train = TrainWidget(viewer)
    train._image.value, train._annotations.value = again, strokes
    train._name.value = "my-steel"
    assert train._params() is not None, _messages(notes)
    train._image.value = viewer.layers["field2"]
    assert train._params() is None
    assert any("made for 'field1', not 'field2'" in m for m in _messages(notes, "warning"))


def test_export_after_a_cancelled_file_dialog_keeps_another_layers_file(make_napari_viewer, qtbot, tmp_path, notes):
    """Export A; measure B; 'Choose' under 'Export to', then Cancel; Export: the cancelled dialog counted as picking
    the file shown, so B's table replaced A's file without a word. Now it goes to grains_2.csv, as without the dialog;
    a file the dialog returns is still replaced."""
    import pandas as pd

    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    viewer = make_napari_viewer()
    a = viewer.add_labels(voronoi_labels((96, 96), n_grains=20, seed=1), name="A")
    b = viewer.add_labels(voronoi_labels((96, 96), n_grains=40, seed=2), name="B")
    n_a, n_b = (len(np.setdiff1d(np.unique(layer.data), [0])) for layer in (a, b))
    w = MeasureWidget(viewer)
    w._csv.value = str(tmp_path / "grains.csv")
    for layer, dialog in ((a, None), (b, "")):  # "": the dialog cancelled
        w._labels.value = layer
        w.run()
        wait_idle(qtbot, w)
        if dialog is not None:
            w._csv._show_file_dialog = lambda *args, **kwargs: dialog
            w._csv.choose_btn.changed.emit(True)
        w.export_csv()
    assert len(pd.read_csv(tmp_path / "grains.csv")) == n_a
    assert len(pd.read_csv(tmp_path / "grains_2.csv")) == n_b
    assert any("grains.csv holds other measurements" in m for m in _messages(notes, "warning"))
    w._csv._show_file_dialog = lambda *args, **kwargs: str(tmp_path / "grains.csv")  # picked: replaced
    w._csv.choose_btn.changed.emit(True)
    w.export_csv()
    assert len(pd.read_csv(tmp_path / "grains.csv")) == n_b


def test_start_from_a_reopened_prediction_of_an_sem_image_with_a_data_bar(make_napari_viewer, tmp_path, notes):
    """segment (and File > Save) write the labels of the rows above an SEM data bar; opened again (a Labels layer
    now) they are the prediction of that image, but 'Start from prediction' refused them as 'not a prediction of'
    the image ('segment this image first'). They now fill the rows above the bar; the bar rows stay unlabelled."""
    from micro_seg.io import write_labels
    from napari_plugin._annotate import AnnotateWidget

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((60, 80), np.uint8), name="sem",
                             metadata={"micro_seg": {"databar_rows": 12}})
    classes = np.zeros((48, 80), np.uint8)
    classes[:, 40:] = 1
    path = write_labels(tmp_path / "sem_labels.tif", classes, classes=["matrix", "particle"])  # as segment does
    (pred,) = viewer.open(str(path), plugin="micro-seg")
    ann = AnnotateWidget(viewer)
    ann._image.value, ann._prediction.value = image, pred
    ann.start_from_prediction()
    assert not _messages(notes, "error")
    out = np.asarray(ann._annotations.value.data)
    assert out.shape == (60, 80)
    np.testing.assert_array_equal(out[:48], classes + 1)
    assert not out[48:].any()


def test_save_of_a_multiscale_labels_layer_writes_its_full_resolution(tmp_path):
    """File > Save of a pyramid Labels layer (OME-Zarr opened by another reader) wrote its smallest level with the
    full resolution's pixel size: a 32 x 32 file at 0.5 um/px for a 64 x 64 layer, every area 4x too small."""
    from napari.layers import Labels

    from micro_seg.io import read_labels
    from napari_plugin._writer import write_labels_layer

    full = np.zeros((64, 64), np.uint8)
    full[:, 32:] = 1  # half the field, by construction
    layer = Labels([full, full[::2, ::2]], multiscale=True, scale=(0.5, 0.5), units=("um", "um"), name="pyramid")
    out = write_labels_layer(str(tmp_path / "pyramid.tif"), layer.data, layer._get_state())[0]
    labels, px = read_labels(out)
    np.testing.assert_array_equal(labels, full)
    assert px == pytest.approx(0.5)


def test_export_of_a_new_layer_keeps_the_file_of_a_closed_one(make_napari_viewer, qtbot, tmp_path, notes,
                                                               monkeypatch):
    """Export remembered whose numbers a file holds by id(layer); Python gives a closed layer's id to a layer made
    later, and that layer's export then replaced the closed one's file without a word. The reuse is made certain
    here (every id() in the widget's module equal)."""
    import pandas as pd

    import napari_plugin._measure as measure_module
    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    monkeypatch.setattr(measure_module, "id", lambda obj: 1, raising=False)
    viewer = make_napari_viewer()
    a = viewer.add_labels(voronoi_labels((96, 96), n_grains=20, seed=1), name="A")
    n_a = len(np.setdiff1d(np.unique(a.data), [0]))
    w = MeasureWidget(viewer)
    w._csv.value = str(tmp_path / "grains.csv")
    w._labels.value = a
    w.run()
    wait_idle(qtbot, w)
    w.export_csv()
    viewer.layers.remove(a)
    b = viewer.add_labels(voronoi_labels((96, 96), n_grains=40, seed=2), name="B")
    n_b = len(np.setdiff1d(np.unique(b.data), [0]))
    w._labels.value = b
    w.run()
    wait_idle(qtbot, w)
    w.export_csv()
    assert len(pd.read_csv(tmp_path / "grains.csv")) == n_a
    assert len(pd.read_csv(tmp_path / "grains_2.csv")) == n_b
    w.export_csv()  # B again: its own file, updated
    assert not (tmp_path / "grains_3.csv").exists()


def test_the_console_line_for_a_multiscale_layer_gives_a_layer_micro_seg_measures_calibrated(make_napari_viewer,
                                                                                             qtbot, notes):
    """The multiscale refusal said to run viewer.add_image(layer.data[0], scale=layer.scale): for a Labels pyramid
    that made an Image layer, which Measure does not list, and without the layer's units its scale was no pixel
    size (measured in pixels). The line it gives now, run as said, gives a layer Measure measures in um."""
    import napari
    import napari.layers
    import re

    from micro_seg.synth import voronoi_labels
    from napari_plugin._measure import MeasureWidget

    viewer = make_napari_viewer()
    full = voronoi_labels((128, 128), n_grains=30, seed=1)
    viewer.add_labels([full, full[::2, ::2]], name="pyramid grains", multiscale=True, scale=(0.5, 0.5),
                      units=("um", "um"))
    meas = MeasureWidget(viewer)
    assert meas.run() is None
    (said,) = [m for m in _messages(notes) if "is a multiscale (pyramid) layer" in m]
    line = re.search(r"\(layer = (.*) in the console\)", said).group(1)
    exec("layer = " + line, {"viewer": viewer, "napari": napari})
    added = viewer.layers[-1]
    assert isinstance(added, napari.layers.Labels) and added.data.shape == (128, 128)
    meas.reset_choices()
    meas._labels.value = added
    assert meas._pixel.value == pytest.approx(0.5)
    meas.run()
    wait_idle(qtbot, meas)
    assert meas.summary["n_grains"] == int(full.max())
