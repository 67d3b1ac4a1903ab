"""QA fixes: --fields parsing, label sanity warnings, pages, calibration overrides, blank images, E112 range."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from micro_seg.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and "--json" in argv else out), err


def _grid_labels(n_side: int = 8, size: int = 32, boundary: int = 1) -> np.ndarray:
    """``n_side`` x ``n_side`` square grains of ``size`` px, each with a ``boundary``-px 0 line on two sides."""
    r = np.arange(n_side * size) // size
    lab = (r[:, None] * n_side + r[None, :] + 1).astype(np.int32)
    if boundary:
        on = (np.arange(n_side * size) % size) < boundary
        lab[on, :] = 0
        lab[:, on] = 0
    return lab


@pytest.mark.parametrize("fields", ["-1", "0x0", "2x0", "x", "2x-1"])
@pytest.mark.parametrize("command", [["analyze", "{p}", "--model", "grain-boundaries"], ["measure", "grains", "{p}"]])
def test_bad_fields_exit_2_one_line(tmp_path, capsys, command, fields):
    path = tmp_path / "lab.tif"
    tifffile.imwrite(path, _grid_labels().astype(np.uint16))
    argv = [a.format(p=path) for a in command] + ["--fields", fields, "--json"]
    code, _, err = _run(capsys, argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--fields" in lines[0] and fields in lines[0] and "internal" not in lines[0]


def test_analyze_fields_string_parsing():
    from micro_seg.commands.analyze import _fields
    from micro_seg.errors import MicroSegError

    assert _fields("auto") == "auto" and _fields("0") is None and _fields("none") is None and _fields("1") is None
    assert _fields("3x2") == (3, 2) and _fields((3, 2)) == (3, 2) and _fields(None) is None
    with pytest.raises(MicroSegError, match="--fields"):
        _fields("0x4")


def test_fields_0_is_one_field_like_none(tmp_path, capsys):
    path = tmp_path / "lab.tif"
    tifffile.imwrite(path, _grid_labels().astype(np.uint16))
    results = []
    for f in ("0", "none", "1"):
        code, res, err = _run(capsys, ["measure", "grains", str(path), "--pixel-size", "1", "--fields", f, "--json"])
        assert code == 0, err
        results.append(res)
    assert results[0] == results[1] == results[2]
