"""Pixel-size handling shared by the measurement modules."""

from __future__ import annotations

import math

import numpy as np

from micro_seg.errors import CalibrationError
from micro_seg.io_calibration import MAX_PIXEL_SIZE_UM, MIN_PIXEL_SIZE_UM

__all__ = ["check_pixel_size", "as_input_array", "NO_SCALE_WARNING"]

NO_SCALE_WARNING = (
    "no pixel size: lengths and areas are reported in pixels (the *_px keys); "
    "the *_um, *_per_mm2 and G values are null because they cannot be computed without a scale"
)


def check_pixel_size(pixel_size_um: float | None) -> float | None:
    """Validate a pixel size in micrometres (None = uncalibrated).

    Examples
    --------
    >>> check_pixel_size(0.5), check_pixel_size(None)
    (0.5, None)
    """
    if pixel_size_um is None:
        return None
    if isinstance(pixel_size_um, (bool, np.bool_)):  # float(True) is 1.0: a flag mistaken for a size
        msg = f"pixel_size_um={pixel_size_um!r}: not a number of micrometres"
        raise CalibrationError(msg)
    try:
        value = float(pixel_size_um)
    except (TypeError, ValueError):
        msg = f"pixel_size_um={pixel_size_um!r}: not a number"
        raise CalibrationError(msg) from None
    if not math.isfinite(value) or value <= 0:
        msg = f"pixel_size_um={pixel_size_um!r}: must be a positive finite number of micrometres"
        raise CalibrationError(msg)
    if not MIN_PIXEL_SIZE_UM <= value <= MAX_PIXEL_SIZE_UM:  # the range the CLI and the file readers accept
        msg = (f"pixel_size_um={pixel_size_um!r}: implausible pixel size (expected {MIN_PIXEL_SIZE_UM:g} .. "
               f"{MAX_PIXEL_SIZE_UM:g} um)")
        raise CalibrationError(msg)
    return value


def as_input_array(data, what: str) -> np.ndarray:
    """``np.asarray(data)``, refusing what it would turn into a wrong or unhelpful array: a masked array (its
    mask would be dropped and the masked pixels measured, or segmented, as any other), and nested lists of
    unequal lengths or other objects (numpy's own error names neither the input nor the problem).

    >>> try:
    ...     as_input_array(np.ma.masked_array([[1, 2]], mask=[[0, 1]]), "labels")
    ... except ValueError as exc:
    ...     print(str(exc)[:40])
    labels: a masked array: its mask would b
    >>> try:
    ...     as_input_array([[1, 2], [1]], "labels")
    ... except ValueError as exc:
    ...     print(exc)
    labels: not an image: rows of unequal length or values that are not numbers
    """
    import os

    from micro_seg.errors import InvalidImageError

    if isinstance(data, (str, bytes, os.PathLike)):  # np.asarray makes a 0-d string "image" of it
        raise InvalidImageError(f"{what}: got the file name {os.fsdecode(data)!r}, not pixels: read it first "
                                "(micro_seg.io.read_micrograph, or read_labels for a label image)")
    if isinstance(data, np.ma.MaskedArray):
        raise InvalidImageError(f"{what}: a masked array: its mask would be ignored; give the masked pixels a "
                                "value of their own (x.filled(value); for phases a class passed as ignore_index) "
                                "or crop them out")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.dtype.kind in "OUSV":
        raise InvalidImageError(f"{what}: not an image: rows of unequal length or values that are not numbers")
    return arr
