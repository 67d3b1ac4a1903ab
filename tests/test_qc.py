"""QC specs (validation, errors naming the key) and pass / review / fail verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from micro_seg.errors import InputFileNotFoundError, SpecError
from micro_seg.qc import RangeRule, combine_verdicts, evaluate, load_spec, offending_defects, parse_spec
from test_quality import blurred, clipped, grain_micrograph, low_contrast

REPO = Path(__file__).resolve().parents[1]
IMAGE_SPEC = {
    "image": {
        "blur": {"max": 0.45},
        "clipped_low_fraction": 0.02,
        "clipped_high_fraction": 0.02,
        "dynamic_range": 0.15,
        "calibration": "required",
        "pixel_size_um": [0.2, 1.0],
    }
}


def checks(result):
    return sorted(r.check for r in result.reasons)


def test_example_specs_load():
    for name in ("steel_grain_size.yaml", "am_part_porosity.yaml"):
        spec = load_spec(REPO / "examples" / "specs" / name)
        assert spec.needs_measurements and spec.calibration == "fail"


@pytest.mark.parametrize("seed", [0, 1])
def test_original_passes_degraded_versions_flagged(seed):
    spec = parse_spec(IMAGE_SPEC)
    img = grain_micrograph(seed)
    assert evaluate(img, spec, pixel_size_um=0.5).verdict == "pass"
    r = evaluate(blurred(img), spec, pixel_size_um=0.5)
    assert r.verdict == "review" and checks(r) == ["image.blur"]
    assert r.reasons[0].value > 0.45 and r.reasons[0].limit == 0.45 and r.reasons[0].bound == "max"
    r = evaluate(clipped(img), spec, pixel_size_um=0.5)
    assert checks(r) == ["image.clipped_high_fraction"]
    r = evaluate(low_contrast(img), spec, pixel_size_um=0.5)
    assert "image.dynamic_range" in checks(r) and r.verdict == "review"


def test_calibration_and_pixel_size_window():
    spec = parse_spec(IMAGE_SPEC)
    img = grain_micrograph(0)
    r = evaluate(img, spec)
    assert checks(r) == ["image.calibration"] and r.reasons[0].value is None and r.verdict == "review"
    r = evaluate(img, spec, pixel_size_um=2.5)
    assert checks(r) == ["image.pixel_size_um"] and r.reasons[0].limit == 1.0 and r.reasons[0].value == 2.5
    strict = parse_spec({"image": {"calibration": "fail"}})
    assert evaluate(img, strict).verdict == "fail"


def test_micrograph_like_object_supplies_calibration_and_magnification():
    class FakeMicrograph:
        def __init__(self, data):
            self.data = np.vstack([data, np.full((20, data.shape[1]), 255, np.uint8)])  # white data bar
            self.analysis_data = data
            self.pixel_size_um = 0.4
            self.meta = {"magnification": 5000.0}

    spec = parse_spec({"image": {**IMAGE_SPEC["image"], "magnification": [100, 1000]}})
    r = evaluate(FakeMicrograph(grain_micrograph(0)), spec)
    # the data bar is not analysed (no clipping reason); magnification read from meta
    assert checks(r) == ["image.magnification"] and r.reasons[0].value == 5000.0 and r.reasons[0].limit == 1000.0


def test_measurement_rules_margin_and_missing():
    spec = parse_spec({"measurements": {
        "grains": {"G_intercept": {"min": 7, "max": 9, "margin": 0.2}, "ala_G": {"min": 3}},
        "defects": {"area_fraction": 0.005, "max_feret_um": 50},
        "phases": {"phase_fractions": {"ferrite": [0.6, 0.9]}},
    }})
    good = {"grains": {"G_intercept": 8.0, "ala_G": 4.0},
            "defects": {"area_fraction": 0.001, "max_feret_um": 10.0},
            "phases": {"phase_fractions": {"ferrite": 0.7, "pearlite": 0.3}}}
    assert evaluate(None, spec, measurements=good).verdict == "pass"
    near = {**good, "grains": {"G_intercept": 9.15, "ala_G": 4.0}}
    r = evaluate(None, spec, measurements=near)
    assert r.verdict == "review" and r.reasons[0].limit == 9.0 and r.reasons[0].bound == "max"
    far = {**good, "grains": {"G_intercept": 9.5, "ala_G": 2.0}}
    r = evaluate(None, spec, measurements=far)
    assert r.verdict == "fail" and checks(r) == ["grains.G_intercept", "grains.ala_G"]
    porous = {**good, "defects": {"area_fraction": 0.02, "max_feret_um": 80.0},
              "phases": {"phase_fractions": {"ferrite": 0.5}}}
    r = evaluate(None, spec, measurements=porous)
    assert checks(r) == ["defects.area_fraction", "defects.max_feret_um", "phases.phase_fractions.ferrite"]
    assert {x.value for x in r.reasons} == {0.02, 80.0, 0.5}
    # a clean section (no defect found): its largest defect is nothing, so a size limit passes, not "review"
    clean = {**good, "defects": {"count": 0, "area_fraction": 0.0, "max_feret_um": None, "max_ecd_um": None}}
    assert evaluate(None, spec, measurements=clean).verdict == "pass"
    ecd_spec = parse_spec({"measurements": {"defects": {"max_ecd_um": 5}}})
    assert evaluate(None, ecd_spec, measurements=clean).verdict == "pass"
    assert checks(evaluate(None, ecd_spec, measurements={"defects": {"count": 2, "max_ecd_um": 7.5}})) == [
        "defects.max_ecd_um"]
    # not measured -> review with value None, never a silent pass
    r = evaluate(None, spec, measurements={"grains": {"G_intercept": 8.0, "ala_G": 4.0}})
    assert r.verdict == "review" and all(x.value is None for x in r.reasons) and len(r.reasons) == 3


def test_flat_batch_row_is_understood():
    spec = parse_spec({"measurements": {"grains": {"G_intercept": [7, 9]}, "defects": {"area_fraction": 0.01}}})
    row = {"path": "a.tif", "status": "ok", "grains_G_intercept": "6.2", "defects_area_fraction": 0.001}
    r = evaluate(None, spec, measurements=row)
    assert checks(r) == ["grains.G_intercept"] and r.reasons[0].value == pytest.approx(6.2)


def test_classifier_rules():
    spec = parse_spec({"classifier": {"forbidden_classes": ["crack"], "review_classes": ["stain"],
                                      "min_confidence": 0.8}, "image": {"out_of_distribution": "fail"}})
    probs = {"good": 0.1, "crack": 0.85, "stain": 0.05}
    r = evaluate(None, spec, classification={"class": "crack", "probabilities": probs, "ood": False})
    assert r.verdict == "fail" and checks(r) == ["classifier.forbidden_class"] and r.reasons[0].value == "crack"
    r = evaluate(None, spec, classification={"class": "good", "probabilities": {"good": 0.6, "crack": 0.3, "stain": 0.1},
                                             "ood": False})
    assert r.verdict == "review" and checks(r) == ["classifier.confidence"] and r.reasons[0].limit == 0.8
    r = evaluate(None, spec, classification={"class": "stain", "probabilities": {"good": 0.05, "crack": 0.05, "stain": 0.9},
                                             "ood": False})
    assert r.verdict == "review" and checks(r) == ["classifier.review_class"]
    r = evaluate(None, spec, classification={"class": "good", "probabilities": {"good": 0.95, "crack": 0.03, "stain": 0.02},
                                             "ood": True, "ood_score": 40.0, "ood_threshold": 12.0})
    assert r.verdict == "fail" and checks(r) == ["image.out_of_distribution"] and r.reasons[0].limit == 12.0
    # a classifier without an OOD score cannot run the spec's OOD check: review, never a silent pass
    r = evaluate(None, spec, classification={"class": "good", "probabilities": {"good": 0.95, "crack": 0.03, "stain": 0.02}})
    assert r.verdict == "review" and checks(r) == ["image.out_of_distribution"] and r.reasons[0].value is None
    r = evaluate(None, spec)
    assert r.verdict == "review" and checks(r) == ["classifier.class", "image.out_of_distribution"]
    with pytest.raises(SpecError, match="classifier.forbidden_classes"):
        evaluate(None, spec, classification={"class": "a", "probabilities": {"a": 1.0}})


@pytest.mark.parametrize(
    "data, key",
    [
        ({"imag": {}}, "imag"),
        ({"image": {"blurr": 0.4}}, "image.blurr"),
        ({"image": {"blur": "high"}}, "image.blur"),
        ({"image": {"pixel_size_um": [2, 1]}}, "image.pixel_size_um"),
        ({"image": {"pixel_size_um": 0.5}}, "image.pixel_size_um"),
        ({"image": {"calibration": "maybe"}}, "image.calibration"),
        ({"measurements": {"grain": {}}}, "measurements.grain"),
        ({"measurements": {"grains": {"G_intercept": [7]}}}, "measurements.grains.G_intercept"),
        ({"measurements": {"grains": {"G_intercept": {"min": 7, "severity": "bad"}}}}, "measurements.grains.G_intercept.severity"),
        ({"measurements": {"grains": {"G_intercept": {"mni": 7}}}}, "measurements.grains.G_intercept"),
        ({"measurements": {"phases": {"phase_fractions": {"ferrite": [0.2, 1.5]}}}}, "measurements.phases.phase_fractions.ferrite"),
        ({"classifier": {"min_confidence": 1.5}}, "classifier.min_confidence"),
        ({"classifier": {"forbiden_classes": ["x"]}}, "classifier.forbiden_classes"),
        ({"classifier": {"forbidden_classes": [{"x": 1}]}}, "classifier.forbidden_classes"),
        ({"version": 2}, "version"),
        ([1, 2], "top level"),
    ],
)
def test_malformed_spec_names_the_key(data, key):
    with pytest.raises(SpecError) as info:
        parse_spec(data, source="bad.yaml")
    assert str(info.value).startswith("bad.yaml: ") and key in str(info.value)


def test_load_spec_file_errors(tmp_path):
    with pytest.raises(InputFileNotFoundError):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image: {blur: [0.1\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        load_spec(bad)
    toml = tmp_path / "spec.toml"
    toml.write_text('name = "t"\n[measurements.defects]\narea_fraction = 0.01\n')
    spec = load_spec(toml)
    assert spec.measurements["defects"]["area_fraction"] == RangeRule(max=0.01)
    toml.write_text('[measurements.defects]\narea_fraction = "x"\n')
    with pytest.raises(SpecError, match="measurements.defects.area_fraction"):
        load_spec(toml)


def test_combine_verdicts_and_rule_edges():
    assert combine_verdicts([]) == "pass"
    rule = RangeRule(min=1.0, max=2.0)
    assert rule.judge(1.0) is None and rule.judge(2.0) is None
    assert rule.judge(0.5) == ("fail", "min", 1.0)


def test_offending_defects_by_size_known_answer():
    labels = np.zeros((60, 60), np.int32)
    labels[5:8, 5:8] = 1          # Feret ~3.6 px
    labels[20:50, 30:33] = 2      # Feret ~30 px
    labels[40:44, 5:9] = 3        # area 16 px
    spec = parse_spec({"measurements": {"defects": {"max_feret_um": 10.0, "max_area_um2": 3.0}}})
    # at 0.5 um/px: Feret 15 um > 10 (object 2); areas 2.25 / 22.5 / 4 um^2 > 3 (objects 2, 3)
    assert sorted(offending_defects(labels, spec, pixel_size_um=0.5)) == [2, 3]
    assert sorted(offending_defects(labels > 0, spec, pixel_size_um=0.1)) == []
    assert offending_defects(labels, parse_spec({}), pixel_size_um=1.0) == {}


def test_offending_defects_use_the_measurements_own_feret_diameters():
    """A limit between scikit-image's Feret diameter of a 3 x 20 px bar (20.10) and the measurement's (the convex
    hull of the pixel squares, 20.22): the bar breaks it in the measurement, so it must be the object blamed."""
    from micro_seg.measure import measure_defects

    labels = np.zeros((40, 40), np.int32)
    labels[5:8, 10:30] = 7
    labels[20:22, 5:7] = 9
    feret = measure_defects(labels, pixel_size_um=1.0, fields=None).summary["max_feret_um"]
    assert 20.15 < feret < 20.3
    spec = parse_spec({"measurements": {"defects": {"max_feret_um": 20.15}}})
    got = offending_defects(labels, spec, pixel_size_um=1.0)
    assert list(got) == [7] and got[7].startswith("feret_um 20.2 um > 20.1")  # keys are the instance values
    assert list(offending_defects(labels > 0, spec, pixel_size_um=1.0)) == [1]  # a mask: connected components


@pytest.mark.parametrize("value, bound", [(6.8, "min"), (10.2, "max"), (6.8000000001, "min"), (10.1999999999, "max")])
def test_margin_boundary_is_symmetric_despite_float_rounding(value, bound):
    # 7 - 6.8 is 0.20000000000000018 and 10.2 - 10 is 0.1999999999999993 in floating point: both are the margin
    rule = RangeRule(min=7.0, max=10.0, margin=0.2)
    assert rule.judge(value) == ("review", bound, 7.0 if bound == "min" else 10.0)


@pytest.mark.parametrize("value, bound", [(6.79, "min"), (10.21, "max"), (6.7999, "min"), (10.2001, "max")])
def test_beyond_the_margin_fails_on_both_sides(value, bound):
    rule = RangeRule(min=7.0, max=10.0, margin=0.2)
    assert rule.judge(value) == ("fail", bound, 7.0 if bound == "min" else 10.0)


@pytest.mark.parametrize("pixel_size", [None, 0.0])
def test_pixel_size_window_on_an_uncalibrated_image_is_review_not_a_silent_pass(pixel_size):
    spec = parse_spec({"image": {"pixel_size_um": [0.1, 1.0]}})
    r = evaluate(grain_micrograph(0), spec, pixel_size_um=pixel_size)
    assert r.verdict == "review" and checks(r) == ["image.pixel_size_um"]
    assert r.reasons[0].value is None and "no pixel size" in r.reasons[0].message
    assert evaluate(grain_micrograph(0), spec, pixel_size_um=0.5).verdict == "pass"


def test_a_flat_row_is_read_per_group_as_images_csv_names_the_columns():
    # images.csv: grain keys bare, phase fractions phase_fraction_<name> and n_fields phases_n_fields, every
    # defect key defects_<key>: a defects rule must never read the grains' column of the same name
    spec = parse_spec({"measurements": {"defects": {"mean_area_um2": {"max": 100}}}})
    grains_row = {"path": "a.tif", "status": "ok", "pixel_size_um": "0.5", "mean_area_um2": "489.4"}
    r = evaluate(None, spec, measurements=grains_row)
    assert r.verdict == "review" and checks(r) == ["defects.mean_area_um2"] and r.reasons[0].value is None
    assert "defects.mean_area_um2 was not measured" in r.reasons[0].message
    defects_row = {**grains_row, "defects_mean_area_um2": "150"}
    r = evaluate(None, spec, measurements=defects_row)
    assert r.verdict == "fail" and r.reasons[0].value == 150.0
    # a grains rule reads the bare column, not the defects one; phases.n_fields reads phases_n_fields
    grains = parse_spec({"measurements": {"grains": {"mean_area_um2": {"max": 100}}}})
    assert evaluate(None, grains, measurements={"defects_mean_area_um2": "50"}).reasons[0].value is None
    assert evaluate(None, grains, measurements=grains_row).reasons[0].value == 489.4
    phases = parse_spec({"measurements": {"phases": {"n_fields": {"min": 5}}}})
    assert evaluate(None, phases, measurements={"n_fields": "25"}).reasons[0].value is None
    assert evaluate(None, phases, measurements={"phases_n_fields": "25"}).verdict == "pass"
    # the image's pixel size is every group's (it is not repeated per group in the table)
    px = parse_spec({"measurements": {"defects": {"pixel_size_um": [0.1, 1]}}})
    assert evaluate(None, px, measurements=grains_row).verdict == "pass"
    # nested measurements (qc --model, the batch, the napari widget) are read by group as before
    assert evaluate(None, spec, measurements={"grains": {"mean_area_um2": 489.4}}).reasons[0].value is None
    assert evaluate(None, spec, measurements={"defects": {"mean_area_um2": 50.0}}).verdict == "pass"


@pytest.mark.parametrize("phases, where, name", [
    ({"phase_fractions": {"gamma_prime": [0.3, 0.6]}}, "measurements.phases.phase_fractions.gamma_prime", "gamma_prime"),
    ({"phase_fraction_ci95_Matrix": {"max": 0.05}}, "measurements.phases.phase_fraction_ci95_Matrix", "Matrix"),
])
def test_a_phase_the_model_does_not_have_is_refused_up_front(phases, where, name):
    # every image came out "review: ... was not measured" for a phase name the model never reports
    from types import SimpleNamespace

    from micro_seg.qc import check_model_measures

    card = SimpleNamespace(name="ni-superalloy", task="semantic", measures=["phases"], defect_classes=[],
                           classes=["matrix", "secondary_gamma_prime", "tertiary_gamma_prime"])
    check_model_measures(parse_spec({"measurements": {"phases": {
        "phase_fractions": {"secondary_gamma_prime": [0.3, 0.6]}, "phase_fraction_ci95_matrix": {"max": 0.05}}}}), card)
    with pytest.raises(SpecError) as info:
        check_model_measures(parse_spec({"measurements": {"phases": phases}}, source="s.yaml"), card)
    assert str(info.value) == (f"s.yaml: {where}: model 'ni-superalloy' has no class {name!r}; its classes are: "
                               "matrix, secondary_gamma_prime, tertiary_gamma_prime")


def test_an_empty_allowed_classes_list_is_refused_not_failing_every_image():
    # `allowed_classes: []` parsed as "no class allowed": every image failed "not among the allowed classes"
    with pytest.raises(SpecError, match=r"^s\.yaml: classifier\.allowed_classes: an empty list allows no class"):
        parse_spec({"classifier": {"allowed_classes": []}}, source="s.yaml")
    spec = parse_spec({"classifier": {"allowed_classes": ["good"]}})
    assert evaluate(None, spec, classification={"class": "good", "probabilities": {"good": 0.9, "bad": 0.1}}).verdict == "pass"


def test_a_phase_column_rule_is_judged_alike_on_nested_measurements_and_on_a_batch_row():
    # measurements.phases.phase_fraction_<phase> (a batch column) passed on the batch's images.csv but was "not
    # measured" (review) on the nested summary that qc --model and the batch's own QC judge
    from micro_seg.batch_worker import _flat_phases
    from micro_seg.measure import measure_phases

    classes = np.zeros((64, 64), np.uint8)
    classes[:, ::4] = 1  # carbide: 1/4 of every field
    summary = measure_phases(classes, pixel_size_um=0.5, names=["matrix", "carbide"], fields=(2, 2)).summary
    # limits every value breaks, so each reason shows the value the rule read
    spec = parse_spec({"measurements": {"phases": {
        "phase_fraction_carbide": {"max": 0.2}, "phase_fraction_ci95_matrix": {"min": 0.01},
        "phase_fraction_ra_percent_matrix": {"min": 1}, "phase_area_um2_carbide": {"max": 100}}}})
    nested, flat = evaluate(None, spec, measurements={"phases": summary}), evaluate(None, spec, measurements=_flat_phases(summary))
    assert [(r.check, r.value) for r in nested.reasons] == [(r.check, r.value) for r in flat.reasons]
    assert [(r.check, r.value) for r in nested.reasons] == [
        ("phases.phase_fraction_carbide", 0.25), ("phases.phase_fraction_ci95_matrix", 0.0),
        ("phases.phase_fraction_ra_percent_matrix", 0.0), ("phases.phase_area_um2_carbide", 256.0)]


def test_an_angle_column_rule_is_judged_alike_on_nested_measurements_and_on_a_batch_row():
    from micro_seg.batch_worker import flatten_measurements

    summary = {"mean_intercept_by_angle_px": {"0": 12.0, "45": 30.0}, "G_intercept": 9.0}
    spec = parse_spec({"measurements": {"grains": {"mean_intercept_by_angle_px_45": {"max": 20}}}})
    for measurements in ({"grains": summary}, flatten_measurements(summary)):
        assert [(r.check, r.value) for r in evaluate(None, spec, measurements=measurements).reasons] == [
            ("grains.mean_intercept_by_angle_px_45", 30.0)]


@pytest.mark.parametrize("angle", ["30", "45.0", "x"])
def test_an_angle_the_intercepts_are_never_counted_at_is_refused_when_the_spec_is_read(angle):
    # mean_intercept_by_angle_px_30: measure_grains counts at 0, 45, 90 and 135 degrees only, so the rule was
    # "review: not measured" on every image, by qc --model, the batch and on images.csv alike
    with pytest.raises(SpecError) as info:
        parse_spec({"measurements": {"grains": {f"mean_intercept_by_angle_px_{angle}": {"max": 20}}}}, source="s.yaml")
    assert str(info.value) == (
        f"s.yaml: measurements.grains.mean_intercept_by_angle_px_{angle}: the intercepts are counted at 0, 45, 90, 135 "
        f"degrees only, not at {angle}; allowed: mean_intercept_by_angle_px_0, mean_intercept_by_angle_px_45, "
        "mean_intercept_by_angle_px_90, mean_intercept_by_angle_px_135")
    parse_spec({"measurements": {"grains": {"mean_intercept_by_angle_px_135": {"max": 20}}}})
