"""Batch processing: discovery, failure isolation, resume, change detection, specimens,
exports, crash safety (SIGKILL), worker crashes and the dask route.

Most tests use a model-free per-image function (threshold + label, see
test_batch_helpers.py) on synthetic images with a known number of objects, so
they check the batch machinery against known answers; the end-to-end tests with
the real engine are in test_batch_engine.py.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from micro_seg.batch import discover_images, run_batch
from micro_seg.errors import CancelledError, InputFileNotFoundError
from micro_seg.specimens import GroupByError, specimen_of, specimen_table

from test_batch_helpers import (crashing_process, disk_image, make_folder, slow_threshold_process,
                                threshold_process, write_tiff)

TESTS_DIR = Path(__file__).resolve().parent


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in rows}


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Good images in two specimen folders, a corrupt TIFF, a non-image (skipped), side-car and hidden files."""
    root = tmp_path / "in"
    truth = make_folder(root, counts={"S1/f1.tif": 3, "S1/f2.tif": 5, "S1/f3.tif": 4, "S2/f1.tif": 6, "S2/f2.tif": 2})
    (root / "S2" / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 40)  # TIFF magic, no valid IFD
    (root / "notes.txt").write_text("operator notes, not an image")
    (root / "S1" / "f1.txt").write_text("SEM side-car metadata of f1.tif")
    (root / ".hidden.tif").write_bytes(b"junk")
    return root, truth


# ---------------------------------------------------------------------------------- discovery
def test_discovery_is_recursive_sorted_and_skips_sidecars_hidden_and_output(tmp_path):
    root = tmp_path / "in"
    make_folder(root, counts={"b/x.tif": 1, "a/y.tif": 1, "a/deep/z.tif": 1})
    (root / "a" / "y.txt").write_text("side-car")
    (root / "readme.md").write_text("not an image")
    (root / ".git").mkdir()
    (root / ".git" / "q.tif").write_bytes(b"x")
    (root / "results").mkdir()
    write_tiff(root / "results" / "labels.tif", disk_image(1, seed=1))
    files = discover_images(root, exclude=[root / "results"])
    assert [(f.relpath, f.supported) for f in files] == [
        ("a/deep/z.tif", True), ("a/y.tif", True), ("b/x.tif", True), ("readme.md", False)]


def test_discovery_gives_distinct_stems_to_images_differing_only_by_extension(tmp_path):
    root = tmp_path / "in"
    write_tiff(root / "f.tif", disk_image(1, seed=0))
    from PIL import Image

    Image.fromarray(disk_image(2, seed=1)).save(root / "f.png")
    stems = {f.relpath: f.stem for f in discover_images(root)}
    assert stems == {"f.png": "f_png", "f.tif": "f_tif"}


def test_exclude_patterns_and_ignore_file_leave_files_out_but_list_them(tmp_path):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1, "truth/a_labels.tif": 1, "deep/truth/b.tif": 1, "sub/c.tif": 2})
    (root / "README.md").write_text("about these images")
    (root / "make_samples.py").write_text("print()")
    (root / ".micro-seg-ignore").write_text("# documentation and ground truth\n*.md\ntruth/\n")
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0,
                  exclude=["*.py", "sub/c*"])
    assert sorted(s.ignored) == ["README.md", "deep/truth/", "make_samples.py", "sub/c.tif", "truth/"]
    assert [r["path"] for r in read_csv(tmp_path / "out" / "images.csv")] == ["a.tif"]
    assert s.exit_code == 0
    assert "Left out on request (5)" in (tmp_path / "out" / "report.html").read_text()


# ---------------------------------------------------------------------------------- rows, exit 3
def test_good_corrupt_and_non_image_give_right_rows_and_exit_code_3(mixed_folder, tmp_path):
    root, truth = mixed_folder
    out = tmp_path / "out"
    s = run_batch(root, out, model=None, process=threshold_process, workers=0)
    assert s.exit_code == 3 and s.n_failed == 1 and s.n_ok == 5 and s.n_images == 6
    assert s.unsupported == ["notes.txt"]  # not an image: skipped and counted, not a failed image
    rows = by_path(read_csv(out / "images.csv"))
    assert sorted(rows) == sorted(list(truth) + ["S2/broken.tif"])
    for rel, n in truth.items():  # known answer: the number of disks drawn
        assert rows[rel]["status"] == "ok" and rows[rel]["error"] == ""
        assert int(rows[rel]["n_objects"]) == n
        assert float(rows[rel]["pixel_size_um"]) == pytest.approx(0.5)
        assert rows[rel]["qc_verdict"] == "not-run"
        assert (out / rows[rel]["labels"]).is_file() and (out / rows[rel]["overlay"]).is_file()
    assert rows["S2/broken.tif"]["status"] == "failed"
    assert rows["S2/broken.tif"]["error"].startswith("CorruptFileError:")
    assert "broken.tif" in rows["S2/broken.tif"]["error"]
    assert list(read_csv(out / "images.csv")[0])[:3] == ["path", "status", "error"]
    assert {f["path"] for f in s.failures} == {"S2/broken.tif"}


def test_labels_written_keep_the_calibration_and_the_objects(mixed_folder, tmp_path):
    from micro_seg.io import read_labels

    root, truth = mixed_folder
    out = tmp_path / "out"
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    labels, px = read_labels(out / "labels" / "S1" / "f2_labels.tif")
    assert px == pytest.approx(0.5) and int(labels.max()) == truth["S1/f2.tif"]


def test_objects_parquet_holds_every_object(mixed_folder, tmp_path):
    import pyarrow.parquet as pq

    root, truth = mixed_folder
    out = tmp_path / "out"
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    table = pq.read_table(out / "objects.parquet").to_pandas()
    assert len(table) == sum(truth.values())
    assert table.groupby("path").size().to_dict() == truth
    assert {"path", "specimen", "kind", "object_id", "area_um2"} <= set(table.columns)
    # a disk of radius 5 px covers 81 px = 20.25 um2 at 0.5 um/px
    assert table["area_um2"].median() == pytest.approx(81 * 0.25)


def test_results_database_has_provenance_and_one_row_per_image(mixed_folder, tmp_path):
    from micro_seg import __version__
    from micro_seg.batch_worker import sha256_file

    root, truth = mixed_folder
    out = tmp_path / "out"
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = con.execute("SELECT relpath, sha256, calibration_source, software_version FROM images").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == 6
    for rel, sha, cal, ver in rows:
        if rel in truth:
            assert sha == sha256_file(root / rel) and cal == "tiff-resolution" and ver == __version__
    run = con.execute("SELECT status, parameters, n_ok, n_failed FROM runs").fetchone()
    assert run[0] == "finished" and '"group_by": "folder"' in run[1] and run[2:] == (5, 1)
    n_obj = con.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
    assert n_obj == sum(truth.values())


# ---------------------------------------------------------------------------------- specimens
def test_specimens_csv_field_statistics_match_hand_computation(mixed_folder, tmp_path):
    root, truth = mixed_folder
    out = tmp_path / "out"
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    images = by_path(read_csv(out / "images.csv"))
    spec = by_path([{**r, "path": r["specimen"]} for r in read_csv(out / "specimens.csv")])
    assert set(spec) == {"S1", "S2"}
    s1 = [float(images[p]["defects_density_per_mm2"]) for p in ("S1/f1.tif", "S1/f2.tif", "S1/f3.tif")]
    mean = sum(s1) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in s1) / 2)
    ci = 4.302653 * sd / math.sqrt(3)  # t(0.975, 2)
    row = spec["S1"]
    assert int(row["n_fields"]) == 3 and int(row["n_failed"]) == 0
    assert float(row["defects_density_per_mm2_mean"]) == pytest.approx(mean)
    assert float(row["defects_density_per_mm2_ci95"]) == pytest.approx(ci, rel=1e-5)
    assert float(row["defects_density_per_mm2_ra_percent"]) == pytest.approx(100 * ci / mean, rel=1e-5)
    assert int(spec["S2"]["n_fields"]) == 2 and int(spec["S2"]["n_failed"]) == 1


def test_group_by_regex(tmp_path):
    assert specimen_of("plate7_field03.tif", group_by=r"regex:(?P<specimen>plate\d+)_") == "plate7"
    assert specimen_of("x/y.tif", group_by=r"regex:^(S\d+)") is None
    with pytest.raises(GroupByError, match="invalid regular expression"):
        specimen_of("a.tif", group_by="regex:(")
    with pytest.raises(ValueError, match="expected 'folder'"):
        run_batch(tmp_path, tmp_path / "o", model=None, process=threshold_process, group_by="name")
    root = tmp_path / "in"
    make_folder(root, counts={"P1_a.tif": 1, "P1_b.tif": 2, "P2_a.tif": 3})
    run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0, group_by=r"regex:^(P\d)_")
    spec = {r["specimen"]: int(r["n_fields"]) for r in read_csv(tmp_path / "out" / "specimens.csv")}
    assert spec == {"P1": 2, "P2": 1}


def test_group_by_regex_with_an_empty_match_is_warned_not_silently_left_out(tmp_path):
    # "(\d*)" matches the empty string on a name without digits: the images were left out of specimens.csv with no
    # warning (the empty name counted as a specimen for the warning, as no specimen for the statistics)
    assert specimen_of("field_a.tif", group_by=r"regex:^([A-Z]*)") is None
    assert specimen_of("S1_a.tif", group_by=r"regex:^([A-Z]\d*)") == "S1"
    root = tmp_path / "in"
    make_folder(root, counts={"S1_a.tif": 1, "S1_b.tif": 2, "x_a.tif": 3})
    summary = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0,
                        group_by=r"regex:^(S?\d*)")
    assert summary.warnings == [r"--group-by regex:^(S?\d*): 1 of 3 image(s) match no specimen and are left out of "
                                "specimens.csv (first: x_a.tif)"]
    spec = {r["specimen"]: int(r["n_fields"]) for r in read_csv(tmp_path / "out" / "specimens.csv")}
    assert spec == {"S1": 2}


# ---------------------------------------------------------------------------------- resume / changes
def test_rerun_skips_finished_images_and_redoes_changed_ones(mixed_folder, tmp_path):
    root, truth = mixed_folder
    out = tmp_path / "out"
    first = run_batch(root, out, model=None, process=threshold_process, workers=0)
    csv1 = (out / "images.csv").read_text()
    again = run_batch(root, out, model=None, process=threshold_process, workers=0)
    assert again.n_processed == 0 and again.n_skipped == 6
    assert (out / "images.csv").read_text() == csv1
    # change one image's content -> only it is redone, with the new answer
    write_tiff(root / "S1" / "f2.tif", disk_image(7, seed=99))
    third = run_batch(root, out, model=None, process=threshold_process, workers=0)
    assert third.n_processed == 1
    assert int(by_path(read_csv(out / "images.csv"))["S1/f2.tif"]["n_objects"]) == 7
    # same content, new mtime -> detected by sha256, not redone
    os.utime(root / "S1" / "f3.tif", ns=(time.time_ns(), time.time_ns()))
    assert run_batch(root, out, model=None, process=threshold_process, workers=0).n_processed == 0
    # fixing the corrupt file -> redone and now ok
    write_tiff(root / "S2" / "broken.tif", disk_image(1, seed=5))
    fourth = run_batch(root, out, model=None, process=threshold_process, workers=0)
    assert fourth.n_processed == 1 and fourth.n_failed == 0
    # a changed processing parameter -> everything redone
    fifth = run_batch(root, out, model=None, process=threshold_process, workers=0, pixel_size_um=1.0)
    assert fifth.n_processed == 6 and first.run_id < fifth.run_id  # notes.txt is not an image: skipped
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT relpath) FROM images").fetchone() == (6, 6)
    assert con.execute("SELECT COUNT(*) FROM objects").fetchone()[0] == sum(truth.values()) - 5 + 7 + 1


def test_removed_input_leaves_the_exports(mixed_folder, tmp_path):
    root, _ = mixed_folder
    out = tmp_path / "out"
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    (root / "S1" / "f3.tif").unlink()
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    assert "S1/f3.tif" not in by_path(read_csv(out / "images.csv"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_part_files_of_dead_processes_are_swept(tmp_path):
    """segment killed mid-write leaves a hidden .<name>.<pid>.part (and write_labels a .<name>.<pid>.<hex>.tmp);
    batch's sweep matched only '.tmp' anywhere in the name. Now micro-seg's per-process temporaries are swept when
    their process is gone (and they are an hour old); a live process's, and a hidden file of another naming, are left
    alone."""
    root = tmp_path / "in"
    make_folder(root, counts={"S1/f1.tif": 3})
    out = tmp_path / "out"
    out.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    stale = [out / f".a_probabilities.tif.{dead}.part", out / "labels" / f".b_uncertainty.tif.{dead}.part"]
    kept = [out / f".c_probabilities.tif.{alive}.part", out / ".notes.part", out / f".d.tif.{dead}.partial",
            out / f".video.mp4.{dead}.part", out / "labels" / f".e_labels.tif.{dead}.part"]
    fresh = out / f".f_probabilities.tif.{dead}.part"  # written a moment ago: a live writer on another machine?
    for p in stale + kept + [fresh]:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half a TIFF")
        if p != fresh:
            os.utime(p, (time.time() - 7200, time.time() - 7200))
    run_batch(root, out, model=None, process=threshold_process, workers=0)
    assert [p.name for p in stale if p.exists()] == []
    assert [p.name for p in kept + [fresh] if not p.exists()] == []


def test_missing_input_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="does not exist"):
        run_batch(tmp_path / "nope", tmp_path / "out", model=None, process=threshold_process)


def test_cancel_keeps_finished_images_and_a_rerun_completes(tmp_path):
    root = tmp_path / "in"
    make_folder(root, counts={f"f{i}.tif": 2 for i in range(6)})
    out = tmp_path / "out"
    seen = []

    def progress(done, total, path, status):
        seen.append(path)

    with pytest.raises(CancelledError, match="re-run to resume"):
        run_batch(root, out, model=None, process=threshold_process, workers=0, progress=progress,
                  cancel=lambda: len(seen) >= 3)
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 2
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "cancelled"
    s = run_batch(root, out, model=None, process=threshold_process, workers=0)
    assert s.n_processed == 4 and s.n_skipped == 2 and s.n_ok == 6


# ---------------------------------------------------------------------------------- parallel, crash safety
@pytest.mark.slow
def test_worker_processes_give_the_same_results_as_inline(mixed_folder, tmp_path):
    root, _ = mixed_folder
    run_batch(root, tmp_path / "a", model=None, process=threshold_process, workers=0)
    s = run_batch(root, tmp_path / "b", model=None, process=threshold_process, workers=2, max_tasks_per_child=2)
    assert s.exit_code == 3
    assert (tmp_path / "a" / "images.csv").read_text() == (tmp_path / "b" / "images.csv").read_text()
    assert (tmp_path / "a" / "specimens.csv").read_text() == (tmp_path / "b" / "specimens.csv").read_text()


@pytest.mark.slow
def test_a_crashing_worker_fails_only_its_image(tmp_path):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "crash_me.tif": 3, "b.tif": 4, "c.tif": 1})
    s = run_batch(root, tmp_path / "out", model=None, process=crashing_process, workers=2)
    rows = by_path(read_csv(tmp_path / "out" / "images.csv"))
    assert rows["crash_me.tif"]["status"] == "failed" and "WorkerDiedError" in rows["crash_me.tif"]["error"]
    assert [rows[p]["status"] for p in ("a.tif", "b.tif", "c.tif")] == ["ok"] * 3
    assert [int(rows[p]["n_objects"]) for p in ("a.tif", "b.tif", "c.tif")] == [2, 4, 1]
    assert s.exit_code == 3


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from micro_seg.batch import run_batch
    from test_batch_helpers import slow_threshold_process
    run_batch({root!r}, {out!r}, model=None, process=slow_threshold_process, workers=2, max_tasks_per_child=3)
""")


def _done_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM images WHERE status='ok'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _processes_with_marker(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir() or sys.platform == "win32", reason="needs POSIX signals and /proc")
@pytest.mark.parametrize("kill_group", [True, False], ids=["kill-process-group", "kill-parent-only"])
def test_sigkill_mid_batch_then_rerun_equals_uninterrupted_run(tmp_path, kill_group):
    root = tmp_path / "in"
    n = 14
    make_folder(root, counts={f"s{i % 2}/f{i:02d}.tif": 1 + i % 5 for i in range(n)})
    (root / "s1" / "bad.tif").write_bytes(b"II*\x00" + b"\x01" * 10)
    reference = tmp_path / "reference"
    run_batch(root, reference, model=None, process=threshold_process, workers=0)

    out = tmp_path / "out"
    marker = f"MICRO_SEG_KILL_TEST_{os.getpid()}_{kill_group}"
    env = dict(os.environ, MICRO_SEG_TEST_DELAY="0.3", **{marker: "1"})
    script = _KILL_SCRIPT.format(tests=str(TESTS_DIR), root=str(root), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _done_count(out / "results.sqlite") < 4:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "batch made no progress"
        time.sleep(0.05)
    if kill_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = _done_count(out / "results.sqlite")
    assert 4 <= done_before < n, "the kill must land mid-way"
    # orphaned workers notice their parent is gone and exit by themselves
    deadline = time.time() + 15
    while _processes_with_marker(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_with_marker(marker) == []

    s = run_batch(root, out, model=None, process=threshold_process, workers=2)
    assert s.n_skipped >= done_before and s.n_processed == n + 1 - s.n_skipped
    assert (out / "images.csv").read_text() == (reference / "images.csv").read_text()
    assert (out / "specimens.csv").read_text() == (reference / "specimens.csv").read_text()
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT relpath) FROM images").fetchone() == (n + 1, n + 1)
    per_image = dict(con.execute("SELECT i.relpath, COUNT(o.object_id) FROM images i LEFT JOIN objects o"
                                 " ON o.image_id = i.image_id GROUP BY i.relpath").fetchall())
    ref = sqlite3.connect(reference / "results.sqlite")
    assert per_image == dict(ref.execute("SELECT i.relpath, COUNT(o.object_id) FROM images i LEFT JOIN objects o"
                                         " ON o.image_id = i.image_id GROUP BY i.relpath").fetchall())
    leftovers = [p for p in out.rglob(".*") if ".tmp" in p.name]
    assert leftovers == []


# ---------------------------------------------------------------------------------- dask
@pytest.mark.slow
def test_dask_local_cluster_run_equals_local_run(mixed_folder, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, _ = mixed_folder
    local = run_batch(root, tmp_path / "local", model=None, process=threshold_process, workers=2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  host="127.0.0.1", protocol="tcp://") as cluster:
        remote = run_batch(root, tmp_path / "dask", model=None, process=threshold_process,
                           scheduler=cluster.scheduler_address)
    assert (local.n_ok, local.n_failed) == (remote.n_ok, remote.n_failed) == (5, 1)
    for name in ("images.csv", "specimens.csv"):
        assert (tmp_path / "local" / name).read_text() == (tmp_path / "dask" / name).read_text()
    con = sqlite3.connect(tmp_path / "dask" / "results.sqlite")
    assert con.execute("SELECT scheduler FROM runs").fetchone()[0].startswith("tcp://127.0.0.1:")


def test_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import micro_seg.batch
    from micro_seg.errors import MicroSegError

    monkeypatch.setattr(micro_seg.batch, "DASK_CONNECT_TIMEOUT", "1s")

    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1})
    with pytest.raises(MicroSegError, match="cannot connect"):
        run_batch(root, tmp_path / "out", model=None, process=threshold_process, scheduler="tcp://127.0.0.1:9")


def test_specimen_statistic_counts_only_the_fields_that_have_a_value():
    # three fields; the third has no intercept (no boundary crossed the test lines): the mean intercept is over 2
    rows = [{"path": f"S/f{i}.tif", "specimen": "S", "status": "ok", "pixel_size_um": 1.0,
             "mean_intercept_um": v, "grains_per_mm2": 1000.0} for i, v in enumerate((10.0, 14.0, float("nan")))]
    (rec,) = specimen_table(rows)
    assert rec["n_fields"] == 3 and rec["grains_per_mm2_n"] == 3 and rec["mean_intercept_um_n"] == 2
    assert rec["mean_intercept_um_mean"] == pytest.approx(12.0)
    assert rec["mean_intercept_um_ci95"] == pytest.approx(12.706205 * math.sqrt(8) / math.sqrt(2), rel=1e-6)


def test_pixel_unit_statistics_pool_only_fields_at_one_pixel_size():
    """A specimen of fields at 0.2 and 0.5 um/px (or some uncalibrated) got mean_intercept_px_mean averaged over
    pixel counts at different scales (the quick start's top-level specimen: 34.1 px over four scales), a number with
    no meaning; the physical statistics stay, and pixel statistics are kept where the fields share one scale."""
    def field(i, px, l_um):
        return {"path": f"S/f{i}.tif", "specimen": "S", "status": "ok", "pixel_size_um": px,
                "mean_intercept_um": l_um, "mean_intercept_px": l_um / px if px else l_um}
    (rec,) = specimen_table([field(0, 0.2, 10.0), field(1, 0.5, 12.0)])
    assert rec["mean_intercept_um_mean"] == pytest.approx(11.0)  # 10 and 12 um: the specimen's mean is right
    assert "mean_intercept_px_mean" not in rec and "mean_intercept_px_n" not in rec  # 50 and 24 px: not pooled
    (rec,) = specimen_table([field(0, 0.5, 10.0), field(1, 0.5, 12.0)])
    assert rec["mean_intercept_px_mean"] == pytest.approx(22.0) and rec["mean_intercept_px_n"] == 2
    uncal = {"path": "S/f2.tif", "specimen": "S", "status": "ok", "pixel_size_um": float("nan"),
             "mean_intercept_px": 30.0}
    (rec,) = specimen_table([field(0, 0.5, 10.0), uncal])
    assert "mean_intercept_px_mean" not in rec and rec["mean_intercept_um_n"] == 1
    (rec,) = specimen_table([uncal, dict(uncal, path="S/f3.tif", mean_intercept_px=34.0)])  # all uncalibrated
    assert rec["mean_intercept_px_mean"] == pytest.approx(32.0) and rec["n_uncalibrated"] == 2


def test_a_specimen_g_interval_reaching_zero_keeps_its_finite_bound():
    """Two fields of very different grain density: the t interval of N_A (and of l) reaches 0, where G has no bound
    on that side; specimens.csv and the report dropped both bounds, although the other side is a real bound."""
    from micro_seg.measure import astm
    from micro_seg.report import _specimen_section

    rows = [{"path": f"S/f{i}.tif", "specimen": "S", "status": "ok", "pixel_size_um": 1.0,
             "grains_per_mm2": na, "mean_intercept_um": l} for i, (na, l) in enumerate(((100.0, 10.0), (900.0, 50.0)))]
    (rec,) = specimen_table(rows)
    t = 12.706204736174698  # t(0.975, 1)
    ci_na, ci_l = t * math.sqrt(2 * 400.0 ** 2) / math.sqrt(2), t * math.sqrt(2 * 20.0 ** 2) / math.sqrt(2)
    assert rec["grains_per_mm2_ci95"] == pytest.approx(ci_na) and 500.0 - ci_na < 0  # reaches N_A = 0
    assert "G_planimetric_ci95_low" not in rec
    assert rec["G_planimetric_ci95_high"] == pytest.approx(astm.g_from_grains_per_mm2(500.0 + ci_na))
    assert 30.0 - ci_l < 0 and "G_intercept_ci95_high" not in rec  # reaches l = 0
    assert rec["G_intercept_ci95_low"] == pytest.approx(astm.g_from_intercept((30.0 + ci_l) / 1000.0))
    html = _specimen_section([rec])
    assert f"[≤ {rec['G_planimetric_ci95_high']:.1f}]" in html and f"[≥ {rec['G_intercept_ci95_low']:.1f}]" in html
    rows[1].update(grains_per_mm2=102.0, mean_intercept_um=10.2)  # close fields: both bounds, as before
    (rec,) = specimen_table(rows)
    assert rec["G_planimetric_ci95_low"] < rec["G_planimetric"] < rec["G_planimetric_ci95_high"]
    assert rec["G_intercept_ci95_low"] < rec["G_intercept"] < rec["G_intercept_ci95_high"]
    assert f"[{rec['G_intercept_ci95_low']:.1f}, {rec['G_intercept_ci95_high']:.1f}]" in _specimen_section([rec])


def test_report_marks_a_statistic_over_fewer_fields():
    from micro_seg.report import _specimen_section
    rows = [{"path": f"S/f{i}.tif", "specimen": "S", "status": "ok", "pixel_size_um": 1.0,
             "mean_intercept_um": v} for i, v in enumerate((10.0, 14.0, float("nan")))]
    html = _specimen_section(specimen_table(rows))
    assert "(2 of 3 fields)" in html
    full = _specimen_section(specimen_table(rows[:2]))
    assert "of 2 fields" not in full


def test_ignore_file_saved_with_a_byte_order_mark_still_leaves_out_its_first_pattern(tmp_path):
    """Notepad's UTF-8 with BOM made the first line '\\ufefftruth/': the ground-truth masks were measured as fields."""
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "truth/a_labels.tif": 1})
    (root / ".micro-seg-ignore").write_bytes(b"\xef\xbb\xbftruth/\r\n*.md\r\n")
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0)
    assert s.ignored == ["truth/"]
    assert [r["path"] for r in read_csv(tmp_path / "out" / "images.csv")] == ["a.tif"]


def test_ignore_file_in_utf16_as_windows_powershell_writes_it_leaves_out_its_patterns(tmp_path):
    """PowerShell 5's '"truth/" > .micro-seg-ignore' writes UTF-16 with a byte order mark: read as UTF-8 its patterns
    were garbage that matched nothing, so the truth masks were measured as fields, without a word."""
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "truth/a_labels.tif": 1, "b.tif": 3})
    for i, encoding in enumerate(("utf-16-le", "utf-16-be")):
        (root / ".micro-seg-ignore").write_bytes("\ufefftruth/\r\nb.tif\r\n".encode(encoding))
        s = run_batch(root, tmp_path / f"out{i}", model=None, process=threshold_process, workers=0)
        assert sorted(s.ignored) == ["b.tif", "truth/"], encoding
        assert [r["path"] for r in read_csv(tmp_path / f"out{i}" / "images.csv")] == ["a.tif"]


def test_an_exclude_that_leaves_nothing_out_is_warned_with_the_pattern_it_meant(tmp_path, monkeypatch):
    """--exclude in/truth/ (shell completion from the current folder) matched nothing, silently: the ground-truth
    masks were measured as fields of the specimen."""
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "b.tif": 3, "truth/a_labels.tif": 1})
    monkeypatch.chdir(tmp_path)
    s = run_batch(root, root / "results", model=None, process=threshold_process, workers=0,
                  exclude=["in/truth/", "b.tif", "nothing*", "results/"])  # OUT_DIR is never read: no slip
    assert s.ignored == ["b.tif"]  # the pattern relative to IN_DIR works
    assert s.warnings == [
        f"--exclude 'in/truth/' left nothing out (patterns are relative to IN_DIR {root.resolve()}, gitignore-like: "
        f"'*.md', 'truth/', 'sub/*.tif'); for {(root / 'truth').resolve()} give --exclude 'truth/'",
        f"--exclude 'nothing*' left nothing out (patterns are relative to IN_DIR {root.resolve()}, gitignore-like: "
        "'*.md', 'truth/', 'sub/*.tif')"]


def test_an_ignore_file_in_a_subfolder_applies_within_that_subfolder(tmp_path):
    """batch on the folder above sample_images/ measured its truth masks and docs: only IN_DIR's own
    .micro-seg-ignore was read, a subfolder's (gitignore-like, one per folder) was skipped as a hidden file."""
    root = tmp_path / "in"
    make_folder(root, counts={"proj/a.tif": 2, "proj/truth/a_labels.tif": 1, "proj/phase.tif": 3,
                              "other/truth/b.tif": 1, "other/phase.tif": 4})
    (root / "proj" / ".micro-seg-ignore").write_text("# masks and the phase sample\ntruth/\n/phase.tif\n")
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0)
    assert sorted(s.ignored) == ["proj/phase.tif", "proj/truth/"]
    assert [r["path"] for r in read_csv(tmp_path / "out" / "images.csv")] == [
        "other/phase.tif", "other/truth/b.tif", "proj/a.tif"]  # its patterns stop at its folder


def test_ignore_patterns_anchored_with_a_slash_or_spanning_folders_with_two_stars_leave_out_what_gitignore_does(
        tmp_path):
    """'/truth/' (this folder's truth/, as in .gitignore) and '**/masks/' at the top matched nothing, silently: the
    ground-truth masks were measured as fields of the specimen."""
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "truth/a.tif": 1, "S1/truth/b.tif": 3, "S1/b.tif": 2,
                              "proj/masks/c.tif": 1, "proj/c.tif": 4, "proj/x/masks/d.tif": 1, "proj/x/d.tif": 2})
    (root / ".micro-seg-ignore").write_text("/truth/\n")
    (root / "proj" / ".micro-seg-ignore").write_text("**/masks/\n")
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0,
                  exclude=["S1/**/b.tif"])
    assert sorted(s.ignored) == ["S1/b.tif", "S1/truth/b.tif", "proj/masks/", "proj/x/masks/", "truth/"]
    assert [r["path"] for r in read_csv(tmp_path / "out" / "images.csv")] == ["a.tif", "proj/c.tif", "proj/x/d.tif"]
    assert s.warnings == []


def test_an_exclude_of_a_symlinked_folder_is_not_warned_as_leaving_nothing_out(tmp_path):
    """--exclude S2/ for a symbolic link to another specimen's folder (deliberately left out: it silences the
    'not followed' warning) was warned as an --exclude that 'left nothing out', a slip the user had not made."""
    root = tmp_path / "in"
    make_folder(root, counts={"S1/a.tif": 1})
    make_folder(tmp_path / "elsewhere", counts={"c.tif": 1})
    (root / "S2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0, exclude=["S2/"])
    assert (s.n_images, s.ignored, s.warnings) == (1, ["S2/"], [])
    s = run_batch(root, tmp_path / "out2", model=None, process=threshold_process, workers=0)
    assert (s.ignored, len(s.warnings)) == ([], 1) and "not followed" in s.warnings[0]


def test_an_exclude_starting_with_a_tilde_is_a_pattern_not_a_home_folder(tmp_path):
    """--exclude '~$*' (the lock files Office leaves beside a document) stopped the batch before its first image with
    'internal error: RuntimeError: Could not determine home directory', exit 1."""
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "~$b.tif": 1})
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0, exclude=["~$*", "~x*"])
    assert s.ignored == ["~$b.tif"]
    assert [r["path"] for r in read_csv(tmp_path / "out" / "images.csv")] == ["a.tif"]
    assert len(s.warnings) == 1 and s.warnings[0].startswith("--exclude '~x*' left nothing out")


def test_an_ignore_file_that_cannot_be_read_is_one_clear_error_naming_it(tmp_path, monkeypatch):
    """A subfolder's .micro-seg-ignore that the user may not read (mode 600, another user's, in a shared archive)
    was 'internal error: PermissionError ... re-run with --debug', exit 1."""
    import pathlib

    from micro_seg.batch import BatchOptionError

    root = tmp_path / "in"
    make_folder(root, counts={"S1/a.tif": 2})
    (root / "S1" / ".micro-seg-ignore").write_text("truth/\n")
    real = pathlib.Path.read_bytes

    def read_bytes(self):
        if self.name == ".micro-seg-ignore":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    with pytest.raises(BatchOptionError) as err:  # exit 2, one line
        run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0)
    assert str(err.value) == (f"{root / 'S1' / '.micro-seg-ignore'}: cannot read this ignore file (Permission "
                              "denied); make it readable or remove it")
