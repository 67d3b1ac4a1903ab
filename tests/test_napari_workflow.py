"""End-to-end GUI tests: segment -> correct -> train -> segment again -> measure.

Run under a display (pytest-xvfb starts Xvfb).  Uses tiny random-init models
made with ``registry.save_model`` so the whole file stays fast on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from _napari_helpers import tiny_model, two_phase_image, wait_idle  # noqa: E402


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """Isolate the user model folder (trained models go there) from the real one."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


def test_segment_correct_train_measure(make_napari_viewer, qtbot, tmp_path, user_models):
    import torch

    from micro_seg.registry import load_card, user_models_dir
    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._measure import PHASES, MeasureWidget
    from napari_plugin._segment import SegmentWidget
    from napari_plugin._train import TrainWidget

    torch.set_num_threads(1)
    folder = tiny_model(user_models / "tiny")
    viewer = make_napari_viewer()
    image, truth = two_phase_image((96, 96), seed=1)
    img_layer = viewer.add_image(image, name="phases", scale=(0.25, 0.25),
                                 metadata={"micro_seg": {"pixel_size_um": 0.25, "calibration_source": "user"}})
    seg, ann, train, meas = (SegmentWidget(viewer), AnnotateWidget(viewer), TrainWidget(viewer), MeasureWidget(viewer))
    for w in (seg, ann, train, meas):
        viewer.window.add_dock_widget(w)

    # 1. segment with the untrained model: a class-label layer and an uncertainty layer appear
    seg.select_model(str(folder))
    assert seg._model.value == str(folder)
    assert seg._pixel.value == pytest.approx(0.25)
    assert seg.run() is not None
    wait_idle(qtbot, seg)
    classes_layer = viewer.layers["phases classes"]
    unc_layer = viewer.layers["phases uncertainty"]
    assert classes_layer.data.shape == image.shape
    assert tuple(classes_layer.scale) == (0.25, 0.25)
    assert 0.0 <= float(unc_layer.data.min()) and float(unc_layer.data.max()) <= 1.0

    # 2. correct: start from the prediction, then fix it with scribbles from the truth
    ann._image.value = img_layer
    ann._prediction.value = classes_layer
    ann.start_from_prediction()
    ann_layer = ann._annotations.value
    assert ann_layer is not None and ann._classes.value == "matrix, particle"
    np.testing.assert_array_equal(ann_layer.data, classes_layer.data + 1)
    corrected = np.zeros_like(ann_layer.data)
    corrected[::3, :] = np.where(truth[::3, :], 2, 1)  # a correction stroke on every third row
    ann_layer.data = corrected
    # the most uncertain un-annotated region is found and framed
    assert ann.next_uncertain_region() is not None

    # 3. train on the corrected annotations: a new model appears in the segment picker
    train._image.value = img_layer
    train._annotations.value = ann_layer
    train._name.value = "corrected"
    train._material.value = "two-phase test pattern"
    train._epochs.value = 6
    train._patch.value = 64
    assert train.train(arch_kwargs={"widths": [8, 16]}) is not None
    wait_idle(qtbot, train, timeout=120_000)
    assert train.trained is not None
    new_folder = user_models_dir() / "corrected"
    assert (new_folder / "card.yaml").is_file()
    assert seg._model.value == str(new_folder)  # picked at once
    assert load_card(new_folder).material == "two-phase test pattern"
    assert "two-phase test pattern" in seg._model_info.value  # shown when the model is picked
    assert train._plot.losses and train._plot.losses[-1] < train._plot.losses[0]

    # 4. segment again with the trained model and measure the phase fractions
    seg.run()
    wait_idle(qtbot, seg)
    pred = viewer.layers["phases classes"].data
    assert (pred == truth.astype(int)).mean() > 0.95
    meas._labels.value = viewer.layers["phases classes"]
    assert meas._kind.value == PHASES
    meas.run()
    wait_idle(qtbot, meas)
    fractions = meas.summary["phase_fractions"]
    assert fractions["particle"] == pytest.approx(truth.mean(), abs=0.03)
    assert fractions["matrix"] + fractions["particle"] == pytest.approx(1.0, abs=1e-6)


def test_grain_model_gives_instances_then_measure(make_napari_viewer, qtbot, user_models):
    """A grain model's result is a grain-instance layer (plus its class map) that Measure reads as grains."""
    from napari_plugin._measure import GRAINS, MeasureWidget
    from napari_plugin._segment import SegmentWidget

    folder = tiny_model(user_models / "tiny-grains", classes=("grain", "boundary"), task="grains", name="tiny-grains")
    viewer = make_napari_viewer()
    image, _ = two_phase_image((96, 128), seed=5)
    viewer.add_image(image, name="g", scale=(0.5, 0.5), metadata={"micro_seg": {"pixel_size_um": 0.5}})
    seg, meas = SegmentWidget(viewer), MeasureWidget(viewer)
    seg.select_model(str(folder))
    seg.run()
    wait_idle(qtbot, seg)
    layer = viewer.layers["g grains"]
    ms = layer.metadata["micro_seg"]
    assert ms["kind"] == "grains" and ms["classes"] == ["grain", "boundary"]
    assert ms["class_labels"].shape == image.shape and set(np.unique(ms["class_labels"])) <= {0, 1}
    n = len(np.setdiff1d(np.unique(layer.data), [0]))
    meas.reset_choices()
    meas._labels.value = layer
    assert meas._kind.value == GRAINS
    meas.run()
    wait_idle(qtbot, meas)
    assert meas.summary["n_grains"] == n


def test_cancel_training_saves_nothing(make_napari_viewer, qtbot, user_models):
    from micro_seg.registry import user_models_dir
    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._train import TrainWidget

    viewer = make_napari_viewer()
    image, truth = two_phase_image((64, 64), seed=6)
    img = viewer.add_image(image, name="c")
    ann_w = AnnotateWidget(viewer)
    ann_w._image.value = img
    ann_w._classes.value = "matrix, particle:#D55E00"
    ann = ann_w.new_annotation_layer()
    assert np.ravel(ann.colormap.map(2))[:3] == pytest.approx((0xD5 / 255, 0x5E / 255, 0.0), abs=1e-3)  # user colour kept
    ann.data = np.where(truth, 2, 1).astype(np.uint8)
    w = TrainWidget(viewer)
    w.reset_choices()
    w._image.value, w._annotations.value = img, ann
    w._name.value = "never-finished"
    w._epochs.value = 500
    w._patch.value = 32
    assert w.train(arch_kwargs={"widths": [4, 8]}) is not None
    qtbot.waitUntil(lambda: len(w._plot.losses) >= 1, timeout=60_000)
    w._cancel_btn.changed.emit(True)  # the user presses Cancel
    wait_idle(qtbot, w)
    assert w.trained is None and w._status.value == "Cancelled"
    assert not (user_models_dir() / "never-finished").exists()
    assert w._train_btn.enabled and not w._cancel_btn.enabled


def test_train_job_makes_grain_model_from_boundary_class(tmp_path):
    """Annotations with a 'boundary' class train a grain model (results become grain instances)."""
    from micro_seg.registry import load_card
    from napari_plugin._train import TrainParams, train_job

    img = np.zeros((48, 48), np.uint8)
    img[:, 22:26] = 200
    lab = np.zeros((48, 48), np.uint8)
    lab[:, 22:26] = 2
    lab[:, :10] = 1
    params = TrainParams(classes=("grain", "boundary"), out_dir=str(tmp_path), name="gb", images=(img,),
                         labels=(lab,), epochs=1, patch_size=32, batch_size=2, time_limit_s=None,
                         arch_kwargs={"widths": [4, 8]})
    import threading

    gen = train_job(params, threading.Event())
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        folder, card, history = stop.value
    assert card.task == "grains" and load_card(folder).task == "grains"
    assert [e["stage"] for e in events if e.get("stage") == "epoch"] == ["epoch"]


def _run_train_job(params):
    """Drive the Train widget's worker generator to the end; returns ``(folder, card, history)``."""
    import threading

    from napari_plugin._train import train_job

    gen = train_job(params, threading.Event())
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_train_job_input_scale_reaches_the_card(tmp_path):
    """The Train widget's input scale (and augmentation set): the saved model works at half size and still
    segments full size."""
    from micro_seg.inference import predict
    from micro_seg.registry import load_model
    from napari_plugin._train import TrainParams

    image, truth = two_phase_image((96, 96), seed=3)
    params = TrainParams(classes=("matrix", "particle"), out_dir=str(tmp_path), name="half", images=(image,),
                         labels=(np.where(truth, 2, 1).astype(np.uint8),), epochs=1, patch_size=32, batch_size=2,
                         time_limit_s=None, arch_kwargs={"widths": [4, 8]}, input_scale=0.5,
                         augment="geometric", keep_orientation=True)
    folder, card, _ = _run_train_job(params)
    model = load_model(folder)
    assert card.input_scale == 0.5 and model.card.input_scale == 0.5
    aug = card.extra["training"]["augment"]  # the widget's augmentation choice reaches the engine
    assert aug["enabled"] and not aug["rotate90"] and aug["p_noise"] == 0
    assert predict(image, model).labels.shape == (96, 96)


def test_train_job_fine_tune_with_pseudo_labels(tmp_path):
    """Fine-tuning from the widget keeps the base model's sure answers: the card records the threshold."""
    from napari_plugin._train import TrainParams

    base = tiny_model(tmp_path / "base")
    image, truth = two_phase_image((64, 64), seed=4)
    lab = np.zeros((64, 64), np.uint8)
    lab[:8] = np.where(truth[:8], 2, 1)
    params = TrainParams(classes=("matrix", "particle"), out_dir=str(tmp_path), name="ft", images=(image,),
                         labels=(lab,), epochs=1, patch_size=32, batch_size=2, time_limit_s=None,
                         base=str(base), pseudo_label_threshold=0.5)
    _, card, _ = _run_train_job(params)
    assert card.extra["training"]["pseudo_label_threshold"] == 0.5 and card.extra["base_model"] == "tiny"


def test_train_job_fine_tune_records_its_own_images_pixel_sizes(tmp_path):
    """A fine-tune from the widget kept its base model's pixel-size range (as the CLI did before)."""
    import yaml

    from micro_seg.registry import CARD_FILE
    from napari_plugin._train import TrainParams

    base = tiny_model(tmp_path / "base")
    card = yaml.safe_load((base / CARD_FILE).read_text())
    card["pixel_size_um_range"] = [0.4, 0.6]
    (base / CARD_FILE).write_text(yaml.safe_dump(card))
    image, truth = two_phase_image((64, 64), seed=4)
    common = dict(classes=("matrix", "particle"), out_dir=str(tmp_path), images=(image,),
                  labels=(np.where(truth, 2, 1).astype(np.uint8),), epochs=1, patch_size=32, batch_size=2,
                  time_limit_s=None, base=str(base))
    _, card, _ = _run_train_job(TrainParams(name="at005", pixel_sizes=(0.05,), **common))
    assert card.pixel_size_um_range == (0.05, 0.05)
    _, card, _ = _run_train_job(TrainParams(name="uncal", pixel_sizes=(None,), **common))
    assert card.pixel_size_um_range is None
