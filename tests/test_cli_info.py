"""``micro-seg info``: contract keys, options, human output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import data_builders as db
from micro_seg.cli import main

CONTRACT_KEYS = {"path", "shape", "dtype", "pixel_size_um", "calibration_source", "databar_rows"}


def run_info(capsys, *argv):
    code = main(["info", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_contract_keys_and_values(tmp_path, capsys):
    image = db.add_databar(db.grain_image((240, 320), seed=11), 30)
    path = db.fei_tiff(tmp_path / "sem.tif", image, px_m=2.5e-8)
    code, out, err = run_info(capsys, path, "--json")
    assert code == 0 and err == ""
    assert out.count("\n") == 1  # one JSON object on one line
    info = json.loads(out)
    assert CONTRACT_KEYS <= set(info)
    assert info["path"] == str(path)
    assert info["shape"] == [240, 320]
    assert info["dtype"] == "uint8"
    assert info["pixel_size_um"] == pytest.approx(0.025)
    assert info["calibration_source"] == "fei"
    assert info["databar_rows"] == 30
    assert info["analysis_shape"] == [210, 320]
    assert info["field_um"] == pytest.approx([210 * 0.025, 320 * 0.025])
    assert info["n_pages"] == 1 and info["format"] == "tiff"


def test_rgb_shape_and_pixel_size_override(tmp_path, capsys):
    rgb = np.stack([db.grain_image((50, 60), seed=s) for s in (1, 2, 3)], axis=-1)
    path = db.save_pil(tmp_path / "c.png", rgb)
    code, out, _ = run_info(capsys, path, "--pixel-size", "0.8", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["shape"] == [50, 60, 3]
    assert (info["pixel_size_um"], info["calibration_source"]) == (0.8, "user")
    assert info["is_grey_rgb"] is False


def test_multipage_page_option(tmp_path, capsys):
    stack = np.stack([np.full((16, 20), v, np.uint16) for v in (10, 20, 30)])
    tifffile.imwrite(tmp_path / "m.tif", stack, photometric="minisblack")
    info = json.loads(run_info(capsys, tmp_path / "m.tif", "--json")[1])
    assert info["n_pages"] == 3 and info["page"] == 0 and info["min"] == 10
    info = json.loads(run_info(capsys, tmp_path / "m.tif", "--page", "2", "--json")[1])
    assert info["page"] == 2 and info["max"] == 30 and info["shape"] == [16, 20]


def test_max_pixels_option(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((40, 40), np.uint8))
    code, out, err = run_info(capsys, tmp_path / "a.tif", "--max-pixels", "1000", "--json")
    assert code == 2 and out == "" and "1,600 pixels" in err


def test_human_output(tmp_path, capsys):
    path = db.resolution_tiff(tmp_path / "h.tif", np.zeros((8, 9), np.uint8), per_unit=1e4, unit="CENTIMETER")
    code, out, err = run_info(capsys, path)
    assert code == 0 and err == ""
    assert "pixel_size_um: 1" in out and "calibration_source: tiff-resolution" in out and "shape: [8, 9]" in out


def test_json_is_strict(tmp_path, capsys):
    # NaN-free and standard JSON even for float images
    data = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    tifffile.imwrite(tmp_path / "f.tif", data)
    out = run_info(capsys, tmp_path / "f.tif", "--json")[1]
    info = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert info["dtype"] == "float32" and info["max"] == pytest.approx(1.0)
