"""QA fixes: --fields parsing, label sanity warnings, pages, calibration overrides, blank images, E112 range."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from micro_seg.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and "--json" in argv else out), err


def _grid_labels(n_side: int = 8, size: int = 32, boundary: int = 1) -> np.ndarray:
    """``n_side`` x ``n_side`` square grains of ``size`` px, each with a ``boundary``-px 0 line on two sides."""
    r = np.arange(n_side * size) // size
    lab = (r[:, None] * n_side + r[None, :] + 1).astype(np.int32)
    if boundary:
        on = (np.arange(n_side * size) % size) < boundary
        lab[on, :] = 0
        lab[:, on] = 0
    return lab


@pytest.mark.parametrize("fields", ["-1", "0x0", "2x0", "x", "2x-1"])
@pytest.mark.parametrize("command", [["analyze", "{p}", "--model", "grain-boundaries"], ["measure", "grains", "{p}"]])
def test_bad_fields_exit_2_one_line(tmp_path, capsys, command, fields):
    path = tmp_path / "lab.tif"
    tifffile.imwrite(path, _grid_labels().astype(np.uint16))
    argv = [a.format(p=path) for a in command] + ["--fields", fields, "--json"]
    code, _, err = _run(capsys, argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--fields" in lines[0] and fields in lines[0] and "internal" not in lines[0]


def test_analyze_fields_string_parsing():
    from micro_seg.commands.analyze import _fields
    from micro_seg.errors import MicroSegError

    assert _fields("auto") == "auto" and _fields("0") is None and _fields("none") is None and _fields("1") is None
    assert _fields("3x2") == (3, 2) and _fields((3, 2)) == (3, 2) and _fields(None) is None
    with pytest.raises(MicroSegError, match="--fields"):
        _fields("0x4")


def test_fields_0_is_one_field_like_none(tmp_path, capsys):
    path = tmp_path / "lab.tif"
    tifffile.imwrite(path, _grid_labels().astype(np.uint16))
    results = []
    for f in ("0", "none", "1"):
        code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--fields", f, "--json"])
        assert code == 0, err
        results.append(res)
    assert results[0] == results[1] == results[2]


# ---- 2. label values in several separate regions (wrapped 8-bit labels, JPEG, raw micrograph)

def _offset_grid() -> np.ndarray:
    """33 x 33 square grains of 16 px shifted by 8 px in a 512 x 512 image: Jeffries count 31**2 + 4*31/2 + 1."""
    r = (np.arange(512) + 8) // 16
    return r[:, None] * 33 + r[None, :] + 1


def _g_planimetric(count: float, area_mm2: float) -> float:
    return 3.321928 * np.log10(count / area_mm2) - 2.954  # ASTM E112 (DOMAIN.md)


def test_wrapped_8bit_labels_warn_true_labels_do_not(tmp_path, capsys):
    lab = _offset_grid()
    true_path, wrapped_path = tmp_path / "true.tif", tmp_path / "wrapped.tif"
    tifffile.imwrite(true_path, lab.astype(np.uint16))
    tifffile.imwrite(wrapped_path, ((lab % 255) + 1).astype(np.uint8))
    code, res, err = _run(capsys, ["measure", "grains", str(true_path), "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert res["n_grains"] == 33 * 33 and res["jeffries_count"] == 31**2 + 62 + 1
    assert res["G_planimetric"] == pytest.approx(_g_planimetric(1024, 0.512**2), abs=1e-3)  # 8.977
    assert not any("wrapped" in w for w in res["warnings"])
    code, res, err = _run(capsys, ["measure", "grains", str(wrapped_path), "--pixel-size", "1", "--json"])
    assert code == 0, err
    hits = [w for w in res["warnings"] if "labels look wrapped or are not instance labels" in w]
    assert len(hits) == 1 and str(wrapped_path) in hits[0] and "separate regions" in hits[0]


def test_jpeg_labels_and_micrograph_warn_voronoi_does_not():
    from micro_seg.measure import measure_grains
    from micro_seg.synth import voronoi_labels

    def split_warned(labels):
        return any("labels look wrapped" in w for w in measure_grains(labels, pixel_size_um=1.0).warnings)

    labels = voronoi_labels((256, 256), n_grains=150, seed=1)
    assert not split_warned(labels)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    assert split_warned(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    noise = np.random.default_rng(0).normal(128, 30, (256, 256)).clip(0, 255).astype(np.uint8)
    assert split_warned(noise)
    one = _grid_labels(8, 32)  # one value in two places (1 of 64 values split): no warning
    one[one == 28] = 1
    assert not split_warned(one)


def _exact_voronoi(n: int, seed: int) -> np.ndarray:
    """Voronoi labels ``1..n`` of ``n`` seeds inside a 400 x 400 image (every label present, none split)."""
    from scipy.spatial import cKDTree

    seeds = np.random.default_rng(seed).uniform(0, 400, (n, 2))
    rr, cc = np.mgrid[0:400, 0:400]
    return cKDTree(seeds).query(np.stack([rr.ravel(), cc.ravel()], axis=1))[1].reshape(400, 400) + 1


def test_full_8bit_labels_with_one_fragment_do_not_warn_wrapped_ones_do_even_after_merging():
    """255 grains in uint8 (every value used) plus a 3 x 3 fragment of one grain inside another: warned 'labels
    look wrapped' (uint16 not); 257 grains wrapped to uint8 (value 1 twice) were no longer warned once
    min_grain_px merged a small grain (the merged values left the type's range unfilled)."""
    from micro_seg.measure import measure_grains

    def wrapped(labels, **kwargs):
        res = measure_grains(labels, pixel_size_um=1.0, fields=None, circles=False, **kwargs)
        return any("labels look wrapped" in w for w in res.warnings)

    lab = _exact_voronoi(255, 0).astype(np.uint8)
    assert np.array_equal(np.unique(lab), np.arange(1, 256))
    r, c = np.argwhere(lab == 100).mean(axis=0).astype(int)
    lab[r - 1 : r + 2, c - 1 : c + 2] = 200  # a fragment of grain 200 inside grain 100
    assert not wrapped(lab) and not wrapped(lab.astype(np.uint16))
    big = _exact_voronoi(257, 1)
    small = int(np.bincount(big.ravel())[1:].min())
    w8 = (big % 256).astype(np.uint8)  # grain 256 -> 0 (boundary), grain 257 -> 1 again
    assert wrapped(w8) and wrapped(w8, min_grain_px=small + 1)


# ---- 3. large 0 regions are not boundaries

def test_large_zero_region_warns_boundaries_do_not(tmp_path, capsys):
    full = _grid_labels(16, 32)  # 1-px 0 lines on rows / cols 0, 32, ...: 14 x 14 inside, 56 on edges, 4 corners
    for boundary in (1, 3, 6):
        path = tmp_path / f"grid{boundary}.tif"
        tifffile.imwrite(path, _grid_labels(16, 32, boundary).astype(np.uint16))
        code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--json"])
        assert code == 0, err
        assert not any("wider than a boundary" in w for w in res["warnings"])
        assert res["G_planimetric"] == pytest.approx(_g_planimetric(14**2 + 56 / 2 + 1, 0.512**2), abs=1e-3)  # 6.79
        assert res["G_area"] == pytest.approx(-3.3223 * np.log10(0.032**2) - 2.955, abs=1e-3)  # 32-px grains: 6.98
    half = full.copy()
    half[:, 256:] = 0
    path = tmp_path / "half.tif"
    tifffile.imwrite(path, half.astype(np.uint16))
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--json"])
    assert code == 0, err
    hits = [w for w in res["warnings"] if "wider than a boundary" in w]
    assert len(hits) == 1 and str(path) in hits[0] and "filled as grain" in hits[0]
    share = float(hits[0].split(": ")[1].split(" %")[0])
    assert share == pytest.approx(100 * (256 - 3 - 3) * (512 - 6) / 512**2, abs=0.1)  # after the 3-px erosion


def test_wide_zero_fraction_in_blocks_equals_whole_image(monkeypatch):
    from micro_seg.measure import labels as labels_module

    lab = _grid_labels(8, 32)
    lab[100:180, 37:200] = 0
    whole = labels_module.wide_zero_fraction(lab)
    monkeypatch.setattr(labels_module, "BLOCK_PIXELS", 256 * 5)  # 5-row blocks
    assert labels_module.wide_zero_fraction(lab) == pytest.approx(whole)
    assert whole == pytest.approx((80 - 6) * (163 - 6) / 256**2)


# ---- 4. multi-page label TIFF

def test_measure_multi_page_warns_and_reads_page(tmp_path, capsys):
    path = tmp_path / "stack2.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(_grid_labels(16, 32).astype(np.uint16))  # page 0: 256 grains
        tif.write(_offset_grid().astype(np.uint16))  # page 1: 33 x 33 grains
    for kind in ("grains", "defects"):
        code, res, err = _run(capsys, ["measure", kind, str(path), "--json"])
        assert code == 0, err
        hits = [w for w in res["warnings"] if "2 pages" in w and "only page 0" in w]
        assert len(hits) == 1 and str(path) in hits[0], res["warnings"]
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--json"])
    assert res["n_grains"] == 256
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--page", "1", "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert res["n_grains"] == 33 * 33 and not any("pages" in w for w in res["warnings"])
    assert res["G_planimetric"] == pytest.approx(_g_planimetric(1024, 0.512**2), abs=1e-3)
    code, _, err = _run(capsys, ["measure", "grains", str(path), "--page", "2", "--json"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err and "page 2" in err


def test_measure_phases_page(tmp_path, capsys):
    classes = np.zeros((64, 64), np.uint8)
    classes[:, 48:] = 1  # page 1: a quarter of class 1
    path = tmp_path / "classes.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros_like(classes))
        tif.write(classes)
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--json"])
    assert code == 0, err
    assert any("only page 0" in w for w in res["warnings"])
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--page", "1", "--json"])
    assert code == 0, err
    assert res["phase_fractions"]["1"] == pytest.approx(0.25) and not any("page" in w for w in res["warnings"])


def test_measure_boundary_mask_page(tmp_path, capsys):
    mask = np.zeros((241, 241), np.uint8)
    mask[:, ::40] = 255
    mask[::40, :] = 255
    path = tmp_path / "masks.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros_like(mask))
        tif.write(mask)
    code, _, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--json"])
    assert code == 2 and "no boundary pixels" in err  # page 0 is empty
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--page", "1", "--json"])
    assert code == 0, err
    assert res["n_grains"] == 36


# ---- 5. a broken calibration tag does not block a file measured with --pixel-size

@pytest.mark.parametrize("width", ["0", "abc"])
def test_broken_fei_tag_with_pixel_size(tmp_path, capsys, width):
    lab = np.repeat(np.repeat(np.arange(1, 65).reshape(8, 8), 32, 0), 32, 1).astype(np.uint16)
    mask = np.zeros((241, 241), np.uint8)
    mask[:, ::40] = 255
    mask[::40, :] = 255
    tag = f"[Scan]\r\nPixelWidth={width}\r\nPixelHeight={width}\r\n"
    path, mask_path = tmp_path / "fei.tif", tmp_path / "fei_mask.tif"
    tifffile.imwrite(path, lab, extratags=[(34682, "s", 0, tag, True)])
    tifffile.imwrite(mask_path, mask, extratags=[(34682, "s", 0, tag, True)])
    code, _, err = _run(capsys, ["measure", "grains", str(path), "--json"])  # no override: the bad tag is an error
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err
    runs = [["measure", "grains", str(path)], ["measure", "grains", str(mask_path), "--boundary"],
            ["measure", "defects", str(path)]]
    for argv in runs:
        code, res, err = _run(capsys, argv + ["--pixel-size", "0.5", "--json"])
        assert code == 0, err
        assert res["calibration"] == "user" and res["pixel_size_um"] == 0.5
        assert len(res["calibration_notes"]) == 1 and argv[2] in res["calibration_notes"][0]
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "0.5", "--json"])
    # 6 x 6 inside, 24 on edges, 4 corners in a 0.128 mm square field
    assert res["G_planimetric"] == pytest.approx(_g_planimetric(36 + 12 + 1, 0.128**2), abs=1e-3)  # 8.59


# ---- 6. analyze of an image without contrast

@pytest.fixture
def test_models(tmp_path, monkeypatch):
    import torch

    from micro_seg import inference
    from micro_seg.registry import ModelCard, save_model

    from data_builders import threshold_net

    monkeypatch.setattr(inference, "_threads_configured", True)
    torch.set_num_threads(1)
    root = tmp_path / "models"
    card = ModelCard(name="qa-phases", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=["matrix", "bright"], tile_size=64, normalisation={"mode": "minmax"})
    save_model(root / "qa-phases", threshold_net(2, 1), card)
    card = ModelCard(name="qa-grains", task="grains", arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=["grain", "boundary"], tile_size=64, normalisation={"mode": "minmax"})
    save_model(root / "qa-grains", threshold_net(2, 1), card)
    monkeypatch.setenv("MICRO_SEG_MODELS", str(root))
    return root


@pytest.mark.parametrize("model", ["qa-phases", "qa-grains"])
@pytest.mark.parametrize("value", [0, 128, 255])
def test_analyze_warns_constant_image(tmp_path, capsys, test_models, model, value):
    from PIL import Image

    path = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 128), value, np.uint8)).save(path)
    code, res, err = _run(capsys, ["analyze", str(path), "--model", model, "--json"])
    assert code == 0, err  # measured with a warning (a blank page of a stack must not stop a batch)
    hits = [w for w in res["warnings"] if "the image is constant" in w]
    assert len(hits) == 1 and str(path) in hits[0] and f"every pixel {value}" in hits[0] and "meaningless" in hits[0]


def test_analyze_warns_almost_no_contrast_not_on_real_contrast(tmp_path, capsys, test_models):
    from PIL import Image

    rng = np.random.default_rng(0)
    flat, half = tmp_path / "flat.png", tmp_path / "half.png"
    Image.fromarray((128 + rng.integers(0, 2, (96, 128))).astype(np.uint8)).save(flat)
    img = np.full((96, 128), 40, np.uint8)
    img[:, 96:] = 220  # a quarter bright: the threshold model gives phase fraction 0.25
    Image.fromarray(img).save(half)
    code, res, err = _run(capsys, ["analyze", str(flat), "--model", "qa-phases", "--json"])
    assert code == 0, err
    hits = [w for w in res["warnings"] if "almost no contrast" in w]
    assert len(hits) == 1 and str(flat) in hits[0] and "2 levels" in hits[0]
    code, res, err = _run(capsys, ["analyze", str(half), "--model", "qa-phases", "--json"])
    assert code == 0, err
    assert not any("contrast" in w for w in res["warnings"])
    assert res["phases"]["phase_fractions"]["bright"] == pytest.approx(0.25, abs=0.01)


# ---- 7. G far outside the E112 scale, mean intercept longer than the image

def test_g_outside_e112_scale_warns(tmp_path, capsys):
    lab = np.repeat(np.repeat(np.arange(1, 65).reshape(8, 8), 32, 0), 32, 1).astype(np.uint16)  # 8 x 8 grains
    path = tmp_path / "grid.tif"
    tifffile.imwrite(path, lab)
    for px, warned in ((0.5, False), (9999, True), (0.001, True), (10.0, False)):
        code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", str(px), "--json"])
        assert code == 0, err
        side_mm = 256 * px / 1000
        assert res["G_planimetric"] == pytest.approx(_g_planimetric(36 + 12 + 1, side_mm**2), abs=1e-3)
        hits = [w for w in res["warnings"] if "far outside the ASTM E112 scale" in w]
        assert len(hits) == int(warned), (px, res["warnings"])
        if warned:
            assert f"G_planimetric {res['G_planimetric']:.1f}" in hits[0] and str(path) in hits[0]
    # px 9999: G_planimetric = 8.59 - 2 log2(9999 / 0.5) = -19.98
    code, res, _ = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "9999", "--json"])
    assert res["G_planimetric"] == pytest.approx(8.5923 - 2 * np.log2(9999 / 0.5), abs=1e-3)


def test_mean_intercept_longer_than_image_warns():
    from micro_seg.measure import measure_grains

    two = np.ones((200, 300), np.int32)
    two[:, 290:] = 2  # rows cross one boundary in 300 px, columns none
    res = measure_grains(two, pixel_size_um=1.0)
    assert res.summary["mean_intercept_px"] > 200
    assert sum("longer than the image's shorter side (200 px)" in w for w in res.warnings) == 1
    one = measure_grains(np.ones((200, 300), np.int32), pixel_size_um=1.0)
    assert sum("no test line crosses a grain boundary" in w for w in one.warnings) == 1
    grid = measure_grains(_grid_labels(8, 32), pixel_size_um=1.0)  # l about 32 px
    assert not any("shorter side" in w or "no test line" in w for w in grid.warnings)


def test_analyze_pixel_size_9999_warns(tmp_path, capsys, test_models):
    from PIL import Image

    img = np.full((128, 128), 40, np.uint8)
    for k in range(0, 128, 32):
        img[k : k + 3, :] = 220
        img[:, k : k + 3] = 220
    path = tmp_path / "grains.png"
    Image.fromarray(img).save(path)
    code, res, err = _run(capsys, ["analyze", str(path), "--model", "qa-grains", "--pixel-size", "9999", "--json"])
    assert code == 0, err
    assert res["grains"]["G_planimetric"] < -15
    assert sum("far outside the ASTM E112 scale" in w for w in res["warnings"]) == 1
    code, res, err = _run(capsys, ["analyze", str(path), "--model", "qa-grains", "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert not any("E112 scale" in w for w in res["warnings"])


# ------------------------------------------------------------------ (rows, cols, channels) arrays saved page by page
@pytest.mark.parametrize("channels", [2, 5])
def test_channels_saved_as_pages_are_refused_naming_the_file(tmp_path, capsys, channels):
    path = tmp_path / f"{channels}ch.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, (rng.random((128, 128, channels)) * 255).astype(np.uint8))  # 128 pages of 128 x channels
    code = main(["info", str(path), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err
    assert f"128 pages of 128 x {channels} pixels" in err and f"{channels} channels" in err
    # an explicit page is still read as asked
    assert main(["info", str(path), "--page", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [128, channels]


# ------------------------------------------------------------------ an inverted defect mask
def test_inverted_defect_mask_is_warned_about_and_a_true_one_is_not():
    from micro_seg.measure import measure_defects

    yy, xx = np.mgrid[:200, :200]
    pores = np.zeros((200, 200), np.uint8)
    for cy, cx in [(40, 40), (40, 150), (150, 60), (140, 150)]:
        pores[(yy - cy) ** 2 + (xx - cx) ** 2 <= 15 ** 2] = 1  # 4 disks, 7 % of the image
    ok = measure_defects(pores, pixel_size_um=1.0)
    assert ok.summary["count"] == 4 and not any("inverted" in w for w in ok.warnings)
    inv = measure_defects(1 - pores, pixel_size_um=1.0)
    assert inv.summary["area_fraction"] > 0.9
    assert any("inverted" in w for w in inv.warnings)


# ------------------------------------------------------------------ calibration disagreements are said
def test_pixel_size_option_far_from_the_files_calibration_is_warned(tmp_path, capsys):
    lab = np.repeat(np.repeat(np.arange(1, 17, dtype=np.uint16).reshape(4, 4), 32, 0), 32, 1)
    path = tmp_path / "lab.tif"
    tifffile.imwrite(path, lab, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")  # 0.5 um/px
    assert main(["measure", "grains", str(path), "--pixel-size", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pixel_size_um"] == 1.0
    assert any("overrides the file's own (0.5 um/pixel" in w and "2 x different" in w for w in res["warnings"])
    assert main(["measure", "grains", str(path), "--pixel-size", "0.5", "--json"]) == 0  # agreeing: no warning
    assert not any("overrides" in w for w in json.loads(capsys.readouterr().out)["warnings"])


def test_disagreeing_calibrations_in_one_file_are_warned_naming_the_one_used(tmp_path, capsys):
    path = tmp_path / "ome.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), ome=True, resolution=(1e4 / 2, 1e4 / 2),
                     resolutionunit="CENTIMETER", metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
                                                            "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    assert main(["info", str(path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pixel_size_um"] == 0.5 and res["calibration_source"] == "ome"
    assert any("ome gives 0.5 um/pixel, tiff-resolution 2 um/pixel (4 x); ome is used" in w for w in res["warnings"])


# ------------------------------------------------------------------ a named pipe is refused, not read for ever
def test_named_pipe_is_refused_not_blocked_on(tmp_path, capsys):
    import os

    fifo = tmp_path / "in.tif"
    os.mkfifo(fifo)
    assert main(["info", str(fifo), "--json"]) == 2
    err = capsys.readouterr().err
    assert str(fifo) in err and "not a regular file" in err


# ------------------------------------------------------------------ --model messages say what is wrong
@pytest.mark.parametrize("model, says", [("FILE", "is a file; --model takes a model name or a model folder"),
                                         ("", "empty model name")])
def test_model_option_that_is_a_file_or_empty_says_so(tmp_path, capsys, model, says):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    if model == "FILE":
        model = str(img)
    assert main(["segment", str(img), "--model", model, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err


# ------------------------------------------------------------------ a broken card's error names the card
@pytest.mark.parametrize("key, bad, says", [("arch", "resnet9000", "unknown architecture 'resnet9000'"),
                                            ("tile_size", "abc", "tile_size must be a positive whole number"),
                                            ("normalisation", "{mode: bogus}", "normalisation {'mode': 'bogus'} unknown")])
def test_broken_card_errors_name_the_card(tmp_path, capsys, repo_root, key, bad, says):
    import re
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(repo_root / "models" / "pores-defects", folder)
    card = folder / "card.yaml"
    text = card.read_text()
    if key == "normalisation":
        text = re.sub(r"(?m)^normalisation:\n(  .*\n)+", f"normalisation: {bad}\n", text)
    else:
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {bad}", text)
    card.write_text(text)
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    assert main(["segment", str(img), "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(card) in err and says in err


# ------------------------------------------------------------------ segment: labels it did not write are never replaced
def test_segment_never_replaces_labels_it_did_not_write_for_this_image(tmp_path, capsys):
    """Another image's labels (same stem) were replaced with only a warning afterwards; hand-traced ground truth
    named <stem>_labels.tif (as train pairs labels) was replaced in silence."""
    from PIL import Image

    rng = np.random.default_rng(0)
    tif, png = tmp_path / "a.tif", tmp_path / "a.png"
    tifffile.imwrite(tif, (rng.random((64, 64)) * 255).astype(np.uint8))
    Image.fromarray((rng.random((64, 80)) * 255).astype(np.uint8)).save(png)
    out = tmp_path / "out"

    def segment(path, *extra):
        code = main(["segment", str(path), "--model", "pores-defects", "--out", str(out), "--json", *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert segment(tif)[0] == 0
    before = (out / "a_labels.tif").read_bytes()
    code, _, err = segment(png)
    assert code == 2 and f"holds the labels of another image, {tif.resolve()}" in err
    assert (out / "a_labels.tif").read_bytes() == before
    assert segment(tif)[0] == 0  # the same image again: replaced
    truth = tmp_path / "gt"
    truth.mkdir()
    tifffile.imwrite(truth / "a_labels.tif", np.ones((64, 64), np.uint8))  # ground truth, not written by segment
    code = main(["segment", str(tif), "--model", "pores-defects", "--out", str(truth)])
    err = capsys.readouterr().err
    assert code == 2 and "records no source image" in err
    assert (tifffile.imread(truth / "a_labels.tif") == 1).all()
    # a project folder moved: the recorded image no longer exists, the same image is segmented again: replaced
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(png, moved / "a.png")
    shutil.copy(tif, moved / "a.tif")
    assert main(["segment", str(moved / "a.png"), "--model", "pores-defects", "--out", str(moved / "o")]) == 0
    capsys.readouterr()
    (moved / "a.png").rename(moved / "b.png")  # its recorded source is gone
    code = main(["segment", str(moved / "a.tif"), "--model", "pores-defects", "--out", str(moved / "o"), "--json"])
    out = capsys.readouterr().out
    assert code == 0 and any("which no longer exists" in w for w in json.loads(out)["warnings"])


def test_segment_pages_of_one_file_do_not_overwrite_each_other(tmp_path, capsys):
    rng = np.random.default_rng(1)
    stack = tmp_path / "z.tif"
    a = (rng.random((64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(stack, np.stack([a, 255 - a]), photometric="minisblack")
    out = tmp_path / "out"
    paths = []
    for page in (0, 1):
        assert main(["segment", str(stack), "--page", str(page), "--model", "pores-defects", "--out", str(out),
                     "--json"]) == 0
        paths.append(json.loads(capsys.readouterr().out)["labels"])
    assert [Path(p).name for p in paths] == ["z_labels.tif", "z_p1_labels.tif"]
    assert all(Path(p).is_file() for p in paths)


@pytest.mark.parametrize("with_matrix", [False, True])
def test_defect_labels_with_huge_values_keep_every_object_area(with_matrix):
    """Label values far above the pixel count take another relabelling path; without any 0 pixel it used to map
    the smallest label to matrix (area 0 for one object, area fraction 15/16)."""
    from micro_seg.measure import measure_defects

    lab = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 16, 0), 16, 1) + 100_000
    if with_matrix:
        lab[:16, :16] = 0
    r = measure_defects(lab, pixel_size_um=0.5)
    n = 15 if with_matrix else 16
    assert r.summary["count"] == n
    assert r.summary["area_fraction"] == pytest.approx(n / 16)
    assert sorted(r.table["area_px"].tolist()) == [256] * n


@pytest.mark.parametrize("lab", [
    np.where(np.arange(64 * 64).reshape(64, 64) < 64, np.iinfo(np.uint64).max, 1).astype(np.uint64),
    np.where(np.arange(64 * 64).reshape(64, 64) < 64, 70_000, 1).astype(np.uint64),
    np.where(np.arange(64 * 64).reshape(64, 64) < 64, 1e30, 1.0),
])
def test_phase_map_with_huge_values_names_the_value_not_an_internal_error(lab):
    """uint64 values above 2**63 (and huge floats) wrapped negative in the int64 cast: 'list' argument must have
    no negative elements' instead of the message int64 labels get."""
    from micro_seg.errors import InvalidImageError
    from micro_seg.measure import measure_phases

    with pytest.raises(InvalidImageError, match=r"'x': class value \d+ is too large for a class label image"):
        measure_phases(lab, what="'x'")


@pytest.mark.parametrize("kind", ["grains", "phases", "defects"])
def test_masked_arrays_are_refused_not_measured_without_their_mask(kind):
    """np.asarray dropped the mask: phases of a half-masked map came out 0.75 / 0.25 instead of 0.667 / 0.333."""
    from micro_seg.errors import InvalidImageError
    from micro_seg.measure import measure_defects, measure_grains, measure_phases

    c = np.zeros((64, 64), np.int32)
    c[:, :16], c[:32, 40:] = 1, 2
    m = np.ma.masked_array(c, mask=np.zeros(c.shape, bool))
    m.mask[:, 16:32] = True
    fn = {"grains": measure_grains, "phases": measure_phases, "defects": measure_defects}[kind]
    with pytest.raises(InvalidImageError, match="masked array: its mask would be ignored"):
        fn(m, what="field.tif")


@pytest.mark.parametrize("kind", ["grains", "phases", "defects"])
def test_ragged_lists_and_flags_as_pixel_size_get_errors_that_name_the_input(kind):
    """numpy's 'inhomogeneous shape' ValueError named neither the input nor the problem; pixel_size_um=True was
    read as 1 um."""
    from micro_seg.errors import CalibrationError, InvalidImageError
    from micro_seg.measure import measure_defects, measure_grains, measure_phases

    fn = {"grains": measure_grains, "phases": measure_phases, "defects": measure_defects}[kind]
    with pytest.raises(InvalidImageError, match="field.tif: not an image: rows of unequal length"):
        fn([[1, 2, 1], [1, 2]], what="field.tif")
    with pytest.raises(InvalidImageError, match="field.tif: not an image"):
        fn(np.array([["a", "b"], ["c", "d"]]), what="field.tif")
    c = np.zeros((64, 64), np.int32)
    c[:, :32] = 1
    c[:, 40:] = 2
    with pytest.raises(CalibrationError, match="pixel_size_um=True: not a number of micrometres"):
        fn(c, pixel_size_um=True)
    assert fn(c.tolist(), pixel_size_um=1.0) is not None  # a rectangular list is an image


# ---- QA pass of session 20: silent wrong numbers in the measurements

def _voronoi_with_boundaries(seed=4, shape=(400, 400), n_grains=300):
    from micro_seg.synth import voronoi_labels

    lab = voronoi_labels(shape, n_grains=n_grains, seed=seed).astype(np.uint16)
    b = np.zeros(lab.shape, bool)
    b[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    b[:-1] |= lab[1:] != lab[:-1]
    return lab, b


def test_boundaries_drawn_with_a_value_of_their_own_are_refused_not_measured_as_a_grain(tmp_path, capsys):
    """Boundaries stored as 65535 were one 'grain' between all others: G_intercept 10.17 instead of 8.31."""
    from micro_seg.errors import InvalidImageError
    from micro_seg.measure import measure_grains

    lab, b = _voronoi_with_boundaries()
    zero = lab.copy()
    zero[b] = 0
    net = lab.copy()
    net[b] = 65535
    with pytest.raises(InvalidImageError, match=r"label 65535 neighbours \d+ of the other \d+ grains and is a thin "
                                                r"network .*--boundary-value 65535"):
        measure_grains(net, pixel_size_um=1.0)
    path = tmp_path / "net.tif"
    tifffile.imwrite(path, net)
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--json"])
    assert code == 2 and "thin network" in err
    # measured as the boundary mask the message suggests, it gives the answer of the 0-boundary labels
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--boundary-value", "65535",
                                   "--close-gaps", "0", "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert res["G_intercept"] == pytest.approx(measure_grains(zero, pixel_size_um=1.0).summary["G_intercept"], abs=0.02)
    # an abnormally large grain among many small ones neighbours most of them but is no network: measured
    big = zero.copy()
    yy, xx = np.mgrid[:400, :400]
    big[(yy - 200) ** 2 + (xx - 200) ** 2 < 150 ** 2] = 9999
    assert measure_grains(big, pixel_size_um=1.0).summary["n_grains"] > 100


def test_a_lossy_boundary_mask_is_thresholded_half_way_and_warned(tmp_path, capsys):
    """JPEG ringing made 35 % of the image 'boundary' (data != 0): 250 grains instead of 336, no warning."""
    from PIL import Image

    _, b = _voronoi_with_boundaries()
    Image.fromarray((b * 255).astype(np.uint8)).save(tmp_path / "b.png")
    Image.fromarray((b * 255).astype(np.uint8)).save(tmp_path / "b.jpg", quality=90)
    argv = ["--boundary", "--pixel-size", "1", "--json"]
    code, png, err = _run(capsys, ["measure", "grains", str(tmp_path / "b.png"), *argv])
    assert code == 0 and not png["warnings"]
    code, jpg, err = _run(capsys, ["measure", "grains", str(tmp_path / "b.jpg"), *argv])
    assert code == 0, err
    assert abs(jpg["n_grains"] - png["n_grains"]) <= 0.03 * png["n_grains"]
    assert jpg["G_intercept"] == pytest.approx(png["G_intercept"], abs=0.05)
    assert any("the boundary mask is not binary" in w and "taken as boundary" in w for w in jpg["warnings"])
    assert any("JPEG compression is lossy" in w for w in jpg["warnings"])


def test_an_inverted_boundary_mask_gets_a_hint():
    from micro_seg.errors import InvalidImageError
    from micro_seg.measure import measure_grains_from_boundaries

    _, b = _voronoi_with_boundaries()
    with pytest.raises(InvalidImageError, match=r"is the mask inverted .*--boundary-value 0"):
        measure_grains_from_boundaries(~b, pixel_size_um=1.0, what="inv.png")


def test_a_boundary_mask_without_zeros_names_its_values(tmp_path, capsys):
    """Lines = 1 on a background of 2 (no 0 anywhere) gave 'no grain interior left' and no way out; the message now
    lists the values and names --boundary-value, which then measures it."""
    _, b = _voronoi_with_boundaries()
    path = tmp_path / "m12.tif"
    tifffile.imwrite(path, np.where(b, 1, 2).astype(np.uint8))
    code, _, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--pixel-size", "1"])
    assert code == 2 and "no pixel is 0; values 1, 2" in err and "--boundary-value V" in err
    code, res, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--pixel-size", "1",
                                   "--boundary-value", "1", "--json"])
    tifffile.imwrite(tmp_path / "m01.tif", b.astype(np.uint8))
    code0, ref, _ = _run(capsys, ["measure", "grains", str(tmp_path / "m01.tif"), "--boundary", "--pixel-size", "1",
                                  "--json"])
    assert code == code0 == 0, err
    assert res["n_grains"] == ref["n_grains"] and res["G_intercept"] == pytest.approx(ref["G_intercept"])


def test_names_need_not_cover_the_ignored_value(tmp_path, capsys):
    """--names ferrite,pearlite --ignore 255 was refused: 'class value 255 found but only 2 names given'."""
    a = np.zeros((100, 100), np.uint8)
    a[:, 60:] = 1
    a[:20] = 255
    path = tmp_path / "ph255.tif"
    tifffile.imwrite(path, a)
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--names", "ferrite,pearlite", "--ignore", "255",
                                   "--json"])
    assert code == 0, err
    assert res["phase_fractions"] == pytest.approx({"ferrite": 0.6, "pearlite": 0.4})
    assert not any("names given" in w for w in res["warnings"])
    a[50, 50] = 2  # a value that is neither named nor ignored is still refused
    tifffile.imwrite(path, a)
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--names", "ferrite,pearlite", "--ignore", "255"])
    assert code == 2 and "class value 2 found but only 2 names given" in err


def test_phase_fields_and_point_grid_count_what_was_measured():
    """A wholly ignored field counted in n_fields (25 reported, CI over 10); the emulated point grid put 100 points
    in 8 x 8-px fields (2500 points on 1600 pixels, some counted twice: 0.0016 for a true 0.0025)."""
    from micro_seg.measure import measure_phases

    p = np.zeros((100, 100), int)
    p[:, 70:] = 1
    p[:, 85:] = 2
    s = measure_phases(p, ignore_index=0).summary
    assert s["n_fields"] == 10  # 5 x 5 fields of 20 px; only the last two columns of fields hold classes 1 / 2
    c = np.zeros((40, 40), int)
    c[:2, :2] = 1
    pc = measure_phases(c).summary["point_count"]
    assert pc["n_points"] <= c.size and pc["points_per_field"] <= 64
    assert pc["fractions"]["1"] == pytest.approx(0.0025)  # every pixel sampled once


def test_combined_grain_fields_warn_when_a_statistic_is_over_fewer_fields():
    from micro_seg.measure import combine_grain_fields, measure_grains
    from micro_seg.synth import voronoi_labels

    rs = [measure_grains(voronoi_labels((300, 300), n_grains=200, seed=s), pixel_size_um=1.0) for s in range(3)]
    assert not combine_grain_fields(rs).get("warnings")
    rs.append(measure_grains(np.ones((300, 300), int), pixel_size_um=1.0))  # one grain: no intercept
    out = combine_grain_fields(rs)
    assert out["n_fields"] == 4 and out["mean_intercept_um"]["n"] == 3 and out["grains_per_mm2"]["n"] == 4
    assert any("mean_intercept_um is over 3 of the 4 fields" in w for w in out["warnings"])


def test_a_boundary_mask_with_a_few_kinds_of_boundary_keeps_them_all(tmp_path, capsys):
    """1 = grain boundary, 2 = twin boundary: the half-way threshold kept only the 2s (1000 of 1900 px)."""
    m = np.zeros((100, 100), np.uint8)
    m[::10, :] = 1
    m[:, ::10] = 2
    tifffile.imwrite(tmp_path / "kinds.tif", m)
    code, res, err = _run(capsys, ["measure", "grains", str(tmp_path / "kinds.tif"), "--boundary", "--close-gaps", "0",
                                   "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert res["n_grains"] == 100 and not any("not binary" in w for w in res["warnings"])


def test_measure_phases_uses_the_class_names_the_label_file_records(tmp_path, capsys):
    """The ground truth of the two-phase sample records ['ferrite', 'pearlite'], yet phases came out as '0' / '1'."""
    from micro_seg.io import write_labels

    lab = np.zeros((40, 50), np.uint8)
    lab[:, 30:] = 1
    path = write_labels(tmp_path / "c.tif", lab, classes=["ferrite", "pearlite"])
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--json"])
    assert code == 0 and res["phase_fractions"] == pytest.approx({"ferrite": 0.6, "pearlite": 0.4})
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--names", "a,b", "--json"])
    assert code == 0 and set(res["phase_fractions"]) == {"a", "b"}  # what the user types wins


def test_recorded_class_names_allow_for_the_ignored_value_and_say_when_unusable(tmp_path, capsys):
    from micro_seg.io import write_labels

    lab = np.zeros((40, 50), np.uint8)
    lab[:, 30:] = 1
    lab[:5] = 255  # unlabelled
    path = write_labels(tmp_path / "c.tif", lab, classes=["ferrite", "pearlite"])
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--ignore", "255", "--json"])
    assert code == 0 and set(res["phase_fractions"]) == {"ferrite", "pearlite"}
    lab[:5] = 2  # a value beyond the recorded names: numbered, and said
    path = write_labels(tmp_path / "d.tif", lab, classes=["ferrite", "pearlite"])
    code, res, err = _run(capsys, ["measure", "phases", str(path), "--json"])
    assert code == 0 and set(res["phase_fractions"]) == {"0", "1", "2"}
    assert any("records class names ['ferrite', 'pearlite'] but has class value 2" in w for w in res["warnings"])


def test_grain_table_keeps_huge_uint64_label_values_exact():
    """Labels near 2**60 came back as float64 (1.153e+18): the table's ids matched no label of the image."""
    from micro_seg.measure import measure_grains
    from micro_seg.synth import voronoi_labels

    lab = voronoi_labels((64, 64), n_grains=10, seed=1).astype(np.uint64) + np.uint64(2**60)
    table = measure_grains(lab, pixel_size_um=1.0).grains
    assert table["label"].dtype == np.uint64
    assert set(table["label"].tolist()) == set(np.unique(lab).tolist())


# ---- QA pass: boundary masks with twins, wrapped labels, inverted masks, diagonal 4-grain corners, specks


def _mask_with_twin_lines() -> tuple[np.ndarray, np.ndarray]:
    """The Voronoi boundary mask (1 = grain boundary) with straight value-2 'twin' traces across the grains."""
    _, b = _voronoi_with_boundaries()
    m = b.astype(np.uint8)
    for r in range(10, 400, 25):
        m[r, m[r] == 0] = 2
    return b, m


def test_twin_traces_in_a_boundary_mask_are_warned_about_and_boundary_value_leaves_them_out(tmp_path, capsys):
    """1 = grain boundary, 2 = twin: both were counted as grain boundaries without a word (G_intercept 9.04 vs 8.25)."""
    from micro_seg.measure import measure_grains_from_boundaries

    b, m = _mask_with_twin_lines()
    ref = measure_grains_from_boundaries(b, pixel_size_um=1.0)
    assert not ref.warnings
    res = measure_grains_from_boundaries(m, pixel_size_um=1.0)
    assert res.summary["G_intercept"] > ref.summary["G_intercept"] + 0.5  # the default is unchanged, but said
    assert any("2 different non-zero values (1, 2)" in w and "--boundary-value" in w and "boundary_value=" in w
               for w in res.warnings)
    one = measure_grains_from_boundaries(m, pixel_size_um=1.0, boundary_value=1)
    assert not one.warnings
    assert one.summary["G_intercept"] == ref.summary["G_intercept"]
    assert one.summary["n_grains"] == ref.summary["n_grains"]
    path = tmp_path / "twins.png"
    from PIL import Image

    Image.fromarray(m).save(path)
    code, cli, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert any(w.startswith(f"{path}: 2 different non-zero values (1, 2)") for w in cli["warnings"])
    code, cli, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--boundary-value", "1",
                                   "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert cli["G_intercept"] == pytest.approx(ref.summary["G_intercept"]) and not cli["warnings"]


def _nearest_seed_labels(n: int, seed: int, shape=(400, 400)) -> np.ndarray:
    """Voronoi labels ``1..n`` (every seed's cell; ``n`` grains exactly)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, shape[0], (n, 2))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    _, idx = cKDTree(pts).query(np.stack([yy.ravel(), xx.ravel()], 1))
    return (idx + 1).reshape(shape)


@pytest.mark.parametrize("n", [262, 270])
def test_labels_that_wrapped_just_past_255_are_warned_about(tmp_path, capsys, n):
    """270 grains saved as uint8 (lab % 256) split only ~5 % of the values, under the share that warns: measured as
    255 grains without a word.  A uint8 image using every value 1..255 with a value in separate regions has wrapped."""
    from micro_seg.measure import measure_grains

    lab = _nearest_seed_labels(n, seed=4)
    assert np.unique(lab).size == n
    wrapped = (lab % 256).astype(np.uint8)
    res = measure_grains(wrapped, pixel_size_um=1.0)
    assert res.summary["n_grains"] == 255
    assert sum("labels look wrapped or are not instance labels" in w for w in res.warnings) == 1
    path = tmp_path / "wrapped.tif"
    tifffile.imwrite(path, wrapped)
    code, cli, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert any(w.startswith(f"{path}: labels look wrapped") for w in cli["warnings"])
    # true 8-bit labels using every value 1..255 (255 grains) are not wrapped
    full = _nearest_seed_labels(255, seed=4).astype(np.uint8)
    assert not any("wrapped" in w for w in measure_grains(full, pixel_size_um=1.0).warnings)


def test_a_boundary_mask_more_than_half_boundary_is_asked_whether_it_is_inverted(tmp_path, capsys):
    """Black 3-px lines on white without --boundary-value 0: 76 % boundary, 127 'grains', G_intercept 7.0 instead of
    8.2, no hint (the hint came only when every region was below min_grain_px)."""
    from scipy import ndimage as ndi

    from micro_seg.measure import measure_grains_from_boundaries

    _, b = _voronoi_with_boundaries()
    lines = ndi.binary_dilation(b)
    inverted = np.where(lines, 0, 255).astype(np.uint8)
    res = measure_grains_from_boundaries(inverted, pixel_size_um=1.0, what="inv.png")
    assert any(w.startswith("inv.png: 76 % of the image is boundary: is the mask inverted") and "--boundary-value 0"
               in w for w in res.warnings)
    right = measure_grains_from_boundaries(inverted, pixel_size_um=1.0, boundary_value=0)
    assert right.summary["G_intercept"] == measure_grains_from_boundaries(lines, pixel_size_um=1.0).summary["G_intercept"]
    assert not any("inverted" in w for w in right.warnings)
    path = tmp_path / "inv.png"
    from PIL import Image

    Image.fromarray(inverted).save(path)
    code, cli, err = _run(capsys, ["measure", "grains", str(path), "--boundary", "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert any(w.startswith(f"{path}: 76 % of the image is boundary: is the mask inverted") for w in cli["warnings"])


def test_one_pixel_specks_among_grains_are_warned_about_and_min_grain_merges_them(tmp_path, capsys):
    """500 one-pixel labels among ~2200 Voronoi grains raised G_planimetric by 0.3 without a word; label images had
    no minimum grain size (boundary masks have --min-grain, default 8)."""
    from micro_seg.measure import measure_grains
    from micro_seg.synth import voronoi_labels

    lab = voronoi_labels((1024, 1024), n_grains=2116, seed=3)
    clean = measure_grains(lab, pixel_size_um=1.0)
    assert not clean.warnings
    specks = lab.copy()
    specks.ravel()[np.random.default_rng(0).choice(lab.size, 500, replace=False)] = lab.max() + 1 + np.arange(500)
    res = measure_grains(specks, pixel_size_um=1.0)
    assert res.summary["G_planimetric"] > clean.summary["G_planimetric"] + 0.25
    hits = [w for w in res.warnings if "smaller than 5 pixels" in w]
    assert len(hits) == 1 and "--min-grain" in hits[0] and "min_grain_px=" in hits[0]
    sizes = np.bincount(specks.ravel())[1:]
    n_small = int(((sizes > 0) & (sizes < 5)).sum())  # the 500 specks and a few Voronoi slivers
    assert hits[0].startswith(f"labels: {n_small} of the {res.summary['n_grains']} grains")
    merged = measure_grains(specks, pixel_size_um=1.0, min_grain_px=5)
    assert not merged.warnings and merged.summary["small_grains"]["n_merged"] >= 500
    assert merged.summary["G_planimetric"] == pytest.approx(clean.summary["G_planimetric"], abs=0.01)
    assert merged.summary["G_intercept"] == pytest.approx(clean.summary["G_intercept"], abs=0.01)
    # the CLI: label images take --min-grain too (default 0: nothing removed)
    path = tmp_path / "specks.tif"
    tifffile.imwrite(path, specks.astype(np.uint16))
    code, cli, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--json"])
    assert code == 0 and any("smaller than 5 pixels" in w for w in cli["warnings"])
    assert cli["n_grains"] == res.summary["n_grains"]
    code, cli, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--min-grain", "5", "--json"])
    assert code == 0, err
    assert cli["G_planimetric"] == merged.summary["G_planimetric"] and not cli["warnings"]
    assert specks.max() == lab.max() + 500  # the caller's array is not changed


def test_messages_name_what_was_passed_and_the_file(tmp_path, capsys):
    """fields=(0, 3) was reported as 'fields=(0, 1)' (the grid shrunk for a small image); angles=() raised numpy's
    'need at least one array to stack'; --min-size -3, --close-gaps -1 and --names 'a,,b' did not name the file."""
    from micro_seg.errors import CalibrationError
    from micro_seg.io import write_labels
    from micro_seg.measure import measure_defects, measure_grains, measure_phases

    classes = np.zeros((12, 12), np.uint8)
    classes[:, 6:] = 1
    with pytest.raises(ValueError, match=r"^fields=\(0, 3\): both grid sizes must be >= 1"):
        measure_phases(classes, fields=(0, 3))
    with pytest.raises(ValueError, match=r"^fields=\(2,\): expected an int or a \(rows, cols\) pair"):
        measure_phases(classes, fields=(2,))
    lab = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 8, 0), 8, 1)
    for angles in [(), (30,), None]:
        with pytest.raises(ValueError, match=r"^angles=.*: expected one or more of \(0, 45, 90, 135\)"):
            measure_grains(lab, angles=angles)
    # one pixel-size range for the API and the CLI (io_calibration.MIN/MAX_PIXEL_SIZE_UM: 1e-5 .. 1e4 um)
    for px in (2e-6, 5e4):
        for fn in (measure_grains, measure_defects, measure_phases):
            with pytest.raises(CalibrationError, match=r"expected 1e-05 \.\. 10000 um"):
                fn(lab, pixel_size_um=px)
    assert measure_grains(lab, pixel_size_um=1e4).summary["pixel_size_um"] == 1e4
    path = tmp_path / "lab.tif"
    write_labels(path, lab.astype(np.uint8), pixel_size_um=1.0)
    for argv, option in [(["defects", "--min-size", "-3"], "--min-size -3"),
                         (["grains", "--boundary", "--close-gaps", "-1"], "--close-gaps -1"),
                         (["grains", "--min-grain", "-2"], "--min-grain -2"),
                         (["phases", "--names", "a,,b"], "--names 'a,,b': empty class name"),
                         (["phases", "--names", " "], "no class names given")]:
        code, _, err = _run(capsys, ["measure", argv[0], str(path), *argv[1:], "--json"])
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert str(path) in err and option in err, err


def test_segment_warns_constant_image_as_analyze_does(tmp_path, capsys, test_models):
    """``segment`` writes the label map of a blank field that ``measure`` then measures without a word: the warning
    ``analyze`` gives belongs in segment's result too."""
    from PIL import Image

    path = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 128), 77, np.uint8)).save(path)
    code, res, err = _run(capsys, ["segment", str(path), "--model", "qa-phases", "--out", str(tmp_path / "o"), "--json"])
    assert code == 0, err
    assert [w for w in res["warnings"] if "the image is constant (every pixel 77)" in w and str(path) in w]
