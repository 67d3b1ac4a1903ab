"""Locate the data folders shipped with micro-seg (``models/``, ``sample_images/``).

In a source checkout (or editable install) they sit at the repository root; in
an installed wheel they are bundled under ``micro_seg/_bundled/``.

Examples
--------
>>> from micro_seg.resources import models_dir
>>> models_dir().name
'models'
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["models_dir", "sample_images_dir"]

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    bundled = _PKG / "_bundled" / name
    if bundled.is_dir():
        return bundled
    return _PKG.parent / name


def models_dir() -> Path:
    """Folder holding the shipped model folders (``<name>/card.yaml`` + weights)."""
    return _find("models")


def sample_images_dir() -> Path:
    """Folder holding the shipped sample micrographs."""
    return _find("sample_images")
