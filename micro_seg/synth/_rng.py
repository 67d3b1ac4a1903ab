"""Shared helpers of :mod:`micro_seg.synth`: seeding and argument checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from micro_seg.errors import InvalidImageError

__all__ = ["as_rng", "check_shape", "check_positive"]


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Return a NumPy Generator from an int seed, a Generator or None."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """Validate a 2-D ``(rows, cols)`` shape and return it as a tuple of ints."""
    try:
        rows, cols = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        msg = f"shape={shape!r}: expected (rows, cols)"
        raise InvalidImageError(msg) from exc
    if rows < 1 or cols < 1:
        msg = f"shape={shape!r}: rows and cols must be >= 1"
        raise InvalidImageError(msg)
    return rows, cols


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        msg = f"{name}={value!r}: expected a number"
        raise ValueError(msg) from exc
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        kind = ">= 0" if allow_zero else "> 0"
        msg = f"{name}={value!r}: must be finite and {kind}"
        raise ValueError(msg)
    return v
