"""napari reader: opens what :func:`micro_seg.io.read_micrograph` reads, calibrated.

The layer ``scale`` is the pixel size in micrometres (and ``units`` are set to
micrometres) when the file carries a calibration; the micro-seg metadata
(calibration source, SEM data-bar rows, ...) is kept in ``layer.metadata``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

__all__ = ["get_reader", "micrograph_layer_data"]

LayerData = tuple[Any, dict, str]


def _supported(path: str) -> bool:
    from micro_seg.io import SUPPORTED_EXTENSIONS

    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader function for ``path`` or ``None`` when micro-seg does not handle it.

    Never raises: napari then tries other readers.
    """
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(isinstance(p, str) and _supported(p) for p in paths):
        return None
    return read_paths


def micrograph_layer_data(micrograph) -> LayerData:
    """Turn a :class:`micro_seg.io.Micrograph` into napari image layer data."""
    data = micrograph.data
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    meta = {
        "micro_seg": {
            "path": str(micrograph.path) if micrograph.path else None,
            "pixel_size_um": micrograph.pixel_size_um,
            "calibration_source": micrograph.calibration_source,
            "databar_rows": micrograph.databar_rows,
        }
    }
    kwargs: dict[str, Any] = {
        "name": Path(str(micrograph.path)).stem if micrograph.path else "micrograph",
        "rgb": rgb,
        "metadata": meta,
    }
    if micrograph.pixel_size_um:
        kwargs["scale"] = (micrograph.pixel_size_um, micrograph.pixel_size_um)
        kwargs["units"] = ("um", "um")
    return (data, kwargs, "image")


def read_paths(path: str | list[str]) -> list[LayerData]:
    """Read one or more micrographs; unreadable files raise a one-line error napari shows."""
    from micro_seg.io import read_micrograph

    paths = [path] if isinstance(path, str) else list(path)
    return [micrograph_layer_data(read_micrograph(p)) for p in paths]
