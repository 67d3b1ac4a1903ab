"""GUI test of the Batch widget: run the engine's batch in the background, browse the results."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from _napari_helpers import tiny_model, two_phase_image, wait_idle  # noqa: E402


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MICRO_SEG_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


def test_batch_widget_runs_and_browses(make_napari_viewer, qtbot, tmp_path, user_models, monkeypatch, notes):
    import tifffile

    from napari_plugin._batch import BatchWidget

    folder = tiny_model(user_models / "tiny")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        img, _ = two_phase_image((64, 64), seed=10 + i)
        tifffile.imwrite(src / f"field{i}.tif", img, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    (src / "corrupt.tif").write_bytes(b"II*\x00garbage")
    viewer = make_napari_viewer()
    w = BatchWidget(viewer)
    w._in.value, w._out.value = str(src), str(tmp_path / "out")
    w._model.value = str(folder)
    w._workers.value = 0
    assert w.run() is not None
    wait_idle(qtbot, w, timeout=120_000)
    assert w.summary is not None and (w.summary.n_ok, w.summary.n_failed) == (2, 1)
    assert len(w.images) == 3 and sorted(w.images["status"]) == ["failed", "ok", "ok"]
    assert w.table_view.model().rowCount() == 3
    ok_row = int(np.flatnonzero(w.images["status"].to_numpy() == "ok")[0])
    added = w.open_row(ok_row)
    assert added is not None and len(added) == 2
    image_layer, labels_layer = added
    assert tuple(image_layer.scale) == pytest.approx((0.5, 0.5))
    assert labels_layer.data.shape == image_layer.data.shape
    # the micrograph replaced since the batch ran (same size, other pixels): the recorded sha256 tells, its labels
    # are not laid over it, and the user is told why
    name = w.images.iloc[ok_row]["path"]
    img, _ = two_phase_image((64, 64), seed=99)
    tifffile.imwrite(src / name, img)
    added = w.open_row(ok_row)
    assert added is not None and len(added) == 1
    assert any("sha256" in m and "not shown" in m for s, m in notes if s == "warning")
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url))
    assert w.open_report() is not None and opened and opened[0].endswith("report.html")


def test_changed_since_batch_by_sha256_or_else_by_size_allowing_a_data_bar(tmp_path):
    """Batch labels of an SEM image cover the part above its data bar: that is not a change."""
    from types import SimpleNamespace

    from micro_seg.batch_worker import sha256_file
    from napari_plugin._batch import _changed_since_batch

    path = tmp_path / "sem.tif"
    path.write_bytes(b"pixels")
    mg = SimpleNamespace(data=np.zeros((512, 512), np.uint8), databar_rows=60)
    same = {"sha256": sha256_file(path)}
    assert _changed_since_batch(path, same, mg, (452, 512)) == ""
    assert "sha256" in _changed_since_batch(path, {"sha256": "0" * 64}, mg, (452, 512))
    for no_sha in ({}, {"sha256": float("nan")}, {"sha256": ""}):  # older tables: the size decides
        assert _changed_since_batch(path, no_sha, mg, (452, 512)) == ""
        assert _changed_since_batch(path, no_sha, mg, (512, 512)) == ""
        assert "512 x 512 px but its labels are 400 x 512" in _changed_since_batch(path, no_sha, mg, (400, 512))


def test_batch_widget_test_time_augmentation_reaches_the_engine(make_napari_viewer, qtbot, tmp_path, user_models):
    """The TTA box runs every image with ``tta`` (recorded in the run's parameters); a re-run without it redoes the
    images (the options are part of the parameters hash)."""
    import json
    import sqlite3

    import tifffile

    from napari_plugin._batch import BatchWidget

    folder = tiny_model(user_models / "tiny")
    src = tmp_path / "in"
    src.mkdir()
    img, _ = two_phase_image((64, 64), seed=12)
    tifffile.imwrite(src / "field.tif", img)
    w = BatchWidget(make_napari_viewer())
    w._in.value, w._out.value, w._model.value, w._workers.value = str(src), str(tmp_path / "out"), str(folder), 0
    runs = []
    for tta in (True, True, False):
        w._tta.value = tta
        assert w.run() is not None
        wait_idle(qtbot, w, timeout=120_000)
        runs.append(w.summary.n_processed)
    assert runs == [1, 0, 1]
    con = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    params = [json.loads(p) for (p,) in con.execute("SELECT parameters FROM runs ORDER BY run_id")]
    assert [p["options"] for p in params] == [[["tta", True]], [["tta", True]], []]


def test_batch_widget_refuses_a_results_table_it_cannot_browse(make_napari_viewer, tmp_path, notes):
    """An images.csv without path/status columns: said when loading (opening a row raised KeyError in the callback)."""
    from napari_plugin._batch import BatchWidget

    (tmp_path / "images.csv").write_text("a,b\n1,2\n")
    w = BatchWidget(make_napari_viewer())
    assert w.load_results(tmp_path) is None and w.images is None and w.open_row(0) is None
    assert any("no path or status column" in m for _, m in notes), notes


def _sem_folder_and_grain_model(tmp_path, user_models):
    """A threshold grain model, a folder ``in/`` holding one SEM-like grain image with a 44-row data bar
    (0.5 um/px), and that image."""
    import tifffile

    from data_builders import add_databar, grain_image, threshold_net
    from micro_seg.registry import ModelCard, save_model

    model = save_model(user_models / "grains", threshold_net(2, 1),
                       ModelCard(name="thr-grains", task="grains", arch="msnet", arch_kwargs={"widths": [4, 8]},
                                 in_channels=1, classes=["grain", "boundary"], tile_size=64,
                                 normalisation={"mode": "minmax"}))
    src = tmp_path / "in"
    src.mkdir()
    img = add_databar(255 - grain_image((300, 256), n_grains=60, seed=7, noise=2), 44, background=0)
    tifffile.imwrite(src / "sem.tif", img, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return model, src, img


def _measures_like_the_batch(viewer, qtbot, labels, rec) -> None:
    """Measure on the opened labels gives the batch row's grain count and G."""
    from napari_plugin._measure import MeasureWidget

    m = MeasureWidget(viewer)
    m._labels.value = labels
    m.run()
    wait_idle(qtbot, m)
    assert m.summary["n_grains"] == int(rec["n_grains"]) > 10
    assert m.summary["G_planimetric"] == pytest.approx(float(rec["G_planimetric"]), abs=1e-6)


def test_batch_row_of_an_sem_image_with_a_data_bar_measures_like_the_batch(make_napari_viewer, qtbot, tmp_path,
                                                                          user_models):
    """The opened labels covered the part above the bar but said databar_rows=44: Measure cut 44 more rows
    (46 grains instead of the batch's 56)."""
    from napari_plugin._batch import BatchWidget

    model, src, img = _sem_folder_and_grain_model(tmp_path, user_models)
    viewer = make_napari_viewer()
    w = BatchWidget(viewer)
    w._in.value, w._out.value, w._model.value, w._workers.value = str(src), str(tmp_path / "out"), str(model), 0
    w.run()
    wait_idle(qtbot, w, timeout=180_000)
    rec = w.images.iloc[0]
    image, labels = w.open_row(0)
    assert labels.data.shape == image.data.shape  # padded below the bar, as the Segment widget's labels are
    _measures_like_the_batch(viewer, qtbot, labels, rec)
    n_layers = len(viewer.layers)
    again = w.open_row(0)  # opened twice: the same layers, none added ("sem [1]", "sem labels [1]")
    assert [l.name for l in again] == [image.name, labels.name] and len(viewer.layers) == n_layers


def test_closing_the_viewer_mid_batch_stops_the_batch_cleanly(make_napari_viewer, qtbot, tmp_path, user_models,
                                                              monkeypatch):
    """Closing napari while a batch runs: napari quits the worker; the batch must be cancelled too (its thread used
    to run on to the last image, holding the folder lock, and handlers touched the deleted widgets)."""
    import fcntl
    import sys
    import threading
    import time

    import pandas as pd
    import tifffile

    import micro_seg.batch
    from micro_seg.batch import LOCK_NAME
    from napari_plugin._batch import BatchWidget

    folder = tiny_model(user_models / "tiny")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(10):
        tifffile.imwrite(src / f"field{i}.tif", two_phase_image((64, 64), seed=i)[0])
    slow = micro_seg.batch.safe_process

    def slow_process(*args, **kwargs):  # 0.4 s an image: the batch is still running when the viewer closes
        time.sleep(0.4)
        return slow(*args, **kwargs)

    monkeypatch.setattr(micro_seg.batch, "safe_process", slow_process)
    hooked = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: hooked.append(exc))
    viewer = make_napari_viewer()
    w = BatchWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._in.value, w._out.value = str(src), str(tmp_path / "out")
    w._model.value = str(folder)
    w._workers.value = 0
    assert w.run() is not None
    qtbot.waitUntil(lambda: w._progress.value > 0, timeout=60_000)
    viewer.close()
    t0 = time.monotonic()
    batch_threads = lambda: [t for t in threading.enumerate() if t.name == "micro-seg-batch"]  # noqa: E731
    qtbot.waitUntil(lambda: not batch_threads(), timeout=10_000)
    assert time.monotonic() - t0 < 3.0  # the image being segmented ends, no more start (10 x 0.4 s otherwise)
    qtbot.wait(300)  # the worker's signals reach the (deleted) widget
    assert hooked == []
    rows = pd.read_csv(tmp_path / "out" / "images.csv")
    assert 0 < len(rows) < 10 and set(rows["status"]) == {"ok"}
    with open(tmp_path / "out" / LOCK_NAME, "a") as fh:  # the folder lock is released: another run may take it
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_batch_row_run_with_databar_rows_opens_with_that_bar(make_napari_viewer, qtbot, tmp_path, user_models):
    """A batch run with --databar-rows 60 on an image whose detected bar is 44: the opened row re-detected 44, so its
    labels (the 240 rows above the user's bar) were not padded and said databar_rows=44, and Measure cut 44 more
    rows of microstructure (the batch's grain count was not reproduced)."""
    import tifffile

    from micro_seg.batch import run_batch
    from micro_seg.io import read_micrograph
    from napari_plugin._batch import BatchWidget

    model, src, img = _sem_folder_and_grain_model(tmp_path, user_models)
    assert read_micrograph(src / "sem.tif").databar_rows == 44
    summary = run_batch(src, tmp_path / "out", model=str(model), workers=0, report=False, databar_rows=60)
    assert summary.n_failed == 0
    viewer = make_napari_viewer()
    w = BatchWidget(viewer)
    w._in.value = str(src)
    w.load_results(tmp_path / "out")
    rec = w.images.iloc[0]
    assert int(rec["databar_rows"]) == 60
    image, labels = w.open_row(0)
    assert image.metadata["micro_seg"]["databar_rows"] == labels.metadata["micro_seg"]["databar_rows"] == 60
    assert labels.data.shape == image.data.shape  # padded below the user's bar
    _measures_like_the_batch(viewer, qtbot, labels, rec)
    # the file replaced by a shorter one than the batch's bar: opened as it is now (labels not shown), not refused
    tifffile.imwrite(src / "sem.tif", img[:50])
    (again,) = w.open_row(0)
    assert again.data.shape == (50, 256)


def test_batch_widget_tells_what_the_batch_warned_about(make_napari_viewer, qtbot, tmp_path, user_models, notes):
    """The Batch widget said 'Batch finished: 1 ok, 0 failed' and nothing of the warnings micro-seg batch prints: the
    images of a symbolically linked specimen folder were left out without a word."""
    import os

    import tifffile

    from napari_plugin._batch import BatchWidget

    folder = tiny_model(user_models / "tiny")
    src, elsewhere = tmp_path / "in", tmp_path / "elsewhere" / "S2"
    for d in (src / "S1", elsewhere):
        d.mkdir(parents=True)
        img, _ = two_phase_image((64, 64), seed=3)
        tifffile.imwrite(d / "field.tif", img, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    os.symlink(elsewhere, src / "S2")
    (src / "notes.txt").write_text("operator notes")
    w = BatchWidget(make_napari_viewer())
    w._in.value, w._out.value = str(src), str(tmp_path / "out")
    w._model.value = str(folder)
    w._workers.value = 0
    assert w.run() is not None
    wait_idle(qtbot, w, timeout=120_000)
    assert w.summary is not None and (w.summary.n_ok, w.summary.n_failed) == (1, 0)
    said = [m for s, m in notes if m.startswith("Batch finished")]
    assert len(said) == 1 and ("warning", said[0]) in notes
    assert "1 symbolic link(s) to folders not followed" in said[0] and "S2/" in said[0]
    assert "skipped 1 file(s) that are not supported images (.txt)" in said[0]


def test_batch_row_of_a_phase_model_keeps_its_class_names(make_napari_viewer, qtbot, tmp_path, user_models, notes):
    """The labels of a batch row open with the class names the batch wrote into them: Measure gives the fraction of
    every phase by name, equal to the row's phase_fraction_<name> (without the names: {'0': ...}, the absent phase
    missing), and Annotate can start from them."""
    import tifffile

    from napari_plugin._annotate import AnnotateWidget
    from napari_plugin._batch import BatchWidget
    from napari_plugin._measure import PHASES, MeasureWidget

    folder = tiny_model(user_models / "tiny", classes=("ferrite", "pearlite"))
    src = tmp_path / "in"
    src.mkdir()
    img, _ = two_phase_image((64, 64), seed=10)
    tifffile.imwrite(src / "field.tif", img, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    viewer = make_napari_viewer()
    w = BatchWidget(viewer)
    w._in.value, w._out.value = str(src), str(tmp_path / "out")
    w._model.value = str(folder)
    w._workers.value = 0
    w.run()
    wait_idle(qtbot, w, timeout=120_000)
    image_layer, labels_layer = w.open_row(0)
    assert labels_layer.metadata["micro_seg"]["classes"] == ["ferrite", "pearlite"]
    meas = MeasureWidget(viewer)
    meas.reset_choices()
    meas._labels.value = labels_layer
    assert meas._kind.value == PHASES and meas._names.value == "ferrite, pearlite"
    meas.run()
    wait_idle(qtbot, meas)
    row = w.images.iloc[0]
    assert meas.summary["phase_fractions"] == pytest.approx(
        {name: float(row[f"phase_fraction_{name}"]) for name in ("ferrite", "pearlite")})
    ann = AnnotateWidget(viewer)
    ann.reset_choices()
    ann._image.value, ann._prediction.value = image_layer, labels_layer
    ann.start_from_prediction()
    assert not any("class names" in m for s, m in notes if s == "warning")
    np.testing.assert_array_equal(ann._annotations.value.data, np.asarray(labels_layer.data) + 1)


def test_batch_row_of_a_file_named_in_latin1_opens_with_its_labels(make_napari_viewer, qtbot, tmp_path, user_models,
                                                                   notes):
    """A Latin-1 'µ' in a file name is written '\\xb5' in images.csv (text): opening its row looked for a file named
    with a backslash, and said 'cannot open ... is the input folder the one the batch ran on?'."""
    import os
    from pathlib import Path

    import tifffile

    from napari_plugin._batch import BatchWidget

    folder = tiny_model(user_models / "tiny")
    src = tmp_path / "in"
    src.mkdir()
    img, _ = two_phase_image((64, 64), seed=4)
    try:
        name = Path(os.fsdecode(os.fsencode(src) + b"/\xb5m_field.tif"))
        tifffile.imwrite(name, img, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    w = BatchWidget(make_napari_viewer())
    w._in.value, w._out.value = str(src), str(tmp_path / "out")
    w._model.value = str(folder)
    w._workers.value = 0
    assert w.run() is not None
    wait_idle(qtbot, w, timeout=120_000)
    assert list(w.images["path"]) == ["\\xb5m_field.tif"]
    added = w.open_row(0)
    assert added is not None and len(added) == 2, notes
    assert added[0].data.shape == (64, 64) and added[1].data.shape == (64, 64)
    assert w.open_row(0) == added  # the same file: shown again, not added twice
