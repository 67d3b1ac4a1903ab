"""The CLI core: exit codes, one-line errors, JSON conversion."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from micro_seg import __version__
from micro_seg.cli import main, to_jsonable


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_usage_error_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_no_command_or_action_is_one_line_on_stderr_exit_2(capsys):
    for argv, words in (([], "no command given"), (["models"], "list, show or ensemble"),
                        (["measure"], "grains, phases or defects")):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and words in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_to_jsonable_handles_numpy_and_nan():
    out = to_jsonable({"a": np.int64(3), "b": np.array([1.5, np.nan]), "c": math.inf})
    assert out == {"a": 3, "b": [1.5, None], "c": None}
    json.dumps(out, allow_nan=False)


def test_python_m_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "micro_seg", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_reader_closing_the_pipe_early_gives_no_traceback():
    """``micro-seg models list --json | head -c 1``: the reader is gone before the JSON is printed."""
    proc = subprocess.Popen([sys.executable, "-m", "micro_seg", "models", "list", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even started: the print meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()


def test_out_of_memory_names_the_input(tmp_path, monkeypatch, capsys):
    """The contract's one line on stderr names the file: "out of memory" alone did not say which image."""
    import micro_seg.io as io

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(io, "read_micrograph", no_memory)
    path = tmp_path / "huge.tif"
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"micro-seg: error: {path}: out of memory (try a smaller image or fewer workers)"



@pytest.mark.parametrize("command", ["qc", "train-classifier"])
def test_out_of_memory_names_the_one_input_of_qc_and_train_classifier(tmp_path, monkeypatch, capsys, command):
    """qc (its inputs) and train-classifier (its data_dir) given one input still printed a bare 'out of memory'."""
    import micro_seg.cli as cli

    def no_memory(args):
        raise MemoryError

    build = cli.build_parser

    def parser_whose_commands_run_out_of_memory():
        parser = build()
        for action in parser._actions:
            for sub in (getattr(action, "choices", None) or {}).values():
                sub.set_defaults(func=no_memory)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_whose_commands_run_out_of_memory)
    target = tmp_path / "one.tif"
    argv = (["qc", str(target), "--spec", str(tmp_path / "spec.yaml")] if command == "qc"
            else ["train-classifier", str(tmp_path), "--out", str(tmp_path / "m")])
    assert main(argv) == 2
    named = target if command == "qc" else tmp_path
    assert capsys.readouterr().err.strip() == f"micro-seg: error: {named}: out of memory (try a smaller image or fewer workers)"
