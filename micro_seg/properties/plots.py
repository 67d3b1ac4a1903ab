"""Plots of structure -> property relations (PNG), without pyplot or any GUI backend.

Examples
--------
>>> plot_hall_petch(result, "hall_petch.png")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["hall_petch_figure", "plot_hall_petch", "structure_vs_processing_figure", "predicted_vs_measured_figure",
           "processing_columns", "write_all_plots", "save_figure"]


def _figure(size=(6.0, 4.2)):
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=110, layout="constrained")


def save_figure(fig, path: str | Path) -> Path:
    """Write a figure to PNG atomically (temporary file + rename)."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:  # a failed write or rename (the target is a folder) leaves no temporary file behind
        tmp.unlink(missing_ok=True)
    return path


def hall_petch_figure(link_result, *, fig=None):
    """Property vs d^-1/2 with the fit, its 95% confidence band and the 95% prediction band."""
    from micro_seg.properties.hall_petch import HallPetchFit, hall_petch_x

    fit = link_result.fit
    samples = link_result.samples
    fig = fig or _figure()
    ax = fig.add_subplot(1, 1, 1)
    y = samples[link_result.property_column].to_numpy(dtype=float)
    if isinstance(fit, HallPetchFit):
        d = samples[fit.d].to_numpy(dtype=float)
        x = hall_petch_x(d)
        xerr = None
        grid_d = np.geomspace(d.min() * 0.8, d.max() * 1.25, 100)
        label = "samples (95% CI of d)"
        if f"{fit.d}_ci95" in samples:
            ci = samples[f"{fit.d}_ci95"].to_numpy(dtype=float)
            ci = np.where(np.isfinite(ci), ci, 0.0)
            # a CI reaching d = 0 (two fields give t = 12.7) has no upper end in d^-1/2, and one ending just above 0
            # an end 10-100x the samples' d^-1/2: either is cut at the plot's right edge (the fit's end), not drawn
            # out to it (which squeezed every sample and the fit into a narrow band at the left)
            right = hall_petch_x(grid_d.min())
            cut = d - ci < grid_d.min()  # open-ended (d - ci <= 0) or ending beyond the edge
            upper = np.where(cut, right, hall_petch_x(np.where(cut, d, d - ci)))
            xerr = np.vstack([x - hall_petch_x(d + ci), np.maximum(upper - x, 0.0)])
            if cut.any():
                label = "samples (95% CI of d; open-ended or long ones cut at the edge)"
        ax.errorbar(x, y, xerr=xerr, fmt="o", color="#1f4e79", ecolor="#7a9cc6", capsize=3, label=label)
        p = fit.predict(grid_d)
        gx = hall_petch_x(grid_d)
        ax.plot(gx, p["mean"], color="#c0392b",
                label=f"{fit.property_name} = {fit.p0:.1f} + {fit.k:.3f}·d$^{{-1/2}}$")
        ax.fill_between(gx, p["mean"] - p["ci95"], p["mean"] + p["ci95"], color="#c0392b", alpha=0.25, label="95% CI of fit")
        ax.fill_between(gx, p["mean"] - p["pi95"], p["mean"] + p["pi95"], color="#c0392b", alpha=0.08, label="95% prediction")
        ax.set_xlabel(f"d$^{{-1/2}}$ (m$^{{-1/2}}$), d = {fit.d}")
        ax.set_ylabel(f"{fit.property_name} ({fit.property_unit})")
        ax.set_title(f"Hall-Petch: k = {fit.k:.3f} ± {fit.k_ci95:.3f} {fit.units['k']}, n = {fit.linear.n}")
    else:
        ax.scatter(samples["predicted"], y, color="#1f4e79")
        lim = [np.nanmin([samples["predicted"].min(), y.min()]), np.nanmax([samples["predicted"].max(), y.max()])]
        ax.plot(lim, lim, color="grey", lw=1)
        ax.set_xlabel("predicted")
        ax.set_ylabel(f"measured {link_result.property_column}")
        ax.set_title("predicted vs measured")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # the predicted-vs-measured plot has no labelled artists
        ax.legend(fontsize=8, loc="best")
    return fig


def plot_hall_petch(link_result, path: str | Path) -> Path:
    """Save :func:`hall_petch_figure` to ``path`` (PNG)."""
    return save_figure(hall_petch_figure(link_result), path)


def structure_vs_processing_figure(link_result, processing_column: str, *, fig=None):
    """Grain size (with its 95% CI) against a processing column of the property table."""
    samples = link_result.samples
    d = link_result.summary["d"]
    fig = fig or _figure()
    ax = fig.add_subplot(1, 1, 1)
    ci = samples.get(f"{d}_ci95")
    ax.errorbar(samples[processing_column], samples[d], yerr=None if ci is None else np.nan_to_num(ci.to_numpy(dtype=float)),
                fmt="o", color="#1f4e79", capsize=3)
    ax.set_xlabel(processing_column)
    ax.set_ylabel(d)
    ax.grid(alpha=0.3)
    return fig


def predicted_vs_measured_figure(link_result, *, fig=None):
    """Measured property against the fitted prediction (with its 95% CI); the 1:1 line for reference."""
    samples = link_result.samples
    col = link_result.property_column
    fig = fig or _figure((4.6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    y = samples[col].to_numpy(dtype=float)
    pred = samples["predicted"].to_numpy(dtype=float)
    ax.errorbar(pred, y, xerr=np.nan_to_num(samples["predicted_ci95"].to_numpy(dtype=float)), fmt="o",
                color="#1f4e79", ecolor="#7a9cc6", capsize=3)
    for x0, y0, name in zip(pred, y, samples["sample"]):
        ax.annotate(str(name), (x0, y0), textcoords="offset points", xytext=(4, 4), fontsize=7)
    finite = np.isfinite(pred) & np.isfinite(y)
    lo, hi = float(np.min([pred[finite].min(), y[finite].min()])), float(np.max([pred[finite].max(), y[finite].max()]))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, label="1:1")
    cv = link_result.summary["fit"].get("cv_rmse")
    ax.set_title(f"predicted vs measured (LOO-CV RMSE {cv:.3g})" if cv else "predicted vs measured")
    ax.set_xlabel(f"predicted {col}")
    ax.set_ylabel(f"measured {col}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def processing_columns(link_result) -> list[str]:
    """Numeric columns of the property table other than the sample id and the fitted property."""
    import pandas as pd

    samples = link_result.samples
    d = link_result.summary["d"]
    skip = {"sample", "n_fields", "predicted", "predicted_ci95", link_result.property_column}
    skip |= {c for c in samples.columns if c.startswith(d)}
    out = []
    for c in samples.columns:
        if c in skip:
            continue
        values = pd.to_numeric(samples[c], errors="coerce")
        if values.notna().all() and values.nunique() > 1:
            out.append(c)
    return out


def write_all_plots(link_result, folder: str | Path) -> list[Path]:
    """Write the relation plot, predicted vs measured, and grain size vs each processing column."""
    import re

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [save_figure(hall_petch_figure(link_result), folder / f"{link_result.summary['fit']['relation']}.png"),
             save_figure(predicted_vs_measured_figure(link_result), folder / "predicted_vs_measured.png")]
    for col in processing_columns(link_result):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", col)
        paths.append(save_figure(structure_vs_processing_figure(link_result, col), folder / f"d_vs_{safe}.png"))
    return paths
