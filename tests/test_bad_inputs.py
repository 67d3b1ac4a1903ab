"""Bad and odd files: a clear one-line error (exit 2) that names the file, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import data_builders as db
from micro_seg.cli import main
from micro_seg.errors import (
    CalibrationError,
    CorruptFileError,
    ImageTooLargeError,
    InputFileNotFoundError,
    InvalidImageError,
    MicroSegError,
    UnsupportedFormatError,
)
from micro_seg.io import read_micrograph


def _good_png(tmp: Path) -> Path:
    return db.save_pil(tmp / "good.png", db.grain_image((96, 128), seed=1))


def _good_jpeg(tmp: Path) -> Path:
    return db.save_pil(tmp / "good.jpg", db.grain_image((96, 128), seed=2), quality=90)


def _good_tiff(tmp: Path) -> Path:
    tifffile.imwrite(tmp / "good.tif", db.grain_image((96, 128), seed=3))
    return tmp / "good.tif"


def _w(path: Path, content: bytes | str) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _float_tiff(tmp: Path, name: str, values: list[float]) -> Path:
    data = np.ones((32, 32), np.float32)
    data.flat[: len(values)] = values
    tifffile.imwrite(tmp / name, data)
    return tmp / name


def _corrupt_deflate_tiff(tmp: Path) -> Path:
    tifffile.imwrite(tmp / "deflate.tif", db.grain_image((64, 64), seed=4), compression="zlib")
    data = bytearray((tmp / "deflate.tif").read_bytes())
    with tifffile.TiffFile(tmp / "deflate.tif") as tif:
        start = tif.pages[0].dataoffsets[0]
    data[start + 2 : start + 40] = bytes(range(38))  # scramble the deflate stream, keep the length
    return _w(tmp / "deflate.tif", bytes(data))


def _corrupt_png_idat(tmp: Path) -> Path:
    data = bytearray(_good_png(tmp).read_bytes())
    start = data.index(b"IDAT") + 10
    data[start : start + 30] = bytes(30)
    return _w(tmp / "bad_idat.png", bytes(data))


# name -> (builder(tmp) -> path, expected error class, text the message must contain)
CORPUS = {
    "missing": (lambda t: t / "does_not_exist.tif", InputFileNotFoundError, "no such file"),
    "directory": (lambda t: _mkdir(t / "a_folder.tif"), InputFileNotFoundError, "folder"),
    "empty_tif": (lambda t: _w(t / "empty.tif", b""), CorruptFileError, "empty"),
    "empty_png": (lambda t: _w(t / "empty.png", b""), CorruptFileError, "empty"),
    "truncated_tiff": (lambda t: db.truncated(_good_tiff(t), t / "trunc.tif"), CorruptFileError, "truncated"),
    "truncated_tiff_header": (lambda t: db.truncated(_good_tiff(t), t / "trunc_hdr.tif", 0.0005), CorruptFileError, "TIFF"),
    "truncated_png": (lambda t: db.truncated(_good_png(t), t / "trunc.png"), CorruptFileError, "PNG"),
    "truncated_jpeg": (lambda t: db.truncated(_good_jpeg(t), t / "trunc.jpg"), CorruptFileError, "JPEG"),
    "truncated_bmp": (lambda t: db.truncated(db.save_pil(t / "g.bmp", db.grain_image((64, 64))), t / "trunc.bmp"), CorruptFileError, "BMP"),
    "corrupt_deflate_tiff": (_corrupt_deflate_tiff, CorruptFileError, "cannot decode"),
    "corrupt_png_data": (_corrupt_png_idat, CorruptFileError, "PNG"),
    "random_bytes_tif": (
        lambda t: _w(t / "random.tif", np.random.default_rng(0).bytes(4096)),
        CorruptFileError, "not a valid TIFF",
    ),
    "tiff_magic_then_garbage": (
        lambda t: _w(t / "garbage.tif", b"II*\x00" + np.random.default_rng(1).bytes(2000)),
        CorruptFileError, "TIFF",
    ),
    "html_named_jpg": (
        lambda t: _w(t / "page.jpg", "<html><body>404 not found</body></html>"),
        CorruptFileError, "not a valid JPEG",
    ),
    "text_file": (lambda t: _w(t / "notes.txt", "grain size 8.5\n"), UnsupportedFormatError, "not supported"),
    "czi_named": (lambda t: _w(t / "scan.czi", b"ZISRAWFILE" + bytes(100)), UnsupportedFormatError, "CZI"),
    "gif": (lambda t: db.save_pil(t / "anim.gif", np.zeros((8, 8), np.uint8)), UnsupportedFormatError, "GIF"),
    "zero_width_tiff": (lambda t: db.minimal_tiff(t / "zero.tif", width=0, height=5), InvalidImageError, "empty"),
    "z_stack": (
        lambda t: tifffile.imwrite(t / "stack.tif", np.zeros((4, 3, 16, 16), np.uint8), imagej=True,
                                   metadata={"axes": "TZYX"}) or t / "stack.tif",
        InvalidImageError, "axis Z (depth) has 3",
    ),
    "ome_time_series": (
        lambda t: tifffile.imwrite(t / "series.ome.tif", np.zeros((5, 16, 16), np.uint16), ome=True,
                                   metadata={"axes": "TYX"}) or t / "series.ome.tif",
        InvalidImageError, "axis T (time) has 5",
    ),
    "five_channels": (
        lambda t: tifffile.imwrite(t / "five.tif", np.zeros((16, 16, 5), np.uint8), photometric="minisblack",
                                   planarconfig="contig") or t / "five.tif",
        InvalidImageError, "5 channels",
    ),
    "four_channels_not_rgba": (
        lambda t: tifffile.imwrite(t / "four.tif", np.zeros((16, 16, 4), np.uint16), photometric="minisblack",
                                   planarconfig="contig") or t / "four.tif",
        InvalidImageError, "4 channels",
    ),
    "two_channels": (
        lambda t: tifffile.imwrite(t / "two.tif", np.zeros((16, 16, 2), np.uint8), photometric="minisblack",
                                   planarconfig="contig") or t / "two.tif",
        InvalidImageError, "2 channels",
    ),
    "nan_float": (lambda t: _float_tiff(t, "nan.tif", [np.nan, np.nan, 1.0]), InvalidImageError, "2 of 1024 pixels are not finite (2 NaN"),
    "inf_float": (lambda t: _float_tiff(t, "inf.tif", [np.inf, -np.inf, np.nan]), InvalidImageError, "1 NaN, 2 infinite"),
    "complex": (lambda t: tifffile.imwrite(t / "c.tif", np.zeros((8, 8), np.complex64)) or t / "c.tif", InvalidImageError, "complex"),
    "bomb_tiff_header": (lambda t: db.minimal_tiff(t / "bomb.tif", width=100000, height=100000), ImageTooLargeError, "10,000,000,000 pixels"),
    "bomb_png_header": (lambda t: db.png_bomb(t / "bomb.png"), ImageTooLargeError, "3,600,000,000 pixels"),
    "bomb_jpeg_header": (lambda t: db.jpeg_bomb(t / "bomb.jpg"), ImageTooLargeError, "4,225,000,000 pixels"),
    "ome_zero_pixel_size": (lambda t: db.ome_tiff(t / "zero_px.ome.tif", np.zeros((8, 8), np.uint8), size_x=0.0), CalibrationError, "must be positive"),
    "fei_absurd_pixel_size": (lambda t: db.fei_tiff(t / "fei_absurd.tif", np.zeros((8, 8), np.uint8), px_m=5.0), CalibrationError, "(from fei)"),
    "anisotropic_imagej": (
        lambda t: db.imagej_tiff(t / "aniso.tif", np.zeros((8, 8), np.uint8), pixel_size=0.5, y_pixel_size=0.7),
        CalibrationError, "not square",
    ),
    "tiff_strip_beyond_eof": (lambda t: db.minimal_tiff(t / "short.tif", width=64, height=64, data=b"\x00" * 100), CorruptFileError, "truncated"),
}


@pytest.fixture(params=sorted(CORPUS))
def bad_file(request, tmp_path):
    builder, error, text = CORPUS[request.param]
    return builder(tmp_path), error, text


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 15


def test_read_micrograph_raises_the_right_class(bad_file):
    path, error, text = bad_file
    with pytest.raises(error) as info:
        read_micrograph(path)
    message = str(info.value)
    assert isinstance(info.value, MicroSegError)
    assert isinstance(info.value, (ValueError, FileNotFoundError))
    assert str(path) in message
    assert text in message
    assert "\n" not in message


def test_cli_info_exit_2_one_line(bad_file, capsys):
    path, _, _ = bad_file
    code = main(["info", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0]
    assert lines[0].startswith("micro-seg: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e9", "1e-9"])
def test_bad_pixel_size_argument(tmp_path, capsys, value):
    path = _good_tiff(tmp_path)
    code = main(["info", str(path), "--pixel-size", value, "--json"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert str(path) in err and "pixel size" in err and "(from user)" in err


def test_pixel_size_not_a_number_is_a_usage_error(tmp_path, capsys):
    code = main(["info", str(_good_tiff(tmp_path)), "--pixel-size", "abc"])
    err = capsys.readouterr().err
    assert code == 2 and "invalid float value" in err and len(err.strip().splitlines()) == 1


def test_pixel_limit_from_env_and_argument(tmp_path, monkeypatch):
    path = _good_png(tmp_path)  # 96 x 128 = 12,288 pixels
    monkeypatch.setenv("MICRO_SEG_MAX_PIXELS", "10000")
    with pytest.raises(ImageTooLargeError, match="limit of 10,000") as info:
        read_micrograph(path)
    assert "raise the limit with the MICRO_SEG_MAX_PIXELS environment variable" in str(info.value)
    assert read_micrograph(path, max_pixels=20000).shape == (96, 128)  # the argument wins
    monkeypatch.setenv("MICRO_SEG_MAX_PIXELS", "lots")
    with pytest.raises(ImageTooLargeError, match="MICRO_SEG_MAX_PIXELS='lots'"):
        read_micrograph(path)
    monkeypatch.delenv("MICRO_SEG_MAX_PIXELS")
    tif = _good_tiff(tmp_path)
    with pytest.raises(ImageTooLargeError):
        read_micrograph(tif, max_pixels=1000)


def test_image_larger_than_memory_refused_before_decoding(tmp_path, monkeypatch, capsys):
    """The pixel limit counts rows x cols only: a float64 RGB image within it (24 bytes a pixel) was decoded until
    memory ran out ("out of memory", no file named) or the system killed the process; shape x dtype is now checked
    against the computer's memory before decoding."""
    import micro_seg.io as io

    monkeypatch.setattr(io, "_physical_memory", lambda: 500_000)  # a computer of 0.5 MB
    tifffile.imwrite(tmp_path / "f64.tif", np.zeros((100, 100, 3)), photometric="rgb")  # 240 kB
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((200, 200, 3)), photometric="rgb")  # 960 kB
    db.save_pil(tmp_path / "big.png", np.zeros((400, 500, 3), np.uint8))  # 600 kB
    assert read_micrograph(tmp_path / "f64.tif").shape == (100, 100, 3)
    for name, what in (("big.tif", "200 x 200 x 3 float64 image needs 0.96 MB"), ("big.png", "400 x 500 x 3 8-bit")):
        assert main(["info", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert name in err and what in err and "more than the 0.5 MB this computer" in err, err
    monkeypatch.setattr(io, "_physical_memory", lambda: None)  # the system does not say: no check
    assert read_micrograph(tmp_path / "big.tif").shape == (200, 200, 3)


def _fake_cgroups(tmp_path, monkeypatch, proc_lines, files):
    import micro_seg.io as io

    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "self_cgroup").write_text("\n".join(proc_lines) + "\n")
    monkeypatch.setattr(io, "_CGROUP_ROOT", str(root))
    monkeypatch.setattr(io, "_PROC_SELF_CGROUP", str(tmp_path / "self_cgroup"))
    return io


def test_memory_check_uses_a_containers_cgroup_limit(tmp_path, monkeypatch, capsys):
    """In a container (Docker --memory, a Slurm job, a systemd slice) the process may use far less than the
    computer's physical memory: an image that fits the computer but not the container was decoded until the kernel
    killed the process, with no message. The smallest limit of the process's cgroup and its parents now counts."""
    # cgroup v2: the job's own group says max, its parent 1 MB
    io = _fake_cgroups(tmp_path, monkeypatch, ["0::/jobs/job7"],
                       {"jobs/memory.max": "1000000\n", "jobs/job7/memory.max": "max\n", "memory.max": "max\n"})
    assert io._cgroup_memory_limit() == 1_000_000
    assert io._physical_memory() == 1_000_000
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((200, 300, 3)), photometric="rgb")  # 1.44 MB as float64
    assert main(["info", str(tmp_path / "big.tif")]) == 2
    err = capsys.readouterr().err
    assert "big.tif" in err and "needs 1.44 MB" in err and "more than the 1 MB this computer (or its container" in err
    # cgroup v1: the memory controller's own limit; v1's "no limit" (about 2**63) is not a limit
    io = _fake_cgroups(tmp_path, monkeypatch, ["4:memory:/docker/abc", "3:cpu:/docker/abc"],
                       {"memory/docker/abc/memory.limit_in_bytes": "2000000\n",
                        "memory/memory.limit_in_bytes": "9223372036854771712\n"})
    assert io._cgroup_memory_limit() == 2_000_000
    io = _fake_cgroups(tmp_path, monkeypatch, ["4:memory:/x"], {"memory/x/memory.limit_in_bytes": "9223372036854771712"})
    assert io._cgroup_memory_limit() is None
    assert io._physical_memory() > 2 ** 20  # the computer's own memory again
    monkeypatch.setattr(io, "_PROC_SELF_CGROUP", str(tmp_path / "missing"))  # no cgroups (macOS, Windows)
    assert io._cgroup_memory_limit() is None


@pytest.mark.parametrize("pages", [-1, 0])
def test_memory_check_skipped_where_sysconf_cannot_tell(tmp_path, monkeypatch, pages):
    """sysconf answers -1 where the amount is indeterminate: that made a negative 'physical memory', and every
    image, however small, was refused as needing more memory than the computer has."""
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: pages if name == "SC_PHYS_PAGES" else real(name))
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((10, 10), np.uint8))
    assert read_micrograph(tmp_path / "small.tif").shape == (10, 10)


def test_pillow_global_limit_is_restored_and_not_ours(tmp_path):
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError):
        read_micrograph(db.png_bomb(tmp_path / "b.png"))
    assert Image.MAX_IMAGE_PIXELS == before
    # Pillow's own guard would refuse 200 Mpx; ours allows it when raised (header check only here)
    path = db.png_bomb(tmp_path / "big.png", width=20000, height=10000)
    with pytest.raises(CorruptFileError):  # passes the size check, then the tiny data fails to decode
        read_micrograph(path)


def test_page_out_of_range(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(InvalidImageError, match="page 5 requested but the file has 3 page"):
        read_micrograph(tmp_path / "m.tif", page=5)


def test_z_stack_plane_can_be_chosen(tmp_path):
    stack = np.arange(4 * 3 * 16 * 16, dtype=np.uint16).reshape(4, 3, 16, 16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "TZYX"})
    m = read_micrograph(tmp_path / "stack.tif", page=4)  # T=1, Z=1
    np.testing.assert_array_equal(m.data, stack[1, 1])
    assert m.meta["n_pages"] == 12


@pytest.mark.slow
def test_no_traceback_in_a_real_process(tmp_path):
    path = db.truncated(_good_png(tmp_path), tmp_path / "cut.png")
    proc = subprocess.run([sys.executable, "-m", "micro_seg", "info", str(path), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(path) in proc.stderr


def test_tifffile_log_messages_do_not_reach_stderr(tmp_path, capsys):
    # a shaped-series description that contradicts the page makes tifffile log an error
    data = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "odd.tif", data, description='{"shape": [3, 5, 5]}', metadata=None)
    code = main(["info", str(tmp_path / "odd.tif"), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == ""
