"""``report.html`` of a batch: one self-contained file (inline CSS, base64 images).

Sections: run summary, provenance (software, model and weights sha256,
parameters, host), specimens with field statistics and 95 % confidence
intervals, distributions (histograms), overlay thumbnails, QC verdicts and
flags, failures, and the per-image table.  Figures are drawn with matplotlib's
object API on the Agg canvas (no pyplot, no GUI backend), thumbnails with Pillow.

Examples
--------
>>> from micro_seg.report import fmt_ci
>>> fmt_ci(8.123, 0.21, 2.6)
'8.12 ± 0.21 (2.6 %RA)'
>>> fmt_ci(1302.08, 4136.1, 317.65)
'1302 ± 4136 (317.6 %RA)'
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from micro_seg import __version__
from micro_seg.batch_worker import atomic_path

__all__ = ["write_report", "fmt_ci", "histogram_png", "thumbnail_data_uri"]

MAX_THUMBNAILS = 24
THUMB_SIDE = 320
MAX_TABLE_ROWS = 1000
MAX_HIST_VALUES = 200_000

_CSS = """
:root { --ink:#1d2733; --muted:#5b6b7c; --line:#dde3ea; --bg:#f5f7fa; --card:#fff; --accent:#1f5fa8;
        --ok:#1e8e3e; --bad:#c5221f; --warn:#b06000; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#16324f; color:#fff; padding:22px 36px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; letter-spacing:.2px; }
header .sub { color:#c8d6e5; font-size:13px; }
main { padding:20px 36px 40px; max-width:1400px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px;
          margin:0 0 18px; }
h2 { font-size:16px; margin:0 0 12px; color:#16324f; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:0 0 18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 18px;
        min-width:150px; }
.card .v { font-size:24px; font-weight:600; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
.card.ok .v { color:var(--ok); } .card.bad .v { color:var(--bad); }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:5px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef2f6; font-weight:600; color:#2c3e50; position:sticky; top:0; }
tr:nth-child(even) td { background:#fafbfc; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.two { display:grid; grid-template-columns:1fr 1fr; gap:0 28px; }
table.kv th { width:190px; background:none; position:static; color:var(--muted); font-weight:500; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.b-ok, .b-pass { background:#e6f4ea; color:var(--ok); } .b-failed, .b-fail { background:#fce8e6; color:var(--bad); }
.b-review, .b-warning { background:#fef7e0; color:var(--warn); } .b-not-run { background:#eef2f6; color:var(--muted); }
.figs { display:flex; flex-wrap:wrap; gap:14px; }
.figs img { border:1px solid var(--line); border-radius:6px; background:#fff; }
.thumbs { display:grid; grid-template-columns:repeat(auto-fill, minmax(230px, 1fr)); gap:12px; }
.thumbs figure { margin:0; border:1px solid var(--line); border-radius:6px; overflow:hidden; background:#fff; }
.thumbs img { width:100%; display:block; }
.thumbs figcaption { padding:6px 8px; font-size:12px; color:var(--muted); }
.thumbs figcaption b { color:var(--ink); font-weight:600; }
.note { color:var(--muted); font-size:12px; margin:8px 0 0; }
details summary { cursor:pointer; color:var(--accent); margin:4px 0 8px; }
.scroll { max-height:520px; overflow:auto; border:1px solid var(--line); border-radius:6px; }
.err { color:var(--bad); } .wn { color:var(--warn); }
"""


def fmt_num(v: Any, digits: int = 4) -> str:
    """Short human form of a number (empty for None/NaN)."""
    if v is None or v == "":
        return ""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if not math.isfinite(x):
        return ""
    if x == int(x) and abs(x) < 1e9 and not isinstance(v, float):
        return str(int(x))
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1e7:  # plain decimals, ``digits`` significant figures
        decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
        return f"{x:.{decimals}f}"
    return f"{x:.{digits}g}"


def fmt_ci(mean: Any, ci: Any, ra: Any = None, *, digits: int = 3) -> str:
    """``mean ± ci (ra %RA)``; the parts that are missing are left out."""
    m = fmt_num(mean, digits)
    if not m:
        return ""
    c = fmt_num(ci, 2)
    out = f"{m} ± {c}" if c else m
    try:
        r = f"{float(ra):.1f}" if ra is not None and math.isfinite(float(ra)) else ""
    except (TypeError, ValueError):
        r = ""
    return f"{out} ({r} %RA)" if r and c else out


def histogram_png(values: Sequence[float], *, title: str, xlabel: str, log: bool = False,
                  bins: int | None = None, width: float = 3.6, height: float = 2.5) -> str:
    """A histogram as a ``data:image/png;base64`` URI (matplotlib Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if log:
        x = x[x > 0]
        log = bool(x.size) and x.max() > 10 * x.min()  # log axis only over more than a decade
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if bins is None:  # about 2 sqrt(n), between 6 and 40
        bins = int(np.clip(2 * np.sqrt(max(x.size, 1)), 6, 40))
    if x.size:
        edges = np.geomspace(x.min(), x.max() * 1.0001, bins + 1) if log and x.min() < x.max() else bins
        ax.hist(x, bins=edges, color="#3b78b7", edgecolor="white", linewidth=0.4)
        if log:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(float(np.mean(x)), color="#c5221f", linewidth=1.2, linestyle="--", label=f"mean {np.mean(x):.3g}")
        ax.legend(fontsize=8, framealpha=0.85, edgecolor="none")
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="#888")
    ax.set_title(f"{title} (n = {x.size})", fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("count", fontsize=9)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_data_uri(path: str | Path, *, side: int = THUMB_SIDE) -> str | None:
    """A downsized JPEG of an image file as a data URI (None if unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=82)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


#: How a report.html starts its generator tag: a batch removes an earlier report only when it carries it.
GENERATOR_MARK = "<meta name='generator' content='micro-seg"


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _badge(v: str) -> str:
    return f'<span class="badge b-{_e(v)}">{_e(v)}</span>' if v else ""


def _strip_path(message: str | None, relpath: str) -> str:
    """Drop a leading ``/abs/path/<relpath>: `` (the image column already names the file)."""
    if not message:
        return ""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.endswith(relpath) else message


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, num_cols: Iterable[int] = ()) -> str:
    nums = set(num_cols)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _object_values(store: Any, run_id: int, key: str) -> list[float]:
    rows = store.query(
        "SELECT json_extract(o.props, ?) FROM objects o JOIN images i ON i.image_id = o.image_id"
        " WHERE i.last_seen_run = ? AND json_extract(o.props, ?) IS NOT NULL LIMIT ?",
        (f"$.{key}", run_id, f"$.{key}", MAX_HIST_VALUES),
    )
    return [r[0] for r in rows if isinstance(r[0], (int, float))]


def _object_keys(store: Any, run_id: int) -> list[str]:
    row = store.query(
        "SELECT o.props FROM objects o JOIN images i ON i.image_id = o.image_id WHERE i.last_seen_run = ? LIMIT 1",
        (run_id,),
    )
    return list(json.loads(row[0][0])) if row else []


_SPECIMEN_QUANTITIES = (
    ("grains_per_mm2", "N_A (grains/mm²)"),
    ("mean_intercept_um", "mean intercept l (µm)"),
    ("mean_area_um2", "mean grain area (µm²)"),
    ("grains_per_px2", "N_A (grains/px²)"),
    ("mean_intercept_px", "mean intercept l (px)"),
    ("defects_area_fraction", "defect area fraction"),
    ("defects_density_per_mm2", "defects per mm²"),
)


_PX_TWINS = {"grains_per_px2": "grains_per_mm2", "mean_intercept_px": "mean_intercept_um"}


def _finite_number(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _specimen_section(specimen_rows: list[dict]) -> str:
    if not specimen_rows:
        return "<p class='note'>No specimen has a finished field.</p>"
    def shown(key: str) -> bool:
        present = [r for r in specimen_rows if _finite_number(r.get(f"{key}_mean"))]
        if not present:
            return False
        twin = _PX_TWINS.get(key)  # pixel-unit twin: only where the physical value is missing
        return twin is None or any(not _finite_number(r.get(f"{twin}_mean")) for r in present)

    quantities = [(k, label) for k, label in _SPECIMEN_QUANTITIES if shown(k)]
    phase_keys = []
    for r in specimen_rows:
        for k in r:
            if k.startswith("phase_fraction_") and k.endswith("_mean"):
                name = k[: -len("_mean")]
                if name not in phase_keys:
                    phase_keys.append(name)
    quantities += [(k, f"fraction {k[len('phase_fraction_'):]}") for k in phase_keys]
    has_gp = any("G_planimetric" in r for r in specimen_rows)
    has_gi = any("G_intercept" in r for r in specimen_rows)
    headers = ["specimen", "fields", "failed"]
    if has_gp:
        headers.append("G planimetric (95% CI)")
    if has_gi:
        headers.append("G intercept (95% CI)")
    headers += [label + " mean ± CI95" for _, label in quantities]
    rows = []
    for r in specimen_rows:
        row = [f"<b>{_e(r['specimen'])}</b>", fmt_num(r["n_fields"]), fmt_num(r["n_failed"])]
        for key, flag in (("G_planimetric", has_gp), ("G_intercept", has_gi)):
            if not flag:
                continue
            g = r.get(key)
            lo, hi = r.get(f"{key}_ci95_low"), r.get(f"{key}_ci95_high")
            cell = f"{g:.1f}" if isinstance(g, float) and math.isfinite(g) else ""
            lo, hi = (v if _finite_number(v) else None for v in (lo, hi))
            if cell and (lo is not None or hi is not None):  # one-sided where the interval reached N_A or l = 0
                span = (f"{float(lo):.1f}, {float(hi):.1f}" if lo is not None and hi is not None
                        else f"≥ {float(lo):.1f}" if lo is not None else f"≤ {float(hi):.1f}")
                cell += f" <span class='note'>[{span}]</span>"
            row.append(cell)
        for k, _ in quantities:
            cell = fmt_ci(r.get(f"{k}_mean"), r.get(f"{k}_ci95"), r.get(f"{k}_ra_percent"))
            n_k = r.get(f"{k}_n")
            if cell and _finite_number(n_k) and int(float(n_k)) < int(r["n_fields"]):
                cell += f" <span class='note'>({int(float(n_k))} of {int(r['n_fields'])} fields)</span>"
            row.append(cell)
        rows.append(row)
    note = ("<p class='note'>Mean over fields ± 95 % confidence half-width t(0.975, n−1)·s/√n and relative "
            "accuracy %RA = 100·CI/mean (ASTM E112 §15, E562, E1382). The specimen's G is computed from the mean "
            "N<sub>A</sub> or the mean intercept, never as the mean of field G values; its interval comes from "
            "the CI of that mean. A CI needs at least two fields. \"k of n fields\" marks a statistic over only the "
            "fields that have a value (a field without any intercept has no mean intercept).</p>")
    return "<div class='scroll'>" + _table(headers, rows, num_cols=range(1, len(headers))) + "</div>" + note


def write_report(path: str | Path, *, store: Any, run_id: int, image_rows: list[dict], specimen_rows: list[dict],
                 out_dir: str | Path, ignored: Sequence[str] = (), warnings: Sequence[str] = ()) -> Path:
    """Write the batch report to ``path`` (atomically) and return the path.

    Parameters
    ----------
    path : str or Path
        Output HTML file.
    store : micro_seg.store.ResultsStore
        The open results database (provenance, flags, object values).
    run_id : int
        The run being reported (its images are the current input set).
    image_rows, specimen_rows : list of dict
        Rows of ``images.csv`` and ``specimens.csv``.
    out_dir : str or Path
        Batch output folder (overlay files are found relative to it).
    ignored : sequence of str
        Files / folders left out by ``--exclude`` or ``.micro-seg-ignore`` (listed).
    warnings : sequence of str
        What the run warned about (folders not followed, failures not retried...), listed as the CLI prints them.
    """
    out_dir = Path(out_dir)
    run = next((r for r in store.runs() if r["run_id"] == run_id), {})
    n = len(image_rows)
    n_failed = sum(1 for r in image_rows if r["status"] == "failed")
    n_ok = n - n_failed
    runs_all = store.runs()

    parts: list[str] = []
    title = f"micro-seg batch report — {Path(str(run.get('in_dir', ''))).name or 'batch'}"
    parts.append(f"<header><h1>{_e(title)}</h1><div class='sub'>{_e(run.get('in_dir'))} → {_e(run.get('out_dir'))}"
                 f" · run {run_id} started {_e(run.get('started_utc'))}</div></header><main>")

    qc_counts: dict[str, int] = {}
    for r in image_rows:
        if r["status"] == "ok":
            qc_counts[r.get("qc_verdict") or "not-run"] = qc_counts.get(r.get("qc_verdict") or "not-run", 0) + 1
    cards = [("images", n, ""), ("ok", n_ok, "ok"), ("failed", n_failed, "bad" if n_failed else ""),
             ("specimens", len(specimen_rows), ""),
             ("processed this run", run.get("n_processed") if run.get("n_processed") is not None else "", ""),
             ("resumed (already done)", run.get("n_skipped") if run.get("n_skipped") is not None else "", "")]
    for verdict in ("pass", "review", "fail"):
        if verdict in qc_counts:
            cards.append((f"QC {verdict}", qc_counts[verdict], "ok" if verdict == "pass" else "bad"))
    parts.append("<div class='cards'>" + "".join(
        f"<div class='card {cls}'><div class='v'>{_e(v)}</div><div class='k'>{_e(k)}</div></div>"
        for k, v, cls in cards) + "</div>")

    # provenance
    params = run.get("parameters") or {}
    prov = [
        ("software", f"micro-seg {run.get('software_version', '')}"),
        ("model", run.get("model_name") or ""),
        ("model task", run.get("model_task") or ""),
        ("model weights sha256", f"<code>{_e(run.get('model_sha256') or '')}</code>"),
        ("input folder", _e(run.get("in_dir"))),
        ("output folder", _e(run.get("out_dir"))),
        ("started / finished (UTC)", f"{_e(run.get('started_utc'))} / {_e(run.get('finished_utc') or 'running')}"),
        ("execution", _e(f"dask scheduler {run['scheduler']}" if run.get("scheduler")
                        else ("in-process (no worker processes)" if run.get("workers") == 0
                              else f"{run.get('workers')} local worker process(es)"))),
        ("host / Python", f"{_e(run.get('host'))} / {_e(run.get('python'))}"),
        ("parameters", f"<code>{_e(json.dumps(params, sort_keys=True))}</code>"),
        ("runs in this database", f"{len(runs_all)} (resumed runs process only unfinished or changed images)"),
        ("input integrity", "sha256 of every input is in <code>images.csv</code> and <code>results.sqlite</code>"),
    ]
    raw = ('model weights sha256', 'parameters', 'started / finished (UTC)', 'execution', 'host / Python',
           'input integrity', 'input folder', 'output folder')
    cells = [(k, v if k in raw else _e(v)) for k, v in prov]
    wide = [c for c in cells if c[0] in ("parameters", "model weights sha256")]
    narrow = [c for c in cells if c not in wide]
    half = (len(narrow) + 1) // 2
    cols = "".join("<table class='kv'>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in part)
                   + "</table>" for part in (narrow[:half], narrow[half:]))
    parts.append("<section><h2>Provenance</h2><div class='two'>" + cols + "</div><table class='kv'>" +
                 "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in wide) + "</table></section>")

    parts.append("<section><h2>Specimens — field statistics</h2>" + _specimen_section(specimen_rows) + "</section>")

    # distributions
    figs = []
    ok_rows = [r for r in image_rows if r["status"] == "ok"]
    for key, label, log in (("G_planimetric", "G (planimetric) per field", False),
                            ("G_intercept", "G (intercept) per field", False),
                            ("mean_intercept_um", "mean intercept per field (µm)", True)):
        vals = [r.get(key) for r in ok_rows if isinstance(r.get(key), (int, float))]
        if vals:
            figs.append(histogram_png(vals, title=label, xlabel=label, log=log))
    phase_cols = [k for k in (ok_rows[0] if ok_rows else {}) if k.startswith("phase_fraction_")]
    for k in phase_cols[:3]:
        vals = [r.get(k) for r in ok_rows if isinstance(r.get(k), (int, float))]
        figs.append(histogram_png(vals, title=k.replace("_", " "), xlabel="area fraction per field"))
    obj_keys = _object_keys(store, run_id)
    for key, label in (("area_um2", "object area (µm²)"), ("ecd_um", "equivalent circle diameter (µm)"),
                       ("area_px", "object area (px)"), ("ecd_px", "equivalent circle diameter (px)")):
        if key.endswith("_px") and key.replace("_px", "_um2" if key.startswith("area") else "_um") in obj_keys:
            continue  # calibrated: the physical-unit histogram is shown instead
        if key in obj_keys:
            figs.append(histogram_png(_object_values(store, run_id, key), title=label, xlabel=label, log=True))
        if len(figs) >= 6:
            break
    if figs:
        parts.append("<section><h2>Distributions</h2><div class='figs'>" +
                     "".join(f"<img alt='histogram' src='{u}' width='360'>" for u in figs) + "</div></section>")

    # thumbnails: spread over specimens
    by_spec: dict[str, list[dict]] = {}
    for r in ok_rows:
        if r.get("overlay"):
            by_spec.setdefault(r.get("specimen") or "", []).append(r)
    chosen: list[dict] = []
    while len(chosen) < MAX_THUMBNAILS and any(by_spec.values()):
        for spec in sorted(by_spec):
            if by_spec[spec] and len(chosen) < MAX_THUMBNAILS:
                chosen.append(by_spec[spec].pop(0))
    thumbs = []
    for r in sorted(chosen, key=lambda r: r["path"]):
        uri = thumbnail_data_uri(out_dir / r["overlay"])
        if uri is None:
            continue
        key_val = ""
        # the headline G (E112 intercept, the one QC specs judge) beside the QC badge; planimetric where it is missing
        g = "G_intercept" if _finite_number(r.get("G_intercept")) else "G_planimetric"
        for key, label in ((g, f"G ({g[2:]})"), ("n_grains", "grains")):
            if isinstance(r.get(key), (int, float)) and _finite_number(r[key]):
                # G to 0.1 (ASTM E112), as the specimen table gives it
                key_val += f" · {label} {r[key]:.1f}" if key == g else f" · {label} {fmt_num(r[key], 3)}"
        verdict = r.get("qc_verdict") or ""
        thumbs.append(f"<figure><img alt='{_e(r['path'])}' src='{uri}'><figcaption><b>{_e(r['path'])}</b>"
                      f"{_e(key_val)} {_badge(verdict) if verdict not in ('', 'not-run') else ''}"
                      "</figcaption></figure>")
    if thumbs:
        more = len(ok_rows) - len(thumbs)
        parts.append("<section><h2>Overlays</h2><div class='thumbs'>" + "".join(thumbs) + "</div>" +
                     (f"<p class='note'>{more} more overlay(s) in <code>overlays/</code>.</p>" if more > 0 else "") +
                     "</section>")

    # QC and flags
    flags = store.flags(seen_in_run=run_id)
    verdict_text = ", ".join(f"{k}: {v}" for k, v in sorted(qc_counts.items())) or "none"
    qc_html = f"<p>Verdicts — {_e(verdict_text)}.</p>"
    if set(qc_counts) == {"not-run"}:
        qc_html = ("<p class='note'>QC not run (no <code>--spec</code> given): every image's verdict is "
                   "<i>not-run</i>.</p>")
    if flags:
        rows = [[_e(f["relpath"]), _e(f["source"]), _e(f["check_name"]), _badge(f["severity"]), _e(f["value"]),
                 _e(f["limit_value"]), _e(_strip_path(f["message"], f["relpath"]))] for f in flags[:MAX_TABLE_ROWS]]
        qc_html += "<div class='scroll'>" + _table(["image", "source", "check", "severity", "value", "limit",
                                                    "message"], rows) + "</div>"
        if len(flags) > MAX_TABLE_ROWS:
            qc_html += f"<p class='note'>{len(flags) - MAX_TABLE_ROWS} more in results.sqlite (table flags).</p>"
    else:
        qc_html += "<p class='note'>No flags raised.</p>"
    parts.append("<section><h2>QC verdicts and flags</h2>" + qc_html + "</section>")

    # failures
    failed = [r for r in image_rows if r["status"] == "failed"]
    if failed:
        rows = [[_e(r["path"]), f"<span class='err'>{_e(r['error'])}</span>"] for r in failed[:MAX_TABLE_ROWS]]
        shown = (f"<p class='note'>The first {MAX_TABLE_ROWS} are listed; all {len(failed)} in <code>images.csv</code> "
                 "(status failed).</p>" if len(failed) > MAX_TABLE_ROWS else "")
        parts.append(f"<section><h2>Failures ({len(failed)})</h2>" + _table(["image", "error"], rows) + shown +
                     "<p class='note'>Failed images are recorded, not retried unless the file changes "
                     "(errors of other kinds, e.g. a crashed worker, are retried on the next run).</p></section>")
    else:
        parts.append("<section><h2>Failures</h2><p class='note'>None: every image was processed.</p></section>")
    if warnings:
        parts.append(f"<section><h2>Warnings ({len(warnings)})</h2><ul>" +
                     "".join(f"<li class='wn'>{_e(w)}</li>" for w in warnings) + "</ul></section>")
    if ignored:
        listed = ", ".join(f"<code>{_e(p)}</code>" for p in list(ignored)[:50])
        more = f" and {len(ignored) - 50} more" if len(ignored) > 50 else ""
        parts.append(f"<section><h2>Left out on request ({len(ignored)})</h2><p class='note'>Matched an exclude "
                     f"pattern (<code>--exclude</code> or <code>.micro-seg-ignore</code>): {listed}{more}.</p>"
                     "</section>")

    # per-image table
    show = [c for c in ("path", "status", "specimen", "pixel_size_um", "calibration_source", "n_grains",
                        "G_planimetric", "G_intercept", "mean_intercept_um", "ala_G", "qc_verdict")
            if any(c in r for r in image_rows)]
    show += [c for c in (image_rows[0] if image_rows else {}) if c.startswith("phase_fraction_")][:4]
    text_cols = ("path", "specimen", "calibration_source")
    badge_cols = ("status", "qc_verdict")
    rows = []
    for r in image_rows[:MAX_TABLE_ROWS]:
        rows.append([_badge(r.get(c) or "") if c in badge_cols else
                     (_e(r.get(c)) if c in text_cols else fmt_num(r.get(c))) for c in show])
    table = _table(show, rows, num_cols=[i for i, c in enumerate(show) if c not in text_cols + badge_cols])
    every = f"The first {MAX_TABLE_ROWS} images are shown; all {n} rows and all" if n > MAX_TABLE_ROWS else "All"
    parts.append(f"<section><h2>Images ({n})</h2><details{' open' if n <= 40 else ''}><summary>show per-image table"
                 f"</summary><div class='scroll'>{table}</div>"
                 f"</details><p class='note'>{every} columns in <code>images.csv</code>; objects in "
                 f"<code>objects.parquet</code>; everything in <code>results.sqlite</code>.</p></section>")
    parts.append("</main>")

    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"{GENERATOR_MARK} {_e(__version__)}'>"
           "<meta name='viewport' content='width=device-width, initial-scale=1'>"
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>" + "".join(parts) + "</body></html>")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return path
