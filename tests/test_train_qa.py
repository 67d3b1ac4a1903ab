"""``micro-seg train`` QA findings: each bad input exits 2 with one line naming the file or flag, and no run
leaves a NaN model or a misleading number behind."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from micro_seg.cli import main
from micro_seg.errors import TrainingDataError
from micro_seg.training import TrainingDivergedError, train_segmenter

TINY = {"widths": (6, 12), "blocks": (1, 1)}
FAST = ["--epochs", "1", "--patch-size", "32", "--batch-size", "2", "--arch", "msnet-s", "--patches-per-epoch", "2"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_pair(img_dir, lab_dir, stem, *, size=(64, 64), seed=0, values=(1, 2), ext=".png"):
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 10, size)
    img[:, size[1] // 2 :] += 120
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(img_dir / f"{stem}{ext}")
    lab = np.zeros(size, np.uint8)
    lab[:, :6] = values[0]
    lab[:, -6:] = values[1]
    Image.fromarray(lab).save(lab_dir / f"{stem}.png")


def _one_line_exit_2(code, err):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err


# ------------------------------------------------------------ 1. NaN loss never makes a model


@pytest.mark.parametrize("option, value, words", [
    ("--class-weights", "0,0", "--class-weights are all 0"),
    ("--dice-weight", "nan", "--dice-weight must be a number >= 0, got nan"),
    ("--dice-weight", "inf", "--dice-weight must be a number >= 0, got inf"),
    ("--dice-weight", "-1", "--dice-weight must be a number >= 0"),
    ("--lr", "inf", "--lr must be a positive number"),
])
def test_non_finite_or_all_zero_loss_settings_are_refused_up_front(dirs, tmp_path, capsys, option, value, words):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright", *FAST,
                 option, value])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert words in err
    assert not out.exists()


def test_engine_refuses_all_zero_class_weights_and_non_finite_dice_or_lr():
    img = np.zeros((64, 64), np.uint8)
    lab = np.zeros((64, 64), np.int64)
    lab[:, :8] = 1
    lab[:, -8:] = 2
    common = dict(classes=["a", "b"], arch_kwargs=TINY, epochs=1, patch_size=32, batch_size=2, patches_per_epoch=2,
                  val_fraction=0, augment=False)
    for kw, match in (({"class_weights": [0, 0]}, "class_weights are all 0"),
                      ({"class_weights": [float("nan"), 1]}, "non-negative"),
                      ({"dice_weight": float("nan")}, "dice_weight must be"),
                      ({"lr": float("nan")}, "lr must be")):
        with pytest.raises(TrainingDataError, match=match):
            train_segmenter([img], [lab], **common, **kw)


def test_zero_weight_on_every_labelled_class_is_refused_before_training(dirs, tmp_path, capsys):
    """Only class 1 is labelled and its weight is 0: the weighted cross-entropy would be 0 / 0 = NaN at the first
    step. Refused up front, naming the labelled class, instead of stopping as 'diverged'."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a", values=(1, 1))
    out = tmp_path / "m"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright", *FAST,
                 "--epochs", "2", "--class-weights", "0,1", "--val-fraction", "0", "--quiet"])
    err = capsys.readouterr().err
    warning, error = err.strip().splitlines()  # 'bright' is never labelled: warned, then the one error line
    assert warning.startswith("warning:") and "class 'bright'" in warning
    _one_line_exit_2(code, error)
    assert "weight 0 to every class that has labelled pixels (dark)" in error
    assert not out.exists()


def test_nan_loss_during_training_stops_with_exit_2_and_writes_no_model(dirs, tmp_path, capsys, monkeypatch):
    import micro_seg.training as training

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    real_loss = training.segmentation_loss
    monkeypatch.setattr(training, "segmentation_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    out = tmp_path / "m"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright", *FAST,
                 "--epochs", "2", "--val-fraction", "0", "--quiet"])
    error = capsys.readouterr().err.strip()
    _one_line_exit_2(code, error)
    assert error.startswith("micro-seg: error: training diverged: loss is NaN at epoch 1")
    assert not out.exists()


def test_nan_weights_after_an_epoch_raise_diverged(monkeypatch):
    """A finite loss whose last update made the weights NaN is caught at the end of the epoch, before a
    checkpoint or a model is made."""
    img = np.zeros((64, 64), np.uint8)
    lab = np.zeros((64, 64), np.int64)
    lab[:, :8] = 1
    lab[:, -8:] = 2
    real_step = torch.optim.AdamW.step

    def poisoned_step(self, *a, **k):
        out = real_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned_step)
    with pytest.raises(TrainingDivergedError, match="training diverged: the weights are no longer finite .* epoch 1"):
        train_segmenter([img], [lab], classes=["a", "b"], arch_kwargs=TINY, epochs=2, patch_size=32, batch_size=2,
                        patches_per_epoch=2, val_fraction=0, augment=False)


# ------------------------------------------------------------ 2. --out / --checkpoint-dir checked before training


@pytest.mark.parametrize("flag", ["--out", "--checkpoint-dir"])
def test_output_folder_that_cannot_be_created_exits_2_before_training(dirs, tmp_path, capsys, flag):
    """/proc exists and is a folder, but nothing can be created in it: refused before any epoch is run."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    args = ["--out", "/proc/x"] if flag == "--out" else ["--out", str(out), "--checkpoint-dir", "/proc/x/ckpt"]
    code = main(["train", str(img_dir), str(lab_dir), *args, "--classes", "dark,bright", *FAST])
    captured = capsys.readouterr()
    _one_line_exit_2(code, captured.err)
    assert f"{flag} cannot be created or written there" in captured.err
    assert ("/proc/x" if flag == "--out" else "/proc/x/ckpt") in captured.err
    assert "epoch" not in captured.err and not out.exists()


def test_output_check_leaves_no_folder_behind(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs  # empty images folder: the run stops after the output check
    out = tmp_path / "new" / "deeper" / "m"
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--checkpoint-dir",
                 str(tmp_path / "ck" / "pt")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "ck").exists()


# ------------------------------------------------------------ 3. labels that are micrographs


def test_images_folder_given_as_labels_folder_exits_2(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    for labels in (img_dir, img_dir / ".." / "images"):
        code = main(["train", str(img_dir), str(labels), "--out", str(out), *FAST])
        err = capsys.readouterr().err
        _one_line_exit_2(code, err)
        assert str(labels) in err and "the labels folder is the images folder" in err
    assert not out.exists()


def test_more_than_64_inferred_classes_exits_2_naming_the_label_file(dirs, tmp_path, capsys):
    """A label 'image' that is a micrograph (values up to 200) would make 200 classes: refused, naming the file."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    _write_pair(img_dir, lab_dir, "b", seed=1)
    Image.fromarray(np.arange(64 * 64).reshape(64, 64).astype(np.uint8) % 201).save(lab_dir / "b.png")
    out = tmp_path / "m"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert str(lab_dir / "b.png") in err and "label value 200 would make 200 classes (at most 64" in err
    assert "look like a micrograph" in err
    assert not out.exists()
    # 64 classes are still inferred
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 65).astype(np.uint8)).save(lab_dir / "b.png")
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(json.loads(captured.out)["classes"]) == 64


# ------------------------------------------------------------ 4. a label value beyond the classes names the file


def test_label_value_beyond_the_classes_names_the_label_file(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    _write_pair(img_dir, lab_dir, "b", seed=1, values=(1, 8))
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), "--classes", "dark,bright",
                 *FAST])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert f"{lab_dir / 'b.png'}: label value 8 found but only 2 classes (dark, bright)" in err


# ------------------------------------------------------------ 5. two images with one stem


def test_two_images_with_one_stem_exit_2_naming_both(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "im0", ext=".tif")
    _write_pair(img_dir, lab_dir, "im0", ext=".png")
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert "two images with the stem 'im0'" in err
    assert str(img_dir / "im0.png") in err and str(img_dir / "im0.tif") in err
    assert "no labels for images" not in err


# ------------------------------------------------------------ 6. negative --input-scale


@pytest.mark.parametrize("scale", ["-1", "-0.5", "0", "nan", "5"])
def test_input_scale_out_of_range_gets_the_range_message(dirs, tmp_path, capsys, scale):
    err = _refused_option(dirs, tmp_path, capsys, "--input-scale", scale)
    assert "--input-scale must be between 0.05 and 4" in err and "--patch-size" not in err


def _refused_option(dirs, tmp_path, capsys, flag: str, value: str) -> str:
    """stderr of ``micro-seg train`` on one labelled pair with ``flag value``, which must be refused in one line
    (exit 2)."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, flag, value])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    return err


# ------------------------------------------------------------ 7. a grain model needs a boundary class


def test_grain_task_without_a_boundary_class_is_refused_before_training(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    for extra in (["--classes", "grain,edge"], []):  # named, or inferred (class1, class2)
        code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--task", "grains", *extra])
        err = capsys.readouterr().err
        _one_line_exit_2(code, err)
        assert "a grain model needs a boundary class named one of boundary, boundaries" in err
        assert ("--classes are grain, edge" if extra else "the classes are class1, class2") in err
        assert "epoch" not in err and not out.exists()
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--task", "grains",
                 "--classes", "grain,Boundary", "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["task"] == "grains"


def test_engine_refuses_a_grain_model_without_a_boundary_class():
    img = np.zeros((64, 64), np.uint8)
    lab = np.zeros((64, 64), np.int64)
    lab[:, :8] = 1
    lab[:, -8:] = 2
    with pytest.raises(TrainingDataError, match="a grain model needs a boundary class .*classes are grain, edge"):
        train_segmenter([img], [lab], classes=["grain", "edge"], task="grains", arch_kwargs=TINY, epochs=1,
                        patch_size=32, batch_size=2, patches_per_epoch=2, val_fraction=0, augment=False)


# ------------------------------------------------------------ 8. a class nobody labelled


def test_class_without_labelled_pixels_is_warned_on_stderr_and_in_json(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    for i, stem in enumerate(["a", "b"]):
        _write_pair(img_dir, lab_dir, stem, seed=i, values=(1, 3))  # value 2 ("pore") never drawn
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST,
                 "--classes", "dark,pore,bright", "--val-fraction", "0.5", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    (warning,) = result["warnings"]
    assert warning.startswith(f"{lab_dir}: class 'pore' (label value 2) has no labelled pixel in any label image")
    assert f"warning: {warning}" in captured.err
    assert "the mean IoU leaves it out" in warning
    assert set(result["validation"]["iou"]) == {"dark", "pore", "bright"}
    # every class labelled: no warning
    for i, stem in enumerate(["a", "b"]):
        _write_pair(img_dir, lab_dir, stem, seed=i, values=(1, 2))
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m2"), *FAST,
                 "--classes", "dark,bright", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["warnings"] == [] and "warning" not in captured.err


# ------------------------------------------------------------ 9. --resume without a checkpoint


def test_resume_without_a_checkpoint_says_it_starts_from_the_beginning(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out, ckpt = tmp_path / "m", tmp_path / "ckpt"
    common = ["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--classes", "dark,bright",
              "--checkpoint-dir", str(ckpt), "--json", "--quiet"]
    assert main(common + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert f"note: --resume: no checkpoint found in {ckpt}; training starts from the beginning" in err
    assert (ckpt / "last.json").exists()
    # with the checkpoint there, resuming says nothing of the kind
    assert main(common + ["--resume", "--epochs", "2"]) == 0
    assert "no checkpoint found" not in capsys.readouterr().err
    # without --resume, no note either
    assert main(common + ["--checkpoint-dir", str(tmp_path / "other")]) == 0
    assert "no checkpoint found" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated weights", "broken record"])
def test_resume_from_a_damaged_checkpoint_exits_2_naming_the_file(dirs, tmp_path, capsys, damage):
    """A truncated checkpoint weights file or a broken last.json crashed --resume with an internal error."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    ckpt = tmp_path / "ckpt"
    common = ["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, "--classes", "dark,bright",
              "--checkpoint-dir", str(ckpt), "--quiet"]
    assert main(common) == 0
    capsys.readouterr()
    if damage == "truncated weights":
        (bad,) = [p for p in ckpt.glob("last*.safetensors")]
        bad.write_bytes(bad.read_bytes()[:100])
    else:
        bad = ckpt / "last.json"
        bad.write_text('{"epoch": 0, "hist')
    assert main(common + ["--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    _one_line_exit_2(2, err)
    assert f"{bad}: checkpoint" in err and "train without --resume to start again" in err


def test_out_that_is_the_images_or_labels_folder_is_refused_and_replacing_a_model_is_said(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    for folder in (img_dir, lab_dir):
        code = main(["train", str(img_dir), str(lab_dir), "--out", str(folder), *FAST, "--classes", "dark,bright"])
        err = capsys.readouterr().err
        _one_line_exit_2(code, err)
        assert "--out is the" in err and not (folder / "card.yaml").exists()
    out = tmp_path / "m"
    common = ["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--classes", "dark,bright", "--quiet"]
    assert main(common) == 0
    assert "already holds a model" not in capsys.readouterr().err
    assert main(common) == 0
    assert f"note: {out} already holds a model; training replaces it when it ends" in capsys.readouterr().err


def test_retraining_into_a_models_folder_keeps_the_model_it_replaces(dirs, tmp_path, capsys, monkeypatch):
    """Users of peer tools ask for it (DOMAIN.md): retraining into a model's folder replaced the model, and a worse
    retrain could not be undone. The model replaced is now kept, loadable, in OUT/previous (one generation)."""
    from micro_seg.registry import load_model, sha256_file

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    common = ["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--classes", "dark,bright", "--quiet"]
    shas = []
    for seed in (1, 2, 3):
        assert main(common + ["--seed", str(seed)]) == 0
        shas.append(sha256_file(out / "model.safetensors"))
        err = capsys.readouterr().err
        if seed == 1:
            assert not (out / "previous").exists() and "keeps it" not in err
        else:
            assert f"keeps it in {out / 'previous'}" in err
            prev = load_model(out / "previous")  # checked against its card's sha256 on loading
            assert prev.card.weights_sha256 == shas[-2] != shas[-1]  # the model this run replaced
    assert len(set(shas)) == 3 and sorted(p.name for p in out.iterdir() if p.name.startswith("previous")) == ["previous"]
    # a copy that cannot be written (disk full) is an exit-2 error naming it, and the model in the folder is kept
    import shutil

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", full)
    assert main(common + ["--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'previous'}: cannot keep a copy of the model being replaced (No space left on device)" in err
    assert sha256_file(out / "model.safetensors") == shas[-1]
    assert load_model(out / "previous").card.weights_sha256 == shas[-2]  # the older copy is not given up either
    assert not (out / "previous.tmp").exists()


@pytest.mark.parametrize("fmt", ["bool tif", "0/1 png", "0/255 png"])
def test_mask_encoding_reads_0_1_masks_as_well_as_0_255(tmp_path, fmt):
    """With --label-encoding mask, a bool or 0/1 mask was all background (> 127 only): a model that learnt
    nothing, validated at mean IoU 1.0."""
    import tifffile

    from micro_seg.commands.train import _read_label

    mask = np.zeros((16, 16), bool)
    mask[4:9, 3:12] = True
    if fmt == "bool tif":
        path = tmp_path / "m.tif"
        tifffile.imwrite(path, mask)
    else:
        path = tmp_path / "m.png"
        Image.fromarray(mask.astype(np.uint8) * (1 if fmt == "0/1 png" else 255)).save(path)
    np.testing.assert_array_equal(_read_label(path, "mask"), np.where(mask, 2, 1))


def test_mask_encoding_reads_an_instance_mask_as_non_zero_foreground(tmp_path):
    """A uint16 instance mask (ids 1..275, as measure defects writes them) read with --label-encoding mask: ids
    1-127 became background under the old '> 127' rule."""
    import tifffile

    from micro_seg.commands.train import _read_label

    ids = np.zeros((20, 30), np.uint16)
    ids.ravel()[np.arange(0, 600, 2)[:275]] = np.arange(1, 276)
    tifffile.imwrite(tmp_path / "inst.tif", ids)
    warnings: list = []
    np.testing.assert_array_equal(_read_label(tmp_path / "inst.tif", "mask", warnings), np.where(ids > 0, 2, 1))
    assert warnings == []


def test_mask_encoding_warns_about_a_grey_8_bit_mask(tmp_path):
    from micro_seg.commands.train import _read_label

    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    mask[2, 2:6] = 40  # an anti-aliased edge
    Image.fromarray(mask).save(tmp_path / "m.png")
    grey: list = []
    np.testing.assert_array_equal(_read_label(tmp_path / "m.png", "mask", grey), np.where(mask > 0, 2, 1))
    assert grey == [tmp_path / "m.png"]


def test_an_8_bit_instance_mask_is_not_called_anti_aliased(tmp_path):
    """A uint8 instance mask with 255 objects (ids 1..255) was warned about as a mask with anti-aliased edges."""
    from micro_seg.commands.train import _read_label

    ids = np.zeros((32, 32), np.uint8)
    ids.ravel()[np.arange(0, 1020, 4)] = np.arange(1, 256)
    Image.fromarray(ids).save(tmp_path / "inst.png")
    grey: list = []
    np.testing.assert_array_equal(_read_label(tmp_path / "inst.png", "mask", grey), np.where(ids > 0, 2, 1))
    assert grey == []


def test_grey_masks_give_one_warning_with_their_count(dirs):
    """Each grey mask printed its own warning: 500 masks, 500 lines."""
    from micro_seg.commands.train import load_pairs

    img_dir, lab_dir = dirs
    for stem in "abcde":
        _write_pair(img_dir, lab_dir, stem)
        mask = np.zeros((64, 64), np.uint8)
        mask[:, 32:] = 255
        mask[:, 32] = 128  # an anti-aliased edge
        Image.fromarray(mask).save(lab_dir / f"{stem}.png")
    info: dict = {}
    load_pairs(img_dir, lab_dir, "mask", info)
    assert info["warnings"] == [f"{lab_dir}: 5 masks have grey values between 0 and 255 (anti-aliased edges?): "
                                "a.png, b.png, c.png (and 2 more); every non-zero pixel is read as foreground"]


@pytest.mark.parametrize("kind", ["a.jpg", "a.jpeg", "a.png holding a JPEG", "a.tif JPEG-compressed"])
def test_lossy_label_files_are_refused_naming_the_file(dirs, tmp_path, capsys, kind):
    """JPEG labels trained on classes made by compression artefacts (values 0..255 around every edge)."""
    import tifffile

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    lab = np.asarray(Image.open(lab_dir / "a.png"))
    (lab_dir / "a.png").unlink()
    name = kind.split()[0]
    if kind.endswith("JPEG-compressed"):
        tifffile.imwrite(lab_dir / name, lab, compression="jpeg")
    else:
        Image.fromarray(lab).save(lab_dir / name, format="JPEG")
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), "--classes", "a,b", *FAST])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert f"{lab_dir / name}: label file is JPEG-compressed (lossy)" in err and "save labels as PNG or TIFF" in err
    assert not (tmp_path / "m").exists()


_MAY_BE_LOSSY = {"jpegxl": "JPEGXL", "jpeg2000": "JPEG2000", "lerc": "LERC", "webp": "WEBP", "jpegxr": "JPEGXR"}


@pytest.mark.parametrize("kind", [*(f"a.tif {c}" for c in _MAY_BE_LOSSY), "a.webp lossy", "a.png holding a lossy WebP",
                                  "a.png holding a JPEG 2000"])
def test_label_files_whose_encoding_may_change_values_are_refused(tmp_path, kind):
    """Only JPEG was refused: a JPEG-XL or JPEG 2000 compressed TIFF, a lossy WebP under a .png name were trained
    on with their pixels changed."""
    import tifffile

    from micro_seg.commands.train import _read_plain

    lab = np.zeros((32, 32), np.uint8)
    lab[8:24, 8:24] = 2
    name, how = kind.split()[0], kind.split()[-1]
    if name.endswith(".tif"):
        try:
            tifffile.imwrite(tmp_path / name, np.dstack([lab] * 3) if how == "webp" else lab, compression=how)
        except (ValueError, NotImplementedError, RuntimeError) as exc:  # codec not in this imagecodecs
            pytest.skip(f"cannot write {how}: {exc}")
        encoding = _MAY_BE_LOSSY[how]
    else:
        encoding = "JPEG2000" if kind.endswith("2000") else "WEBP"
        Image.fromarray(lab).save(tmp_path / name, format=encoding, **({"quality": 80} if encoding == "WEBP" else {}))
    with pytest.raises(TrainingDataError, match=rf"{re.escape(str(tmp_path / name))}: label file is {encoding}-"
                                                r"compressed \(an encoding that can be lossy\).*save labels as PNG or "
                                                r"TIFF \(lossless\)"):
        _read_plain(tmp_path / name)


@pytest.mark.parametrize("kind", ["a.tif zlib", "a.tif lzw", "a.tif zstd", "a.tif packbits", "a.webp lossless",
                                  "a.bmp", "a.pgm", "a.png holding a TIFF"])
def test_losslessly_encoded_label_files_are_read(tmp_path, kind):
    import tifffile

    from micro_seg.commands.train import _read_plain

    lab = np.zeros((32, 32), np.uint8)
    lab[8:24, 8:24] = 2
    name = kind.split()[0]
    if name.endswith(".tif"):
        tifffile.imwrite(tmp_path / name, lab, compression=kind.split()[-1])
    elif kind == "a.webp lossless":
        Image.fromarray(lab).save(tmp_path / name, lossless=True)
    else:
        Image.fromarray(lab).save(tmp_path / name, format="TIFF" if kind.endswith("TIFF") else None)
    got = _read_plain(tmp_path / name)
    np.testing.assert_array_equal(got[..., 0] if got.ndim == 3 else got, lab)


def test_labels_of_the_area_segment_analyses_train_an_sem_image_with_a_data_bar(dirs, tmp_path, capsys):
    """segment writes labels without the data-bar rows (100 x 120 for a 124 x 120 image): train refused them as
    the wrong size, so segment -> correct -> train failed for every SEM image with a data bar."""
    import tifffile

    import data_builders as db
    from micro_seg.io import read_micrograph

    img_dir, lab_dir = dirs
    image = db.add_databar(db.grain_image((124, 120), seed=3), 24)
    tifffile.imwrite(img_dir / "sem.tif", image)
    assert read_micrograph(img_dir / "sem.tif").databar_rows == 24
    lab = np.zeros((100, 120), np.uint8)
    lab[:, :10], lab[:, -10:] = 1, 2
    Image.fromarray(lab).save(lab_dir / "sem.png")
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), "--classes", "a,b", *FAST,
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()  # its warnings (printed also with --quiet)
    Image.fromarray(np.zeros((110, 120), np.uint8)).save(lab_dir / "sem.png")  # neither size: refused
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m2"), "--classes", "a,b", *FAST])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert "labels are 110 x 120 but image sem.tif is 124 x 120 pixels (100 x 120 without its data bar)" in err


def test_pairing_skips_hidden_files_and_pairs_identical_stems_first(dirs):
    """A macOS '._a.png' AppleDouble copy was taken for an image (no label: exit 2), and the image
    'Ti6Al4V_mask.png' could not pair with the label of the same name (its '_mask' was stripped)."""
    from micro_seg.commands.train import find_pairs

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    _write_pair(img_dir, lab_dir, "Ti6Al4V_mask")
    _write_pair(img_dir, lab_dir, "b")
    (lab_dir / "b.png").rename(lab_dir / "b_mask.png")
    for d in (img_dir, lab_dir):
        (d / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert [(i.name, l.name) for i, l in find_pairs(img_dir, lab_dir)] == [
        ("Ti6Al4V_mask.png", "Ti6Al4V_mask.png"), ("a.png", "a.png"), ("b.png", "b_mask.png")]


def test_dense_labels_out_of_range_name_the_value_in_the_file(dirs, capsys):
    """A dense map holding 0, 1, 2 with two classes: the message named value 3 (the value after the +1 shift)."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a", values=(1, 2))
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(img_dir.parent / "m"), "--classes", "a,b",
                 "--label-encoding", "dense", *FAST, "--quiet"])
    err = capsys.readouterr().err.strip()
    _one_line_exit_2(code, err)
    assert "a.png: label value 2 found but only 2 classes" in err and "value v = class v + 1" in err


@pytest.mark.parametrize("classes, words", [("pore,pore", "['pore'] given more than once")])
def test_class_names_given_twice_are_refused_before_training(dirs, tmp_path, capsys, classes,
                                                                               words):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", classes, *FAST])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert words in err and not out.exists()


def _write_calibrated_pair(img_dir, lab_dir, stem, px, *, pages=1):
    import tifffile

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(60, 10, (64, 64)), 0, 255).astype(np.uint8)
    img[:, 32:] += 120
    data = np.stack([img] * pages) if pages > 1 else img
    kwargs = {} if px is None else {"resolution": (1e4 / px, 1e4 / px), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(img_dir / f"{stem}.tif", data, photometric="minisblack", **kwargs)
    lab = np.zeros((64, 64), np.uint8)
    lab[:, :6], lab[:, -6:] = 1, 2
    Image.fromarray(lab).save(lab_dir / f"{stem}.png")


def test_the_card_records_the_pixel_sizes_trained_on_not_the_base_models(dirs, tmp_path, capsys, monkeypatch):
    """A fine-tune kept its base's range (0.4-0.6 um) after training at 0.05 um: segmenting its own training images
    warned they were outside the range, and 0.5 um images did not."""
    import yaml

    from data_builders import threshold_net
    from micro_seg.registry import ModelCard, save_model

    base = save_model(tmp_path / "base", threshold_net(3, 1),
                      ModelCard(name="base", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]},
                                in_channels=1, classes=["bg", "dark", "bright"], tile_size=64,
                                normalisation={"mode": "minmax"}, pixel_size_um_range=(0.4, 0.6)))
    img_dir, lab_dir = dirs
    _write_calibrated_pair(img_dir, lab_dir, "a", 0.05)
    _write_calibrated_pair(img_dir, lab_dir, "b", 0.08)
    fast = [a for a in FAST if a not in ("--arch", "msnet-s")]
    out = tmp_path / "ft"
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), "--base", str(base), "--classes",
                 "dark,bright", *fast, "--val-fraction", "0"])
    assert code == 0, capsys.readouterr().err
    assert yaml.safe_load((out / "card.yaml").read_text())["pixel_size_um_range"] == [0.05, 0.08]
    _write_calibrated_pair(img_dir, lab_dir, "c", None)  # one uncalibrated image: the range is unknown
    out2 = tmp_path / "ft2"
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(out2), "--base", str(base), "--classes",
                 "dark,bright", *fast, "--val-fraction", "0"]) == 0
    assert yaml.safe_load((out2 / "card.yaml").read_text())["pixel_size_um_range"] is None


def test_multi_page_training_files(dirs, tmp_path, capsys):
    """A 3-page label TIFF was read as colour ('labels are 3 x 96 ...'); a 2-page image trained on page 0 without
    a word."""
    import tifffile

    img_dir, lab_dir = dirs
    _write_calibrated_pair(img_dir, lab_dir, "a", 0.5, pages=2)
    capsys.readouterr()
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), "--classes", "dark,bright",
                 *FAST, "--val-fraction", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "a.tif" in err and "page" in err
    (lab_dir / "a.png").unlink()
    tifffile.imwrite(lab_dir / "a.tif", np.ones((3, 64, 64), np.uint8), photometric="minisblack")
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m2"), "--classes", "dark,bright",
                 *FAST])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert "label file has 3 pages" in err


# ------------------------------------------------------------ class names the training data records


def test_train_takes_class_names_from_the_annotate_schema(dirs, tmp_path, capsys):
    """napari Annotate saves classes.json next to images/ and labels/; `micro-seg train` without --classes named
    the classes class1, class2, so the model measured 'class1' instead of 'ferrite'."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    (lab_dir.parent / "classes.json").write_text(json.dumps({"classes": ["ferrite", "pearlite"]}))
    out = tmp_path / "m"
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["classes"] == ["ferrite", "pearlite"]
    assert "classes ferrite, pearlite from" in cap.err
    # --classes still wins, with a warning when it disagrees with the schema
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m2"), *FAST, "--json",
                 "--classes", "pearlite,ferrite"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["classes"] == ["pearlite", "ferrite"]
    assert "--classes names the classes pearlite, ferrite but" in cap.err


def test_train_reads_class_maps_recorded_by_segment(dirs, tmp_path, capsys):
    """Class maps written by `micro-seg segment` record their names (value v = classes[v]): with --label-encoding
    dense they name the classes; read as sparse, the first class would be 'unlabelled', which is now said."""
    from micro_seg.io import write_labels

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    (lab_dir / "a.png").unlink()
    lab = np.zeros((64, 64), np.uint8)
    lab[:, 32:] = 1
    write_labels(lab_dir / "a_labels.tif", lab, classes=["matrix", "pore"])
    out = tmp_path / "m"
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--json",
                 "--label-encoding", "dense"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["matrix", "pore"]
    main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m2"), *FAST, "--json"])
    err = capsys.readouterr().err
    assert "value 0 = 'matrix'" in err and "use --label-encoding dense" in err
    # a two-class map read as a mask (0 = the first class, 1 = the second) keeps its names
    main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m3"), *FAST, "--json",
          "--label-encoding", "mask"])
    cap = capsys.readouterr()
    assert json.loads(cap.out)["classes"] == ["matrix", "pore"]
    assert [ln for ln in cap.err.splitlines() if ln.startswith("warning") and "no validation (one training" not in ln] \
        == []


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan"])
def test_val_fraction_out_of_range_names_the_flag(dirs, tmp_path, capsys, value):
    err = _refused_option(dirs, tmp_path, capsys, "--val-fraction", value)
    assert f"--val-fraction must be at least 0 and below 1 (the fraction of the images held out for validation), " \
           f"got {float(value)}" in err


def test_json_warnings_hold_every_warning_printed_and_the_card_says_what_was_kept(dirs, tmp_path, capsys):
    """The JSON 'warnings' held only the sparse-class warnings: patch padding, reader and mask warnings were on
    stderr only; a one-image run kept the lowest-loss epoch without a word."""
    from micro_seg.registry import load_card

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    mask[:, 32] = 128  # an anti-aliased edge
    Image.fromarray(mask).save(lab_dir / "a.png")
    out = tmp_path / "m"
    args = ["train", str(img_dir), str(lab_dir), "--out", str(out), "--classes", "dark,bright", "--epochs", "1",
            "--patch-size", "128", "--batch-size", "2", "--patches-per-epoch", "2", "--arch", "msnet-s",
            "--label-encoding", "mask", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = [ln[len("warning: "):] for ln in captured.err.splitlines() if ln.startswith("warning: ")]
    warnings = json.loads(captured.out)["warnings"]
    assert warnings == printed and len(warnings) == 3, (warnings, printed)
    assert [w.split(" ")[0] for w in warnings] == [f"{lab_dir / 'a.png'}:", "no", "patch"]
    assert "mask has grey values" in warnings[0] and "(--patch-size)" in warnings[2]
    assert "no validation (one training image" in warnings[1]
    assert load_card(out).extra["training"]["kept"] == "the lowest training loss (no validation images)"
    # --quiet hid the warnings of the start of training (no validation, patch size) but not the others: it hides
    # progress lines only
    assert main(args + ["--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warnings"] == warnings
    assert [ln for ln in captured.err.splitlines() if not ln.startswith("note: ")] == [f"warning: {w}" for w in warnings]


@pytest.mark.parametrize("channels", [3, 2])
def test_16_bit_colour_png_labels_keep_their_values(tmp_path, channels):
    """micro-seg train read label PNGs through Pillow, which keeps only the high byte of a 16-bit RGB or
    grey + alpha PNG: sparse labels 1..3 all read as 0 (unlabelled), while read_labels (napari, measure) read
    them right; the dataset loaders had the same reader."""
    import imagecodecs

    from micro_seg.commands.train import _read_label
    from micro_seg.datasets import _read

    labels = (np.arange(96).reshape(8, 12) % 4).astype(np.uint16)
    stored = np.repeat(labels[..., None], 3, axis=2) if channels == 3 else np.stack([labels, labels * 0 + 65535], -1)
    (tmp_path / "l.png").write_bytes(imagecodecs.png_encode(stored))
    np.testing.assert_array_equal(_read_label(tmp_path / "l.png", "sparse"), labels)
    np.testing.assert_array_equal(_read(tmp_path / "l.png"), stored)


def test_resuming_a_fine_tune_named_after_its_base(dirs, tmp_path, capsys, monkeypatch):
    """``train ... --out base --base base`` again (or with ``--resume``) where the first run stopped: ./base holds the
    checkpoint and no card yet, so it is not the base model; the registered model 'base' is (it is not refused as a
    cardless folder with weights)."""
    from data_builders import threshold_net
    from micro_seg.registry import ModelCard, save_model

    reg = tmp_path / "registry"
    save_model(reg / "base", threshold_net(3, 1),
               ModelCard(name="base", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]},
                         in_channels=1, classes=["bg", "dark", "bright"], tile_size=64,
                         normalisation={"mode": "minmax"}))
    monkeypatch.setenv("MICRO_SEG_MODELS", str(reg))
    img_dir, lab_dir = dirs
    _write_calibrated_pair(img_dir, lab_dir, "a", 0.5)
    work = tmp_path / "work"
    (work / "base" / "checkpoint").mkdir(parents=True)
    (work / "base" / "checkpoint" / "last-1.safetensors").write_bytes(b"x")  # what a stopped run leaves
    monkeypatch.chdir(work)
    fast = [a for a in FAST if a not in ("--arch", "msnet-s")]
    code = main(["train", str(img_dir), str(lab_dir), "--out", "base", "--base", "base", "--classes", "dark,bright",
                 *fast, "--val-fraction", "0"])
    assert code == 0, capsys.readouterr().err
    assert (work / "base" / "card.yaml").is_file()


# ------------------------------------------------------------ a full disk while training


def _disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_checkpointing_exits_2_naming_the_file_and_leaves_no_partial_file(dirs, tmp_path, capsys,
                                                                                            monkeypatch):
    """A disk that filled while a checkpoint was written ended training with 'internal error: OSError' (exit 1) and
    left the half-written ``last-0.safetensors.tmp`` filling the disk."""
    import os

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    monkeypatch.setattr(os, "fsync", _disk_full)
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--classes", "dark,bright", "--quiet",
                 "--val-fraction", "0"])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert f"{out / 'checkpoint' / 'last-0.safetensors'}: cannot write weights (No space left on device)" in err
    assert not list(out.rglob("*.tmp")), list(out.rglob("*"))


def test_weights_interrupted_while_written_leave_no_partial_file(tmp_path, monkeypatch):
    """Ctrl-C while a checkpoint's weights were written left last-N.safetensors.tmp (megabytes) behind."""
    import os

    from micro_seg.registry import write_safetensors

    def stop(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", stop)
    with pytest.raises(KeyboardInterrupt):
        write_safetensors({"w": torch.ones(4)}, tmp_path / "last-3.safetensors")
    assert not list(tmp_path.iterdir())


def test_a_text_file_that_cannot_be_replaced_keeps_the_old_one_and_no_temporary(tmp_path, monkeypatch):
    import os

    from micro_seg.errors import OutputPathError
    from micro_seg.registry import replace_text

    record = tmp_path / "last.json"
    record.write_text("old", encoding="utf-8")
    monkeypatch.setattr(os, "replace", _disk_full)
    with pytest.raises(OutputPathError, match=r"last\.json: cannot write file \(No space left on device\)"):
        replace_text(record, "new")
    assert record.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json"]


def test_a_stopped_training_says_how_to_go_on_from_its_checkpoint(dirs, tmp_path, capsys, monkeypatch):
    """Ctrl-C (or SIGTERM) during training said only 'micro-seg: interrupted': nothing told the user that the epochs
    done were in the checkpoint, nor how to continue or to make the model from them."""
    import micro_seg.training as training

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    common = ["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--classes", "dark,bright", "--quiet",
              "--val-fraction", "0"]
    write_record = training._write_checkpoint_record

    def stop_after_epoch_2(ckpt, meta):
        write_record(ckpt, meta)
        if meta["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_write_checkpoint_record", stop_after_epoch_2)
    assert main(common + ["--epochs", "5"]) == 130
    err = capsys.readouterr().err
    assert (f"note: training stopped; the checkpoint {out / 'checkpoint'} holds 2 of the 5 epochs: the same command "
            "with --resume continues from there (with --resume --epochs 2, it writes the model from it now)") in err
    assert not (out / "card.yaml").exists()
    monkeypatch.setattr(training, "_write_checkpoint_record", write_record)
    # the continued run stopped again before its next epoch ended: the checkpoint still holds the 2 epochs done
    def stop_at_once(*args, **kwargs):
        raise KeyboardInterrupt

    loss = training.segmentation_loss
    monkeypatch.setattr(training, "segmentation_loss", stop_at_once)
    assert main(common + ["--epochs", "5", "--resume"]) == 130
    assert f"note: training stopped; the checkpoint {out / 'checkpoint'} holds 2 of the 5 epochs" in \
        capsys.readouterr().err
    monkeypatch.setattr(training, "segmentation_loss", loss)
    assert main(common + ["--epochs", "2", "--resume", "--json"]) == 0  # the model from the two epochs done
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 2
    assert (out / "card.yaml").is_file()

    # stopped before its first checkpoint: the record in the folder is the earlier run's, not offered
    monkeypatch.setattr(training, "segmentation_loss", stop_at_once)
    assert main(common + ["--epochs", "5"]) == 130
    assert "note: training stopped" not in capsys.readouterr().err


def test_a_full_disk_after_some_epochs_says_the_checkpoint_keeps_them(dirs, tmp_path, capsys, monkeypatch):
    import os

    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    out = tmp_path / "m"
    fsync, calls = os.fsync, []

    def fill_up(fd):
        calls.append(fd)
        if len(calls) > 2:  # epoch 1's weights (last and best) fit, epoch 2's do not
            _disk_full()
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fill_up)
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(out), *FAST, "--classes", "dark,bright", "--quiet",
                 "--val-fraction", "0", "--epochs", "4"])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert (f"{out / 'checkpoint' / 'last-1.safetensors'}: cannot write weights (No space left on device); the "
            f"checkpoint {out / 'checkpoint'} holds 1 of the 4 epochs: the same command with --resume") in err


# ------------------------------------------------------------ binary masks read as sparse labels


@pytest.mark.parametrize("foreground, classes, says", [
    (255, None, "label value 255 would make 255 classes (at most 64 are inferred): the label files hold only 0 and "
                "255, as binary masks do: --label-encoding mask reads 0 as the first class"),
    (255, "matrix,pore", "label value 255 found but only 2 classes (matrix, pore); 0 = unlabelled, class c = value c; "
                         "the label files hold only 0 and 255, as binary masks do: --label-encoding mask"),
])
def test_binary_masks_read_as_sparse_labels_name_the_mask_encoding(dirs, tmp_path, capsys, foreground, classes, says):
    """0/255 masks with the default --label-encoding sparse were called 'a micrograph, not a label image' (or a
    value beyond the classes), without a word of --label-encoding mask."""
    img_dir, lab_dir = dirs
    for stem in ("a", "b"):
        _write_pair(img_dir, lab_dir, stem, values=(0, foreground))
    argv = ["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, "--quiet"]
    code = main(argv + (["--classes", classes] if classes else []))
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert f"{lab_dir / 'a.png'}: {says}" in err, err


def test_a_0_1_mask_whose_background_is_read_as_unlabelled_names_the_mask_encoding(dirs, tmp_path, capsys):
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a", values=(0, 1))
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, "--classes", "matrix,pore",
                 "--quiet", "--val-fraction", "0", "--json"])
    assert code == 0
    (warning,) = [w for w in json.loads(capsys.readouterr().out)["warnings"] if "no labelled pixel" in w]
    assert warning.endswith("class 'pore' (label value 2) has no labelled pixel in any label image: the model cannot "
                            "learn it and validation cannot measure it (the mean IoU leaves it out); the label files "
                            "hold only 0 and 1, as binary masks do: --label-encoding mask reads 0 as the first class "
                            "(background) and any non-zero value as the second")


# ------------------------------------------------------------ grain instances given as training labels


@pytest.mark.parametrize("encoding", ["sparse", "dense"])
def test_grain_instance_labels_written_by_segment_are_not_trained_as_classes(dirs, tmp_path, capsys, encoding):
    """The <stem>_labels.tif of a grain model (each grain its own number) trained a model of one class per grain
    (class1 ... class28), without a word."""
    from micro_seg.io import write_labels
    from micro_seg.synth import voronoi_labels

    img_dir, lab_dir = dirs
    grains = voronoi_labels((64, 64), n_grains=12, seed=0)
    Image.fromarray(np.where(grains % 2 == 0, 60, 180).astype(np.uint8)).save(img_dir / "a.png")
    lab = write_labels(lab_dir / "a_labels.tif", grains, instances=True)
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, "--quiet",
                 "--label-encoding", encoding])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert f"{lab}: an instance label image (each grain or object its own number" in err
    assert f"--label-encoding {encoding} would make a class of every object" in err
    assert not (tmp_path / "m").exists()
    # read as a mask (objects against background), as defect instance masks are, it trains
    assert main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, "--quiet",
                 "--label-encoding", "mask", "--val-fraction", "0"]) == 0


def test_a_validation_image_that_is_a_copy_of_a_training_image_is_warned(dirs, tmp_path, capsys):
    """A copy of a training image held out for validation made the card's validation figures optimistic in silence
    (train-classifier warns of such copies)."""
    img_dir, lab_dir = dirs
    for stem in ("a", "b", "c"):
        _write_pair(img_dir, lab_dir, stem, seed=0)  # the same pixels three times
    argv = ["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, "--classes", "dark,bright",
            "--quiet", "--json", "--val-fraction", "0.34"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    (val,) = result["validation_images"]
    (warning,) = [w for w in result["warnings"] if "copies" in w]
    assert warning.startswith(f"1 validation image(s) are pixel-identical copies of training images (e.g. "
                              f"{img_dir / val} = ") and "optimistic" in warning
    for seed, stem in enumerate(("a", "b", "c")):  # three different images: nothing to say
        _write_pair(img_dir, lab_dir, stem, seed=seed)
    assert main(argv) == 0
    assert not [w for w in json.loads(capsys.readouterr().out)["warnings"] if "copies" in w]


@pytest.mark.parametrize("which", ["images", "labels"])
def test_a_folder_of_sub_folders_says_they_are_not_searched(dirs, tmp_path, capsys, which):
    """Images (or labels) kept in one sub-folder per specimen gave 'no images found' though the folder is full of
    them."""
    img_dir, lab_dir = dirs
    _write_pair(img_dir, lab_dir, "a")
    folder = img_dir if which == "images" else lab_dir
    (folder / "specimen1").mkdir()
    for f in list(folder.glob("*.png")):
        f.rename(folder / "specimen1" / f.name)
    code = main(["train", str(img_dir), str(lab_dir), "--out", str(tmp_path / "m"), *FAST, "--quiet"])
    err = capsys.readouterr().err
    _one_line_exit_2(code, err)
    assert f"{folder}: no {'images' if which == 'images' else 'label images'} found" in err
    assert "sub-folders are not searched: give the folder that holds the files" in err
