"""Phase fractions (E562): Boolean-disk known answers, CI coverage, point-count emulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from micro_seg.errors import InvalidImageError
from micro_seg.measure import combine_phase_fields, measure_phases
from micro_seg.measure.phases import e562_points_per_field
from micro_seg.synth import boolean_disks, boolean_disks_fraction

RADIUS = 4.0
INTENSITY = -math.log(1 - 0.3) / (math.pi * RADIUS**2)  # 30 % covered


def test_fractions_and_names_exact():
    c = np.zeros((120, 100), np.uint8)
    c[:, 60:] = 1
    c[:30, :20] = 2
    res = measure_phases(c, names=["ferrite", "pearlite", "carbide"], pixel_size_um=0.5)
    f = res.summary["phase_fractions"]
    assert f == pytest.approx({"ferrite": (120 * 60 - 600) / 12000, "pearlite": 0.4, "carbide": 0.05})
    assert sum(f.values()) == pytest.approx(1.0)
    assert res.summary["area_um2"]["pearlite"] == pytest.approx(4800 * 0.25)
    assert set(res.summary["ci95"]) == {"ferrite", "pearlite", "carbide"}
    assert list(res.table["name"]) == ["ferrite", "pearlite", "carbide"]


def test_ignore_index_and_missing_names():
    c = np.array([[0, 1, 1, 2]] * 8)
    res = measure_phases(c, ignore_index=0, fields=None)
    assert res.summary["phase_fractions"] == pytest.approx({"1": 2 / 3, "2": 1 / 3})
    with pytest.raises(InvalidImageError, match="only 2 names"):
        measure_phases(c, names=["a", "b"])
    with pytest.raises(InvalidImageError):
        measure_phases(np.zeros((4, 4, 3)))


def test_e562_grid_guide():
    assert [e562_points_per_field(f) for f in (0.02, 0.06, 0.12, 0.5)] == [100, 49, 25, 16]


def test_point_count_on_halves_is_exact():
    c = np.zeros((100, 100), int)
    c[:, 50:] = 1
    res = measure_phases(c, fields=(5, 5), points_per_field=16)
    pc = res.summary["point_count"]
    assert pc["points_per_field"] == 16 and pc["n_points"] == 400
    assert pc["fractions"]["1"] == pytest.approx(0.5)


@pytest.mark.slow
def test_boolean_disks_fraction_and_ci_coverage():
    truth = boolean_disks_fraction(INTENSITY, RADIUS)
    assert truth == pytest.approx(0.3)
    side, n_rep = 256, 200
    per_image = (2048 // side) ** 2
    covered = covered_pts = 0
    total_cover, total_px = 0.0, 0
    done = 0
    seed = 0
    while done < n_rep:
        big = boolean_disks((2048, 2048), intensity=INTENSITY, radius=RADIUS, seed=1000 + seed)
        seed += 1
        total_cover += float(big.sum())
        total_px += big.size
        for k in range(per_image):
            if done >= n_rep:
                break
            r0, c0 = divmod(k, 2048 // side)
            spec = big[r0 * side : (r0 + 1) * side, c0 * side : (c0 + 1) * side]
            s = measure_phases(spec.astype(np.uint8), fields=(5, 5)).summary
            mean = s["field_mean_fractions"]["1"]
            covered += abs(mean - truth) <= s["ci95"]["1"]
            pc = s["point_count"]
            covered_pts += abs(pc["fractions"]["1"] - truth) <= pc["ci95"]["1"]
            done += 1
    # area fraction over a large field (4 x 2048^2 px) within 0.005 of 1 - exp(-lambda pi r^2)
    assert abs(total_cover / total_px - truth) < 0.005
    assert 0.90 <= covered / n_rep <= 0.99
    assert 0.88 <= covered_pts / n_rep <= 0.995


def test_combine_phase_fields_over_images():
    fracs = [0.2, 0.3, 0.25, 0.35]
    res = []
    for f in fracs:
        c = np.zeros((20, 100), int)
        c[:, : int(f * 100)] = 1
        res.append(measure_phases(c, names=["matrix", "second"], fields=None))
    out = combine_phase_fields(res)
    assert out["n_fields"] == 4
    assert out["phase_fractions"]["second"] == pytest.approx(np.mean(fracs))
    # t(0.975, 3) = 3.182
    assert out["ci95"]["second"] == pytest.approx(3.182 * np.std(fracs, ddof=1) / 2, rel=1e-3)


def test_a_field_grid_too_fine_for_the_image_is_shrunk_with_a_warning():
    """The CI depends on the field grid: a 100 x 100 grid on a 100 x 100 px image became 12 x 12 in silence."""
    from micro_seg.measure import measure_phases

    c = np.zeros((100, 100), np.uint8)
    c[:, 30:] = 1
    res = measure_phases(c, fields=(100, 100), what="ph.tif")
    assert res.summary["n_fields"] == 144
    assert any("ph.tif: a 100 x 100 field grid" in w and "12 x 12 fields were used" in w for w in res.warnings)
    assert not any("field grid" in w for w in measure_phases(c, fields=(5, 5)).warnings)


@pytest.mark.parametrize("asked, used", [(20, 16), (100_000, 400), (49, 49)])
def test_points_per_field_off_the_square_grid_says_which_grid_was_used(asked, used):
    """--points 20 counted 16 points per field, and a grid finer than the field's pixel rows fewer still, silently."""
    c = np.zeros((100, 100), np.uint8)
    c[:, 70:] = 1
    res = measure_phases(c, points_per_field=asked)  # 5 x 5 fields of 20 x 20 px
    assert res.summary["point_count"]["points_per_field"] == used
    noted = [w for w in res.warnings if "points_per_field" in w]
    assert (noted == []) if asked == used else (f"{int(math.sqrt(used))} x {int(math.sqrt(used))} = {used}" in noted[0])


def test_float16_class_map_is_measured_without_an_overflow_warning():
    """float16 cannot hold the class-value limit 65535: comparing with it printed 'overflow encountered in cast'."""
    import warnings

    c = np.zeros((40, 40), np.float16)
    c[:, :10] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert measure_phases(c, fields=None).summary["phase_fractions"] == {"0": 0.75, "3": 0.25}


def test_one_field_says_the_confidence_interval_is_undefined():
    """With one field the CIs are null; the warning said 'only 1 fields ...' without saying they are undefined."""
    c = np.zeros((100, 100), np.uint8)
    c[:, :30] = 1
    res = measure_phases(c, fields=None)
    assert res.summary["ci95"] == {"0": None, "1": None} and res.summary["ra_percent"] == {"0": None, "1": None}
    assert any("only 1 field with" in w and "no confidence interval" in w for w in res.warnings)


@pytest.mark.parametrize("names", ["fp", "ferrite,pearlite"])
def test_names_given_as_one_string_are_refused_not_split_into_characters(names):
    """names="fp" named the classes "f" and "p"; "ferrite,pearlite" failed with 'duplicate class names'."""
    c = np.zeros((50, 50), np.uint8)
    c[:, :10] = 1
    with pytest.raises(ValueError, match="a string, not a sequence of class names"):
        measure_phases(c, names=names)


def test_an_ignored_value_no_pixel_has_is_warned_about():
    """--ignore 255 on a map whose unlabelled pixels are 3 measured them as a class without a word."""
    c = np.zeros((50, 50), np.uint8)
    c[:, :10], c[:5] = 1, 3
    res = measure_phases(c, ignore_index=255, fields=None)
    assert res.summary["phase_fractions"]["3"] == pytest.approx(0.1)
    assert any("no pixel has the ignored class value 255" in w and "0, 1, 3" in w for w in res.warnings)
    assert not any("ignored class value" in w for w in measure_phases(c, ignore_index=3, fields=None).warnings)


def test_ignored_pixels_do_not_inflate_a_mostly_ignored_field():
    """--ignore: a field that is almost all ignored (mount, unlabelled) weighs by what it analysed.

    5 x 5 fields of 20 x 20 px; field (0, 0) is ignored (value 9) except one 2 x 2 block of class 1, the other
    24 fields are class 0.  Class 1 is 4 of the 9604 analysed pixels, and each 2 x 2 block holds one point of
    the 10 x 10 grid, so the E562 point count has the same answer.  A plain mean over fields gave 1/25 = 0.04
    (100x too much) for both the point count and the field mean, with an interval far from the pooled fraction.
    """
    cls = np.zeros((100, 100), np.uint8)
    cls[:20, :20] = 9
    cls[10:12, 10:12] = 1
    s = measure_phases(cls, fields=(5, 5), points_per_field=100, ignore_index=9).summary
    truth = 4 / (24 * 400 + 4)
    assert s["phase_fractions"]["1"] == pytest.approx(truth)
    assert s["field_mean_fractions"]["1"] == pytest.approx(truth)
    pc = s["point_count"]
    assert pc["n_points"] == 24 * 100 + 1
    assert pc["fractions"]["1"] == pytest.approx(1 / 2401)
    assert s["ci95"]["1"] < 0.01 and pc["ci95"]["1"] < 0.01  # around the pooled value, not 0.04 +- 0.08


def test_fields_that_are_slivers_do_not_narrow_the_interval():
    """--ignore: 6 whole fields and 19 that hold one analysed pixel each (a specimen in its mount) carry the
    information of 6 fields, so the interval is E562's over those 6 (t with 5 degrees of freedom), not one
    over 25 fields (Cochran's n / (n - 1) and t with 24 degrees of freedom: 25 % narrower; on Boolean disks
    such intervals covered the truth 90 times in 100)."""
    from micro_seg.measure.stats import field_statistics

    cls = np.full((100, 100), 9, np.uint8)
    whole = [0, 3, 7, 12, 18, 24]
    fracs = [0.10, 0.25, 0.15, 0.30, 0.20, 0.05]
    for q in range(25):
        r, c = divmod(q, 5)
        if q in whole:
            f = fracs[whole.index(q)]
            block = np.zeros(400, np.uint8)
            block[: round(400 * f)] = 1
            cls[r * 20:(r + 1) * 20, c * 20:(c + 1) * 20] = block.reshape(20, 20)
        else:
            cls[r * 20, c * 20] = 0  # one analysed pixel of class 0
    res = measure_phases(cls, fields=(5, 5), points_per_field=100, ignore_index=9)
    s = res.summary
    truth = 400 * sum(fracs) / (6 * 400 + 19)
    assert s["phase_fractions"]["1"] == pytest.approx(truth)
    assert s["field_mean_fractions"]["1"] == pytest.approx(truth)
    e562 = field_statistics(fracs)["ci95"]  # the six whole fields alone: 0.098
    assert s["ci95"]["1"] == pytest.approx(e562, rel=0.02)
    assert not any("count as" in w for w in res.warnings)  # 6.1 fields: enough (E562: >= 5)
    # the one-pixel fields' grid points miss their pixel: the point count is E562's own over the 6 whole fields
    pc = s["point_count"]
    assert pc["n_points"] == 600
    assert pc["ci95"]["1"] == field_statistics(res.fields["point_fraction_1"].iloc[whole])["ci95"]


def test_one_whole_field_among_slivers_has_no_interval():
    """One whole field and 24 of one analysed pixel each are as good as one field: no interval, said so."""
    cls = np.full((100, 100), 9, np.uint8)
    cls[:20, :20] = 0
    cls[:20, :5] = 1
    for q in range(1, 25):
        r, c = divmod(q, 5)
        cls[r * 20 + 3, c * 20 + 3] = q % 2
    res = measure_phases(cls, fields=(5, 5), points_per_field=16, ignore_index=9)
    assert res.summary["ci95"]["1"] is None and res.summary["ra_percent"]["1"] is None
    assert any("count as 1.1 fields" in w and "no confidence interval" in w for w in res.warnings)
