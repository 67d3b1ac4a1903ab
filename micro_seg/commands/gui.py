"""``micro-seg gui [PATH]``: open napari with the micro-seg widgets docked (and PATH loaded).

napari and Qt are imported only inside :func:`run` so the engine and the rest
of the CLI stay headless.

Examples
--------
>>> from micro_seg.cli import main
>>> main(["gui", "sample_images/steel.tif"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from micro_seg.errors import InputFileNotFoundError, MicroSegError

__all__ = ["register", "run", "WIDGETS", "open_viewer"]

# (display name in the manifest, dock area); the first ones are tabbed together.
WIDGETS = (("Segment", "right"), ("Measure", "right"), ("Annotate", "right"), ("Train", "right"), ("Batch", "right"),
           ("QC", "right"), ("Properties", "right"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="open the napari GUI with the micro-seg widgets",
                       description="Open napari with the micro-seg widgets docked and PATH loaded (calibrated).")
    p.add_argument("path", nargs="?", help="micrograph to open")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in micrometres (overrides the file's calibration)")
    p.add_argument("--json", action="store_true", help="print a JSON summary when the window closes")
    p.set_defaults(func=run)


def open_viewer(path: str | None = None, *, pixel_size_um: float | None = None, show: bool = True):
    """Create a napari viewer with the micro-seg widgets docked; returns ``(viewer, widgets)``.

    ``widgets`` maps each widget's display name to its Container.
    """
    try:
        import napari
    except ImportError as exc:  # the GUI extra is not installed
        raise MicroSegError(
            "the GUI needs napari and a Qt binding: pip install 'micro-seg[gui]'"
        ) from exc
    from micro_seg.io import read_micrograph
    from napari_plugin._reader import micrograph_layer_data

    micrograph = None
    if path is not None:
        if not Path(path).exists():
            raise InputFileNotFoundError(f"{path}: file not found")
        micrograph = read_micrograph(path, pixel_size_um=pixel_size_um)  # bad files: exit 2 before a window opens
    viewer = napari.Viewer(title="micro-seg", show=show)
    if micrograph is not None:
        data, kwargs, _ = micrograph_layer_data(micrograph)
        viewer.add_image(data, **kwargs)
    widgets: dict[str, Any] = {}
    first = None
    for name, area in WIDGETS:
        dock, widget = viewer.window.add_plugin_dock_widget("micro-seg", name, tabify=first is not None)
        widgets[name] = widget
        first = first or dock
    from qtpy.QtCore import QTimer

    first.raise_()
    QTimer.singleShot(0, first.raise_)  # after napari has shown the last dock it added
    return viewer, widgets


def run(args: argparse.Namespace) -> dict:
    """Open the GUI and block until the window is closed."""
    viewer, widgets = open_viewer(args.path, pixel_size_um=args.pixel_size)
    import napari

    napari.run()
    return {"path": args.path, "widgets": list(widgets)}
