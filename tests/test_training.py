"""Training engine: sparse labels, determinism, resume, registry round trip, accuracy.

Tiny msnet models on 64x64 inputs keep every test to a few seconds on one core.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from micro_seg.errors import CancelledError, TrainingDataError
from micro_seg.training import (
    auto_class_weights,
    calibrate_logit_offsets,
    class_pixel_counts,
    confusion_matrix,
    patch_size_advice,
    segmentation_loss,
    segmentation_metrics,
    split_by_image,
    train_segmenter,
)

TINY = {"widths": (6, 12), "blocks": (1, 1)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stripes(seed: int = 0, size: int = 64):
    """Dark left half / bright right half with noise; dense truth 1/2 and scribbles."""
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 12, (size, size))
    img[:, size // 2 :] += 110
    truth = np.ones((size, size), np.int64)
    truth[:, size // 2 :] = 2
    scribble = np.zeros_like(truth)
    scribble[4:60, 6:10] = 1
    scribble[4:60, size - 10 : size - 6] = 2
    return np.clip(img, 0, 255).astype(np.uint8), truth, scribble


def _fit(images, labels, **kw):
    args = dict(classes=["dark", "bright"], arch="msnet", arch_kwargs=TINY, epochs=3, patch_size=32,
                batch_size=4, patches_per_epoch=8, val_fraction=0, augment=False, seed=0, num_threads=1)
    args.update(kw)
    return train_segmenter(images, labels, **args)


def _weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------- the loss


def test_unlabelled_pixels_do_not_change_loss_or_gradient():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=gen, requires_grad=True)
    labels = torch.randint(0, 4, (2, 8, 8), generator=gen)
    labels[0, 0, 0] = 0
    weights = torch.tensor([1.0, 2.0, 3.0])
    loss = segmentation_loss(logits, labels, class_weights=weights, dice_weight=0.5)
    loss.backward()
    grad = logits.grad.clone()
    unl = labels == 0
    assert torch.all(grad.permute(1, 0, 2, 3)[:, unl] == 0)
    # changing logits only where unlabelled leaves the loss unchanged
    changed = logits.detach().clone()
    changed.permute(1, 0, 2, 3)[:, unl] = 50.0
    assert torch.allclose(segmentation_loss(changed, labels, class_weights=weights, dice_weight=0.5), loss.detach())


def test_loss_matches_hand_computed_cross_entropy():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[1, 2]]])
    expected = (np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(-1.0))) / 2
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_all_unlabelled_batch_gives_zero_loss():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert segmentation_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long)).item() == 0.0


# ---------------------------------------------------------------- metrics


def test_confusion_and_metrics_known_answer():
    truth = np.array([[1, 1, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1, 0]])  # 0-based predictions
    cm = confusion_matrix(pred, truth, 2)
    assert cm.tolist() == [[1, 1], [0, 2]]
    m = segmentation_metrics(cm, ["a", "b"])
    assert m["iou"]["a"] == pytest.approx(0.5)
    assert m["iou"]["b"] == pytest.approx(2 / 3)
    assert m["mean_iou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["weighted_iou"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert m["accuracy"] == pytest.approx(0.75)


def test_auto_class_weights_favour_rare_class():
    lab = np.array([1] * 90 + [2] * 10 + [0] * 50)
    w = auto_class_weights([lab], 2)
    assert w[1] / w[0] == pytest.approx(3.0, rel=1e-5)  # sqrt(90 / 10)
    assert (w * np.array([0.9, 0.1])).sum() == pytest.approx(1.0, rel=1e-5)


def test_calibrate_logit_offsets_recovers_a_known_prior_shift():
    # truth: 1 (80%), 2 (15%), 3 (5%); noisy logits whose class-3 column is shifted down by 2
    rng = np.random.default_rng(0)
    truth = rng.choice([1, 2, 3], size=(200, 200), p=[0.8, 0.15, 0.05])
    clean = np.stack([(truth == c) * 3.0 for c in (1, 2, 3)]) + rng.normal(0, 1.0, (3, 200, 200))
    shifted = clean.copy()
    shifted[2] -= 2.0
    off, before, after = calibrate_logit_offsets([shifted], [truth], classes=["a", "b", "c"])
    off_clean, _, ideal = calibrate_logit_offsets([clean], [truth])
    # (the IoU-optimal offsets of the clean logits are not 0: IoU is not accuracy) the shift is undone
    assert off[0] == 0 and np.allclose(off - off_clean, [0.0, 0.0, 2.0], atol=0.25)
    assert after["iou"]["c"] > before["iou"]["c"] + 0.2
    assert after["mean_iou"] == pytest.approx(ideal["mean_iou"], abs=0.01)
    # unlabelled pixels (0) are ignored: hiding a third of them changes nothing essential
    sparse = truth.copy()
    sparse[:, :60] = 0
    off2, _, _ = calibrate_logit_offsets([shifted], [sparse])
    assert np.abs(off2 - off).max() <= 0.5


def test_calibrate_logit_offsets_keeps_zero_when_argmax_is_already_best():
    truth = np.array([[1, 1, 2, 2]])
    logits = np.stack([np.array([[2.0, 2, -2, -2]]), np.array([[-2.0, -2, 2, 2]])])
    off, before, after = calibrate_logit_offsets([logits], [truth])
    assert off.tolist() == [0.0, 0.0] and before["mean_iou"] == after["mean_iou"] == 1.0


def test_a_class_without_validation_pixels_keeps_offset_0_and_is_warned():
    """A class labelled only in training images (a rare defect) had its offset pushed down to -1 .. -4 by its false
    positives on the validation images, with no true pixel to weigh against them: the model then hardly called it."""
    truth = np.array([[1, 1, 1, 2, 2, 2]])
    logits = np.zeros((3, 1, 6))
    logits[0, 0, :3] = logits[1, 0, 3:] = 2.0
    logits[2, 0, 2] = 3.0  # class 3 wins one pixel of class 1; there is no class-3 pixel to validate it on
    off, _, after = calibrate_logit_offsets([logits], [truth])
    assert off.tolist() == [0.0, 0.0, 0.0] and after["iou"]["3"] == 0.0
    # the first class absent: the reference is the first class that is there, and class 1 is left where it was
    off, _, _ = calibrate_logit_offsets([logits[[2, 0, 1]]], [truth + 1])
    assert off[0] == 0.0 and off[1] == 0.0

    img, _, scribble = _stripes()
    rare = scribble.copy()
    rare[30:34, 30:34] = 3  # a third class in one image only: it stays in training (the split keeps it there)
    events = []
    _fit([img, img, img], [scribble, rare, scribble], classes=["dark", "bright", "spot"], epochs=1,
         val_fraction=0.34, progress=events.append)
    (warning,) = [w for e in events if e["stage"] == "start" for w in e["warnings"]]
    assert warning.startswith("class(es) spot have no labelled pixel in the 1 validation image(s)")


def test_split_by_image_is_whole_images_and_seeded():
    tr, va = split_by_image(10, 0.3, 1)
    assert len(va) == 3 and sorted(tr + va) == list(range(10))
    assert split_by_image(10, 0.3, 1) == (tr, va)


def test_split_by_image_stratified_by_class_keeps_a_rare_class_in_both_parts():
    # class 2 is in images 7 and 9 only; 20% validation = 2 of 10 images
    px = np.zeros((10, 2), np.int64)
    px[:, 0] = 1000
    px[[7, 9], 1] = [40, 60]
    plain = [split_by_image(10, 0.2, s)[1] for s in range(30)]
    assert any(sum(i in (7, 9) for i in va) != 1 for va in plain)  # the plain draw often gets it wrong
    for s in range(30):
        tr, va = split_by_image(10, 0.2, s, class_pixels=px)
        assert len(va) == 2 and sorted(tr + va) == list(range(10))
        assert sum(i in (7, 9) for i in va) == 1  # one image with the rare class on each side
        assert split_by_image(10, 0.2, s, class_pixels=px) == (tr, va)  # seeded
    assert class_pixel_counts([np.array([[0, 1, 2, 2]]), np.array([[1, 1, 0, 0]])], 2).tolist() == [[1, 2], [2, 0]]


# --------------------------------------------------------------- training


def test_scribbles_only_training_segments_whole_image():
    img, truth, scribble = _stripes()
    assert (scribble > 0).mean() < 0.15
    net, card, history = _fit([img], [scribble], epochs=6, lr=1e-2)
    from micro_seg.preprocess import to_network_input
    from micro_seg.training import predict_logits

    x = to_network_input(img, in_channels=1, normalisation=card.normalisation)
    pred = predict_logits(net, x).argmax(0)
    acc = (pred == truth - 1).mean()
    assert acc > 0.95, acc
    assert history[-1]["loss"] < history[0]["loss"]


def test_same_seed_identical_weights_different_seed_differs():
    img, _, scribble = _stripes()
    a = _weights(_fit([img], [scribble], augment=True).network)
    b = _weights(_fit([img], [scribble], augment=True).network)
    c = _weights(_fit([img], [scribble], augment=True, seed=1).network)
    assert _same(a, b)
    assert not _same(a, c)


def test_resume_from_checkpoint_continues_identically(tmp_path):
    img, _, scribble = _stripes()
    full = _weights(_fit([img], [scribble], epochs=4, keep="last", augment=True,
                         checkpoint_dir=tmp_path / "a").network)
    steps = {"n": 0}

    def cancel_after_two_epochs():
        steps["n"] += 1
        return steps["n"] > 4  # 2 steps per epoch: cancels at the start of epoch 3

    with pytest.raises(CancelledError):
        _fit([img], [scribble], epochs=4, keep="last", augment=True, checkpoint_dir=tmp_path / "b",
             cancel=cancel_after_two_epochs)
    resumed = _fit([img], [scribble], epochs=4, keep="last", augment=True, checkpoint_dir=tmp_path / "b", resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert _same(full, _weights(resumed.network))


def test_a_resumed_run_reports_the_time_of_the_whole_run(tmp_path):
    """After --resume the card's training seconds (and the history's) counted only the resumed part: a run that
    took an hour before it was stopped said it took a few seconds."""
    import json

    img, _, scribble = _stripes()
    ckpt = tmp_path / "ckpt"
    _fit([img], [scribble], epochs=2, checkpoint_dir=ckpt)
    record = json.loads((ckpt / "last.json").read_text())
    for i, h in enumerate(record["history"]):  # as if the first two epochs had taken an hour
        h["seconds"] = 1800.0 * (i + 1)
    (ckpt / "last.json").write_text(json.dumps(record))
    _, card, history = _fit([img], [scribble], epochs=3, checkpoint_dir=ckpt, resume=True)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert 3600 <= history[2]["seconds"] < 3660
    assert 3600 <= card.extra["training"]["seconds"] < 3660


def test_a_stop_between_checkpoint_weights_and_record_resumes_where_the_record_says(tmp_path, monkeypatch):
    """The weights of epoch 2 were written over last.safetensors before last.json said epoch 2: a run stopped in
    between resumed epoch 2 from epoch 2's weights (trained twice). Now the record names the weights it goes
    with, so the resumed run is the uninterrupted one."""
    import pathlib

    img, _, scribble = _stripes()
    _fit([img], [scribble], epochs=1, keep="last", checkpoint_dir=tmp_path / "a")
    whole = _weights(_fit([img], [scribble], epochs=2, keep="last", checkpoint_dir=tmp_path / "a",
                          resume=True).network)
    _fit([img], [scribble], epochs=1, keep="last", checkpoint_dir=tmp_path / "b")
    real_write = pathlib.Path.write_text

    def stop_at_the_record(self, *args, **kwargs):
        if self.name.startswith("last.json"):
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", stop_at_the_record)
    with pytest.raises(KeyboardInterrupt):
        _fit([img], [scribble], epochs=2, keep="last", checkpoint_dir=tmp_path / "b", resume=True)
    monkeypatch.setattr(pathlib.Path, "write_text", real_write)
    resumed = _fit([img], [scribble], epochs=2, keep="last", checkpoint_dir=tmp_path / "b", resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert _same(whole, _weights(resumed.network))


def _older_checkpoint(folder, *, best=True):
    """Turn the checkpoint in ``folder`` into the format of older micro-seg: last.safetensors / best.safetensors,
    no "files" in last.json; a best score no later epoch beats, so the best epoch stays 0."""
    import json

    meta = json.loads((folder / "last.json").read_text())
    for key, name in (("weights", "last"), ("best", "best")):
        (folder / meta["files"][key]["file"]).rename(folder / f"{name}.safetensors")
    if not best:
        (folder / "best.safetensors").unlink()
    del meta["files"]
    meta["best_score"] = 1e9
    (folder / "last.json").write_text(json.dumps(meta))


def test_resuming_an_older_checkpoint_twice_keeps_the_best_weights(tmp_path):
    """A checkpoint in the older format (best.safetensors, no "files" in last.json) lost its best weights at the
    first resumed epoch: after another stop and resume the last epoch was kept, while the card said best_epoch 0
    with epoch 0's metrics."""
    from safetensors.torch import load_file

    img, _, scribble = _stripes()
    _fit([img], [scribble], epochs=1, checkpoint_dir=tmp_path)
    best = load_file(str(tmp_path / "best-0.safetensors"))
    _older_checkpoint(tmp_path)
    _fit([img], [scribble], epochs=2, checkpoint_dir=tmp_path, resume=True)
    result = _fit([img], [scribble], epochs=3, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.card.extra["training"]["best_epoch"] == 0
    assert _same(best, _weights(result.network))


def test_an_older_checkpoint_without_best_weights_keeps_the_last_epoch_and_says_so(tmp_path):
    from safetensors.torch import load_file

    img, _, scribble = _stripes()
    _fit([img], [scribble], epochs=1, checkpoint_dir=tmp_path)
    _older_checkpoint(tmp_path, best=False)
    result = _fit([img], [scribble], epochs=2, checkpoint_dir=tmp_path, resume=True)
    assert result.card.extra["training"]["best_epoch"] == 1
    assert "best epoch 0 were not in the checkpoint" in result.card.extra["training"]["kept"]
    last = load_file(str(tmp_path / "last-1.safetensors"))
    assert _same({k[6:]: v for k, v in last.items() if k.startswith("model.")}, _weights(result.network))


def test_a_checkpoint_deletes_only_its_own_files(tmp_path):
    """Every last-*.safetensors / best-*.safetensors the record did not name was deleted, a user's
    best-unet.safetensors in the --checkpoint-dir too; temporary files left by a stop stayed."""
    img, _, scribble = _stripes()
    mine = ["best-unet.safetensors", "last-run.safetensors", "notes.tmp"]
    for name in mine:
        (tmp_path / name).write_bytes(b"user file")
    for name in ("last-7.safetensors.tmp", "best-7.safetensors.tmp", "last.json.tmp"):
        (tmp_path / name).write_bytes(b"left by a stop")
    best_epoch = _fit([img], [scribble], epochs=2, checkpoint_dir=tmp_path).card.extra["training"]["best_epoch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*mine, "last.json", "last-1.safetensors",
                                                                 f"best-{best_epoch}.safetensors"])


def test_resume_with_other_settings_is_refused(tmp_path):
    img, _, scribble = _stripes()
    _fit([img], [scribble], epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDataError, match="different settings"):
        _fit([img], [scribble], epochs=1, batch_size=2, checkpoint_dir=tmp_path, resume=True)
    # continuing with another learning rate and more epochs is allowed
    more = _fit([img], [scribble], epochs=2, lr=1e-4, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in more.history] == [0, 1]


def test_resume_on_other_data_or_another_validation_split_is_refused(tmp_path):
    """A resumed run with another --val-fraction held out images it had trained on (and its card said so
    nowhere); other pairs under the same names were taken too."""
    img, _, scribble = _stripes()
    imgs, labs = [img, img[::-1], img[:, ::-1], img.T.copy()], [scribble, scribble[::-1], scribble[:, ::-1],
                                                               scribble.T.copy()]
    _fit(imgs, labs, epochs=1, val_fraction=0.25, checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDataError, match=r"different settings \(.*the validation images\)"):
        _fit(imgs, labs, epochs=2, val_fraction=0.5, checkpoint_dir=tmp_path, resume=True)
    other = [255 - imgs[0], *imgs[1:]]
    with pytest.raises(TrainingDataError, match=r"the training images / labels"):
        _fit(other, labs, epochs=2, val_fraction=0.25, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in _fit(imgs, labs, epochs=2, val_fraction=0.25, checkpoint_dir=tmp_path,
                                     resume=True).history] == [0, 1]


def test_cancel_event_stops_training():
    img, _, scribble = _stripes()
    ev = threading.Event()
    ev.set()
    with pytest.raises(CancelledError):
        _fit([img], [scribble], cancel=ev)


def test_progress_events_and_validation_split_by_image():
    imgs, labs = [], []
    for s in range(3):
        img, truth, _ = _stripes(s)
        imgs.append(img)
        labs.append(truth)
    events = []
    net, card, history = _fit(imgs, labs, val_fraction=0.34, progress=events.append, epochs=2)
    stages = [e["stage"] for e in events]
    assert stages[0] == "start" and events[0]["n_train"] == 2 and events[0]["n_val"] == 1
    assert stages.count("epoch") == 2 and stages.count("step") == 4
    assert set(history[-1]["val"]["iou"]) == {"dark", "bright"}
    v = card.metrics["validation"]
    epoch_miou = history[card.extra["training"]["best_epoch"]]["val"]["mean_iou"]
    # the card reports the model as saved: after the validation logit offsets (never worse than argmax)
    assert v.get("before_offsets", v)["mean_iou"] == pytest.approx(epoch_miou)
    assert v["mean_iou"] >= epoch_miou


def test_an_image_without_labelled_pixels_is_never_held_out_for_validation():
    """Two images, one unlabelled: the split held out the unlabelled one, so validation mIoU was NaN every epoch
    and best_epoch -1. Now there is no validation, said in a warning, and the lowest-loss epoch is kept."""
    img, _, scribble = _stripes()
    empty = np.zeros_like(scribble)
    for seed in range(3):
        events = []
        _, card, history = _fit([img, img], [empty, scribble], val_fraction=0.5, epochs=2, seed=seed,
                                patches_per_epoch=4, progress=events.append)
        assert card.training_data["val_indices"] == [] and card.training_data["n_val_images"] == 0
        assert all("val" not in h for h in history) and card.extra["training"]["best_epoch"] in (0, 1)
        (warning,) = events[0]["warnings"]
        assert warning.startswith("no validation (only 1 of the 2 images has labelled pixels")
        assert "the epoch with the lowest training loss is kept" in warning
    # three images, one unlabelled: a labelled one validates
    _, card, history = _fit([img] * 3, [empty, scribble, scribble], val_fraction=0.34, epochs=1, patches_per_epoch=4)
    assert card.training_data["val_indices"] in ([1], [2]) and history[0]["val"]["mean_iou"] >= 0


def test_training_split_is_stratified_by_class():
    # 10 images; only images 2 and 6 have class "bright": one of them is held out, one trains
    imgs, labs = [], []
    for s in range(10):
        img, truth, _ = _stripes(s, size=32)
        if s not in (2, 6):
            truth = np.ones_like(truth)
            img[:] = img[:, :1]
        imgs.append(img)
        labs.append(truth)
    for seed in range(3):
        _, card, _ = _fit(imgs, labs, val_fraction=0.2, epochs=1, patches_per_epoch=4, seed=seed)
        val = card.training_data["val_indices"]
        assert len(val) == 2 and card.training_data["n_val_images"] == 2
        assert sum(i in (2, 6) for i in val) == 1


def test_saved_folder_loads_via_registry_and_predicts_the_same(tmp_path):
    from micro_seg.registry import load_model

    img, _, scribble = _stripes()
    net, card, _ = _fit([img], [scribble], out=tmp_path / "m", name="stripes")
    # msnet trains channels-last; the network handed back is in the usual layout again
    assert all(p.is_contiguous() for p in net.parameters())
    loaded = load_model(tmp_path / "m")
    assert loaded.card.name == "stripes" and loaded.card.classes == ["dark", "bright"]
    assert loaded.card.training_data["sha256"]
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(net(x), loaded.network(x))


def test_finetune_from_base_model_keeps_architecture(tmp_path):
    from micro_seg.registry import load_model

    img, truth, scribble = _stripes()
    _fit([img], [scribble], out=tmp_path / "base", name="base")
    net, card, _ = _fit([img], [truth], base=str(tmp_path / "base"), epochs=1, arch="ignored")
    assert card.arch == "msnet" and list(card.arch_kwargs["widths"]) == list(TINY["widths"])
    assert card.extra["base_model"] == "base"
    # new class count: the head is replaced, the rest is kept
    three = np.where(truth == 2, 3, truth)
    three[:8] = 2
    net3, card3, _ = _fit([img], [three], base=load_model(tmp_path / "base"), classes=["a", "b", "c"], epochs=1)
    assert card3.classes == ["a", "b", "c"] and net3(torch.rand(1, 1, 32, 32)).shape[1] == 3


def test_finetune_adding_a_class_keeps_the_head_rows_of_the_classes_the_base_knew(tmp_path):
    """Classes matched by name keep the base's logits-layer rows (grain/boundary stay what they were when a
    twin class is added, whatever the order); a new class starts fresh; renamed classes keep rows by position."""
    from micro_seg.registry import load_model
    from micro_seg.training import _replace_head, head_rows_to_keep

    img, truth, scribble = _stripes()
    _fit([img], [scribble], out=tmp_path / "base", name="base")
    base = load_model(tmp_path / "base")
    assert base.card.classes == ["dark", "bright"]
    net = base.network
    w, b = net.head.weight.detach().clone(), net.head.bias.detach().clone()
    keep = head_rows_to_keep(base.card.classes, ["bright", "new", "dark"])
    assert keep == [1, None, 0]
    _replace_head(net, 3, "msnet", keep=keep)
    assert net.head.out_channels == 3
    assert torch.equal(net.head.weight[0], w[1]) and torch.equal(net.head.weight[2], w[0])
    assert torch.equal(net.head.bias[0], b[1]) and torch.equal(net.head.bias[2], b[0])
    assert not torch.equal(net.head.weight[1], w[0]) and not torch.equal(net.head.weight[1], w[1])
    assert head_rows_to_keep(["grain", "boundary"], ["x", "y"]) == [0, 1]


@pytest.mark.parametrize("classes, defects", [
    (["background", "pore"], ["pore"]),                                     # crack dropped
    (["background", "pore", "crack", "inclusion"], ["pore", "crack"]),      # a class added
    (["background", "crack", "pore"], ["pore", "crack"]),                   # same count, reordered
])
def test_finetune_to_other_classes_keeps_the_base_defect_classes_still_there(classes, defects):
    """Fine-tuning a defect model to another class count made a model without defect classes: segment then
    wrote no instances and measure defects nothing."""
    from micro_seg.nets import build_network
    from micro_seg.registry import ModelCard

    img, truth, _ = _stripes()
    base_card = ModelCard(name="defects", task="semantic", arch="msnet", arch_kwargs=dict(TINY), in_channels=1,
                          classes=["background", "pore", "crack"], defect_classes=["pore", "crack"])
    torch.manual_seed(0)
    base = (build_network("msnet", in_channels=1, num_classes=3, **TINY), base_card)
    _, card, _ = _fit([img], [truth], base=base, classes=classes, epochs=1, patches_per_epoch=4)
    assert card.classes == classes and card.defect_classes == defects


def test_finetuning_never_changes_the_callers_base_model(tmp_path):
    """A loaded model given as ``base`` is copied: after a fine-tune with a new head, and after a cancelled one
    (msnet trains channels-last), the caller's network has its weights, its head and the usual layout."""
    from micro_seg.registry import load_model

    img, truth, scribble = _stripes()
    _fit([img], [scribble], out=tmp_path / "base", name="base")
    base = load_model(tmp_path / "base")
    before = _weights(base.network)
    three = np.where(truth == 2, 3, truth)
    three[:8] = 2
    tuned, _, _ = _fit([img], [three], base=base, classes=["a", "b", "c"], epochs=2)
    assert tuned is not base.network and tuned(torch.rand(1, 1, 32, 32)).shape[1] == 3
    with pytest.raises(CancelledError):
        _fit([img], [truth], base=base, epochs=3, cancel=lambda: True)
    assert _same(before, _weights(base.network))
    assert all(p.is_contiguous() for p in base.network.parameters())


def test_ensemble_of_trained_models_fine_tunes_as_one_network(tmp_path):
    """Two seeds joined by combine_models segment the stripes; fine-tuning the ensemble trains all members
    (its output is the log of the mean probability, so the cross-entropy is the ensemble's); another class
    count is refused with a clear error."""
    from micro_seg.errors import ModelError
    from micro_seg.inference import predict
    from micro_seg.registry import combine_models, load_model
    from micro_seg.training import _output_bias

    img, truth, scribble = _stripes()
    for seed in (0, 1):
        _fit([img], [scribble], out=tmp_path / f"m{seed}", name=f"m{seed}", seed=seed, epochs=6)
    ens = load_model(combine_models([tmp_path / "m0", tmp_path / "m1"], tmp_path / "ens"))
    assert np.mean(predict(img, ens).labels + 1 == truth) > 0.95
    before = _weights(ens.network)
    net, card, _ = _fit([img], [truth], base=ens, epochs=1)
    assert card.arch == "ensemble" and len(card.arch_kwargs["members"]) == 2
    changed = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith("members.0.") for k in changed) and any(k.startswith("members.1.") for k in changed)
    with pytest.raises(ModelError, match="cannot change the number of classes"):
        _fit([img], [np.where(truth == 2, 3, truth)], base=load_model(tmp_path / "ens"), classes=["a", "b", "c"])
    # the same classes under other names keep the ensemble's head (nothing to replace)
    _, renamed, _ = _fit([img], [truth], base=load_model(tmp_path / "ens"), classes=["matrix", "particle"], epochs=1)
    assert renamed.classes == ["matrix", "particle"] and renamed.arch == "ensemble"
    # the ensemble's decision offsets are its output bias: fine-tuning re-chooses them on its validation images
    # as it does a single network's last bias
    assert _output_bias(ens.network) is ens.network.offsets


@pytest.mark.parametrize(
    "labels, match",
    [
        ([np.full((64, 64), 3)], "label values must be 0"),
        ([np.ones((60, 64), np.int64)], "image is"),
        ([np.zeros((64, 64), np.int64)], "no labelled pixel"),
        ([np.ones((64, 64), np.float32)], "must be integers"),
    ],
)
def test_bad_training_data_raises(labels, match):
    img, _, _ = _stripes()
    with pytest.raises(TrainingDataError, match=match):
        _fit([img], labels)


def test_image_weights_validated_and_zero_weight_image_never_sampled():
    img, truth, _ = _stripes()
    # an all-"bright" second image with weight 0 must not influence training at all
    bright = np.full_like(img, 250)
    kw = dict(class_weights=None, rare_class_fraction=0.0)  # these look at all images' labels
    only_first = _weights(_fit([img], [truth], **kw).network)
    weighted = _weights(_fit([img, bright], [truth, np.full_like(truth, 2)], image_weights=[1.0, 0.0], **kw).network)
    assert _same(only_first, weighted)
    with pytest.raises(TrainingDataError, match="image_weights"):
        _fit([img], [truth], image_weights=[1.0, 2.0])


def test_training_folds_validation_offsets_into_the_head():
    # a rare bright spot class; a short run with large rare-class weight over-calls it, and the
    # offsets chosen on the validation image must not lower (and here raise) its validation mean IoU
    imgs, labs = [], []
    for s in range(4):
        rng = np.random.default_rng(s)
        img = rng.normal(80, 25, (64, 64))
        lab = np.ones((64, 64), np.int64)
        for r, c in rng.integers(4, 60, (3, 2)):
            img[r - 2 : r + 3, c - 2 : c + 3] += 50
            lab[r - 2 : r + 3, c - 2 : c + 3] = 2
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        labs.append(lab)
    kw = dict(val_fraction=0.25, epochs=3, class_weights=[1.0, 20.0], rare_class_fraction=0.5)
    plain = _fit(imgs, labs, calibrate=False, **kw)
    cal = _fit(imgs, labs, calibrate=True, **kw)
    off = np.array(cal.card.extra["training"]["logit_offsets"])
    assert off.shape == (2,) and off[0] == 0 and off[1] < 0  # the over-called class is pushed down
    assert "logit_offsets" not in plain.card.extra["training"]
    wp, wc = _weights(plain.network), _weights(cal.network)
    assert torch.allclose(wc["head.bias"] - wp["head.bias"], torch.from_numpy(off).float())
    assert all(torch.equal(wp[k], wc[k]) for k in wp if k != "head.bias")
    v = cal.card.metrics["validation"]
    assert v["mean_iou"] > v["before_offsets"]["mean_iou"]
    assert v["before_offsets"]["mean_iou"] == pytest.approx(plain.card.metrics["validation"]["mean_iou"])


def test_time_limited_run_with_huge_epoch_count_warms_up_within_the_budget():
    # epochs=100000 is how a wall-clock budget is given; the warm-up must follow the time budget
    # (3% of it), not 3% of 200000 steps that will never run
    img, _, scribble = _stripes()
    events = []
    _fit([img], [scribble], epochs=100_000, time_limit_s=2.0, lr=1e-2, progress=events.append)
    steps = [e for e in events if e["stage"] == "step"]
    assert len(steps) > 10
    mid = [e["lr"] for e in steps if 0.15 * 2.0 <= e["seconds"] <= 0.45 * 2.0]
    assert mid and min(mid) > 0.5 * 1e-2  # cosine at 45% of the run is 0.58 of the peak
    assert steps[0]["lr"] < 1e-2


def test_time_limit_stops_training_early():
    img, _, scribble = _stripes()
    net, card, history = _fit([img], [scribble], epochs=500, time_limit_s=0.5)
    assert len(history) < 500
    assert "time limit" in card.extra["training"]["stopped"]
    assert "the result depends on the machine's speed" in card.extra["training"]["stopped"]


def test_a_time_limit_the_epochs_fit_in_changes_nothing(monkeypatch):
    """The schedule mixed in elapsed / time limit even when the limit was never reached: two runs with the same
    seed and a generous --minutes gave different weights. The clock is made to run at very different speeds.
    8 steps: the time per step is projected after the first _STEPS_TIMED of them."""
    import time as _time

    from micro_seg.training import _STEPS_TIMED

    img, _, scribble = _stripes()
    real = _time.perf_counter
    runs = []
    for speed in (1.0, 50.0):
        start = real()
        monkeypatch.setattr("micro_seg.training.time.perf_counter", lambda s=speed, t0=start: t0 + s * (real() - t0))
        net, card, history = _fit([img], [scribble], epochs=4, time_limit_s=300.0)
        runs.append(_weights(net))
        assert card.extra["training"]["stopped"] is None and len(history) == 4
    assert 4 * 2 > _STEPS_TIMED
    assert _same(*runs)


def test_a_time_limit_the_epochs_do_not_fit_in_says_the_result_depends_on_the_machine(monkeypatch):
    """A clock so slow that the first steps project past the limit: the schedule follows the clock, and the card
    says two runs with the same seed may differ."""
    counter = iter(range(10**9))
    monkeypatch.setattr("micro_seg.training.time.perf_counter", lambda: 10.0 * next(counter))
    img, _, scribble = _stripes()
    stopped = _fit([img], [scribble], epochs=4, time_limit_s=200.0).card.extra["training"]["stopped"]
    assert "the epochs did not fit in the time limit" in stopped and "the result depends on the machine's speed" \
        in stopped, stopped


def test_input_scale_training_works_at_half_size_and_segments_full_size(tmp_path):
    """Trained at input_scale 0.5 (a 128-px image seen as 64 px): the card records it, fine-tuning inherits
    it, and predicting the full-size image through the registry segments it at full size."""
    from micro_seg.inference import predict
    from micro_seg.registry import load_model

    img, truth, scribble = _stripes(size=128)
    dense = np.kron((np.arange(128) >= 64)[None, :].astype(np.int64) + 1, np.ones((128, 1), np.int64))
    net, card, history = _fit([img], [dense], epochs=6, lr=1e-2, input_scale=0.5, out=tmp_path / "half",
                              name="half")
    assert card.input_scale == 0.5 and card.extra["training"]["input_scale"] == 0.5
    pred = predict(img, load_model(tmp_path / "half"), keep_uncertainty=False)
    assert pred.labels.shape == (128, 128)
    assert (pred.labels == dense - 1).mean() > 0.95
    _, card2, _ = _fit([img], [dense], base=str(tmp_path / "half"), epochs=1)
    assert card2.input_scale == 0.5
    with pytest.raises(TrainingDataError, match="input_scale"):
        _fit([img], [dense], input_scale=10.0)


def _disks(seed: int, size: int = 64):
    """Bright disks of radius 3-6 px on a dark noisy ground: image and dense labels (1 = matrix, 2 = disk)."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    lab = np.ones((size, size), np.int64)
    for _ in range(5):
        rr, cc = disk(tuple(rng.integers(6, size - 6, 2)), int(rng.integers(3, 7)), shape=lab.shape)
        lab[rr, cc] = 2
    img = np.clip(np.where(lab == 2, 190.0, 70.0) + rng.normal(0, 20, lab.shape), 0, 255).astype(np.uint8)
    return img, lab


@pytest.mark.parametrize("class_weights", ["auto", [1.0, 20.0]])  # the second gives non-zero logit offsets
def test_validation_metrics_at_input_scale_are_those_of_the_model_on_the_images_own_pixels(tmp_path, class_weights):
    """With input_scale 0.5 the card's validation IoU was measured on labels shrunk to the network's scale (a
    quarter of the pixels, small objects distorted), not on the held-out image as the saved model segments it:
    recomputing it from a segmentation gave another number."""
    from micro_seg.inference import predict
    from micro_seg.registry import load_model

    pairs = [_disks(seed) for seed in range(3)]
    _, card, _ = _fit([p[0] for p in pairs], [p[1] for p in pairs], epochs=4, lr=1e-2, input_scale=0.5,
                      val_fraction=0.34, class_weights=class_weights, out=tmp_path / "m", name="m")
    (i,) = card.training_data["val_indices"]
    img, truth = pairs[i]
    labels = predict(img, load_model(tmp_path / "m"), keep_uncertainty=False).labels
    val = card.metrics["validation"]
    again = segmentation_metrics(confusion_matrix(labels, truth, 2), ["dark", "bright"])
    assert val["iou"] == pytest.approx(again["iou"], abs=1e-9) and val["accuracy"] == pytest.approx(again["accuracy"])
    assert val["labelled_pixels"] == truth.size
    if class_weights != "auto":
        assert any(card.extra["training"]["logit_offsets"])


def test_calibrated_ensemble_metrics_at_input_scale_are_those_of_the_saved_ensemble(tmp_path):
    """models ensemble --calibrate of members at input_scale 0.5 recorded the IoU of the resampled answer shifted by
    the offsets afterwards, while the saved ensemble adds them on the network's scale, before resampling: the
    card's bright IoU was 0.7435, the ensemble's own segmentation of the same images gave 0.7425."""
    from micro_seg.inference import predict
    from micro_seg.registry import combine_models, load_model, save_model

    pairs = [_disks(seed) for seed in range(4)]
    imgs, labs = [p[0] for p in pairs], [p[1] for p in pairs]
    folders = []
    for seed in range(2):
        net, card, _ = _fit(imgs, labs, epochs=2, lr=1e-2, input_scale=0.5, val_fraction=0.5, split_seed=0,
                            seed=seed, class_weights=[1.0, 50.0], calibrate=False, name=f"m{seed}")
        folders.append(save_model(tmp_path / f"m{seed}", net, card))
    ens = load_model(combine_models(folders, tmp_path / "ens", calibrate_on=(imgs, labs)))
    assert any(ens.card.extra["calibration"]["logit_offsets"])
    idx = ens.card.extra["calibration"]["val_indices"]
    cm = sum(confusion_matrix(predict(imgs[i], ens, keep_uncertainty=False).labels, labs[i], 2) for i in idx)
    again = segmentation_metrics(cm, ["dark", "bright"])
    val = ens.card.metrics["validation"]
    assert val["iou"] == pytest.approx(again["iou"], abs=1e-9) and val["accuracy"] == pytest.approx(again["accuracy"])


def test_pseudo_labels_keep_the_base_model_where_nobody_scribbled(tmp_path):
    """Fine-tuning with pseudo-labels: the unlabelled pixels the base model is sure about are trained on its
    own answer, so a base that is right everywhere stays right when the only scribbles are in one corner."""
    from micro_seg.preprocess import to_network_input
    from micro_seg.registry import load_model
    from micro_seg.training import predict_logits, pseudo_labels

    img, truth, _ = _stripes()
    _fit([img], [truth], epochs=40, lr=1e-2, out=tmp_path / "base", name="base")
    base = load_model(tmp_path / "base")
    x = to_network_input(img, in_channels=1, normalisation=base.card.normalisation)
    assert (predict_logits(base.network, x).argmax(0) == truth - 1).mean() > 0.95
    corner = np.zeros_like(truth)
    corner[:6, :6] = 1
    filled = pseudo_labels(base.network, [x], [corner], threshold=0.9)[0]
    assert (filled[:6, :6] == 1).all()  # user labels win
    sure = filled > 0
    assert sure.mean() > 0.8 and (filled[sure] == truth[sure]).mean() > 0.98
    net, card, _ = _fit([img], [corner], base=base, epochs=2, pseudo_label_threshold=0.9)
    assert card.extra["training"]["pseudo_label_threshold"] == 0.9
    assert (predict_logits(net, x).argmax(0) == truth - 1).mean() > 0.95
    with pytest.raises(TrainingDataError, match="base"):
        _fit([img], [corner], pseudo_label_threshold=0.9)


def test_finetuned_grain_model_stays_a_grain_model_with_its_post_processing(tmp_path):
    import dataclasses

    from micro_seg.registry import load_model, save_model

    img, truth, scribble = _stripes()
    net, card, _ = _fit([img], [scribble], classes=["grain", "boundary"], task="grains")
    save_model(tmp_path / "g", net, dataclasses.replace(card, postprocess={"threshold": 0.4, "split_ratio": 1.5}))
    _, tuned, _ = _fit([img], [scribble], classes=["grain", "boundary"], base=load_model(tmp_path / "g"), epochs=1)
    assert tuned.task == "grains" and tuned.postprocess == {"threshold": 0.4, "split_ratio": 1.5}
    _, other, _ = _fit([img], [scribble], base=load_model(tmp_path / "g"), task="semantic", epochs=1)
    assert other.task == "semantic" and other.postprocess == {}


def test_keep_orientation_never_turns_stripes():
    """Horizontal stripes stay horizontal when the 90-degree rotations are off (grinding marks, rolling
    direction), and the labels follow the image; the full dihedral set turns them in some draws."""
    from micro_seg.augment import augment_pair, augment_preset

    x = np.zeros((1, 16, 16), np.float32)
    x[0, ::4] = 1.0  # bright rows 0, 4, 8, 12
    y = (x[0] > 0).astype(np.int64) + 1

    def turned(config) -> int:
        n = 0
        for seed in range(40):
            xa, ya = augment_pair(x, y, rng=np.random.default_rng(seed), config=config)
            assert np.array_equal(ya == 2, xa[0] > 0.5)
            n += not np.all(np.ptp(xa[0], axis=1) == 0)  # rows no longer constant: stripes now vertical
        return n

    assert turned(augment_preset("geometric", keep_orientation=True)) == 0
    assert 10 <= turned(augment_preset("geometric")) <= 30  # half of the 8 dihedral transforms turn them


def test_augment_presets():
    from micro_seg.augment import AugmentConfig, augment_preset

    assert augment_preset("full") == AugmentConfig()
    geo = augment_preset("geometric")
    assert geo.enabled and geo.dihedral and geo.p_scale > 0 and geo.p_noise == geo.p_blur == geo.p_gamma == 0
    assert not augment_preset("none").enabled
    with pytest.raises(ValueError, match="wild"):
        augment_preset("wild")


def test_patch_size_advice_known_answers():
    shapes = [(40, 42), (38, 50), (45, 30)]  # patch 64 holds (1680 + 1900 + 1350) / 3 / 4096 = 40.1% image
    msg = patch_size_advice(shapes, 64, stride=16)
    assert "mostly padding (60% of an average patch)" in msg and "median 40 x 42 px" in msg
    assert "a patch size of 48 px" in msg  # median longer side 45, rounded up to the stride
    assert patch_size_advice(shapes, 48, stride=16) is None  # 1 - (40*42 + 38*48 + 45*30) / 3 / 2304 = 30%
    assert "of 64 px" in patch_size_advice(shapes, 128, stride=32)
    assert patch_size_advice([(300, 400)], 128) is None and patch_size_advice([], 64) is None


def test_finetuned_card_describes_the_new_material_not_the_base_models(tmp_path):
    """A fine-tune keeps its base model's scale, tiling and post-processing, but not the base's material and
    description: it was trained on the caller's images (a MetalDAM steel model fine-tuned from ni-superalloy used
    to be labelled "Ni-based superalloy").  The caller's material goes on the card through ``card_extra``."""
    import dataclasses

    from micro_seg.registry import load_model, save_model

    img, truth, scribble = _stripes()
    net, card, _ = _fit([img], [scribble], name="base")
    save_model(tmp_path / "b", net, dataclasses.replace(card, material="Ni-based superalloy",
                                                         description="gamma prime", pixel_size_um_range=(0.01, 0.02)))
    _, tuned, _ = _fit([img], [truth], base=load_model(tmp_path / "b"), epochs=1)
    assert tuned.material == ""
    assert tuned.description == "Fine-tuned from 'base' (Ni-based superalloy) on 1 training image."
    assert tuned.pixel_size_um_range == (0.01, 0.02)
    _, named, _ = _fit([img], [truth], base=load_model(tmp_path / "b"), epochs=1,
                       card_extra={"material": "AM steel, SEM"})
    assert named.material == "AM steel, SEM"
