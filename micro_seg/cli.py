"""Command-line interface (see ``../shared/CONTRACT.md`` for the stable contract).

Each sub-command lives in its own module under :mod:`micro_seg.commands` and
exposes ``register(subparsers)``; the parser it adds sets ``func`` to a callable
``func(args) -> dict | int``.  A returned ``dict`` is the command's result: it is
printed as one JSON object with ``--json`` or as readable text otherwise.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr naming the
file and the problem), 3 a batch finished with failed images, 1 an internal
error (a bug: one line, plus the traceback only with ``--debug``).

Examples
--------
>>> from micro_seg.cli import main
>>> main(["--version"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import traceback
from typing import Sequence

from micro_seg import __version__
from micro_seg.errors import MicroSegError
from micro_seg.jsonable import to_jsonable  # re-exported: scripts import it from here

__all__ = ["main", "build_parser", "to_jsonable"]

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_BATCH_FAILED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _print_human(result: dict) -> None:
    """YAML-like lines: nested mappings indented, a list of mappings (qc's results, reasons) one '-' item each.

    >>> _print_human({"counts": {"pass": 1}, "results": [{"path": "a.tif", "reasons": [{"check": "blur"}]}, {}]})
    counts:
      pass: 1
    results:
      - path: a.tif
        reasons:
          - check: blur
      - {}
    """
    for line in _human_lines(result, ""):
        # a path whose name is not UTF-8 (surrogate escapes) shows as \xe9: on a strict UTF-8 stdout it was a
        # UnicodeEncodeError traceback once the work was done
        print(line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def _human_lines(result: dict, indent: str) -> list[str]:
    lines = []
    for key, value in result.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key}:", *_human_lines(value, indent + "  ")]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{key}:")
            for item in value:
                item_lines = _human_lines(item, indent + "    ") or [indent + "    {}"]
                # the item's first line carries the dash in place of its indentation
                lines += [f"{indent}  - {item_lines[0][len(indent) + 4:]}", *item_lines[1:]]
        elif isinstance(value, float):
            lines.append(f"{indent}{key}: {value:.6g}")
        else:
            lines.append(f"{indent}{key}: {value}")
    return lines


def _command_modules() -> list[str]:
    import micro_seg.commands as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered."""
    parser = _Parser(
        prog="micro-seg",
        description="Segment and measure micrographs of materials (ASTM E112/E1382/E930/E562).",
    )
    parser.add_argument("--version", action="version", version=f"micro-seg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _command_modules():
        module = importlib.import_module(f"micro_seg.commands.{name}")
        module.register(sub)
    return parser


def _sigterm_as_interrupt():
    """While a command runs, SIGTERM (a scheduler's or ``kill``'s stop) ends it as Ctrl-C does: the batch records
    what finished, marks the run interrupted and rewrites its tables, and the exit is 130 with one line, instead
    of dying at once with the run left 'running'. Returns the function that puts the old handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, _interrupt)
    except (ValueError, OSError):  # not settable here
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, old)


def _input_named(args: argparse.Namespace) -> str | None:
    """The one input file or folder a command was given (named in an out-of-memory error), if it was given one."""
    for name in ("path", "image", "images", "inputs", "in_dir", "images_dir", "data_dir"):
        value = getattr(args, name, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if len(value) == 1 else None
        if value:
            return str(value)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (testable)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help/--version/usage errors
        return int(exc.code or 0)
    if not getattr(args, "func", None):  # bad usage: one line on stderr, as for every other usage error
        print("micro-seg: error: no command given (micro-seg --help lists them)", file=sys.stderr)
        return EXIT_BAD_INPUT
    restore = _sigterm_as_interrupt()
    try:
        result = args.func(args)
    except MicroSegError as exc:
        print(f"micro-seg: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("micro-seg: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        what = _input_named(args)
        print(f"micro-seg: error: {what + ': ' if what else ''}out of memory (try a smaller image or fewer workers)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: one line, never a traceback unless asked
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"micro-seg: internal error: {type(exc).__name__}: {exc} (re-run with --debug)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        restore()
    if isinstance(result, int):
        return result
    code = EXIT_OK
    if isinstance(result, dict) and "_exit_code" in result:
        code = int(result.pop("_exit_code"))
    if result is not None:
        if getattr(args, "json", False):
            print(json.dumps(to_jsonable(result)))
        else:
            _print_human(to_jsonable(result))
    return code


def main_entry() -> None:
    """Console-script entry point: ``sys.exit(main())``.

    A reader that stops early (``micro-seg models list | head -1``) closes the
    pipe: that ends the command quietly, as the Python docs advise, instead of
    printing a traceback.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout again at exit
        code = 1
    sys.exit(code)
