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

from micro_seg.commands import add_databar_option
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
    add_databar_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary when the window closes")
    p.set_defaults(func=run)


def open_viewer(path: str | None = None, *, pixel_size_um: float | None = None, show: bool = True,
                databar_rows: int | None = None):
    """Create a napari viewer with the micro-seg widgets docked; returns ``(viewer, widgets)``.

    ``widgets`` maps each widget's display name to its Container.  ``databar_rows``: the SEM data bar of
    PATH (None: detected; see :func:`~micro_seg.io.read_micrograph`), which the widgets leave out.
    """
    try:
        import napari
    except ImportError as exc:  # the GUI extra is not installed
        raise MicroSegError(
            "the GUI needs napari and a Qt binding: pip install 'micro-seg[gui]'"
        ) from exc
    from micro_seg.io import is_written_labels, read_labels, read_micrograph
    from napari_plugin._reader import labels_layer_data, micrograph_layer_data

    micrograph = labels = None
    if path is not None:
        if not Path(path).exists():
            raise InputFileNotFoundError(f"{path}: file not found")
        if is_written_labels(path):  # a label image micro-seg wrote opens as labels, as File > Open opens it
            data, px = read_labels(path)
            labels = labels_layer_data(path, data, pixel_size_um or px,
                                       **({"calibration_source": "user"} if pixel_size_um else {}))
        else:
            micrograph = read_micrograph(path, pixel_size_um=pixel_size_um, databar_rows=databar_rows)  # bad files: exit 2 before a window opens
    try:
        viewer = napari.Viewer(title="micro-seg", show=show)
    except Exception as exc:  # most often the display or OpenGL (run() checks the usual cases first)
        raise MicroSegError(
            f"cannot open the napari window ({type(exc).__name__}: {exc}); if this machine has no display or no "
            "OpenGL, run it under a virtual display (xvfb-run -a micro-seg gui)"
        ) from None
    if micrograph is not None:
        data, kwargs, _ = micrograph_layer_data(micrograph)
        viewer.add_image(data, **kwargs)
    if labels is not None:
        viewer.add_labels(labels[0], **labels[1])
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


def display_problem(environ: dict | None = None, platform: str | None = None) -> str | None:
    """Why napari cannot open a window here (Linux: no display, or a Qt platform without OpenGL), or None.

    Qt itself would abort the process or hang without a context, not fail with a message.

    >>> display_problem({}, "linux")
    'no display (DISPLAY and WAYLAND_DISPLAY are not set)'
    >>> display_problem({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"}, "linux")
    'QT_QPA_PLATFORM=offscreen has no OpenGL, which napari needs'
    >>> display_problem({"DISPLAY": ":99"}, "linux") is None, display_problem({"QT_QPA_PLATFORM": "xcb"}, "linux")
    (True, 'no display for QT_QPA_PLATFORM=xcb (DISPLAY / WAYLAND_DISPLAY not set)')
    """
    import os
    import sys

    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    plats = [p.split(":")[0].strip() for p in environ.get("QT_QPA_PLATFORM", "").split(";") if p.strip()]
    x11, wayland = bool(environ.get("DISPLAY")), bool(environ.get("WAYLAND_DISPLAY"))
    if not plats:  # Qt picks xcb or wayland itself
        return None if (x11 or wayland) else "no display (DISPLAY and WAYLAND_DISPLAY are not set)"
    for plat in plats:  # Qt tries them in order: one that can work is enough
        if plat == "xcb" and x11 or plat.startswith("wayland") and wayland or plat not in ("xcb", "offscreen", "minimal") \
                and not plat.startswith("wayland"):
            return None
    if all(p in ("offscreen", "minimal") for p in plats):
        return f"QT_QPA_PLATFORM={environ['QT_QPA_PLATFORM']} has no OpenGL, which napari needs"
    return f"no display for QT_QPA_PLATFORM={environ['QT_QPA_PLATFORM']} (DISPLAY / WAYLAND_DISPLAY not set)"


def run(args: argparse.Namespace) -> dict:
    """Open the GUI and block until the window is closed."""
    if args.path is not None and not Path(args.path).exists():  # a bad file is the first thing to say
        raise InputFileNotFoundError(f"{args.path}: file not found")
    problem = display_problem()
    if problem:
        raise MicroSegError(f"cannot open the GUI: {problem}; it needs a desktop session with a display and OpenGL "
                            "(on a server: xvfb-run -a micro-seg gui)")
    viewer, widgets = open_viewer(args.path, pixel_size_um=args.pixel_size, databar_rows=getattr(args, "databar_rows", None))
    import napari

    napari.run()
    return {"path": args.path, "widgets": list(widgets)}
