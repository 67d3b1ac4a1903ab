"""``micro-seg analyze IMAGE --model NAME [--pixel-size UM]``: segment then measure.

Grain models give ``{"grains": {...}}`` with the keys of ``micro-seg measure
grains`` (ASTM E112 / E1382 / E930); semantic models give ``{"phases":
{...}}`` (area fractions, E562) and, for the card's defect classes,
``{"defects": {...}}`` (keys of ``measure defects``, all defect classes
together) plus ``"defects_by_class"``.  Without a pixel size (file
calibration or ``--pixel-size``) lengths are in pixels and G is null.

Examples
--------
>>> from micro_seg.cli import main
>>> main(["analyze", "a.tif", "--model", "grain-boundaries", "--json"])  # doctest: +SKIP
{"pixel_size_um": 0.5, "model": "grain-boundaries", "grains": {"n_grains": 212, ...}}
0
"""

from __future__ import annotations

import argparse
from typing import Any

from micro_seg.commands.measure import _fields_arg
from micro_seg.commands.segment import add_model_options, segment_file

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``analyze`` sub-command to the CLI."""
    parser = subparsers.add_parser(
        "analyze",
        help="segment a micrograph with a model and measure it (grain size, phases, defects)",
        description="Segment then measure, as one call: grain size for grain models, phase fractions "
        "and defects for semantic models.",
    )
    add_model_options(parser)
    parser.add_argument("--fields", type=_fields_arg, default="auto", metavar="auto|none|N|RxC",
                        help="field grid for the confidence intervals (default auto; none, 0 or 1 = one field, "
                             "no field statistics; N or RxC need N, R, C >= 1)")
    parser.set_defaults(func=run)


def _fields(value: Any) -> Any:
    """``--fields`` as parsed (``auto``, ``None``, N or (rows, cols)); a string is parsed as on the command line."""
    if not isinstance(value, str) or value == "auto":
        return value
    try:
        return _fields_arg(value)
    except argparse.ArgumentTypeError as exc:
        from micro_seg.errors import MicroSegError

        raise MicroSegError(f"--fields: {exc}") from None


def _no_pixel_size_note(card) -> str:
    """What a missing pixel size costs this model's measurements (phase fractions are unitless)."""
    if card.task == "grains":
        return "no pixel size: lengths in pixels, G is null"
    if card.defect_classes:
        return ("no pixel size: defect sizes in pixels and no density per mm²; phase areas in pixels (area_px), "
                "phase fractions are unaffected")
    return "no pixel size: phase areas are in pixels (area_px); phase fractions are unaffected"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Segment and measure ``args.image``."""
    import time

    t0 = time.perf_counter()
    # measured, not written: free the prediction; an image without contrast is a warning
    micrograph, seg = segment_file(args, keep_prediction=False, check_contrast=True)
    px = micrograph.pixel_size_um
    result: dict[str, Any] = {
        "path": str(args.image),
        "pixel_size_um": px,
        "calibration_source": micrograph.calibration_source,
        "databar_rows": micrograph.databar_rows,
        "databar_source": micrograph.meta.get("databar_source"),
        "model": seg.card.name,
        "task": seg.card.task,
        "classes": list(seg.card.classes),
    }
    from micro_seg.batch_worker import measure_segmentation

    nested, _, _ = measure_segmentation(seg, pixel_size_um=px, fields=_fields(args.fields), what=str(args.image))
    measurement_warnings = nested.pop("_warnings", [])
    if not px:  # each measurement says it has no scale: one note per image says what that costs this model
        from micro_seg.measure._units import NO_SCALE_WARNING
        from micro_seg.measure.phases import NO_SCALE_PHASES

        no_scale = (NO_SCALE_WARNING, NO_SCALE_PHASES)
        measurement_warnings = [w for w in measurement_warnings if w not in no_scale]
        parts = [v for k, v in nested.items() if k != "defects_by_class"]
        parts += list(nested.get("defects_by_class", {}).values())
        for part in parts:  # the summaries of grains / phases / defects (and per defect class) repeat it too
            if isinstance(part, dict) and isinstance(part.get("warnings"), list):
                part["warnings"] = [w for w in part["warnings"] if w not in no_scale]
    result.update(nested)
    result["warnings"] = list(dict.fromkeys(micrograph.meta.get("contrast_warnings", []) + micrograph.reader_warnings
                                            + list(seg.warnings) + measurement_warnings
                                            + ([] if px else [_no_pixel_size_note(seg.card)])))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
