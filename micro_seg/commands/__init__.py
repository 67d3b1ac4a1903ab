"""CLI sub-commands: each module exposes ``register(subparsers)`` (see :mod:`micro_seg.cli`)."""

#: ``--page`` help of every command that reads an image (micro_seg.io.read_micrograph's ``page``).
PAGE_HELP = ("page of a multi-page file, counting every page from 0 (default: the first that is not a "
             "reduced-resolution preview, with a warning naming the pages not read)")

#: ``--databar-rows`` help of every command that reads micrographs for analysis (read_micrograph's ``databar_rows``).
DATABAR_HELP = ("rows of the SEM data bar at the bottom, excluded from analysis: auto (default) detects it, 0 = no "
                "bar, N = exactly the bottom N rows (use it where the detector misses a bar or cuts real microstructure)")


def databar_arg(text: str) -> int | None:
    """``--databar-rows`` as given: ``auto`` -> None (detect), else a whole number of rows >= 0.

    Examples
    --------
    >>> databar_arg("auto") is None, databar_arg("0"), databar_arg("48")
    (True, 0, 48)
    """
    import argparse

    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a whole number of rows") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be auto or >= 0 (0 = no data bar)")
    return value


def add_databar_option(parser, help_more: str = "") -> None:
    """Add ``--databar-rows auto|N`` (dest ``databar_rows``, default None = detect); ``help_more`` ends its help
    with what it means for this command."""
    parser.add_argument("--databar-rows", type=databar_arg, default=None, metavar="auto|N", dest="databar_rows",
                        help=DATABAR_HELP + help_more)


def note_model_replaced(out) -> None:
    """Say on stderr, before training starts, that ``out`` already holds a model, which the run replaces when it
    ends and keeps in ``out/previous`` (:func:`micro_seg.registry.keep_previous_model`)."""
    import sys
    from pathlib import Path

    from micro_seg.registry import CARD_FILE, PREVIOUS_DIR

    out = Path(out)
    if (out / CARD_FILE).is_file():
        print(f"note: {out} already holds a model; training replaces it when it ends and keeps it in "
              f"{out / PREVIOUS_DIR} (--model {out / PREVIOUS_DIR})", file=sys.stderr, flush=True)
