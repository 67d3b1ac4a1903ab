"""napari writer: save a Labels layer as a calibrated TIFF with :func:`micro_seg.io.write_labels`.

The pixel size comes from the layer's micro-seg metadata (or its micrometre
``scale``) and the class names, when the layer has them, are stored too, so
``micro-seg measure`` and the reader get the calibration back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabelsSaveError", "write_labels_layer"]


def _pixel_size(meta: dict) -> float | None:
    ms = (meta.get("metadata") or {}).get("micro_seg") or {}
    if ms.get("pixel_size_um"):
        return float(ms["pixel_size_um"])
    scale = meta.get("scale")
    units = [str(u) for u in (meta.get("units") or ())]
    if scale is not None and len(scale) >= 2 and units and all(u in ("micrometer", "um", "µm") for u in units[-2:]):
        if float(scale[-1]) == float(scale[-2]) and float(scale[-1]) != 1.0:
            return float(scale[-1])
    return None


class LabelsSaveError(OSError):
    """A Labels layer could not be saved; the message names the layer, the file and the reason."""


def write_labels_layer(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to ``path`` (.tif); returns the paths written.

    A file that cannot be written (no such folder, no permission, a full disk) or labels that are not a label
    image (negative values) raise :class:`LabelsSaveError` naming the layer, the file and the reason, and nothing
    is written. napari's save dialog shows that message as its one error notification (a writer that returned no
    path would get napari's own "save failed ... did not return any written paths" on top of ours).
    """
    import numpy as np

    from micro_seg.errors import MicroSegError
    from micro_seg.io import write_labels

    ms = (meta.get("metadata") or {}).get("micro_seg") or {}
    classes = ms.get("classes") if ms.get("kind") == "classes" else None
    try:
        out = write_labels(path, np.asarray(data), pixel_size_um=_pixel_size(meta), classes=classes)
    except (MicroSegError, OSError) as exc:
        name = meta.get("name") or "labels"
        where = "" if str(path) in str(exc) else f" to {path}"  # the engine's messages name the file already
        raise LabelsSaveError(f"Cannot save layer {name!r}{where}: {exc}") from None
    return [str(out)]
