"""CLI: micro-seg measure grains|phases|defects (contract keys, calibration, exit codes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from micro_seg.cli import main
from micro_seg.io import write_labels
from micro_seg.synth import voronoi_labels

GRAIN_KEYS = {"n_grains", "grains_per_mm2", "G_planimetric", "mean_intercept_um", "G_intercept",
              "G_intercept_ci95", "mean_area_um2", "G_area", "ala_G", "pixel_size_um"}


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and "--json" in argv else out), err


def test_measure_grains_label_tiff_uses_file_calibration(tmp_path, capsys):
    labels = voronoi_labels((200, 240), n_grains=120, seed=3)
    fn = tmp_path / "grains.tif"
    write_labels(fn, labels, pixel_size_um=0.5)
    code, res, _ = _run(capsys, ["measure", "grains", str(fn), "--json", "--table", str(tmp_path / "g.csv")])
    assert code == 0
    assert GRAIN_KEYS <= set(res)
    assert res["n_grains"] == labels.max() and res["pixel_size_um"] == 0.5
    assert res["calibration"] == "file"
    assert 8 < res["G_planimetric"] < 11 and res["G_intercept"] > res["G_planimetric"]
    import pandas as pd

    table = pd.read_csv(tmp_path / "g.csv")
    assert len(table) == labels.max() and "area_um2" in table.columns
    # --pixel-size overrides the file: doubling it lowers G_planimetric by exactly 2.0 (to 1e-5)
    code, res2, _ = _run(capsys, ["measure", "grains", str(fn), "--pixel-size", "1.0", "--json"])
    assert res2["calibration"] == "user"
    assert res2["G_planimetric"] - res["G_planimetric"] == pytest.approx(-2.0, abs=1e-5)


def test_measure_grains_without_scale(tmp_path, capsys):
    fn = tmp_path / "plain.tif"
    tifffile.imwrite(fn, voronoi_labels((120, 120), n_grains=40, seed=1).astype(np.uint16))
    code, res, _ = _run(capsys, ["measure", "grains", str(fn), "--json"])
    assert code == 0
    assert res["pixel_size_um"] is None and res["G_intercept"] is None and res["G_planimetric"] is None
    assert res["mean_intercept_px"] > 0
    assert any("no pixel size" in w for w in res["warnings"])


def test_measure_grains_boundary_mask(tmp_path, capsys):
    mask = np.zeros((241, 241), np.uint8)
    mask[:, ::40] = 255
    mask[::40, :] = 255
    mask[100:102, 80] = 0  # a 2-px break in a boundary: closed by --close-gaps 1
    fn = tmp_path / "boundaries.tif"
    tifffile.imwrite(fn, mask)
    code, res, _ = _run(capsys, ["measure", "grains", str(fn), "--boundary", "--pixel-size", "1", "--json"])
    assert code == 0
    assert res["n_grains"] == 36
    # dark traced lines on a bright micrograph: --boundary-value 0
    traced = tmp_path / "traced.tif"
    tifffile.imwrite(traced, np.where(mask > 0, 0, 180).astype(np.uint8))
    code, res0, _ = _run(capsys, ["measure", "grains", str(traced), "--boundary", "--boundary-value", "0",
                                  "--pixel-size", "1", "--json", "--fields", "none"])
    assert code == 0 and res0["n_grains"] == 36
    assert res0["mean_intercept_um"] == pytest.approx(res["mean_intercept_um"])


def _two_class_file(tmp_path):
    """Classes 0 (75%) and 1 (25%) at 2 um/px."""
    c = np.zeros((100, 100), np.uint8)
    c[:, 75:] = 1
    fn = tmp_path / "classes.tif"
    write_labels(fn, c, pixel_size_um=2.0)
    return fn


def test_measure_phases_names(tmp_path, capsys):
    fn = _two_class_file(tmp_path)
    code, res, _ = _run(capsys, ["measure", "phases", str(fn), "--names", "ferrite,pearlite", "--json"])
    assert code == 0
    assert res["phase_fractions"] == {"ferrite": 0.75, "pearlite": 0.25}
    assert set(res["ci95"]) == {"ferrite", "pearlite"}
    code, _, err = _run(capsys, ["measure", "phases", str(fn), "--names", "ferrite", "--json"])
    assert code == 2 and "names" in err and err.count("\n") == 1


def test_measure_defects(tmp_path, capsys):
    m = np.zeros((100, 100), np.uint8)
    m[10:20, 10:20] = 1
    m[50:60, 50:70] = 1
    fn = tmp_path / "pores.tif"
    write_labels(fn, m, pixel_size_um=1.0)
    code, res, _ = _run(capsys, ["measure", "defects", str(fn), "--json"])
    assert code == 0
    assert res["count"] == 2
    assert res["area_fraction"] == pytest.approx(0.03)
    assert res["density_per_mm2"] == pytest.approx(2 / 0.01)
    assert res["max_feret_um"] == pytest.approx(np.hypot(10, 20))
    assert res["mean_ecd_um"] == pytest.approx(np.mean([2 * np.sqrt(100 / np.pi), 2 * np.sqrt(200 / np.pi)]))


def test_miniswhite_masks_are_measured_as_stored(tmp_path, capsys):
    """A mask or boundary mask saved with photometric MINISWHITE holds the same values as a MINISBLACK one; the
    image reader's display inversion turned 5 pores at 5 % into 1 'pore' covering 95 %."""
    m = np.zeros((200, 200), np.uint8)
    for i in range(5):
        m[20 + 35 * i:40 + 35 * i, 30 + 30 * i:50 + 30 * i] = 255
    results = []
    for name, photometric in (("black.tif", "minisblack"), ("white.tif", "miniswhite")):
        fn = tmp_path / name
        tifffile.imwrite(fn, m, photometric=photometric, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        code, res, err = _run(capsys, ["measure", "defects", str(fn), "--json"])
        assert code == 0, err
        results.append(res)
        assert (res["count"], res["area_fraction"], res["pixel_size_um"]) == (5, pytest.approx(0.05), 0.5)
    assert results[0]["mean_ecd_um"] == results[1]["mean_ecd_um"]
    fn, mask = _grid_mask(tmp_path)
    white = tmp_path / "boundaries_white.tif"
    tifffile.imwrite(white, mask, photometric="miniswhite")
    code, res, err = _run(capsys, ["measure", "grains", str(white), "--boundary", "--pixel-size", "1", "--json"])
    assert code == 0, err
    assert res["n_grains"] == 36


def test_bad_inputs_exit_2(tmp_path, capsys):
    code, _, err = _run(capsys, ["measure", "grains", str(tmp_path / "missing.tif"), "--json"])
    assert code == 2 and "missing.tif" in err
    empty = tmp_path / "zeros.tif"
    tifffile.imwrite(empty, np.zeros((20, 20), np.uint8))
    code, _, err = _run(capsys, ["measure", "grains", str(empty), "--json"])
    assert code == 2 and "no grain" in err
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8))
    code, _, err = _run(capsys, ["measure", "grains", str(rgb), "--json"])
    assert code == 2
    code, _, err = _run(capsys, ["measure", "grains", str(empty), "--pixel-size", "-1", "--json"])
    assert code == 2
    code, _, err = _run(capsys, ["measure", "grains", str(empty), "--fields", "abc"])
    assert code == 2
    code, _, err = _run(capsys, ["measure"])
    assert code == 2 and "grains, phases or defects" in err


# ---- bad input and bad options (sweep of 2024: one clear line, exit 2, or a warning where the numbers stand)

def _grid_mask(tmp_path, name="boundaries.tif"):
    """36 square grains of 40 px traced by 1-px lines (value 255), as a boundary mask file."""
    mask = np.zeros((241, 241), np.uint8)
    mask[:, ::40] = 255
    mask[::40, :] = 255
    fn = tmp_path / name
    tifffile.imwrite(fn, mask)
    return fn, mask


def _one_error_line(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_measure_negative_and_huge_pixel_options_exit_2(tmp_path, capsys):
    fn, _ = _grid_mask(tmp_path)
    base = ["measure", "grains", str(fn), "--boundary", "--pixel-size", "1", "--json"]
    code, _, err = _run(capsys, base + ["--close-gaps", "-1"])
    _one_error_line(code, err, "--close-gaps", "-1")
    code, _, err = _run(capsys, base + ["--min-grain", "-5"])
    _one_error_line(code, err, "--min-grain", "-5")
    # a radius of 10000 px ran 32 s and ended in "out of memory": refused at once, naming the limit
    import time

    t0 = time.perf_counter()
    code, _, err = _run(capsys, base + ["--close-gaps", "10000"])
    _one_error_line(code, err, "--close-gaps", "10000", "32", str(fn))
    assert time.perf_counter() - t0 < 5
    code, _, err = _run(capsys, base + ["--close-gaps", "33"])
    _one_error_line(code, err, "--close-gaps")
    # a quarter of the shorter side: 30 px for a 241 x 120 crop
    crop = tmp_path / "crop.tif"
    tifffile.imwrite(crop, tifffile.imread(fn)[:, :121])
    code, _, err = _run(capsys, ["measure", "grains", str(crop), "--boundary", "--close-gaps", "31", "--json"])
    _one_error_line(code, err, "--close-gaps", "30")
    code, res, _ = _run(capsys, base + ["--close-gaps", "2", "--min-grain", "0"])
    assert code == 0 and res["n_grains"] == 36
    pores = tmp_path / "pores.tif"
    m = np.zeros((100, 100), np.uint8)
    m[10:20, 10:20] = 1
    write_labels(pores, m, pixel_size_um=1.0)
    code, _, err = _run(capsys, ["measure", "defects", str(pores), "--min-size", "-1", "--json"])
    _one_error_line(code, err, "--min-size", "-1")
    code, res, _ = _run(capsys, ["measure", "defects", str(pores), "--min-size", "0", "--json"])
    assert code == 0 and res["count"] == 1


@pytest.mark.parametrize("kind", ["grains", "phases", "defects"])
@pytest.mark.parametrize("value", ["0", "nan", "inf", "-1"])
def test_measure_bad_pixel_size_names_file_and_option(tmp_path, capsys, kind, value):
    fn = tmp_path / "labels.tif"
    write_labels(fn, voronoi_labels((60, 60), n_grains=10, seed=0), pixel_size_um=1.0)
    code, _, err = _run(capsys, ["measure", kind, str(fn), "--pixel-size", value, "--json"])
    _one_error_line(code, err, str(fn), "--pixel-size")


def test_measure_grains_binary_image_as_labels_warns(tmp_path, capsys):
    fn, mask = _grid_mask(tmp_path)
    code, res, _ = _run(capsys, ["measure", "grains", str(fn), "--pixel-size", "1", "--json"])
    assert code == 0 and res["n_grains"] == 1  # the numbers stand; the warning says why they are wrong
    hint = [w for w in res["warnings"] if "--boundary" in w]
    assert len(hint) == 1 and str(fn) in hint[0] and "(255)" in hint[0] and "36 " in hint[0]
    # grain interiors as 1, traced boundaries as 0: the label's 36 pieces
    inside = tmp_path / "inside.tif"
    tifffile.imwrite(inside, (mask == 0).astype(np.uint8))
    code, res, _ = _run(capsys, ["measure", "grains", str(inside), "--pixel-size", "1", "--json"])
    assert code == 0 and res["n_grains"] == 1
    assert any("--boundary" in w and "36 " in w for w in res["warnings"])
    # real instance labels, and a single grain filling the image, get no such warning
    lab = tmp_path / "labels.tif"
    write_labels(lab, voronoi_labels((120, 120), n_grains=40, seed=1), pixel_size_um=1.0)
    one = tmp_path / "one.tif"
    tifffile.imwrite(one, np.ones((64, 64), np.uint16))
    for path in (lab, one):
        code, res, _ = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--json"])
        assert code == 0 and not any("--boundary" in w for w in res["warnings"])


def test_measure_grains_no_boundary_pixels_exit_2(tmp_path, capsys):
    fn, mask = _grid_mask(tmp_path)
    for value in ("999", "nan"):
        code, _, err = _run(capsys, ["measure", "grains", str(fn), "--boundary", "--boundary-value", value, "--json"])
        _one_error_line(code, err, str(fn), "no boundary pixels", value)
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros((64, 64), np.uint8))
    code, _, err = _run(capsys, ["measure", "grains", str(empty), "--boundary", "--json"])
    _one_error_line(code, err, str(empty), "no boundary pixels")
    code, res, _ = _run(capsys, ["measure", "grains", str(fn), "--boundary", "--boundary-value", "255", "--json"])
    assert code == 0 and res["n_grains"] == 36


def test_measure_fields_too_small_exit_2(tmp_path, capsys):
    labels = voronoi_labels((200, 240), n_grains=120, seed=3)
    fn = tmp_path / "grains.tif"
    write_labels(fn, labels, pixel_size_um=0.5)
    # 100000 fields of about 1 px: the 95 % CI shrank to nonsense
    code, _, err = _run(capsys, ["measure", "grains", str(fn), "--fields", "100000", "--json"])
    _one_error_line(code, err, str(fn), "--fields", "16 px")
    # fields of 16 x 20 px are big enough in pixels but hold less than one grain each
    code, _, err = _run(capsys, ["measure", "grains", str(fn), "--fields", "12x12", "--json"])
    _one_error_line(code, err, str(fn), "--fields", "grain")
    code, res, _ = _run(capsys, ["measure", "grains", str(fn), "--fields", "4x4", "--json"])
    assert code == 0 and res["fields"]["grid"] == [4, 4]
    assert any("rough" in w for w in res["warnings"])  # 120 grains in 16 fields: the old warning stays
    pores = tmp_path / "pores.tif"
    m = np.zeros((200, 240), np.uint8)
    m[10:20, 10:20] = 1
    m[150:170, 50:60] = 1
    write_labels(pores, m, pixel_size_um=1.0)
    code, _, err = _run(capsys, ["measure", "defects", str(pores), "--fields", "100000", "--json"])
    _one_error_line(code, err, str(pores), "--fields", "16 px")
    code, res, _ = _run(capsys, ["measure", "defects", str(pores), "--fields", "10x12", "--json"])
    assert code == 0 and res["fields"]["n_fields"] == 120 and res["count"] == 2
    # phases: a field count asked for is held to the same rule (a grid still shrinks to fit, as before)
    code, _, err = _run(capsys, ["measure", "phases", str(pores), "--fields", "100000", "--json"])
    _one_error_line(code, err, str(pores), "--fields", "16 px")
    code, res, _ = _run(capsys, ["measure", "phases", str(pores), "--fields", "100x100", "--json"])
    assert code == 0 and res["n_fields"] == 25 * 30


def _disks(shape, centres, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, bool)
    for r, c in centres:
        out |= (rr - r) ** 2 + (cc - c) ** 2 <= radius**2
    return out


def test_measure_defects_class_map_and_full_image_warn(tmp_path, capsys):
    centres = [(20 + 40 * i, 20 + 40 * j) for i in range(4) for j in range(4)]  # 16 pores, 8 of each class
    classes = np.zeros((160, 160), np.uint8)
    for k, (r, c) in enumerate(centres):
        classes[_disks(classes.shape, [(r, c)], 6)] = 1 + k % 2
    fn = tmp_path / "classes.tif"
    write_labels(fn, classes, pixel_size_um=1.0)
    code, res, _ = _run(capsys, ["measure", "defects", str(fn), "--json"])
    assert code == 0 and res["count"] == 2  # the numbers stand
    hint = [w for w in res["warnings"] if "class map" in w]
    assert len(hint) == 1 and str(fn) in hint[0] and "16 pieces" in hint[0]
    # a true instance mask of the same pores: 16 objects, no warning
    inst = np.zeros_like(classes, dtype=np.uint16)
    for k, (r, c) in enumerate(centres):
        inst[_disks(classes.shape, [(r, c)], 6)] = k + 1
    good = tmp_path / "instances.tif"
    write_labels(good, inst, pixel_size_um=1.0)
    code, res, _ = _run(capsys, ["measure", "defects", str(good), "--json"])
    assert code == 0 and res["count"] == 16 and res["warnings"] == []
    # a raw grey image: every pixel non-zero
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.random.default_rng(0).integers(1, 255, (64, 64), dtype=np.uint8))
    code, res, _ = _run(capsys, ["measure", "defects", str(grey), "--json"])
    assert code == 0 and res["area_fraction"] == 1.0
    assert any("whole image" in w and str(grey) in w for w in res["warnings"])


def test_measure_phases_not_a_class_map(tmp_path, capsys):
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, rng.integers(0, 200, (100, 100), dtype=np.uint8))
    code, _, err = _run(capsys, ["measure", "phases", str(grey), "--json"])
    _one_error_line(code, err, str(grey), "200 distinct", "64")
    many = tmp_path / "many.tif"
    tifffile.imwrite(many, np.repeat(np.arange(30, dtype=np.uint8), 4)[None, :].repeat(120, 0))
    code, res, _ = _run(capsys, ["measure", "phases", str(many), "--json"])
    assert code == 0 and len(res["phase_fractions"]) == 30
    assert any("30 distinct" in w for w in res["warnings"])
    huge = tmp_path / "huge.tif"
    big = np.zeros((64, 64), np.int64)
    big[:32] = 2**40
    tifffile.imwrite(huge, big)
    code, _, err = _run(capsys, ["measure", "phases", str(huge), "--json"])
    _one_error_line(code, err, str(huge), str(2**40))


def test_measure_phases_names_count(tmp_path, capsys):
    fn = _two_class_file(tmp_path)
    code, res, _ = _run(capsys, ["measure", "phases", str(fn), "--names", "a,b,c,d", "--json"])
    assert code == 0 and res["phase_fractions"] == {"a": 0.75, "b": 0.25, "c": 0.0, "d": 0.0}
    assert any("c, d" in w for w in res["warnings"])
    code, res, _ = _run(capsys, ["measure", "phases", str(fn), "--names", "a,b", "--json"])
    assert code == 0 and not any("names" in w for w in res["warnings"])
    code, _, err = _run(capsys, ["measure", "phases", str(fn), "--names", "", "--json"])
    _one_error_line(code, err, "--names")


@pytest.mark.parametrize("option", [["--close-gaps", "2"], ["--boundary-value", "255"]])
def test_measure_grains_mask_options_without_boundary_exit_2(tmp_path, capsys, option):
    """They only act on boundary masks: without --boundary they used to be ignored in silence."""
    fn, _ = _grid_mask(tmp_path)
    code, _, err = _run(capsys, ["measure", "grains", str(fn), "--json", *option])
    _one_error_line(code, err, option[0], "applies to boundary masks only", "--boundary")


@pytest.mark.parametrize("kind", ["grains", "phases", "defects"])
def test_table_never_overwrites_the_input_image_or_another_non_table_file(tmp_path, capsys, kind):
    """``--table`` pointed at the input image (or at another micrograph) used to replace it with a CSV."""
    labels = np.zeros((64, 64), np.uint8)
    labels[:, 32:] = 1
    labels[10:20, 5:15] = 2
    img = tmp_path / "lab.tif"
    tifffile.imwrite(img, labels)
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, labels)
    before = img.read_bytes(), other.read_bytes()
    for table, why in ((img, "is the input image"), (other, "would overwrite an existing .tif file")):
        code = main(["measure", kind, str(img), "--table", str(table)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and str(table) in err and why in err, err
    assert (img.read_bytes(), other.read_bytes()) == before
    code = main(["measure", kind, str(img), "--table", str(other / "t.csv")])  # a file where a folder should be
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{other} is a file, not a folder" in err, err
    csv = tmp_path / "t.csv"
    csv.write_text("old")
    code, res, _ = _run(capsys, ["measure", kind, str(img), "--json", "--table", str(csv)])
    assert code == 0 and res["table"] == str(csv) and csv.read_text() != "old"  # an old table is replaced


def test_phases_ignore_given_twice_is_refused(tmp_path, capsys):
    """Only one class value can be ignored; the second --ignore used to replace the first in silence."""
    img = tmp_path / "ph.tif"
    tifffile.imwrite(img, np.repeat(np.array([[0] * 40 + [1] * 30 + [2] * 30], np.uint8), 100, axis=0))
    code = main(["measure", "phases", str(img), "--ignore", "0", "--ignore", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--ignore given twice (0 and 2)" in err
    code, res, _ = _run(capsys, ["measure", "phases", str(img), "--ignore", "2", "--fields", "none", "--json"])
    assert code == 0 and res["phase_fractions"] == pytest.approx({"0": 40 / 70, "1": 30 / 70})


def test_fields_table_writes_the_per_field_values_behind_the_confidence_intervals(tmp_path, capsys):
    """The per-field values (E562 / E1245: report them with the CI) were computed but no command wrote them out."""
    import pandas as pd

    from micro_seg.measure.stats import field_statistics

    c = np.zeros((100, 100), np.uint8)
    c[:, :30] = 1  # field columns 0 and 1 hold 20 / 10 px of class 1: fractions 1, 0.5, 0, 0, 0 on every row
    write_labels(tmp_path / "ph.tif", c, pixel_size_um=0.5, classes=["ferrite", "pearlite"])
    code, res, _ = _run(capsys, ["measure", "phases", str(tmp_path / "ph.tif"), "--json", "--fields-table",
                                 str(tmp_path / "pf.csv")])
    f = pd.read_csv(tmp_path / "pf.csv")
    assert code == 0 and res["fields_table"] == str(tmp_path / "pf.csv") and len(f) == 25
    assert f["fraction_pearlite"].tolist() == [1.0, 0.5, 0.0, 0.0, 0.0] * 5
    assert field_statistics(f["fraction_pearlite"])["ci95"] == pytest.approx(res["ci95"]["pearlite"])
    m = np.zeros((96, 96), np.uint8)
    m[4:8, 4:8] = 1  # one 16-px particle in the first of the 3 x 3 fields
    write_labels(tmp_path / "d.tif", m, pixel_size_um=1.0)
    code, res, _ = _run(capsys, ["measure", "defects", str(tmp_path / "d.tif"), "--json", "--fields", "3x3",
                                 "--fields-table", str(tmp_path / "df.csv")])
    f = pd.read_csv(tmp_path / "df.csv")
    assert code == 0 and f["count"].tolist() == [1] + [0] * 8
    assert f["area_fraction"].tolist() == pytest.approx([16 / 1024] + [0.0] * 8)
    assert f["density_per_mm2"].iloc[0] == pytest.approx(1e6 / 1024)  # 1 per 32 x 32 um field
    assert field_statistics(f["area_fraction"])["ci95"] == pytest.approx(res["area_fraction_ci95"])
    code = main(["measure", "defects", str(tmp_path / "d.tif"), "--table", str(tmp_path / "x.csv"),
                 "--fields-table", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--table and --fields-table name the same file" in err


@pytest.mark.parametrize("fields", ["none", "1"])
def test_grain_fields_table_without_fields_is_refused_not_written_empty(tmp_path, capsys, fields):
    """--fields none (or 0 / 1) measures grains with no per-field values: --fields-table wrote a file holding one
    empty line (no header, no row) and reported it in the JSON; phases / defects write their one field."""
    import pandas as pd

    write_labels(tmp_path / "g.tif", voronoi_labels((128, 128), n_grains=60, seed=1), pixel_size_um=0.5)
    out = tmp_path / "gf.csv"
    code = main(["measure", "grains", str(tmp_path / "g.tif"), "--fields", fields, "--fields-table", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--fields-table with --fields none" in err and "give a field grid" in err
    assert not out.exists()
    code, res, _ = _run(capsys, ["measure", "grains", str(tmp_path / "g.tif"), "--fields", "2x2", "--json",
                                 "--fields-table", str(out)])
    assert code == 0 and len(pd.read_csv(out)) == 4


def test_phase_fields_table_carries_the_field_area_in_um2(tmp_path, capsys):
    """The phase field table had only area_px, while the grain / defect field tables add their _um columns."""
    import pandas as pd

    c = np.zeros((100, 100), np.uint8)
    c[:, :30] = 1
    write_labels(tmp_path / "ph.tif", c, pixel_size_um=0.5)
    code, _, _ = _run(capsys, ["measure", "phases", str(tmp_path / "ph.tif"), "--json", "--fields-table",
                               str(tmp_path / "pf.csv")])
    f = pd.read_csv(tmp_path / "pf.csv")
    assert code == 0 and f["area_um2"].tolist() == [100.0] * 25  # 20 x 20 px of 0.5 um
    code, _, _ = _run(capsys, ["measure", "phases", str(tmp_path / "ph.tif"), "--json", "--pixel-size", "2",
                               "--fields-table", str(tmp_path / "pf2.csv")])
    assert pd.read_csv(tmp_path / "pf2.csv")["area_um2"].tolist() == [1600.0] * 25
