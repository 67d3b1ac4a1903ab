"""``micro-seg info PATH [--pixel-size UM] [--page N] [--databar-rows auto|N] [--json]``: what micro-seg reads from a file.

Prints the shape, dtype, pixel size and its source, and the rows of an SEM data
bar found at the bottom (contract keys), plus the file format, page count and
notes on calibration entries that were ignored.

Examples
--------
>>> import numpy as np, tifffile, tempfile, os
>>> from micro_seg.cli import main
>>> fn = os.path.join(tempfile.mkdtemp(), "a.tif")
>>> tifffile.imwrite(fn, np.zeros((8, 8), "uint8"))
>>> main(["info", fn, "--json"])  # doctest: +ELLIPSIS
{"path": ..., "shape": [8, 8], "dtype": "uint8", "pixel_size_um": null, "calibration_source": null, "databar_rows": 0, ...}
0
"""

from __future__ import annotations

import argparse
from typing import Any

from micro_seg.commands import PAGE_HELP, add_databar_option

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``info`` sub-command to the CLI."""
    parser = subparsers.add_parser(
        "info",
        help="show shape, dtype, calibration and SEM data bar of an image",
        description="Show what micro-seg reads from an image file: shape, dtype, pixel size "
        "(and where it came from) and the rows of an SEM data bar excluded from analysis.",
    )
    parser.add_argument("path", help="image file (TIFF, PNG, JPEG, BMP)")
    parser.add_argument("--pixel-size", type=float, metavar="UM", dest="pixel_size",
                        help="micrometres per pixel; overrides the calibration in the file")
    parser.add_argument("--page", type=int, metavar="N", help=PAGE_HELP)
    add_databar_option(parser)
    parser.add_argument("--max-pixels", type=int, metavar="N", dest="max_pixels",
                        help="refuse larger images (default $MICRO_SEG_MAX_PIXELS or 1.2e9)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read ``args.path`` and describe it (contract keys first)."""
    from micro_seg.io import read_micrograph

    m = read_micrograph(args.path, pixel_size_um=args.pixel_size, page=args.page, max_pixels=args.max_pixels,
                        databar_rows=getattr(args, "databar_rows", None))
    meta = m.meta
    result: dict[str, Any] = {
        "path": str(m.path),
        "shape": list(m.shape),
        "dtype": str(m.data.dtype),
        "pixel_size_um": m.pixel_size_um,
        "calibration_source": m.calibration_source,
        "databar_rows": m.databar_rows,
        "databar_source": meta.get("databar_source"),
        "format": meta.get("format"),
        "n_pages": meta.get("n_pages", 1),
        "page": meta.get("page", 0),
        "is_grey_rgb": bool(meta.get("is_grey_rgb", False)),
        "analysis_shape": list(m.analysis_data.shape),
        "min": m.data.min().item(),
        "max": m.data.max().item(),
    }
    if m.pixel_size_um is not None:
        rows, cols = m.analysis_data.shape[:2]
        result["field_um"] = [rows * m.pixel_size_um, cols * m.pixel_size_um]
    for key in ("metadata_pixel_size_um", "metadata_calibration_source", "dropped_alpha", "compression", "axes"):
        if key in meta:
            result[key] = meta[key]
    result["calibration_notes"] = meta.get("calibration_notes", [])
    if meta.get("warnings"):
        result["warnings"] = meta["warnings"]
    return result
