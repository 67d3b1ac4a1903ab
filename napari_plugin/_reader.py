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
            "magnification": (micrograph.meta or {}).get("magnification"),  # QC specs may check it
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


def labels_layer_data(path, labels, pixel_size_um: float | None, *,
                      calibration_source: str = "tiff-resolution") -> LayerData:
    """napari Labels layer data of a label image micro-seg wrote (:func:`micro_seg.io.is_written_labels`), so that
    a saved segmentation or edit opens as labels (Measure lists it), calibrated, with its class names."""
    from micro_seg.io import labels_are_instances, labels_classes

    classes = labels_classes(path)
    ms: dict[str, Any] = {"path": str(path), "pixel_size_um": pixel_size_um,
                          "calibration_source": calibration_source if pixel_size_um else None, "databar_rows": 0}
    if classes:  # a class map (value i = classes[i]): Measure offers phase fractions with these names
        ms.update(kind="classes", classes=classes)
    elif labels_are_instances(path):  # grains (or defects), each its own number: File > Save records it again
        ms["instances"] = True
    kwargs: dict[str, Any] = {"name": Path(str(path)).stem, "metadata": {"micro_seg": ms}}
    if pixel_size_um:
        kwargs["scale"] = (pixel_size_um, pixel_size_um)
        kwargs["units"] = ("um", "um")
    return (labels, kwargs, "labels")


def read_paths(path: str | list[str]) -> list[LayerData]:
    """Read one or more micrographs.

    A file micro-seg cannot read gives an error notification that names the
    file, the problem and what to do (never a traceback); an uncalibrated one a
    warning saying how to set the pixel size; the reader's own warnings (only page 0 of a multi-page file read,
    content not what the extension says, ...) are shown, naming the file.  When nothing could be read the
    reader returns napari's "empty file" sentinel ``[(None,)]``.
    """
    from micro_seg.errors import CorruptFileError, MicroSegError
    from micro_seg.io import is_written_labels, read_labels, read_micrograph
    from napari_plugin._common import notify_error, notify_warning

    paths = [path] if isinstance(path, str) else list(path)
    out: list[LayerData] = []
    for p in paths:
        try:
            if is_written_labels(p):  # a label image micro-seg wrote opens as labels, as it was saved
                labels, px = read_labels(p)
                out.append(labels_layer_data(p, labels, px))
                continue
            micrograph = read_micrograph(p)
        except (MicroSegError, OSError) as exc:
            # the re-export hint only where the file itself is broken: a too large image, NaN pixels or a bad
            # calibration are said by the engine with what to do (a trusted large file needs a raised limit)
            broken = isinstance(exc, CorruptFileError) or not isinstance(exc, MicroSegError)
            notify_error(f"Cannot open {Path(p).name}: {exc}" + (
                ". Check the file is a complete TIFF/PNG/JPEG/BMP micrograph (re-export it if needed)." if broken else ""))
            continue
        for text in micrograph.reader_warnings:  # e.g. only page 0 of a stack is read
            notify_warning(text if Path(p).name in text else f"{Path(p).name}: {text}")
        if not micrograph.pixel_size_um:
            notify_warning(f"{Path(p).name} has no pixel-size calibration: measurements will be in pixels. "
                           "Type the pixel size in the Segment or Measure widget ('Pixel size (µm/px)').")
        out.append(micrograph_layer_data(micrograph))
    return out or [(None,)]
