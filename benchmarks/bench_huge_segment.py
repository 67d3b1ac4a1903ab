"""Segment (and analyze) one 16k x 16k micrograph end to end with the CLI: time and peak memory.

    python benchmarks/bench_huge_segment.py [--side 16384] [--model grain-boundaries]
                                            [--commands segment,analyze] [--record]

Issue #4 asks that "a 16k x 16k image segments with peak RSS < 3 GB".  This
runs the real command-line tool on a calibrated TIFF (a 1024^2 synthetic
optical grain micrograph tiled 16 x 16: about 100,000 grains), each command in
its own child process: ``segment`` (read, tiled inference, tiled grain
post-processing, writing the calibrated label TIFF) and ``analyze`` (the same
segmentation, then the grain measurement: ASTM E112 / E1382 intercepts,
planimetric count, per-grain table), and reports each one's wall time and peak
resident memory (the child's ``ru_maxrss``, i.e. VmHWM).  ``--record``
replaces this script's section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from _results import markers, write_section  # noqa: E402  (benchmarks/ is the script folder)

BEGIN, END = markers("bench_huge_segment")


def make_image(path: Path, side: int, pixel_size_um: float) -> None:
    import tifffile

    from micro_seg.synth import grain_micrograph

    tile = grain_micrograph((1024, 1024), n_grains=400, style="optical", difficulty="easy", seed=0,
                            pixel_size_um=pixel_size_um).image
    reps = -(-side // 1024)
    img = np.tile(tile, (reps, reps) + (1,) * (tile.ndim - 2))[:side, :side]
    res = 1e4 / pixel_size_um
    tifffile.imwrite(path, img, resolution=(res, res), resolutionunit="CENTIMETER")


COMMANDS = ("segment", "analyze")


def _peak_of_child(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run ``cmd``; its wall time and its own peak RSS (``os.wait4`` gives that child's rusage: the parent's
    ``RUSAGE_CHILDREN`` would be the maximum over every child so far)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, child.returncode, out.read().decode(), err.read().decode())
    return done, seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def run(side: int, model: str, threads: int, commands: tuple[str, ...] = ("segment",)) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-huge-"))
    image = work / f"grains_{side}.tif"
    make_image(image, side, 0.5)
    env = dict(os.environ, MICRO_SEG_THREADS=str(threads))
    rows = {}
    for command in commands:
        cmd = [sys.executable, "-c", "import sys; from micro_seg.cli import main_entry; sys.argv[0] = 'micro-seg'; main_entry()",
               command, str(image), "--model", model, *(["--out", str(work / "out")] if command == "segment" else []),
               "--json"]
        proc, seconds, peak_bytes = _peak_of_child(cmd, env)
        if proc.returncode != 0:
            raise SystemExit(f"micro-seg {command} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        rows[command] = {"seconds": seconds, "peak_rss_bytes": peak_bytes, "result": json.loads(proc.stdout),
                         "command": " ".join(["micro-seg", *cmd[3:]])}
    return {"side": side, "model": model, "threads": threads, "input_bytes": image.stat().st_size, "rows": rows}


def _grains(command: str, result: dict):
    """Grain count: ``segment`` reports the instances it labelled, ``analyze`` the grains it measured."""
    if command == "segment":
        return result.get("n_grains")
    return (result.get("grains") or {}).get("n_grains")


def to_markdown(r: dict) -> str:
    lines = []
    for command, row in r["rows"].items():
        peak = row["peak_rss_bytes"]
        lines.append(f"| `{command}` | {row['seconds']:.0f} s | **{peak / 1e9:.2f} GB** ({peak / 2**30:.2f} GiB) | "
                     f"{_grains(command, row['result'])} | {r['side'] ** 2 / 1e6 / row['seconds']:.2f} |")
    return "\n".join([
        BEGIN,
        "## Huge micrograph, `micro-seg segment` / `analyze` end to end (`benchmarks/bench_huge_segment.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {r['threads']} torch threads, model "
        f"`{r['model']}`, a {r['side']}x{r['side']} calibrated TIFF ({r['input_bytes'] / 1e6:.0f} MB, synthetic optical grains "
        f"tiled {-(-r['side'] // 1024)} x {-(-r['side'] // 1024)}). `segment`: read, tiled inference, tiled grain post-processing, "
        "calibrated label TIFF written. `analyze`: the same segmentation, then the grain measurement (E112 / E1382 "
        "intercepts, planimetric count, per-grain table); each command in its own process.",
        "",
        "| command | wall time | peak RSS (child) | grains | MP/s end to end |",
        "|---|---|---|---|---|",
        *lines,
        "",
        "Target (#4): `segment` peak RSS < 3 GB (GB = 10^9 bytes, GiB = 2^30). `analyze` has no target; it is "
        "measured so that users of huge images know what measuring costs.",
        END,
    ])


def record(md: str) -> None:
    write_section("bench_huge_segment", md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=16384)
    ap.add_argument("--model", default="grain-boundaries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, from: " + ", ".join(COMMANDS))
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)
    commands = tuple(c.strip() for c in args.commands.split(",") if c.strip())
    bad = [c for c in commands if c not in COMMANDS]
    if bad or not commands:
        ap.error(f"--commands: choose from {', '.join(COMMANDS)}")
    r = run(args.side, args.model, args.threads, commands)
    for command, row in r["rows"].items():
        print(command, json.dumps({k: v for k, v in row.items() if k != "result"}))
        print(json.dumps(row["result"])[:1000])
    md = to_markdown(r)
    print(md)
    if args.record:
        record(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
