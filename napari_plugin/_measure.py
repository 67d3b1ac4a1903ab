"""Measure widget: ASTM grain size, phase fractions, defect statistics of a Labels layer.

The numbers come from :func:`micro_seg.measure.measure_grains`,
:func:`~micro_seg.measure.measure_phases` and
:func:`~micro_seg.measure.measure_defects` (run in a worker).  The widget shows
the summary (with units), a per-object table (clicking a row selects and
centres that object; the table is also set as the layer's ``features`` so
hovering an object shows its values in the status bar), a histogram of any
column, and exports both tables to CSV.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
)

from napari_plugin._common import (
    PIXEL_SIZE_DECIMALS,
    JobRunner,
    box_pixel_size,
    calibration_lost,
    disconnect_all,
    edit_history_position,
    layer_pixel_size_um,
    multiscale_problem,
    notify_error,
    notify_info,
    notify_warning,
    pixel_size_box,
    recalibrate_with_results,
    viewer_camera,
    watch_layer_events,
)
from napari_plugin._layers import connect_layer_events, layer_chooser, ms_meta, parse_class_names
from napari_plugin._table import DataFrameView

__all__ = ["MeasureWidget", "MeasureParams", "measure_job", "split_result", "summary_frame"]

KINDS = ("Grain size (E112/E1382)", "Phase fractions (E562)", "Defects / particles")
GRAINS, PHASES, DEFECTS = KINDS

# Rows shown first in the summary, with a plain-language name.
SUMMARY_NAMES = {
    "n_grains": "Grains counted",
    "G_planimetric": "G (planimetric, E112)",
    "G_intercept": "G (intercept, E112)",
    "G_intercept_ci95": "G (intercept) 95% CI (±)",
    "G_area": "G (mean area, E1382)",
    "mean_intercept_um": "Mean intercept (µm)",
    "mean_intercept_px": "Mean intercept (px)",
    "mean_area_um2": "Mean grain area (µm²)",
    "grains_per_mm2": "Grains per mm²",
    "ala_G": "ALA G (E930)",
    "mean_intercept_ra_percent": "%RA (intercept)",
    "G_planimetric_ci95": "G (planimetric) 95% CI (±)",
    "mean_intercept_ci95_um": "Mean intercept 95% CI (± µm)",
    "n_intersections": "Intersections counted",
    "phase_fractions": "Area fraction",
    "ci95": "95% CI (±)",
    "ra_percent": "%RA",
    "area_fraction_ci95": "Area fraction 95% CI (±)",
    "mean_nn_distance_um": "Mean nearest-neighbour distance (µm)",
    "mean_circularity": "Mean circularity",
    "count": "Objects counted",
    "area_fraction": "Area fraction",
    "density_per_mm2": "Number density (per mm²)",
    "mean_ecd_um": "Mean ECD (µm)",
    "max_feret_um": "Max Feret (µm)",
    "pixel_size_um": "Pixel size (µm/px)",
}


@dataclass(frozen=True)
class MeasureParams:
    labels: np.ndarray
    kind: str
    pixel_size_um: float | None
    names: tuple[str, ...] = ()
    defect_values: tuple[int, ...] = ()
    what: str = "labels"  # the layer's name, for the engine's messages
    boundaries: bool = False  # grain size of a boundary mask (non-zero = boundary), as `measure grains --boundary`
    boundary_value: float | None = None  # only this value is boundary (e.g. 1 of 1 = boundary, 2 = twin); None: all


def split_result(result: Any) -> tuple[dict, Any]:
    """Split a ``measure_*`` return value into ``(summary dict, per-object DataFrame or None)``."""
    import pandas as pd

    table = None
    if isinstance(result, tuple) and len(result) == 2:
        result, table = result
    elif hasattr(result, "summary"):
        table = getattr(result, "table", None)
        if table is None:
            table = getattr(result, "objects", None)
        result = result.summary
    summary = dict(result)
    for key in ("table", "objects", "per_object", "grains_table"):
        if table is None and isinstance(summary.get(key), (pd.DataFrame, dict)):
            table = summary.pop(key)
    if table is not None and not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(table)
    return summary, table


def summary_frame(summary: dict):
    """Flatten a summary dict into a two-column table (quantity, value), units in the names."""
    import pandas as pd

    rows: list[tuple[str, Any]] = []

    def walk(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{key}[{k}]", v)
            return
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, (list, tuple)) and len(value) > 8:
            return  # distributions belong in the per-object table / histogram
        rows.append((key, value))

    skip = {"distributions", "fields", "warnings", "image_shape", "mean_intercept_by_angle_px", "units"}
    order = [k for k in SUMMARY_NAMES if k in summary] + [k for k in summary if k not in SUMMARY_NAMES]
    for key in order:
        if key not in skip:
            walk(key, summary[key])

    def nice(key: str) -> str:
        base, _, rest = key.partition("[")
        return SUMMARY_NAMES.get(base, base) + (f" [{rest}" if rest else "")

    names = [nice(k) for k, _ in rows]
    return pd.DataFrame({"quantity": names, "value": [v for _, v in rows], "key": [k for k, _ in rows]})


def measure_job(params: MeasureParams, cancel):
    """Worker generator: run the engine's measurement (one step, not cancellable once started: a 4096² grain map
    takes about a second); returns ``(summary, table, ids_are_values)`` (see :func:`table_ids_are_layer_values`)."""
    from micro_seg import measure

    yield {"fraction": 0.1, "message": f"{params.kind.split(' (')[0].lower()}..."}
    labels = params.labels
    if params.kind == GRAINS and params.boundaries:
        # the layer's values, not != 0: the engine warns about a mask of several values (twins taken as boundaries)
        result = measure.measure_grains_from_boundaries(labels, pixel_size_um=params.pixel_size_um,
                                                        boundary_value=params.boundary_value, what=params.what)
    elif params.kind == GRAINS:
        result = measure.measure_grains(labels, pixel_size_um=params.pixel_size_um, what=params.what)
    elif params.kind == PHASES:
        kwargs = {"names": list(params.names)} if params.names else {}
        result = measure.measure_phases(labels, pixel_size_um=params.pixel_size_um, what=params.what, **kwargs)
    else:
        mask = labels if not params.defect_values else np.isin(labels, params.defect_values)
        result = measure.measure_defects(mask, pixel_size_um=params.pixel_size_um, what=params.what)
    summary, table = split_result(result)
    col = _label_column(table)
    # here, off the GUI thread: counting a huge layer's values takes a while
    ids_are_values = (col is not None and not (params.kind == GRAINS and params.boundaries)  # grains made from it
                      and table_ids_are_layer_values(table, col, labels))
    return summary, table, ids_are_values


def _label_column(table) -> str | None:
    for col in ("label", "index", "grain", "id"):
        if table is not None and col in table.columns:
            return col
    return None


def table_ids_are_layer_values(table, col: str, labels: np.ndarray) -> bool:
    """True when row ``i`` of ``table`` is the pixels of value ``table[col][i]`` in ``labels`` (same areas when the
    table has ``area_px``): then napari may show the table by pixel value (features, the selected label)."""
    ids = np.asarray(table[col], dtype=np.int64)
    if ids.size == 0:
        return True
    from micro_seg.measure.labels import label_counts

    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if labels.dtype.kind not in "ui" or top > 4 * labels.size + 1024 or ids.min() < 1 or ids.max() > top:
        return False  # floats, huge values or ids beyond the layer's values: not shown by value
    counts = label_counts(labels, top + 1)
    counts[0] = 0
    if np.count_nonzero(counts) != ids.size or not np.all(counts[ids] > 0):
        return False
    return "area_px" not in table.columns or bool(np.array_equal(counts[ids], np.asarray(table["area_px"]).astype(np.int64)))


#: Most non-zero values of a boundary mask offered under 'Boundary value' (more: not a mask of a few kinds of line).
MAX_BOUNDARY_VALUES = 16


def boundary_values(data) -> list[int]:
    """The non-zero values of boundary mask ``data`` (at most :data:`MAX_BOUNDARY_VALUES` of them, else none)."""
    from micro_seg.measure.labels import label_counts

    data = np.asarray(data)
    if data.dtype == bool:
        return [1] if data.any() else []
    if data.dtype.kind not in "ui" or not data.size or int(data.min()) < 0 or int(data.max()) > 65535:
        return []
    values = np.flatnonzero(label_counts(data, int(data.max()) + 1)[1:]) + 1
    return [int(v) for v in values] if values.size <= MAX_BOUNDARY_VALUES else []


def _set_features(layer, features) -> None:
    """Set the layer's ``features`` (its hover values) to ``features``, or clear them for ``None``."""
    import pandas as pd

    if layer is None:
        return
    try:
        layer.features = pd.DataFrame() if features is None else features
    except Exception:  # features must match label values; never block the results
        pass


class MeasureWidget(Container):
    """Dock widget: measure a Labels layer and browse the results (see module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._labels = ComboBox(label="Labels", choices=layer_chooser(
            napari_viewer, "Labels", lambda l: ms_meta(l).get("kind") != "annotations"))
        self._kind = ComboBox(label="Measure", choices=list(KINDS), value=GRAINS)
        self._boundary = CheckBox(text="Labels are a boundary mask", value=False,
                                  tooltip="Non-zero pixels are grain boundaries (a hand-traced or thresholded mask): "
                                  "the grains are the regions between them (as 'micro-seg measure grains --boundary').")
        self._boundary_value = ComboBox(label="Boundary value", choices=self._boundary_value_choices,
                                        tooltip="Which value of the mask is grain boundary (e.g. 1 where 1 = grain "
                                        "boundary, 2 = twin trace): twins are not grain boundaries for ASTM E112.")
        self._names = LineEdit(label="Class names", value="",
                               tooltip="Phase names in label order (0, 1, 2, ...), comma-separated; from the model if empty.")
        self._defect = ComboBox(label="Defect class", choices=self._defect_choices,
                                tooltip="Which class is the defect / particle phase (all non-zero for a mask).")
        self._pixel = pixel_size_box("0 = unknown: results are then in pixels.",
                                     uncalibrated_text="not calibrated (pixels)")
        self._run_btn = PushButton(text="Measure")
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=100)
        self._status = Label(label="Status", value="Pick a Labels layer (Segment result), then Measure")
        self._hist_col = ComboBox(label="Histogram of", choices=[])
        self._csv = FileEdit(label="Export to", mode="w", filter="*.csv", value=str(Path.home() / "measurements.csv"))
        self._export_btn = PushButton(text="Export CSV")
        self._show_all_btn = PushButton(text="Show all objects")
        self._runner = JobRunner(progress_bar=self._progress, status_label=self._status, run_button=self._run_btn)
        self.extend([self._labels, self._kind, self._boundary, self._boundary_value, self._names, self._defect, self._pixel, self._run_btn,
                     self._progress, self._status])
        from napari_plugin._plots import dock_figure

        self.summary_view = DataFrameView(min_height=150)
        self.table_view = DataFrameView(min_height=150)
        self.figure, self.canvas = dock_figure(height_px=170)
        layout = self.native.layout()
        layout.addWidget(self.summary_view)
        self._tail = Container(widgets=[self._hist_col], labels=True)
        layout.addWidget(self._tail.native)
        layout.addWidget(self.canvas)
        layout.addWidget(self.table_view)
        self._tail2 = Container(widgets=[self._show_all_btn, self._csv, self._export_btn], labels=True)
        layout.addWidget(self._tail2.native)

        self.summary: dict | None = None
        self.table = None
        self._measured_layer = None
        self._measured_px: float | None = None  # the measured layer's own pixel size when it was measured
        self._watched: list = []  # (event emitter, callback) connected to the measured layer
        self._measured_history = (0, 0)  # the measured layer's undo / redo position (edit_history_position)
        self._labels.changed.connect(self._labels_changed)
        self._kind.changed.connect(self._kind_changed)
        self._boundary.changed.connect(lambda _: self._kind_changed(self._kind.value))
        self._pixel.changed.connect(self._pixel_changed)
        self._run_btn.changed.connect(self.run)
        self._hist_col.changed.connect(self._draw_histogram)
        self._export_btn.changed.connect(self.export_csv)
        # CSV written -> the layer whose numbers it holds, weakly (an id() of a closed layer is reused by the next
        # layer made: that layer's export replaced the closed one's file without a word)
        self._exported: dict[str, weakref.ref] = {}
        self._csv_chosen: str | None = None  # the file the user picked (or typed) since the last export
        self._csv.changed.connect(lambda value: setattr(self, "_csv_chosen", self._csv_path(value)))
        # a file the file dialog returned (it asks before replacing a file) is picked, also the one already shown;
        # a dialog cancelled picks nothing (the file shown may hold another layer's numbers)
        self._csv.choose_btn.changed.disconnect(self._csv._on_choose_clicked)
        self._csv.choose_btn.changed.connect(self._choose_csv)
        self._show_all_btn.changed.connect(self._show_all)
        self.table_view.clicked.connect(lambda index: self.select_row(index.row()))
        connect_layer_events(napari_viewer, self)
        napari_viewer.layers.events.removed.connect(self._layer_removed)
        self.reset_choices()
        self._labels_changed(self._labels.value)

    # ------------------------------------------------------------------ inputs
    def _defect_choices(self, _widget=None) -> list[tuple[str, Any]]:
        layer = self._labels.value if hasattr(self, "_labels") else None
        classes = ms_meta(layer).get("classes") if layer is not None else None
        out: list[tuple[str, Any]] = [("all non-zero labels", None)]
        if classes and ms_meta(layer).get("kind") == "classes":
            out += [(f"{i}: {name}", i) for i, name in enumerate(classes) if i > 0]
        return out

    def _boundary_value_choices(self, _widget=None) -> list[tuple[str, Any]]:
        layer = self._labels.value if hasattr(self, "_labels") else None
        out: list[tuple[str, Any]] = [("all non-zero", None)]
        if layer is not None and getattr(self, "_boundary", None) is not None and self._boundary.value:
            out += [(str(v), v) for v in boundary_values(layer.data)]  # a boundary mask's few values only
        return out

    def _labels_changed(self, layer) -> None:
        if getattr(self, "_measured_layer", None) is not None and layer is not self._measured_layer:
            # another layer's numbers must not stay on screen (or be exported) for this one; nor as hover values on
            # the layer they came from, which is no longer watched: edited or re-segmented, it would show the old
            # grains' numbers over the new ones
            self._clear_results(drop_features=True)
        if layer is None:
            return
        ms = ms_meta(layer)
        with self._pixel.changed.blocked():
            self._pixel.value = float(layer_pixel_size_um(layer) or 0.0)
        self._auto_pixel = float(self._pixel.value)  # shown from the layer, not typed
        self._boundary.value = ms.get("kind") == "boundaries"
        if ms.get("kind") in ("grains", "boundaries"):
            self._kind.value = GRAINS
        elif ms.get("kind") == "classes":
            self._kind.value = PHASES
        # this layer's class names, or none (fractions named by value): the last layer's names would name its phases
        self._names.value = ", ".join(ms.get("classes") or []) if ms.get("kind") == "classes" else ""
        self._defect.reset_choices()
        self._kind_changed(self._kind.value)
        self._boundary_value.reset_choices()

    def _watch(self, layer) -> None:
        """Clear the results when ``layer`` (the measured one) is recalibrated (its scale or micro-seg pixel size,
        e.g. from Segment's pixel box) or edited (painted, filled, erased, its data replaced)."""
        self._unwatch()
        self._measured_px = layer_pixel_size_um(layer)
        self._measured_history = edit_history_position(layer)
        self._watched = (watch_layer_events(layer, ("scale", "metadata"), self._measured_recalibrated)
                         + watch_layer_events(layer, ("paint", "data"), self._measured_edited)
                         + watch_layer_events(layer, ("set_data",), self._measured_redrawn))

    def _unwatch(self) -> None:
        disconnect_all(self._watched)
        self._watched = []

    def _measured_recalibrated(self, *_: Any) -> None:
        layer = self._measured_layer
        if layer is not None and layer_pixel_size_um(layer) != self._measured_px:
            name = layer.name
            self._clear_results(drop_features=True)  # numbers at the old pixel size must not stay (or be exported)
            self._status.value = f"'{name}' was recalibrated: press Measure again"

    def _measured_edited(self, *_: Any) -> None:
        layer = self._measured_layer
        if layer is not None:
            name = layer.name
            self._clear_results(drop_features=True)  # the table, hover values and export are no longer its labels
            self._status.value = f"'{name}' was edited: press Measure again"

    def _measured_redrawn(self, *_: Any) -> None:
        """napari's undo / redo put pixels back without a paint event, only a redraw (``set_data``, which hiding,
        showing or refreshing the layer send too): the labels changed when the edit history moved."""
        layer = self._measured_layer
        if layer is not None and edit_history_position(layer) != self._measured_history:
            self._measured_edited()

    def _layer_removed(self, event) -> None:
        if self._measured_layer is not None and getattr(event, "value", None) is self._measured_layer:
            try:
                self._clear_results()  # a deleted layer's numbers must not stay on screen (or be exported)
            except RuntimeError:  # widget already deleted
                pass

    def _clear_results(self, *, drop_features: bool = False) -> None:
        """Clear the numbers shown; ``drop_features``: also the hover values they set on the measured layer."""
        import pandas as pd

        self._unwatch()
        if drop_features and self._measured_layer is not None:
            _set_features(self._measured_layer, None)
        self.summary = self.table = self._measured_layer = None
        self.summary_view.set_frame(pd.DataFrame())
        self.table_view.set_frame(pd.DataFrame())
        self._hist_col.choices = []
        self._draw_histogram()
        self._status.value = "Press Measure for this layer" if self._labels.value is not None else "Pick a Labels layer"

    def _kind_changed(self, kind: str) -> None:
        self._names.visible = kind == PHASES
        self._boundary.visible = kind == GRAINS
        boundary_mask = kind == GRAINS and bool(self._boundary.value)
        self._boundary_value.visible = boundary_mask
        if boundary_mask:
            self._boundary_value.reset_choices()
        self._defect.visible = kind == DEFECTS

    def _pixel_changed(self, value: float) -> None:
        """Recalibrate the layer, its image and the image's other layers (as Segment does); the numbers measured
        at the old pixel size are cleared (summary, table, hover values, export)."""
        layer = self._labels.value
        if layer is not None and value > 0:
            recalibrate_with_results(self._viewer.layers, layer, float(value))
        if self.summary is not None:
            self._clear_results(drop_features=True)

    def _params(self) -> MeasureParams | None:
        import napari.layers

        layer = self._labels.value
        if layer is None:
            active = self._viewer.layers.selection.active
            if active is not None and not isinstance(active, napari.layers.Labels):
                notify_warning(f"'{active.name}' is a {type(active).__name__} layer: Measure needs a Labels layer. "
                               "Run the Segment widget first, or open a label image as labels.")
            else:
                notify_warning("No Labels layer to measure: run the Segment widget first.")
            return None
        if multiscale_problem(layer):
            notify_warning(multiscale_problem(layer) + ".")
            return None
        data = np.asarray(layer.data)
        if data.ndim != 2:
            notify_warning(f"'{layer.name}' has {data.ndim} dimensions: Measure needs a 2-D label image.")
            return None
        if not data.any() and self._kind.value != PHASES:
            notify_warning(f"'{layer.name}' is empty (all 0): nothing to measure. Segment the image first.")
            return None
        rows = int(ms_meta(layer).get("databar_rows") or 0)
        if rows and rows < data.shape[0]:
            data = data[: data.shape[0] - rows]
        if abs(float(self._pixel.value) - getattr(self, "_auto_pixel", -1.0)) <= 0.5 * 10.0 ** -PIXEL_SIZE_DECIMALS:
            # the box still shows what the layer said when it was picked: the layer's calibration now decides (the
            # Segment widget may have recalibrated it since)
            px = layer_pixel_size_um(layer)
            with self._pixel.changed.blocked():
                self._pixel.value = float(px or 0.0)
            self._auto_pixel = float(self._pixel.value)
        else:
            px = box_pixel_size(self._pixel.value, layer)
        if px is None:
            why = calibration_lost(layer.scale, getattr(layer, "units", ()))
            notify_warning(f"'{layer.name}' has no pixel size{' (' + why + ')' if why else ''}: results are in "
                           "pixels. Type the pixel size in 'Pixel size (µm/px)' for micrometres and ASTM G.")
        names = tuple(parse_class_names(self._names.value))
        defect = self._defect.value
        return MeasureParams(labels=data, kind=self._kind.value, pixel_size_um=px, names=names,
                             defect_values=() if defect is None else (int(defect),), what=f"'{layer.name}'",
                             boundaries=bool(self._boundary.value),
                             boundary_value=self._boundary_value.value if self._boundary.value else None)

    def run(self, *_: Any):
        """Measure in a worker; returns the worker (None on bad input)."""
        params = self._params()
        if params is None:
            return None
        layer = self._labels.value
        if self._runner.running:  # before watching: the running measurement keeps its own watch
            notify_warning("A measurement is already running: wait for it to finish.")
            return None
        self._watch_run(layer)
        return self._runner.start(measure_job, params, on_done=lambda res: self._show(layer, params, res),
                                  description="Measuring")

    def _watch_run(self, layer) -> None:
        """Note whether ``layer`` is edited or recalibrated while it is measured: the worker reads its pixels (and
        was given its pixel size) when it starts, so its numbers would not describe what the layer holds when they
        arrive (and the edit came before :meth:`_watch`, which clears the numbers of later edits)."""
        self._unwatch_run()
        self._changed_while_measured = ""
        history, px = edit_history_position(layer), layer_pixel_size_um(layer)

        def edited(*_: Any) -> None:
            self._changed_while_measured = "edited"

        def redrawn(*_: Any) -> None:  # undo / redo (see _measured_redrawn)
            if edit_history_position(layer) != history:
                edited()

        def recalibrated(*_: Any) -> None:
            if layer_pixel_size_um(layer) != px:
                self._changed_while_measured = "recalibrated"

        self._run_watched = (watch_layer_events(layer, ("paint", "data"), edited)
                             + watch_layer_events(layer, ("set_data",), redrawn)
                             + watch_layer_events(layer, ("scale", "metadata"), recalibrated))

    def _unwatch_run(self) -> None:
        disconnect_all(getattr(self, "_run_watched", ()))
        self._run_watched = []

    # ------------------------------------------------------------------ outputs
    def _show(self, layer, params: MeasureParams, result: tuple[dict, Any]) -> None:
        import pandas as pd

        self._unwatch_run()
        if self._changed_while_measured:  # the numbers are of the labels as they were: never shown (or exported)
            name = getattr(layer, "name", "labels")
            notify_warning(f"'{name}' was {self._changed_while_measured} while it was measured: its numbers are not "
                           "shown; press Measure again.")
            if layer is self._labels.value:
                self._status.value = f"'{name}' was {self._changed_while_measured}: press Measure again"
            return
        if layer not in self._viewer.layers:  # closed while it was measured: its numbers have no layer to go with
            notify_info(f"'{getattr(layer, 'name', 'labels')}' was closed while it was measured: nothing to show.")
            self._status.value = ("Press Measure for this layer" if self._labels.value is not None
                                  else "Pick a Labels layer")
            return
        if layer is not self._labels.value:  # another layer was picked while this one was measured: not its numbers
            notify_info(f"Measured '{getattr(layer, 'name', 'labels')}', but another layer is picked now: press "
                        "Measure again for it.")
            self._status.value = "Press Measure for this layer"
            return
        summary, table, self._ids_are_values = result
        self.summary, self.table, self._measured_layer = summary, table, layer
        self._watch(layer)
        self.summary_view.set_frame(summary_frame(summary)[["quantity", "value"]])
        if table is not None:
            lead = [c for c in ("label", "name", "class_id") if c in table.columns]
            phys = [c for c in table.columns if c not in lead and (c.endswith(("_um", "_um2", "_per_mm2")) or "fraction" in c)
                    and not c.startswith("centroid")]
            rest = [c for c in table.columns if c not in lead and c not in phys]
            table = table[lead + phys + rest]
            self.table = table
            self.table_view.set_frame(table)
            col = _label_column(table)
            features = None  # else an earlier measurement's values would stay on hover
            if col is not None and params.kind != PHASES and layer is not None and self._ids_are_values:
                # only when the table's ids are the layer's values: napari shows features by pixel value (the
                # defects of a class map or mask are numbered by connected piece, not by value)
                features = table.copy()
                if "index" not in features.columns:
                    features.insert(0, "index", features[col].astype(int))
            _set_features(layer, features)
            numeric = [c for c in table.columns if c != col and pd.api.types.is_numeric_dtype(table[c])
                       and not c.startswith("centroid") and c != "class_id"]
            preferred = [c for c in numeric if c.endswith(("_um2", "_um"))] + numeric
            self._hist_col.choices = list(dict.fromkeys(numeric))
            if preferred:
                self._hist_col.value = preferred[0]
        else:
            import pandas as pd

            self.table_view.set_frame(pd.DataFrame())
            self._hist_col.choices = []
            _set_features(layer, None)
        self._hist_col.visible = params.kind != PHASES
        self._draw_histogram()
        for warning in summary.get("warnings") or []:
            if params.pixel_size_um is None and "pixel size" in str(warning):
                continue  # already said before measuring, with what to do
            notify_warning(str(warning))
        units = "µm" if params.pixel_size_um else "pixels"
        self._status.value = f"{params.kind.split(' (')[0]} measured ({units})"

    def _draw_histogram(self, *_: Any) -> None:
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        col = self._hist_col.value
        fractions = (self.summary or {}).get("phase_fractions")
        if isinstance(fractions, dict) and fractions:
            col = None
        if col is not None and self.table is not None and col in getattr(self.table, "columns", []):
            values = np.asarray(self.table[col], dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                ax.hist(values, bins=min(40, max(5, int(np.sqrt(values.size)))), color="#56B4E9", edgecolor="#262930")
                ax.axvline(values.mean(), color="#E69F00", lw=1.2, label=f"mean {values.mean():.3g}")
                ax.legend(fontsize=7, frameon=False, labelcolor="#d6d6d6")
            ax.set_xlabel(col, fontsize=8)
            ax.set_ylabel("count", fontsize=8)
        elif self.summary is not None:
            fr = fractions
            if isinstance(fr, dict) and fr:
                names = [str(k) for k in fr]
                ci = self.summary.get("ci95") or {}
                err = [float(ci.get(k, 0) or 0) for k in fr]
                ax.bar(names, [float(v) for v in fr.values()], yerr=err, color="#009E73", capsize=3, ecolor="#d6d6d6")
                ax.set_ylabel("area fraction (95% CI)", fontsize=8)
                ax.set_ylim(0, 1)
        ax.yaxis.label.set_color("#d6d6d6")
        from napari_plugin._plots import style_axes

        style_axes(ax)
        self.canvas.draw_idle()

    def select_row(self, row: int) -> int | None:
        """Select the object of table row ``row`` on the layer and centre the view on it."""
        layer, table = self._measured_layer, self.table
        col = _label_column(table)
        if layer is None or table is None or col is None or not (0 <= row < len(table)):
            return None
        label = int(table.iloc[row][col])
        if getattr(self, "_ids_are_values", True):  # else the id is no value of the layer: showing it alone hides all
            layer.selected_label = label
            layer.show_selected_label = True
        rows_cols = None
        for rc in (("centroid_row_px", "centroid_col_px"), ("centroid_row", "centroid_col"), ("centroid-0", "centroid-1"), ("row", "col")):
            if all(c in table.columns for c in rc):
                rows_cols = (float(table.iloc[row][rc[0]]), float(table.iloc[row][rc[1]]))
                break
        if rows_cols is None:
            rr, cc = np.nonzero(np.asarray(layer.data) == label)
            if rr.size:
                rows_cols = (float(rr.mean()), float(cc.mean()))
        if rows_cols is not None:
            # where the layer draws that pixel: its scale and its offset (translate), as napari places it
            viewer_camera(self._viewer).center = tuple(np.asarray(layer.data_to_world(rows_cols), float)[-2:])
        self.table_view.selectRow(row)
        return label

    def _show_all(self, *_: Any) -> None:
        if self._measured_layer is not None:
            self._measured_layer.show_selected_label = False

    def _choose_csv(self, *_: Any) -> None:
        """'Export to' file dialog (magicgui's own, which also sets the box): the file it returns is picked for the
        next export; nothing when it was cancelled."""
        shown = self._csv.value
        start = str(Path(str(shown)).expanduser().absolute()) if shown else None
        result = self._csv._show_file_dialog(self._csv.mode, caption=self._csv._btn_text, start_path=start,
                                             filter=self._csv.filter)
        if result:
            self._csv.value = result
            self._csv_chosen = self._csv_path(self._csv.value)

    @staticmethod
    def _csv_path(value) -> str:
        path = Path(str(value)).expanduser()
        return str(path if path.suffix.lower() == ".csv" else path.with_suffix(".csv"))

    def export_csv(self, *_: Any):
        """Write the per-object table to the chosen CSV and the summary next to it."""
        if self.summary is None:
            notify_warning("Nothing to export yet: press Measure first.")
            return None
        path = Path(self._csv_path(self._csv.value))
        chosen, self._csv_chosen = self._csv_chosen, None
        if str(path) != chosen:
            # not picked for this export: a file that is not this layer's own earlier export (another layer's, or
            # another day's numbers) is never replaced without a word; it stays, and these go next to it
            free, k = path, 2
            while ((self._exported.get(str(free)) or (lambda: None))() is not self._measured_layer
                   and any(p.exists() for p in (free, free.with_name(free.stem + "_summary.csv")))):
                free, k = path.with_name(f"{path.stem}_{k}.csv"), k + 1
            if free != path:
                notify_warning(f"{path.name} holds other measurements: they are kept, and these go to {free.name} "
                               "(pick the file under 'Export to' to replace it).")
                path = free
        summary_path = path.with_name(path.stem + "_summary.csv")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame = summary_frame(self.summary)[["key", "value"]]
            frame.to_csv(summary_path, index=False)
            if self.table is not None:
                self.table.to_csv(path, index=False)
        except OSError as exc:
            notify_error(f"{path}: cannot write ({exc.strerror or exc}); choose another file under 'Export to'.")
            return None
        if self._measured_layer is not None:
            self._exported[str(path)] = weakref.ref(self._measured_layer)
        written = [str(summary_path)] + ([str(path)] if self.table is not None else [])
        notify_info("Wrote " + " and ".join(written))
        self._status.value = f"Exported {Path(written[-1]).name}"
        return written
