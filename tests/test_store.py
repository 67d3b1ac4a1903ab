"""The SQLite results store: atomic per-image records, replacement, types, WAL."""

from __future__ import annotations

import math
import sqlite3

import pytest

from micro_seg.store import ResultsStore


@pytest.fixture()
def store(tmp_path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def _run(store):
    return store.start_run(in_dir="/in", out_dir="/out", software_version="0.1", parameters={"model": "m"})


def test_wal_mode_and_schema(store, tmp_path):
    assert store.schema_version() == 1
    con = sqlite3.connect(tmp_path / "results.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "images", "measurements", "objects", "flags"} <= tables


def test_record_keeps_types_and_order_and_nan_becomes_null(store):
    run = _run(store)
    image_id = store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok"}, run_id=run,
                            measurements={"n_grains": 12, "G": 8.25, "name": "x", "bad": math.nan, "none": None})
    assert store.measurements()[image_id] == {"n_grains": 12, "G": 8.25, "name": "x", "bad": None, "none": None}
    assert isinstance(store.measurements()[image_id]["n_grains"], int)
    assert store.measurement_keys() == ["n_grains", "G", "name", "bad", "none"]


def test_record_replaces_every_trace_of_an_earlier_result(store):
    run = _run(store)
    store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok", "overlay_path": "o.png"}, run_id=run,
                 measurements={"n_grains": 3}, objects={"grains": {"label": [1, 2, 3], "area_um2": [1.0, 2.0, 3.0]}},
                 flags=[{"source": "qc", "check": "blur", "severity": "review", "value": 0.6, "limit": 0.45}])
    store.record("a.tif", {"abspath": "/in/a.tif", "status": "failed", "error": "CorruptFileError: a.tif: bad"},
                 run_id=run)
    row = store.image("a.tif")
    assert row["status"] == "failed" and row["overlay_path"] is None
    assert store.measurements() == {} and store.flags() == []
    assert list(store.iter_objects()) == []
    assert len(store.images()) == 1


def test_a_failing_record_leaves_the_previous_state(store):
    run = _run(store)
    store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok"}, run_id=run, measurements={"n": 1})
    with pytest.raises(sqlite3.IntegrityError):  # CHECK (status IN ('ok', 'failed'))
        store.record("a.tif", {"abspath": "/in/a.tif", "status": "maybe"}, run_id=run, measurements={"n": 2})
    assert store.image("a.tif")["status"] == "ok"
    assert list(store.measurements().values()) == [{"n": 1}]
    with pytest.raises(KeyError, match="unknown images column"):
        store.record("b.tif", {"abspath": "/in/b.tif", "status": "ok", "nonsense": 1}, run_id=run)
    assert store.image("b.tif") is None


def test_objects_round_trip_with_their_ids(store):
    run = _run(store)
    store.record("b.tif", {"abspath": "/in/b.tif", "status": "ok", "specimen": "S"}, run_id=run,
                 objects={"defects": {"label": [4, 9], "area_um2": [2.5, math.inf]}})
    rows = [r for chunk in store.iter_objects(chunk=1) for r in chunk]
    assert rows == [
        {"path": "b.tif", "specimen": "S", "kind": "defects", "object_id": 4, "label": 4, "area_um2": 2.5},
        {"path": "b.tif", "specimen": "S", "kind": "defects", "object_id": 9, "label": 9, "area_um2": None},
    ]


def test_runs_and_seen_images(store):
    r1 = _run(store)
    store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok"}, run_id=r1)
    store.record("b.tif", {"abspath": "/in/b.tif", "status": "ok"}, run_id=r1)
    store.finish_run(r1, status="finished", counts={"n_ok": 2, "n_failed": 0})
    r2 = _run(store)
    store.mark_seen(["a.tif"], r2, {"a.tif": "spec"})
    assert [r["relpath"] for r in store.images(seen_in_run=r2)] == ["a.tif"]
    assert store.image("a.tif")["specimen"] == "spec"
    runs = store.runs()
    assert [r["status"] for r in runs] == ["finished", "running"] and runs[0]["parameters"] == {"model": "m"}


def test_committed_results_are_visible_to_another_reader_during_a_run(store, tmp_path):
    run = _run(store)
    store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok"}, run_id=run)
    reader = sqlite3.connect(f"file:{tmp_path / 'results.sqlite'}?mode=ro", uri=True)
    assert reader.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1


def test_images_csv_qc_reasons_say_which_reason_failed_the_image(tmp_path):
    # a "fail" row listed its fail and review reasons alike: which one failed it was not in images.csv
    from micro_seg.batch import _export_rows

    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run(in_dir="in", out_dir="out", software_version="0", parameters={})
        store.record("a.tif", {"abspath": "/in/a.tif", "status": "ok", "qc_verdict": "fail"}, run_id=run, flags=[
            {"source": "qc", "check": "grains.G_intercept", "severity": "fail", "value": 10.9, "limit": 10.0,
             "message": "grains.G_intercept = 10.9 is above the max 10"},
            {"source": "qc", "check": "grains.G_planimetric", "severity": "review", "value": 10.6, "limit": 10.5,
             "message": "grains.G_planimetric = 10.6 is above the max 10.5"},
            {"source": "qc", "check": "grains.ala_G", "severity": "review", "value": None, "limit": 3.0,
             "message": "grains.ala_G was not measured; the spec requires it"}])
        (row,) = _export_rows(store, run)
    assert row["qc_reasons"] == ("fail: grains.G_intercept=10.9 (limit 10.0); review: grains.G_planimetric=10.6 "
                                 "(limit 10.5); review: grains.ala_G was not measured; the spec requires it")
