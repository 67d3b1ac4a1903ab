"""Layer choices and class schemas shared by the widgets (no image computation here)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

__all__ = [
    "PALETTE",
    "layer_chooser",
    "class_colormap",
    "parse_class_names",
    "parse_class_schema",
    "ms_meta",
    "connect_layer_events",
]

# Colour-blind-friendly Okabe-Ito palette, then tab10 for more classes.
PALETTE = [
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
]


def ms_meta(layer) -> dict:
    """The ``metadata["micro_seg"]`` dict of a layer (empty when absent)."""
    meta = getattr(layer, "metadata", None) or {}
    ms = meta.get("micro_seg")
    return ms if isinstance(ms, dict) else {}


def layer_chooser(viewer, kind: str, predicate: Callable[[Any], bool] | None = None) -> Callable:
    """A magicgui ``choices`` callable listing the viewer's layers of ``kind`` (newest first)."""
    import napari.layers

    layer_type = getattr(napari.layers, kind)

    def choices(_widget=None) -> list[tuple[str, Any]]:
        out = []
        for layer in reversed(list(viewer.layers)):
            if isinstance(layer, layer_type) and (predicate is None or predicate(layer)):
                out.append((layer.name, layer))
        return out

    return choices


def connect_layer_events(viewer, container) -> None:
    """Refresh ``container``'s combo boxes whenever layers are added, removed or renamed."""

    def _reset(*_: Any) -> None:
        try:
            container.reset_choices()
        except RuntimeError:  # widget already deleted
            pass

    viewer.layers.events.inserted.connect(_reset)
    viewer.layers.events.removed.connect(_reset)
    viewer.layers.events.moved.connect(_reset)

    def _watch_name(event) -> None:
        event.value.events.name.connect(_reset)

    viewer.layers.events.inserted.connect(_watch_name)
    for layer in viewer.layers:
        layer.events.name.connect(_reset)


def parse_class_names(text: str) -> list[str]:
    """Split a comma-separated list of class names; blanks and ``:#colour`` suffixes dropped."""
    return parse_class_schema(text)[0]


def parse_class_schema(text: str) -> tuple[list[str], list[str]]:
    """Parse ``"matrix, pore:#D55E00, crack"`` into names and colours.

    A class may carry a colour after ``:`` (``#RRGGBB`` or a colour name);
    classes without one get the next palette colour.
    """
    names, colors = [], []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        name, _, color = item.partition(":")
        names.append(name.strip())
        colors.append(color.strip() or PALETTE[len(colors) % len(PALETTE)])
    return names, colors


def class_colormap(n_classes: int, colors: Sequence[str] | None = None, *, offset: int = 1):
    """A napari label colormap: value ``i + offset`` gets ``colors[i]``; 0 is transparent.

    ``offset=1`` suits annotations (0 = unlabelled); ``offset=0`` suits predicted
    class labels where value 0 is the first class (drawn too).
    """
    from napari.utils.colormaps import DirectLabelColormap

    colors = list(colors or [])
    color_dict: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0)}
    if offset:
        color_dict[0] = (0.0, 0.0, 0.0, 0.0)
    for i in range(n_classes):
        color_dict[i + offset] = colors[i] if i < len(colors) else PALETTE[i % len(PALETTE)]
    return DirectLabelColormap(color_dict=color_dict)
