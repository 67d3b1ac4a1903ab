"""Properties widget: link a batch's results to a property table and fit Hall-Petch.

Load a batch output folder and a property table (CSV / XLSX / Parquet), pick the
sample-id column, the relation and the property column, press **Fit**: the
engine (:func:`micro_seg.properties.link`) aggregates the fields per sample,
joins, fits with 95% confidence intervals and reports the samples that did not
match.  The joined table and the plot (property vs d^-1/2 with confidence and
prediction bands) are shown in the dock; **Save plot** writes a PNG.  The
reference section gives a literature yield-strength range for a grain size.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton

from napari_plugin._common import notify_error, notify_info, notify_warning
from napari_plugin._table import DataFrameView

__all__ = ["PropertiesWidget"]

_NONE = "(choose)"
_RELATION = "property vs d^-1/2 (fit, bands)"
_PRED = "predicted vs measured"


class PropertiesWidget(Container):
    """Dock widget: processing - structure - property linking."""

    def __init__(self, napari_viewer=None):
        super().__init__(labels=True)
        from micro_seg.properties import reference_materials

        self._viewer = napari_viewer
        self._props_columns: list[str] = []
        self._results = FileEdit(label="Batch results", mode="d", value=str(Path.home() / "micro-seg-results"))
        self._table = FileEdit(label="Property table", mode="r", filter="*.csv *.tsv *.xlsx *.parquet")
        self._on = ComboBox(label="Sample id column", choices=[_NONE])
        self._relation = ComboBox(label="Relation", choices=["hall-petch", "hardness", "linear"], value="hall-petch")
        self._property = ComboBox(label="Property (unit in name)", choices=[_NONE])
        self._d = ComboBox(label="Grain size d", choices=["mean_intercept_um", "mean_ecd_um"], value="mean_intercept_um")
        self._mapping = LineEdit(label="Image -> sample", value="folder")
        self._plot = ComboBox(label="Plot", choices=[_RELATION, _PRED])
        self._fit_button = PushButton(text="Fit")
        self._save_button = PushButton(text="Save plot…")
        self._status = Label(value="Load a batch output folder and a property table.")
        self._material = ComboBox(label="Reference material", choices=reference_materials(), value="low-carbon-steel")
        self._ref_d = FloatSpinBox(label="d (µm)", value=20.0, min=0.01, max=100000.0, step=1.0)
        self._ref_button = PushButton(text="Reference range")
        self._ref_result = Label(value="")
        self.extend([self._results, self._table, self._on, self._relation, self._property, self._d, self._mapping,
                     self._fit_button, self._plot, self._save_button, self._status,
                     self._material, self._ref_d, self._ref_button, self._ref_result])
        self._table.changed.connect(self._load_table)
        self._relation.changed.connect(self._relation_changed)
        self._fit_button.changed.connect(self.fit)
        self._save_button.changed.connect(self._save_plot)
        self._ref_button.changed.connect(self.reference)
        self._plot.changed.connect(lambda *_: self.last_result is not None and self._draw(self.last_result))
        self.last_result = None

        from napari_plugin._plots import dock_figure

        self.table_view = DataFrameView(min_height=150)
        self.figure, self.canvas = dock_figure(height_px=240, figsize=(3.8, 2.6))
        layout = self.native.layout()
        layout.addWidget(self.canvas)
        layout.addWidget(self.table_view)

    # ------------------------------------------------------------------ actions
    def _load_table(self, *_):
        from micro_seg.errors import MicroSegError
        from micro_seg.properties import parse_unit, read_property_table

        path = Path(str(self._table.value))
        if not path.is_file():
            return
        try:
            frame = read_property_table(path)
        except MicroSegError as exc:
            notify_error(f"{exc}. Choose a CSV, XLSX or Parquet table with one row per sample.")
            return
        cols = [str(c) for c in frame.columns]
        self._props_columns = cols
        self._on.choices = cols
        self._on.value = next((c for c in cols if "sample" in c.lower() or c.lower() in ("id", "specimen")), cols[0])
        with_units = [c for c in cols if parse_unit(c)[1] is not None]
        self._property.choices = with_units or [_NONE]
        guess = self._guess_property(with_units)
        if guess:
            self._property.value = guess
        if not with_units:
            notify_warning(f"{path.name}: no column carries a unit (e.g. 'yield_strength_MPa'); rename the property "
                           "columns so the fit knows its units.")
        self._status.value = f"{path.name}: {len(frame)} rows, {len(cols)} columns"

    def _guess_property(self, columns: list[str]) -> str | None:
        """The property column the chosen relation most likely fits: a yield strength in a stress unit for
        Hall-Petch (a hardness listed first is not one), a hardness for the hardness relation."""
        from micro_seg.properties import parse_unit
        from micro_seg.properties.link import _is_hardness_name, stress_unit

        hard = [c for c in columns if _is_hardness_name(c) or str(parse_unit(c)[1]).upper().startswith(("HV", "HB", "HR"))]
        stress = [c for c in columns if stress_unit(parse_unit(c)[1]) is not None and c not in hard]
        yield_ = [c for c in stress if any(h in c.lower() for h in ("yield", "proof", "rp0"))]
        order = (hard + yield_ + stress) if self._relation.value == "hardness" else (yield_ + stress + hard)
        return order[0] if order else None

    def _relation_changed(self, *_):
        """Hall-Petch chosen with a hardness column picked (or the hardness relation with a strength): pick the
        column that relation fits, if the table has one."""
        from micro_seg.properties import parse_unit
        from micro_seg.properties.link import _is_hardness_name, stress_unit

        current = self._property.value
        if not self._props_columns or current == _NONE:
            return
        is_stress = stress_unit(parse_unit(current)[1]) is not None and not _is_hardness_name(current)
        if (self._relation.value == "hall-petch" and not is_stress) or (self._relation.value == "hardness" and is_stress):
            guess = self._guess_property([str(c) for c in self._property.choices])
            if guess:
                self._property.value = guess

    def fit(self, *_):
        """Run the engine's link + fit and show the table and the plot."""
        from micro_seg.errors import MicroSegError
        from micro_seg.properties import link

        self._clear_result()  # a failed fit must not leave the previous one on screen (or for Save plot)
        if not self._props_columns or self._property.value == _NONE:
            self._status.value = "-"
            notify_error("Load a property table first (a column per sample id and a property column with its unit).")
            return None
        self._status.value = "Fitting..."
        try:
            result = link(Path(str(self._results.value)), Path(str(self._table.value)), on=self._on.value,
                          relation=self._relation.value, property=self._property.value, d=self._d.value,
                          mapping=self._mapping.value.strip() or "folder")
        except MicroSegError as exc:
            self._status.value = f"Fit failed: {exc}"
            notify_error(f"{exc}")
            return None
        self.last_result = result
        s = result.summary
        fit = s["fit"]
        if fit["relation"] == "linear":
            r2 = "n/a" if fit["r2"] is None else f"{fit['r2']:.3f}"  # None: one property value for all samples
            self._status.value = f"linear fit: R² {r2}, LOO-CV RMSE {fit['cv_rmse'] or float('nan'):.3g}"
        else:
            p0 = "sigma0" if fit["relation"] == "hall-petch" else "H0"
            self._status.value = (f"{p0} = {fit[p0]:.1f} ± {fit[p0 + '_ci95']:.1f} {fit['units'][p0]},  "
                                  f"k = {fit['k']:.3f} ± {fit['k_ci95']:.3f} {fit['units']['k']}  (n = {fit['n']})")
        for warning in result.warnings:  # what `micro-seg link` prints: a k that is not positive, unmatched ids...
            notify_warning(warning)
        if s["unmatched"] and not any("matched on one side only" in w for w in result.warnings):
            notify_warning(f"Not matched (listed, not dropped): {', '.join(s['unmatched'])}")
        if not s["unmatched"]:
            notify_info(f"{s['n_matched']} samples matched")
        self.table_view.set_frame(result.samples)
        from micro_seg.properties.plots import processing_columns

        self._plot.choices = [_RELATION, _PRED] + [f"d vs {c}" for c in processing_columns(result)]
        self._draw(result)
        return result

    def _clear_result(self) -> None:
        import pandas as pd

        self.last_result = None
        self._status.value = "-"
        self.table_view.set_frame(pd.DataFrame())
        self.figure.clear()
        self.canvas.draw()

    def _plot_into(self, result, fig) -> None:
        """Draw the plot chosen under 'Plot' into ``fig``."""
        from micro_seg.properties.plots import (
            hall_petch_figure, predicted_vs_measured_figure, structure_vs_processing_figure,
        )

        choice = self._plot.value
        if choice == _PRED:
            predicted_vs_measured_figure(result, fig=fig)
        elif choice and choice.startswith("d vs "):
            structure_vs_processing_figure(result, choice[len("d vs "):], fig=fig)
        else:
            hall_petch_figure(result, fig=fig)

    def _draw(self, result) -> None:
        from napari_plugin._plots import style_axes

        self.figure.clear()
        self._plot_into(result, self.figure)
        style_axes(*self.figure.axes)
        for ax in self.figure.axes:
            ax.title.set_fontsize(7)
            ax.yaxis.label.set_color("#d6d6d6")
        self.canvas.draw()

    def _save_plot(self, *_):
        if self.last_result is None:
            notify_error("Fit first, then save the plot.")
            return
        from magicgui.widgets import request_values

        values = request_values(path={"annotation": Path, "options": {"mode": "w", "filter": "*.png"}})
        if values and values.get("path"):
            return self.save_plot(values["path"])
        return None

    def save_plot(self, path):
        """Write the plot shown (the one chosen under 'Plot') to ``path`` as a PNG; returns the path, or None."""
        from matplotlib.figure import Figure

        from micro_seg.properties.plots import save_figure

        if self.last_result is None:
            notify_error("Fit first, then save the plot.")
            return None
        fig = Figure(figsize=(6.0, 4.2), dpi=110, layout="constrained")  # the engine's plot size, light theme
        self._plot_into(self.last_result, fig)
        try:
            saved = save_figure(fig, path)
        except OSError as exc:
            notify_error(f"{path}: cannot write the plot ({exc.strerror or exc}); choose another file.")
            return None
        notify_info(f"saved {saved}")
        return saved

    def reference(self, *_):
        """Literature yield-strength range for the chosen material at grain size d."""
        from micro_seg.errors import MicroSegError
        from micro_seg.properties import predict_from_reference

        try:
            r = predict_from_reference(self._material.value, float(self._ref_d.value))
        except MicroSegError as exc:
            notify_error(str(exc))
            return None
        text = f"{r['yield_strength_MPa_low']:.0f}–{r['yield_strength_MPa_high']:.0f} MPa (literature, indicative)"
        if r["warnings"]:
            text += "  ⚠ " + r["warnings"][0]
        self._ref_result.value = text
        return r
