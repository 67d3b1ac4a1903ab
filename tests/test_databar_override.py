"""The user's data-bar override: ``read_micrograph(databar_rows=None|N)`` and ``--databar-rows auto|N``.

The detector can miss a bar or take real microstructure for one; the override sets it exactly.  Known answers:
the analysed area is the image without exactly N bottom rows, and what is measured equals measuring that crop.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

import data_builders as db
from micro_seg import inference
from micro_seg.batch import run_batch
from micro_seg.cli import main
from micro_seg.errors import InvalidImageError
from micro_seg.io import read_labels, read_micrograph
from micro_seg.registry import ModelCard, save_model

torch = pytest.importorskip("torch")


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def sem_tif(tmp_path):
    """A grain image with a 24-row SEM data bar the detector finds."""
    image = db.add_databar(db.grain_image((240, 320), seed=8), 24)
    db.fei_tiff(tmp_path / "sem.tif", image, px_m=1e-8)
    return tmp_path / "sem.tif", image


def _pores_with_white_strip(rows=120, cols=160, strip=30):
    """Dark matrix (40) with three bright pores (230) in the top part and a bright strip (230) with dark marks
    in the bottom ``strip`` rows, standing for a data bar that must be left out of the measurement."""
    img = np.full((rows, cols), 40, np.uint8)
    yy, xx = np.mgrid[:rows, :cols]
    for r, c, rad in [(20, 20, 6), (50, 100, 8), (70, 30, 5)]:
        img[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = 230
    img[rows - strip:] = 230
    img[rows - strip + 8: rows - strip + 14, 10:60] = 40  # "text"
    return img


@pytest.fixture
def pores_model(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "_threads_configured", True)
    torch.set_num_threads(1)
    root = tmp_path / "models"
    card = ModelCard(name="test-pores", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]},
                     in_channels=1, classes=["matrix", "pore", "crack"], defect_classes=["pore", "crack"],
                     tile_size=64, normalisation={"mode": "minmax"})
    save_model(root / "test-pores", db.threshold_net(3, 1), card)
    monkeypatch.setenv("MICRO_SEG_MODELS", str(root))
    return root / "test-pores"


# ----------------------------------------------------------------------------- engine


def test_read_micrograph_databar_rows_override(sem_tif):
    path, image = sem_tif
    m = read_micrograph(path)
    assert (m.databar_rows, m.meta["databar_source"]) == (24, "detected")
    m = read_micrograph(path, databar_rows=0)  # the detector's bar is real microstructure: keep every row
    assert (m.databar_rows, m.meta["databar_source"]) == (0, "user")
    np.testing.assert_array_equal(m.analysis_data, image)
    m = read_micrograph(path, databar_rows=40)
    assert m.databar_rows == 40 and m.analysis_data.shape == (200, 320)
    np.testing.assert_array_equal(m.analysis_data, image[:200])
    assert read_micrograph(path, databar_rows=np.int64(239)).analysis_data.shape == (1, 320)
    for bad in (240, 1000, -1, True, 2.5, "10"):
        with pytest.raises(InvalidImageError, match="sem.tif"):
            read_micrograph(path, databar_rows=bad)
    assert "databar_source" not in read_micrograph(path, detect_databar=False).meta


# ----------------------------------------------------------------------------- info


def test_info_databar_rows_option(sem_tif, capsys):
    path, _ = sem_tif
    for given, rows, source, shape in [(None, 24, "detected", [216, 320]), ("auto", 24, "detected", [216, 320]),
                                       ("0", 0, "user", [240, 320]), ("50", 50, "user", [190, 320])]:
        argv = ["info", str(path), "--json"] + ([] if given is None else ["--databar-rows", given])
        code, out, err = _run(argv, capsys)
        assert code == 0, err
        res = json.loads(out)
        assert (res["databar_rows"], res["databar_source"], res["analysis_shape"]) == (rows, source, shape)
        assert res["field_um"][0] == pytest.approx(shape[0] * 0.01)
    code, out, err = _run(["info", str(path), "--databar-rows", "240", "--json"], capsys)
    assert code == 2 and out == "" and "sem.tif" in err and "240 rows" in err and len(err.strip().splitlines()) == 1
    for bad in ("-3", "many"):
        code, out, err = _run(["info", str(path), "--databar-rows", bad], capsys)
        assert code == 2 and "--databar-rows" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- segment / analyze


def test_analyze_and_segment_measure_exactly_the_area_above_the_given_bar(pores_model, tmp_path, capsys):
    img = _pores_with_white_strip()
    path = tmp_path / "pores.png"
    Image.fromarray(img).save(path)
    Image.fromarray(img[:90]).save(tmp_path / "cropped.png")
    code, out, err = _run(["analyze", str(path), "--model", "test-pores", "--pixel-size", "1.0",
                           "--databar-rows", "30", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert (res["databar_rows"], res["databar_source"]) == (30, "user")
    assert res["phases"]["phase_fractions"]["pore"] == pytest.approx(float(np.mean(img[:90] > 128)), abs=1e-9)
    assert res["defects"]["count"] == 3
    code, out, err = _run(["analyze", str(tmp_path / "cropped.png"), "--model", "test-pores", "--pixel-size", "1.0",
                           "--json"], capsys)
    crop = json.loads(out)
    assert crop["databar_rows"] == 0
    assert res["phases"] == crop["phases"] and res["defects"] == crop["defects"]
    # without the override the strip is measured as pore
    code, out, err = _run(["analyze", str(path), "--model", "test-pores", "--pixel-size", "1.0", "--databar-rows", "0",
                           "--json"], capsys)
    assert json.loads(out)["phases"]["phase_fractions"]["pore"] == pytest.approx(float(np.mean(img > 128)), abs=1e-9)

    code, out, err = _run(["segment", str(path), "--model", "test-pores", "--out", str(tmp_path / "o"),
                           "--databar-rows", "30", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["shape"] == [90, 160] and (res["databar_rows"], res["databar_source"]) == (30, "user")
    labels, _ = read_labels(res["labels"])
    np.testing.assert_array_equal(labels, (img[:90] > 128).astype(labels.dtype))
    code, out, err = _run(["segment", str(path), "--model", "test-pores", "--out", str(tmp_path / "o"),
                           "--databar-rows", "120", "--json"], capsys)
    assert code == 2 and "pores.png" in err and "120 rows" in err


# ----------------------------------------------------------------------------- batch


def _csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def test_batch_databar_rows_every_image_rerun_and_a_too_short_image(pores_model, tmp_path):
    img = _pores_with_white_strip()
    root = tmp_path / "in" / "s"
    root.mkdir(parents=True)
    tifffile.imwrite(root / "a.tif", img)
    tifffile.imwrite(root / "short.tif", img[:25])  # fewer rows than the bar given: fails alone
    out = tmp_path / "out"
    s = run_batch(tmp_path / "in", out, model=pores_model, workers=0, databar_rows=30, report=False)
    assert (s.n_ok, s.n_failed) == (1, 1)
    rows = _csv(out / "images.csv")
    assert rows["s/a.tif"]["status"] == "ok" and rows["s/a.tif"]["databar_rows"] == "30"
    pore = [k for k in rows["s/a.tif"] if "fraction" in k and k.endswith("pore")][0]
    assert float(rows["s/a.tif"][pore]) == pytest.approx(float(np.mean(img[:90] > 128)), abs=1e-9)
    assert rows["s/short.tif"]["status"] == "failed"
    assert "short.tif" in rows["s/short.tif"]["error"] and "30 rows" in rows["s/short.tif"]["error"]
    assert tifffile.imread(out / "labels" / "s" / "a_labels.tif").shape == (90, 160)
    # the same option again: nothing redone; another value (or auto) is another measurement: redone
    s = run_batch(tmp_path / "in", out, model=pores_model, workers=0, databar_rows=30, report=False)
    assert s.n_processed == 0
    s = run_batch(tmp_path / "in", out, model=pores_model, workers=0, databar_rows=0, report=False)
    assert (s.n_processed, s.n_ok) == (2, 2)
    rows = _csv(out / "images.csv")
    assert rows["s/a.tif"]["databar_rows"] == "0"
    assert float(rows["s/a.tif"][pore]) == pytest.approx(float(np.mean(img > 128)), abs=1e-9)
    s = run_batch(tmp_path / "in", out, model=pores_model, workers=0, report=False)
    assert s.n_processed == 2


def test_batch_cli_refuses_a_bad_databar_rows(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((40, 40), np.uint8))
    code, out, err = _run(["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "x",
                           "--databar-rows", "-1"], capsys)
    assert code == 2 and "--databar-rows" in err
    from micro_seg.batch import BatchOptionError

    with pytest.raises(BatchOptionError, match="databar-rows"):
        run_batch(tmp_path / "in", tmp_path / "out", model="x", databar_rows=-2)


# ----------------------------------------------------------------------------- qc / classify

QC_SPEC = "name: bar\nimage:\n  clipped_high_fraction: 0.02\n"


def test_qc_judges_the_area_above_the_given_bar(tmp_path, capsys):
    img = db.grain_image((200, 240), seed=3)
    img = np.clip(img, 0, 200).astype(np.uint8)
    img[-40:] = 255  # a white strip without text: no bar to the detector, 20 % clipped pixels
    Image.fromarray(img).save(tmp_path / "f.png")
    (tmp_path / "spec.yaml").write_text(QC_SPEC)
    argv = ["qc", str(tmp_path / "f.png"), "--spec", str(tmp_path / "spec.yaml"), "--json"]
    code, out, err = _run(argv, capsys)
    res = json.loads(out)["results"][0]
    assert res["databar_rows"] == 0 and [r["check"] for r in res["reasons"]] == ["image.clipped_high_fraction"]
    code, out, err = _run(argv + ["--databar-rows", "40"], capsys)
    res = json.loads(out)["results"][0]
    assert code == 0, err
    assert (res["databar_rows"], res["databar_source"], res["verdict"]) == (40, "user", "pass")
    code, out, err = _run(argv + ["--databar-rows", "200"], capsys)  # does not fit: that input fails, exit 3
    res = json.loads(out)["results"][0]
    assert code == 3 and res["verdict"] == "fail" and "f.png" in res["error"] and "200 rows" in res["error"]


def test_classify_sees_the_area_above_the_given_bar(tmp_path, capsys, monkeypatch):
    import micro_seg.classifier as clf

    seen = []

    def fake_batch(micrographs, model):
        seen.extend(m.analysis_data.shape for m in micrographs)
        return [{"class": "a"} for _ in micrographs]

    monkeypatch.setattr(clf, "load_classifier", lambda name: object())
    monkeypatch.setattr(clf, "classify_batch", fake_batch)
    Image.fromarray(db.grain_image((100, 80), seed=1)).save(tmp_path / "a.png")
    code, out, err = _run(["classify", str(tmp_path / "a.png"), "--model", "m", "--databar-rows", "10", "--json"],
                          capsys)
    assert code == 0, err
    assert seen == [(90, 80)]
    got = json.loads(out)  # the JSON says which area was classified, as segment / analyze / info / qc do
    assert (got["databar_rows"], got["databar_source"]) == (10, "user")
    code, out, err = _run(["classify", str(tmp_path / "a.png"), "--model", "m", "--json"], capsys)
    assert code == 0 and json.loads(out)["databar_source"] == "detected"
    code, out, err = _run(["classify", str(tmp_path / "a.png"), "--model", "m", "--databar-rows", "100"], capsys)
    assert code == 2 and "a.png" in err and "100 rows" in err


def test_qc_of_a_batch_table_judges_the_images_without_the_bar_the_batch_left_out(pores_model, tmp_path, capsys):
    img = np.clip(db.grain_image((200, 240), seed=3), 0, 200).astype(np.uint8)
    img[-40:] = 255
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "f.tif", img)
    (tmp_path / "spec.yaml").write_text(QC_SPEC)
    s = run_batch(tmp_path / "in", tmp_path / "out", model=pores_model, workers=0, databar_rows=40, report=False,
                  spec=tmp_path / "spec.yaml")
    assert s.n_ok == 1 and _csv(tmp_path / "out" / "images.csv")["f.tif"]["qc_verdict"] == "pass"
    code, out, err = _run(["qc", str(tmp_path / "out"), "--spec", str(tmp_path / "spec.yaml"),
                           "--images-dir", str(tmp_path / "in"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["results"][0]["verdict"] == "pass"


def test_a_batch_without_the_option_keeps_its_earlier_parameters_hash():
    """Finished images of a batch run before --databar-rows existed are not all redone by an upgrade."""
    from micro_seg.batch_worker import BatchConfig

    plain = BatchConfig(in_dir="/i", out_dir="/o", model="m").processing_parameters()
    assert "databar_rows" not in plain
    assert BatchConfig(in_dir="/i", out_dir="/o", model="m", databar_rows=0).processing_parameters() == \
        {**plain, "databar_rows": 0}


def test_qc_databar_rows_on_a_batch_table_warns_it_applies_to_images_only(tmp_path, capsys):
    """The warning said the table's images 'are judged without the data bar the batch measured without'."""
    (tmp_path / "spec.yaml").write_text(QC_SPEC)
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "images.csv").write_text("path,status,error,pixel_size_um,databar_rows\na.tif,ok,,,40\n")
    code, out, err = _run(["qc", str(tmp_path / "batch"), "--spec", str(tmp_path / "spec.yaml"), "--databar-rows",
                           "12", "--json"], capsys)
    assert code == 0, err
    assert "warning: --databar-rows applies to image inputs only" in err
    assert "judged on the area the batch measured" in err and "databar_rows column" in err
    assert "measured without" not in err
