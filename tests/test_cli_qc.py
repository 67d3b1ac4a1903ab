"""CLI: micro-seg qc / classify / train-classifier (JSON contract, exit codes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from micro_seg.cli import main
from test_classifier import CLASSES, synthetic
from test_quality import blurred, clipped, grain_micrograph, low_contrast

SPEC = """
name: test spec
image:
  blur: {max: 0.45}
  clipped_high_fraction: 0.02
  dynamic_range: 0.15
  calibration: required
  pixel_size_um: [0.2, 1.0]
"""


def run_json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


@pytest.fixture()
def images(tmp_path):
    img = grain_micrograph(0)
    paths = {}
    for name, data in [("good", img), ("blurred", blurred(img)), ("clipped", clipped(img)), ("flat", low_contrast(img))]:
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(data).save(paths[name])
    return paths


def test_qc_images_verdicts_and_reasons(tmp_path, images, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    argv = ["qc", *map(str, images.values()), "--spec", str(spec), "--pixel-size", "0.5", "--json"]
    code, out, err = run_json(capsys, argv)
    assert code == 0, err
    by = {r["path"].rsplit("/", 1)[-1]: r for r in out["results"]}
    assert by["good.png"]["verdict"] == "pass" and by["good.png"]["reasons"] == []
    assert [x["check"] for x in by["blurred.png"]["reasons"]] == ["image.blur"]
    assert [x["check"] for x in by["clipped.png"]["reasons"]] == ["image.clipped_high_fraction"]
    assert "image.dynamic_range" in [x["check"] for x in by["flat.png"]["reasons"]]
    for r in out["results"]:
        for reason in r["reasons"]:
            assert {"check", "value", "limit"} <= set(reason)
    assert out["counts"] == {"pass": 1, "review": 3, "fail": 0}
    # without calibration every image is sent to review for it
    code, out, _ = run_json(capsys, ["qc", str(images["good"]), "--spec", str(spec), "--json"])
    assert out["results"][0]["verdict"] == "review"
    assert out["results"][0]["reasons"][0] == {**out["results"][0]["reasons"][0], "check": "image.calibration", "value": None}


def test_qc_bad_inputs_exit_2_with_one_line(tmp_path, images, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("image:\n  blur: {maximum: 0.4}\n")
    code, out, err = run_json(capsys, ["qc", str(images["good"]), "--spec", str(spec), "--json"])
    assert code == 2 and out is None
    assert "image.blur" in err and "bad.yaml" in err and len(err.strip().splitlines()) == 1
    good = tmp_path / "ok.yaml"
    good.write_text(SPEC)
    code, _, err = run_json(capsys, ["qc", str(tmp_path / "nope.png"), "--spec", str(good), "--json"])
    assert code == 2 and "nope.png" in err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    code, out, _ = run_json(capsys, ["qc", str(images["good"]), str(broken), "--spec", str(good), "--json"])
    assert code == 3
    assert out["results"][1]["verdict"] == "fail" and out["results"][1]["reasons"][0]["check"] == "input.readable"


def test_qc_on_batch_results_table(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  grains:\n    G_intercept: {min: 7, max: 9}\n  defects:\n    area_fraction: 0.01\n")
    out_dir = tmp_path / "batch"
    out_dir.mkdir()
    (out_dir / "images.csv").write_text(
        "path,status,error,pixel_size_um,G_intercept,defects_area_fraction\n"
        "a.tif,ok,,0.5,8.1,0.002\n"
        "b.tif,ok,,0.5,6.0,0.002\n"
        "c.tif,ok,,0.5,8.0,0.05\n"
        "d.tif,failed,CorruptFileError: d.tif: truncated,,,\n"
    )
    code, out, err = run_json(capsys, ["qc", str(out_dir), "--spec", str(spec), "--json"])
    assert code == 3, err  # like an unreadable image given in a list: some images failed
    assert "truncated" in next(r for r in out["results"] if r["path"] == "d.tif")["error"]
    verdicts = {r["path"]: (r["verdict"], [x["check"] for x in r["reasons"]]) for r in out["results"]}
    assert verdicts == {
        "a.tif": ("pass", []),
        "b.tif": ("fail", ["grains.G_intercept"]),
        "c.tif": ("fail", ["defects.area_fraction"]),
        "d.tif": ("fail", ["batch.status"]),
    }
    # the same table saved by Excel as "CSV UTF-8" (a byte-order mark first) was judged as specimen rows
    table = out_dir / "images.csv"
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    code, out, err = run_json(capsys, ["qc", str(out_dir), "--spec", str(spec), "--json"])
    assert {r["path"]: (r["verdict"], [x["check"] for x in r["reasons"]]) for r in out["results"]} == verdicts


@pytest.mark.slow
def test_train_classifier_classify_and_qc_with_classifier(tmp_path, capsys):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    for c, kind in enumerate(CLASSES):
        (data / kind).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(synthetic(kind, 100 * c + i)).save(data / kind / f"{i}.png")
    model = tmp_path / "clf"
    code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(model), "--arch", "mscls-s",
                                       "--input-size", "32", "--epochs", "15", "--batch-size", "8", "--lr", "5e-3",
                                       "--val-fraction", "0.25", "--quiet", "--json"])
    assert code == 0, err
    assert out["classes"] == list(CLASSES) and np.array(out["confusion_matrix"]).sum() == out["n_val"] == 9
    assert out["val_accuracy"] >= 8 / 9 and len(out["sha256"]) == 64
    test_img = tmp_path / "disks_test.png"
    Image.fromarray(synthetic("disks", 777)).save(test_img)
    code, out, err = run_json(capsys, ["classify", str(test_img), "--model", str(model), "--json",
                                       "--grad-cam", str(tmp_path / "cams")])
    assert code == 0, err
    assert out["class"] == "disks" and set(out["probabilities"]) == set(CLASSES)
    assert isinstance(out["ood_score"], float) and (tmp_path / "cams" / "disks_test_gradcam.tif").is_file()
    spec = tmp_path / "spec.yaml"
    spec.write_text("classifier:\n  forbidden_classes: [disks]\n  min_confidence: 0.5\n")
    code, out, err = run_json(capsys, ["qc", str(test_img), "--spec", str(spec), "--model", str(model), "--json"])
    assert code == 0, err
    r = out["results"][0]
    assert r["verdict"] == "fail" and r["reasons"][0]["check"] == "classifier.forbidden_class"
    assert r["classification"]["class"] == "disks"
    spec.write_text("classifier:\n  forbidden_classes: [cracks]\n")
    code, _, err = run_json(capsys, ["qc", str(test_img), "--spec", str(spec), "--model", str(model), "--json"])
    assert code == 2 and "classifier.forbidden_classes" in err and "cracks" in err


def test_classify_unknown_model_exit_2(tmp_path, images, capsys):
    code, _, err = run_json(capsys, ["classify", str(images["good"]), "--model", "no-such-model", "--json"])
    assert code == 2 and "no-such-model" in err


def test_classify_grad_cam_folder_that_is_a_file_exit_2(tmp_path, images, capsys):
    a_file = tmp_path / "cams"
    a_file.write_text("x")
    code, _, err = run_json(capsys, ["classify", str(images["good"]), "--model", "no-such-model", "--json",
                                     "--grad-cam", str(a_file)])
    assert code == 2 and "--grad-cam is an existing file" in err and a_file.read_text() == "x"


@pytest.mark.parametrize("model, spec_rules, says", [
    (None, "measurements:\n  defects:\n    count: {max: 5}\n", "no --model was given"),
    ("grain-boundaries", "measurements:\n  defects:\n    count: {max: 5}\n",
     "model 'grain-boundaries' (grains) measures only grains; give a model that measures defects"),
    ("grain-boundaries", "measurements:\n  phases:\n    phase_fractions:\n      matrix: [0.1, 0.9]\n",
     "measures only grains"),
    ("ni-superalloy", "measurements:\n  grains:\n    G_intercept: [5, 9]\n", "measures only phases"),
])
def test_spec_rules_the_model_cannot_measure_are_a_usage_error(tmp_path, capsys, images, model, spec_rules, says):
    # every image would otherwise be "review" for a measurement that was never made
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_rules)
    argv = ["qc", str(images["good"]), "--spec", str(spec), "--json"] + (["--model", model] if model else [])
    code, out, err = run_json(capsys, argv)
    assert code == 2 and out is None and len(err.strip().splitlines()) == 1, err
    assert str(spec) in err and says in err


def test_spec_rules_a_model_can_measure_are_accepted(tmp_path, capsys, images):
    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    count: {max: 100000}\n")
    code, out, err = run_json(capsys, ["qc", str(images["good"]), "--spec", str(spec), "--model", "pores-defects",
                                       "--json"])
    assert code == 0, err
    (row,) = out["results"]
    assert row["measurements"]["defects"]["count"] >= 0 and row["verdict"] == "pass"


@pytest.mark.parametrize("option, value, says", [
    ("--batch-size", "1", "--batch-size 1: must be at least 2"),  # trained nothing, reported success
    ("--lr", "-1", "--lr -1.0: must be a positive number"),  # an internal error, exit 1
    ("--lr", "nan", "--lr nan: must be a positive number"),
    ("--threads", "-2", "--threads -2: must be at least 1"),
    ("--max-minutes", "-1", "--max-minutes -1.0: must be a positive number"),
    ("--classes", "disks,disks", "['disks'] given more than once"),  # refused only after training
    ("--epochs", "0", "--epochs must be >= 1, got 0"),  # one sentence about three options
    ("--input-size", "8", "--input-size must be >= 16 pixels, got 8"),
    ("--seed", "-1", "--seed -1: must be a whole number >= 0"),  # an internal error (numpy's), exit 1
])
def test_train_classifier_refuses_unusable_options_before_reading_images(tmp_path, capsys, option, value, says):
    data = tmp_path / "data"
    (data / "disks").mkdir(parents=True)
    code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / "m"), option, value,
                                       "--json"])
    assert code == 2 and out is None and says in err and len(err.strip().splitlines()) == 1, err


def test_classifier_training_skips_hidden_folders_and_grad_cam_names_never_collide(tmp_path, capsys):
    from micro_seg.classifier import load_class_folders

    data = tmp_path / "data"
    for kind in ("grains", "disks"):
        (data / kind / ".thumbs").mkdir(parents=True)
        Image.fromarray(synthetic(kind, 1)).save(data / kind / "a.png")
        Image.fromarray(synthetic(kind, 2)).save(data / kind / ".thumbs" / "b.png")  # not a training image
    paths, labels, classes = load_class_folders(data)
    assert len(paths) == 2 and not any(".thumbs" in str(p) for p in paths)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    Image.fromarray(synthetic("disks", 3)).save(tmp_path / "x" / "s.png")
    Image.fromarray(synthetic("grains", 3)).save(tmp_path / "y" / "s.png")
    code, out, err = run_json(capsys, ["classify", str(tmp_path / "x" / "s.png"), str(tmp_path / "y" / "s.png"),
                                       "--model", "no-such-model", "--grad-cam", str(tmp_path / "cams")])
    assert code == 2 and "same name stem 's'" in err


def test_qc_of_a_batch_table_runs_the_classifier_on_the_images_it_finds(tmp_path, capsys):
    """`qc BATCH_OUT --images-dir DIR --model CLASSIFIER` said 'no classifier result was given (use --model)'."""
    from micro_seg.classifier import build_classifier
    from micro_seg.registry import ModelCard, save_model

    torch.manual_seed(0)
    card = ModelCard(name="tiny-clf", task="classification", arch="mscls-s", in_channels=1, classes=["good", "bad"],
                     tile_size=32, extra={"input_size": 32, "ood": {"threshold": 1e9}})
    clf = save_model(tmp_path / "clf", build_classifier("mscls-s", in_channels=1, num_classes=2), card)
    (tmp_path / "in").mkdir()
    Image.fromarray(synthetic("disks", 5)).save(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "images.csv").write_text("path,status,error\na.png,ok,\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("classifier:\n  forbidden_classes: [good, bad]\n")  # whatever it says: fail
    code, out, err = run_json(capsys, ["qc", str(tmp_path / "out"), "--spec", str(spec), "--model", str(clf),
                                       "--images-dir", str(tmp_path / "in"), "--json"])
    assert code == 0, err
    (r,) = out["results"]
    assert r["verdict"] == "fail" and r["classification"]["class"] in ("good", "bad")


def test_a_specs_classifier_folder_is_found_relative_to_the_spec_and_two_classifiers_are_said(tmp_path, capsys,
                                                                                              monkeypatch):
    """classifier: {model: clf} worked only from the spec's folder ('unknown model' elsewhere); --model A
    --classifier B used B without a word."""
    from micro_seg.classifier import build_classifier
    from micro_seg.qc import load_spec
    from micro_seg.registry import ModelCard, save_model

    torch.manual_seed(0)
    card = ModelCard(name="tiny-clf", task="classification", arch="mscls-s", in_channels=1, classes=["good", "bad"],
                     tile_size=32, extra={"input_size": 32, "ood": {"threshold": 1e9}})
    save_model(tmp_path / "specs" / "clf", build_classifier("mscls-s", in_channels=1, num_classes=2), card)
    spec = tmp_path / "specs" / "spec.yaml"
    spec.write_text("classifier:\n  model: clf\n  forbidden_classes: [good, bad]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_spec(spec).classifier_model == str(tmp_path / "specs" / "clf")
    Image.fromarray(synthetic("disks", 5)).save(elsewhere / "a.png")
    code, out, err = run_json(capsys, ["qc", "a.png", "--spec", str(spec), "--json"])
    assert code == 0 and out["results"][0]["verdict"] == "fail", err
    clf = str(tmp_path / "specs" / "clf")
    code, out, err = run_json(capsys, ["qc", "a.png", "--spec", str(spec), "--model", clf, "--classifier", clf,
                                       "--json"])
    assert code == 0 and "--classifier" in err and "is the one used" in err


def test_train_classifier_warns_about_copies_across_the_split_and_classes_without_validation(tmp_path, capsys):
    """Byte-identical copies in training and validation made the validation figures (and the OOD threshold)
    optimistic in silence; a class with one image dropped out of the metrics in silence."""
    data = tmp_path / "data"
    for kind, n in (("grains", 6), ("disks", 1)):
        (data / kind / "backup").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic(kind, i)).save(data / kind / f"{i}.png")
            Image.fromarray(synthetic(kind, i)).save(data / kind / "backup" / f"{i}.png")  # the same bytes
    code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / "m"), "--input-size", "32",
                                       "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.5", "--threads", "1",
                                       "--quiet", "--json"])
    assert code == 0, err
    assert any("pixel-identical copies of training images" in w for w in out["warnings"]), out["warnings"]
    one = tmp_path / "one"
    for kind, n in (("grains", 6), ("disks", 1)):  # one disk image: it trains, none is left to validate it
        (one / kind).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic(kind, 10 + i)).save(one / kind / f"{i}.png")
    code, out, err = run_json(capsys, ["train-classifier", str(one), "--out", str(tmp_path / "m2"), "--input-size",
                                       "32", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.5",
                                       "--threads", "1", "--quiet", "--json"])
    assert code == 0, err
    assert any("class(es) disks have no validation image" in w for w in out["warnings"]), out["warnings"]
    assert not any("pixel-identical" in w for w in out["warnings"])


@pytest.mark.parametrize("bad", ["0", "-1", "inf"])
def test_a_bad_pixel_size_is_a_usage_error_not_a_fail_verdict(tmp_path, capsys, bad):
    """qc --pixel-size 0 judged every image 'fail' (exit 3) with a CalibrationError as its reason."""
    spec = tmp_path / "cal.yaml"
    spec.write_text("image:\n  calibration: fail\n")
    img = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(img)
    code = main(["qc", str(img), "--spec", str(spec), "--pixel-size", bad])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == "" and "--pixel-size" in cap.err and len(cap.err.strip().splitlines()) == 1


def test_positive_class_without_validation_images_is_refused_before_training(tmp_path, capsys):
    """--positive-class with no validation image failed only after training, with 'positive class (index 1)';
    --positive-class without --target-recall was ignored in silence."""
    data = tmp_path / "data"
    for kind, n in (("grains", 6), ("disks", 1)):
        (data / kind).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic(kind, i)).save(data / kind / f"{i}.png")
    argv = ["train-classifier", str(data), "--out", str(tmp_path / "m"), "--input-size", "32", "--epochs", "1",
            "--batch-size", "4", "--threads", "1", "--positive-class", "disks"]
    code, out, err = run_json(capsys, argv + ["--target-recall", "0.9"])
    assert code == 2 and out is None and "epoch" not in err, err
    assert "positive class 'disks' has no validation image" in err and str(data) in err and "--val-fraction" in err
    code, out, err = run_json(capsys, argv)
    assert code == 2 and "--positive-class disks: needs --target-recall" in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("bound", [0.25, 20.0])
def test_temperature_at_its_bound_is_a_training_warning(tmp_path, capsys, monkeypatch, bound):
    """A temperature stuck at 0.25 or 20 (calibration failed) was written only deep in the card."""
    import micro_seg.classifier as classifier

    monkeypatch.setattr(classifier, "fit_temperature", lambda logits, truth: bound)
    data = tmp_path / "data"
    for kind in ("grains", "disks"):
        (data / kind).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(synthetic(kind, i)).save(data / kind / f"{i}.png")
    argv = ["train-classifier", str(data), "--out", str(tmp_path / "m"), "--input-size", "32", "--epochs", "1",
            "--batch-size", "4", "--val-fraction", "0.5", "--threads", "1"]
    code, out, err = run_json(capsys, argv + ["--quiet", "--json"])
    assert code == 0, err
    (warning,) = [w for w in out["warnings"] if "calibration failed" in w]
    assert f"bound {bound:.3g}" in warning and "not calibrated" in warning
    code = main(argv)  # the human output: the warning on stderr
    assert code == 0 and "warning: probability calibration failed" in capsys.readouterr().err


def test_a_classifier_training_that_diverges_exits_2_and_saves_no_model(tmp_path, capsys):
    """--lr 1e12 made the weights NaN: the NaN model was saved, with exit 0 and a chance-level 'val_accuracy', and
    every classify with it then failed."""
    data = tmp_path / "data"
    for kind in ("grains", "disks"):
        (data / kind).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(synthetic(kind, i)).save(data / kind / f"{i}.png")
    out = tmp_path / "m"
    code, result, err = run_json(capsys, ["train-classifier", str(data), "--out", str(out), "--input-size", "32",
                                          "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.5", "--threads",
                                          "1", "--lr", "1e12", "--quiet", "--json"])
    assert code == 2 and result is None, err
    assert f"{data}: training diverged: " in err and "no model was saved" in err and "learning rate" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("where", ["data/model", "data", "data/models/m1", "data/grains/model"])
def test_a_classifier_is_not_written_where_the_next_training_takes_it_for_a_class(tmp_path, capsys, where):
    """``--out DATA/model`` trained once; the next training (the same command) read DATA/model as a class folder and
    failed with 'class folder holds no supported images'."""
    data = tmp_path / "data"
    for kind in ("grains", "disks"):
        (data / kind).mkdir(parents=True)
    code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / where), "--json"])
    assert code == 2 and out is None and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / where}: --out is " in err and "give the model a folder outside it" in err
    assert sorted(p.name for p in data.iterdir()) == ["disks", "grains"]


def test_the_classifier_card_names_its_validation_images_and_their_confusion_matrix_is_recomputable(tmp_path, capsys):
    """The card gave a validation confusion matrix, accuracy and OOD threshold but not which images they came from,
    so nobody could check them (micro-seg train lists its validation images)."""
    from micro_seg.classifier import classify_batch, load_classifier
    from micro_seg.io import read_micrograph
    from micro_seg.registry import load_card

    data = tmp_path / "data"
    for kind in ("grains", "disks"):
        (data / kind).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(synthetic(kind, i)).save(data / kind / f"{i}.png")
    code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / "m"), "--input-size",
                                       "32", "--epochs", "2", "--batch-size", "4", "--threads", "1", "--quiet",
                                       "--json"])
    assert code == 0, err
    val = out["validation_images"]
    assert len(val) == out["n_val"] == 2 and val == load_card(tmp_path / "m").training_data["val_files"]
    results = classify_batch([read_micrograph(data / v).data for v in val], load_classifier(tmp_path / "m"))
    cm = np.zeros((2, 2), int)
    for v, r in zip(val, results):
        cm[out["classes"].index(v.split("/")[0]), out["classes"].index(r["class"])] += 1
    assert cm.tolist() == out["confusion_matrix"]


def test_a_train_val_layout_is_not_taken_as_two_classes(tmp_path, capsys):
    """DATA/train/{a,b} + DATA/val/{a,b} trained a model of the classes 'train' and 'val', in silence."""
    data = tmp_path / "data"
    for split in ("train", "val"):
        for kind in ("grains", "disks"):
            (data / split / kind).mkdir(parents=True)
            Image.fromarray(synthetic(kind, 1)).save(data / split / kind / "a.png")
    code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / "m"), "--epochs", "1",
                                       "--json"])
    assert code == 2 and out is None and len(err.strip().splitlines()) == 1, err
    assert "train/validation layout" in err and str(data / "train") in err
    Image.fromarray(synthetic("grains", 2)).save(data / "train" / "b.png")  # one class folder with its own images
    from micro_seg.classifier import load_class_folders

    assert load_class_folders(data)[2] == ["train", "val"]


def test_images_grouped_inside_each_class_folder_are_a_valid_layout(tmp_path):
    """ferrite/{x100,x500} + pearlite/{x100,x500}: classes with their images grouped by magnification are not a
    train/validation layout (the check refused them)."""
    from micro_seg.classifier import load_class_folders

    data = tmp_path / "mag"
    for kind in ("grains", "disks"):
        for group in ("x100", "x500"):
            (data / kind / group).mkdir(parents=True)
            Image.fromarray(synthetic(kind, 1)).save(data / kind / group / "a.png")
    paths, labels, names = load_class_folders(data)
    assert names == ["disks", "grains"] and len(paths) == 4 and sorted(labels.tolist()) == [0, 0, 1, 1]


def test_copies_are_found_by_their_pixels_and_across_classes(tmp_path):
    """A PNG and a TIFF of the same pixels were not copies; the same image in two class folders (contradictory
    labels) was never said."""
    from micro_seg.classifier import _pixels_hash, _read_for_classifier, _split_warnings

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    img = synthetic("grains", 1)
    paths = [tmp_path / "a" / "x.png", tmp_path / "a" / "y.tif", tmp_path / "b" / "z.png", tmp_path / "b" / "w.png"]
    Image.fromarray(img).save(paths[0])
    Image.fromarray(img).save(paths[1])  # same pixels, other bytes
    Image.fromarray(img).save(paths[2])  # the same image labelled b
    Image.fromarray(synthetic("disks", 1)).save(paths[3])
    hashes = [_pixels_hash(_read_for_classifier(p)) for p in paths]
    labels = np.array([0, 0, 1, 1])
    warnings = _split_warnings(paths, labels, ["a", "b"], np.array([0, 3]), np.array([1, 2]), hashes)
    (clash,) = [w for w in warnings if "two class folders" in w]
    assert str(paths[0]) in clash and str(paths[2]) in clash and "contradictory labels" in clash
    (copies,) = [w for w in warnings if "pixel-identical copies" in w]
    assert copies.startswith("2 validation image(s)")


def test_colour_only_classes_are_learned_with_channels_auto(tmp_path, capsys):
    """train-classifier always trained on grey: red and blue images of the same patterns reached 0.17 val
    accuracy.  auto picks RGB when the colour channels differ, and warns when RGB files are grey."""
    torch.set_num_threads(1)
    data = tmp_path / "data"
    for c, kind in enumerate(("blue", "red")):
        (data / kind).mkdir(parents=True)
        for i in range(10):
            pattern = synthetic("grains", i, size=32)
            rgb = np.zeros((32, 32, 3), np.uint8)
            rgb[..., 2 - 2 * c] = pattern  # the same pattern in the blue or the red channel
            Image.fromarray(rgb).save(data / kind / f"{i}.png")
    argv = ["train-classifier", str(data), "--out", str(tmp_path / "m"), "--input-size", "32", "--epochs", "6",
            "--batch-size", "8", "--lr", "5e-3", "--val-fraction", "0.3", "--threads", "1", "--quiet", "--json"]
    code, out, err = run_json(capsys, argv)
    assert code == 0, err
    assert out["channels"] == "auto" and out["in_channels"] == 3 and out["val_accuracy"] >= 5 / 6, out
    code, out, err = run_json(capsys, argv + ["--channels", "grey"])  # what it did before: chance
    assert code == 0 and out["in_channels"] == 1 and out["val_accuracy"] <= 4 / 6, out
    grey = tmp_path / "grey"
    for kind in ("grains", "disks"):
        (grey / kind).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.repeat(synthetic(kind, i, size=32)[..., None], 3, axis=-1)).save(grey / kind / f"{i}.png")
    code, out, err = run_json(capsys, ["train-classifier", str(grey), "--out", str(tmp_path / "g"), "--input-size",
                                       "32", "--epochs", "1", "--batch-size", "4", "--threads", "1", "--quiet", "--json"])
    assert code == 0 and out["in_channels"] == 1, err
    assert any("have equal red, green and blue channels" in w for w in out["warnings"]), out["warnings"]


def test_grey_jpegs_with_channel_noise_train_as_grey(tmp_path, capsys):
    """JPEG leaves grey images with +-1 differences between their channels; the reader calls them grey
    (is_grey_rgb), and so must --channels auto (it took them for colour)."""
    rng = np.random.default_rng(0)
    data = tmp_path / "jpeg"
    for kind in ("grains", "disks"):
        (data / kind).mkdir(parents=True)
        for i in range(3):
            rgb = np.repeat(synthetic(kind, i, size=32)[..., None].astype(np.int16), 3, axis=-1)
            rgb = np.clip(rgb + rng.integers(-1, 2, rgb.shape), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(data / kind / f"{i}.jpg", quality=95, subsampling=0)
    code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / "j"), "--input-size",
                                       "32", "--epochs", "1", "--batch-size", "4", "--threads", "1", "--quiet", "--json"])
    assert code == 0 and out["in_channels"] == 1, (err, out)


def test_classify_a_folder_and_an_unreadable_training_image_say_so_once(tmp_path, capsys):
    """`classify DIR` said 'image file not found'; a broken training image was named twice in its message."""
    code, _, err = run_json(capsys, ["classify", str(tmp_path), "--model", "no-such-model"])
    assert code == 2 and "is a folder, not an image file" in err
    data = tmp_path / "data"
    for kind in ("grains", "disks"):
        (data / kind).mkdir(parents=True)
        Image.fromarray(synthetic(kind, 1)).save(data / kind / "a.png")
    bad = data / "disks" / "b.png"
    bad.write_bytes(b"not a png")
    code, _, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / "m"), "--json"])
    assert code == 2 and "cannot use this image for training" in err and err.count(str(bad)) == 1, err


def test_channels_auto_reprepares_the_grey_images_read_before_the_first_colour_one(tmp_path, capsys):
    """--channels auto holds one prepared array: grey until the first colour image, whose predecessors are then
    prepared again as RGB. The model equals the one --channels rgb trains on the same data."""
    from safetensors.numpy import load_file

    data = tmp_path / "mixed"
    for kind in ("grains", "disks"):
        (data / kind).mkdir(parents=True)
        for i in range(3):
            grey = synthetic(kind, i, size=32)
            rgb = np.stack([grey, grey, grey], axis=-1) if i < 2 else np.stack([grey, grey // 2, 255 - grey], axis=-1)
            Image.fromarray(rgb.astype(np.uint8)).save(data / kind / f"{i}.png")  # 0, 1 grey; 2 colour (read last)
    weights = {}
    for option in ("auto", "rgb"):
        code, out, err = run_json(capsys, ["train-classifier", str(data), "--out", str(tmp_path / option),
                                           "--channels", option, "--input-size", "32", "--epochs", "2",
                                           "--batch-size", "4", "--threads", "1", "--seed", "0", "--name", "same",
                                           "--quiet", "--json"])
        assert code == 0 and out["in_channels"] == 3, (err, out)
        weights[option] = load_file(str(next((tmp_path / option).glob("*.safetensors"))))
    assert weights["auto"].keys() == weights["rgb"].keys()
    assert all(np.array_equal(weights["auto"][k], weights["rgb"][k]) for k in weights["auto"])
