"""Benchmark: batch throughput and memory (issue 5).

    python benchmarks/bench_batch.py [--n 200] [--workers 1 2] [--n-small 10000] [--record]

1. ``--n`` synthetic grain micrographs of 1024 x 768 (calibrated TIFFs from
   :func:`micro_seg.synth.grain_micrograph`) processed end to end (read, segment
   with the default grain model, measure, labels + overlay + object table,
   SQLite, exports, report) with 1 and 2 local worker processes: images/s and the
   peak RSS of each worker process (VmHWM, sampled from /proc).  Baseline in the
   same run: a plain loop calling the same per-image function in this process
   (no database, no pool), on the first ``--n-baseline`` images.
2. ``--n-small`` tiny images (64 x 64) in one folder with 2 workers: parent and
   worker RSS sampled every 1000 images; constant memory means flat columns.

Without the shipped ``grain-boundaries`` model, a stand-in with the same
architecture and random weights is used (same compute; the table says so).
Medians are not meaningful for single long runs: each configuration runs once
over many images and the rate is images / wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MARKER = f"MICRO_SEG_BENCH_BATCH_{os.getpid()}"
os.environ[MARKER] = "1"  # inherited by every worker process (forkserver starts later)

import numpy as np  # noqa: E402
from _results import write_section  # noqa: E402  (benchmarks/ is the script folder)

WORK = ROOT / "benchmarks" / "_work" / "batch"


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _marked_pids() -> list[int]:
    """Worker processes of our batches: processes started with our marker in their
    environment whose parent is the multiprocessing forkserver (the batch driver, the
    forkserver itself and the resource tracker are not workers)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        pid = int(d.name)
        try:
            if MARKER.encode() not in (d / "environ").read_bytes():
                continue
        except OSError:
            continue
        ppid = _status_kb(pid, "PPid")
        if ppid and b"forkserver" in _cmdline(ppid):
            out.append(pid)
    return out


def _pss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Peak RSS (VmHWM) of every worker process seen while running, sampled every 0.25 s."""

    def __init__(self) -> None:
        self.peak_kb: dict[int, int] = {}
        self.current_kb: dict[int, int] = {}
        self.peak_pss_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.25)

    def sample(self) -> None:
        current = {}
        for pid in _marked_pids():
            hwm = _status_kb(pid, "VmHWM")
            rss = _status_kb(pid, "VmRSS")
            if hwm:
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm)
            pss = _pss_kb(pid)
            if pss:
                self.peak_pss_kb[pid] = max(self.peak_pss_kb.get(pid, 0), pss)
            if rss:
                current[pid] = rss
        self.current_kb = current

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_images(folder: Path, n: int, shape: tuple[int, int], *, n_grains: int, seed0: int) -> None:
    import tifffile

    from micro_seg.synth import grain_micrograph

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.tif")))
    if have >= n:
        return
    for i in range(have, n):
        s = grain_micrograph(shape, n_grains=n_grains, style="optical", difficulty="easy", seed=seed0 + i,
                             pixel_size_um=0.5)
        res = 1e4 / 0.5
        tifffile.imwrite(folder / f"field_{i:05d}.tif", s.image, resolution=(res, res), resolutionunit="CENTIMETER")


def resolve_model(name: str) -> tuple[str, str]:
    """The model folder to use and a description (shipped model or a same-architecture stand-in)."""
    from micro_seg.errors import ModelError
    from micro_seg.registry import resolve_model as _resolve

    if name == "tiny":
        return tiny_model(), "tiny msnet (widths 4, 8; random weights): the memory test is about the batch machinery"
    try:
        folder = _resolve(name)
        shipped = os.sep not in name
        return str(folder), f"`{name}`" + (" (shipped)" if shipped else "")
    except ModelError:
        pass
    import torch

    from micro_seg.nets import build_network
    from micro_seg.registry import ModelCard, save_model

    folder = WORK / "standin-grain-model"
    if not (folder / "card.yaml").is_file():
        torch.manual_seed(0)
        card = ModelCard(name="standin-grains", task="grains", arch="msnet", in_channels=1,
                         classes=["grain", "boundary"], tile_size=512)
        net = build_network("msnet", in_channels=1, num_classes=2)
        with torch.no_grad():  # predict "grain" except where the image is dark, so grains exist
            for p in net.parameters():
                p.mul_(0.1)
        save_model(folder, net, card)
    return str(folder), f"stand-in (msnet, random weights; `{name}` not available yet)"


def tiny_model() -> str:
    import torch

    from micro_seg.nets import build_network
    from micro_seg.registry import ModelCard, save_model

    folder = WORK / "tiny-grain-model"
    if not (folder / "card.yaml").is_file():
        torch.manual_seed(0)
        card = ModelCard(name="tiny-grains", task="grains", arch="msnet", arch_kwargs={"widths": [4, 8]},
                         in_channels=1, classes=["grain", "boundary"], tile_size=512)
        net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8])
        with torch.no_grad():  # boundary where the image is dark: closed grains on etched micrographs
            for p in net.parameters():
                p.zero_()
            net.head.bias.copy_(torch.tensor([1.0, -1.0]))
        save_model(folder, net, card)
    return str(folder)


def rate_plain_loop(folder: Path, model: str, n: int) -> float:
    """Images/s of a plain in-process loop over the same per-image function (no DB, no pool)."""
    import torch

    from micro_seg.batch_worker import BatchConfig, safe_process

    torch.set_num_threads(os.cpu_count() or 1)
    files = sorted(folder.glob("*.tif"))[:n]
    out = Path(tempfile.mkdtemp(prefix="bench-plain-"))
    cfg = BatchConfig(in_dir=str(folder), out_dir=str(out), model=model)
    safe_process(str(files[0]), cfg)  # warm-up (model load)
    t0 = time.perf_counter()
    for f in files:
        r = safe_process(str(f), cfg)
        if r.status != "ok":
            print(f"  plain loop: {f.name}: {r.error}")
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return len(files) / dt


def run_batch_config(folder: Path, model: str, workers: int, *, progress=None, max_tasks_per_child=100):
    from micro_seg.batch import run_batch

    out = Path(tempfile.mkdtemp(prefix=f"bench-batch-{workers}w-"))
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        s = run_batch(folder, out, model=model, workers=workers, progress=progress,
                      max_tasks_per_child=max_tasks_per_child)
        dt = time.perf_counter() - t0
        sampler.sample()
    db_mb = (out / "results.sqlite").stat().st_size / 1e6
    shutil.rmtree(out, ignore_errors=True)
    return s, dt, sampler, db_mb


def report_demo(model: str, *, screenshot: Path | None) -> Path:
    """A realistic demo batch (three specimens of synthetic fields, real sample micrographs,
    a corrupt file) and a headless-Chromium screenshot of its report."""
    import subprocess

    import tifffile

    from micro_seg.batch import run_batch
    from micro_seg.resources import sample_images_dir
    from micro_seg.synth import grain_micrograph

    src = WORK / "demo_in"
    if src.exists():
        shutil.rmtree(src)
    for spec, n_grains in (("plate_A", 120), ("plate_B", 220), ("plate_C", 400)):
        for i in range(5):
            g = grain_micrograph((512, 512), n_grains=n_grains, style="optical", difficulty="easy",
                                 seed=7000 + 10 * n_grains + i, pixel_size_um=0.5)
            (src / spec).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(src / spec / f"field_{i + 1:02d}.tif", g.image, resolution=(2e4, 2e4),
                             resolutionunit="CENTIMETER")
    samples = sample_images_dir()
    (src / "samples").mkdir(parents=True, exist_ok=True)
    for name in ("nist_steel_ferrite_crop.tif", "synthetic_etched_twins.tif"):
        if (samples / name).is_file():
            shutil.copy(samples / name, src / "samples" / name)
    (src / "plate_C" / "field_06.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # a truncated TIFF
    out = WORK / "demo_out"
    if out.exists():
        shutil.rmtree(out)
    s = run_batch(src, out, model=model, workers=2)
    print(f"demo batch: {s.n_ok} ok, {s.n_failed} failed -> {s.report}")
    if screenshot is not None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={screenshot}",
                            "--window-size=1280,1600", "--hide-scrollbars", f"file://{s.report}"],
                           check=True, capture_output=True, timeout=180)
            print(f"screenshot: {screenshot}")
    return s.report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-baseline", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n-small", type=int, default=10000)
    ap.add_argument("--model", default="grain-boundaries")
    ap.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    ap.add_argument("--parts", nargs="+", choices=("big", "small"), default=["big", "small"],
                    help="which parts to run (default both)")
    ap.add_argument("--small-workers", type=int, default=2)
    ap.add_argument("--small-model", default=None,
                    help="model for the many-small-images memory part (default: --model; 'tiny' = a tiny msnet)")
    ap.add_argument("--nice", type=int, default=0, help="lower this process's (and its workers') CPU priority")
    ap.add_argument("--demo-report", action="store_true",
                    help="only run the demo batch and screenshot its report to docs/report_example.png")
    args = ap.parse_args(argv)

    from micro_seg import __version__

    if args.nice:
        os.nice(args.nice)
    model, model_text = resolve_model(args.model)
    if args.demo_report:
        report_demo(model, screenshot=ROOT / "docs" / "report_example.png")
        return 0
    lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["python benchmarks/bench_batch.py"] + (argv if argv is not None else sys.argv[1:]))
    emit(f"Run: `{cmd}` on {platform.node()} "
         f"({os.cpu_count()} CPUs, shared with other jobs and a model-training run), {now}, micro-seg {__version__}. "
         f"Model: {model_text}.")
    emit()

    header = list(lines)
    for part, fn in (("big", run_big), ("small", run_small)):
        if part in args.parts and (part == "big" or args.n_small):
            del lines[len(header):]
            fn(args, model, emit)
            WORK.mkdir(parents=True, exist_ok=True)
            (WORK / f"results_{part}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.record:
        record()
    return 0


def run_big(args, model: str, emit) -> None:
    big = WORK / "in_1024x768"
    t0 = time.perf_counter()
    make_images(big, args.n, (768, 1024), n_grains=600, seed0=0)
    print(f"(inputs ready in {time.perf_counter() - t0:.0f} s)")
    if len(list(big.glob("*.tif"))) > args.n:  # an earlier, larger run: use a fresh folder of exactly n
        sub = WORK / f"in_1024x768_{args.n}"
        if not sub.exists():
            sub.mkdir()
            for f in sorted(big.glob("*.tif"))[: args.n]:
                os.link(f, sub / f.name)
        big = sub

    base = rate_plain_loop(big, model, min(args.n_baseline, args.n))
    emit(f"### Throughput: {args.n} images of 1024 x 768 (uint8, ~600 grains each), end to end")
    emit()
    emit("| configuration | images/s | ratio vs plain loop | peak RSS per worker (MiB) | failed |")
    emit("|---|---:|---:|---:|---:|")
    emit(f"| plain in-process loop, {os.cpu_count()} torch threads, first {min(args.n_baseline, args.n)} images "
         f"(no DB / pool / exports) | {base:.2f} | 1.00 | | |")
    for w in args.workers:
        s, dt, sampler, db_mb = run_batch_config(big, model, w)
        peaks = sorted(v / 1024 for v in sampler.peak_kb.values())
        peak = f"{max(peaks):.0f} (median {np.median(peaks):.0f}, {len(peaks)} processes)" if peaks else "n/a"
        rate = s.n_images / dt
        emit(f"| `run_batch`, {w} worker process(es), torch threads {max(1, (os.cpu_count() or 1) // w)} each "
             f"(incl. start-up, SQLite, CSV/Parquet/report) | {rate:.2f} | {rate / base:.2f} | {peak} | {s.n_failed} |")
    emit()


_DRIVER = """
import os, sys, time
sys.path.insert(0, {root!r})
from micro_seg.batch import run_batch

def rss_kb(key='VmRSS:'):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1])

def progress(done, total, path, status):
    if done and (done % 1000 == 0 or done == total):
        print('PROGRESS', done, rss_kb(), flush=True)

t0 = time.perf_counter()
s = run_batch({src!r}, {out!r}, model={model!r}, workers={workers}, progress=progress)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
print('DONE', s.n_images, s.n_failed, time.perf_counter() - t0, rss_kb('VmHWM:'), rss_kb(), flush=True)
"""


def run_small(args, model: str, emit) -> None:
    """Many small images: the batch driver runs in its own process (a clean measure of its
    memory); the workers (children of its forkserver) are sampled from /proc."""
    import subprocess

    if args.small_model:
        model, text = resolve_model(args.small_model)
        emit(f"Model for this part: {text}.")
        emit()
    small = WORK / f"in_small_{args.n_small}"
    t0 = time.perf_counter()
    make_images(small, args.n_small, (64, 64), n_grains=8, seed0=10**6)
    print(f"(small inputs ready in {time.perf_counter() - t0:.0f} s)")
    out = Path(tempfile.mkdtemp(prefix="bench-small-"))
    script = _DRIVER.format(root=str(ROOT), src=str(small), out=str(out), model=model, workers=args.small_workers)
    samples: list[tuple[int, float, float, float]] = []
    with RssSampler() as sm:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, **{MARKER: "1"}))
        done_line = None
        for line in proc.stdout:
            parts = line.split()
            if parts and parts[0] == "PROGRESS":
                sm.sample()
                cur = [v / 1024 for v in sm.current_kb.values()]
                pss = [v / 1024 for v in (_pss_kb(p) for p in sm.current_kb) if v]
                samples.append((int(parts[1]), int(parts[2]) / 1024, max(cur) if cur else float("nan"),
                                max(pss) if pss else float("nan")))
            elif parts and parts[0] == "DONE":
                done_line = parts
        proc.wait()
    db_mb = (out / "results.sqlite").stat().st_size / 1e6
    emit(f"### Memory over a {args.n_small}-image folder (64 x 64 each, {args.small_workers} worker(s), "
         "max_tasks_per_child=100)")
    emit()
    emit("The batch driver (discovery, SQLite, exports) runs in its own process; workers are replaced every "
         "100 images. Worker RSS counts the pages shared with the forkserver (torch's import alone is ~690 MiB "
         "RSS with this CUDA build of torch); PSS splits shared pages between the processes that use them.")
    emit()
    emit("| images done | driver RSS (MiB) | largest worker RSS (MiB) | largest worker PSS (MiB) |")
    emit("|---:|---:|---:|---:|")
    for done, driver, worker, pss in samples:
        emit(f"| {done} | {driver:.0f} | {worker:.0f} | {pss:.0f} |")
    emit()
    peaks = [v / 1024 for v in sm.peak_kb.values()]
    if done_line:
        n_images, n_failed, dt, maxrss_kb, end_rss_kb = done_line[1:6]
        emit(f"{n_images} images in {float(dt):.0f} s ({int(n_images) / float(dt):.1f} images/s), {n_failed} failed; "
             f"peak RSS of any worker process {max(peaks):.0f} MiB over {len(peaks)} worker processes; driver peak "
             f"RSS {int(maxrss_kb) / 1024:.0f} MiB (incl. the final exports and report), results.sqlite {db_mb:.0f} MB.")
    else:
        emit(f"driver failed (exit {proc.returncode})")
    emit()
    shutil.rmtree(out, ignore_errors=True)


def record() -> None:
    """Write the latest output of each part (big, small) as this benchmark's section of RESULTS.md."""
    parts = [(WORK / f"results_{p}.md").read_text(encoding="utf-8") for p in ("big", "small")
             if (WORK / f"results_{p}.md").is_file()]
    head = "## batch: folders end to end (issue 5)"
    write_section("bench_batch", head + "\n\n" + "\n".join(parts), legacy_heading=head)


if __name__ == "__main__":
    sys.exit(main())
