"""GUI test of the Properties widget: results + property table -> Hall-Petch fit with known constants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

S0, K = 80.0, 0.65
SPECS = {"A": 6.0, "B": 12.0, "C": 25.0, "D": 50.0, "E": 100.0}


def _inputs(tmp_path, ids=None, col="yield_strength_MPa"):
    rng = np.random.default_rng(0)
    rows = [{"path": f"in/{s}/f{i}.tif", "status": "ok", "error": "", "mean_intercept_um": d * (1 + rng.normal(0, 0.02))}
            for s, d in SPECS.items() for i in range(4)]
    res = tmp_path / "results"
    res.mkdir()
    pd.DataFrame(rows).to_csv(res / "images.csv", index=False)
    ids = list(SPECS) if ids is None else ids
    props = tmp_path / "props.csv"
    pd.DataFrame({"sample_id": ids,
                  col: [S0 + K * (SPECS.get(i, 20.0) * 1e-6) ** -0.5 for i in ids]}).to_csv(props, index=False)
    return res, props


def test_properties_widget_fits_known_constants(make_napari_viewer, tmp_path, notes):
    from napari_plugin._properties import PropertiesWidget

    res, props = _inputs(tmp_path, ids=["A", "B", "C", "D", "E", "Z"])
    viewer = make_napari_viewer()
    w = PropertiesWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._results.value = res
    w._table.value = props
    assert w._on.value == "sample_id" and w._property.value == "yield_strength_MPa"
    result = w.fit()
    fit = result.summary["fit"]
    assert fit["k"] == pytest.approx(K, abs=0.05) and fit["sigma0"] == pytest.approx(S0, abs=15)
    assert "k = 0.6" in w._status.value and "MPa·m^0.5" in w._status.value
    assert result.summary["unmatched_properties"] == ["Z"]
    assert any(s == "warning" and "Z" in m for s, m in notes)  # unmatched are reported, not dropped
    assert w.table_view.model().rowCount() == 5
    assert len(w.figure.axes) == 1 and w.figure.axes[0].get_xlabel().startswith("d$^{-1/2}$")
    w._plot.value = "predicted vs measured"
    assert w.figure.axes[0].get_xlabel() == "predicted yield_strength_MPa"


def test_properties_widget_table_without_units_says_what_to_do(make_napari_viewer, tmp_path, notes):
    from napari_plugin._properties import PropertiesWidget

    res, props = _inputs(tmp_path, col="yield")
    viewer = make_napari_viewer()
    w = PropertiesWidget(viewer)
    w._results.value = res
    w._table.value = props
    assert w.fit() is None
    msgs = " ".join(m for _, m in notes)
    assert "unit" in msgs and "yield_strength_MPa" in msgs


def test_properties_widget_reference_range(make_napari_viewer):
    from napari_plugin._properties import PropertiesWidget

    w = PropertiesWidget(make_napari_viewer())
    w._material.value = "copper"
    w._ref_d.value = 25.0
    r = w.reference()
    x = (25e-6) ** -0.5
    assert r["yield_strength_MPa_low"] == pytest.approx(20 + 0.10 * x)
    assert "MPa" in w._ref_result.value


def test_properties_widget_shows_the_fits_warnings(make_napari_viewer, tmp_path, notes):
    """Strength falling with finer grains (a pairing mistake): the CLI warned that k is not positive, the widget
    showed only the fit line."""
    from napari_plugin._properties import PropertiesWidget

    res, props = _inputs(tmp_path)
    table = pd.read_csv(props)
    table["yield_strength_MPa"] = table["yield_strength_MPa"].to_numpy()[::-1]  # paired the wrong way round
    table.to_csv(props, index=False)
    w = PropertiesWidget(make_napari_viewer())
    w._results.value, w._table.value = res, props
    result = w.fit()
    assert result.summary["fit"]["k"] < 0
    assert any(s == "warning" and "is not positive" in m for s, m in notes), notes



def _fitted_widget(viewer, tmp_path):
    from napari_plugin._properties import PropertiesWidget

    res, props = _inputs(tmp_path)
    w = PropertiesWidget(viewer)
    w._results.value, w._table.value = res, props
    assert w.fit() is not None
    return w


def test_properties_save_plot_saves_the_plot_shown_and_reports_a_bad_path(make_napari_viewer, tmp_path, monkeypatch,
                                                                           notes):
    """Save plot always wrote the Hall-Petch plot, and a folder that does not exist gave a traceback."""
    from napari_plugin._properties import _PRED, _RELATION

    w = _fitted_widget(make_napari_viewer(), tmp_path)
    chosen = {}
    monkeypatch.setattr("magicgui.widgets.request_values", lambda **_: {"path": chosen["path"]})
    saved = {}
    for plot in (_RELATION, _PRED):
        w._plot.value = plot
        chosen["path"] = tmp_path / f"{len(saved)}.png"
        w._save_plot()
        saved[plot] = chosen["path"].read_bytes()
    assert saved[_RELATION] != saved[_PRED]  # the plot on screen, not Hall-Petch twice
    chosen["path"] = tmp_path / "no such folder" / "plot.png"
    assert w._save_plot() is None
    assert any(s == "error" and "no such folder/plot.png" in m and "cannot write" in m for s, m in notes)


def test_properties_failed_fit_clears_the_previous_fit(make_napari_viewer, tmp_path, monkeypatch, notes):
    """A failed fit left the previous fit's status, table and plot on screen, and Save plot saved it."""
    w = _fitted_widget(make_napari_viewer(), tmp_path)
    monkeypatch.setattr("magicgui.widgets.request_values", lambda **_: {"path": tmp_path / "plot.png"})
    (tmp_path / "empty").mkdir()
    w._results.value = tmp_path / "empty"  # no batch results there: the fit fails
    assert w.fit() is None
    assert w.last_result is None and w.table_view.model().rowCount() == 0 and not w.figure.axes
    assert "k =" not in w._status.value and "Fitting" not in w._status.value and "Fit failed" in w._status.value
    w._props_columns = []  # no property table: refused before fitting
    assert w.fit() is None and w._status.value == "-"
    w._save_plot()
    assert not (tmp_path / "plot.png").exists() and any(m == "Fit first, then save the plot." for s, m in notes)


@pytest.mark.parametrize("hardness, unit", [("hardness_HV10", "HV10"), ("hardness_GPa", "GPa")])
def test_properties_widget_picks_the_column_the_relation_fits(make_napari_viewer, tmp_path, notes, hardness, unit):
    # a table with its hardness before its yield strength: the widget picked the hardness with the default
    # relation Hall-Petch, and Fit was refused (a hardness is not a stress); choosing the relation now picks the
    # column it fits
    from napari_plugin._properties import PropertiesWidget

    res, props = _inputs(tmp_path)
    table = pd.read_csv(props)
    table.insert(1, hardness, 3 * table["yield_strength_MPa"] / (9.807 if unit == "HV10" else 1000.0))
    table.to_csv(props, index=False)
    w = PropertiesWidget(make_napari_viewer())
    w._results.value = res
    w._table.value = props
    assert w._relation.value == "hall-petch" and w._property.value == "yield_strength_MPa"
    assert w.fit().summary["fit"]["k"] == pytest.approx(K, abs=0.05)
    w._relation.value = "hardness"
    assert w._property.value == hardness
    assert w.fit().summary["fit"]["units"]["k"] == f"{unit}·m^0.5"
    w._relation.value = "hall-petch"
    assert w._property.value == "yield_strength_MPa"


def test_properties_widget_linear_fit_of_one_property_value(make_napari_viewer, tmp_path, notes):
    """A linear fit of a property with one value for all samples has no R² (None in link()'s summary, which is strict
    JSON): the status says n/a (formatting None raised inside the Fit button's slot)."""
    from napari_plugin._properties import PropertiesWidget

    res, props = _inputs(tmp_path)
    pd.DataFrame({"sample_id": list(SPECS), "yield_strength_MPa": [300.0] * 5}).to_csv(props, index=False)
    viewer = make_napari_viewer()
    w = PropertiesWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._results.value = res
    w._table.value = props
    w._relation.value = "linear"
    result = w.fit()
    assert result.summary["fit"]["r2"] is None
    assert w._status.value.startswith("linear fit: R² n/a, LOO-CV RMSE")
