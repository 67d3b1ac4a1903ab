"""Structure -> property linking: known-answer fits, coverage of CIs, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from micro_seg.cli import main
from micro_seg.errors import PropertyTableError
from micro_seg.properties import (
    fit_hall_petch, fit_linear, link, loo_cv_rmse, parse_unit, predict_from_reference,
)

S0, K, NOISE = 80.0, 0.65, 6.0  # MPa, MPa m^0.5, MPa


def _draw(rng, n=8):
    d = np.geomspace(4.0, 120.0, n)  # um
    y = S0 + K * (d * 1e-6) ** -0.5 + rng.normal(0, NOISE, n)
    return d, y


def test_fit_recovers_known_constants_exactly_without_noise():
    d = np.array([3.0, 8.0, 20.0, 60.0, 150.0])
    fit = fit_hall_petch(d, S0 + K * (d * 1e-6) ** -0.5)
    assert fit.p0 == pytest.approx(S0, abs=1e-8)
    assert fit.k == pytest.approx(K, abs=1e-10)
    assert fit.units["k"] == "MPa·m^0.5"


def test_confidence_intervals_cover_truth_about_95_percent():
    rng = np.random.default_rng(12345)
    draws = 600
    hit_s0 = hit_k = 0
    for _ in range(draws):
        d, y = _draw(rng)
        fit = fit_hall_petch(d, y)
        hit_s0 += abs(fit.p0 - S0) <= fit.p0_ci95
        hit_k += abs(fit.k - K) <= fit.k_ci95
    assert 0.92 <= hit_s0 / draws <= 0.98
    assert 0.92 <= hit_k / draws <= 0.98


def test_prediction_interval_covers_new_observations_about_95_percent():
    rng = np.random.default_rng(7)
    hits, draws = 0, 600
    for _ in range(draws):
        d, y = _draw(rng)
        fit = fit_hall_petch(d, y)
        d_new = 30.0
        y_new = S0 + K * (d_new * 1e-6) ** -0.5 + rng.normal(0, NOISE)
        p = fit.predict(d_new)
        hits += abs(p["mean"][0] - y_new) <= p["pi95"][0]
    assert 0.92 <= hits / draws <= 0.98


def test_grain_size_uncertainty_widens_the_prediction():
    d, y = _draw(np.random.default_rng(1))
    fit = fit_hall_petch(d, y)
    no_unc = fit.predict(10.0)["ci95"][0]
    with_unc = fit.predict(10.0, d_se_um=1.0)["ci95"][0]
    # first-order propagation: extra variance (k * 0.5 d^-3/2 se_d)^2, d and se in metres
    extra = (fit.k * 0.5 * (10e-6) ** -1.5 * 1e-6) ** 2
    assert with_unc == pytest.approx(fit.linear.t95 * np.sqrt((no_unc / fit.linear.t95) ** 2 + extra), rel=1e-9)


def test_loo_cv_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 2))
    y = 1 + x @ np.array([2.0, -1.0]) + rng.normal(0, 0.3, 12)
    errs = []
    for i in range(12):
        m = np.ones(12, bool)
        m[i] = False
        f = fit_linear(x[m], y[m])
        errs.append(f.predict(x[i : i + 1])["mean"][0] - y[i])
    assert loo_cv_rmse(x, y) == pytest.approx(np.sqrt(np.mean(np.square(errs))), rel=1e-9)


def test_ols_prediction_interval_is_the_textbook_one():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([2.1, 3.9, 6.2, 7.8, 10.1, 12.2])
    fit = fit_linear(x[:, None], y, names=["x"])
    lr = stats.linregress(x, y)
    n, x0 = len(x), np.array([0.5, 3.5, 9.0])
    s = np.sqrt(np.sum((y - lr.intercept - lr.slope * x) ** 2) / (n - 2))
    sxx = np.sum((x - x.mean()) ** 2)
    t = stats.t.ppf(0.975, n - 2)
    p = fit.predict(x0[:, None])
    assert fit.resid_std == pytest.approx(s, rel=1e-12)
    assert p["ci95"] == pytest.approx(t * s * np.sqrt(1 / n + (x0 - x.mean()) ** 2 / sxx), rel=1e-10)
    assert p["pi95"] == pytest.approx(t * s * np.sqrt(1 + 1 / n + (x0 - x.mean()) ** 2 / sxx), rel=1e-10)


def _weighted_hall_petch(scale=1.0):
    """A Hall-Petch fit weighted by grain-size standard errors (as link does when every sample has >= 2 fields)."""
    d = np.array([5.0, 8.0, 12.0, 20.0, 35.0, 60.0, 100.0])
    y = (S0 + K * (d * 1e-6) ** -0.5 + np.array([9.0, -12.0, 4.0, 10.0, -8.0, 3.0, -5.0])) * scale
    d_se = np.array([0.2, 0.6, 0.3, 1.5, 0.9, 4.0, 2.0])
    return d, y, d_se, fit_hall_petch(d, y, d_se_um=d_se, property_unit="MPa" if scale == 1.0 else "HV")


def test_weighted_fit_residual_std_and_prediction_band_are_in_property_units():
    d, y, d_se, mpa = _weighted_hall_petch()
    _, y_hv, _, hv = _weighted_hall_petch(1 / 3)  # the same relation in other units (HV ~ sigma / 3)
    resid = y - mpa.predict(d)["mean"]
    assert mpa.linear.resid_std == pytest.approx(np.sqrt(np.sum(resid**2) / (len(d) - 2)), rel=1e-9)
    assert hv.linear.resid_std == pytest.approx(mpa.linear.resid_std / 3, rel=1e-9)
    assert hv.k == pytest.approx(mpa.k / 3, rel=1e-9) and hv.k_ci95 == pytest.approx(mpa.k_ci95 / 3, rel=1e-9)
    grid = np.array([4.0, 15.0, 150.0])
    p_mpa, p_hv = mpa.predict(grid), hv.predict(grid)
    assert p_hv["pi95"] == pytest.approx(p_mpa["pi95"] / 3, rel=1e-9)
    t = mpa.linear.t95
    assert p_mpa["pi95"] == pytest.approx(t * np.sqrt((p_mpa["ci95"] / t) ** 2 + mpa.linear.resid_std**2), rel=1e-12)


def test_weighted_fit_cv_rmse_is_leave_one_out_of_the_weighted_fit():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 1))
    y = 2 + 3 * x[:, 0] + rng.normal(0, 0.5, 10)
    w = rng.uniform(0.2, 5.0, 10)
    errs = []
    for i in range(10):
        m = np.arange(10) != i
        errs.append(fit_linear(x[m], y[m], weights=w[m]).predict(x[i : i + 1])["mean"][0] - y[i])
    assert fit_linear(x, y, weights=w).cv_rmse == pytest.approx(np.sqrt(np.mean(np.square(errs))), rel=1e-9)


@pytest.mark.parametrize(
    "col, expected",
    [("yield_strength_MPa", ("yield_strength", "MPa")), ("yield strength [MPa]", ("yield strength", "MPa")),
     ("hardness (HV10)", ("hardness", "HV10")), ("hardness_HV", ("hardness", "HV")), ("yield", ("yield", None))],
)
def test_parse_unit(col, expected):
    assert parse_unit(col) == expected


def test_reference_prediction_brackets_and_warns_outside_range():
    r = predict_from_reference("Low carbon steel", 20.0)
    x = (20e-6) ** -0.5
    assert r["yield_strength_MPa_low"] == pytest.approx(50 + 0.55 * x)
    assert r["yield_strength_MPa_high"] == pytest.approx(100 + 0.80 * x)
    assert not r["warnings"]
    assert predict_from_reference("copper", 2000.0)["warnings"]
    with pytest.raises(PropertyTableError, match="known:"):
        predict_from_reference("unobtainium", 10.0)


# ---------------------------------------------------------------- linking tables


def _write_results(tmp_path, specimens: dict[str, float], fields=5, seed=0, extra_rows=()):
    rng = np.random.default_rng(seed)
    rows = []
    for spec, d in specimens.items():
        for f in range(fields):
            rows.append({"path": f"in/{spec}/field{f}.tif", "status": "ok", "error": "",
                         "mean_intercept_um": d * (1 + rng.normal(0, 0.03))})
    rows.extend(extra_rows)
    out = tmp_path / "results"
    out.mkdir()
    pd.DataFrame(rows).to_csv(out / "images.csv", index=False)
    return out


SPECS = {"A": 6.0, "B": 12.0, "C": 25.0, "D": 50.0, "E": 100.0}


def _props(tmp_path, ids=None, name="props.csv", col="yield_strength_MPa", values=None):
    ids = list(SPECS) if ids is None else ids
    vals = values if values is not None else [S0 + K * (SPECS.get(i, 30.0) * 1e-6) ** -0.5 for i in ids]
    df = pd.DataFrame({"sample_id": ids, "anneal_C": [600 + 50 * i for i in range(len(ids))], col: vals})
    path = tmp_path / name
    if name.endswith(".xlsx"):
        df.to_excel(path, index=False)
    elif name.endswith(".parquet"):
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["props.csv", "props.xlsx", "props.parquet"])
def test_link_end_to_end_recovers_constants(tmp_path, name):
    res = _write_results(tmp_path, SPECS)
    r = link(res, _props(tmp_path, name=name), on="sample_id")
    assert r.summary["n_matched"] == 5 and r.summary["unmatched"] == []
    fit = r.summary["fit"]
    assert fit["d"] == "mean_intercept_um" and fit["units"]["k"] == "MPa·m^0.5"
    assert abs(fit["k"] - K) <= fit["k_ci95"] + 0.05
    assert set(r.samples["n_fields"]) == {5}
    assert (r.samples["mean_intercept_um_ci95"] > 0).all()


def test_link_reports_unmatched_and_failed_instead_of_dropping(tmp_path):
    res = _write_results(tmp_path, SPECS, extra_rows=[{"path": "in/F/x.tif", "status": "failed", "error": "corrupt",
                                                        "mean_intercept_um": np.nan}])
    r = link(res, _props(tmp_path, ids=["A", "B", "C", "D", "Z"]), on="sample_id")
    assert r.summary["n_matched"] == 4
    assert r.summary["unmatched_results"] == ["E"]
    assert r.summary["unmatched_properties"] == ["Z"]
    assert r.summary["failed_images"] == ["in/F/x.tif"]
    assert r.warnings


@pytest.mark.parametrize(
    "case, message",
    [
        ("duplicate", "duplicated sample id"),
        ("no_unit", "has no unit"),
        ("non_numeric", "non-numeric cell '~250'"),
        ("empty", "empty"),
        ("no_column", "no sample-id column"),
        ("no_match", "no sample of"),
    ],
)
def test_link_errors_are_clear(tmp_path, case, message):
    res = _write_results(tmp_path, SPECS)
    kwargs = {"on": "sample_id"}
    if case == "duplicate":
        props = _props(tmp_path, ids=["A", "B", "B", "C", "D"])
    elif case == "no_unit":
        props = _props(tmp_path, col="yield")
        kwargs["property"] = "yield"
    elif case == "non_numeric":
        props = _props(tmp_path, values=[300, 250, "~250", 200, 180])
    elif case == "empty":
        props = tmp_path / "empty.csv"
        props.write_text("")
    elif case == "no_column":
        props = _props(tmp_path)
        kwargs["on"] = "sample"
    else:
        props = _props(tmp_path, ids=["X1", "X2", "X3"])
    with pytest.raises(PropertyTableError, match=message):
        link(res, props, **kwargs)


def test_cli_link_json_and_plot(tmp_path, capsys):
    res = _write_results(tmp_path, SPECS)
    plot = tmp_path / "hp.png"
    code = main(["link", str(res), str(_props(tmp_path)), "--on", "sample_id", "--plot", str(plot), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["n_matched"] == 5 and out["fit"]["relation"] == "hall-petch"
    for key in ("sigma0", "sigma0_ci95", "k", "k_ci95", "units", "d"):
        assert key in out["fit"]
    assert plot.stat().st_size > 5000


def test_cli_link_bad_input_exit_2(tmp_path, capsys):
    res = _write_results(tmp_path, SPECS)
    code = main(["link", str(res), str(tmp_path / "missing.csv"), "--on", "sample_id", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.csv" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_linear_relation_with_processing_predictor(tmp_path):
    res = _write_results(tmp_path, SPECS)
    r = link(res, _props(tmp_path), on="sample_id", relation="linear", predictors=["anneal_C"])
    assert r.summary["fit"]["relation"] == "linear"
    assert r.summary["fit"]["cv_rmse"] is not None


def test_missing_property_value_is_reported_not_dropped_silently(tmp_path):
    res = _write_results(tmp_path, SPECS)
    r = link(res, _props(tmp_path, values=[300, 250, "n/a", 200, 180]), on="sample_id")
    assert r.summary["fit"]["n"] == 4
    assert any("C" in w and "not fitted" in w for w in r.warnings)


def test_cli_link_plot_dir_writes_relation_prediction_and_processing_plots(tmp_path, capsys):
    res = _write_results(tmp_path, SPECS)
    plots = tmp_path / "plots"
    code = main(["link", str(res), str(_props(tmp_path)), "--on", "sample_id", "--plot-dir", str(plots), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["d_vs_anneal_C.png", "hall-petch.png", "predicted_vs_measured.png"]
    assert len(out["plots"]) == 3 and all((plots / n).stat().st_size > 5000 for n in names)


def test_save_figure_that_cannot_rename_leaves_no_temporary_file(tmp_path):
    """Saving onto a folder failed in the rename and left '.plot.png.tmp' behind."""
    from matplotlib.figure import Figure

    from micro_seg.properties.plots import save_figure

    (tmp_path / "plot.png").mkdir()
    with pytest.raises(OSError):
        save_figure(Figure(), tmp_path / "plot.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
    assert save_figure(Figure(), tmp_path / "ok.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png", "plot.png"]


def _measured_grain_results(tmp_path):
    """A batch output folder (images.csv, specimens.csv) of rows flattened from measure_grains as batch writes
    them: 12 x 12 square grains of a known size per specimen (0.5 um pixels), three fields each."""
    from micro_seg.batch import export_specimens_csv
    from micro_seg.batch_worker import flatten_measurements
    from micro_seg.measure import measure_grains

    sides = {"A": 10, "B": 16, "C": 25, "D": 40}  # px per square grain
    rows = []
    for spec, side in sides.items():
        lab = np.repeat(np.repeat(np.arange(1, 145).reshape(12, 12), side, 0), side, 1)
        s = measure_grains(lab, pixel_size_um=0.5, fields=None).summary
        for f in range(3):
            rows.append({"path": f"{spec}/f{f}.tif", "status": "ok", "error": "", "specimen": spec,
                         **flatten_measurements({k: v for k, v in s.items() if k not in ("distributions", "fields")})})
    out = tmp_path / "results"
    out.mkdir()
    pd.DataFrame(rows).to_csv(out / "images.csv", index=False)
    export_specimens_csv(rows, out / "specimens.csv")
    return out, sides


def test_link_with_d_mean_ecd_from_measured_grain_rows(tmp_path):
    # `link --d mean_ecd_um` (and the napari Properties "Grain size d" choice) needs the column in the batch's
    # images.csv and specimens.csv; yield strength made from each specimen's interior ECD = 2 sqrt(A / pi)
    out, sides = _measured_grain_results(tmp_path)
    ecd = {spec: 0.5 * 2 * np.sqrt(side * side / np.pi) for spec, side in sides.items()}
    props = tmp_path / "props.csv"
    pd.DataFrame({"sample_id": list(sides), "yield_strength_MPa": [S0 + K * (ecd[s] * 1e-6) ** -0.5 for s in sides]}
                 ).to_csv(props, index=False)
    for results in (out, out / "specimens.csv"):
        r = link(results, props, on="sample_id", d="mean_ecd_um")
        fit = r.summary["fit"]
        assert fit["d"] == "mean_ecd_um" and r.summary["n_matched"] == 4
        assert fit["k"] == pytest.approx(K, rel=1e-6) and fit["sigma0"] == pytest.approx(S0, rel=1e-6)


def test_link_on_specimens_csv_takes_the_abrams_intercept_as_the_folder_does(tmp_path):
    # d = mean_intercept_circles_um and the predictor G_intercept_circles (from its mean) worked on images.csv
    # but specimens.csv had no mean_intercept_circles_um_mean: refused, "was the batch calibrated?"
    out, sides = _measured_grain_results(tmp_path)
    props = tmp_path / "props.csv"
    pd.DataFrame({"sample_id": list(sides), "yield_strength_MPa": [400.0, 330.0, 280.0, 240.0]}).to_csv(props,
                                                                                                        index=False)
    by_folder = link(out, props, on="sample_id", d="mean_intercept_circles_um").summary["fit"]
    by_specimens = link(out / "specimens.csv", props, on="sample_id", d="mean_intercept_circles_um").summary["fit"]
    assert by_specimens["k"] == pytest.approx(by_folder["k"], rel=1e-9)
    linear = {"on": "sample_id", "relation": "linear", "predictors": ["G_intercept_circles"]}
    g_folder = link(out, props, **linear).summary["fit"]["coefficients"]["G_intercept_circles"]
    g_specimens = link(out / "specimens.csv", props, **linear).summary["fit"]["coefficients"]["G_intercept_circles"]
    assert g_specimens == pytest.approx(g_folder, rel=1e-9) and g_folder > 0  # finer grains (higher G), stronger


@pytest.mark.parametrize("col, hint", [("hardness_HV10", "--relation hardness"), ("elongation_%", "--relation linear")])
def test_hall_petch_of_a_property_that_is_not_a_stress_is_refused(tmp_path, capsys, col, hint):
    # CONTRACT: "k in MPa·m^0.5 for Hall-Petch".  A hardness (or any non-stress) column fitted as the Hall-Petch
    # yield strength gave "sigma0" in HV10 and k in HV10·m^0.5 under the hall-petch keys, exit 0
    res = _write_results(tmp_path, SPECS)
    props = _props(tmp_path, col=col, values=[97.0, 84.0, 76.0, 65.0, 60.0])
    with pytest.raises(PropertyTableError, match=hint) as info:
        link(res, props, on="sample_id", property=col)
    assert col in str(info.value) and "MPa" in str(info.value)
    code = main(["link", str(res), str(props), "--on", "sample_id", "--property", col, "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1
    if col.startswith("hardness"):  # the hardness relation fits it, with k in HV10·m^0.5
        assert link(res, props, on="sample_id", property=col, relation="hardness").summary["fit"]["units"]["k"] == \
            "HV10·m^0.5"


def test_hall_petch_strength_in_ksi_is_fitted_in_mpa(tmp_path):
    res = _write_results(tmp_path, SPECS)
    mpa = [S0 + K * (SPECS[i] * 1e-6) ** -0.5 for i in SPECS]
    props = _props(tmp_path, col="yield_strength_ksi", values=[v / 6.894757 for v in mpa])
    fit = link(res, props, on="sample_id").summary["fit"]
    assert fit["units"]["k"] == "MPa·m^0.5" and abs(fit["k"] - K) <= fit["k_ci95"] + 0.05


@pytest.mark.parametrize("col, per_mpa", [("yield strength [N/mm²]", 1.0), ("Rp0.2 [Mpa]", 1.0), ("YS [KSI]", 1 / 6.894757),
                                          ("Rp0.2 (MN/m2)", 1.0), ("yield [N mm-2]", 1.0), ("sigma_y_kgf/mm2", 1 / 9.80665)])
def test_hall_petch_of_a_stress_in_another_spelling_is_fitted_in_mpa(tmp_path, col, per_mpa):
    # the refusal of non-stress columns refused real yield strengths whose unit is spelt as tables spell it (N/mm²,
    # Mpa, KSI, MN/m2, N mm-2, the older kgf/mm2) as "not a stress"; N/mm² and Mpa were fitted right before it
    res = _write_results(tmp_path, SPECS)
    mpa = [S0 + K * (SPECS[i] * 1e-6) ** -0.5 for i in SPECS]
    props = _props(tmp_path, col=col, values=[v * per_mpa for v in mpa])
    r = link(res, props, on="sample_id", property=col)
    fit = r.summary["fit"]
    assert fit["units"]["k"] == "MPa·m^0.5" and fit["units"]["sigma0"] == "MPa"
    assert abs(fit["k"] - K) <= fit["k_ci95"] + 0.05 and abs(fit["sigma0"] - S0) <= fit["sigma0_ci95"] + 5
    assert any("is read as" in w for w in r.warnings) == (col in ("Rp0.2 [Mpa]", "YS [KSI]"))  # only a case change


@pytest.mark.parametrize("old_fields", ["some", "all"])
def test_link_refuses_a_mean_ecd_missing_in_fields_an_earlier_micro_seg_measured(tmp_path, old_fields):
    # a batch folder measured before mean_ecd_um was recorded, resumed with this micro-seg: the finished fields
    # are kept without it (same release), the new ones have it.  link --d mean_ecd_um fitted d from the new fields
    # only, with a warning blaming 'fields without any intercept', or refused 'nothing was measured'; an old folder
    # said only "no column 'mean_ecd_um'"
    from micro_seg.batch import export_specimens_csv

    out, sides = _measured_grain_results(tmp_path)
    rows = pd.read_csv(out / "images.csv")
    old = rows["path"].str.endswith("f0.tif") | rows["path"].str.endswith("f1.tif")  # 2 of 3 fields of 4 specimens
    rows.loc[old, ["mean_ecd_um", "mean_ecd_px"]] = np.nan
    if old_fields == "all":
        rows = rows.drop(columns=["mean_ecd_um", "mean_ecd_px"])
    rows.to_csv(out / "images.csv", index=False)
    export_specimens_csv(rows.to_dict("records"), out / "specimens.csv")
    props = tmp_path / "props.csv"
    pd.DataFrame({"sample_id": list(sides), "yield_strength_MPa": [400.0, 330.0, 280.0, 240.0]}).to_csv(props,
                                                                                                        index=False)
    n_old = 8 if old_fields == "some" else 12
    for results in (out, out / "specimens.csv"):
        with pytest.raises(PropertyTableError, match=f"mean_ecd_um is missing in {n_old} field") as info:
            link(results, props, on="sample_id", d="mean_ecd_um")
        assert "earlier micro-seg" in str(info.value) and "A, B, C, D" in str(info.value)
        assert link(results, props, on="sample_id").summary["n_matched"] == 4  # the mean intercept is all there


def test_link_on_a_specimens_csv_of_an_earlier_micro_seg_says_how_to_rewrite_it(tmp_path):
    # a specimens.csv written before it carried mean_intercept_circles_um: --d mean_intercept_circles_um and the
    # predictor G_intercept_circles were refused asking 'was the batch calibrated?' (it was); a batch run on the
    # same folder rewrites specimens.csv from the fields measured, and the folder's images.csv has the column
    out, sides = _measured_grain_results(tmp_path)
    old = pd.read_csv(out / "specimens.csv")
    old = old.drop(columns=[c for c in old.columns if c.startswith("mean_intercept_circles_um")])
    old.to_csv(out / "specimens.csv", index=False)
    props = tmp_path / "props.csv"
    pd.DataFrame({"sample_id": list(sides), "yield_strength_MPa": [400.0, 330.0, 280.0, 240.0]}).to_csv(props,
                                                                                                        index=False)
    for kwargs in ({"d": "mean_intercept_circles_um"}, {"relation": "linear", "predictors": ["G_intercept_circles"]}):
        with pytest.raises(PropertyTableError, match="written by an earlier micro-seg") as info:
            link(out / "specimens.csv", props, on="sample_id", **kwargs)
        assert "was the batch calibrated" not in str(info.value) and "same output folder rewrites it" in str(info.value)
        assert link(out, props, on="sample_id", **kwargs).summary["n_matched"] == 4  # the folder has them


@pytest.mark.parametrize("col", ["hardness_GPa", "nanohardness [MPa]"])
def test_hall_petch_of_a_hardness_in_a_stress_unit_is_refused(tmp_path, col):
    # a hardness in GPa or MPa (nanoindentation) passed the check for a stress unit and was fitted as the yield
    # strength: sigma0 and k of a yield strength (in MPa) that are a hardness's (about 3 times as large, Tabor)
    res = _write_results(tmp_path, SPECS)
    values = [3 * (S0 + K * (SPECS[i] * 1e-6) ** -0.5) / (1000.0 if "GPa" in col else 1.0) for i in SPECS]
    props = _props(tmp_path, col=col, values=values)
    with pytest.raises(PropertyTableError, match="--relation hardness") as info:
        link(res, props, on="sample_id", property=col)
    assert "is a hardness" in str(info.value) and col in str(info.value)
    fit = link(res, props, on="sample_id", property=col, relation="hardness").summary["fit"]
    unit = "GPa" if "GPa" in col else "MPa"
    assert fit["units"]["k"] == f"{unit}·m^0.5"
    assert fit["k"] == pytest.approx(3 * K / (1000.0 if unit == "GPa" else 1.0), rel=0.1)


def test_hall_petch_of_a_yield_strength_of_a_hardened_state_is_fitted(tmp_path):
    # the hardness refusal goes by a word ending 'hardness', not by 'hard' anywhere in the name
    res = _write_results(tmp_path, SPECS)
    props = _props(tmp_path, col="work_hardened_yield_MPa")
    fit = link(res, props, on="sample_id", property="work_hardened_yield_MPa").summary["fit"]
    assert fit["k"] == pytest.approx(K, abs=0.1) and fit["units"]["k"] == "MPa·m^0.5"
