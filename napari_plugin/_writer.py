"""napari writer: save a Labels layer as a calibrated TIFF with :func:`micro_seg.io.write_labels`.

The pixel size is the one the layer shows (its ``scale`` in a length unit,
else its micro-seg metadata) and the class names, when the layer has them, are stored too, so
``micro-seg measure`` and the reader get the calibration back.  The rows of an SEM data bar (a Segment
result's ``databar_rows``) are left out, as ``micro-seg segment`` leaves them out of its labels.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LabelsSaveError", "write_labels_layer"]


def _pixel_size(meta: dict) -> float | None:
    from napari_plugin._common import shown_pixel_size_um

    ms = (meta.get("metadata") or {}).get("micro_seg") or {}
    return shown_pixel_size_um(ms.get("pixel_size_um"), meta.get("scale"), meta.get("units") or ())


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
    from napari_plugin._common import calibration_lost, notify_warning

    ms = (meta.get("metadata") or {}).get("micro_seg") or {}
    classes = ms.get("classes") if ms.get("kind") == "classes" else None
    px = _pixel_size(meta)
    lost = calibration_lost(meta["scale"], meta.get("units") or ()) if px is None and meta.get("scale") is not None \
        else None
    # a multiscale (pyramid) layer: its full resolution, the level its scale is that of (numpy reads the smallest)
    labels = np.asarray(data[0] if meta.get("multiscale") else data)
    bar = int(ms.get("databar_rows") or 0)
    if bar and labels.ndim == 2 and bar < labels.shape[0]:
        # the rows of the SEM data bar are no part of the labels (Measure leaves them out): a file with them would
        # measure them as background (G and phase fractions off); segment and batch write the rows above the bar too
        labels = labels[: labels.shape[0] - bar]
    try:
        # instances recorded (a grain layer, or a reopened instance file) so that micro-seg train never reads
        # each grain number as a class
        out = write_labels(path, labels, pixel_size_um=px, classes=classes,
                           instances=ms.get("kind") == "grains" or bool(ms.get("instances")))
    except (MicroSegError, OSError) as exc:
        name = meta.get("name") or "labels"
        where = "" if str(path) in str(exc) else f" to {path}"  # the engine's messages name the file already
        raise LabelsSaveError(f"Cannot save layer {name!r}{where}: {exc}") from None
    if lost:  # saved, but without a calibration the layer seemed to have
        notify_warning(f"Saved layer {meta.get('name') or 'labels'!r} to {out} without a pixel size: {lost}.")
    return [str(out)]
