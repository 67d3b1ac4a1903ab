"""Bad input to ``micro-seg link``: specimens.csv, degenerate grain sizes, impossible or missing
property values, unusable output paths."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from micro_seg.batch import export_specimens_csv
from micro_seg.cli import main
from micro_seg.errors import PropertyTableError
from micro_seg.properties import fit_hall_petch, fit_linear, link

S0, K = 80.0, 0.65  # MPa, MPa m^0.5
SPECS = {"A": 6.0, "B": 12.0, "C": 25.0, "D": 50.0, "E": 100.0}  # mean intercept, um


def run_cli(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _batch_output(tmp_path, specimens=SPECS, *, fields=4, failed=(), uncalibrated=(), noise=0.04, seed=0):
    """images.csv and specimens.csv as ``micro-seg batch`` writes them (specimens.csv by its own writer)."""
    rng = np.random.default_rng(seed)
    rows = []
    for spec, d in specimens.items():
        for f in range(fields):
            calibrated = not (spec in uncalibrated and f == 0)
            rows.append({"path": f"{spec}/field{f}.tif", "status": "ok", "error": "", "specimen": spec,
                         "pixel_size_um": 0.5 if calibrated else None,
                         "mean_intercept_um": d * (1 + rng.normal(0, noise)) if calibrated else None,
                         "mean_intercept_px": d * 2 * (1 + rng.normal(0, noise)),
                         "grains_per_mm2": 1e6 / d**2})
    for spec in failed:
        rows.append({"path": f"{spec}/broken.tif", "status": "failed", "error": "CorruptFileError: truncated",
                     "specimen": spec})
    out = tmp_path / "results"
    out.mkdir()
    pd.DataFrame(rows).to_csv(out / "images.csv", index=False)
    export_specimens_csv(rows, out / "specimens.csv")
    return out


def _write_table(table: pd.DataFrame, path):
    """``table`` as a user's property file of the kind its suffix says (CSV, XLSX or Parquet)."""
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    elif path.suffix == ".xlsx":
        pytest.importorskip("openpyxl")
        table.to_excel(path, index=False)
    else:
        pytest.importorskip("pyarrow")
        table.to_parquet(path)
    return path


def _props(tmp_path, values=None, ids=None, name="props.csv", col="yield_strength_MPa"):
    ids = list(SPECS) if ids is None else ids
    vals = values if values is not None else [S0 + K * (SPECS[i] * 1e-6) ** -0.5 for i in ids]
    path = tmp_path / name
    pd.DataFrame({"sample_id": ids, "anneal_C": [600 + 50 * i for i in range(len(ids))], col: vals}).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ specimens.csv as RESULTS


def test_link_specimens_csv_gives_the_same_fit_as_the_images(tmp_path):
    res = _batch_output(tmp_path)
    header = (res / "specimens.csv").read_text().splitlines()[0]
    assert "mean_intercept_um_mean" in header and ",mean_intercept_um," not in header  # what batch writes
    props = _props(tmp_path)
    by_images = link(res, props, on="sample_id")
    by_specimens = link(res / "specimens.csv", props, on="sample_id")
    assert by_specimens.summary["n_matched"] == 5 and by_specimens.summary["unmatched"] == []
    for key in ("sigma0", "sigma0_ci95", "k", "k_ci95", "r2", "n"):
        assert by_specimens.summary["fit"][key] == pytest.approx(by_images.summary["fit"][key], rel=1e-9), key
    cols = ["sample", "n_fields", "mean_intercept_um", "mean_intercept_um_sd", "mean_intercept_um_ci95",
            "mean_intercept_um_se", "mean_intercept_um_pct_ra"]
    pd.testing.assert_frame_equal(by_specimens.samples[cols], by_images.samples[cols], rtol=1e-6, check_dtype=False)


def test_cli_link_specimens_csv(tmp_path, capsys):
    res = _batch_output(tmp_path, failed=("C",))
    code, out, err = run_cli(capsys, ["link", str(res / "specimens.csv"), str(_props(tmp_path)), "--on", "sample_id",
                                      "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["n_matched"] == 5 and result["fit"]["d"] == "mean_intercept_um"
    assert abs(result["fit"]["k"] - K) <= result["fit"]["k_ci95"] + 0.05
    assert result["warnings"] == ["1 image(s) failed in the batch and are not in the specimen statistics (see images.csv)"]
    assert err.strip().splitlines() == [f"warning: {result['warnings'][0]}"]


def test_link_specimens_csv_refuses_uncalibrated_fields_and_unknown_columns(tmp_path):
    res = _batch_output(tmp_path, uncalibrated=("B",))
    with pytest.raises(PropertyTableError, match=r"specimens\.csv: mean_intercept_um is missing for images of sample\(s\) B"):
        link(res / "specimens.csv", _props(tmp_path), on="sample_id")
    with pytest.raises(PropertyTableError, match=r"specimens\.csv: no column 'nosuch_mean'"):
        link(res / "specimens.csv", _props(tmp_path), on="sample_id", d="nosuch")
    with pytest.raises(PropertyTableError, match="needs the per-image images.csv"):
        link(res / "specimens.csv", _props(tmp_path), on="sample_id", mapping="stem")


# ------------------------------------------------------------------ degenerate grain sizes


@pytest.mark.parametrize("relation, col", [("hall-petch", "yield_strength_MPa"), ("hardness", "hardness_HV10")])
def test_same_grain_size_everywhere_is_refused(tmp_path, capsys, relation, col):
    res = _batch_output(tmp_path, {s: 20.0 for s in SPECS}, noise=0.0)
    props = _props(tmp_path, values=[300.0, 280.0, 250.0, 240.0, 200.0], col=col)
    code, out, err = run_cli(capsys, ["link", str(res), str(props), "--on", "sample_id", "--relation", relation, "--json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert (f"images.csv: column 'mean_intercept_um': all 5 samples have the same grain size (20 um); "
            f"a {relation} fit needs different grain sizes") in err


def test_two_grain_sizes_are_fitted_with_a_warning_three_without():
    """Two heat treatments with replicates determine the line (and its CI) but cannot show it is straight."""
    from micro_seg.properties.hall_petch import check_grain_size_spread

    d2 = np.array([10.0, 10.0, 40.0, 40.0])
    fit = fit_hall_petch(d2, S0 + K * (d2 * 1e-6) ** -0.5)
    assert fit.k == pytest.approx(K)
    assert "only 2 different grain sizes (10 and 40 um) among 4 samples" in check_grain_size_spread(d2)
    d = np.array([10.0, 20.0, 40.0])
    assert fit_hall_petch(d, S0 + K * (d * 1e-6) ** -0.5).k == pytest.approx(K)


def test_constant_linear_predictor_is_refused():
    x = np.column_stack([np.arange(5.0), np.full(5, 700.0)])
    with pytest.raises(PropertyTableError, match=r"predictor 'anneal_C' has the same value \(700\) for all 5 samples"):
        fit_linear(x, np.arange(5.0) * 2 + 1, names=["d", "anneal_C"])


def test_predictor_with_a_large_offset_is_fitted_constants_still_refused():
    """A predictor whose values sit on a large offset (epoch seconds 1e9 + 550 .. 850) was refused as 'the same
    value for all samples' (values within 1e-6 of the largest magnitude counted as one), and once accepted the
    intercept column and the predictor were numerically one, so lstsq dropped the slope. Now distinct values are
    told apart relative to their spread and the fit is solved about the predictors' means: the offset changes
    only the intercept."""
    from micro_seg.properties.regression import n_distinct

    t = np.array([550.0, 600.0, 650.0, 700.0, 750.0, 800.0, 850.0])
    d = np.array([10.0, 14.0, 12.0, 20.0, 16.0, 25.0, 18.0])
    y = 3.0 + 0.5 * t - 2.0 * d + np.array([1.0, -1.0, 0.5, 0.0, -0.5, 0.3, -0.3])
    w = np.array([1.0, 2.0, 0.5, 1.0, 1.5, 1.0, 0.8])
    assert n_distinct(1e9 + t) == 7
    for weights in (None, w):
        ref = fit_linear(np.column_stack([t, d]), y, names=["t", "d"], weights=weights)
        fit = fit_linear(np.column_stack([1e9 + t, d]), y, names=["t", "d"], weights=weights)
        np.testing.assert_allclose(fit.coef[1:], ref.coef[1:], rtol=1e-7)
        np.testing.assert_allclose(fit.se[1:], ref.se[1:], rtol=1e-7)
        assert fit.coef[0] + 1e9 * fit.coef[1] == pytest.approx(ref.coef[0], abs=1e-3)
        assert fit.cv_rmse == pytest.approx(ref.cv_rmse, rel=1e-7) and fit.r2 == pytest.approx(ref.r2, rel=1e-9)
        p_ref = ref.predict(np.array([[700.0, 15.0]]), x_cov=np.diag([4.0, 1.0]))
        p_fit = fit.predict(np.array([[1e9 + 700.0, 15.0]]), x_cov=np.diag([4.0, 1.0]))
        for key in ("mean", "ci95", "pi95"):
            np.testing.assert_allclose(p_fit[key], p_ref[key], rtol=1e-7)
    # true constants, also on a large offset and with rounding noise, are still refused
    for const in (np.full(7, 1e9), 1e9 * (1 + np.array([0, 1e-15, -1e-15, 0, 2e-15, 0, 0])), np.full(7, 0.0)):
        with pytest.raises(PropertyTableError, match="has the same value"):
            fit_linear(np.column_stack([const, d]), y, names=["t", "d"])


def test_one_grain_size_up_to_float_rounding_is_still_refused():
    """n_distinct became relative to the values' spread (for predictors on a large offset), which made grain sizes
    equal within 1e-6 (18.9 um and 18.9 um after float32 rounding) count as 2-3 different ones: a Hall-Petch fit
    over one grain size ran with no refusal. Grain sizes have a natural zero: still judged relative to their size."""
    from micro_seg.properties.hall_petch import check_grain_size_spread, fit_hall_petch

    d = 18.9 * np.array([1.0, 1 + 1e-8, 1 - 1e-8, 1.0, 1 + 3e-7])
    with pytest.raises(PropertyTableError, match="same grain size"):
        check_grain_size_spread(d)
    with pytest.raises(PropertyTableError, match="same grain size"):
        fit_hall_petch(d, [300.0, 310.0, 305.0, 302.0, 299.0])
    two = check_grain_size_spread(np.array([10.0, 10.0 * (1 + 1e-8), 40.0, 40.0]))
    assert "only 2 different grain sizes (10 and 40 um)" in two


def test_linearly_dependent_or_repeated_predictors_are_refused(tmp_path, capsys):
    # least squares returned one of infinitely many coefficient sets, each with a finite "95% CI" (anneal_C next to
    # anneal_F = 1.8 anneal_C + 32); the same column twice showed one coefficient: half the slope
    t = np.array([600.0, 650.0, 700.0, 750.0, 800.0])
    y = 3.0 * t + np.array([1.0, -1.0, 0.5, 0.0, -0.5])
    with pytest.raises(PropertyTableError, match=r"predictors 'anneal_C', 'anneal_F' are linearly dependent"):
        fit_linear(np.column_stack([t, t * 1.8 + 32]), y, names=["anneal_C", "anneal_F"])
    fit = fit_linear(np.column_stack([t, t**2]), y, names=["anneal_C", "t2"])  # not linear in each other: fitted
    assert fit.coef[1] == pytest.approx(3.0, rel=0.5)
    res = _batch_output(tmp_path)
    code, _, err = run_cli(capsys, ["link", str(res), str(_props(tmp_path)), "--on", "sample_id", "--relation",
                                    "linear", "--predictors", "mean_intercept_um,mean_intercept_um"])
    assert code == 2 and "predictor(s) 'mean_intercept_um' given more than once" in err


# ------------------------------------------------------------------ property values


def test_missing_and_infinite_properties_warn_one_line_per_cause(tmp_path, capsys):
    res = _batch_output(tmp_path)
    props = tmp_path / "props.csv"
    props.write_text("sample_id,yield_strength_MPa\nA,318\nB,inf\nC,250\nD,\nE,200\n")
    code, out, err = run_cli(capsys, ["link", str(res), str(props), "--on", "sample_id", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["fit"]["n"] == 3
    assert result["warnings"][:2] == [
        "1 matched sample(s) have no yield_strength_MPa value and are not fitted: D",
        "1 matched sample(s) have an infinite yield_strength_MPa value and are not fitted: B",
    ]
    assert len(result["warnings"]) == 3 and "95% CI includes 0" in result["warnings"][2]  # 3 points, noisy
    assert err.strip().splitlines() == [f"warning: {w}" for w in result["warnings"]]


def test_many_dropped_samples_are_listed_briefly(tmp_path):
    specs = {f"S{i:02d}": 5.0 + 3 * i for i in range(15)}
    res = _batch_output(tmp_path, specs, fields=2)
    values = [S0 + K * (d * 1e-6) ** -0.5 for d in specs.values()]
    values[3:15] = [np.nan] * 12
    r = link(res, _props(tmp_path, values=values, ids=list(specs)), on="sample_id")
    assert r.warnings == ["12 matched sample(s) have no yield_strength_MPa value and are not fitted: "
                          "S03, S04, S05, S06, S07, S08, S09, S10, S11, S12 and 2 more"]


@pytest.mark.parametrize("bad", [-5.0, 0.0])
def test_non_positive_strength_or_hardness_is_refused(tmp_path, capsys, bad):
    res = _batch_output(tmp_path)
    props = _props(tmp_path, values=[318.0, 272.0, bad, 217.7, 200.0])
    code, out, err = run_cli(capsys, ["link", str(res), str(props), "--on", "sample_id", "--json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert (f"props.csv: column 'yield_strength_MPa' has 1 value(s) <= 0 (first: {bad:g} at sample 'C'); "
            "a yield strength is positive") in err
    hv = _props(tmp_path, values=[97.0, bad, 76.0, 65.0, 60.0], col="hardness_HV10", name="hv.csv")
    with pytest.raises(PropertyTableError, match="a hardness is positive"):
        link(res, hv, on="sample_id", relation="hardness")
    # a linear relation fits any property (it may be a shift or a change that can be negative)
    r = link(res, props, on="sample_id", relation="linear", predictors=["mean_intercept_um"])
    assert r.summary["fit"]["n"] == 5


# ------------------------------------------------------------------ output paths


@pytest.mark.parametrize(
    "option, target, message",
    [
        ("--plot-dir", "file.txt", "{p}: --plot-dir is an existing file, not a folder"),
        ("--plot-dir", "file.txt/sub", "{p}: --plot-dir cannot be created: {root}/file.txt is a file, not a folder"),
        ("--plot", "adir", "--plot {p}: is a folder; give a file path"),
        ("--plot", "file.txt/x.png", "--plot {p}: {root}/file.txt is a file, not a folder"),
        ("--plot", "nodir/x.png", "--plot {p}: folder {root}/nodir does not exist"),
        ("--out-table", "adir", "--out-table {p}: is a folder; give a file path"),
    ],
)
def test_unusable_output_paths_exit_2_before_any_work(tmp_path, capsys, option, target, message):
    res = _batch_output(tmp_path)
    root = tmp_path / "outs"
    (root / "adir").mkdir(parents=True)
    (root / "file.txt").write_text("keep me")
    path = root / target
    table = root / "table.csv"
    good = [] if option == "--out-table" else ["--out-table", str(table)]
    argv = ["link", str(res), str(_props(tmp_path)), "--on", "sample_id", *good, option, str(path), "--json"]
    code, out, err = run_cli(capsys, argv)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["micro-seg: error: " + message.format(p=path, root=root)]
    assert not table.exists() and (root / "file.txt").read_text() == "keep me"
    # checked before the inputs are even read
    code, _, err = run_cli(capsys, ["link", str(tmp_path / "missing"), "p.csv", "--on", "x", option, str(path)])
    assert code == 2 and option in err


def test_results_that_are_not_a_table_say_what_to_give(tmp_path):
    """A notes file given as results was read as an empty CSV ('the results table has no rows')."""
    notes = tmp_path / "notes.txt"
    notes.write_text("sample A looked fine\n")
    props = tmp_path / "props.csv"
    props.write_text("sample_id,yield_strength_MPa\nA,300\n")
    with pytest.raises(PropertyTableError, match="notes.txt: not batch results: give a batch output folder"):
        link(notes, props, on="sample_id")


def test_too_few_samples_after_blank_cells_says_which_cells(tmp_path, capsys):
    """Blank property cells leaving too few samples: the error named neither the table nor the blank samples."""
    res = _batch_output(tmp_path, {"A": 6.0, "B": 12.0, "C": 25.0})
    props = tmp_path / "props.csv"
    props.write_text("sample_id,yield_strength_MPa\nA,\nB,300\nC,250\n")
    code, _, err = run_cli(capsys, ["link", str(res), str(props), "--on", "sample_id"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "too few" in err and f"{props}: 1 matched sample(s) have no yield_strength_MPa value" in err and ": A" in err


@pytest.mark.parametrize("values, says", [
    ([300, 310, 320, 330, 340], "is not positive"),         # stronger with coarser grains: a pairing mistake
    ([330, 290, 335, 300, 320], "95% CI includes 0"),       # no grain-size effect to speak of
])
def test_a_hall_petch_k_that_is_not_positive_or_not_significant_is_warned(tmp_path, values, says):
    r = link(_batch_output(tmp_path), _props(tmp_path, values=values), on="sample_id")
    assert any(w.startswith("k = ") and says in w for w in r.warnings), r.warnings


def test_a_clear_hall_petch_fit_has_no_k_warning(tmp_path):
    r = link(_batch_output(tmp_path), _props(tmp_path), on="sample_id")
    assert r.fit.k > 0 and not any(w.startswith("k = ") for w in r.warnings), r.warnings


def test_specimens_csv_statistic_over_fewer_fields_uses_its_own_count_and_warns(tmp_path):
    res = _batch_output(tmp_path, noise=0.1)
    images = pd.read_csv(res / "images.csv")
    images.loc[images["path"] == "A/field0.tif", "mean_intercept_um"] = np.nan  # no intercept in that field
    rows = images.to_dict("records")
    export_specimens_csv(rows, res / "specimens.csv")
    out = link(res / "specimens.csv", _props(tmp_path), on="sample_id")
    a = out.samples.set_index("sample").loc["A"]
    vals = images.loc[images["specimen"] == "A", "mean_intercept_um"].dropna().to_numpy()
    assert a["n_fields"] == 3
    assert a["mean_intercept_um_se"] == pytest.approx(np.std(vals, ddof=1) / np.sqrt(3), rel=1e-9)
    assert any("only some fields of specimen(s) A " in w for w in out.warnings), out.warnings
    (tmp_path / "all").mkdir()
    full = link(_batch_output(tmp_path / "all", noise=0.1) / "specimens.csv", _props(tmp_path), on="sample_id")
    assert not any("only some fields" in w for w in full.warnings)


# ------------------------------------------------------------------ sample ids that look like numbers

LEADING_ZERO = {"01": 5.0, "1": 40.0, "2": 10.0, "3": 20.0, "4": 80.0}  # '01' and '1' are different specimens


@pytest.mark.parametrize("results_name", ["images.csv", "specimens.csv"])
@pytest.mark.parametrize("props_name", ["props.csv", "props.xlsx", "props.parquet"])
def test_numeric_looking_ids_keep_their_leading_zeros(tmp_path, results_name, props_name):
    result = _link_known_specimens(tmp_path, LEADING_ZERO, results_name, props_name)
    assert sorted(result.samples["sample"]) == ["01", "1", "2", "3", "4"]


def _link_known_specimens(tmp_path, specimens: dict, results_name: str, props_name: str):
    """Link a batch output of ``specimens`` (id -> mean intercept) to a property table with the same ids and
    Hall-Petch strengths; every id must match and the fit give back K."""
    res = _batch_output(tmp_path, specimens=specimens, fields=3, noise=0.0)
    values = [S0 + K * (d * 1e-6) ** -0.5 for d in specimens.values()]
    props = _write_table(pd.DataFrame({"sample_id": list(specimens), "yield_strength_MPa": values}),
                         tmp_path / props_name)
    result = link(res / results_name, props, on="sample_id")
    assert result.summary["n_matched"] == len(specimens) and result.summary["unmatched"] == []
    assert result.summary["fit"]["k"] == pytest.approx(K, rel=1e-6)
    return result


def test_property_csv_ids_01_and_1_are_not_duplicates(tmp_path):
    res = _batch_output(tmp_path, specimens=LEADING_ZERO, fields=3, noise=0.0)
    props = tmp_path / "props.csv"
    props.write_text("sample_id,yield_strength_MPa\n" + "".join(
        f"{s},{S0 + K * (d * 1e-6) ** -0.5}\n" for s, d in LEADING_ZERO.items()))
    assert link(res, props, on="sample_id").summary["n_matched"] == 5


def test_integer_ids_in_a_parquet_with_a_blank_row_match_text_specimens(tmp_path):
    pytest.importorskip("pyarrow")
    res = _batch_output(tmp_path, specimens={"1": 5.0, "2": 10.0, "3": 20.0}, fields=3, noise=0.0)
    props = tmp_path / "props.parquet"
    pd.DataFrame({"sample_id": [1.0, 2.0, 3.0, 4.0], "yield_strength_MPa": [400.0, 300.0, 250.0, None]}).to_parquet(props)
    result = link(res, props, on="sample_id")
    assert result.summary["n_matched"] == 3 and result.summary["unmatched"] == ["4"]


@pytest.mark.parametrize("option", ["--out-table", "--plot"])
@pytest.mark.parametrize("which", ["results-file", "results-folder-images", "results-folder-specimens", "properties"])
def test_outputs_never_replace_the_inputs(tmp_path, capsys, monkeypatch, option, which):
    res = _batch_output(tmp_path)
    props = _props(tmp_path)
    results_arg = str(res / "images.csv") if which == "results-file" else str(res)
    target = {"results-file": res / "images.csv", "results-folder-images": res / "images.csv",
              "results-folder-specimens": res / "specimens.csv", "properties": props}[which]
    monkeypatch.chdir(tmp_path)  # the same file under another spelling (relative, with ..) is the same file
    spelled = f"results/../{target.relative_to(tmp_path)}"
    before = {p: p.read_bytes() for p in (res / "images.csv", res / "specimens.csv", props)}
    code, out, err = run_cli(capsys, ["link", results_arg, str(props), "--on", "sample_id", option, spelled, "--json"])
    assert code == 2 and out == ""
    assert option in err and spelled in err and "replace" in err
    assert {p: p.read_bytes() for p in before} == before


def test_out_table_and_plot_cannot_be_the_same_file(tmp_path, capsys):
    res = _batch_output(tmp_path)
    same = tmp_path / "out.csv"
    code, out, err = run_cli(capsys, ["link", str(res), str(_props(tmp_path)), "--on", "sample_id",
                                      "--out-table", str(same), "--plot", str(same)])
    assert code == 2 and "--out-table" in err and "--plot" in err and not same.exists()


# ------------------------------------------------------------------ G numbers as linear predictors


def _batch_with_g(tmp_path):
    """images.csv / specimens.csv whose fields differ a lot, with per-field G numbers as measure grains gives them."""
    from micro_seg.measure import astm

    rows = []
    for spec, d in SPECS.items():
        for f, factor in enumerate((0.5, 1.0, 1.5)):
            l_um = d * factor
            rows.append({"path": f"{spec}/field{f}.tif", "status": "ok", "error": "", "specimen": spec,
                         "pixel_size_um": 0.5, "mean_intercept_um": l_um, "grains_per_mm2": 1e6 / l_um**2,
                         "mean_area_um2": l_um**2, "G_intercept": astm.g_from_intercept(l_um / 1000),
                         "G_planimetric": astm.g_from_grains_per_mm2(1e6 / l_um**2),
                         "G_area": astm.g_from_mean_area(l_um**2 * 1e-6), "ala_G": 3.0})
    out = tmp_path / "results"
    out.mkdir()
    pd.DataFrame(rows).to_csv(out / "images.csv", index=False)
    export_specimens_csv(rows, out / "specimens.csv")
    return out, pd.DataFrame(rows)


@pytest.mark.parametrize("results_name", ["images.csv", "specimens.csv"])
def test_g_predictors_come_from_the_mean_field_quantity_not_the_mean_g(tmp_path, results_name):
    from micro_seg.measure import astm

    res, rows = _batch_with_g(tmp_path)
    predictors = ["G_intercept", "G_planimetric", "G_area"]
    r = link(res / results_name, _props(tmp_path), on="sample_id", relation="linear", predictors=["G_intercept"])
    assert r.summary["fit"]["n"] == 5
    for g in predictors:
        got = link(res / results_name, _props(tmp_path), on="sample_id", relation="linear", predictors=[g]).samples
        means = rows.groupby("specimen")[["mean_intercept_um", "grains_per_mm2", "mean_area_um2"]].mean()
        expected = {"G_intercept": [astm.g_from_intercept(v / 1000) for v in means["mean_intercept_um"]],
                    "G_planimetric": [astm.g_from_grains_per_mm2(v) for v in means["grains_per_mm2"]],
                    "G_area": [astm.g_from_mean_area(v * 1e-6) for v in means["mean_area_um2"]]}[g]
        assert got.set_index("sample")[g].loc[list(means.index)].tolist() == pytest.approx(expected, abs=1e-9), g
        averaged = rows.groupby("specimen")[g].mean().to_numpy()
        assert np.all(np.abs(got.set_index("sample")[g].loc[list(means.index)].to_numpy() - averaged) > 0.05)


@pytest.mark.parametrize("results_name", ["images.csv", "specimens.csv"])
def test_g_numbers_without_a_field_quantity_are_refused_not_averaged(tmp_path, results_name):
    res, _ = _batch_with_g(tmp_path)
    with pytest.raises(PropertyTableError, match=f"{results_name}: predictor ala_G: G numbers of fields are not averaged"):
        link(res / results_name, _props(tmp_path), on="sample_id", relation="linear", predictors=["ala_G"])


# ------------------------------------------------------------------ fields without a value, too few samples


def test_a_calibrated_field_without_an_intercept_is_left_out_with_a_warning_as_in_specimens_csv(tmp_path, capsys):
    res = _batch_output(tmp_path, noise=0.1)
    images = pd.read_csv(res / "images.csv")
    images.loc[images["path"] == "A/field0.tif", "mean_intercept_um"] = np.nan  # calibrated, but no intercept
    images.to_csv(res / "images.csv", index=False)
    export_specimens_csv(images.to_dict("records"), res / "specimens.csv")
    props = _props(tmp_path)
    by_images = link(res / "images.csv", props, on="sample_id")
    by_specimens = link(res / "specimens.csv", props, on="sample_id")
    for key in ("sigma0", "k", "k_ci95", "residual_std", "n"):
        assert by_images.summary["fit"][key] == pytest.approx(by_specimens.summary["fit"][key], rel=1e-9), key
    assert by_images.samples.set_index("sample").loc["A", "n_fields"] == 3
    assert any("only some fields of sample(s) A " in w for w in by_images.warnings), by_images.warnings
    code, out, err = run_cli(capsys, ["link", str(res / "images.csv"), str(props), "--on", "sample_id", "--json"])
    assert code == 0 and "uncalibrated" not in err and "--pixel-size" not in err


def test_a_sample_without_any_value_says_nothing_was_measured_not_uncalibrated(tmp_path):
    res = _batch_output(tmp_path)
    images = pd.read_csv(res / "images.csv")
    images.loc[images["specimen"] == "B", "mean_intercept_um"] = np.nan
    images.to_csv(res / "images.csv", index=False)
    export_specimens_csv(images.to_dict("records"), res / "specimens.csv")
    for name in ("images.csv", "specimens.csv"):
        with pytest.raises(PropertyTableError, match=rf"{name}: no field of sample\(s\) B has a mean_intercept_um value") as exc:
            link(res / name, _props(tmp_path), on="sample_id")
        assert "uncalibrated" not in str(exc.value)


def test_an_uncalibrated_field_is_still_refused_in_images_csv(tmp_path):
    res = _batch_output(tmp_path, uncalibrated=("B",))
    with pytest.raises(PropertyTableError, match=r"images\.csv: mean_intercept_um is missing for images of sample\(s\) B "
                                                 r"\(uncalibrated"):
        link(res / "images.csv", _props(tmp_path), on="sample_id")


def test_too_few_matched_samples_names_the_files(tmp_path, capsys):
    res = _batch_output(tmp_path, {"A": 6.0, "B": 12.0})
    props = _props(tmp_path, ids=["A", "B"])
    code, _, err = run_cli(capsys, ["link", str(res), str(props), "--on", "sample_id"])
    assert code == 2 and "2 matched samples are too few" in err
    assert f"{res / 'images.csv'} joined with {props}: " in err


def test_zero_padded_specimens_match_a_table_whose_ids_lost_their_zeros(tmp_path):
    """Folders 01..04 against a property table typed in a spreadsheet (1..4): reading ids as text (so that 01 and 1
    stay two specimens) stopped them matching at all. They now pair by number, one to one, with a warning."""
    specs = {"01": 6.0, "02": 12.0, "03": 25.0, "04": 50.0, "10": 100.0}
    res = _batch_output(tmp_path, specs)
    props = tmp_path / "p.csv"
    pd.DataFrame({"sample_id": [1, 2, 3, 4, 10],
                  "yield_strength_MPa": [S0 + K * (d * 1e-6) ** -0.5 for d in specs.values()]}).to_csv(props, index=False)
    out = link(res, props, on="sample_id")
    assert out.summary["n_matched"] == 5 and out.summary["unmatched"] == []
    assert out.summary["fit"]["k"] == pytest.approx(K, rel=0.1)
    assert any("matched by number" in w and "01 = 1" in w for w in out.summary["warnings"])
    # an id that matches by text is not paired again by number: 01 stays unmatched beside a real 1
    (tmp_path / "b").mkdir()
    res2 = _batch_output(tmp_path / "b", {"01": 6.0, "1": 12.0, "2": 25.0, "3": 50.0})
    props2 = tmp_path / "p2.csv"
    pd.DataFrame({"sample_id": [1, 2, 3], "yield_strength_MPa": [300.0, 250.0, 200.0]}).to_csv(props2, index=False)
    out2 = link(res2, props2, on="sample_id")
    assert out2.summary["n_matched"] == 3 and out2.summary["unmatched_results"] == ["01"]


NA_LIKE = {"NA": 5.0, "None": 10.0, "null": 20.0, "N/A": 40.0, "B": 80.0}  # sample names pandas reads as missing


@pytest.mark.parametrize("results_name", ["images.csv", "specimens.csv"])
@pytest.mark.parametrize("props_name", ["props.csv", "props.xlsx"])
def test_samples_named_na_or_none_are_samples_not_missing_ids(tmp_path, results_name, props_name):
    result = _link_known_specimens(tmp_path, NA_LIKE, results_name, props_name)
    assert sorted(result.samples["sample"]) == sorted(NA_LIKE)


@pytest.mark.parametrize("props_name", ["props.csv", "props.xlsx"])
def test_a_sample_named_na_is_a_sample_also_under_a_header_with_spaces(tmp_path, props_name):
    """The id column was found in the header before its spaces were stripped: under 'sample_id ' a sample named
    NA was read as a missing id, and 01 as the number 1."""
    from micro_seg.properties.tables import read_property_table

    props = _write_table(pd.DataFrame({" sample_id ": ["NA", "01", "None"], "yield_strength_MPa": [300.0, 250.0, 200.0]}),
                         tmp_path / props_name)
    df = read_property_table(props, id_columns=["sample_id"])
    assert list(df.columns) == ["sample_id", "yield_strength_MPa"]
    assert df["sample_id"].tolist() == ["NA", "01", "None"]


def test_an_empty_sample_id_cell_is_still_refused_as_missing(tmp_path):
    res = _batch_output(tmp_path, specimens={"A": 5.0, "B": 10.0, "C": 20.0}, fields=3, noise=0.0)
    props = tmp_path / "props.csv"
    props.write_text("sample_id,yield_strength_MPa\n" + "".join(
        f"{s},{S0 + K * (d * 1e-6) ** -0.5}\n" for s, d in {"A": 5.0, "B": 10.0, "C": 20.0}.items()) + " ,500\n")
    with pytest.raises(PropertyTableError, match=r"empty sample id .* row\(s\) \[5\]"):
        link(res, props, on="sample_id")


def test_hall_petch_plot_keeps_its_scale_when_a_ci_of_d_reaches_zero(tmp_path):
    # two fields per specimen (t = 12.7): the CI of d passes 0 and its d^-1/2 end is unbounded; the error bars were
    # drawn to d = 1e-6 um (d^-1/2 = 1e6), squeezing the samples and the fit into one vertical line at the left
    from micro_seg.properties.hall_petch import hall_petch_x
    from micro_seg.properties.plots import hall_petch_figure

    result = link(_batch_output(tmp_path, fields=2, noise=0.5, seed=3), _props(tmp_path), on="sample_id")
    d, ci = (result.samples[c].to_numpy() for c in ("mean_intercept_um", "mean_intercept_um_ci95"))
    assert np.any(d - ci <= 0)
    ax = hall_petch_figure(result).axes[0]
    assert ax.get_xlim()[1] < 1.2 * hall_petch_x(0.8 * d.min())
    assert "open-ended" in ax.get_legend_handles_labels()[1][-1]


@pytest.mark.parametrize("table", ["images.csv", "specimens.csv"])
def test_results_re_saved_with_semicolons_exit_2_naming_the_file(tmp_path, capsys, table):
    # a results table opened and saved by a spreadsheet in a decimal-comma locale: internal error KeyError 'path'
    res = _batch_output(tmp_path)
    resaved = tmp_path / table
    pd.read_csv(res / table).to_csv(resaved, sep=";", decimal=",", index=False)
    code, out, err = run_cli(capsys, ["link", str(resaved), str(_props(tmp_path)), "--on", "sample_id"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"micro-seg: error: {resaved}: not batch results: no 'path' column") and "';'" in err


def test_a_sample_regex_that_matches_no_image_exits_2_saying_so(tmp_path, capsys):
    # internal error KeyError 'sample' (exit 1)
    res = _batch_output(tmp_path)
    code, out, err = run_cli(capsys, ["link", str(res), str(_props(tmp_path)), "--on", "sample_id",
                                      "--map", r"regex:^S(\d+)_"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'sample mapping "regex:^S(\\d+)_" gives no image a sample (e.g. A/field0.tif)' in err


def test_an_empty_regex_match_leaves_the_image_unmapped_not_a_sample_named_empty(tmp_path):
    # "([A-D]?)/" matches "" in "E/field0.tif": the E fields became a sample '' (unmatched '', no unmapped image)
    result = link(_batch_output(tmp_path), _props(tmp_path), on="sample_id", mapping=r"regex:([A-D]?)/")
    assert result.summary["n_matched"] == 4 and result.summary["unmatched"] == ["E"]
    assert result.summary["unmapped_images"] == [f"E/field{i}.tif" for i in range(4)]


def test_hall_petch_plot_keeps_its_scale_when_a_ci_of_d_ends_just_above_zero(tmp_path):
    # a CI of d ending at 0.5% of d (no end at 0, so not "open-ended") drew its d^-1/2 bar to 14x the sample's
    # d^-1/2, squeezing the samples and the fit into the left third of the plot
    from micro_seg.properties.hall_petch import hall_petch_x
    from micro_seg.properties.plots import hall_petch_figure

    result = link(_batch_output(tmp_path, fields=2, noise=0.1, seed=19), _props(tmp_path), on="sample_id")
    d, ci = (result.samples[c].to_numpy() for c in ("mean_intercept_um", "mean_intercept_um_ci95"))
    assert np.all(d - ci > 0) and np.min((d - ci) / d) < 0.01
    ax = hall_petch_figure(result).axes[0]
    assert ax.get_xlim()[1] < 1.2 * hall_petch_x(0.8 * d.min())
    assert "cut at the edge" in ax.get_legend_handles_labels()[1][-1]


def test_a_map_column_missing_from_a_semicolon_table_names_the_cause(tmp_path, capsys):
    # --map column:specimen on a results table re-saved with ';' said only "no column 'specimen'", without the
    # ';' cause the default mapping names, nor the columns
    res = _batch_output(tmp_path)
    resaved = tmp_path / "images.csv"
    pd.read_csv(res / "images.csv").to_csv(resaved, sep=";", decimal=",", index=False)
    code, _, err = run_cli(capsys, ["link", str(resaved), str(_props(tmp_path)), "--on", "sample_id",
                                    "--map", "column:specimen"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"micro-seg: error: {resaved}: no column 'specimen' to map samples from (its header is one "
                          "';'-separated column") and "columns are: path;status;" in err
