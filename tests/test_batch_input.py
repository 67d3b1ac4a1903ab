"""Bad input to ``micro-seg batch``: non-image files, output folders inside the input
folder, a corrupt model, an empty folder, an output "folder" that is a file.

Errors found before the first image must give exit 2 and exactly one line on stderr,
and must not write anything; non-image files are skipped (and counted), not failed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from micro_seg.batch import BatchOptionError, discover_images, run_batch
from micro_seg.cli import main
from micro_seg.errors import WeightsIntegrityError

from test_batch_helpers import make_folder, threshold_process


def non_image_folder(root: Path) -> dict[str, int]:
    """Two good images, a corrupt TIFF, a TIFF named .dat and four files that are not images."""
    truth = make_folder(root, counts={"S1/a.tif": 3, "S1/b.tif": 2})
    (root / "S1" / "corrupt.tif").write_bytes(b"not a tiff at all")
    (root / "scan.dat").write_bytes((root / "S1" / "a.tif").read_bytes())  # the reader judges by content
    (root / "README.txt").write_text("about these micrographs")
    (root / "notes.csv").write_text("field,operator\na,me\n")
    (root / "S1" / "params.json").write_text("{}")
    (root / "make.py").write_text("print()")
    return truth


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    from test_batch_engine import constant_model

    return constant_model(tmp_path / "models" / "one-grain", task="grains", classes=["grain", "boundary"],
                          winner=0, name="one-grain")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["batch", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------- non-image files
def test_non_image_files_are_skipped_and_counted_not_failed(tmp_path):
    root = tmp_path / "in"
    truth = non_image_folder(root)
    s = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0)
    assert s.unsupported == ["README.txt", "S1/params.json", "make.py", "notes.csv"]
    assert (s.n_images, s.n_ok, s.n_failed) == (4, 3, 1)
    assert [f["path"] for f in s.failures] == ["S1/corrupt.tif"]  # an image extension: still read, still fails
    assert s.exit_code == 3
    assert {f.relpath: f.supported for f in discover_images(root)}["scan.dat"] is True
    assert len(truth) == 2


def test_cli_progress_is_one_line_per_image_when_stderr_is_a_log_file(tmp_path, tiny_model, capsys):
    """With stderr not a terminal (a cluster job's log, nohup) the progress bar was drawn once, at the end: a log
    of a long batch showed nothing of how far it got, or which image it was on when it was killed."""
    root = tmp_path / "in"
    make_folder(root, counts={"S1/a.tif": 1, "S1/b.tif": 2})
    (root / "S1" / "c.tif").write_bytes(b"not a tiff")
    code, _, err = run_cli(capsys, str(root), str(tmp_path / "out"), "--model", str(tiny_model), "--workers", "0")
    assert code == 3
    lines = [line for line in err.splitlines() if line.startswith("micro-seg batch: ") and "warning" not in line]
    assert lines[0] == "micro-seg batch: 3 image(s) to process"
    assert [line.split(", ETA")[0] for line in lines[1:4]] == [
        "micro-seg batch: [1/3] S1/a.tif ok", "micro-seg batch: [2/3] S1/b.tif ok",
        "micro-seg batch: [3/3] S1/c.tif failed (1 failed)"]
    assert ", ETA " in lines[1] and ", ETA " not in lines[3]
    assert "━" not in err  # no bar drawn into the log


def test_cli_reports_skipped_files_in_one_stderr_line_and_the_json(tmp_path, tiny_model, capsys):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1})
    (root / "README.txt").write_text("about")
    (root / "notes.csv").write_text("x\n")
    code, out, err = run_cli(capsys, str(root), str(tmp_path / "out"), "--model", str(tiny_model),
                             "--workers", "0", "--json", "--no-report")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["n_images"], summary["n_ok"], summary["n_unsupported"]) == (1, 1, 2)
    lines = [line for line in err.splitlines() if "not supported" in line]
    assert lines == ["micro-seg batch: skipped 2 file(s) that are not supported images (.csv, .txt)"]


def test_another_batch_output_folder_inside_the_input_folder_is_not_read(tmp_path):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 2, "b.tif": 1})
    first = run_batch(root, root / "old-results", model=None, process=threshold_process, workers=0)
    assert first.n_images == 2
    again = run_batch(root, tmp_path / "out", model=None, process=threshold_process, workers=0)
    assert (again.n_images, again.n_ok, again.unsupported) == (2, 2, [])  # not old-results/labels/*.tif


def test_out_dir_equal_to_in_dir_is_refused_before_any_output(tmp_path):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1})
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(BatchOptionError, match="OUT_DIR is IN_DIR"):
        run_batch(root, root, model=None, process=threshold_process, workers=0)
    assert sorted(p.name for p in root.iterdir()) == before


# ---------------------------------------------------------------------------------- model errors
def test_tampered_model_is_exit_2_with_one_line_and_no_output(tmp_path, tiny_model, capsys):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1, "b.tif": 2})
    weights = next(tiny_model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="does not match"):
        run_batch(root, tmp_path / "engine-out", model=tiny_model, workers=0)
    code, out, err = run_cli(capsys, str(root), str(tmp_path / "out"), "--model", str(tiny_model), "--workers", "0")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "sha256" in err and err.startswith("micro-seg: error: ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "engine-out").exists()


# ---------------------------------------------------------------------------------- errors before processing
@pytest.mark.parametrize("case", ["missing-in", "unknown-model", "bad-group-by", "missing-spec", "out-is-file"])
def test_errors_before_processing_are_exactly_one_stderr_line(tmp_path, capsys, case):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1})
    out = tmp_path / "out"
    args = [str(root), str(out), "--model", "grain-boundaries", "--workers", "0"]
    expected = {"missing-in": "input folder does not exist", "unknown-model": "unknown model",
                "bad-group-by": "--group-by", "missing-spec": "QC spec file does not exist",
                "out-is-file": f"{out}: OUT_DIR is an existing file"}[case]
    if case == "missing-in":
        args[0] = str(tmp_path / "nope")
    elif case == "unknown-model":
        args[3] = "no-such-model"
    elif case == "bad-group-by":
        args += ["--group-by", "banana"]
    elif case == "missing-spec":
        args += ["--spec", str(tmp_path / "nope.yaml")]
    else:
        out.write_text("I am a file")
    code, stdout, err = run_cli(capsys, *args)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("micro-seg: error: ") and expected in err, repr(err)
    assert case == "out-is-file" or not out.exists()


def test_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    import micro_seg.batch

    monkeypatch.setattr(micro_seg.batch, "DASK_CONNECT_TIMEOUT", "1s")
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1})
    code, stdout, err = run_cli(capsys, str(root), str(tmp_path / "out"), "--model", "grain-boundaries",
                                "--scheduler", "tcp://127.0.0.1:9")
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "cannot connect" in err, repr(err)
    assert not (tmp_path / "out").exists()


def test_output_path_under_a_file_is_exit_2(tmp_path, capsys):
    root = tmp_path / "in"
    make_folder(root, counts={"a.tif": 1})
    (tmp_path / "f.txt").write_text("x")
    code, _, err = run_cli(capsys, str(root), str(tmp_path / "f.txt" / "out"), "--model", "grain-boundaries")
    assert code == 2 and err.count("\n") == 1 and "is a file, not a folder" in err, repr(err)


# ---------------------------------------------------------------------------------- nothing to do
@pytest.mark.parametrize("content", ["empty", "only-text"])
def test_folder_without_images_is_exit_2(tmp_path, capsys, content):
    root = tmp_path / "in"
    root.mkdir()
    if content == "only-text":
        (root / "README.txt").write_text("the images are elsewhere")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, str(root), str(out), "--model", "grain-boundaries", "--workers", "0")
    assert code == 2 and stdout == ""
    assert err.startswith(f"micro-seg: error: {root}: no supported images found (supported: .tif, ")
    assert err.count("\n") == 1 and not out.exists()
    with pytest.raises(BatchOptionError, match="no supported images found"):
        run_batch(root, out, model=None, process=threshold_process, workers=0)


def test_in_dir_that_is_a_file_says_so(tmp_path, capsys):
    from micro_seg.cli import main

    image = tmp_path / "one.tif"
    image.write_bytes(b"II*\x00")
    code = main(["batch", str(image), str(tmp_path / "out"), "--model", "grain-boundaries"])
    err = capsys.readouterr().err
    assert code == 2 and "IN_DIR is a file" in err and "micro-seg analyze" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
