"""Classifier engine: training on tiny synthetic classes, calibration, OOD, Grad-CAM, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from micro_seg.classifier import (
    ClassifierConfig,
    apply_decision,
    choose_recall_threshold,
    auroc,
    build_classifier,
    classification_metrics,
    classify,
    classify_batch,
    expected_calibration_error,
    fit_temperature,
    grad_cam,
    load_class_folders,
    load_classifier,
    prepare_image,
    stratified_split,
    train_classifier,
)
from micro_seg.errors import ModelError, TrainingDataError, WeightsIntegrityError
from micro_seg.synth import boolean_disks, voronoi_labels

CLASSES = ("disks", "grains", "smooth")


def synthetic(kind: str, seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "grains":
        img = np.where(find_boundaries(voronoi_labels((size, size), n_grains=12, seed=seed)), 60.0, 180.0)
    elif kind == "disks":
        img = np.where(boolean_disks((size, size), intensity=0.004, radius=4, seed=seed), 60.0, 180.0)
    else:
        img = 120 + 400 * ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 6)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    for c, kind in enumerate(CLASSES):
        (root / kind).mkdir()
        for i in range(14):
            Image.fromarray(synthetic(kind, 100 * c + i)).save(root / kind / f"{kind}_{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("models") / "tiny-clf"
    config = ClassifierConfig(arch="mscls-s", input_size=64, epochs=15, batch_size=8, lr=5e-3, val_fraction=0.25,
                              seed=0)
    return train_classifier(data_dir, out, config=config)


def test_load_class_folders_and_split(data_dir, tmp_path):
    paths, labels, classes = load_class_folders(data_dir)
    assert classes == list(CLASSES) and len(paths) == 42 and np.bincount(labels).tolist() == [14, 14, 14]
    train, val = stratified_split(labels, 0.25, seed=0)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == 42
    assert np.bincount(labels[val]).tolist() == [4, 4, 4]  # round(14 * 0.25) = 4 per class
    (tmp_path / "only").mkdir()
    Image.fromarray(synthetic("disks", 0)).save(tmp_path / "only" / "a.png")
    with pytest.raises(TrainingDataError, match="at least 2 classes"):
        load_class_folders(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError, match="no supported images"):
        load_class_folders(tmp_path)


@pytest.mark.slow
def test_training_learns_and_card_records_metrics(trained):
    card = trained.card
    m = card.metrics
    assert card.task == "classification" and card.classes == list(CLASSES)
    assert m["accuracy"] >= 11 / 12
    assert np.array(m["confusion_matrix"]).shape == (3, 3) and np.array(m["confusion_matrix"]).sum() == 12
    assert set(m["per_class"]) == set(CLASSES) and all(v["support"] == 4 for v in m["per_class"].values())
    assert card.extra["temperature"] > 0 and card.extra["ood"]["threshold"] > 0
    assert len(card.weights_sha256) == 64
    # the calibrated NLL is never worse than the raw one on the fitting data
    assert m["nll_after_calibration"] <= m["nll_before_calibration"] + 1e-9


@pytest.mark.slow
def test_classify_new_images_and_json_shape(trained):
    model = load_classifier(trained.folder)
    hits = 0
    for c, kind in enumerate(CLASSES):
        for i in range(3):
            r = classify(synthetic(kind, 5000 + 10 * c + i), model)
            hits += r["class"] == kind
            assert set(r["probabilities"]) == set(CLASSES)
            assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert r["confidence"] == max(r["probabilities"].values())
    assert hits >= 8


@pytest.mark.slow
def test_ood_score_separates_unfamiliar_images(trained):
    model = load_classifier(trained.folder)
    familiar = classify_batch([synthetic(k, 9000 + i) for k in CLASSES for i in range(4)], model)
    # another kind of image: checkerboards and a line grating
    rows, cols = np.indices((64, 64))
    board = ((rows // 8 + cols // 8) % 2 * 200 + 20).astype(np.uint8)
    stripes = (128 + 100 * np.sin(2 * np.pi * (rows + cols) / 10)).astype(np.uint8)
    strange = [board, ((rows // 5 + cols // 5) % 2 * 150 + 50).astype(np.uint8), stripes]
    unfamiliar = classify_batch(strange, model)
    a = auroc([r["ood_score"] for r in familiar], [r["ood_score"] for r in unfamiliar])
    assert a >= 0.9
    assert unfamiliar[0]["ood"]


@pytest.mark.slow
def test_grad_cam_shape_range_and_evidence(trained):
    model = load_classifier(trained.folder)
    for seed in range(3):
        img = synthetic("smooth", seed)
        img[:, 32:] = synthetic("disks", seed + 1)[:, 32:]  # left half smooth, right half disks
        cam = grad_cam(img, model, target_class="disks")
        assert cam.shape == img.shape and cam.dtype == np.float32
        assert 0.0 <= cam.min() and cam.max() <= 1.0
        assert cam[:, 32:].mean() > cam[:, :32].mean()  # the evidence for "disks" is where the disks are
    with pytest.raises(ModelError, match="unknown"):
        grad_cam(img, model, target_class="nope")


@pytest.mark.slow
def test_tampered_weights_refused(trained, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained.folder, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        load_classifier(copy)


def test_non_classifier_card_is_refused(tmp_path):
    from micro_seg.nets import build_network
    from micro_seg.registry import ModelCard, save_model

    card = ModelCard(name="seg", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=["a", "b"])
    folder = save_model(tmp_path / "seg", build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8]), card)
    with pytest.raises(ModelError, match="not an image classifier"):
        load_classifier(folder)


def test_temperature_scaling_known_answer():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 4000)
    logits = np.eye(4)[truth] * 1.5 + rng.normal(0, 1, (4000, 4))
    # logits drawn from a calibrated model are found to need T ~ 1; sharpened x3 need T ~ 3
    t1 = fit_temperature(logits, truth)
    t3 = fit_temperature(logits * 3.0, truth)
    assert t3 / t1 == pytest.approx(3.0, rel=1e-3)
    probs = torch.softmax(torch.from_numpy(logits * 3.0) / t3, 1).numpy()
    raw = torch.softmax(torch.from_numpy(logits * 3.0), 1).numpy()
    assert expected_calibration_error(probs, truth) < expected_calibration_error(raw, truth)


def test_metrics_known_answers():
    m = classification_metrics(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["c"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["c"]["recall"] == 1.0
    assert auroc([0.1, 0.2], [0.3, 0.15]) == 0.75
    assert expected_calibration_error(np.array([[1.0, 0.0]] * 3), np.array([0, 0, 0])) == 0.0


def test_prepare_image_and_network_shapes():
    x = prepare_image(np.random.default_rng(0).integers(0, 4096, (40, 70)).astype(np.uint16), input_size=32)
    assert x.shape == (1, 32, 32) and x.dtype == np.float32
    assert prepare_image(np.zeros((20, 20, 3), np.uint8), input_size=16, in_channels=3).shape == (3, 16, 16)
    net = build_classifier("mscls-s", in_channels=1, num_classes=5).eval()
    with torch.inference_mode():
        assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 5)
    with pytest.raises(ModelError, match="available"):
        build_classifier("resnet999", in_channels=1, num_classes=2)
    # avg+max pooling: twice the features; the max sees a single bright pixel the average dilutes
    both = build_classifier("mscls-s", in_channels=1, num_classes=2, pool="avgmax").eval()
    assert both.num_features == 128 and both.ood_means.shape == (2, 128)
    with pytest.raises(ModelError, match="pool"):
        build_classifier("mscls-s", in_channels=1, num_classes=2, pool="median")


def test_recall_threshold_known_answer():
    # positives' probabilities 0.9, 0.7, 0.5, 0.3, 0.1: 80% recall needs threshold 0.3
    p_pos = np.array([0.9, 0.7, 0.5, 0.3, 0.1, 0.2, 0.05])
    probs = np.stack([p_pos, 1 - p_pos], 1)
    truth = np.array([0, 0, 0, 0, 0, 1, 1])
    d = choose_recall_threshold(probs, truth, 0, target_recall=0.8)
    assert d["threshold"] == 0.3 and d["val_recall"] == 0.8 and d["val_precision"] == 1.0
    d = choose_recall_threshold(probs, truth, 0, target_recall=1.0)
    assert d["threshold"] == 0.1 and d["val_recall"] == 1.0 and d["val_precision"] == pytest.approx(5 / 6)
    assert apply_decision(probs, 0, 0.3).tolist() == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.slow
def test_time_budget_stops_training(data_dir, tmp_path):
    import time

    torch.set_num_threads(1)
    config = ClassifierConfig(arch="mscls-s", input_size=32, epochs=10_000, batch_size=8, val_fraction=0.25,
                              max_minutes=0.05)
    t0 = time.perf_counter()
    result = train_classifier(data_dir, None, config=config)
    assert time.perf_counter() - t0 < 60
    assert 1 <= result.card.metrics["epochs_run"] < 10_000


def test_segmentation_loader_refuses_a_classifier_with_a_clear_message(trained):
    from micro_seg.registry import load_model

    with pytest.raises(ModelError, match="image classifier, not a segmentation model"):
        load_model(trained.folder)


def test_training_data_hash_follows_file_contents(tmp_path):
    """The card's training_data.sha256 hashed names, labels and sizes only: an edited image of the same size kept
    the hash."""
    from micro_seg.classifier import _files_hash

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    before = _files_hash([path], np.array([0]))
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    assert _files_hash([path], np.array([0])) != before
