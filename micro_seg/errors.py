"""Exception classes of micro-seg.

Every error a user can cause subclasses :class:`MicroSegError` *and* a builtin
(``ValueError``, ``FileNotFoundError``, ...), so callers can catch either.  The
message always names the offending file or value; the CLI prints it on one line
and exits with code 2.

Examples
--------
>>> from micro_seg.errors import InvalidImageError
>>> try:
...     raise InvalidImageError("x.tif: image is empty (0 x 5 pixels)")
... except ValueError as exc:
...     print(exc)
x.tif: image is empty (0 x 5 pixels)
"""

from __future__ import annotations

__all__ = [
    "MicroSegError",
    "InputFileNotFoundError",
    "UnsupportedFormatError",
    "InvalidImageError",
    "CorruptFileError",
    "ImageTooLargeError",
    "CalibrationError",
    "ModelError",
    "WeightsIntegrityError",
    "TrainingDataError",
    "SpecError",
    "PropertyTableError",
    "ResultsTableError",
    "CancelledError",
]


class MicroSegError(Exception):
    """Base class of all errors micro-seg raises on bad input or bad usage."""


class InputFileNotFoundError(MicroSegError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class UnsupportedFormatError(MicroSegError, ValueError):
    """The file exists but is not a format micro-seg reads."""


class InvalidImageError(MicroSegError, ValueError):
    """The pixel data cannot be analysed (empty, wrong dimensionality, NaN, ...)."""


class CorruptFileError(MicroSegError, ValueError):
    """The file claims a supported format but is truncated or corrupt."""


class ImageTooLargeError(MicroSegError, ValueError):
    """The image exceeds the decompression-bomb pixel limit."""


class CalibrationError(MicroSegError, ValueError):
    """A pixel size is missing where required, or is zero, negative or absurd."""


class ModelError(MicroSegError, ValueError):
    """A model name, folder or card is unknown or invalid."""


class WeightsIntegrityError(ModelError):
    """Weights do not match the sha256 in the model card (corrupt or tampered)."""


class TrainingDataError(MicroSegError, ValueError):
    """Training images / labels are missing, mismatched or empty."""


class SpecError(MicroSegError, ValueError):
    """A QC specification file is malformed."""


class PropertyTableError(MicroSegError, ValueError):
    """A property table cannot be read or joined."""


class ResultsTableError(MicroSegError, ValueError):
    """A batch results table (``images.csv`` / ``specimens.csv``) given to judge is not one or is malformed."""


class CancelledError(MicroSegError, RuntimeError):
    """Long-running work was cancelled by the user."""


class OutputPathError(MicroSegError, ValueError):
    """An output file or folder cannot be written where the user asked."""
