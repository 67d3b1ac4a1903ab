"""ONNX Runtime vs torch for the shipped grain model (``predict(..., backend="onnx")``).

Measured side by side in one process (runs interleaved round-robin, so a
change in machine load hits both backends alike; medians quoted), on a
synthetic 1024 x 1024 optical grain micrograph
(:func:`micro_seg.synth.grain_micrograph`) with 2 threads:

* forward pass of the fused network (BatchNorm folded, as ``predict`` runs
  it): torch channels-last (the torch backend's layout for msnet) vs an ONNX
  Runtime session (intra-op threads = torch's, inter-op 1), on the
  normalised image as one 1 x 1 x 1024 x 1024 tensor;
* the whole pipeline (``micro_seg.inference.predict``: normalisation, tiles,
  softmax, blending, labels, uncertainty) with ``backend="torch"`` and
  ``backend="onnx"``;
* the largest probability difference between the backends and the fraction
  of pixels whose label differs.

The ONNX session is built (exported in memory) once before timing, as
``predict`` caches it per network.

Usage::

    python benchmarks/bench_onnx.py                      # 2 threads, 7 runs
    python benchmarks/bench_onnx.py --runs 5 --model grain-boundaries
    python benchmarks/bench_onnx.py --record             # also write benchmarks/RESULTS.md

Needs ``pip install "micro-seg[onnx]"`` (onnxruntime and onnx).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import markers, write_section  # noqa: E402  (benchmarks/ is the script folder)

SECTION = "bench_onnx"
HEADING = "## ONNX Runtime backend (benchmarks/bench_onnx.py)"


def _median_interleaved(fns: dict, runs: int) -> dict[str, float]:
    """Median seconds of each callable, runs interleaved round-robin after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(model_name: str, size: int, runs: int) -> dict:
    import torch

    from micro_seg.inference import _fused_network, _onnx_network, predict
    from micro_seg.nets import required_stride
    from micro_seg.preprocess import normalisation_stats, to_network_input
    from micro_seg.registry import load_model
    from micro_seg.synth import grain_micrograph

    model = load_model(model_name)
    card, net = model.card, model.network
    image = grain_micrograph((size, size), n_grains=400, style="optical", difficulty="medium", seed=0).image
    stats = normalisation_stats(image, in_channels=card.in_channels, normalisation=card.normalisation)
    x = torch.from_numpy(np.ascontiguousarray(to_network_input(image, in_channels=card.in_channels, stats=stats)[None]))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fused = _fused_network(net, True)
    t = time.perf_counter()
    ort_net = _onnx_network(net, in_channels=card.in_channels, stride=required_stride(net), name=card.name)
    build_s = time.perf_counter() - t

    with torch.inference_mode():
        fwd = _median_interleaved({"torch": lambda: fused(x_cl), "onnx": lambda: ort_net(x)}, runs)
        fwd_diff = float((torch.softmax(fused(x_cl), 1) - torch.softmax(ort_net(x), 1)).abs().max())
    opts = {"tile_size": size}  # one tile, as the default tile size gives for 1024 x 1024
    pipe = _median_interleaved({"torch": lambda: predict(image, model, **opts),
                                "onnx": lambda: predict(image, model, backend="onnx", **opts)}, runs)
    a = predict(image, model, **opts)
    b = predict(image, model, backend="onnx", **opts)
    return {
        "model": card.name, "size": size, "runs": runs, "build_s": build_s,
        "forward": fwd, "pipeline": pipe, "forward_prob_diff": fwd_diff,
        "predict_prob_diff": float(np.abs(a.probabilities - b.probabilities).max()),
        "label_diff": float((a.labels != b.labels).mean()),
    }


def report(r: dict, threads: int) -> str:
    import onnxruntime
    import torch

    mp = r["size"] ** 2 / 1e6
    begin, end = markers(SECTION)
    lines = [
        begin,
        HEADING,
        "",
        f"Model `{r['model']}` on a synthetic {r['size']} x {r['size']} optical grain micrograph, {threads} threads, "
        f"median of {r['runs']} interleaved runs. torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}.",
        "",
        "| step | torch (s) | onnx (s) | torch / onnx | torch MP/s | onnx MP/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in (("forward pass (torch channels-last)", "forward"), ("whole `predict`", "pipeline")):
        t, o = r[key]["torch"], r[key]["onnx"]
        lines.append(f"| {label} | {t:.3f} | {o:.3f} | {t / o:.2f} | {mp / t:.2f} | {mp / o:.2f} |")
    lines += [
        "",
        f"Max probability difference: forward {r['forward_prob_diff']:.1e}, `predict` {r['predict_prob_diff']:.1e}; "
        f"labels differ in {100 * r['label_diff']:.4f} % of pixels. "
        f"Building the ONNX session (in-memory export, once per model): {r['build_s']:.2f} s.",
        end,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="timed runs per backend (median; at least 5 recommended)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--model", default="grain-boundaries", help="model name or folder")
    p.add_argument("--record", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = p.parse_args(argv)

    from micro_seg.inference import configure_threads

    configure_threads(args.threads)  # kept: predict does not reset an explicit choice
    r = bench(args.model, args.size, args.runs)
    text = report(r, args.threads)
    print(text)
    if args.record:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
