"""Inference speed and memory of micro-seg's networks vs smp Unet(resnet18).

Measured side by side in one process (runs interleaved round-robin, so a
change in machine load hits every network alike; medians quoted):

* the machine's fp32 matmul peak (``torch.matmul`` of 2048 x 2048 matrices);
* per network: GFLOP per megapixel (``FlopCounterMode``), forward-pass
  megapixels/s on a 1024 x 1024 image, fraction of the matmul peak reached,
  speed-up over smp Unet(resnet18);
* the whole pipeline (``micro_seg.inference.predict``: normalisation, tiles,
  softmax, blending, labels, uncertainty) on 1024 x 1024, also for an
  ensemble of two msnet in the default (channels-last) and contiguous layouts;
* peak RSS of segmenting a 16k x 16k image in a fresh subprocess (the same
  path ``micro-seg segment`` takes for a grain model: only the boundary
  probability kept).

Usage::

    python benchmarks/bench_inference.py                 # all, 2 threads
    python benchmarks/bench_inference.py --skip-huge --runs 3
    python benchmarks/bench_inference.py --record        # also write benchmarks/RESULTS.md

Targets (issue 4): the default grain model >= 4x faster than smp
Unet(resnet18) on 1024 x 1024 and >= 2 MP/s on 2 cores; 16k x 16k with peak
RSS < 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import write_section  # noqa: E402  (benchmarks/ is the script folder)

HEADING = "## Inference speed and memory (benchmarks/bench_inference.py)"

#: (label, arch, arch_kwargs, channels_last)
NETWORKS = [
    ("smp Unet(resnet18)", "smp-unet-resnet18", {}, False),
    ("smp Unet(resnet18) channels-last", "smp-unet-resnet18", {}, True),
    ("msnet-s", "msnet-s", {}, True),
    ("msnet (default)", "msnet", {}, True),
    ("msnet (default) contiguous", "msnet", {}, False),
    ("msnet-l", "msnet-l", {}, True),
    ("msnet-l blocks 2", "msnet-l", {"blocks": [2, 2, 2, 2, 2]}, True),
]


def matmul_peak_gflops(runs: int, n: int = 2048) -> float:
    """Median fp32 GFLOP/s of an n x n matmul."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def bench_networks(size: int, runs: int, in_channels: int) -> list[dict]:
    import torch

    from micro_seg.nets import build_network, count_gflops_per_mp

    entries = []
    for label, arch, kwargs, cl in NETWORKS:
        torch.manual_seed(0)
        net = build_network(arch, in_channels=in_channels, num_classes=2, **kwargs).eval()
        gf = count_gflops_per_mp(net, in_channels=in_channels)
        x = torch.randn(1, in_channels, size, size)
        if cl:
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            net(x)  # warm-up (oneDNN primitive creation)
        entries.append({"label": label, "arch": arch, "kwargs": kwargs, "channels_last": cl, "net": net, "x": x,
                        "gflop_per_mp": gf, "params": sum(p.numel() for p in net.parameters()), "times": []})
    with torch.inference_mode():
        for _ in range(runs):
            for e in entries:
                t = time.perf_counter()
                e["net"](e["x"])
                e["times"].append(time.perf_counter() - t)
    mp = size * size / 1e6
    for e in entries:
        e["seconds"] = statistics.median(e["times"])
        e["mp_per_s"] = mp / e["seconds"]
        del e["net"], e["x"]
    return entries


def bench_pipeline(size: int, runs: int, in_channels: int) -> list[dict]:
    """Whole predict() on a size x size uint8 image, one tile, default options (and an ensemble's contiguous run)."""
    import torch

    from micro_seg.inference import predict
    from micro_seg.nets import Ensemble, build_network
    from micro_seg.registry import LoadedModel, ModelCard

    rng = np.random.default_rng(0)
    shape = (size, size) if in_channels == 1 else (size, size, 3)
    img = rng.integers(0, 256, shape, dtype=np.uint8)

    def model(arch: str, members: int = 1) -> LoadedModel:
        torch.manual_seed(0)
        nets = [build_network(arch, in_channels=in_channels, num_classes=2).eval() for _ in range(members)]
        kwargs = {"members": [{"arch": arch, "arch_kwargs": {}}] * members} if members > 1 else {}
        card = ModelCard(name=arch, task="grains", arch="ensemble" if members > 1 else arch, arch_kwargs=kwargs,
                         in_channels=in_channels, classes=["grain", "boundary"], tile_size=size)
        return LoadedModel(card, Ensemble(nets, num_classes=2).eval() if members > 1 else nets[0], None)

    models = []
    # (label, model, predict() options): ensembles (micro-seg models ensemble) run channels-last like msnet itself
    for label, m, opts in (("smp Unet(resnet18)", model("smp-unet-resnet18"), {}),
                           ("msnet (default)", model("msnet"), {}),
                           ("ensemble of 2 msnet", model("msnet", 2), {}),
                           ("ensemble of 2 msnet, contiguous", model("msnet", 2), {"channels_last": False})):
        predict(img, m, **opts)
        models.append({"label": label, "model": m, "opts": opts, "times": []})
    for _ in range(runs):
        for m in models:
            t = time.perf_counter()
            predict(img, m["model"], **m["opts"])
            m["times"].append(time.perf_counter() - t)
    out = []
    for m in models:
        s = statistics.median(m["times"])
        out.append({"label": m["label"], "seconds": s, "mp_per_s": size * size / 1e6 / s})
    return out


def _status_kb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _current_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    return kb / 1024 if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gb(mib: float) -> str:
    """MiB (what /proc and getrusage give, divided by 1024) as decimal GB, the target's unit, and GiB."""
    return f"{mib * 2**20 / 1e9:.2f} GB ({mib / 1024:.2f} GiB)"


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _huge_child(side: int, model_arg: str, in_channels: int, keep: str, uncertainty: bool = True) -> None:
    """Runs in a fresh process: segment a side x side image, print JSON with peak RSS."""
    import torch

    from micro_seg.inference import predict
    from micro_seg.nets import build_network
    from micro_seg.registry import LoadedModel, ModelCard, load_model
    from micro_seg.synth import voronoi_labels
    from micro_seg.synth.render import grain_boundaries

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # a 16k image built from a 1k synthetic grain tile (cheap to make)
    tile = voronoi_labels((1024, 1024), n_grains=400, seed=0, kind="hardcore")
    tile = np.where(grain_boundaries(tile), 60, 200).astype(np.uint8)
    reps = -(-side // 1024)
    img = np.tile(tile, (reps, reps))[:side, :side]
    del tile  # grey, as most micrographs; an RGB model gets it repeated tile by tile
    if model_arg.startswith("random:"):
        arch = model_arg.split(":", 1)[1]
        torch.manual_seed(0)
        card = ModelCard(name=arch, task="grains", arch=arch, in_channels=in_channels,
                         classes=["grain", "boundary"], tile_size=1024)
        model = LoadedModel(card, build_network(arch, in_channels=in_channels, num_classes=2).eval(), None)
    else:
        model = load_model(model_arg)
    keep_probabilities = {"boundary": [1], "all": True, "none": False}[keep]
    import gc

    gc.collect()
    rss_img = _current_rss_mb()
    # reset the peak (VmHWM) so making the test image does not count; Linux only
    reset = _reset_peak_rss()
    t = time.perf_counter()
    pred = predict(img, model, keep_probabilities=keep_probabilities, keep_uncertainty=uncertainty)
    seconds = time.perf_counter() - t
    peak = _peak_rss_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "side": side, "model": model.card.name, "keep": keep, "uncertainty": uncertainty, "seconds": seconds,
        "mp_per_s": side * side / 1e6 / seconds, "peak_rss_mb": peak, "rss_before_image_mb": rss0,
        "rss_with_image_mb": rss_img, "labels_dtype": str(pred.labels.dtype),
        "probabilities": None if pred.probabilities is None else [list(pred.probabilities.shape), str(pred.probabilities.dtype)],
    }))


def bench_huge(side: int, model_arg: str, in_channels: int, keep: str, threads: int, uncertainty: bool = True) -> dict:
    env = dict(os.environ, MICRO_SEG_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--_huge-child", str(side), "--huge-model", model_arg,
           "--in-channels", str(in_channels), "--huge-keep", keep]
    if not uncertainty:
        cmd.append("--huge-no-uncertainty")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"side": side, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(peak: float, nets: list[dict], pipeline: list[dict], huge: list[dict], args: argparse.Namespace) -> str:
    base = next(e for e in nets if e["label"] == "smp Unet(resnet18)")
    rows = []
    for e in nets:
        achieved = e["gflop_per_mp"] * e["mp_per_s"]
        rows.append([e["label"], f"{e['params'] / 1e6:.2f}", f"{e['gflop_per_mp']:.1f}", f"{e['mp_per_s']:.2f}",
                     f"{e['mp_per_s'] / base['mp_per_s']:.1f}x", f"{achieved:.0f}", f"{achieved / peak:.0%}"])
    out = [
        HEADING,
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.processor() or platform.machine()}, "
        f"{args.threads} torch threads, torch {__import__('torch').__version__}; the machine was shared with other "
        f"jobs (load average {os.getloadavg()[0]:.1f} at the end), so absolute figures are pessimistic -- the ratios "
        "come from interleaved runs in one process.",
        "",
        f"fp32 matmul peak (2048^2, median of {args.runs}): **{peak:.0f} GFLOP/s**",
        "",
        f"Forward pass, {args.size}x{args.size}, {args.in_channels} input channel(s), 2 classes, median of {args.runs} "
        "interleaved runs (random weights: speed does not depend on them):",
        "",
        _table(rows, ["network", "params (M)", "GFLOP/MP", "MP/s", "vs Unet(resnet18)", "GFLOP/s", "of matmul peak"]),
        "",
    ]
    if pipeline:
        pb = pipeline[0]
        prow = [[p["label"], f"{p['seconds']:.2f}", f"{p['mp_per_s']:.2f}", f"{p['mp_per_s'] / pb['mp_per_s']:.1f}x"]
                for p in pipeline]
        out += [f"Whole `micro_seg.inference.predict` on a {args.size}x{args.size} uint8 image (normalise, tile, "
                "softmax, blend, labels, uncertainty):", "",
                _table(prow, ["model", "seconds", "MP/s", "vs Unet(resnet18)"]), ""]
    for h in huge:
        if "error" in h:
            out += [f"{h['side']}x{h['side']} image: FAILED: {h['error']}", ""]
            continue
        out += [
            f"{h['side']}x{h['side']} image ({h['side'] ** 2 / 1e6:.0f} MP, model {h['model']}, probabilities kept: "
            f"{h['keep']} -> {h['probabilities']}, uncertainty map: {'yes' if h.get('uncertainty', True) else 'no'}): **peak RSS {_gb(h['peak_rss_mb'])}** "
            f"(input image + Python/torch/model before predict: {_gb(h['rss_with_image_mb'])}), "
            f"{h['seconds']:.0f} s = {h['mp_per_s']:.2f} MP/s end to end.",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--in-channels", type=int, default=3, dest="in_channels")
    p.add_argument("--huge", type=int, default=16384, help="side of the memory test image (0 = skip)")
    p.add_argument("--skip-huge", action="store_true")
    p.add_argument("--huge-model", default="auto", dest="huge_model",
                   help="model for the memory test: a name/folder, 'random:<arch>' or 'auto' (grain-boundaries if shipped)")
    p.add_argument("--huge-keep", default="boundary", dest="huge_keep", choices=("boundary", "all", "none"))
    p.add_argument("--huge-no-uncertainty", action="store_true", dest="huge_no_uncertainty",
                   help="memory test without the uncertainty map (what 'micro-seg segment' does by default)")
    p.add_argument("--record", action="store_true", help="write the section into benchmarks/RESULTS.md")
    p.add_argument("--_huge-child", type=int, dest="huge_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.huge_child:
        _huge_child(args.huge_child, args.huge_model, args.in_channels, args.huge_keep, not args.huge_no_uncertainty)
        return 0

    from micro_seg.inference import configure_threads

    configure_threads(args.threads)  # kept: predict does not reset an explicit choice
    peak = matmul_peak_gflops(args.runs)
    print(f"matmul peak: {peak:.0f} GFLOP/s", flush=True)
    nets = bench_networks(args.size, args.runs, args.in_channels)
    pipeline = bench_pipeline(args.size, max(3, args.runs // 2), args.in_channels)
    huge = []
    if not args.skip_huge and args.huge:
        model_arg = args.huge_model
        if model_arg == "auto":
            from micro_seg.errors import ModelError
            from micro_seg.registry import load_model

            try:
                load_model("grain-boundaries")
                model_arg = "grain-boundaries"
            except ModelError:
                model_arg = "random:msnet"
        huge.append(bench_huge(args.huge, model_arg, args.in_channels, args.huge_keep, args.threads,
                               not args.huge_no_uncertainty))
    text = report(peak, nets, pipeline, huge, args)
    print(text)
    if args.record:
        write_section("bench_inference", text, legacy_heading=HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
