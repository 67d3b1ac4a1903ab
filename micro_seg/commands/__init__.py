"""CLI sub-commands: each module exposes ``register(subparsers)`` (see :mod:`micro_seg.cli`)."""

from __future__ import annotations

import os
from pathlib import Path


def check_output_folder(path: str | os.PathLike | None, flag: str) -> None:
    """Refuse an output folder that cannot be one (an existing file, or a file on its path), naming ``flag``.

    Called before any work, so that a run never fails at its end for want of a place to write.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     try:
    ...         check_output_folder(Path(f.name) / "sub", "--out")
    ...     except ValueError as exc:
    ...         print(str(exc).split(": ", 1)[1].split(":")[0])
    --out cannot be created
    """
    from micro_seg.errors import OutputPathError

    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{path}: {flag} is an existing file, not a folder")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{path}: {flag} cannot be created: {parent} is a file, not a folder")
            break
