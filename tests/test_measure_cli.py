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


def test_measure_phases_names(tmp_path, capsys):
    c = np.zeros((100, 100), np.uint8)
    c[:, 75:] = 1
    fn = tmp_path / "classes.tif"
    write_labels(fn, c, pixel_size_um=2.0)
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
