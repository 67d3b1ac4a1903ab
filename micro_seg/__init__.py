"""micro-seg: micrographs of materials -> standards-grade numbers in physical units.

The engine is headless: importing :mod:`micro_seg` or any engine module never
imports napari or Qt.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
