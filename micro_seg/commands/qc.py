"""``micro-seg qc INPUT... --spec FILE [--model NAME]``: pass / review / fail per image.

``INPUT`` is an image file, or a batch output folder / its ``images.csv`` (the
measurements already in the table are judged; image-quality checks run where
the image file can still be found), or its ``specimens.csv`` (each specimen
judged on its G and the means of its fields, see
:func:`micro_seg.qc.evaluate_specimen`).  With ``--model``:

* a classification model classifies each image (class rules, confidence and
  out-of-distribution checks);
* a segmentation model segments and measures each image first (grain size,
  phase fractions, defects), as ``micro-seg batch`` does.

``--classifier`` adds a classifier next to a segmentation ``--model`` (the
spec's ``classifier.model`` is used when neither names one).

JSON: ``{"spec", "results": [{"path", "verdict", "reasons": [{"check", "value",
"limit", "bound", "severity", "message"}], "quality", ...}], "counts"}``.  Exit
code 3 when some inputs could not be read (their verdict is ``fail`` with an
``input.readable`` reason).

Examples
--------
>>> from micro_seg.cli import main
>>> main(["qc", "field.tif", "--spec", "examples/specs/steel_grain_size.yaml", "--json"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from micro_seg.commands import add_databar_option

__all__ = ["register", "run", "qc_image", "qc_table"]


def register(subparsers: Any) -> None:
    """Add the ``qc`` sub-command."""
    p = subparsers.add_parser(
        "qc",
        help="judge images (or a batch's results) against a QC spec: pass / review / fail with reasons",
        description="Judge each image against a QC specification (YAML/TOML): image quality (focus, clipping, "
        "contrast, calibration, magnification, out-of-distribution), measurements and classifier rules.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, or a batch output folder / images.csv")
    p.add_argument("--spec", required=True, help="QC specification file (.yaml, .yml or .toml)")
    p.add_argument("--model", default=None, help="classification or segmentation model (name or folder)")
    p.add_argument("--classifier", default=None, help="classification model to use next to a segmentation --model")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM", dest="pixel_size",
                   help="micrometres per pixel; overrides the calibration of image inputs (not of a batch "
                   "table, whose measurements were made with the batch's calibration)")
    add_databar_option(p, "; of image inputs (a batch table's images keep the bar the batch left out, its "
                          "databar_rows column)")
    p.add_argument("--images-dir", default=None, metavar="DIR",
                   help="for a batch table: the batch's input folder, so image-quality checks can run on the images")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _measure_with_segmenter(micrograph: Any, model: Any) -> dict[str, Any]:
    """Segment and measure like ``micro-seg batch``; nested ``{"grains"|"phases"|"defects": {...}}``."""
    from micro_seg.batch_worker import measure_segmentation
    from micro_seg.postprocess import segment_image

    seg = segment_image(micrograph.analysis_data, model, pixel_size_um=micrograph.pixel_size_um)
    nested, _, _ = measure_segmentation(seg, pixel_size_um=micrograph.pixel_size_um, what=str(micrograph.path))
    return {k: v for k, v in nested.items() if not k.startswith("_")}


def _reason_from_error(check: str, exc: Exception) -> dict[str, Any]:
    return {"check": check, "value": str(exc), "limit": None, "bound": "", "severity": "fail",
            "message": f"{type(exc).__name__}: {exc}"}


def qc_image(path: str | Path, spec: Any, *, segmenter: Any = None, classifier: Any = None,
             pixel_size_um: float | None = None, databar_rows: int | None = None) -> dict[str, Any]:
    """Read one image, run the models given, judge it; returns the JSON result row (``databar_rows``: None
    detects the SEM data bar, N >= 0 sets it, as :func:`~micro_seg.io.read_micrograph`)."""
    from micro_seg.classifier import classify
    from micro_seg.errors import MicroSegError
    from micro_seg.io import read_micrograph
    from micro_seg.qc import evaluate

    try:
        mg = read_micrograph(path, pixel_size_um=pixel_size_um, databar_rows=databar_rows)
    except MicroSegError as exc:
        return {"path": str(path), "verdict": "fail", "reasons": [_reason_from_error("input.readable", exc)],
                "error": str(exc)}
    measurements = _measure_with_segmenter(mg, segmenter) if segmenter is not None else None
    classification = classify(mg, classifier) if classifier is not None else None
    result = evaluate(mg, spec, measurements=measurements, classification=classification)
    row: dict[str, Any] = {"path": str(path), **result.as_dict(), "pixel_size_um": mg.pixel_size_um,
                           "databar_rows": mg.databar_rows, "databar_source": mg.meta.get("databar_source")}
    if classification is not None:
        row["classification"] = classification
    if measurements is not None:
        row["measurements"] = measurements
    return row


def _check_measurable(spec: Any, segmenter: Any, classifier: Any, model_arg: str | None) -> None:
    """Refuse, before any image is read, a spec whose measurement rules the given model cannot measure on
    images: every image would otherwise come out "review" for a measurement that never existed."""
    from micro_seg.errors import SpecError
    from micro_seg.qc import check_model_measures, measured_groups

    needed = measured_groups(spec)
    if not needed:
        return
    groups = " and ".join(f"measurements.{g}" for g in needed)
    if segmenter is None:
        why = (f"--model {model_arg} is a classification model" if classifier is not None
               else "no --model was given to segment the images with")
        raise SpecError(f"{spec.source}: the spec has rules for {groups}, but {why}; give a segmentation model "
                        "(micro-seg models list), or judge a batch's images.csv")
    check_model_measures(spec, segmenter.card)


def _table_path(inp: Path) -> Path | None:
    if inp.is_dir() and (inp / "images.csv").is_file():
        return inp / "images.csv"
    if inp.is_file() and inp.suffix.lower() == ".csv":
        return inp
    return None


def _read_table(table: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a batch ``images.csv`` / ``specimens.csv`` with their line numbers; refuses (naming the file)
    a file that is not one (no ``path`` nor ``specimen`` column, not UTF-8 CSV) or has no rows."""
    from micro_seg.errors import ResultsTableError

    try:
        with open(table, newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8" starts with a BOM
            reader = csv.DictReader(fh)
            columns = reader.fieldnames
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise ResultsTableError(f"{table}: not a batch results table: not UTF-8 text ({exc.reason} at byte "
                                f"{exc.start})") from exc
    except csv.Error as exc:
        raise ResultsTableError(f"{table}: not a batch results table: not valid CSV ({exc})") from exc
    if not columns:
        raise ResultsTableError(f"{table}: not a batch results table: it is empty (give a batch output folder, its "
                                "images.csv or specimens.csv)")
    if "path" not in columns and "specimen" not in columns:
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise ResultsTableError(f"{table}: not a batch results table: no 'path' column (images.csv) nor 'specimen' "
                                f"column (specimens.csv); its columns: {shown}")
    if not rows:
        raise ResultsTableError(f"{table}: the table has no rows: nothing to judge")
    return rows


def _pixel_size_cell(table: Path, line: int, row: dict[str, str]) -> float | None:
    """The row's ``pixel_size_um`` (None when empty: uncalibrated); a cell that is not a positive number is
    refused naming the file, line, image and value (``0.5 um``: the table was edited by hand)."""
    import math

    from micro_seg.errors import ResultsTableError

    cell = row.get("pixel_size_um")
    if cell is None or not cell.strip():
        return None
    where = f"{table}: line {line} ({row.get('path') or row.get('specimen') or 'no path'}), column pixel_size_um"
    try:
        px = float(cell)
    except ValueError:
        raise ResultsTableError(f"{where}: {cell!r} is not a number (micrometres per pixel, e.g. 0.5; "
                                "leave it empty for an uncalibrated image)") from None
    if not (math.isfinite(px) and px > 0):
        raise ResultsTableError(f"{where}: {cell!r} is not a positive pixel size in micrometres (leave it empty for "
                                "an uncalibrated image)")
    return px


def qc_table(table: str | Path, spec: Any, *, image_root: str | Path | None = None,
             classifier: Any = None) -> list[dict[str, Any]]:
    """Judge every row of a batch ``images.csv`` (failed rows get verdict ``fail``), or of its
    ``specimens.csv`` (each result then names its ``specimen``; judged by
    :func:`micro_seg.qc.evaluate_specimen`).

    Image-quality checks run when the row's image is found (``image_root`` /
    ``path``, or ``path`` as written) and is the image the batch measured (its
    sha256, where the table records one); otherwise each gives *review* with
    the reason (image not found / changed since the batch / not readable),
    never a silent pass.
    """
    from micro_seg.databar import recorded_databar_rows
    from micro_seg.errors import MicroSegError
    from micro_seg.io import read_micrograph
    from micro_seg.qc import evaluate, evaluate_specimen
    from micro_seg.registry import sha256_file

    table = Path(table)
    out = []
    for line, row in _read_table(table):
        rel = row.get("path", "")
        # a specimens.csv row is one specimen (its fields' statistics): named by "specimen", it has no image
        who = {"specimen": row["specimen"]} if "path" not in row and "specimen" in row else {}
        if row.get("status", "ok") != "ok":
            out.append({"path": rel, **who, "verdict": "fail", "reasons": [{
                "check": "batch.status", "value": row.get("status"), "limit": "ok", "bound": "",
                "severity": "fail", "message": f"the batch could not process this image: {row.get('error', '')}"}],
                "error": row.get("error") or f"batch status {row.get('status')!r}"})
            continue
        px = _pixel_size_cell(table, line, row)
        image = None
        candidates = [Path(image_root) / rel] if image_root else []
        candidates.append(Path(rel))
        why = "image not found (looked for " + " and ".join(str(c) for c in candidates) + "; give --images-dir)"
        if who:
            candidates, why = [], "a specimen row has no image (image checks run on a batch's images.csv)"
        recorded = (row.get("sha256") or "").strip().lower()
        for cand in candidates:
            if cand.is_file():
                if recorded and sha256_file(cand) != recorded:
                    # the table's measurements are of the image as it was: its pixels now would be judged with them
                    why = (f"image changed since the batch ({cand}: sha256 differs from the batch's); re-run the "
                           "batch to judge it")
                    break
                try:
                    # the area the batch measured: its data bar (set by --databar-rows or detected), not a new guess
                    image = read_micrograph(cand, pixel_size_um=px,
                                            databar_rows=recorded_databar_rows(row.get("databar_rows")))
                except MicroSegError as exc:
                    image, why = None, f"image not readable: {exc}"
                break
        classification = None
        if classifier is not None and image is not None:  # the image is here: its classifier rules can run too
            from micro_seg.classifier import classify

            classification = classify(image, classifier)
        if who:
            result = evaluate_specimen(row, spec, no_pixels=why)
        else:
            result = evaluate(image, spec, measurements=row, pixel_size_um=px, no_pixels=why,
                              classification=classification)
        entry = {"path": rel, **who, **result.as_dict(), "pixel_size_um": px,
                 **({"classification": classification} if classification is not None else {})}
        if who and any(r["check"] == "batch.status" and r["severity"] == "fail" for r in entry["reasons"]):
            # a specimen none of whose fields the batch could process is a failed input, as a failed image row is
            entry["error"] = f"specimen {row['specimen']!r}: the batch could not process any of its fields"
        out.append(entry)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Judge every input; exit code 3 when some inputs were unreadable or are failed rows of a batch (as for the
    list form: the CLI contract's exit 3 for "some images failed")."""
    from micro_seg.classifier import load_classifier
    from micro_seg.errors import InputFileNotFoundError, UnsupportedFormatError
    from micro_seg.qc import load_spec
    from micro_seg.registry import load_card, resolve_model

    if args.pixel_size is not None:  # a usage error before any work, not a "fail" verdict on every image
        from micro_seg.io_calibration import validate_pixel_size

        validate_pixel_size(args.pixel_size, source="--pixel-size")
    spec = load_spec(args.spec)
    for inp in args.inputs:
        if not Path(inp).exists():
            raise InputFileNotFoundError(f"{inp}: input not found")
        if Path(inp).is_dir() and _table_path(Path(inp)) is None:
            raise UnsupportedFormatError(
                f"{inp}: is a folder but not a batch output folder (no images.csv in it); give image files "
                "(e.g. DIR/*.tif) or a batch output folder")
    segmenter = classifier = None
    if args.model:
        card = load_card(resolve_model(args.model))
        if card.task == "classification":
            classifier = load_classifier(args.model)
        else:
            from micro_seg.registry import load_model

            segmenter = load_model(args.model)
    if any(_table_path(Path(inp)) is None for inp in args.inputs):
        _check_measurable(spec, segmenter, classifier, args.model)
    if classifier is not None and args.classifier:  # two classifiers given: say which one judges
        print(f"warning: --model {args.model} is a classifier too; --classifier {args.classifier} is the one used",
              file=sys.stderr)
    clf_name = args.classifier or (spec.classifier_model if classifier is None else None)
    if clf_name:
        classifier = load_classifier(clf_name)

    if args.pixel_size is not None and any(_table_path(Path(inp)) is not None for inp in args.inputs):
        # a table's measurements were made with the batch's calibration: a new pixel size cannot rescale them
        print("warning: --pixel-size applies to image inputs only; a batch table is judged with the calibration its "
              "measurements were made with (re-run micro-seg batch --pixel-size UM to change it)", file=sys.stderr)
    if getattr(args, "databar_rows", None) is not None and any(_table_path(Path(inp)) is not None for inp in args.inputs):
        print("warning: --databar-rows applies to image inputs only; a batch table's images are judged on the area "
              "the batch measured, above the data bar in its databar_rows column (re-run micro-seg batch "
              "--databar-rows N to change it)", file=sys.stderr)
    results: list[dict[str, Any]] = []
    for inp in args.inputs:
        table = _table_path(Path(inp))
        if table is not None:
            results += qc_table(table, spec, image_root=args.images_dir, classifier=classifier)
        else:
            results.append(qc_image(inp, spec, segmenter=segmenter, classifier=classifier, pixel_size_um=args.pixel_size,
                                    databar_rows=getattr(args, "databar_rows", None)))
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("pass", "review", "fail")}
    out: dict[str, Any] = {"spec": spec.name or str(args.spec), "results": results, "counts": counts}
    if any("error" in r for r in results):
        out["_exit_code"] = 3
    return out
