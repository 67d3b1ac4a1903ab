"""Benchmark micro_seg.measure: speed vs scikit-image and accuracy against known answers.

Usage::

    python benchmarks/bench_measure.py            # full run, updates benchmarks/RESULTS.md
    python benchmarks/bench_measure.py --quick    # 2048 px image, fewer repeats, no file update

What it measures (medians of several runs, same process, same image):

1. Speed: ``measure_grains`` (Jeffries planimetric + Heyn intercepts on every row /
   column / diagonal + Abrams circles per field + field statistics + area / ECD /
   intercept distributions + adjacency + per-grain table) on a 4096 x 4096
   Poisson-Voronoi label image with ~20,000 grains, against scikit-image
   ``regionprops_table`` (label, area, perimeter, centroid, axis lengths,
   eccentricity) on the same image.  Target: < 3 s on 2 cores.
2. Accuracy on the same image: planimetric G vs the exact grain density,
   mean intercept vs (pi/4) sqrt(mean area) (planar Poisson-Voronoi), mean
   number of neighbours vs 6.
3. NIST steel (hand-traced boundaries, 0.2252 um/px) vs the mean of NIST's E112
   intercept CSV (skipped when ../shared is absent).
4. Boolean disks: area fraction vs 1 - exp(-lambda pi r^2) and the coverage of
   the 95 % CI over 200 repeated specimens (5 x 5 fields each).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from micro_seg.measure import (  # noqa: E402
    g_from_grains_per_mm2,
    g_from_intercept,
    measure_grains,
    measure_grains_from_boundaries,
    measure_phases,
)
from micro_seg.synth import boolean_disks, boolean_disks_fraction, voronoi_labels  # noqa: E402

HEADING = "## measure: grain size (E112/E1382/E930), phases (E562), defects"


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_speed(side: int, n_grains: int, repeats: int) -> dict:
    from skimage.measure import regionprops_table

    t0 = time.perf_counter()
    labels = voronoi_labels((side, side), n_grains=n_grains, seed=2026)
    t_gen = time.perf_counter() - t0
    px = 0.5
    t_ms, res = _median_time(lambda: measure_grains(labels, pixel_size_um=px), repeats)
    props = ("label", "area", "perimeter", "centroid", "axis_major_length", "axis_minor_length", "eccentricity")
    t_sk, _ = _median_time(lambda: regionprops_table(labels, properties=props), max(1, repeats // 2))
    t_sk_area, _ = _median_time(lambda: regionprops_table(labels, properties=("label", "area")), max(1, repeats // 2))
    s = res.summary
    area_mm2 = labels.size * (px / 1000) ** 2
    g_exact = g_from_grains_per_mm2(n_grains / area_mm2)
    l_exact_um = math.pi / 4 * math.sqrt(labels.size * px * px / n_grains)
    return {
        "side": side, "n_grains_in_image": int(labels.max()), "t_generate": t_gen, "t_measure": t_ms,
        "t_skimage": t_sk, "t_skimage_area": t_sk_area,
        "G_planimetric": s["G_planimetric"], "G_exact": g_exact,
        "l_um": s["mean_intercept_um"], "l_exact_um": l_exact_um,
        "l_circles_um": s["mean_intercept_circles_um"],
        "G_intercept": s["G_intercept"], "G_intercept_ci95": s["G_intercept_ci95"],
        "G_intercept_exact": g_from_intercept(l_exact_um / 1000), "mean_neighbors": s["mean_neighbors"],
        "n_intersections": s["n_intersections"],
    }


def bench_nist() -> dict | None:
    root = ROOT.parent / "shared" / "datasets" / "nist_gsat"
    img_path = root / "ex_segmentation/optical_etched/ref_steel_micrograph/grain_structures_steel_highlighted.tif"
    if not img_path.is_file():
        return None
    import pandas as pd

    from micro_seg.io import read_micrograph

    px = 0.2252
    mask = read_micrograph(img_path).data == 0
    t0 = time.perf_counter()
    s = measure_grains_from_boundaries(mask, pixel_size_um=px).summary
    t = time.perf_counter() - t0
    e112 = pd.read_csv(root / "ex_grain_intercept/optical_etched/grains_steel_highlighted_distances_e112.csv")
    grid = pd.read_csv(root / "ex_grain_intercept/optical_etched/grains_steel_highlighted_distances_line_grid.csv")
    nist_um = float(e112.iloc[:, 1].mean()) * px
    return {
        "l_um": s["mean_intercept_um"], "l_ci95_um": s["mean_intercept_ci95_um"], "nist_e112_um": nist_um,
        "nist_n": len(e112), "nist_grid_um": float(grid.iloc[:, 1].mean()) * px, "nist_grid_n": len(grid),
        "G_intercept": s["G_intercept"], "G_nist": g_from_intercept(nist_um / 1000),
        "G_planimetric": s["G_planimetric"], "l_circles_um": s["mean_intercept_circles_um"],
        "n_grains": s["n_grains"], "t": t,
    }


def bench_disks(n_rep: int) -> dict:
    radius = 4.0
    lam = -math.log(0.7) / (math.pi * radius**2)
    truth = boolean_disks_fraction(lam, radius)
    side, big = 256, 2048
    cover = cover_pts = done = 0
    px_cov = px_tot = 0.0
    seed = 0
    half_widths = []
    while done < n_rep:
        img = boolean_disks((big, big), intensity=lam, radius=radius, seed=1000 + seed)
        seed += 1
        px_cov += float(img.sum())
        px_tot += img.size
        for k in range((big // side) ** 2):
            if done >= n_rep:
                break
            r0, c0 = divmod(k, big // side)
            s = measure_phases(img[r0 * side:(r0 + 1) * side, c0 * side:(c0 + 1) * side].astype(np.uint8),
                               fields=(5, 5)).summary
            cover += abs(s["field_mean_fractions"]["1"] - truth) <= s["ci95"]["1"]
            pc = s["point_count"]
            cover_pts += abs(pc["fractions"]["1"] - truth) <= pc["ci95"]["1"]
            half_widths.append(s["ci95"]["1"])
            done += 1
    return {"truth": truth, "pooled": px_cov / px_tot, "pooled_px": px_tot, "coverage": cover / n_rep,
            "coverage_points": cover_pts / n_rep, "n_rep": n_rep, "median_ci95": float(np.median(half_widths))}


def _section(sp: dict, nist: dict | None, disks: dict, cmd: str) -> str:
    lines = [
        HEADING,
        "",
        f"Run: `{cmd}` on {platform.node() or 'host'} ({os.cpu_count()} CPUs, shared with other jobs), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Medians of repeated runs in one process.",
        "",
        f"### Speed: {sp['side']} x {sp['side']} Poisson-Voronoi labels, {sp['n_grains_in_image']} grains",
        "",
        "| step | time (s) | ratio vs micro-seg |",
        "|---|---:|---:|",
        f"| micro-seg `measure_grains` (planimetric + Heyn 4 angles on every pixel line + Abrams per field "
        f"+ field stats + distributions + adjacency + per-grain table) | {sp['t_measure']:.2f} | 1.0 |",
        f"| skimage `regionprops_table` (label, area, perimeter, centroid, axis lengths, eccentricity) "
        f"| {sp['t_skimage']:.2f} | {sp['t_skimage'] / sp['t_measure']:.1f}x slower |",
        f"| skimage `regionprops_table` (label, area only) | {sp['t_skimage_area']:.2f} | "
        f"{sp['t_skimage_area'] / sp['t_measure']:.2f}x |",
        "",
        f"Target < 3 s: **{'met' if sp['t_measure'] < 3 else 'NOT met'}** ({sp['t_measure']:.2f} s).",
        "",
        "### Accuracy on known answers",
        "",
        "| check | measured | known | difference |",
        "|---|---:|---:|---:|",
        f"| planimetric G (Jeffries, rectangular field) vs exact grain density | {sp['G_planimetric']:.3f} | "
        f"{sp['G_exact']:.3f} | {sp['G_planimetric'] - sp['G_exact']:+.3f} |",
        f"| mean intercept (Heyn, um) vs (pi/4) sqrt(A) | {sp['l_um']:.4f} | {sp['l_exact_um']:.4f} | "
        f"{100 * (sp['l_um'] / sp['l_exact_um'] - 1):+.2f} % |",
        f"| mean intercept (Abrams circles, um) vs (pi/4) sqrt(A) | {sp['l_circles_um']:.4f} | "
        f"{sp['l_exact_um']:.4f} | {100 * (sp['l_circles_um'] / sp['l_exact_um'] - 1):+.2f} % |",
        f"| G_intercept (+- 95 % CI over fields) | {sp['G_intercept']:.3f} +- {sp['G_intercept_ci95']:.3f} | "
        f"{sp['G_intercept_exact']:.3f} | {sp['G_intercept'] - sp['G_intercept_exact']:+.3f} |",
        f"| mean neighbours of interior grains | {sp['mean_neighbors']:.3f} | 6 | "
        f"{sp['mean_neighbors'] - 6:+.3f} |",
        f"| Boolean disks: pooled area fraction ({disks['pooled_px'] / 1e6:.1f} Mpx) | {disks['pooled']:.4f} | "
        f"{disks['truth']:.4f} | {disks['pooled'] - disks['truth']:+.4f} |",
        f"| Boolean disks: 95 % CI coverage, area fraction, {disks['n_rep']} specimens of 5 x 5 fields "
        f"(median half-width {disks['median_ci95']:.4f}) | {disks['coverage']:.3f} | 0.95 | |",
        f"| Boolean disks: 95 % CI coverage, E562 point count | {disks['coverage_points']:.3f} | 0.95 | |",
    ]
    if nist is not None:
        lines += [
            "",
            "### NIST steel (hand-traced boundaries, 0.2252 um/px)",
            "",
            "| quantity | micro-seg | NIST GSAT | difference |",
            "|---|---:|---:|---:|",
            f"| mean intercept (um), vs mean of NIST's E112 pattern segments ({nist['nist_n']}) | "
            f"{nist['l_um']:.3f} +- {nist['l_ci95_um']:.3f} | {nist['nist_e112_um']:.3f} | "
            f"{100 * (nist['l_um'] / nist['nist_e112_um'] - 1):+.1f} % |",
            f"| G_intercept | {nist['G_intercept']:.2f} | {nist['G_nist']:.2f} | "
            f"{nist['G_intercept'] - nist['G_nist']:+.2f} |",
            f"| mean intercept (um), vs NIST rotated line grid ({nist['nist_grid_n']} segments) | "
            f"{nist['l_um']:.3f} | {nist['nist_grid_um']:.3f} | {100 * (nist['l_um'] / nist['nist_grid_um'] - 1):+.1f} % |",
            f"| Abrams circles mean intercept (um) | {nist['l_circles_um']:.3f} | | |",
            f"| G_planimetric ({nist['n_grains']} grains) | {nist['G_planimetric']:.2f} | | |",
            "",
            "NIST's segments are runs of non-boundary pixels between traced lines (boundary width",
            "excluded, segments <= 2 px dropped, line-end segments dropped); micro-seg puts the boundary",
            "on the centre line of the trace (E112: boundaries have no width), so its intercepts are",
            "longer by about the trace width (~2-3 px). The E112 CSV (127 segments) has a sampling",
            "error of several percent itself.",
        ]
    return "\n".join(lines) + "\n"


def _write_section(path: Path, text: str) -> None:
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    if HEADING in old:
        start = old.index(HEADING)
        nxt = old.find("\n## ", start + len(HEADING))
        new = old[:start] + text + ("\n" + old[nxt + 1:] if nxt != -1 else "")  # keep the blank line before the next
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2048 px, fewer repeats, do not update RESULTS.md")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    side, n = (2048, 5000) if args.quick else (4096, 20000)
    repeats = 3 if args.quick else args.repeats
    sp = bench_speed(side, n, repeats)
    print(f"measure_grains {side}^2 ({sp['n_grains_in_image']} grains): {sp['t_measure']:.2f} s (median of {repeats})")
    print(f"skimage regionprops_table (7 props): {sp['t_skimage']:.2f} s  -> {sp['t_skimage'] / sp['t_measure']:.1f}x")
    print(f"skimage regionprops_table (area):    {sp['t_skimage_area']:.2f} s")
    print(f"G_planimetric {sp['G_planimetric']:.3f} vs exact {sp['G_exact']:.3f}; "
          f"l {sp['l_um']:.4f} vs (pi/4)sqrt(A) {sp['l_exact_um']:.4f} um; neighbours {sp['mean_neighbors']:.3f}")
    nist = bench_nist()
    if nist:
        print(f"NIST steel: l = {nist['l_um']:.3f} um vs NIST E112 CSV {nist['nist_e112_um']:.3f} um "
              f"({100 * (nist['l_um'] / nist['nist_e112_um'] - 1):+.1f} %)")
    disks = bench_disks(60 if args.quick else 200)
    print(f"Boolean disks: pooled A_A {disks['pooled']:.4f} vs {disks['truth']:.4f}; CI coverage "
          f"{disks['coverage']:.3f} (area), {disks['coverage_points']:.3f} (points) over {disks['n_rep']}")
    text = _section(sp, nist, disks, "python benchmarks/bench_measure.py" + (" --quick" if args.quick else ""))
    print()
    print(text)
    if not args.quick:
        _write_section(ROOT / "benchmarks" / "RESULTS.md", text)
        print("updated benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
