"""``micro-seg link RESULTS PROPERTIES --on COLUMN``: join measurements to a property table and fit."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from micro_seg.errors import OutputPathError
from micro_seg.io import check_output_folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "link",
        help="join batch results to a property table and fit Hall-Petch / hardness / linear relations",
        description="Aggregate batch results per sample (mean, 95% CI), join them to a property table "
        "(CSV/XLSX/Parquet) on a sample-id column and fit a structure -> property relation.",
    )
    p.add_argument("results", help="batch output folder, or its images.csv or specimens.csv")
    p.add_argument("properties", help="property table: .csv, .tsv, .xlsx or .parquet")
    p.add_argument("--on", required=True, help="sample-id column of the property table")
    p.add_argument("--relation", default="hall-petch", choices=["hall-petch", "hardness", "linear"])
    p.add_argument("--property", default=None, help="property column to fit (unit in its name, e.g. yield_strength_MPa)")
    p.add_argument("--d", default="mean_intercept_um", help="grain-size column used as d (default: mean lineal intercept)")
    p.add_argument("--map", dest="mapping", default="folder",
                   help="image -> sample mapping: folder (default), stem, regex:<pattern>, column:<name>")
    p.add_argument("--predictors", default=None, help="comma-separated predictor columns for --relation linear")
    p.add_argument("--plot", default=None, help="write the relation plot to this PNG")
    p.add_argument("--plot-dir", default=None,
                   help="write every plot here: the relation, predicted vs measured, grain size vs each processing column")
    p.add_argument("--out-table", default=None, help="write the joined per-sample table to this CSV")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _check_file_output(option: str, value: str) -> None:
    """A file to write: not a folder, and its folder exists and is writable."""
    path = Path(value)
    if path.is_dir():
        raise OutputPathError(f"{option} {value}: is a folder; give a file path")
    parent = path.parent
    if not parent.exists():
        raise OutputPathError(f"{option} {value}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputPathError(f"{option} {value}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {value}: cannot write to folder {parent} (permission denied)")


#: Tables of a batch output folder that link reads (RESULTS given as the folder): never overwritten.
_BATCH_TABLES = ("images.csv", "specimens.csv")


def _input_files(args: argparse.Namespace) -> dict[Path, str]:
    """The resolved paths an output must not replace, each with how to name it in a message."""
    inputs: dict[Path, str] = {}
    results = Path(args.results)
    if results.is_dir():
        for name in _BATCH_TABLES:
            inputs[(results / name).resolve()] = f"the batch's {name} in RESULTS {args.results}"
    else:
        inputs[results.resolve()] = f"the RESULTS table {args.results}"
    inputs[Path(args.properties).resolve()] = f"the PROPERTIES table {args.properties}"
    return inputs


def check_output_paths(args: argparse.Namespace) -> None:
    """Refuse unusable ``--plot`` / ``--plot-dir`` / ``--out-table`` paths before any work is done.

    An output that would replace an input (the RESULTS table, the PROPERTIES
    table, the images.csv / specimens.csv of a RESULTS folder) or the other
    output is refused: link never overwrites its own data.
    """
    if args.plot:
        _check_file_output("--plot", args.plot)
    if args.plot_dir:
        check_output_folder(args.plot_dir, "--plot-dir")
    if args.out_table:
        _check_file_output("--out-table", args.out_table)
    inputs = _input_files(args)
    for option, value in (("--out-table", args.out_table), ("--plot", args.plot)):
        if value and Path(value).resolve() in inputs:
            raise OutputPathError(f"{option} {value}: is {inputs[Path(value).resolve()]}; writing there would "
                                  "replace it: give another file")
    if args.plot and args.out_table and Path(args.plot).resolve() == Path(args.out_table).resolve():
        raise OutputPathError(f"--out-table {args.out_table}: is also the --plot file; give them different paths")


def run(args: argparse.Namespace) -> dict:
    from micro_seg.properties import link
    from micro_seg.properties.plots import plot_hall_petch

    check_output_paths(args)
    predictors = [c.strip() for c in args.predictors.split(",")] if args.predictors else None
    result = link(args.results, args.properties, on=args.on, relation=args.relation, property=args.property,
                  d=args.d, mapping=args.mapping, predictors=predictors)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out = dict(result.summary)
    if args.plot:
        out["plot"] = str(plot_hall_petch(result, args.plot))
    if args.plot_dir:
        from micro_seg.properties.plots import write_all_plots

        out["plots"] = [str(p) for p in write_all_plots(result, args.plot_dir)]
    if args.out_table:
        result.samples.to_csv(args.out_table, index=False)
        out["table"] = args.out_table
    return out
