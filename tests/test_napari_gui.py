"""GUI tests: sample data menu entries (with ground truth) and ``micro-seg gui``."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from _napari_helpers import wait_idle  # noqa: E402


def test_every_sample_opens_calibrated(make_napari_viewer):
    from micro_seg.resources import sample_images_dir
    from napari_plugin._sample_data import SAMPLES

    viewer = make_napari_viewer()
    for key, (name, truth, _kind) in SAMPLES.items():
        if not (sample_images_dir() / name).is_file():
            pytest.fail(f"sample {name} listed in the plugin is missing from sample_images/")
        before = len(viewer.layers)
        viewer.open_sample("micro-seg", key.replace("_", "-"))
        added = list(viewer.layers)[before:]
        assert len(added) == (2 if truth else 1), key
        image = added[0]
        px = image.metadata["micro_seg"]["pixel_size_um"]
        if px:
            assert tuple(image.scale) == pytest.approx((px, px))
        if truth:
            assert added[1].data.shape == image.data.shape[:2] and not added[1].visible


def test_sample_truth_measures_known_answers(make_napari_viewer, qtbot):
    from micro_seg.resources import sample_images_dir
    from napari_plugin._measure import GRAINS, PHASES, MeasureWidget

    truth_dir = sample_images_dir() / "truth"
    viewer = make_napari_viewer()
    meas = MeasureWidget(viewer)
    viewer.open_sample("micro-seg", "etched-twins")
    meas.reset_choices()
    meas._labels.value = viewer.layers["synthetic_etched_twins truth"]
    assert meas._kind.value == GRAINS and meas._pixel.value == pytest.approx(0.5)
    meas.run()
    wait_idle(qtbot, meas)
    n_true = json.loads((truth_dir / "synthetic_etched_twins_labels.json").read_text())["n_grains"]
    assert meas.summary["n_grains"] == n_true

    viewer.open_sample("micro-seg", "two-phase")
    meas.reset_choices()
    layer = viewer.layers["synthetic_two_phase truth"]
    meas._labels.value = layer
    assert meas._kind.value == PHASES
    meas.run()
    wait_idle(qtbot, meas)
    fractions = meas.summary["phase_fractions"]
    truth = np.asarray(layer.data)
    assert fractions[meas._names.value.split(", ")[1]] == pytest.approx((truth == 1).mean(), abs=1e-9)
    assert 0.3 < (truth == 1).mean() < 0.4


def test_gui_command_docks_widgets_and_loads_path(qtbot):
    from micro_seg.commands.gui import WIDGETS, open_viewer
    from micro_seg.resources import sample_images_dir

    path = sample_images_dir() / "synthetic_two_phase.tif"
    viewer, widgets = open_viewer(str(path), show=False)
    try:
        assert list(widgets) == [name for name, _ in WIDGETS]
        assert len(viewer.window.dock_widgets) >= len(WIDGETS)
        layer = viewer.layers["synthetic_two_phase"]
        assert tuple(layer.scale) == pytest.approx((0.25, 0.25))
        assert widgets["Segment"]._image.value is layer
        assert widgets["Segment"]._pixel.value == pytest.approx(0.25)
    finally:
        viewer.close()


def test_gui_command_databar_rows_sets_the_bar_the_widgets_leave_out(qtbot, tmp_path, monkeypatch, capsys):
    """``micro-seg gui PATH --databar-rows N``: the layer records N rows of data bar (detected: 0 here), which the
    widgets leave out; a bar that does not fit is refused before a window opens.

    No second real viewer: ``napari.Viewer`` is replaced by a stand-in that records the layer open_viewer adds, so
    the test does not register the plugin's npe2 commands again and cannot depend on test order (a second real
    viewer after ``make_napari_viewer`` tests was reported to fail with "Command 'micro-seg.get_reader' already
    registered").
    """
    import napari
    import tifffile

    import micro_seg.commands.gui as gui
    from micro_seg.cli import main
    from micro_seg.errors import InvalidImageError
    from napari_plugin._common import analysis_array, databar_rows

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (64, 80)).astype(np.uint8))

    class Dock:
        def raise_(self):
            pass

    class Window:
        def add_plugin_dock_widget(self, plugin, name, tabify=False):
            return Dock(), name

    made = []

    class Viewer:
        def __init__(self, *args, **kwargs):
            self.window, self.images = Window(), []
            made.append(self)

        def add_image(self, data, **kwargs):
            self.images.append(napari.layers.Image(data, **kwargs))  # a layer, no viewer: nothing registered

    monkeypatch.setattr(napari, "Viewer", Viewer)
    viewer, widgets = gui.open_viewer(str(path), show=False, databar_rows=12)
    assert list(widgets) == [name for name, _ in gui.WIDGETS]
    (layer,) = viewer.images
    assert databar_rows(layer) == 12 and analysis_array(layer).shape == (52, 80)
    viewer, _ = gui.open_viewer(str(path), show=False)
    assert databar_rows(viewer.images[0]) == 0 and analysis_array(viewer.images[0]).shape == (64, 80)
    made.clear()
    with pytest.raises(InvalidImageError, match="plain.tif"):
        gui.open_viewer(str(path), show=False, databar_rows=64)
    assert made == []  # refused before a window

    # the command line reaches open_viewer with the value (auto -> None = detect)
    calls = []
    monkeypatch.setattr(gui, "display_problem", lambda: None)
    monkeypatch.setattr(gui, "open_viewer", lambda p, **kw: (calls.append((p, kw)), (None, {}))[1])
    monkeypatch.setattr(napari, "run", lambda: None)
    assert main(["gui", str(path), "--databar-rows", "12"]) == 0
    assert main(["gui", str(path), "--databar-rows", "auto"]) == 0
    assert [kw["databar_rows"] for _, kw in calls] == [12, None]
    assert main(["gui", str(path), "--databar-rows", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--databar-rows" in err and "Traceback" not in err


def test_gui_command_bad_path_exits_2(capsys):
    from micro_seg.cli import main

    assert main(["gui", "no/such/micrograph.tif"]) == 2
    err = capsys.readouterr().err
    assert "micrograph.tif" in err and "not found" in err and "Traceback" not in err


def test_shipped_grain_model_on_sample_matches_truth(make_napari_viewer, qtbot):
    """Sample menu -> Segment (shipped grain-boundaries model) -> Measure: G close to the truth's G."""
    from micro_seg.registry import ModelError, resolve_model
    from napari_plugin._measure import MeasureWidget
    from napari_plugin._segment import SegmentWidget

    try:
        model = str(resolve_model("grain-boundaries"))
    except ModelError:
        pytest.skip("the shipped grain-boundaries model is not installed")
    viewer = make_napari_viewer()
    viewer.open_sample("micro-seg", "etched-twins")
    seg, meas = SegmentWidget(viewer), MeasureWidget(viewer)
    seg.select_model(model)
    seg.run()
    wait_idle(qtbot, seg, timeout=120_000)
    results = {}
    for name in ("synthetic_etched_twins grains", "synthetic_etched_twins truth"):
        meas.reset_choices()
        meas._labels.value = viewer.layers[name]
        meas.run()
        wait_idle(qtbot, meas)
        results[name] = meas.summary
    pred, truth = results["synthetic_etched_twins grains"], results["synthetic_etched_twins truth"]
    assert truth["n_grains"] == 140
    assert abs(pred["G_planimetric"] - truth["G_planimetric"]) < 0.3
    assert abs(pred["G_intercept"] - truth["G_intercept"]) < 0.3


def test_nist_sample_boundary_mask_measures_its_known_grain_size(make_napari_viewer, qtbot):
    """The NIST steel sample's hand-traced boundary mask: Measure takes it as a boundary mask (it was tagged as
    classes: phase fractions, or 1 grain) and gives the known answer, as `micro-seg measure grains --boundary`."""
    from micro_seg.measure import measure_grains_from_boundaries
    from napari_plugin._measure import GRAINS, MeasureWidget

    viewer = make_napari_viewer()
    meas = MeasureWidget(viewer)
    viewer.open_sample("micro-seg", "nist-steel")
    meas.reset_choices()
    layer = viewer.layers["nist_steel_ferrite_crop truth"]
    assert layer.metadata["micro_seg"]["kind"] == "boundaries"
    meas._labels.value = layer
    assert meas._kind.value == GRAINS and meas._boundary.value and meas._pixel.value == pytest.approx(0.2252)
    meas.run()
    wait_idle(qtbot, meas)
    s = meas.summary
    # NIST's whole micrograph gives 9.16 um, G 10.25 (benchmarks/RESULTS.md); this 400 x 512 crop of it 9.10 um
    assert s["mean_intercept_um"] == pytest.approx(9.16, rel=0.02) and s["G_intercept"] == pytest.approx(10.25, abs=0.1)
    engine = measure_grains_from_boundaries(np.asarray(layer.data) != 0, pixel_size_um=0.2252).summary
    assert s["n_grains"] == engine["n_grains"] > 50 and s["mean_intercept_um"] == pytest.approx(engine["mean_intercept_um"])



def test_gui_command_opens_a_label_file_as_labels(tmp_path, monkeypatch):
    """`micro-seg gui out/field_labels.tif` opened segment's labels as an image, which Measure does not list (File >
    Open opens them as labels); they now open as a calibrated Labels layer. (A stand-in viewer, as in the test
    above: no second real viewer registering the plugin's commands again.)"""
    import napari

    import micro_seg.commands.gui as gui
    from micro_seg.io import write_labels
    from micro_seg.synth import voronoi_labels

    class Dock:
        def raise_(self):
            pass

    class Window:
        def add_plugin_dock_widget(self, plugin, name, tabify=False):
            return Dock(), name

    class Viewer:
        def __init__(self, *args, **kwargs):
            self.window, self.layers = Window(), []

        def add_image(self, data, **kwargs):
            self.layers.append(napari.layers.Image(data, **kwargs))

        def add_labels(self, data, **kwargs):
            self.layers.append(napari.layers.Labels(data, **kwargs))

    monkeypatch.setattr(napari, "Viewer", Viewer)
    grains = voronoi_labels((64, 80), n_grains=12, seed=0)
    path = write_labels(tmp_path / "field_labels.tif", grains, pixel_size_um=0.4)
    viewer, _ = gui.open_viewer(str(path), show=False)
    (layer,) = viewer.layers
    assert type(layer).__name__ == "Labels" and layer.name == "field_labels"
    assert tuple(layer.scale) == pytest.approx((0.4, 0.4)) and str(layer.units[0]) == "micrometer"
    np.testing.assert_array_equal(layer.data, grains)
    viewer, _ = gui.open_viewer(str(path), show=False, pixel_size_um=0.25)  # --pixel-size overrides the file's
    assert tuple(viewer.layers[0].scale) == pytest.approx((0.25, 0.25))
    assert viewer.layers[0].metadata["micro_seg"]["calibration_source"] == "user"
