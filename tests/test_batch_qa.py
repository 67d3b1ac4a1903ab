"""QA regressions in batch, qc and link: each test checks a known answer."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from micro_seg.batch import discover_images, run_batch
from micro_seg.cli import main

from test_batch_helpers import disk_image, make_folder, threshold_process, write_tiff


def read_rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


# ------------------------------------------------------------------ 1. output names are injective
def test_output_stems_never_collide(tmp_path):
    from PIL import Image

    root = tmp_path / "in"
    write_tiff(root / "s" / "x.tif", disk_image(1, seed=0))
    write_tiff(root / "s" / "x.tiff", disk_image(2, seed=1))
    write_tiff(root / "s" / "x_png.tif", disk_image(3, seed=2))
    Image.fromarray(disk_image(4, seed=3)).save(root / "s" / "x.png")
    write_tiff(root / "s" / "y.TIF", disk_image(1, seed=4))
    write_tiff(root / "s" / "y.tif", disk_image(1, seed=5))
    stems = {f.relpath: f.stem for f in discover_images(root)}
    assert len(set(s.casefold() for s in stems.values())) == len(stems) == 6, stems
    assert stems["s/x_png.tif"] == "s/x_png"  # a plain stem is kept
    assert stems["s/x.tif"] == "s/x_tif" and stems["s/x.tiff"] == "s/x_tiff"


def test_batch_writes_one_set_of_outputs_per_image_for_clashing_names(tmp_path):
    pytest.importorskip("torch")
    from PIL import Image

    from test_batch_engine import constant_model

    model = constant_model(tmp_path / "models" / "one-grain", task="grains", classes=["grain", "boundary"],
                           winner=0, name="one-grain")
    root = tmp_path / "in"
    shapes = {"s/x.png": (64, 72), "s/x.tif": (64, 80), "s/x.tiff": (64, 88), "s/x_png.tif": (64, 96)}
    for rel, shape in shapes.items():
        img = disk_image(1, seed=len(rel), shape=shape)
        if rel.endswith(".png"):
            (root / "s").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel)
        else:
            write_tiff(root / rel, img)
    s = run_batch(root, tmp_path / "out", model=str(model), workers=0)
    assert (s.n_ok, s.n_failed) == (4, 0), s.failures
    rows = read_rows(tmp_path / "out" / "images.csv")
    for col in ("labels", "overlay", "objects"):
        assert len({rows[rel][col] for rel in shapes}) == 4, col
    import tifffile

    for rel, shape in shapes.items():  # each labels file is that image's
        assert tifffile.imread(tmp_path / "out" / rows[rel]["labels"]).shape == shape


def _finished_x_png_and_x_tif(tmp_path):
    """A one-grain model and IN_DIR/s with x.png (64 x 72) and x.tif (64 x 80), batched once into OUT_DIR."""
    pytest.importorskip("torch")
    from PIL import Image

    from test_batch_engine import constant_model

    model = constant_model(tmp_path / "models" / "one-grain", task="grains", classes=["grain", "boundary"],
                           winner=0, name="one-grain")
    root, out = tmp_path / "in", tmp_path / "out"
    (root / "s").mkdir(parents=True)
    Image.fromarray(disk_image(1, seed=0, shape=(64, 72))).save(root / "s" / "x.png")
    write_tiff(root / "s" / "x.tif", disk_image(1, seed=1, shape=(64, 80)))
    run_batch(root, out, model=str(model), workers=0)
    return model, root, out


def test_an_added_file_that_takes_a_finished_images_output_stem_does_not_leave_it_naming_other_labels(tmp_path):
    """x_png.tif added beside a finished x.png and x.tif takes the stem x_png: its labels overwrote x.png's, and
    images.csv still gave labels/x_png_labels.tif (now of another image, another shape) as x.png's."""
    import tifffile

    model, root, out = _finished_x_png_and_x_tif(tmp_path)
    assert read_rows(out / "images.csv")["s/x.png"]["labels"] == "labels/s/x_png_labels.tif"
    write_tiff(root / "s" / "x_png.tif", disk_image(1, seed=2, shape=(64, 96)))
    s = run_batch(root, out, model=str(model), workers=0)
    assert (s.n_processed, s.n_skipped) == (2, 1)  # the new file and x.png, whose stem it took; x.tif kept
    rows = read_rows(out / "images.csv")
    assert rows["s/x_png.tif"]["labels"] == "labels/s/x_png_labels.tif"
    for rel, shape in {"s/x.png": (64, 72), "s/x.tif": (64, 80), "s/x_png.tif": (64, 96)}.items():
        for col in ("labels", "overlay"):
            assert (out / rows[rel][col]).is_file(), (rel, col)
        assert tifffile.imread(out / rows[rel]["labels"]).shape == shape, rel
    assert len({rows[rel]["overlay"] for rel in rows}) == 3



def test_a_finished_image_left_naming_another_images_labels_by_an_earlier_release_is_redone(tmp_path, monkeypatch):
    """An OUT_DIR where x_png.tif was added beside x.png before the take-over check existed: x.png's row names
    labels/s/x_png_labels.tif, which x_png.tif wrote over, and the re-run kept that pairing (0 processed)."""
    import tifffile

    import micro_seg.batch as batch

    model, root, out = _finished_x_png_and_x_tif(tmp_path)
    write_tiff(root / "s" / "x_png.tif", disk_image(1, seed=2, shape=(64, 96)))
    with monkeypatch.context() as m:  # the release before the check
        m.setattr(batch, "_outputs_taken_over", lambda files, todo, known: set())
        run_batch(root, out, model=str(model), workers=0)
    rows = read_rows(out / "images.csv")
    assert rows["s/x.png"]["labels"] == rows["s/x_png.tif"]["labels"] == "labels/s/x_png_labels.tif"
    s = run_batch(root, out, model=str(model), workers=0)
    assert (s.n_processed, s.n_skipped) == (1, 2)
    rows = read_rows(out / "images.csv")
    for rel, shape in {"s/x.png": (64, 72), "s/x.tif": (64, 80), "s/x_png.tif": (64, 96)}.items():
        assert tifffile.imread(out / rows[rel]["labels"]).shape == shape, rel
    assert len({rows[rel]["overlay"] for rel in rows}) == 3
    assert run_batch(root, out, model=str(model), workers=0).n_processed == 0

# ------------------------------------------------------------------ 2. qc of a batch: image checks never vanish
def test_qc_of_batch_output_reviews_image_checks_it_cannot_run(tmp_path, capsys, monkeypatch):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "b.tif": 3})
    out = tmp_path / "out"
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    spec = tmp_path / "spec.yaml"
    spec.write_text("image:\n  blur: {max: 0.01}\n  calibration: fail\n")
    monkeypatch.chdir(tmp_path)
    code = main(["qc", str(out), "--spec", str(spec), "--images-dir", str(tmp_path / "nowhere"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["counts"] == {"pass": 0, "review": 2, "fail": 0}
    for r in res["results"]:
        (reason,) = r["reasons"]
        assert reason["check"] == "image.blur" and reason["value"] is None and reason["severity"] == "review"
        assert "image not found" in reason["message"] and "nowhere" in reason["message"]
    # with the right folder the check runs on the pixels
    code = main(["qc", str(out), "--spec", str(spec), "--images-dir", str(root), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert all("blur" in r["quality"] for r in res["results"])
    assert not any(x["value"] is None for r in res["results"] for x in r["reasons"])
    # an image replaced since the batch: its new pixels are not judged with the old image's measurements
    write_tiff(root / "b.tif", disk_image(5, seed=9))
    code = main(["qc", str(out), "--spec", str(spec), "--images-dir", str(root), "--json"])
    res = {r["path"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert "blur" in res["a.tif"]["quality"] and res["b.tif"]["verdict"] == "review"
    (reason,) = res["b.tif"]["reasons"]
    assert reason["value"] is None and "image changed since the batch" in reason["message"]
    assert str(root / "b.tif") in reason["message"]


# ------------------------------------------------------------------ 3. duplicate keys in a YAML spec
def test_spec_with_duplicate_keys_is_refused(tmp_path, capsys):
    spec = tmp_path / "dup.yaml"
    spec.write_text("measurements:\n  grains:\n    G_intercept: [7, 9]\n  defects:\n    count: {max: 5}\n"
                    "  grains:\n    n_grains: {min: 10}\n")
    img = write_tiff(tmp_path / "a.tif", disk_image(2, seed=0))
    code = main(["qc", str(img), "--spec", str(spec), "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(spec) in err and "grains: duplicate key (line 6; first at line 2)" in err
    from micro_seg.qc import load_spec

    spec.write_text("measurements:\n  grains:\n    G_intercept: [7, 9]\n    n_grains: {min: 10}\n")
    assert set(load_spec(spec).measurements["grains"]) == {"G_intercept", "n_grains"}


# ------------------------------------------------------------------ 4. fraction limits in percent are refused
@pytest.mark.parametrize("body, where, why", [
    # fractions written in percent
    ("measurements:\n  defects:\n    area_fraction: {max: 5}\n", "measurements.defects.area_fraction", "between 0 and 1"),
    ("measurements:\n  phases:\n    phase_fraction_ferrite: [60, 90]\n", "measurements.phases.phase_fraction_ferrite",
     "between 0 and 1"),
    ("image:\n  clipped_high_fraction: 2\n", "image.clipped_high_fraction", "between 0 and 1"),
    # limits outside what the image check can give: blur 2 could never fail, dynamic range 1.5 never pass
    ("image:\n  blur: 2\n", "image.blur: the blur effect, 0 (sharp) to 1 (fully blurred), lies between 0 and 1, got 2",
     ""),
    ("image:\n  dynamic_range: 1.5\n", "image.dynamic_range: a fraction between 0 and 1, got 1.5", ""),
    # negative limits on quantities that are never negative
    ("measurements:\n  defects:\n    max_feret_um: -5\n", "measurements.defects.max_feret_um: max -5", "never negative"),
    ("measurements:\n  grains:\n    n_grains: {min: -3}\n", "measurements.grains.n_grains: min -3", "never negative"),
    ("image:\n  pixel_size_um: [-0.5, 2]\n", "image.pixel_size_um: min -0.5", "never negative"),
])
def test_spec_limits_that_are_a_slip_are_refused(tmp_path, capsys, body, where, why):
    spec = tmp_path / "slip.yaml"
    spec.write_text(body)
    img = write_tiff(tmp_path / "a.tif", disk_image(2, seed=0))
    code = main(["qc", str(img), "--spec", str(spec), "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(spec) in err and where in err and why in err


def test_fraction_limits_in_0_1_are_accepted(tmp_path):
    from micro_seg.qc import load_spec

    spec = tmp_path / "ok.yaml"
    spec.write_text("measurements:\n  defects:\n    area_fraction: {max: 0.05}\n    count: {max: 50}\n")
    s = load_spec(spec)
    assert s.measurements["defects"]["area_fraction"].max == 0.05 and s.measurements["defects"]["count"].max == 50
    spec.write_text("measurements:\n  defects:\n    area_fraction: {max: 5}\n")
    with pytest.raises(ValueError, match=r"for 5% write 0\.05"):
        load_spec(spec)


def test_negative_limits_on_grain_size_numbers_are_accepted(tmp_path):
    from micro_seg.qc import load_spec

    spec = tmp_path / "coarse.yaml"  # ASTM G 00 is about -1: a very coarse casting may have G < 0
    spec.write_text("measurements:\n  grains:\n    G_intercept: [-1, 2]\n    ala_G: {min: -2}\n")
    s = load_spec(spec)
    assert s.measurements["grains"]["G_intercept"].min == -1 and s.measurements["grains"]["ala_G"].min == -2


# ------------------------------------------------------------------ 5. an unwritable OUT_DIR is a retryable failure
@pytest.fixture()
def grain_model(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    from test_batch_engine import constant_model

    return constant_model(tmp_path / "models" / "one-grain", task="grains", classes=["grain", "boundary"],
                          winner=0, name="one-grain")


def test_output_write_failure_is_retryable_and_redone(tmp_path, grain_model, monkeypatch):
    import sqlite3

    import tifffile

    root, out = tmp_path / "in", tmp_path / "out"
    make_folder(root, counts={"a.tif": 2, "b.tif": 3})
    real_imwrite = tifffile.imwrite

    def denied(path, *args, **kwargs):  # OUT/labels read-only (chmod 555; the tests may run as root)
        if Path(path).parent == out / "labels":
            raise PermissionError(13, "Permission denied", str(path))
        return real_imwrite(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", denied)
    s = run_batch(root, out, model=str(grain_model), workers=0)
    assert (s.n_ok, s.n_failed) == (0, 2)
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT relpath, error_type, retryable, error FROM images ORDER BY relpath").fetchall()
    con.close()
    assert [(r[0], r[1], r[2]) for r in rows] == [("a.tif", "OutputWriteError", 1), ("b.tif", "OutputWriteError", 1)]
    assert all("Permission denied" in r[3] and "cannot write" in r[3] for r in rows)
    monkeypatch.setattr(tifffile, "imwrite", real_imwrite)  # permissions fixed: the re-run redoes both
    s = run_batch(root, out, model=str(grain_model), workers=0)
    assert (s.n_ok, s.n_failed, s.n_processed) == (2, 0, 2)
    assert (out / "labels" / "a_labels.tif").is_file() and (out / "labels" / "b_labels.tif").is_file()


# ------------------------------------------------------------------ 6. a read-only results store
def test_read_only_results_store_is_exit_2_naming_the_file(tmp_path, capsys, monkeypatch, grain_model):
    import sqlite3

    import micro_seg.store as store_mod

    root, out = tmp_path / "in", tmp_path / "out"
    make_folder(root, counts={"a.tif": 2})
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    real_connect = sqlite3.connect

    def read_only(database, *args, **kwargs):  # what a chmod 444 database gives a non-root user
        return real_connect(f"file:{database}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(store_mod.sqlite3, "connect", read_only)
    with pytest.raises(ValueError, match=r"cannot write results store .*results\.sqlite: read-only"):
        run_batch(root, out, model=None, process=threshold_process, workers=0)
    write_tiff(root / "b.tif", disk_image(1, seed=3))
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--workers", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(out / "results.sqlite") in err and "read-only" in err


_SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search", "--"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
                    reason="needs root + setpriv to drop the permission override (a real chmod 444 test)")
def test_chmod_444_store_then_fixed_permissions_runs_again(tmp_path):
    import subprocess
    import sys

    root, out = tmp_path / "in", tmp_path / "out"
    make_folder(root, counts={"a.tif": 2, "b.tif": 1})
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nsys.path[:0] = [%r, %r]\n" % (str(Path(__file__).parent), str(Path(__file__).parents[1]))
        + "from test_batch_helpers import threshold_process\nfrom micro_seg.batch import run_batch\n"
        + f"s = run_batch({str(root)!r}, {str(out)!r}, model=None, process=threshold_process, workers=0)\n"
        + "print('ok', s.n_ok, s.n_skipped)\n")
    db = out / "results.sqlite"

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([*_SETPRIV, sys.executable, str(script)], capture_output=True, text=True)

    db.chmod(0o444)
    r = run()
    assert r.returncode != 0 and f"cannot write results store {db}: read-only" in r.stderr
    # a read-only -shm left by an earlier failed run (sqlite gives it the database's mode)
    shm = Path(f"{db}-shm")
    shm.write_bytes(b"\0" * 32768)
    shm.chmod(0o444)
    db.chmod(0o644)  # the user fixes the database's permissions: the next run works
    r = run()
    assert r.returncode == 0 and r.stdout.split() == ["ok", "2", "2"], r.stderr


# ------------------------------------------------------------------ 7/8. link: d must be a length in um; k in MPa·m^0.5
def _link_inputs(tmp_path, *, strength_col="yield_strength_MPa", scale=1.0):
    """images.csv of 3 samples x 2 fields with known d, and a property table sigma = 100 + 300 / sqrt(d_mm)... in MPa."""
    import math

    d_um = {"A": 5.0, "B": 10.0, "C": 40.0}
    rows = []
    for s, d in d_um.items():
        for i in range(2):
            rows.append({"path": f"{s}/f{i}.tif", "status": "ok", "mean_intercept_um": d, "G_intercept": 8.0,
                         "n_grains": 100 + i, "mean_area_um2": d * d, "mean_intercept_px": 2 * d,
                         "pixel_size_um": 0.5})
    out = tmp_path / "batch"
    out.mkdir()
    with open(out / "images.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    # sigma = 100 MPa + 0.5 MPa·m^0.5 / sqrt(d in m)
    props = tmp_path / "props.csv"
    lines = ["sample_id," + strength_col] + [
        f"{s},{(100.0 + 0.5 / math.sqrt(d * 1e-6)) * scale!r}" for s, d in d_um.items()]
    props.write_text("\n".join(lines) + "\n")
    return out, props


@pytest.mark.parametrize("col", ["G_intercept", "n_grains", "mean_area_um2", "mean_intercept_px", "pixel_size_um"])
def test_link_refuses_d_that_is_not_a_length_in_um(tmp_path, capsys, col):
    out, props = _link_inputs(tmp_path)
    code = main(["link", str(out), str(props), "--on", "sample_id", "--d", col, "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--d {col}: not a grain size in micrometres" in err and "suitable columns: mean_intercept_um" in err


def test_link_accepts_the_mean_intercept(tmp_path, capsys):
    out, props = _link_inputs(tmp_path)
    code = main(["link", str(out), str(props), "--on", "sample_id", "--d", "mean_intercept_um", "--json"])
    fit = json.loads(capsys.readouterr().out)["fit"]
    assert code == 0 and fit["k"] == pytest.approx(0.5, rel=1e-6) and fit["units"]["k"] == "MPa·m^0.5"


@pytest.mark.parametrize("unit, per_mpa", [("Pa", 1e6), ("kPa", 1e3), ("GPa", 1e-3), ("psi", 1 / 6.894757e-3),
                                           ("ksi", 1 / 6.894757), ("MPa", 1.0)])
def test_link_hall_petch_k_is_in_mpa_whatever_the_stress_unit(tmp_path, capsys, unit, per_mpa):
    out, props = _link_inputs(tmp_path, strength_col=f"yield_strength_{unit}", scale=per_mpa)
    code = main(["link", str(out), str(props), "--on", "sample_id", "--json"])
    cap = capsys.readouterr()
    fit = json.loads(cap.out)["fit"]
    assert code == 0 and fit["units"]["k"] == "MPa·m^0.5" and cap.err == ""
    assert fit["k"] == pytest.approx(0.5, rel=1e-6) and fit["sigma0"] == pytest.approx(100.0, rel=1e-6)


def test_link_warns_on_implausible_mpa(tmp_path, capsys):
    out, props = _link_inputs(tmp_path, strength_col="yield_strength_MPa", scale=1e6)  # Pa written as MPa
    code = main(["link", str(out), str(props), "--on", "sample_id", "--json"])
    err = capsys.readouterr().err
    assert code == 0 and "implausible" in err and "yield_strength_MPa" in err


# ------------------------------------------------------------------ 9. --group-by regex: unmatched images are reported
def test_group_by_regex_warns_about_unmatched_images(tmp_path, capsys, grain_model):
    root = tmp_path / "in"
    make_folder(root, counts={"S1_f1.tif": 1, "S1_f2.tif": 2, "odd_a.tif": 1, "odd_b.tif": 1, "odd_c.tif": 1,
                              "odd_d.tif": 1})
    s = run_batch(root, tmp_path / "out0", model=None, process=threshold_process, workers=0,
                  group_by=r"regex:^(S\d+)_")
    assert s.warnings == [r"--group-by regex:^(S\d+)_: 4 of 6 image(s) match no specimen and are left out of "
                          "specimens.csv (first: odd_a.tif, odd_b.tif, odd_c.tif, and 1 more)"]
    with open(tmp_path / "out0" / "specimens.csv", newline="", encoding="utf-8") as fh:
        assert [r["specimen"] for r in csv.DictReader(fh)] == ["S1"]
    code = main(["batch", str(root), str(tmp_path / "out"), "--model", str(grain_model), "--workers", "1",
                 "--group-by", r"regex:^(S\d+)_", "--quiet", "--json"])
    cap = capsys.readouterr()
    assert code == 0 and "4 of 6 image(s) match no specimen" in cap.err
    assert json.loads(cap.out)["warnings"] == s.warnings
    s = run_batch(root, tmp_path / "out2", model=None, process=threshold_process, workers=0,
                  group_by=r"regex:^(\w+)_")
    assert s.warnings == []


# ------------------------------------------------------------------ 10. symbolic links are reported, not silently skipped
def test_symlinked_folders_and_dangling_links_are_reported(tmp_path, capsys, grain_model):
    root = tmp_path / "in"
    make_folder(root, counts={"S1/a.tif": 1, "S1/b.tif": 2})
    make_folder(tmp_path / "elsewhere", counts={"c.tif": 1})
    (root / "S2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "S1" / "loop").symlink_to(root, target_is_directory=True)  # a loop: not followed
    (root / "S1" / "gone.tif").symlink_to(tmp_path / "missing.tif")
    s = run_batch(root, tmp_path / "out0", model=None, process=threshold_process, workers=0)
    assert (s.n_images, s.n_ok) == (2, 2)
    assert s.warnings == [
        "2 symbolic link(s) to folders not followed (their images are not processed; give the real folder) "
        "(first: S1/loop/, S2/)",
        "1 dangling symbolic link(s) skipped (they point to nothing) (first: S1/gone.tif)"]
    code = main(["batch", str(root), str(tmp_path / "out"), "--model", str(grain_model), "--workers", "1",
                 "--quiet", "--json"])
    cap = capsys.readouterr()
    assert code == 0 and json.loads(cap.out)["warnings"] == s.warnings and "S2/" in cap.err and "gone.tif" in cap.err
    only_links = tmp_path / "links"
    only_links.mkdir()
    (only_links / "S2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    code = main(["batch", str(only_links), str(tmp_path / "out3"), "--model", str(grain_model), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "1 symbolic link(s) not followed or dangling (first: S2/)" in err


# ------------------------------------------------------------------ batch outputs are readable by colleagues
def test_batch_outputs_get_the_users_umask_not_private_modes(tmp_path):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "b.tif": 3})
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        run_batch(root, out, model=None, process=threshold_process, workers=0)
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(("results.sqlite", ".lock"))]
    assert any(p.name == "images.csv" for p in files) and any(p.name == "report.html" for p in files)
    private = [p.relative_to(out).as_posix() for p in files if p.stat().st_mode & 0o044 != 0o044]
    assert private == []


# ------------------------------------------------------------------ link: property tables as spreadsheets save them
@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_link_reads_semicolon_decimal_comma_and_windows_1252_csv(tmp_path, capsys, encoding):
    out, props = _link_inputs(tmp_path)
    rows = props.read_text().splitlines()
    # the same table as a German Excel saves it: ';' delimiter, decimal comma, a non-ASCII name, Windows-1252
    german = ["sample_id;yield_strength_MPa;Prüfer"] + [
        f"{r.split(',')[0]};{r.split(',')[1].replace('.', ',')};Müller" for r in rows[1:]]
    props.write_bytes(("\n".join(german) + "\n").encode(encoding))
    code = main(["link", str(out), str(props), "--on", "sample_id", "--json"])
    cap = capsys.readouterr()
    fit = json.loads(cap.out)["fit"]
    assert code == 0, cap.err
    assert fit["k"] == pytest.approx(0.5, rel=1e-6) and fit["sigma0"] == pytest.approx(100.0, rel=1e-6)


# ------------------------------------------------------------------ qc of specimens.csv names the specimens
def test_qc_of_specimens_table_names_each_specimen(tmp_path, capsys):
    root = tmp_path / "in"
    make_folder(root, counts={"S1_a.tif": 2, "S1_b.tif": 3, "S2_a.tif": 4, "S2_b.tif": 4})
    out = tmp_path / "out"
    run_batch(root, out, model=None, process=threshold_process, workers=0, group_by=r"regex:^(S\d+)_")
    spec = tmp_path / "spec.yaml"
    spec.write_text("image:\n  blur: {max: 0.5}\n")
    code = main(["qc", str(out / "specimens.csv"), "--spec", str(spec), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["specimen"] for r in res["results"]] == ["S1", "S2"]
    for r in res["results"]:
        (reason,) = r["reasons"]
        assert r["verdict"] == "review" and "specimen row has no image" in reason["message"]


# ------------------------------------------------------------------ an OUT_DIR where nothing can be made is refused first
def test_batch_refuses_an_out_dir_where_nothing_can_be_created(tmp_path):
    from micro_seg.errors import OutputPathError

    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2})
    with pytest.raises(OutputPathError, match=r"/proc/x/out: OUT_DIR cannot be created or written there"):
        run_batch(root, "/proc/x/out", model=None, process=threshold_process, workers=0)


def test_the_report_lists_the_runs_warnings(tmp_path):
    """report.html, the file handed to colleagues, said nothing of a specimen folder left out (a symbolic link, not
    followed) or of failures not retried: only the terminal that ran the batch showed them."""
    root = tmp_path / "in"
    make_folder(root, counts={"S1/a.tif": 1})
    make_folder(tmp_path / "elsewhere", counts={"c.tif": 1})
    (root / "S2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0)
    assert len(s.warnings) == 1
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Warnings (1)" in report and "1 symbolic link(s) to folders not followed" in report and "S2/" in report
