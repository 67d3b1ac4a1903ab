import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from micro_seg import inference
from micro_seg.cli import main
from micro_seg.io import read_labels
from micro_seg.registry import ModelCard, load_card, save_model
from micro_seg.synth import voronoi_labels
from micro_seg.synth.render import grain_boundaries

from data_builders import faint_boundary_image, threshold_net


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(inference, "_threads_configured", True)
    torch.set_num_threads(1)


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    root = tmp_path / "models"
    grains = ModelCard(name="test-grains", task="grains", arch="msnet", arch_kwargs={"widths": [4, 8]},
                       in_channels=1, classes=["grain", "boundary"], tile_size=64,
                       normalisation={"mode": "minmax"}, pixel_size_um_range=(0.2, 1.0))
    save_model(root / "test-grains", threshold_net(2, 1), grains)
    pores = ModelCard(name="test-pores", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]},
                      in_channels=1, classes=["matrix", "pore", "crack"], defect_classes=["pore", "crack"],
                      tile_size=64, normalisation={"mode": "minmax"})
    save_model(root / "test-pores", threshold_net(3, 1), pores)
    monkeypatch.setenv("MICRO_SEG_MODELS", str(root))
    return root


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_models_list_json(model_dir, capsys):
    code, out, _ = _run(["models", "list", "--json"], capsys)
    assert code == 0
    models = {m["name"]: m for m in json.loads(out)["models"]}
    assert {"test-grains", "test-pores"} <= set(models)
    g = models["test-grains"]
    assert g["task"] == "grains" and g["classes"] == ["grain", "boundary"] and len(g["sha256"]) == 64
    code, out, _ = _run(["models", "show", "test-pores", "--json"], capsys)
    assert code == 0 and json.loads(out)["defect_classes"] == ["pore", "crack"]


def test_models_list_says_which_folders_it_left_out(model_dir, tmp_path, capsys):
    """A broken card and a second model of an already listed name are not listed, and the user is told why."""
    import shutil

    broken = model_dir / "broken"
    broken.mkdir()
    (broken / "card.yaml").write_text("name: [unclosed\n")
    extra = tmp_path / "more"
    shutil.copytree(model_dir / "test-pores", extra / "pores-copy")
    code, out, err = _run(["models", "list", "--json", "--path", str(extra)], capsys)
    assert code == 0
    data = json.loads(out)
    assert [m["name"] for m in data["models"]].count("test-pores") == 1
    reasons = {Path(s["folder"]).name: s["reason"] for s in data["skipped"]}
    assert "not valid YAML" in reasons["broken"]
    assert "'test-pores' is already listed from" in reasons["test-pores"]  # the copy given first hides the original
    assert len(err.strip().splitlines()) == 2 and all(l.startswith("warning: ") for l in err.strip().splitlines())


def test_models_list_skips_a_copy_whose_weights_fail_so_the_working_model_is_listed(model_dir, tmp_path, capsys):
    """A tampered copy given with --path hid the working model of the same name, and was listed with the card's
    sha256, not its file's."""
    import shutil

    extra = tmp_path / "more"
    shutil.copytree(model_dir / "test-pores", extra / "pores-copy")
    weights = extra / "pores-copy" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, out, err = _run(["models", "list", "--json", "--path", str(extra)], capsys)
    assert code == 0
    listed = {m["name"]: m for m in json.loads(out)["models"]}
    assert Path(listed["test-pores"]["folder"]) == model_dir / "test-pores"
    reasons = {Path(s["folder"]).name: s["reason"] for s in json.loads(out)["skipped"]}
    assert "does not match the card's" in reasons["pores-copy"] and "pores-copy" in err


def test_unknown_model_exit_2_lists_names(model_dir, tmp_path, capsys):
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint8))
    code, out, err = _run(["segment", str(img), "--model", "nope", "--out", str(tmp_path / "o"), "--json"], capsys)
    assert code == 2 and out == ""
    assert "nope" in err and "test-grains" in err and len(err.strip().splitlines()) == 1


def test_tampered_model_refused_by_cli(model_dir, tmp_path, capsys):
    w = model_dir / "test-grains" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint8))
    code, _, err = _run(["segment", str(img), "--model", "test-grains", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "sha256" in err and "model.safetensors" in err


def _grain_image(tmp_path, seed=0):
    truth = voronoi_labels((160, 200), n_grains=30, seed=seed, kind="hardcore")
    bright = ndi.binary_dilation(grain_boundaries(truth))
    img = np.where(bright, 220, 40).astype(np.uint8)
    path = tmp_path / "grains.tif"
    tifffile.imwrite(path, img)
    return path, truth, bright


def test_segment_grains_writes_labels_and_probabilities(model_dir, tmp_path, capsys):
    path, truth, bright = _grain_image(tmp_path)
    out_dir = tmp_path / "out"
    code, out, err = _run(["segment", str(path), "--model", "test-grains", "--out", str(out_dir),
                           "--pixel-size", "0.5", "--probabilities", "--min-grain", "4", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["labels"] == str(out_dir / "grains_labels.tif")
    assert res["classes"] == ["grain", "boundary"] and res["seconds"] > 0
    labels, px = read_labels(res["labels"])
    assert px == pytest.approx(0.5)
    assert labels.shape == truth.shape
    assert np.all(labels[bright] == 0)
    comps, n = ndi.label(~bright)
    assert labels.max() == np.sum(np.bincount(comps.ravel())[1:] >= 4) == res["n_grains"]
    probs = tifffile.imread(res["probabilities"])
    assert probs.shape == (2, *truth.shape) and probs.dtype == np.float32
    assert probs[1][bright].min() > 0.99 and probs[1][~bright].max() < 0.01
    assert res["warnings"] == []
    # grain instances, so that train refuses to read each grain number as a class
    from micro_seg.io import labels_are_instances

    assert labels_are_instances(res["labels"]) and not labels_are_instances(res["probabilities"])


def test_analyze_grains_matches_measure_of_truth(model_dir, tmp_path, capsys):
    from micro_seg.measure import measure_grains

    path, truth, bright = _grain_image(tmp_path, seed=2)
    code, out, err = _run(["analyze", str(path), "--model", "test-grains", "--pixel-size", "0.5",
                           "--min-grain", "4", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["model"] == "test-grains" and res["pixel_size_um"] == 0.5
    ref = measure_grains(truth, pixel_size_um=0.5).summary
    g = res["grains"]
    for key in ("n_grains", "grains_per_mm2", "G_planimetric", "mean_intercept_um", "G_intercept", "ala_G"):
        assert key in g
    assert g["mean_intercept_um"] == pytest.approx(ref["mean_intercept_um"], rel=0.05)
    assert abs(g["G_intercept"] - ref["G_intercept"]) < 0.15


def test_analyze_without_pixel_size_and_out_of_range_warning(model_dir, tmp_path, capsys):
    path, _, _ = _grain_image(tmp_path)
    code, out, _ = _run(["analyze", str(path), "--model", "test-grains", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["pixel_size_um"] is None and res["grains"]["G_intercept"] is None
    assert any("pixel size" in w for w in res["warnings"])
    code, out, _ = _run(["analyze", str(path), "--model", "test-grains", "--pixel-size", "5", "--json"], capsys)
    assert any("outside the range" in w for w in json.loads(out)["warnings"])
    # a model without grains is not told "G is null": what an uncalibrated image costs it is said instead
    code, out, _ = _run(["analyze", str(path), "--model", "test-pores", "--json"], capsys)
    warnings = json.loads(out)["warnings"]
    assert not any("G is null" in w for w in warnings)
    assert any("no pixel size: defect sizes in pixels" in w for w in warnings)


def test_analyze_without_pixel_size_says_so_once(model_dir, tmp_path, capsys):
    """A phase model on an uncalibrated image gave two overlapping "no pixel size" warnings (the phase
    measurement's and analyze's own note), a defect model three, a grain model two; and each nested summary
    repeated its own: one note now, in the top-level warnings."""
    phases = ModelCard(name="test-phases", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]},
                       in_channels=1, classes=["matrix", "precipitate"], tile_size=64,
                       normalisation={"mode": "minmax"})
    save_model(model_dir / "test-phases", threshold_net(2, 1), phases)
    path, _, _ = _grain_image(tmp_path)

    def no_scale(value):  # every "no pixel size" message anywhere in the result
        if isinstance(value, str):
            return [value] if "no pixel size" in value else []
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        return [w for v in items for w in no_scale(v)]

    for model, says in (("test-phases", "phase fractions are unaffected"), ("test-pores", "defect sizes in pixels"),
                        ("test-grains", "G is null")):
        code, out, err = _run(["analyze", str(path), "--model", model, "--json"], capsys)
        assert code == 0, err
        res = json.loads(out)
        assert len(no_scale(res)) == 1 and says in no_scale(res["warnings"])[0], (model, no_scale(res))
    code, out, _ = _run(["analyze", str(path), "--model", "test-phases", "--pixel-size", "0.5", "--json"], capsys)
    assert no_scale(json.loads(out)) == []


def test_analyze_pores_phases_and_defects(model_dir, tmp_path, capsys):
    img = np.full((120, 160), 40, np.uint8)
    yy, xx = np.mgrid[:120, :160]
    centres = [(20, 20, 6), (60, 100, 8), (90, 30, 5)]
    for r, c, rad in centres:
        img[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = 230
    path = tmp_path / "pores.png"
    from PIL import Image

    Image.fromarray(img).save(path)
    code, out, err = _run(["analyze", str(path), "--model", "test-pores", "--pixel-size", "1.0", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    true_fraction = float(np.mean(img > 128))
    assert res["phases"]["phase_fractions"]["pore"] == pytest.approx(true_fraction, abs=1e-9)
    assert res["defects"]["count"] == 3
    assert res["defects_by_class"]["pore"]["count"] == 3 and res["defects_by_class"]["crack"]["count"] == 0
    code, out, err = _run(["segment", str(path), "--model", "test-pores", "--out", str(tmp_path / "o"), "--json"], capsys)
    labels, _ = read_labels(json.loads(out)["labels"])
    np.testing.assert_array_equal(labels, (img > 128).astype(labels.dtype))


def test_segment_of_a_long_image_name_writes_its_labels_or_refuses_it_before_the_work(model_dir, tmp_path, capsys):
    """An image named with 80 CJK characters (240 bytes): '<stem>_labels.tif' fits a file name's 255 bytes, but
    segment said 'internal error: OSError: File name too long' (its temporary name was 33 bytes longer), exit 1."""
    path, truth, _ = _grain_image(tmp_path)
    long_path = path.with_name("晶" * 80 + ".tif")
    path.rename(long_path)
    out_dir = tmp_path / "out"
    code, out, err = _run(["segment", str(long_path), "--model", "test-grains", "--out", str(out_dir), "--json"],
                          capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["labels"] == str(out_dir / ("晶" * 80 + "_labels.tif"))
    assert read_labels(res["labels"])[0].shape == truth.shape
    assert sorted(os.listdir(out_dir)) == ["晶" * 80 + "_labels.tif"]  # no temporary left
    # '<stem>_probabilities.tif' (and its temporary) cannot fit: refused before the work, naming the image
    code, out, err = _run(["segment", str(long_path), "--model", "test-grains", "--out", str(out_dir),
                           "--probabilities"], capsys)
    assert code == 2 and "internal error" not in err and len(err.strip().splitlines()) == 1
    assert f"{long_path}: its name is too long for segment's output" in err and "_probabilities.tif" in err


def test_segment_bad_image_exit_2(model_dir, tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    code, out, err = _run(["segment", str(bad), "--model", "test-grains", "--out", str(tmp_path / "o"), "--json"], capsys)
    assert code == 2 and "broken.tif" in err


def test_models_list_human_readable(model_dir, capsys):
    code, out, _ = _run(["models", "list"], capsys)
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("test-grains:"))
    assert "grains: grain, boundary" in line and "sha256" in line


def test_segment_post_processing_options(model_dir, tmp_path, capsys):
    """A faint boundary at probability ~0.29 (the test net's boundary logit is 40 (x - 0.5) per class):
    one grain at the default threshold 0.5, two with --boundary-threshold 0.2; bad values exit 2."""
    path = tmp_path / "faint.tif"
    tifffile.imwrite(path, faint_boundary_image())
    base = ["segment", str(path), "--model", "test-grains", "--out", str(tmp_path / "o"), "--min-grain", "4", "--json"]
    code, out, err = _run(base, capsys)
    assert code == 0, err
    assert json.loads(out)["n_grains"] == 1
    code, out, err = _run(base + ["--boundary-threshold", "0.2"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_grains"] == 2
    code, out, err = _run(base + ["--boundary-threshold", "1.5"], capsys)
    assert code == 2 and "--boundary-threshold" in err and "Traceback" not in err
    code, out, err = _run(base + ["--split-ratio", "-1"], capsys)
    assert code == 2 and "--split-ratio must be a finite number >= 0" in err and "Traceback" not in err
    # a phase model has no grain post-processing: the option is refused, not silently ignored
    for command in ("segment", "analyze"):
        argv = [command, str(path), "--model", "test-pores", "--split-ratio", "3", "--min-grain", "9", "--json"]
        code, out, err = _run(argv + (["--out", str(tmp_path / "p")] if command == "segment" else []), capsys)
        assert code == 2 and out == "" and "Traceback" not in err, err
        assert "--min-grain, --split-ratio applies to grain models only" in err and "'test-pores' is a semantic" in err
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())


def test_models_ensemble_cli(model_dir, tmp_path, capsys):
    """Two copies of the pores model and one that calls everything matrix: the ensemble's pore probability is 2/3
    of the pores model's (known by construction), and a model with other classes is refused with exit 2."""
    silent = threshold_net(3, 1)
    with torch.no_grad():
        silent.head.weight.zero_()
        silent.head.bias.copy_(torch.tensor([100.0, -100.0, -100.0]))  # p(matrix) = 1 everywhere
    card = ModelCard(name="all-matrix", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=["matrix", "pore", "crack"], defect_classes=["pore", "crack"], tile_size=64,
                     normalisation={"mode": "minmax"})
    save_model(model_dir / "all-matrix", silent, card)
    out_model = tmp_path / "ens"
    import shutil

    copy = shutil.copytree(model_dir / "test-pores", tmp_path / "pores-copy")  # the same network twice is refused
    code, out, err = _run(["models", "ensemble", "test-pores", "test-pores", "--out", str(tmp_path / "twice")], capsys)
    assert code == 2 and "given twice" in err and not (tmp_path / "twice").exists()
    code, out, err = _run(["models", "ensemble", "test-pores", str(copy), "--out", str(tmp_path / "twice")], capsys)
    assert code == 2 and f"{copy}: holds a network with the same weights as" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "twice").exists()
    # a second pores model (its weights differ, its answers on this image do not)
    copy = save_model(tmp_path / "pores-2", threshold_net(3, 1, k=50.0), load_card(model_dir / "test-pores"))
    code, out, err = _run(["models", "ensemble", "test-pores", str(copy), "all-matrix", "--out", str(out_model),
                           "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["members"] == ["test-pores", "test-pores", "all-matrix"] and res["networks"] == 3
    assert res["classes"] == ["matrix", "pore", "crack"] and len(res["sha256"]) == 64
    img = np.full((48, 64), 40, np.uint8)
    img[10:30, 20:40] = 230
    tifffile.imwrite(tmp_path / "p.tif", img)
    code, out, err = _run(["segment", str(tmp_path / "p.tif"), "--model", str(out_model), "--out",
                           str(tmp_path / "o"), "--probabilities", "--json"], capsys)
    assert code == 0, err
    probs = tifffile.imread(json.loads(out)["probabilities"])
    np.testing.assert_allclose(probs[1][img == 230], 2 / 3, atol=1e-3)
    np.testing.assert_allclose(probs[0][img == 40], 1.0, atol=1e-3)
    labels, _ = read_labels(json.loads(out)["labels"])
    np.testing.assert_array_equal(labels, (img == 230).astype(labels.dtype))
    code, out, err = _run(["models", "ensemble", "test-pores", "test-grains", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and out == "" and "task differs" in err and len(err.strip().splitlines()) == 1
    # an existing model or a file as --out is never replaced (it was, in silence / with an internal error)
    before = (model_dir / "all-matrix" / "model.safetensors").read_bytes()
    for target, says in ((model_dir / "all-matrix", "already holds a model"),
                         (tmp_path / "p.tif", "is an existing file")):
        code, out, err = _run(["models", "ensemble", "test-pores", str(copy), "--out", str(target)], capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert (model_dir / "all-matrix" / "model.safetensors").read_bytes() == before


def test_segment_and_analyze_say_when_pages_were_not_read(model_dir, tmp_path, capsys):
    """A two-page TIFF: page 0 is analysed and the JSON warnings say the other page was not."""
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([np.zeros((48, 48), np.uint8), np.full((48, 48), 255, np.uint8)]),
                     photometric="minisblack")
    for argv in (["analyze", str(path), "--model", "test-pores", "--json"],
                 ["segment", str(path), "--model", "test-pores", "--out", str(tmp_path / "o"), "--json"]):
        code, out, err = _run(argv, capsys)
        assert code == 0, err
        assert any("holds 2 pages" in w and "--page" in w for w in json.loads(out)["warnings"]), argv[0]
    code, out, err = _run(["analyze", str(path), "--model", "test-pores", "--page", "1", "--json"], capsys)
    assert code == 0 and not any("pages" in w for w in json.loads(out)["warnings"])


@pytest.mark.parametrize("option", [["--tile-size", "7"], ["--tile-size", "0"], ["--overlap", "-1"],
                                    ["--tile-size", "64", "--overlap", "64"]])
def test_inference_options_out_of_range_exit_2(model_dir, tmp_path, capsys, option):
    """A 7-px tile was rounded up to one 16-px stride with no overlap (seams) and accepted in silence."""
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    for command in (["segment", str(path), "--out", str(tmp_path / "o")], ["analyze", str(path)],
                    ["batch", str(tmp_path), str(tmp_path / "b")]):
        code, out, err = _run(command + ["--model", "test-pores", "--json", *option], capsys)
        assert code == 2 and out == "" and option[-2] in err and len(err.strip().splitlines()) == 1, (command, err)


def test_segment_failed_run_leaves_no_empty_output_folder(model_dir, tmp_path, capsys):
    """segment --out DIR made DIR (and its parents) before reading the input: a missing or unreadable image, a bad
    option or an unknown model left an empty folder behind. It is made only when there is something to write."""
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"junk!")
    good = tmp_path / "img.tif"
    tifffile.imwrite(good, np.zeros((64, 64), np.uint8))
    for image, extra in ((tmp_path / "missing.tif", []), (bad, []), (good, ["--tile-size", "7"])):
        out = tmp_path / "runs" / "a"
        code, _, err = _run(["segment", str(image), "--model", "test-pores", "--out", str(out), *extra], capsys)
        assert code == 2 and not (tmp_path / "runs").exists(), (image, extra, err)
    code, _, err = _run(["segment", str(good), "--model", "no-such-model", "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and not (tmp_path / "runs").exists(), err
    code, out, err = _run(["segment", str(good), "--model", "test-pores", "--out", str(tmp_path / "runs" / "a"),
                           "--json"], capsys)
    assert code == 0 and Path(json.loads(out)["labels"]).parent == tmp_path / "runs" / "a", err


def test_segment_sweeps_the_part_files_of_a_killed_segment(model_dir, tmp_path, capsys, monkeypatch):
    """A segment killed mid-write leaves a hidden .<name>.<pid>.part in its --out folder that nothing removed: the
    next segment into that folder removes those whose process is gone (not a live process's, nor other files).
    --out may be any folder: only micro-seg's own temporary names, untouched for an hour (a writer on another
    machine sharing the folder over NFS has a PID that means nothing here), and never a PID in use, even another
    user's (kill(pid, 0) -> EPERM)."""
    import subprocess
    import sys
    import time

    from micro_seg import batch_worker

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "o"
    out.mkdir()
    stale = [out / f".img_probabilities.tif.{proc.pid}.part", out / f".img_labels.tif.{proc.pid}.0123abcd.tmp"]
    kept = [out / f".other_probabilities.tif.{os.getpid()}.part", out / ".mine.part", out / "notes.txt",
            out / f".backup.tar.{proc.pid}.part", out / f".archive.zip.{proc.pid}.0123abcd.tmp",  # other programs'
            out / f".x.tar.{2**22 + 5}.part", out / f".users_probabilities.tif.{other.pid}.part"]
    fresh = out / f".nfs_probabilities.tif.{proc.pid}.part"  # being written right now on another machine
    for p in stale + kept + [fresh]:
        p.write_bytes(b"half a TIFF")
        if p != fresh:
            os.utime(p, (time.time() - 7200, time.time() - 7200))
    real_kill = os.kill

    def kill(pid, sig):  # `other` belongs to another user: signal 0 is refused, it is alive
        if pid == other.pid:
            raise PermissionError(1, "Operation not permitted")
        return real_kill(pid, sig)

    monkeypatch.setattr(batch_worker.os, "kill", kill)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    try:
        code, _, err = _run(["segment", str(path), "--model", "test-pores", "--out", str(out), "--probabilities"],
                            capsys)
    finally:
        monkeypatch.undo()
        other.kill()
        other.wait()
    assert code == 0, err
    assert [p.name for p in stale if p.exists()] == []
    assert [p.name for p in kept + [fresh] if not p.exists()] == []


def test_models_show_checks_the_weights(model_dir, capsys):
    code, out, err = _run(["models", "show", "test-pores", "--json"], capsys)
    assert code == 0 and json.loads(out)["weights_check"].startswith("ok") and err == ""
    weights = model_dir / "test-pores" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last byte
    weights.write_bytes(bytes(data))
    code, out, err = _run(["models", "show", "test-pores", "--json"], capsys)
    assert code == 0 and json.loads(out)["weights_check"].startswith("FAILED") and "does not match" in err


def test_a_model_name_resolves_to_the_folder_models_list_shows(model_dir, tmp_path, monkeypatch, capsys):
    """--model NAME matched folder names before card names: a higher-priority copy named 'my-pores-v2' with card
    name 'test-pores' was listed, yet a lower-priority folder called 'test-pores' was run."""
    import shutil

    import yaml

    from micro_seg.registry import resolve_model

    first = tmp_path / "first"
    shutil.copytree(model_dir / "test-grains", first / "my-pores-v2")
    card = yaml.safe_load((first / "my-pores-v2" / "card.yaml").read_text())
    card["name"] = "test-pores"
    (first / "my-pores-v2" / "card.yaml").write_text(yaml.safe_dump(card))
    monkeypatch.setenv("MICRO_SEG_MODELS", os.pathsep.join([str(first), str(model_dir)]))
    code, out, _ = _run(["models", "list", "--json"], capsys)
    listed = {m["name"]: m for m in json.loads(out)["models"]}
    assert Path(listed["test-pores"]["folder"]) == first / "my-pores-v2"
    assert resolve_model("test-pores") == first / "my-pores-v2"
    # a broken copy first: both skip it for the working one
    weights = first / "my-pores-v2" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, out, _ = _run(["models", "list", "--json"], capsys)
    listed = {m["name"]: m for m in json.loads(out)["models"]}
    assert Path(listed["test-pores"]["folder"]) == model_dir / "test-pores" == resolve_model("test-pores")
    # a folder name still works when no card carries that name
    assert resolve_model("my-pores-v2") == first / "my-pores-v2"


def test_segment_leaves_no_partial_probability_file_when_it_cannot_write_one(model_dir, tmp_path, capsys):
    """The probabilities' name taken (here by a folder; a full disk fails the same way): exit 2 naming the file, the
    labels kept, and no half-written temporary file left in the output folder."""
    path, _, _ = _grain_image(tmp_path)
    out_dir = tmp_path / "out"
    (out_dir / "grains_probabilities.tif").mkdir(parents=True)
    code, out, err = _run(["segment", str(path), "--model", "test-grains", "--out", str(out_dir), "--probabilities",
                           "--min-grain", "4"], capsys)
    assert code == 2 and "grains_probabilities.tif: cannot write probabilities" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["grains_labels.tif", "grains_probabilities.tif"]


@pytest.mark.parametrize("pixel_size", [30.0, 50.0])
def test_segment_outputs_read_back_with_their_pixel_size(model_dir, tmp_path, capsys, pixel_size):
    """Coarse pixels (a macro section): 30 um/pixel is 846.67 dpi, 50 um/pixel a whole 508 dpi, which the reader
    takes for a drawing program's default in other files; the labels and probabilities segment writes keep it."""
    path, _, _ = _grain_image(tmp_path)
    code, out, err = _run(["segment", str(path), "--model", "test-grains", "--out", str(tmp_path / "o"), "--probabilities",
                           "--min-grain", "4", "--pixel-size", str(pixel_size), "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    for written in (res["labels"], res["probabilities"]):
        code, out, err = _run(["info", written, "--json"], capsys)
        info = json.loads(out)
        assert (info["pixel_size_um"], info["calibration_source"]) == (pixel_size, "tiff-resolution"), written


def test_segment_into_a_folder_named_after_the_model(model_dir, tmp_path, capsys, monkeypatch):
    """``segment IMG --model test-pores --out test-pores`` creates ./test-pores before loading the model: that
    folder (no card) must not stand for the model, in this run or in later ones."""
    path, _, _ = _grain_image(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["segment", str(path), "--model", "test-pores", "--out", "test-pores", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["labels"] == str(Path("test-pores") / "grains_labels.tif")
    code, out, err = _run(["analyze", str(path), "--model", "test-pores", "--json"], capsys)
    assert code == 0, err
