"""Segment one 16k x 16k micrograph end to end with ``micro-seg segment``: time and peak memory.

    python benchmarks/bench_huge_segment.py [--side 16384] [--model grain-boundaries] [--record]

Issue #4 asks that "a 16k x 16k image segments with peak RSS < 3 GB".  This
runs the real command-line tool on a calibrated TIFF (a 1024^2 synthetic
optical grain micrograph tiled 16 x 16: about 100,000 grains) in a child
process -- read, tiled inference, tiled grain post-processing, writing the
calibrated label TIFF -- and reports its wall time and the child's peak
resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, i.e. VmHWM).
``--record`` replaces this script's section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def run(side: int, model: str, threads: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-huge-"))
    image = work / f"grains_{side}.tif"
    make_image(image, side, 0.5)
    cmd = [sys.executable, "-c", "import sys; from micro_seg.cli import main_entry; sys.argv[0] = 'micro-seg'; main_entry()",
           "segment", str(image), "--model", model, "--out",
           str(work / "out"), "--json"]
    env = dict(os.environ, MICRO_SEG_THREADS=str(threads))
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    peak_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    if proc.returncode != 0:
        raise SystemExit(f"micro-seg segment failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout)
    return {"side": side, "model": model, "threads": threads, "seconds": seconds, "peak_rss_bytes": peak_bytes,
            "input_bytes": image.stat().st_size, "result": out, "command": " ".join(["micro-seg", *cmd[3:]])}


def to_markdown(r: dict) -> str:
    res = r["result"]
    n = res.get("n_grains")  # grain models; other tasks report no count
    return "\n".join([
        BEGIN,
        "## Huge micrograph, `micro-seg segment` end to end (`benchmarks/bench_huge_segment.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {r['threads']} torch threads, model "
        f"`{r['model']}`, a {r['side']}x{r['side']} calibrated TIFF ({r['input_bytes'] / 1e6:.0f} MB, synthetic optical grains "
        f"tiled {-(-r['side'] // 1024)} x {-(-r['side'] // 1024)}); read, tiled inference, tiled grain post-processing, calibrated label TIFF written.",
        "",
        "| wall time | peak RSS (child) | grains | MP/s end to end |",
        "|---|---|---|---|",
        f"| {r['seconds']:.0f} s | **{r['peak_rss_bytes'] / 1e9:.2f} GB** ({r['peak_rss_bytes'] / 2**30:.2f} GiB) | {n} | {r['side'] ** 2 / 1e6 / r['seconds']:.2f} |",
        "",
        "Target: peak RSS < 3 GB (GB = 10^9 bytes, GiB = 2^30).",
        END,
    ])


def record(md: str) -> None:
    write_section("bench_huge_segment", md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=16384)
    ap.add_argument("--model", default="grain-boundaries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.side, args.model, args.threads)
    print(json.dumps({k: v for k, v in r.items() if k != "result"}, indent=1))
    print(json.dumps(r["result"])[:2000])
    md = to_markdown(r)
    print(md)
    if args.record:
        record(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
