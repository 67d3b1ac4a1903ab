"""``micro-seg batch IN_DIR OUT_DIR --model NAME``: segment and measure a folder.

Writes ``OUT_DIR/results.sqlite``, ``images.csv``, ``specimens.csv``,
``objects.parquet``, labels / overlays / object tables per image and
``report.html``.  Re-running resumes.  Exit code 3 when some images failed
(their errors are listed on stderr and in the report).  Files that are not
supported images (``README.txt``, ``notes.csv``...) are skipped and counted
(``n_unsupported``; one line on stderr).  Bad input found before the first image
(no images, a bad model, spec, option or output folder) is exit 2 with one line.

Examples
--------
>>> from micro_seg.cli import main
>>> main(["batch", "micrographs", "results", "--model", "grain-boundaries", "--quiet"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Any

from micro_seg.commands import add_databar_option
from micro_seg.commands.segment import add_segment_options, given_postprocess_options, given_predict_options

__all__ = ["register", "run"]

MAX_LISTED_FAILURES = 20


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def register(subparsers: Any) -> None:
    """Add the ``batch`` sub-command."""
    p = subparsers.add_parser(
        "batch",
        help="segment and measure every image under a folder (resumable, parallel)",
        description="Process every supported image under IN_DIR (recursively) and write results, exports and "
                    "report.html to OUT_DIR. Re-running resumes: finished images are skipped, changed inputs or "
                    "a changed model are redone.",
    )
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of micrographs (searched recursively)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (re-use it to resume)")
    p.add_argument("--model", required=True, help="model name (see `micro-seg models list`) or model folder")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="local worker processes (default: number of CPUs; 0 = in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="dask.distributed scheduler address (e.g. tcp://host:8786); folders must be shared")
    p.add_argument("--spec", metavar="FILE", default=None, help="QC specification (YAML/TOML) for verdicts")
    p.add_argument("--group-by", default="folder", metavar="folder|regex:PATTERN",
                   help="group fields into specimens by folder (default) or by a regular expression on the "
                        "relative path (named group 'specimen', or group 1)")
    p.add_argument("--pixel-size", type=_positive_float, default=None, metavar="UM",
                   help="micrometres per pixel for every image (overrides file calibration)")
    add_databar_option(p, "; for every image (an image with no more rows fails, the others go on)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out matching files or folders, relative to IN_DIR (gitignore-like: '*.md', 'truth/', "
                        "'sub/*.tif'); repeatable; also read from .micro-seg-ignore files in IN_DIR and its subfolders")
    p.add_argument("--rehash", action="store_true",
                   help="verify the sha256 of every finished input (default: only when size/mtime changed)")
    p.add_argument("--retry-failed", action="store_true",
                   help="redo images that failed in an earlier run although unchanged (e.g. after raising "
                        "MICRO_SEG_MAX_PIXELS); by default only failures that may pass another time are retried")
    p.add_argument("--redo-other-releases", action="store_true",
                   help="redo finished images that another micro-seg release measured (default: kept, with a warning)")
    p.add_argument("--max-tasks-per-child", type=_positive_int, default=100, metavar="N",
                   help="replace each worker process after N images (bounds memory; 0 = never)")
    add_segment_options(p)
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.html (an earlier run's report.html in OUT_DIR is removed: it would contradict images.csv)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no failure listing")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


class _RichProgress:
    """Progress bar with ETA on stderr (rich); a no-op when quiet.

    The bar is drawn at the first progress call, i.e. once the batch has checked
    its input and starts: an error found before that stays one line on stderr.
    When stderr is not a terminal (a log file of a cluster job, ``nohup``, ``2> log``), where a bar is drawn
    only once, at the end, each finished image is one plain line instead, so the log shows how far it got.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.task = None
        self.plain = not quiet and not _is_terminal(sys.stderr)
        self.failed = 0
        self.t0 = time.monotonic()

    def _line(self, done: int, total: int, path: str | None, status: str) -> None:
        if status == "start":
            self.t0 = time.monotonic()
            print(f"micro-seg batch: {total} image(s) to process", file=sys.stderr, flush=True)
            return
        self.failed += status == "failed"
        elapsed = time.monotonic() - self.t0
        eta = elapsed / done * (total - done) if done and total >= done else None
        print(f"micro-seg batch: [{done}/{total}] {path} {status}"
              + (f" ({self.failed} failed)" if self.failed else "")
              + (f", ETA {datetime.timedelta(seconds=round(eta))}" if eta is not None and done < total else ""),
              file=sys.stderr, flush=True)

    def __enter__(self) -> "_RichProgress":
        return self

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("[bold]batch[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[path]}"),
                            console=Console(stderr=True), transient=False)
        self.bar.__enter__()

    def __call__(self, done: int, total: int, path: str | None, status: str) -> None:
        if self.quiet:
            return
        if self.plain:
            self._line(done, total, path, status)
            return
        if self.bar is None:
            self._start()
        if self.task is None:
            self.task = self.bar.add_task("batch", total=total or None, failed=0, path="")
        fields: dict[str, Any] = {"path": (path or "")[-40:]}
        if status == "failed":
            fields["failed"] = self.bar.tasks[0].fields["failed"] + 1
        self.bar.update(self.task, completed=done, **fields)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def run(args: argparse.Namespace) -> dict:
    """Run the batch described by parsed CLI arguments; returns the JSON summary."""
    from micro_seg.batch import run_batch, unsupported_extensions

    segment_options = {**given_predict_options(args), **given_postprocess_options(args)}

    with _RichProgress(args.quiet) as progress:
        summary = run_batch(
            args.in_dir, args.out_dir, model=args.model, workers=args.workers, scheduler=args.scheduler,
            group_by=args.group_by, spec=args.spec, progress=progress, pixel_size_um=args.pixel_size,
            rehash=args.rehash, retry_failed=args.retry_failed,
            redo_other_releases=args.redo_other_releases, max_tasks_per_child=args.max_tasks_per_child or None,
            report=not args.no_report, exclude=args.exclude, segment_options=segment_options,
            databar_rows=args.databar_rows,
        )
    result = {
        "out_dir": str(summary.out_dir),
        "n_images": summary.n_images,
        "n_ok": summary.n_ok,
        "n_failed": summary.n_failed,
        "n_processed": summary.n_processed,
        "n_skipped": summary.n_skipped,
        "seconds": round(summary.seconds, 3),
        "model": summary.model,
        "model_sha256": summary.model_sha256,
        "database": str(summary.database),
        "images_csv": str(summary.images_csv),
        "specimens_csv": str(summary.specimens_csv),
        "objects_parquet": str(summary.objects_parquet) if summary.objects_parquet else None,
        "report": str(summary.report) if summary.report else None,
        "failures": summary.failures,
        "ignored": summary.ignored,
        "n_unsupported": len(summary.unsupported),
        "warnings": summary.warnings,
    }
    for w in summary.warnings:
        print(f"micro-seg batch: warning: {w}", file=sys.stderr)
    if summary.unsupported and not args.quiet:
        print(f"micro-seg batch: skipped {len(summary.unsupported)} file(s) that are not supported images "
              f"({', '.join(unsupported_extensions(summary.unsupported))})", file=sys.stderr)
    if summary.n_failed and not args.quiet:
        print(f"micro-seg batch: {summary.n_failed} of {summary.n_images} image(s) failed:", file=sys.stderr)
        for f in summary.failures[:MAX_LISTED_FAILURES]:
            print(f"  {f['path']}: {f['error']}", file=sys.stderr)
        if len(summary.failures) > MAX_LISTED_FAILURES:
            print(f"  ... and {len(summary.failures) - MAX_LISTED_FAILURES} more (see images.csv)", file=sys.stderr)
    if summary.report and not args.quiet and not args.json:
        print(f"report: {summary.report}", file=sys.stderr)
    if summary.exit_code:
        result["_exit_code"] = summary.exit_code
    return result
