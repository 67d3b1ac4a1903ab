"""The Python API as a notebook uses it: results that json.dumps takes, clear errors for the arrays users pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from micro_seg.errors import MicroSegError
from micro_seg.measure import measure_defects, measure_grains, measure_phases


def _strict_json(d: dict) -> dict:
    return json.loads(json.dumps(d, allow_nan=False))


@pytest.mark.filterwarnings("ignore")
def test_to_dict_of_degenerate_results_is_strict_json():
    # one grain filling the field: no boundary crossed, so no intercept (was inf / NaN in to_dict(): json.dumps
    # wrote the invalid 'Infinity' / 'NaN', or raised with allow_nan=False)
    one = measure_grains(np.ones((50, 50), np.int32), pixel_size_um=0.5).to_dict()
    assert _strict_json(one)["n_grains"] == 1
    assert one["mean_intercept_px"] is None and one["G_intercept"] is None
    # a field without pores: no object to average
    none = measure_defects(np.zeros((50, 50), bool), pixel_size_um=0.5).to_dict()
    assert _strict_json(none)["count"] == 0
    # one phase everywhere
    ph = measure_phases(np.ones((40, 40), np.uint8), pixel_size_um=0.5).to_dict()
    assert _strict_json(ph)["phase_fractions"] == {"1": 1.0}
    # an ordinary result keeps its numbers
    lab = np.zeros((60, 60), np.int32)
    lab[:, :30], lab[:, 30:] = 1, 2
    two = measure_grains(lab, pixel_size_um=0.5)
    assert _strict_json(two.to_dict())["n_grains"] == 2
    assert two.to_dict()["mean_intercept_um"] == pytest.approx(two.summary["mean_intercept_um"])


def test_hall_petch_takes_a_column_and_refuses_text_clearly():
    import pandas as pd

    from micro_seg.properties import fit_hall_petch, predict_from_reference

    d = np.array([5.0, 10.0, 20.0, 40.0])
    table = pd.DataFrame({"d_um": d, "sy_MPa": 70.0 + 0.74 * (d * 1e-6) ** -0.5})
    # df[["d_um"]] (one column, shape (4, 1)) was a bare 'ValueError: too many values to unpack' in fit_linear
    fit = fit_hall_petch(table[["d_um"]], table["sy_MPa"])
    assert fit.p0 == pytest.approx(70.0) and fit.k == pytest.approx(0.74)
    assert fit_hall_petch(d, table["sy_MPa"], d_se_um=0.5).k == pytest.approx(0.74)  # one SE for all samples
    with pytest.raises(MicroSegError, match="d_um: not numbers"):  # was numpy's bare 'could not convert string'
        fit_hall_petch(["5", "10", "x", "40"], table["sy_MPa"])
    with pytest.raises(MicroSegError, match=r"d_um: expected one number per sample.*\(4, 2\)"):
        fit_hall_petch(np.column_stack([d, d]), table["sy_MPa"])
    with pytest.raises(MicroSegError, match="d_se_um: 3 standard errors for 4"):
        fit_hall_petch(d, table["sy_MPa"], d_se_um=[0.1, 0.2, 0.3])
    # a numpy grain size (a DataFrame cell) gives a JSON-ready result; a list is refused clearly (was a TypeError)
    ref = predict_from_reference("low-carbon-steel", np.float32(10.0))
    assert json.loads(json.dumps(ref))["d_um"] == 10.0
    assert ref["yield_strength_MPa_low"] == pytest.approx(predict_from_reference("low-carbon-steel", 10.0)[
        "yield_strength_MPa_low"])
    with pytest.raises(MicroSegError, match="one number of micrometres"):
        predict_from_reference("low-carbon-steel", [10.0, 20.0])


@pytest.mark.parametrize("bad", [None, 3])
def test_load_model_of_not_a_name_is_a_model_error(bad):
    from micro_seg.registry import load_model

    # a notebook variable left None was a bare 'TypeError: expected str, bytes or os.PathLike object'
    with pytest.raises(MicroSegError, match=rf"model {bad!r}: not a model name or folder"):
        load_model(bad)


def test_write_labels_refuses_a_masked_array(tmp_path):
    from micro_seg.io import write_labels

    labels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    masked = np.ma.masked_array(labels, mask=labels > 10)
    out = tmp_path / "l.tif"
    # the mask was dropped: the masked pixels were written as the labels under it, silently
    with pytest.raises(MicroSegError, match=r"l\.tif: a masked array: its mask would be ignored"):
        write_labels(out, masked, pixel_size_um=0.5)
    assert not out.exists()
    assert write_labels(out, masked.filled(0), pixel_size_um=0.5) == out


def test_qc_evaluate_takes_a_spec_path_or_mapping_and_its_result_is_strict_json(tmp_path):
    from micro_seg.qc import evaluate, parse_spec

    rules = {"image": {"calibration": "fail", "dynamic_range": {"min": 0.15}}}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("image:\n  calibration: fail\n  dynamic_range: {min: 0.15}\n", encoding="utf-8")
    ramp = np.tile(np.linspace(0, 255, 64), (64, 1))
    grey8 = ramp.astype(np.uint8)
    want = evaluate(grey8, parse_spec(rules), pixel_size_um=0.5)
    assert want.verdict == "pass"
    # a path or a mapping was an AttributeError: 'str' object has no attribute 'image'
    assert evaluate(grey8, str(spec_file), pixel_size_um=0.5).verdict == "pass"
    assert evaluate(grey8, rules, pixel_size_um=0.5).verdict == "pass"
    assert evaluate(grey8, rules).verdict == "fail"  # uncalibrated
    with pytest.raises(MicroSegError, match="spec: got int, not a QC spec"):
        evaluate(grey8, 3)
    # a float image with values 0..255 has no known grey scale: contrast is not measured (NaN) and reviewed; the
    # result's as_dict() held that NaN, which json.dumps wrote as the invalid NaN
    r = evaluate(ramp, rules, pixel_size_um=0.5).as_dict()
    assert r["verdict"] == "review"
    d = json.loads(json.dumps(r, allow_nan=False))
    assert d["quality"]["dynamic_range"] is None
    assert isinstance(d["quality"]["blur"], float)  # what was measured stays a number


def test_measure_phases_refuses_names_given_as_a_mapping():
    classes = np.zeros((40, 40), np.uint8)
    classes[:, 10:] = 1
    # {class value: name} was iterated as its keys: the fractions came back named '0' and '1', not by the names
    with pytest.raises(ValueError, match="a mapping, not a sequence of class names"):
        measure_phases(classes, names={0: "ferrite", 1: "pearlite"})
    got = measure_phases(classes, names=["ferrite", "pearlite"]).summary["phase_fractions"]
    assert got == {"ferrite": 0.25, "pearlite": 0.75}


def test_specimen_table_of_a_dataframe_read_from_images_csv(tmp_path):
    import pandas as pd

    from micro_seg.specimens import specimen_table

    rows = [{"path": "a/1.tif", "specimen": "a", "status": "ok", "pixel_size_um": 0.5, "grains_per_mm2": 1984.0},
            {"path": "a/2.tif", "specimen": "a", "status": "ok", "pixel_size_um": 0.5, "grains_per_mm2": 1984.0},
            {"path": "b.tif", "specimen": "", "status": "ok", "pixel_size_um": 0.5, "grains_per_mm2": 10.0}]
    csv = tmp_path / "images.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    # a DataFrame iterated as its column names: 'str' object has no attribute 'get'
    got = specimen_table(pd.read_csv(csv))  # the empty specimen cell is NaN there: no specimen, as ""
    assert got == specimen_table(rows)
    assert [r["specimen"] for r in got] == ["a"] and got[0]["G_planimetric"] == pytest.approx(8.0, abs=1e-3)
    with pytest.raises(MicroSegError, match="a row is a str, not a mapping"):
        specimen_table(["a/1.tif"])


def _two_grain_prediction():
    from types import SimpleNamespace

    p = np.zeros((2, 40, 40), np.float32)
    p[0] = 1.0
    p[:, :, 19:21] = [[[0.0]], [[1.0]]]  # a vertical boundary: two grains
    return SimpleNamespace(labels=p.argmax(0).astype(np.uint8), probabilities=p, probability_classes=[0, 1])


def test_postprocess_checks_grain_options_as_the_cli_does():
    from types import SimpleNamespace

    from micro_seg.postprocess import postprocess
    from micro_seg.registry import LoadedModel, ModelCard

    pred = _two_grain_prediction()
    card = SimpleNamespace(task="grains", classes=["grain", "boundary"], defect_classes=[], postprocess={})
    assert int(postprocess(pred, card, min_grain_px=4).labels.max()) == 2
    assert int(postprocess(pred, card, min_grain_px=4, threshold=np.float32(0.4)).labels.max()) == 2
    # threshold 3 gave one grain (no pixel is 'boundary'), NaN none at all, silently; "0.3" a numpy UFuncTypeError
    for bad in (3.0, float("nan"), "0.3", -1):
        with pytest.raises(MicroSegError, match="post-processing option threshold"):
            postprocess(pred, card, min_grain_px=4, threshold=bad)
    with pytest.raises(MicroSegError, match="post-processing option split_ratio must be a finite number >= 0"):
        postprocess(pred, card, split_ratio=-2)
    # the LoadedModel load_model returns stands for its card (was AttributeError: no attribute 'classes')
    real = ModelCard(name="demo", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                     arch_kwargs={"widths": [4, 8]})
    assert int(postprocess(pred, LoadedModel(real, None, None), min_grain_px=4).labels.max()) == 2
    with pytest.raises(MicroSegError, match="card must be a model card"):
        postprocess(pred, "grain-boundaries")


def _tiny_model(classes=("grain", "boundary"), task="grains"):
    import torch

    from micro_seg.nets import build_network
    from micro_seg.registry import LoadedModel, ModelCard

    card = ModelCard(name="demo", task=task, arch="msnet", in_channels=1, classes=list(classes),
                     arch_kwargs={"widths": [4, 8]})
    torch.manual_seed(0)
    net = build_network("msnet", in_channels=1, num_classes=len(classes), widths=[4, 8]).eval()
    return LoadedModel(card, net, None)


def test_predict_refuses_an_integer_probability_dtype():
    from micro_seg.inference import predict

    model = _tiny_model()
    image = np.random.default_rng(0).random((40, 40))
    ok = predict(image, model, probability_dtype=np.float64)
    assert ok.probabilities.dtype == np.float64
    np.testing.assert_allclose(ok.probabilities.sum(axis=0), 1.0, rtol=1e-6)
    # int8 / uint8 stored every probability as 0 and the uncertainty as 0 or 1, silently
    for bad in ("int8", np.uint8, bool):
        with pytest.raises(MicroSegError, match="probability_dtype=.*must be a floating-point type"):
            predict(image, model, probability_dtype=bad)


def test_predict_keeps_probabilities_by_class_name_and_names_bad_options():
    from micro_seg.inference import predict

    model = _tiny_model()
    image = np.random.default_rng(0).random((40, 40))
    full = predict(image, model)
    # ["boundary"] was int()'s bare 'invalid literal for int() with base 10: 'boundary''; 1 alone 'not iterable'
    for keep in (["boundary"], "boundary", 1, [1]):
        one = predict(image, model, keep_probabilities=keep)
        assert one.probability_classes == [1]
        np.testing.assert_allclose(one.probabilities[0], full.probabilities[1], atol=1e-6)
    with pytest.raises(MicroSegError, match=r"keep_probabilities=\['pore'\].*\['grain', 'boundary'\]"):
        predict(image, model, keep_probabilities=["pore"])
    for name, value in (("tile_size", "abc"), ("overlap", float("nan")), ("batch_size", "x")):
        with pytest.raises(MicroSegError, match=f"{name}=.*: not a whole number"):
            predict(image, model, **{name: value})


def test_boundary_value_that_is_not_a_number_is_named():
    from micro_seg.measure import measure_grains_from_boundaries

    mask = np.zeros((40, 40), np.uint8)
    mask[:, 19:21] = 1
    mask[19:21, :20] = 2  # a twin line
    assert measure_grains_from_boundaries(mask, boundary_value=1, fields=None).summary["n_grains"] == 2
    assert measure_grains_from_boundaries(mask, boundary_value=np.uint8(1), fields=None).summary["n_grains"] == 2
    # "1" (a value read from a text box) matched no pixel and the message crashed: "Unknown format code 'g'"
    with pytest.raises(MicroSegError, match=r"boundary_value='1': not a number"):
        measure_grains_from_boundaries(mask, boundary_value="1")


def test_assess_image_of_a_micrograph_leaves_its_data_bar_out():
    from micro_seg.io import Micrograph
    from micro_seg.quality import assess_image

    pixels = np.tile(np.linspace(20, 200, 64).astype(np.uint8), (64, 1))
    with_bar = np.vstack([pixels, np.full((8, 64), 255, np.uint8)])  # a white SEM data bar: saturated rows
    mg = Micrograph(with_bar, 0.5, "user", databar_rows=8)
    # a Micrograph was refused: 'expected a 2-D grey or (rows, cols, channels) colour image, got shape ()'
    got = assess_image(mg)
    assert got == assess_image(pixels)
    assert got.clipped_high_fraction == 0.0  # the bar's 255s are not counted as saturation
    with pytest.raises(MicroSegError, match="image: a masked array"):
        assess_image(np.ma.masked_array(pixels, mask=pixels > 150))


def test_link_of_a_dataframe_says_to_write_it_first(tmp_path):
    import pandas as pd

    from micro_seg.properties import link

    rows = [{"path": f"{s}/f{f}.tif", "status": "ok", "pixel_size_um": 0.5, "mean_intercept_um": d}
            for s, d in zip("ABCD", (5.0, 10.0, 20.0, 40.0)) for f in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    props = pd.DataFrame({"sample_id": list("ABCD"),
                          "yield_strength_MPa": [70 + 0.74 * (d * 1e-6) ** -0.5 for d in (5.0, 10.0, 20.0, 40.0)]})
    props.to_csv(tmp_path / "props.csv", index=False)
    assert link(tmp_path / "images.csv", tmp_path / "props.csv", on="sample_id").fit.k == pytest.approx(0.74)
    # both were pathlib's bare 'TypeError: expected str, bytes or os.PathLike object, not DataFrame'
    with pytest.raises(MicroSegError, match="link: properties must be a path .* got a DataFrame"):
        link(tmp_path / "images.csv", props, on="sample_id")
    with pytest.raises(MicroSegError, match="link: results must be a path .* got a DataFrame"):
        link(pd.DataFrame(rows), tmp_path / "props.csv", on="sample_id")


def test_hall_petch_as_dict_of_a_constant_property_is_strict_json():
    from micro_seg.properties import fit_hall_petch

    d = np.array([5.0, 10.0, 20.0, 40.0])
    flat = fit_hall_petch(d, np.full(4, 100.0)).as_dict()  # r2 = 1 - 0/0 is NaN: json.dumps wrote NaN
    got = json.loads(json.dumps(flat, allow_nan=False))
    assert got["r2"] is None and got["sigma0"] == pytest.approx(100.0) and got["k"] == pytest.approx(0.0, abs=1e-9)
    good = fit_hall_petch(d, 70 + 0.74 * (d * 1e-6) ** -0.5 + np.array([1.0, -1.0, 0.5, -0.5])).as_dict()
    assert 0.99 < good["r2"] < 1.0 and good["d_range_um"] == [5.0, 40.0]


def test_predicting_a_released_micrograph_says_so():
    from micro_seg.inference import predict
    from micro_seg.io import Micrograph

    mg = Micrograph(np.random.default_rng(0).random((40, 40)), 0.5, "user", path="field.tif")
    model = _tiny_model()
    assert predict(mg, model).labels.shape == (40, 40)
    mg.release_pixels()
    with pytest.raises(MicroSegError, match="field.tif: its pixels were released"):  # was 'image is empty (0 x 40'
        predict(mg, model)


def test_measure_defects_names_a_min_size_that_is_not_a_number():
    mask = np.zeros((40, 40), bool)
    mask[5:7, 5:7] = True  # 4 px
    mask[20:30, 20:30] = True  # 100 px
    assert measure_defects(mask, min_size_px=5, fields=None).summary["count"] == 1
    assert measure_defects(mask, min_size_px=np.int64(5), fields=None).summary["count"] == 1
    for bad in ("5", float("nan"), -1):
        with pytest.raises(ValueError, match=r"min_size_px=.*: must be a number of pixels >= 0"):
            measure_defects(mask, min_size_px=bad)


def test_measure_phases_names_a_points_per_field_that_is_not_a_number():
    classes = np.zeros((40, 40), np.uint8)
    classes[:, 10:] = 1
    assert measure_phases(classes, points_per_field=16, fields=None).summary["phase_fractions"]["1"] == 0.75
    for bad in ("x", [16], 0):
        with pytest.raises(ValueError, match=r"points_per_field=.*: must be a whole number >= 1"):
            measure_phases(classes, points_per_field=bad)


def test_write_labels_refuses_class_names_given_as_one_string(tmp_path):
    from micro_seg.io import labels_classes, write_labels

    labels = np.array([[0, 1], [1, 0]], np.uint8)
    out = tmp_path / "l.tif"
    write_labels(out, labels, pixel_size_um=0.5, classes=["matrix", "pore"])
    assert labels_classes(out) == ["matrix", "pore"]
    # "matrix,pore" was recorded as the class names ['m', 'a', 't', ...]: napari and measure phases then showed them
    with pytest.raises(ValueError, match=r"classes='matrix,pore': a string, not a sequence of class names"):
        write_labels(tmp_path / "s.tif", labels, pixel_size_um=0.5, classes="matrix,pore")
    assert not (tmp_path / "s.tif").exists()


def test_combine_grain_fields_of_one_field_is_strict_json():
    from micro_seg.measure import combine_grain_fields

    lab = np.zeros((60, 60), np.int32)
    lab[:, :30], lab[:, 30:] = 1, 2
    one = measure_grains(lab, pixel_size_um=0.5)
    got = combine_grain_fields([one])  # sd / ci95 / %RA of one field were NaN: json.dumps wrote NaN
    back = json.loads(json.dumps(got, allow_nan=False))
    assert back["n_fields"] == 1 and back["mean_intercept_um"]["sd"] is None
    assert back["mean_intercept_um"]["mean"] == pytest.approx(one.summary["mean_intercept_um"])
    two = combine_grain_fields([one, one])
    assert two["mean_intercept_um"]["sd"] == 0.0 and two["G_intercept"] == pytest.approx(one.summary["G_intercept"])


def test_grains_from_boundary_probability_checks_its_options_as_postprocess_does():
    # postprocess() checked them; the function it calls (public, named in the grain model's README) still took
    # threshold=3 (one grain), NaN (no grain at all), silently, and "0.3" as a numpy UFuncTypeError
    from micro_seg.postprocess import grains_from_boundary_probability, grains_from_boundary_probability_tiled

    p = np.zeros((50, 50))
    p[24:26, :] = 0.9
    p[:, 24:26] = 0.9
    for fn in (grains_from_boundary_probability, grains_from_boundary_probability_tiled):
        assert int(fn(p).max()) == 4
        assert int(fn(p, threshold=np.float32(0.5), split_ratio=0, marker_threshold=None).max()) == 4
        for bad in (3.0, float("nan"), "0.3", -1, 1):
            with pytest.raises(MicroSegError, match="post-processing option threshold"):
                fn(p, threshold=bad)
        with pytest.raises(MicroSegError, match="option min_grain_px must be a finite number >= 0, got '5'"):
            fn(p, min_grain_px="5")
        with pytest.raises(MicroSegError, match="option split_ratio must be a finite number >= 0, got -1"):
            fn(p, split_ratio=-1)


def test_quality_and_qc_refuse_a_masked_array_and_name_a_released_micrograph():
    # assess_image refused a masked array, but qc.evaluate / pixel_quality np.asarray'd it first: the masked pixels
    # were judged (here: 30 masked rows of white made the image 'clipped', review), silently
    from micro_seg.io import Micrograph
    from micro_seg.qc import evaluate, parse_spec, pixel_quality
    from micro_seg.quality import assess_image

    spec = parse_spec({"image": {"clipped_high_fraction": 0.01}})
    img = np.full((32, 32), 255, np.uint8)
    img[30:] = np.arange(64).reshape(2, 32)
    masked = np.ma.masked_array(img, mask=np.zeros(img.shape, bool))
    masked.mask[:30] = True
    for judge in (lambda x: evaluate(x, spec), lambda x: pixel_quality(x, spec), assess_image):
        with pytest.raises(MicroSegError, match="a masked array: its mask would be ignored"):
            judge(masked)
    # a Micrograph's pixels are its analysis_data (without the data bar), as assess_image measures them
    mg = Micrograph(img, 0.5, "user", databar_rows=2, path="field.tif")
    assert evaluate(mg, spec).quality["clipped_high_fraction"] == 1.0
    assert pixel_quality(mg, spec)["clipped_high_fraction"] == assess_image(mg).clipped_high_fraction == 1.0
    # released pixels were 'image is empty', naming no file
    mg.release_pixels()
    for judge in (lambda x: evaluate(x, spec), lambda x: pixel_quality(x, spec), assess_image):
        with pytest.raises(MicroSegError, match="field.tif: its pixels were released"):
            judge(mg)



def test_write_labels_class_names_as_one_string_is_a_micro_seg_error(tmp_path):
    # it was a bare ValueError: the CLI's and napari's writer's handlers catch MicroSegError (napari: 'Cannot save
    # layer ...'), so a layer whose metadata held the names as one string ended in napari's raw error
    from micro_seg.io import write_labels

    labels = np.array([[0, 1], [1, 0]], np.uint8)
    with pytest.raises(MicroSegError, match=r"classes='matrix,pore': a string, not a sequence of class names"):
        write_labels(tmp_path / "s.tif", labels, pixel_size_um=0.5, classes="matrix,pore")
    assert not (tmp_path / "s.tif").exists()


def test_batch_segment_options_take_numpy_numbers_as_postprocess_does():
    # postprocess() takes threshold=np.float32(0.4); a batch refused it, and np.int64(8) grains, as
    # 'must be a finite number >= 0, got np.int64(8)'
    from micro_seg.batch_worker import check_segment_options

    plain = check_segment_options({"threshold": 0.5, "min_grain_px": 8, "split_ratio": 0.0, "tile_size": 512},
                                  task="grains")
    given = check_segment_options({"threshold": np.float32(0.5), "min_grain_px": np.int64(8),
                                   "split_ratio": np.float64(0), "tile_size": np.int32(512)}, task="grains")
    assert given == plain and all(type(a[1]) is type(b[1]) for a, b in zip(given, plain))  # same parameter hash
    with pytest.raises(MicroSegError, match="option threshold must be strictly between 0 and 1"):
        check_segment_options({"threshold": np.float32(1.5)}, task="grains")


def test_specimen_table_of_a_dataframe_refuses_specimen_names_read_as_numbers():
    # pd.read_csv read the names 007 (and an empty cell) as the float column 7.0, NaN: specimen '007' came back as 7.0
    import io

    import pandas as pd

    from micro_seg.specimens import specimen_table

    text = ("path,specimen,status,grains_per_mm2,pixel_size_um\n"
            "a.tif,007,ok,100,0.5\nb.tif,007,ok,120,0.5\nc.tif,,ok,90,0.5\n")
    with pytest.raises(MicroSegError, match=r"specimen column was read as numbers.*dtype=\{'specimen': str\}"):
        specimen_table(pd.read_csv(io.StringIO(text)))
    got = specimen_table(pd.read_csv(io.StringIO(text), dtype={"specimen": str}))
    assert [(r["specimen"], r["n_fields"]) for r in got] == [("007", 2)]
    assert got[0]["grains_per_mm2_mean"] == pytest.approx(110.0)


def test_link_summary_of_a_linear_fit_is_strict_json(tmp_path):
    # the Hall-Petch fit's r2 became None (HallPetchFit.as_dict); a linear fit's stayed NaN in link()'s summary, which
    # json.dumps wrote as invalid NaN
    import json

    import pandas as pd

    from micro_seg.properties import link

    rows = [{"path": f"in/{s}/f{i}.tif", "status": "ok", "error": "", "mean_intercept_um": d * (1 + 0.01 * i)}
            for s, d in {"A": 6.0, "B": 12.0, "C": 25.0, "D": 50.0}.items() for i in range(3)]
    (tmp_path / "res").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "res" / "images.csv", index=False)
    pd.DataFrame({"sample_id": list("ABCD"), "yield_strength_MPa": [300.0] * 4}).to_csv(tmp_path / "p.csv", index=False)
    r = link(tmp_path / "res", tmp_path / "p.csv", on="sample_id", relation="linear")
    fit = json.loads(json.dumps(r.summary, allow_nan=False))["fit"]
    assert fit["r2"] is None and fit["coefficients"]["intercept"] == pytest.approx(300.0)
