"""Bad input to ``micro-seg qc`` / QC specs: empty specs, unknown measurement keys, folders as inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from micro_seg.cli import main
from micro_seg.errors import SpecError
from micro_seg.qc import evaluate, load_spec, parse_spec
from test_batch_helpers import make_folder, threshold_process
from test_quality import grain_micrograph


def run_cli(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "good.png"
    Image.fromarray(grain_micrograph(0)).save(path)
    return path


# ------------------------------------------------------------------ specs without checks


@pytest.mark.parametrize("text", ["", "# only a comment\n", "name: nothing\nversion: 1\n", "image: {}\n",
                                  "measurements:\n  grains: {}\n", "image:\n  calibration: ignore\n",
                                  "classifier:\n  model: some-classifier\n"])
def test_spec_without_checks_is_refused(tmp_path, text):
    spec = tmp_path / "empty.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError, match=r"empty\.yaml: the spec has no checks"):
        load_spec(spec)


def test_spec_with_one_check_still_loads(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text("image:\n  calibration: required\n")
    assert load_spec(spec).has_checks
    assert not parse_spec({}).has_checks  # a programmatic empty spec is still allowed (e.g. offending_defects)


def test_cli_qc_empty_spec_exit_2_one_line(tmp_path, image, capsys):
    spec = tmp_path / "empty.yaml"
    spec.write_text("")
    code, out, err = run_cli(capsys, ["qc", str(image), "--spec", str(spec), "--json"])
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"micro-seg: error: {spec}: the spec has no checks "
                                        "(add image, measurements or classifier rules), so every image would pass"]


def test_batch_empty_spec_refused_before_any_image(tmp_path):
    from micro_seg.batch import run_batch

    root = tmp_path / "in"
    make_folder(root, counts={"S1/f1.tif": 3})
    spec = tmp_path / "empty.yaml"
    spec.write_text("")
    out = tmp_path / "out"
    with pytest.raises(SpecError, match="the spec has no checks"):
        run_batch(root, out, model=None, process=threshold_process, workers=0, spec=spec)
    assert not (out / "images.csv").exists()


# ------------------------------------------------------------------ unknown measurement keys


@pytest.mark.parametrize(
    "rules, where",
    [
        ({"grains": {"G_nonsense": {"min": 1}}}, "measurements.grains.G_nonsense"),
        ({"grains": {"g_intercept": [7, 9]}}, "measurements.grains.g_intercept"),
        ({"defects": {"area_fractoin": 0.01}}, "measurements.defects.area_fractoin"),
        ({"phases": {"frobnicate": {"max": 0.1}}}, "measurements.phases.frobnicate"),
        ({"phases": {"ferrite": [0.6, 0.9]}}, "measurements.phases.ferrite"),  # a phase name at the wrong level
        ({"phases": {"ci95": {"max": 0.1}}}, "measurements.phases.ci95"),  # a per-phase table, not a number
        ({"grains": {"phase_fraction_": {"max": 0.1}}}, "measurements.grains.phase_fraction_"),
    ],
)
def test_unknown_measurement_key_is_refused_listing_the_known_ones(rules, where):
    with pytest.raises(SpecError) as info:
        parse_spec({"measurements": rules}, source="s.yaml")
    msg = str(info.value)
    assert msg.startswith(f"s.yaml: {where}: unknown measurement")
    group = where.split(".")[1]
    known = {"grains": "G_intercept", "defects": "area_fraction", "phases": "phase_fractions"}[group]
    assert "allowed: " in msg and known in msg.split("allowed: ")[1]
    if group == "phases":
        assert f"measurements.phases.phase_fractions.{where.rsplit('.', 1)[1]}" in msg


def test_free_form_phase_names_and_table_columns_are_accepted():
    spec = parse_spec({"measurements": {
        "phases": {"phase_fractions": {"my odd phase-name": [0.1, 0.9], "frobnicate": [0, 0.5]},
                   "phase_fraction_ferrite": [0.5, 1.0], "phase_fraction_ci95_ferrite": {"max": 0.05},
                   "analysed_area_um2": {"min": 100}},
        "grains": {"G_intercept": [7, 9], "mean_intercept_by_angle_px_45": {"max": 50}},
        "defects": {"max_ecd_um": 20, "density_ci95_per_mm2": {"max": 5}},
    }})
    assert set(spec.phase_fractions) == {"my odd phase-name", "frobnicate"}
    # a batch-table row: the per-phase column is found (the phase name part is free-form)
    row = {"phase_fraction_ferrite": 0.4, "phase_fraction_ci95_ferrite": 0.01, "analysed_area_um2": 500.0,
           "G_intercept": 8.0, "mean_intercept_by_angle_px_45": 12.0, "defects_density_ci95_per_mm2": 1.0,
           "phase_fractions": None}
    r = evaluate(None, spec, measurements=row)
    assert ("phases.phase_fraction_ferrite", 0.4, 0.5) in [(x.check, x.value, x.limit) for x in r.reasons]


def _summaries():
    """Summaries of the three measurements, calibrated and not: every scalar key a spec may name."""
    from micro_seg.measure import measure_defects, measure_grains, measure_phases
    from micro_seg.synth import grain_micrograph as synth_grains

    syn = synth_grains((96, 96), n_grains=20, difficulty="clean", pixel_size_um=0.5, seed=0)
    classes = np.zeros((64, 64), np.uint8)
    classes[:, 32:] = 1
    classes[:8, :8] = 2
    mask = np.zeros((64, 64), bool)
    mask[5:10, 5:10] = True
    mask[30:35, 40:50] = True
    for px in (0.5, None):
        yield "grains", measure_grains(syn.labels, pixel_size_um=px).summary
        yield "phases", measure_phases(classes, pixel_size_um=px, names=["a", "b", "c"]).summary
        yield "defects", measure_defects(mask, pixel_size_um=px).summary


def test_every_measured_key_is_a_known_spec_key():
    """Guards the key lists in micro_seg.qc against new measurements (they would be refused as typos)."""
    for group, summary in _summaries():
        for key, value in summary.items():
            if isinstance(value, (dict, list, str)) or key == "phase_fractions":
                continue
            parse_spec({"measurements": {group: {key: {"max": 1e9}}}})  # raises if the key were unknown


def test_cli_qc_unknown_measurement_exit_2(tmp_path, image, capsys):
    spec = tmp_path / "typo.yaml"
    spec.write_text("measurements:\n  grains:\n    G_nonsense: {min: 1}\n")
    code, out, err = run_cli(capsys, ["qc", str(image), "--spec", str(spec), "--json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "typo.yaml: measurements.grains.G_nonsense: unknown measurement; allowed:" in err


# ------------------------------------------------------------------ inputs


def test_cli_qc_folder_that_is_not_a_batch_output_exit_2(tmp_path, image, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("image:\n  calibration: required\n")
    folder = tmp_path / "empty"
    folder.mkdir()
    code, out, err = run_cli(capsys, ["qc", str(image), str(folder), "--spec", str(spec), "--json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"{folder}: is a folder but not a batch output folder (no images.csv in it)" in err
    # a batch output folder is still judged from its table
    (folder / "images.csv").write_text("path,status,error,pixel_size_um\na.tif,ok,,0.5\n")
    code, out, err = run_cli(capsys, ["qc", str(folder), "--spec", str(spec), "--json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["verdict"] == "pass"


def test_cli_qc_defects_rule_on_a_grains_table_is_not_judged_on_the_grain_column(tmp_path, capsys):
    spec = tmp_path / "d.yaml"
    spec.write_text("measurements:\n  defects:\n    mean_area_um2: {max: 100}\n")
    table = tmp_path / "gi.csv"
    table.write_text("path,status,pixel_size_um,mean_area_um2\na.tif,ok,0.5,489.4\nb.tif,ok,0.5,50\n")
    code, out, err = run_cli(capsys, ["qc", str(table), "--spec", str(spec), "--json"])
    assert code == 0, err
    for row in json.loads(out)["results"]:
        assert row["verdict"] == "review", row
        assert [r["message"] for r in row["reasons"]] == ["defects.mean_area_um2 was not measured; the spec requires it"]


# ------------------------------------------------------------------ a batch's specimens.csv


def _specimens_csv(tmp_path, rows):
    """specimens.csv as ``micro-seg batch`` writes it, from per-image rows."""
    from micro_seg.batch import export_specimens_csv

    path, _ = export_specimens_csv(rows, tmp_path / "specimens.csv")
    return path


def _qc_json(capsys, table, spec_text, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    code, out, err = run_cli(capsys, ["qc", str(table), "--spec", str(spec), "--json"])
    assert code == 0, err
    return {r["specimen"]: r for r in json.loads(out)["results"]}


def test_cli_qc_specimens_csv_is_calibrated_when_all_its_fields_are(tmp_path, capsys):
    table = tmp_path / "specimens.csv"
    table.write_text("specimen,n_fields,n_failed,n_uncalibrated,mean_intercept_um_mean,G_intercept\nA,3,0,0,10.0,9.7\n")
    spec = "image:\n  calibration: fail\nmeasurements:\n  grains:\n    G_intercept: [5, 12]\n"
    res = _qc_json(capsys, table, spec, tmp_path)
    assert res["A"]["verdict"] == "pass", res["A"]["reasons"]


def test_cli_qc_specimens_csv_judges_the_specimen_values_a_batch_writes(tmp_path, capsys):
    rows = [{"path": f"{s}/{i}.tif", "specimen": s, "status": "ok", "pixel_size_um": px,
             "grains_per_mm2": na, "mean_intercept_um": li, "mean_area_um2": 1000.0 / na * 1000.0,
             "ala_G": 3.0, "n_grains": 300}
            for s, px, na, li in (("A", 0.5, 2000.0, 20.0), ("B", 0.5, 200.0, 60.0), ("C", None, 2000.0, 20.0))
            for i in range(3)]
    rows[-1]["pixel_size_um"] = 0.5  # C: 2 of its 3 fields uncalibrated
    table = _specimens_csv(tmp_path, rows)
    # G from the mean intercept, E112: l = 20 um -> G 8.3; 60 um -> G 5.1
    spec = ("image:\n  calibration: review\nmeasurements:\n  grains:\n    G_intercept: [7, 9]\n"
            "    mean_intercept_um: {max: 50}\n")
    res = _qc_json(capsys, table, spec, tmp_path)
    assert res["A"]["verdict"] == "pass", res["A"]["reasons"]
    assert res["B"]["verdict"] == "fail"
    assert sorted(r["check"] for r in res["B"]["reasons"]) == ["grains.G_intercept", "grains.mean_intercept_um"]
    assert {r["check"]: r["value"] for r in res["B"]["reasons"]}["grains.mean_intercept_um"] == pytest.approx(60.0)
    (cal,) = res["C"]["reasons"]
    assert res["C"]["verdict"] == "review" and cal["check"] == "image.calibration"
    assert "2 of 3 fields" in cal["message"] and cal["value"] == 2
    # a rule a specimen row holds no value for (a per-image quantity, not a field mean) is review with the reason
    res = _qc_json(capsys, table, "measurements:\n  grains:\n    ala_G: {min: 2}\n", tmp_path)
    for r in res.values():
        (reason,) = r["reasons"]
        assert r["verdict"] == "review" and reason["value"] is None
        assert "cannot be judged on a specimen row" in reason["message"] and "images.csv" in reason["message"]
    # so is a magnification window: a specimen row records no pixel size
    res = _qc_json(capsys, table, "image:\n  pixel_size_um: [0.1, 1]\n", tmp_path)
    assert {r["verdict"] for r in res.values()} == {"review"}
    assert "specimen row" in res["A"]["reasons"][0]["message"]


def test_cli_qc_specimens_csv_defects_and_phase_fractions_are_their_field_means(tmp_path, capsys):
    rows = [{"path": f"{s}/{i}.tif", "specimen": s, "status": "ok", "pixel_size_um": 0.5,
             "phase_fraction_ferrite": f, "phase_fraction_pearlite": 1 - f, "defects_area_fraction": a,
             "defects_count": 4, "defects_max_feret_um": 30.0}
            for s, f, a in (("A", 0.7, 0.001), ("B", 0.4, 0.02)) for i in range(2)]
    rows.append({"path": "B/2.tif", "specimen": "B", "status": "failed", "error": "x"})
    table = _specimens_csv(tmp_path, rows)
    spec = ("measurements:\n  phases:\n    phase_fractions:\n      ferrite: [0.6, 0.9]\n"
            "  defects:\n    area_fraction: 0.005\n")
    res = _qc_json(capsys, table, spec, tmp_path)
    assert res["A"]["verdict"] == "pass", res["A"]["reasons"]
    checks = {r["check"]: r for r in res["B"]["reasons"]}
    assert res["B"]["verdict"] == "fail"
    assert checks["phases.phase_fractions.ferrite"]["value"] == pytest.approx(0.4)
    assert checks["defects.area_fraction"]["value"] == pytest.approx(0.02)
    assert checks["batch.status"]["severity"] == "review" and "1 of 3 fields" in checks["batch.status"]["message"]
    # the largest defect of a specimen is not in specimens.csv (only field means are): review, not a grain value
    res = _qc_json(capsys, table, "measurements:\n  defects:\n    max_feret_um: 50\n", tmp_path)
    assert {r["verdict"] for r in res.values()} == {"review"}
    assert "cannot be judged on a specimen row" in res["A"]["reasons"][0]["message"]


# ------------------------------------------------------------------ malformed batch tables


@pytest.mark.parametrize("text, says", [
    ("path,status,pixel_size_um\na.tif,ok,0.5\nb.tif,ok,0.5 um\n",
     r"line 3 \(b\.tif\), column pixel_size_um: '0\.5 um' is not a number"),
    ("path,status,pixel_size_um\na.tif,ok,-0.5\n", r"line 2 \(a\.tif\), column pixel_size_um: '-0\.5' is not a positive"),
    ("name,G_intercept\na.tif,8.0\n", r"not a batch results table: no 'path' column \(images\.csv\) nor 'specimen' "
                                      r"column \(specimens\.csv\); its columns: name, G_intercept"),
    ("", r"not a batch results table: it is empty"),
    ("path,status,error,pixel_size_um,G_intercept\n", r"the table has no rows: nothing to judge"),
    (b"\xff\xfe\x00p\x00a\x00t\x00h", r"not a batch results table: not UTF-8 text"),
])
def test_cli_qc_malformed_batch_table_exit_2_naming_the_file(tmp_path, capsys, text, says):
    spec = tmp_path / "spec.yaml"
    spec.write_text("image:\n  calibration: required\nmeasurements:\n  grains:\n    G_intercept: [7, 9]\n")
    table = tmp_path / "images.csv"
    table.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, out, err = run_cli(capsys, ["qc", str(table), "--spec", str(spec), "--json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{table}: " in err
    assert __import__("re").search(says, err), err


def test_cli_qc_pixel_size_on_a_batch_table_is_said_to_apply_to_images_only(tmp_path, capsys, image):
    spec = tmp_path / "spec.yaml"
    spec.write_text("image:\n  calibration: required\n")
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "images.csv").write_text("path,status,error,pixel_size_um\na.tif,ok,,\n")
    code, out, err = run_cli(capsys, ["qc", str(tmp_path / "batch"), "--spec", str(spec), "--pixel-size", "0.5",
                                      "--json"])
    assert code == 0, err
    assert "warning: --pixel-size applies to image inputs only" in err and "micro-seg batch" in err
    (row,) = json.loads(out)["results"]
    assert row["verdict"] == "review" and row["reasons"][0]["check"] == "image.calibration"  # the batch's calibration
    # given with images only, it is used and nothing is said
    code, out, err = run_cli(capsys, ["qc", str(image), "--spec", str(spec), "--pixel-size", "0.5", "--json"])
    assert code == 0 and "warning" not in err and json.loads(out)["results"][0]["verdict"] == "pass"


def test_cli_qc_a_specimen_with_no_processed_field_is_a_failed_input(tmp_path, capsys):
    """It was 'fail' with exit 0; a failed image row exits 3 (the contract's "some images failed"): so does it."""
    table = tmp_path / "specimens.csv"
    table.write_text("specimen,n_fields,n_failed,n_uncalibrated,mean_intercept_um_mean,G_intercept\n"
                     "A,3,0,0,10.0,9.7\nB,0,2,0,,\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  grains:\n    G_intercept: [5, 12]\n")
    code, out, err = run_cli(capsys, ["qc", str(table), "--spec", str(spec), "--json"])
    res = {r["specimen"]: r for r in json.loads(out)["results"]}
    assert code == 3, err
    assert res["A"]["verdict"] == "pass" and "error" not in res["A"]
    assert res["B"]["verdict"] == "fail" and "could not process any of its fields" in res["B"]["error"]
