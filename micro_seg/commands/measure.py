"""``micro-seg measure grains|phases|defects PATH ...``: standards-grade measurements of a label image.

* ``measure grains PATH`` : PATH is an instance label image (0 = boundary);
  with ``--boundary`` a boundary mask (non-zero = boundary, or pixels equal to
  ``--boundary-value``).  ASTM E112 planimetric / intercept G, E1382 mean
  area, E930 ALA, field statistics.
* ``measure phases PATH`` : PATH is a class label image; ``--names`` gives the
  class names in label order.  Area fractions with 95 % CI, E562 point count.
* ``measure defects PATH`` : PATH is a binary or instance mask of pores /
  particles.  Count, area fraction, density, ECD, Feret, shape, spacing.

The pixel size comes from the file's calibration unless ``--pixel-size`` is
given; without either, lengths and areas are in pixels and G is null.  With
``--pixel-size`` the file's calibration is not needed: a broken calibration
tag is reported in ``calibration_notes`` instead of refusing the file.
``--table FILE.csv`` writes the per-object table (per class for phases; units in the column names),
``--fields-table FILE.csv`` the per-field values behind the confidence intervals.
``--page N`` reads page N of a multi-page file; without it the first page is
measured and the result warns of the pages not read (as ``micro-seg info``).

Bad input exits 2 before any measuring: a zero, negative or non-finite
``--pixel-size``; negative ``--close-gaps`` / ``--min-grain`` / ``--min-size``;
``--close-gaps`` above 32 px or a quarter of the shorter side; a boundary mask
without boundary pixels; ``--fields`` grids with fields under 16 px a side (for
grains also under one grain per field); a "class map" with more than 64
distinct values or values above 65535.  Inputs that look like the wrong kind
of image are measured as given, with a warning: a binary image measured as
grain labels (use ``--boundary``), a class map or raw micrograph measured as
defects, more than 20 classes, more ``--names`` than classes.

Examples
--------
>>> from micro_seg.cli import main
>>> main(["measure", "grains", "missing.tif", "--json"])  # doctest: +SKIP
2
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from micro_seg.commands import PAGE_HELP
from micro_seg.errors import InvalidImageError, MicroSegError

__all__ = ["register", "run_grains", "run_phases", "run_defects"]


def _fields_arg(text: str) -> str | int | tuple[int, int] | None:
    """Parse ``--fields``: ``auto``; ``none``, ``0`` or ``1`` (one field: no field statistics); N; ROWSxCOLS.

    >>> _fields_arg("4x3"), _fields_arg("0"), _fields_arg("auto")
    ((4, 3), None, 'auto')
    >>> _fields_arg("2x0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: invalid fields '2x0': use auto, none, N or ROWSxCOLS (e.g. 4x4) with N, ROWS, COLS >= 1
    """
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t in ("none", "0", "1"):
        return None
    try:
        if "x" in t:
            r, c = t.split("x")
            value: int | tuple[int, int] = (int(r), int(c))
            ok = value[0] >= 1 and value[1] >= 1
        else:
            value = int(t)
            ok = value >= 1
    except ValueError:
        ok = False
    if not ok:
        msg = f"invalid fields {text!r}: use auto, none, N or ROWSxCOLS (e.g. 4x4) with N, ROWS, COLS >= 1"
        raise argparse.ArgumentTypeError(msg)
    return value


class _Once(argparse.Action):
    """An option that may be given once: a second value is an error, not a silent replacement of the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)} and {values}): "
                         "only one value is taken")
        setattr(namespace, self.dest, values)


#: File types ``--table`` may replace: an existing file of another type (the input image, another micrograph)
#: is never overwritten by the table.
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def _check_table_path(args: argparse.Namespace) -> None:
    """Refuse, before measuring, a ``--table`` / ``--fields-table`` that is the input file, the other table or
    would overwrite a non-table file."""
    given = [(flag, Path(value)) for flag, value in (("--table", getattr(args, "table", None)),
                                                     ("--fields-table", getattr(args, "fields_table", None))) if value]
    if len(given) == 2 and os.path.abspath(given[0][1]) == os.path.abspath(given[1][1]):
        raise MicroSegError(f"{given[0][1]}: --table and --fields-table name the same file; give each its own")
    for flag, out in given:
        try:
            same = out.exists() and Path(args.path).exists() and out.resolve() == Path(args.path).resolve()
        except OSError:
            same = False
        if same:
            raise MicroSegError(f"{out}: {flag} is the input image; give the table a file of its own (e.g. "
                                f"{Path(args.path).with_suffix('.csv').name})")
        blocking = next((a for a in out.parents if a.exists() and not a.is_dir()), None)
        if blocking is not None:
            raise MicroSegError(f"{out}: cannot write the table: {blocking} is a file, not a folder")
        if out.is_file() and out.suffix.lower() not in TABLE_SUFFIXES:
            raise MicroSegError(f"{out}: {flag} would overwrite an existing {out.suffix or 'extension-less'} file; "
                                f"the table is written only to a new file or over a {'/'.join(TABLE_SUFFIXES)} file")


def _common(parser: argparse.ArgumentParser, rows: str = "per-object") -> None:
    parser.add_argument("path", help="image file (TIFF, PNG, ...)")
    parser.add_argument("--pixel-size", type=float, metavar="UM", dest="pixel_size",
                        help="micrometres per pixel; overrides the calibration in the file")
    parser.add_argument("--page", type=int, metavar="N", help=PAGE_HELP)
    parser.add_argument("--table", metavar="CSV", help=f"write the {rows} table to this CSV file (units in the column names)")
    parser.add_argument("--fields-table", metavar="CSV", dest="fields_table",
                        help="write the per-field values the confidence intervals are computed from to this CSV file "
                             "(one row per field of the --fields grid, with its pixel bounds)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def register(subparsers: Any) -> None:
    """Add ``measure grains|phases|defects`` to the CLI."""
    parser = subparsers.add_parser(
        "measure",
        help="measure grain size (E112), phase fractions (E562) or defects of a label image",
        description="Standards-grade measurements of a label image in physical units.",
    )
    sub = parser.add_subparsers(dest="measure_kind", metavar="KIND", parser_class=type(parser))
    parser.set_defaults(func=_missing_kind)

    g = sub.add_parser("grains", help="ASTM E112 / E1382 / E930 grain size of an instance label image or boundary mask")
    _common(g)
    g.add_argument("--boundary", action="store_true",
                   help="PATH is a boundary mask (non-zero = boundary) instead of instance labels")
    g.add_argument("--boundary-value", type=float, metavar="V", dest="boundary_value",
                   help="with --boundary: pixels equal to V are boundary (e.g. 0 for dark traced lines)")
    g.add_argument("--close-gaps", type=int, default=None, metavar="PX", dest="close_gaps",
                   help="with --boundary: close gaps up to 2*PX pixels wide (default 1; 0 = off, best for "
                        "closed boundaries and very fine grains, which closing shrinks; at most 32 and a quarter "
                        "of the image's shorter side)")
    g.add_argument("--min-grain", type=int, default=None, metavar="PX", dest="min_grain",
                   help="regions smaller than PX pixels are not grains (default 8 with --boundary; for label "
                        "images default 0, every label kept: smaller labels go to their nearest grains)")
    g.add_argument("--fields", type=_fields_arg, default="auto", metavar="auto|none|N|RxC",
                   help="split the image into fields for the confidence intervals (default auto: ~50 grains "
                        "per field; none, 0 or 1 = one field); fields must be >= 16 px a side and hold >= 1 grain each")
    g.add_argument("--no-circles", action="store_true", dest="no_circles", help="skip the Abrams three-circle count")
    g.set_defaults(func=run_grains)

    p = sub.add_parser("phases", help="area fraction per class with 95%% CI and an E562 point count")
    _common(p, rows="per-class (fractions, CIs, point count, areas)")
    p.add_argument("--names", metavar="a,b,c", help="class names in label order (value 0, 1, 2, ...; default: the "
                   "names a micro-seg label file records); a class map with more than 64 distinct values is refused "
                   "(20: warning)")
    p.add_argument("--fields", type=_fields_arg, default="5x5", metavar="none|N|RxC",
                   help="field grid for the statistics (default 5x5)")
    p.add_argument("--points", type=int, metavar="N", help="E562 grid points per field, a square grid: 16, 25, 49, 100 ... "
                   "(default from the E562 guide; another N is rounded to a square, with a warning)")
    p.add_argument("--ignore", type=int, metavar="V", action=_Once,
                   help="class value excluded from the analysed area (one value)")
    p.set_defaults(func=run_phases)

    d = sub.add_parser("defects", help="count / size / shape / spacing of pores, particles or defects")
    _common(d)
    d.add_argument("--min-size", type=int, default=1, metavar="PX", dest="min_size",
                   help="ignore objects smaller than PX pixels (default 1); the summary counts them "
                   "(n_removed_small, removed_area_fraction) and warns")
    d.add_argument("--connectivity", type=int, choices=(1, 2), default=2,
                   help="pixel connectivity of objects in a binary mask (2 = 8-connected, default)")
    d.add_argument("--fields", type=_fields_arg, default="auto", metavar="auto|none|N|RxC",
                   help="field grid for the E1245 statistics (default auto); fields must be >= 16 px a side")
    d.set_defaults(func=run_defects)


def _missing_kind(args: argparse.Namespace) -> dict:
    msg = "measure: say what to measure: grains, phases or defects (micro-seg measure KIND PATH --json)"
    raise MicroSegError(msg)


def _reader_notes(m: Any, pixel_size: float | None) -> dict[str, list[str]]:
    """The reader's warnings (pages not read, ...) and, with ``--pixel-size``, the file's calibration notes."""
    notes = {"warnings": [f"{m.path}: {w}" for w in m.reader_warnings]}
    if m.meta.get("format") == "jpeg" or "JPEG" in str(m.meta.get("compression", "")).upper():
        notes["warnings"].append(f"{m.path}: JPEG compression is lossy: it alters label values and blurs mask edges "
                                 "(a binary mask gets grey levels); save label images and masks as PNG or TIFF")
    if pixel_size is not None and m.meta.get("calibration_notes"):  # not used, so not an error (e.g. a broken tag)
        notes["calibration_notes"] = [str(n) for n in m.meta["calibration_notes"]]
    return notes


def _read_labels(path: str, page: int | None = None,
                 pixel_size: float | None = None) -> tuple[np.ndarray, float | None, dict[str, list[str]]]:
    """Labels, the file's pixel size and :func:`_reader_notes` of page ``page``
    (:func:`micro_seg.io.read_label_page`)."""
    from micro_seg.io import read_label_page

    data, px, m = read_label_page(path, page, pixel_size)
    return data, px, _reader_notes(m, pixel_size)


def _read_mask(path: str, value: float | None, page: int | None = None,
               pixel_size: float | None = None) -> tuple[np.ndarray, float | None, dict[str, list[str]]]:
    from micro_seg.io import read_micrograph
    from micro_seg.measure.labels import binary_boundary_mask

    m = read_micrograph(path, detect_databar=False, page=page, pixel_size_um=pixel_size, stored_values=True)
    data = m.data
    if data.ndim == 3:
        if m.meta.get("is_grey_rgb"):
            data = data[..., 0]
        else:
            msg = f"{m.path}: a boundary mask must be single-channel, got {data.shape[2]} different channels"
            raise InvalidImageError(msg)
    notes = _reader_notes(m, pixel_size)
    if value is not None:
        mask = data == value
    else:
        mask, note = binary_boundary_mask(data, str(m.path))
        if note:
            notes["warnings"].append(note)
    if value is None and mask.all():  # no 0 anywhere: the lines carry a value of their own (1 on 2, 0 on 255 ...)
        values = np.unique(data)
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
        msg = (f"{m.path}: every pixel is boundary (no pixel is 0; values {shown}): give the lines' value with "
               "--boundary-value V")
        raise InvalidImageError(msg)
    if not mask.any():
        which = f"no pixel equals --boundary-value {value:g}" if value is not None else "every pixel is 0"
        msg = f"{m.path}: no boundary pixels ({which}); a boundary mask marks the grain boundaries"
        raise InvalidImageError(msg)
    px_file = m.meta.get("metadata_pixel_size_um") if pixel_size is not None else m.pixel_size_um
    return mask, px_file, notes


def _check_pixel_size_option(args: argparse.Namespace) -> None:
    """Refuse a zero, negative or non-finite ``--pixel-size`` before reading, naming the file and the option."""
    if args.pixel_size is not None:
        from micro_seg.io_calibration import validate_pixel_size

        validate_pixel_size(args.pixel_size, source="--pixel-size", path=args.path)


def _check_not_negative(args: argparse.Namespace, **options: str) -> None:
    """Refuse negative pixel counts, naming the file: ``options`` maps attribute names to option names."""
    for attr, option in options.items():
        value = getattr(args, attr)
        if value < 0:
            msg = f"{args.path}: {option} {value}: must be >= 0 pixels"
            raise MicroSegError(msg)


def _finish(args: argparse.Namespace, result: Any, px_file: float | None, notes: dict[str, list[str]]) -> dict:
    summary = {"path": str(args.path), **result.summary}
    if notes.get("warnings"):  # what the reader noticed (pages not read, ...) first, then the measurement's own
        summary["warnings"] = list(dict.fromkeys(notes["warnings"] + list(summary.get("warnings") or [])))
    if notes.get("calibration_notes"):
        summary["calibration_notes"] = notes["calibration_notes"]
    if args.pixel_size is None and px_file is not None:
        summary["calibration"] = "file"
    elif args.pixel_size is not None:
        summary["calibration"] = "user"
    else:
        summary["calibration"] = None
    for key, table in (("table", result.table), ("fields_table", result.fields)):
        if not getattr(args, key, None):
            continue
        out = Path(getattr(args, key))
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(out, index=False)
        except OSError as exc:
            msg = f"{out}: cannot write the table ({exc.strerror or exc})"
            raise MicroSegError(msg) from exc
        summary[key] = str(out)
    return summary


def _pixel_size(args: argparse.Namespace, px_file: float | None) -> float | None:
    return args.pixel_size if args.pixel_size is not None else px_file


def run_grains(args: argparse.Namespace) -> dict:
    """Measure grain size of ``args.path`` (labels, or a boundary mask with ``--boundary``)."""
    from micro_seg.measure import measure_grains, measure_grains_from_boundaries
    from micro_seg.measure.labels import MAX_CLOSE_GAPS_PX, max_close_gaps_px

    circles = not args.no_circles
    _check_pixel_size_option(args)
    _check_table_path(args)
    if args.fields is None and args.fields_table:  # no fields are measured: the table would be an empty file
        raise MicroSegError(f"{args.path}: --fields-table with --fields none (or 0 / 1): grain size is then measured "
                            "over the whole image without per-field values; give a field grid (--fields auto, N or "
                            "ROWSxCOLS) for the per-field table")
    mask_only = {"--boundary-value": args.boundary_value, "--close-gaps": args.close_gaps}
    given = [flag for flag, value in mask_only.items() if value is not None]
    if given and not args.boundary:
        raise MicroSegError(f"{', '.join(given)} applies to boundary masks only: add --boundary if {args.path} is a "
                            "boundary mask (without it, PATH is read as grain labels)")
    if args.close_gaps is None:
        args.close_gaps = 1
    if args.min_grain is None:
        args.min_grain = 8 if args.boundary else 0
    _check_not_negative(args, min_grain="--min-grain")
    if args.boundary:
        _check_not_negative(args, close_gaps="--close-gaps")
        if args.close_gaps > MAX_CLOSE_GAPS_PX:  # refused before reading (a huge radius used to run out of memory)
            msg = (f"{args.path}: --close-gaps {args.close_gaps}: at most {MAX_CLOSE_GAPS_PX} px (closes gaps up to "
                   f"{2 * MAX_CLOSE_GAPS_PX} px wide; a larger radius erases grains narrower than twice the radius)")
            raise MicroSegError(msg)
        mask, px_file, notes = _read_mask(args.path, args.boundary_value, args.page, args.pixel_size)
        limit = max_close_gaps_px(mask.shape)
        if args.close_gaps > limit:
            msg = (f"{args.path}: --close-gaps {args.close_gaps}: at most {limit} px for this "
                   f"{mask.shape[0]} x {mask.shape[1]} image (a quarter of its shorter side)")
            raise MicroSegError(msg)
        res = measure_grains_from_boundaries(
            mask, pixel_size_um=_pixel_size(args, px_file), close_gaps_px=args.close_gaps,
            min_grain_px=args.min_grain, fields=args.fields, circles=circles, what=str(args.path),
        )
    else:
        labels, px_file, notes = _read_labels(args.path, args.page, args.pixel_size)
        res = measure_grains(labels, pixel_size_um=_pixel_size(args, px_file), fields=args.fields,
                             circles=circles, what=str(args.path), overwrite_input=True,  # read for this alone
                             min_grain_px=args.min_grain)
    return _finish(args, res, px_file, notes)


def run_phases(args: argparse.Namespace) -> dict:
    """Measure phase fractions of the class label image ``args.path``."""
    from micro_seg.measure import measure_phases

    _check_pixel_size_option(args)
    _check_table_path(args)
    if args.names is not None and not args.names.strip():
        msg = (f"{args.path}: --names {args.names!r}: no class names given (use --names a,b,c in label order, or "
               "leave it out)")
        raise MicroSegError(msg)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names is not None and any(not n for n in names):
        msg = f"{args.path}: --names {args.names!r}: empty class name (names are separated by commas: a,b,c)"
        raise MicroSegError(msg)
    labels, px_file, notes = _read_labels(args.path, args.page, args.pixel_size)
    if names is None:  # the class names a micro-seg label file records (segment, the napari writer)
        from micro_seg.io import labels_classes

        stored = labels_classes(args.path)
        if stored and labels.size:
            values = labels if args.ignore is None else labels[labels != args.ignore]
            top = int(values.max()) if values.size else 0
            if top < len(stored) and len(set(stored)) == len(stored):
                names = stored
            else:
                notes["warnings"].append(f"{args.path}: the file records class names {stored} but has class value "
                                         f"{top}; the phases are numbered instead (name them with --names)")
    fields = args.fields if args.fields != "auto" else (5, 5)
    try:
        res = measure_phases(labels, pixel_size_um=_pixel_size(args, px_file), names=names, fields=fields,
                             points_per_field=args.points, ignore_index=args.ignore, what=str(args.path))
    except MicroSegError:
        raise
    except ValueError as exc:
        raise MicroSegError(f"{args.path}: {exc}") from exc
    present = np.flatnonzero(res.table["area_px"].to_numpy() > 0)
    top = int(res.table["class_id"].to_numpy()[present].max()) if present.size else 0  # the ignored value aside
    extra = [n for i, n in enumerate((names if args.names else None) or ()) if i > top and i != args.ignore]
    if extra:  # typed by the user (a model's card names classes that may be absent: no warning there)
        res.warnings.append(f"{args.path}: {len(names)} names given but the largest class value is {top}: "
                            f"{', '.join(extra)} (values {top + 1}..{len(names) - 1}) match no pixel and are "
                            "reported as 0")
    return _finish(args, res, px_file, notes)


def run_defects(args: argparse.Namespace) -> dict:
    """Measure pores / particles / defects in the mask or label image ``args.path``."""
    from micro_seg.measure import measure_defects

    _check_pixel_size_option(args)
    _check_table_path(args)
    _check_not_negative(args, min_size="--min-size")
    labels, px_file, notes = _read_labels(args.path, args.page, args.pixel_size)
    res = measure_defects(labels, pixel_size_um=_pixel_size(args, px_file), connectivity=args.connectivity,
                          min_size_px=args.min_size, fields=args.fields, what=str(args.path))
    return _finish(args, res, px_file, notes)
