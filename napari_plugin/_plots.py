"""Matplotlib figures embedded in the docks, styled to match napari's dark theme."""

from __future__ import annotations

__all__ = ["dock_figure", "style_axes", "FG", "BG"]

BG = "#262930"  # napari dark theme background
FG = "#d6d6d6"


def dock_figure(*, height_px: int = 180, figsize=(3.6, 2.0)):
    """A (Figure, Qt canvas) pair for a dock widget."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=100, layout="constrained", facecolor=BG)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(height_px)
    return figure, canvas


def style_axes(*axes) -> None:
    """Light text and spines on the dark background."""
    for ax in axes:
        ax.set_facecolor(BG)
        ax.tick_params(colors=FG, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color("#8a8a8a")
        ax.xaxis.label.set_color(FG)
        ax.title.set_color(FG)
