"""Batch QA (session 21): what a re-run, a link, a full disk or a bad option must not do to the results."""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from micro_seg.batch import run_batch
from micro_seg.cli import main

from test_batch_engine import constant_model, read_csv
from test_batch_helpers import disk_image, write_tiff

torch = pytest.importorskip("torch")


@pytest.fixture()
def grain_model(tmp_path):
    return constant_model(tmp_path / "models" / "one-grain", task="grains", classes=["grain", "boundary"],
                          winner=0, name="one-grain")


def _images(root, n=2, calibrated=True):
    for i in range(n):
        write_tiff(root / "steel" / f"f{i}.tif", disk_image(3, seed=i), pixel_size_um=0.5 if calibrated else None)
    return root


def test_a_link_to_an_image_is_not_a_second_field(tmp_path, grain_model):
    """A symbolic link beside its target counted as a third field: the specimen's CI looked ~4x tighter."""
    root = _images(tmp_path / "in")
    os.symlink("f0.tif", root / "steel" / "f0_copy.tif")
    os.link(root / "steel" / "f1.tif", root / "steel" / "f1_hard.tif")
    s = run_batch(root, tmp_path / "out", model=grain_model, workers=0)
    assert s.n_images == 2 and sorted(read_csv(tmp_path / "out" / "images.csv")) == ["steel/f0.tif", "steel/f1.tif"]
    assert any("2 link(s) to an image found under another name skipped" in w and "f0_copy.tif" in w
               for w in s.warnings)
    with open(tmp_path / "out" / "specimens.csv", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["specimen"] == "steel" and int(row["n_fields"]) == 2


def test_an_earlier_outputs_folder_given_as_in_dir_is_not_read_as_micrographs(tmp_path, grain_model):
    """batch proj/images proj, then batch proj proj/results measured proj/labels and proj/overlays as specimens."""
    proj = tmp_path / "proj"
    _images(proj / "images")
    run_batch(proj / "images", proj, model=grain_model, workers=0)
    assert (proj / "labels").is_dir() and (proj / "overlays").is_dir()
    s = run_batch(proj, proj / "results", model=grain_model, workers=0)
    assert sorted(read_csv(proj / "results" / "images.csv")) == ["images/steel/f0.tif", "images/steel/f1.tif"]
    assert any("earlier batch's results" in w and "labels/" in w and "overlays/" in w for w in s.warnings)


def test_a_rerun_without_report_or_objects_leaves_no_stale_export(tmp_path, grain_model):
    """--no-report kept the previous run's report.html (other numbers than images.csv); a run whose images all
    failed kept the previous objects.parquet."""
    pytest.importorskip("pyarrow")
    root = _images(tmp_path / "in")
    out = tmp_path / "out"
    run_batch(root, out, model=grain_model, workers=0)
    assert (out / "report.html").is_file() and (out / "objects.parquet").is_file()
    run_batch(root, out, model=grain_model, workers=0, report=False, pixel_size_um=1.0)
    assert not (out / "report.html").exists()
    for f in (root / "steel").iterdir():  # every image now fails
        f.write_bytes(b"II*\x00garbage")
    s = run_batch(root, out, model=grain_model, workers=0)
    assert s.n_failed == 2 and s.objects_parquet is None and not (out / "objects.parquet").exists()
    # the failed images' earlier label / overlay / object files went with them
    assert not list((out / "labels").rglob("*.tif")) and not list((out / "overlays").rglob("*.png"))


def test_retry_failed_redoes_unchanged_failures(tmp_path, grain_model, monkeypatch):
    """An image refused for its size could never be redone, even after raising MICRO_SEG_MAX_PIXELS as the
    error advised (neither touch nor --rehash helped)."""
    root = _images(tmp_path / "in")
    out = tmp_path / "out"
    monkeypatch.setenv("MICRO_SEG_MAX_PIXELS", "100")
    assert run_batch(root, out, model=grain_model, workers=0).n_failed == 2
    monkeypatch.setenv("MICRO_SEG_MAX_PIXELS", "100000000")
    again = run_batch(root, out, model=grain_model, workers=0)
    assert again.n_processed == 0 and again.n_failed == 2
    assert any("--retry-failed retries them" in w for w in again.warnings)
    retried = run_batch(root, out, model=grain_model, workers=0, retry_failed=True)
    assert retried.n_processed == 2 and retried.n_failed == 0


def test_a_full_disk_is_one_line_naming_the_store(tmp_path):
    from micro_seg.errors import OutputPathError
    from micro_seg.store import ResultsStore

    class FullDisk:
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            return self.con.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.con, name)

    store = ResultsStore(tmp_path / "results.sqlite")
    run = store.start_run(in_dir="in", out_dir="out", software_version="0", parameters={})
    store._con = FullDisk(store._con)
    with pytest.raises(OutputPathError, match=r"cannot write results store .*results.sqlite: database or disk is "
                                              r"full; free some space and re-run"):
        store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok"}, run_id=run)
    store._con = store._con.con
    assert store.images() == []  # rolled back: nothing half-written


def test_a_spec_the_model_cannot_measure_and_a_bad_pixel_size_are_refused_up_front(tmp_path, grain_model, capsys):
    root = _images(tmp_path / "in")
    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  phases:\n    phase_fractions:\n      pore: {max: 0.01}\n")
    code = main(["batch", str(root), str(tmp_path / "o1"), "--model", str(grain_model), "--spec", str(spec)])
    err = capsys.readouterr().err
    assert code == 2 and "measurements.phases" in err and "measures only grains" in err, err
    assert not (tmp_path / "o1" / "results.sqlite").exists()
    code = main(["batch", str(root), str(tmp_path / "o2"), "--model", str(grain_model), "--spec", str(tmp_path)])
    assert code == 2 and "--spec is a folder" in capsys.readouterr().err
    for bad in ("inf", "1e308", "1e-300"):
        code = main(["batch", str(root), str(tmp_path / "o3"), "--model", str(grain_model), "--pixel-size", bad])
        err = capsys.readouterr().err
        assert code == 2 and "--pixel-size" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o3" / "results.sqlite").exists()


def test_an_infinite_measurement_is_stored_as_missing_not_as_text(tmp_path):
    from micro_seg.store import ResultsStore

    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run(in_dir="in", out_dir="out", software_version="0", parameters={})
        image_id = store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok"}, run_id=run,
                                measurements={"mean_intercept_px": float("inf"), "n": np.int64(1)})
        assert store.measurements()[image_id] == {"mean_intercept_px": None, "n": 1}


def test_a_users_own_report_and_objects_files_are_never_deleted(tmp_path, grain_model):
    """The stale-export clean-up removed any report.html / objects.parquet in OUT_DIR, also ones micro-seg never
    wrote; it now removes only files carrying micro-seg's generator mark."""
    root = _images(tmp_path / "in")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("<html>my notes</html>")
    (out / "objects.parquet").write_text("my table")
    run_batch(root, out, model=grain_model, workers=0, report=False)
    assert (out / "report.html").read_text() == "<html>my notes</html>"


def test_a_failed_image_does_not_delete_a_file_another_image_now_owns(tmp_path, grain_model):
    from micro_seg.batch import _remove_earlier_outputs
    from micro_seg.store import ResultsStore

    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    shared = out / "labels" / "x_png_labels.tif"
    shared.write_bytes(b"labels of S/x_png.tif")
    own = out / "labels" / "old_labels.tif"
    own.write_bytes(b"old")
    with ResultsStore(out / "results.sqlite") as store:
        run = store.start_run(in_dir="in", out_dir=str(out), software_version="0", parameters={})
        store.record("S/x_png.tif", {"abspath": "/in/S/x_png.tif", "status": "ok",
                                     "labels_path": "labels/x_png_labels.tif"}, run_id=run)
        _remove_earlier_outputs(store, out, "S/x.png", {"labels_path": "labels/x_png_labels.tif"})
        _remove_earlier_outputs(store, out, "S/old.png", {"labels_path": "labels/old_labels.tif",
                                                          "overlay_path": "../../outside.png"})
    assert shared.is_file() and not own.exists()


def test_a_changed_card_post_processing_redoes_the_images(tmp_path, grain_model):
    """Editing a card's post-processing (its marker_threshold, say) changed analyze's answer but a re-run of batch
    skipped every image: the card's settings are now part of what the batch's results depend on."""
    import yaml

    root = _images(tmp_path / "in")
    out = tmp_path / "out"
    assert run_batch(root, out, model=grain_model, workers=0).n_processed == 2
    assert run_batch(root, out, model=grain_model, workers=0).n_processed == 0
    card = yaml.safe_load((grain_model / "card.yaml").read_text())
    card["postprocess"] = {"threshold": 0.5, "marker_threshold": 0.3}
    (grain_model / "card.yaml").write_text(yaml.safe_dump(card))
    assert run_batch(root, out, model=grain_model, workers=0).n_processed == 2
    # and the option can be given to the batch itself
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--marker-threshold", "0.2", "--quiet"])
    assert code == 0


def test_an_export_that_cannot_be_written_is_exit_2_naming_it_and_a_rerun_writes_it(tmp_path, grain_model, capsys,
                                                                                      monkeypatch):
    """A full disk (or a folder named images.csv) while writing the tables said 'internal error: OSError ...
    (re-run with --debug)', exit 1, as if micro-seg had a bug; the images are recorded and a re-run only exports."""
    import contextlib
    import errno

    import micro_seg.batch as batch

    root, out = _images(tmp_path / "in"), tmp_path / "out"
    (out / "images.csv").mkdir(parents=True)
    (out / "images.csv" / "keep").write_text("a folder where the table goes")
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "internal error" not in err[0]
    assert f"{out / 'images.csv'}: cannot write this batch export" in err[0] and "results.sqlite are kept" in err[0]

    real = batch.atomic_path

    @contextlib.contextmanager
    def full_disk(path):
        if str(path).endswith("specimens.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        with real(path) as tmp:
            yield tmp

    (out / "images.csv" / "keep").unlink()
    (out / "images.csv").rmdir()
    monkeypatch.setattr(batch, "atomic_path", full_disk)
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"micro-seg: error: {out / 'specimens.csv'}: cannot write this batch export: No space "
                                 "left on device; fix that and re-run the same command: the images recorded in "
                                 "results.sqlite are kept, not processed again"]
    monkeypatch.setattr(batch, "atomic_path", real)
    s = run_batch(root, out, model=grain_model, workers=0)
    assert (s.n_processed, s.n_skipped, s.n_ok) == (0, 2, 2)
    assert sorted(read_csv(out / "images.csv")) == ["steel/f0.tif", "steel/f1.tif"]
    assert (out / "specimens.csv").is_file()


def test_file_names_that_are_not_utf8_are_processed_and_named_not_a_crash(tmp_path, grain_model, capsys):
    """A Latin-1 'µ' in a file name (an old Windows archive unpacked on Linux) stopped the whole batch with
    'internal error: UnicodeEncodeError ... surrogates not allowed', exit 1, at every re-run: the other images'
    tables were never written."""
    root, out = _images(tmp_path / "in"), tmp_path / "out"
    raw = os.fsencode(root / "steel")
    try:
        write_tiff(Path(os.fsdecode(raw + b"/\xb5m_field.tif")), disk_image(4, seed=7), pixel_size_um=0.5)
        os.makedirs(os.fsdecode(raw + b"/\xe9chantillon"))
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    (Path(os.fsdecode(raw + b"/\xe9chantillon")) / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    (Path(os.fsdecode(raw + b"/notes_\xb5.txt"))).write_text("operator notes")
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--workers", "0", "--quiet"])
    assert code == 3, capsys.readouterr().err  # the broken TIFF failed, the rest went on
    rows = read_csv(out / "images.csv")
    assert sorted(rows) == ["steel/\\xb5m_field.tif", "steel/\\xe9chantillon/broken.tif", "steel/f0.tif",
                            "steel/f1.tif"]
    assert rows["steel/\\xb5m_field.tif"]["status"] == "ok"
    assert rows["steel/\\xb5m_field.tif"]["n_grains"] == "1"  # the constant model: one grain, as for f0 and f1
    assert (out / rows["steel/\\xb5m_field.tif"]["labels"]).is_file()
    broken = rows["steel/\\xe9chantillon/broken.tif"]
    assert broken["status"] == "failed" and "\\xe9chantillon/broken.tif" in broken["error"]
    again = run_batch(root, out, model=grain_model, workers=0)  # resumes: nothing redone, nothing doubled
    assert (again.n_processed, again.n_skipped, again.n_images) == (0, 4, 4)
    assert again.unsupported == ["steel/notes_\\xb5.txt"]


def test_a_long_or_non_latin_file_name_gets_outputs_that_fit_the_file_system(tmp_path, grain_model):
    """A 240-byte name (80 Chinese characters) failed at every run with 'File name too long': its label file's name
    is the stem plus '_labels.tif', and the temporary one 33 bytes more than the stem."""
    root, out = _images(tmp_path / "in"), tmp_path / "out"
    long_names = ["晶粒" * 40 + ".tif", "g" * 240 + ".tif"]
    for i, name in enumerate(long_names):
        write_tiff(root / "steel" / name, disk_image(3, seed=10 + i), pixel_size_um=0.5)
    s = run_batch(root, out, model=grain_model, workers=0)
    assert (s.n_ok, s.n_failed) == (4, 0), s.failures
    rows = read_csv(out / "images.csv")
    stems = set()
    for name in long_names:
        row = rows[f"steel/{name}"]
        for col in ("labels", "overlay", "objects"):
            assert (out / row[col]).is_file(), (name, col)
            assert len(Path(row[col]).name.encode()) <= 255
        stems.add(row["labels"])
    assert len(stems) == 2
    assert run_batch(root, out, model=grain_model, workers=0).n_processed == 0


def test_a_busy_output_folder_and_one_that_cannot_be_locked_are_told_apart(tmp_path, grain_model, capsys,
                                                                           monkeypatch):
    """On a share without file locks (NFS without lockd: ENOLCK) the batch said 'another batch is running in this
    output folder' at every try, sending the user after a batch that did not exist."""
    import errno
    import fcntl

    from micro_seg.batch import LOCK_NAME, BatchBusyError

    root, out = _images(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_NAME, "a+") as held:  # another batch holds the lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BatchBusyError, match="another batch is running in this output folder"):
            run_batch(root, out, model=grain_model, workers=0)

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "another batch" not in err[0]
    assert f"{out}: cannot lock OUT_DIR (No locks available): its file system does not support file locks" in err[0]
    assert not (out / "results.sqlite").exists()


def test_a_finished_image_whose_outputs_were_deleted_is_processed_again(tmp_path, grain_model):
    """labels/ deleted by hand (or a folder of it moved away): the re-run skipped every image, images.csv named
    label files that did not exist and nothing could bring them back short of a new OUT_DIR."""
    root, out = _images(tmp_path / "in", n=3), tmp_path / "out"
    run_batch(root, out, model=grain_model, workers=0)
    rows = read_csv(out / "images.csv")
    (out / rows["steel/f0.tif"]["labels"]).unlink()
    (out / rows["steel/f2.tif"]["labels"]).unlink()
    (out / rows["steel/f1.tif"]["overlay"]).unlink()  # overlays are for eyes: deleting them to save space is fine
    s = run_batch(root, out, model=grain_model, workers=0)
    assert (s.n_processed, s.n_skipped) == (2, 1)
    assert s.warnings == [f"2 finished image(s) had lost their label file (deleted or moved out of {out.resolve()}) "
                          "and were processed again (first: steel/f0.tif, steel/f2.tif)"]
    assert all((out / row["labels"]).is_file() for row in read_csv(out / "images.csv").values())
    again = run_batch(root, out, model=grain_model, workers=0)
    assert (again.n_processed, again.warnings) == (0, [])


def test_an_input_folder_named_in_latin1_still_gets_its_report(tmp_path, grain_model, capsys):
    """IN_DIR named 'étude' in Latin-1: a warning naming it made writing report.html fail with 'internal error:
    UnicodeEncodeError', exit 1, after every image had been processed."""
    try:
        root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xe9tude"))
        _images(root)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    out = tmp_path / "out"
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--workers", "0", "--quiet",
                 "--exclude", "nothing*"])
    assert code == 0, capsys.readouterr().err
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "\\xe9tude" in report and "left nothing out" in report


def test_an_output_folder_named_in_latin1_gets_its_objects_parquet(tmp_path, grain_model, capsys):
    """OUT_DIR 'étude/results' in Latin-1: pyarrow refused the path ('internal error: UnicodeEncodeError', exit 1)
    when writing objects.parquet, after every image had been processed, so no report either."""
    import pyarrow.parquet as pq

    root = _images(tmp_path / "in")
    try:
        out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xe9tude"))
        out.mkdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    code = main(["batch", str(root), str(out / "results"), "--model", str(grain_model), "--workers", "0", "--quiet",
                 "--json"])
    assert code == 0, capsys.readouterr().err
    with open(out / "results" / "objects.parquet", "rb") as fh:
        table = pq.read_table(fh)
    assert sorted(set(table.column("path").to_pylist())) == ["steel/f0.tif", "steel/f1.tif"]
    assert (out / "results" / "report.html").is_file()


def test_the_summary_names_an_output_folder_that_is_not_utf8_without_a_traceback(tmp_path, grain_model, capsys):
    """On a strict UTF-8 stdout (en_US.UTF-8) printing the summary of a batch into a Latin-1-named OUT_DIR raised
    UnicodeEncodeError, a traceback, after the batch had finished."""
    root = _images(tmp_path / "in")
    try:
        out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xe9tude"))
        out.mkdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    code = main(["batch", str(root), str(out), "--model", str(grain_model), "--workers", "0", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and f"out_dir: {tmp_path}/\\xe9tude" in printed.splitlines()


def test_copies_of_one_field_are_warned_about(tmp_path, grain_model):
    """'f0 (1).tif', a second download of f0.tif, was measured as a third field without a word: the specimen's
    confidence interval came out tighter than the data allow (a link to f0.tif is already one input)."""
    import shutil

    root, out = _images(tmp_path / "in", n=3), tmp_path / "out"
    shutil.copy(root / "steel" / "f0.tif", root / "steel" / "f0 (1).tif")
    (root / "steel" / "empty1.tif").write_bytes(b"")  # two failed files alike are no fields
    (root / "steel" / "empty2.tif").write_bytes(b"")
    s = run_batch(root, out, model=grain_model, workers=0)
    assert (s.n_ok, s.n_failed) == (4, 2)
    warning = ("1 image(s) have the same content as another, so one field counts more than once in specimens.csv "
               "(remove the copies or --exclude them) (first: steel/f0 (1).tif = steel/f0.tif)")
    assert s.warnings == [warning]
    assert warning in (out / "report.html").read_text(encoding="utf-8")
    s = run_batch(root, out, model=grain_model, workers=0, exclude=["f0 (1).tif"])
    assert not any("same content" in w for w in s.warnings)


def test_an_exclude_naming_a_file_that_is_not_utf8_is_not_warned_as_leaving_nothing_out(tmp_path):
    """--exclude $'s/\\xb5m.tif' (the name as the shell gives it) left the file out, and was warned as an --exclude
    that 'left nothing out': the left-out names are text (\\xb5), the pattern was compared as bytes."""
    from test_batch import threshold_process

    root = tmp_path / "in"
    write_tiff(root / "s" / "f0.tif", disk_image(3, seed=0), pixel_size_um=0.5)
    try:
        write_tiff(Path(os.fsdecode(os.fsencode(root / "s") + b"/\xb5m.tif")), disk_image(3, seed=1), pixel_size_um=0.5)
        os.makedirs(os.fsdecode(os.fsencode(root) + b"/\xe9ch"))
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    write_tiff(Path(os.fsdecode(os.fsencode(root) + b"/\xe9ch/a.tif")), disk_image(3, seed=2), pixel_size_um=0.5)
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0,
                  exclude=[os.fsdecode(b"s/\xb5m.tif"), os.fsdecode(b"\xe9ch/")])
    assert (s.n_images, sorted(s.ignored), s.warnings) == (1, ["\\xe9ch/", "s/\\xb5m.tif"], [])
