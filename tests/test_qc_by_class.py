"""QC rules for one defect class (``measurements.defects.by_class.<class>``): a porosity limit judges the pores,
not pores + cracks + inclusions together."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from micro_seg.cli import main
from micro_seg.errors import SpecError
from micro_seg.qc import check_model_measures, evaluate, parse_spec

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
TRUTH = json.loads((SAMPLES / "truth" / "synthetic_porous_section_labels.json").read_text())
# by construction: pores 1.56 %, cracks 0.35 %, inclusions 0.71 % of the section, 2.63 % together
PORE, INCL = TRUTH["area_fraction"]["pore"], TRUTH["area_fraction"]["inclusion"]
ALL = sum(TRUTH["area_fraction"].values())

SPEC = {"measurements": {"defects": {"by_class": {
    "pore": {"area_fraction": {"max": 0.02}, "count": [25, 35]},
    "inclusion": {"area_fraction": {"max": 0.005}},
    "crack": {"max_feret_um": 500},
}}}}


def _nested(pore=PORE, incl=INCL, crack_count=2, crack_feret=200.0):
    return {"defects": {"area_fraction": ALL, "count": 52},
            "defects_by_class": {"pore": {"area_fraction": pore, "count": 30},
                                 "inclusion": {"area_fraction": incl, "count": 20},
                                 "crack": {"count": crack_count, "max_feret_um": crack_feret}}}


def _by_check(result):
    return {r.check: r for r in result.reasons}


def test_each_class_is_judged_on_its_own_numbers():
    spec = parse_spec(SPEC)
    res = evaluate(None, spec, measurements=_nested())
    reasons = _by_check(res)
    assert res.verdict == "fail" and set(reasons) == {"defects.by_class.inclusion.area_fraction"}
    assert reasons["defects.by_class.inclusion.area_fraction"].value == pytest.approx(INCL)
    # the same limit on all classes together would have failed the pores too
    together = evaluate(None, parse_spec({"measurements": {"defects": {"area_fraction": {"max": 0.02}}}}),
                        measurements=_nested())
    assert together.verdict == "fail"


def test_a_class_without_objects_passes_its_size_limits_and_a_missing_class_is_review():
    spec = parse_spec(SPEC)
    res = evaluate(None, spec, measurements=_nested(incl=0.0, crack_count=0, crack_feret=None))
    assert res.verdict == "pass", res.reasons  # no crack at all: its largest crack is nothing
    nested = _nested(incl=0.0)
    del nested["defects_by_class"]["crack"]
    res = evaluate(None, spec, measurements=nested)
    assert res.verdict == "review" and "defects.by_class.crack.max_feret_um" in _by_check(res)


def test_batch_table_columns_are_understood():
    row = {"defects_area_fraction": ALL, "defects_pore_area_fraction": 0.03, "defects_pore_count": 30,
           "defects_inclusion_area_fraction": INCL, "defects_crack_count": 2, "defects_crack_max_feret_um": 600.0}
    reasons = _by_check(evaluate(None, parse_spec(SPEC), measurements=row))
    assert set(reasons) == {"defects.by_class.pore.area_fraction", "defects.by_class.inclusion.area_fraction",
                            "defects.by_class.crack.max_feret_um"}


@pytest.mark.parametrize("bad, match", [
    ({"pore": {"mean_circularity": {"min": 0.5}}}, r"by_class\.pore\.mean_circularity: not judged per defect class"),
    ({"pore": {"area_fraction": {"max": 2}}}, r"by_class\.pore\.area_fraction: a fraction between 0 and 1"),
    ({"pore": 0.1}, r"by_class\.pore"),
])
def test_malformed_class_rules_are_refused(tmp_path, bad, match):
    spec = tmp_path / "s.yaml"
    import yaml

    spec.write_text(yaml.safe_dump({"measurements": {"defects": {"by_class": bad}}}))
    from micro_seg.qc import load_spec

    with pytest.raises(SpecError, match=match):
        load_spec(spec)


def test_a_class_the_model_does_not_have_is_refused_up_front():
    card = SimpleNamespace(name="pores-defects", task="semantic", measures=["phases", "defects"],
                           defect_classes=["pore", "crack", "inclusion"])
    check_model_measures(parse_spec(SPEC, source="s.yaml"), card)
    with pytest.raises(SpecError, match=r"by_class\.pores: model 'pores-defects' has no defect class 'pores'"):
        check_model_measures(parse_spec({"measurements": {"defects": {"by_class": {"pores": {"count": 3}}}}},
                                        source="s.yaml"), card)


@pytest.mark.slow
def test_cli_qc_and_batch_judge_the_pores_of_the_sample_section(tmp_path, capsys):
    import yaml

    spec = tmp_path / "porosity.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    image = SAMPLES / "synthetic_porous_section.tif"
    code = main(["qc", str(image), "--spec", str(spec), "--model", "pores-defects", "--json"])
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert code == 0 and out["verdict"] == "fail"
    assert [r["check"] for r in out["reasons"]] == ["defects.by_class.inclusion.area_fraction"]
    assert out["reasons"][0]["value"] == pytest.approx(INCL, rel=0.15)
    # batch writes the per-class headline numbers and judges them the same way
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / image.name).write_bytes(image.read_bytes())
    code = main(["batch", str(folder), str(tmp_path / "out"), "--model", "pores-defects", "--spec", str(spec),
                 "--workers", "0", "--quiet", "--no-report"])
    assert code == 0
    with open(tmp_path / "out" / "images.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["defects_pore_area_fraction"]) == pytest.approx(PORE, rel=0.15)
    assert int(row["defects_pore_count"]) == pytest.approx(30, abs=3)
    assert row["qc_verdict"] == "fail" and "defects.by_class.inclusion.area_fraction" in row["qc_reasons"]


def test_a_specimen_row_gives_review_for_a_per_class_rule_not_a_crash(tmp_path, capsys):
    # `micro-seg qc specimens.csv` with a by_class rule: internal error KeyError 'defects.by_class.pore' (exit 1)
    from micro_seg.qc import evaluate_specimen

    row = {"specimen": "A", "n_fields": "3", "n_failed": "0", "n_uncalibrated": "0", "defects_area_fraction_mean": "0.01"}
    res = evaluate_specimen(row, parse_spec(SPEC))
    assert res.verdict == "review" and {r.check for r in res.reasons} == {
        "defects.by_class.pore.area_fraction", "defects.by_class.pore.count",
        "defects.by_class.inclusion.area_fraction", "defects.by_class.crack.max_feret_um"}
    assert all("cannot be judged on a specimen row" in r.message for r in res.reasons)
    # not "holds ... defect densities, sizes and fractions", which a per-class rule would read as its own numbers
    assert res.reasons[0].message == ("defects.by_class.pore.area_fraction cannot be judged on a specimen row "
                                      "(specimens.csv holds the defect numbers of all classes together, not of one "
                                      "class); judge the batch's images.csv")
    table = tmp_path / "specimens.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    spec = tmp_path / "spec.yaml"
    spec.write_text("measurements:\n  defects:\n    by_class:\n      pore: {area_fraction: {max: 0.01}}\n")
    assert main(["qc", str(table), "--spec", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["verdict"] == "review"
