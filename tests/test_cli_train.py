"""``micro-seg train``: pairing by stem, clear errors (exit 2), a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from micro_seg.cli import main


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_pair(img_dir, lab_dir, stem, *, size=(64, 64), lab_size=None, seed=0, lab_name=None):
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 10, size)
    img[:, size[1] // 2 :] += 120
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(img_dir / f"{stem}.png")
    lab = np.zeros(lab_size or size, np.uint8)
    lab[:, :6] = 1
    lab[:, -6:] = 2
    Image.fromarray(lab).save(lab_dir / (lab_name or f"{stem}.png"))


def test_missing_images_dir_exits_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err and "Traceback" not in err


def test_no_pairs_exits_2(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a", lab_name="zzz.png")
    (lab_dir / "zzz.png").rename(lab_dir / "b.png")
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m")]) == 2
    assert "no image has a label file" in capsys.readouterr().err


def test_image_without_labels_exits_2(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    _write_pair(img_dir, lab_dir, "b")
    (lab_dir / "b.png").unlink()
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m")]) == 2
    assert "no labels for images b.png" in capsys.readouterr().err


def test_size_mismatch_exits_2(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a", lab_size=(60, 64))
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "60 x 64" in err and "64 x 64" in err


def test_label_value_beyond_classes_exits_2(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), "--classes", "only"]) == 2
    assert "label value 2" in capsys.readouterr().err


def test_tiny_training_writes_loadable_model(dirs, tmp_path, capsys):
    from micro_seg.registry import load_model

    img_dir, lab_dir = dirs
    for i, stem in enumerate(["a", "b"]):
        _write_pair(img_dir, lab_dir, stem, seed=i, lab_name=f"{stem}_labels.png")
    out = tmp_path / "model"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright",
                 "--epochs", "2", "--patch-size", "32", "--batch-size", "2", "--arch", "msnet-s",
                 "--val-fraction", "0.5", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["classes"] == ["dark", "bright"] and result["n_images"] == 2 and result["epochs_run"] == 2
    assert result["validation"]["mean_iou"] is not None
    loaded = load_model(out)
    assert loaded.card.name == "model" and loaded.card.weights_sha256 == result["sha256"]
    # the held-out image is named in the output and recorded (as an index) in the card
    (held_out,) = result["validation_images"]
    assert held_out in {p.name for p in img_dir.iterdir()}
    assert loaded.card.training_data["val_indices"] == [sorted(p.name for p in img_dir.iterdir()).index(held_out)]


@pytest.mark.parametrize("weights", ["1,2,3", "a,b", "-1,2"])
def test_bad_class_weights_exit_2(dirs, tmp_path, capsys, weights):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), "--classes", "dark,bright",
                 "--class-weights", weights])
    assert code == 2 and "--class-weights" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, words", [
    ("--lr", "-1", "--lr must be a positive number"), ("--lr", "nan", "--lr must be a positive number"),
    ("--minutes", "-1", "--minutes must be a positive number"), ("--threads", "0", "--threads must be a whole number >= 1"),
    ("--patience", "-1", "--patience must be"), ("--patches-per-epoch", "0", "--patches-per-epoch must be"),
    ("--split-seed", "-1", "--split-seed must be a whole number >= 0"), ("--batch-size", "0", "--batch-size must be"),
    ("--epochs", "0", "--epochs must be a whole number >= 1"),
])
def test_training_options_out_of_range_exit_2_naming_the_flag(dirs, tmp_path, capsys, option, value, words):
    """Checked before any image is read: the images folder here is empty, which would be the error otherwise."""
    img_dir, lab_dir = dirs
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), option, value])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m").exists()


def test_out_that_is_a_file_exits_2_before_training(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    a_file = tmp_path / "model.txt"
    a_file.write_text("not a folder")
    for out, words in ((a_file, "--out is an existing file"), (a_file / "sub", "--out cannot be created")):
        code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright"])
        err = capsys.readouterr().err
        assert code == 2 and str(out) in err and words in err, err
    code = main(["train-classifier", str(tmp_path), "--out", str(a_file)])
    err = capsys.readouterr().err
    assert code == 2 and "--out is an existing file" in err
    assert a_file.read_text() == "not a folder"


def test_loss_and_calibration_options_reach_the_card(dirs, tmp_path, capsys):
    from micro_seg.registry import load_model

    img_dir, lab_dir = dirs
    for i, stem in enumerate(["a", "b"]):
        _write_pair(img_dir, lab_dir, stem, seed=i)
    out = tmp_path / "model"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright",
                 "--epochs", "1", "--patch-size", "32", "--batch-size", "2", "--arch", "msnet-s",
                 "--val-fraction", "0.5", "--class-weights", "1,3", "--dice-weight", "0.5",
                 "--rare-class-fraction", "0", "--no-calibrate", "--augment", "geometric", "--keep-orientation",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["logit_offsets"] is None  # --no-calibrate
    training = load_model(out).card.extra["training"]
    assert training["class_weights"] == [1.0, 3.0] and training["dice_weight"] == 0.5
    assert training["rare_class_fraction"] == 0.0 and training["calibrate"] is False
    aug = training["augment"]
    assert aug["enabled"] and not aug["rotate90"] and aug["p_noise"] == aug["p_blur"] == aug["p_intensity"] == 0
    assert aug["p_scale"] > 0  # geometric keeps the scale jitter
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--augment", "wild"]) == 2
    assert "--augment" in capsys.readouterr().err


def test_keep_last_and_input_scale_reach_the_model(dirs, tmp_path, capsys):
    from micro_seg.registry import load_model

    img_dir, lab_dir = dirs
    for i, stem in enumerate(["a", "b"]):
        _write_pair(img_dir, lab_dir, stem, size=(96, 96), seed=i)
    out = tmp_path / "model"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright",
                 "--epochs", "2", "--patch-size", "32", "--batch-size", "2", "--arch", "msnet-s",
                 "--val-fraction", "0.5", "--keep", "last", "--input-scale", "0.5", "--json",
                 "--material", "ferritic steel, nital"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    res = json.loads(captured.out)
    assert res["input_scale"] == 0.5 and res["best_epoch"] == 1 and res["epochs_run"] == 2  # last of 2 kept
    assert load_model(out).card.input_scale == 0.5
    assert load_model(out).card.material == "ferritic steel, nital"
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--input-scale", "0"]) == 2
    assert "--input-scale" in capsys.readouterr().err
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--pseudo-labels", "0.9"]) == 2
    assert "--pseudo-labels needs --base" in capsys.readouterr().err


def test_patch_size_mostly_padding_is_warned(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    for i, stem in enumerate(["a", "b"]):
        _write_pair(img_dir, lab_dir, stem, size=(96, 96), seed=i)
    common = ["train", str(img_dir), str(lab_dir), "--classes", "dark,bright", "--epochs", "1", "--batch-size", "2",
              "--arch", "msnet-s", "--val-fraction", "0.5", "--input-scale", "0.25", "--json"]
    # at 1/4 size the images are 24 x 24 px: a 64-px patch is 86% padding
    assert main(common + ["--out", str(tmp_path / "m64"), "--patch-size", "64"]) == 0
    err = capsys.readouterr().err
    assert "warning: patch size 64 px is mostly padding (86% of an average patch)" in err
    assert "median 24 x 24 px" in err and "a patch size of 32 px" in err and "--patch-size" in err
    assert main(common + ["--out", str(tmp_path / "m32"), "--patch-size", "32"]) == 0
    assert "warning" not in capsys.readouterr().err
    # 1024 px on 24-px images would train almost only on padding (and slowly): refused before training
    assert main(common + ["--out", str(tmp_path / "m1024"), "--patch-size", "1024"]) == 2
    err = capsys.readouterr().err
    assert "--patch-size 1024 is more than 8 times" in err and "use --patch-size 32" in err
    assert not (tmp_path / "m1024").exists()


def test_members_sharing_a_split_seed_make_a_calibrated_ensemble(dirs, tmp_path, capsys):
    """Runs with different --seed but one --split-seed hold out the same images (same indices and sha256), so
    `models ensemble --calibrate` can choose the ensemble's decision on them; a member that held out other images,
    or labels read another way, are refused with exit 2 and one line."""
    from micro_seg.registry import load_card, load_model

    img_dir, lab_dir = dirs
    for i in range(5):
        _write_pair(img_dir, lab_dir, f"p{i}", seed=i)
    common = ["--classes", "dark,bright", "--epochs", "1", "--patch-size", "32", "--batch-size", "2",
              "--arch", "msnet-s", "--val-fraction", "0.4", "--json", "--quiet"]
    for name, extra in (("m0", ["--split-seed", "3", "--seed", "0"]), ("m1", ["--split-seed", "3", "--seed", "1"]),
                        ("other", ["--split-seed", "1", "--seed", "1"])):
        assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / name), *common, *extra]) == 0
    capsys.readouterr()
    cards = {n: load_card(tmp_path / n) for n in ("m0", "m1", "other")}
    assert cards["m0"].training_data["val_indices"] == cards["m1"].training_data["val_indices"]
    assert cards["m0"].training_data["val_sha256"] == cards["m1"].training_data["val_sha256"]
    assert cards["m0"].training_data["val_indices"] != cards["other"].training_data["val_indices"]
    assert cards["m0"].extra["training"]["seed"] == 0 and cards["m1"].extra["training"]["seed"] == 1

    ens = tmp_path / "ens"
    code = main(["models", "ensemble", str(tmp_path / "m0"), str(tmp_path / "m1"), "--out", str(ens),
                 "--calibrate", str(img_dir), str(lab_dir), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    cal = json.loads(captured.out)["calibration"]
    assert cal["data"] == "2 validation images every member held out" and len(cal["logit_offsets"]) == 2
    card = load_model(ens).card
    assert card.metrics["validation"]["mean_iou"] >= card.metrics["validation"]["before_offsets"]["mean_iou"]
    assert card.extra["calibration"]["val_indices"] == cards["m0"].training_data["val_indices"]

    for args, message in (([str(tmp_path / "m0"), str(tmp_path / "other")], "same --split-seed"),
                          ([str(tmp_path / "m0"), str(tmp_path / "m1"), "--label-encoding", "dense"],
                           "not the ones the members were trained on")):
        code = main(["models", "ensemble", *args, "--out", str(tmp_path / "bad"), "--calibrate", str(img_dir),
                     str(lab_dir)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_same_seed_with_a_time_limit_that_is_not_reached_gives_the_same_model(dirs, tmp_path, capsys):
    """--minutes 5 on a run of seconds made the learning rate depend on the clock: two runs, two models. 8 steps, so
    the time per step is projected (after the first 5) and found to fit."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    shas = []
    for run in ("m1", "m2"):
        code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / run), "--classes", "dark,bright",
                     "--epochs", "2", "--minutes", "5", "--patch-size", "32", "--batch-size", "2",
                     "--patches-per-epoch", "8", "--arch", "msnet-s", "--threads", "1", "--name", "same", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        shas.append(json.loads(captured.out)["sha256"])
    assert shas[0] == shas[1]


def test_patience_0_means_no_early_stopping(dirs, tmp_path, capsys):
    """--patience 0 stopped after epoch 1 even when that epoch improved."""
    img_dir, lab_dir = dirs
    for i, stem in enumerate(["a", "b"]):
        _write_pair(img_dir, lab_dir, stem, seed=i)
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), "--classes", "dark,bright",
                 "--epochs", "3", "--patience", "0", "--val-fraction", "0.5", "--patch-size", "32", "--batch-size",
                 "2", "--patches-per-epoch", "2", "--arch", "msnet-s", "--threads", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["epochs_run"] == 3
