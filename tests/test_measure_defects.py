"""Defects / pores / particles: per-object shape measures and E1245 summary, known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from micro_seg.errors import InvalidImageError
from micro_seg.measure import measure_defects
from micro_seg.measure.defects import convex_hull_measures


def _disk(shape, center, r):
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= r * r


def test_rectangle_and_disk_shape_measures():
    m = np.zeros((200, 200), bool)
    m[20:30, 20:60] = True  # 10 x 40 rectangle
    m |= _disk(m.shape, (120, 120), 30)
    res = measure_defects(m, pixel_size_um=0.5, fields=None)
    t = res.table.sort_values("area_px").reset_index(drop=True)
    rect, disk = t.iloc[0], t.iloc[1]
    assert rect["area_px"] == 400
    assert rect["feret_min_px"] == pytest.approx(10.0)
    assert rect["feret_max_px"] == pytest.approx(math.hypot(10, 40))
    assert rect["solidity"] == pytest.approx(1.0)
    assert rect["aspect_ratio"] == pytest.approx(math.hypot(10, 40) / 10)
    assert disk["ecd_px"] == pytest.approx(60, rel=0.01)
    assert disk["feret_max_px"] == pytest.approx(61, abs=1.5)
    assert disk["feret_min_px"] == pytest.approx(61, abs=1.5)
    assert disk["circularity"] == pytest.approx(1.0, abs=0.05)
    assert disk["solidity"] == pytest.approx(1.0, abs=0.03)
    assert disk["perimeter_px"] == pytest.approx(2 * math.pi * 30, rel=0.03)
    assert disk["area_um2"] == pytest.approx(disk["area_px"] * 0.25)
    s = res.summary
    assert s["count"] == 2
    assert s["area_fraction"] == pytest.approx(m.mean())
    assert s["density_per_mm2"] == pytest.approx(2 / (200 * 200 * 0.25e-6))
    assert s["max_feret_um"] == pytest.approx(disk["feret_max_px"] * 0.5)
    assert s["max_ecd_um"] == pytest.approx(60 * 0.5, rel=0.01) and s["max_ecd_px"] == pytest.approx(60, rel=0.01)
    assert s["mean_nn_distance_um"] == pytest.approx(0.5 * math.hypot(120 - 24.5, 120 - 39.5))


def test_l_shape_solidity_and_hull():
    fmax, fmin, area = convex_hull_measures(np.array([0, 1, 1]), np.array([0, 0, 1]))
    assert area == 3.0  # L of three pixels: its hull holds exactly the three centres
    assert fmax == pytest.approx(math.sqrt(8)) and fmin == pytest.approx(2.0)  # 2 x 2 box minus a corner
    m = np.zeros((40, 40), bool)
    m[5:25, 5:10] = True
    m[20:25, 5:25] = True
    t = measure_defects(m, fields=None).table
    assert 0.4 < t["solidity"].iloc[0] < 0.7


def test_instance_labels_touching_objects_stay_separate():
    lab = np.zeros((30, 30), np.int32)
    lab[5:15, 5:15] = 7
    lab[5:15, 15:25] = 9  # touches object 7
    assert measure_defects(lab, fields=None).summary["count"] == 2
    assert measure_defects(lab > 0, fields=None).summary["count"] == 1


def test_mean_free_path_and_fields():
    # vertical stripes of width 4 every 20 px: N_L on rows = 1/20; columns never enter
    m = np.zeros((100, 100), bool)
    for c in range(8, 100, 20):
        m[:, c : c + 4] = True
    s = measure_defects(m, pixel_size_um=1.0).summary
    aa = m.mean()
    n_l = (100 * 5) / (100 * 99 + 100 * 99)
    assert s["mean_free_path_um"] == pytest.approx((1 - aa) / n_l)
    assert s["fields"]["n_fields"] == 25
    assert s["fields"]["area_fraction"]["mean"] == pytest.approx(aa)


def test_no_pixel_size_and_empty_mask():
    s = measure_defects(np.zeros((20, 20), bool)).summary
    assert s["count"] == 0 and s["area_fraction"] == 0 and s["pixel_size_um"] is None
    assert s["mean_ecd_um"] is None and s["max_ecd_px"] is None and any("no pixel size" in w for w in s["warnings"])
    m = np.zeros((20, 20), bool)
    m[2:6, 2:6] = True
    s = measure_defects(m, min_size_px=20).summary
    assert s["count"] == 0
    with pytest.raises(InvalidImageError):
        measure_defects(np.zeros((5, 5, 3)))


def _disk_lattice(side=400, pitch=50, radius=10, offset=0):
    """Disks on a square lattice that runs through the image edges (and corners when offset=0)."""
    yy, xx = np.mgrid[0:side, 0:side]
    m = np.zeros((side, side), bool)
    for r in range(offset - pitch, side + pitch, pitch):
        for c in range(offset - pitch, side + pitch, pitch):
            m |= (yy - r) ** 2 + (xx - c) ** 2 <= radius**2
    return m


@pytest.mark.parametrize("offset", [0, 25, 7])
def test_density_is_edge_corrected_and_sizes_leave_out_cut_objects(offset):
    # one disk per 50 x 50 px cell at 2 um/px: 1 / (100 um)^2 = 100 per mm^2, each ECD that of the digital disk
    m = _disk_lattice(offset=offset)
    inner = _disk_lattice(side=120)[35:86, 35:86]  # one whole disk, centred
    ecd_true = 2.0 * np.sqrt(inner.sum() / np.pi) * 2.0
    res = measure_defects(m, pixel_size_um=2.0)
    s = res.summary
    # Jeffries-weighted count: exact when the lattice is aligned with the frame (offset 0: 49 + 28/2 + 4/4 = 64,
    # offset 25: 64 whole disks, nothing cut); close otherwise (an edge-cut disk counts 1/2 wherever it is cut)
    tol = 1e-9 if offset in (0, 25) else 0.08
    assert s["density_per_mm2"] == pytest.approx(100.0, rel=tol)
    assert s["fields"]["density_per_mm2"]["mean"] == pytest.approx(s["density_per_mm2"], rel=1e-9)
    assert s["mean_ecd_um"] == pytest.approx(ecd_true, rel=1e-9)  # cut disks (smaller) left out
    assert s["count"] == int(res.table.shape[0]) and s["n_touching_edge"] == int(res.table["touches_edge"].sum())


def test_when_every_object_is_cut_the_means_use_them_all_with_a_warning():
    m = np.zeros((60, 60), bool)
    m[:, 20:30] = True  # one band from top to bottom
    s = measure_defects(m, pixel_size_um=1.0, fields=None).summary
    assert s["count"] == 1 and s["mean_area_um2"] == pytest.approx(600.0)
    assert any("every object touches the image edge" in w for w in s["warnings"])


def test_vectorised_centroids_and_hulls_equal_the_per_object_loop():
    """Centroids from per-label sums and hulls from the run ends of all objects at once (with small shapes measured
    once) give exactly the values of the former loop over the objects with all their pixels; the convex areas are
    whole numbers of pixel centres (exact shoelace, not qhull's floating area)."""
    from scipy import ndimage as ndi

    import micro_seg.measure.defects as D

    rng = np.random.default_rng(7)
    m = ndi.binary_dilation(rng.random((300, 400)) < 0.01) & (rng.random((300, 400)) < 0.85)
    yy, xx = np.mgrid[:300, :400]
    m |= (yy - 150) ** 2 + (2 * (xx - 200)) ** 2 < 40**2  # a large object, and one cut by the edge
    m |= (yy - 10) ** 2 + (xx - 395) ** 2 < 15**2
    lab = ndi.label(m, structure=np.ones((3, 3)))[0].astype(np.int32)
    lab[lab == 5] = 9  # a label in two pieces
    res = D.measure_defects(lab, fields=None)
    t = res.table
    labels = res.labels
    assert len(t) > 500 and t["feret_max_px"].max() > 80
    for k, sl in enumerate(ndi.find_objects(labels)):
        rr, cc = np.nonzero(labels[sl] == k + 1)
        rr, cc = rr + sl[0].start, cc + sl[1].start
        row = t.iloc[k]
        assert (row["centroid_row_px"], row["centroid_col_px"]) == (rr.mean(), cc.mean())
        fmax, fmin, hull = D.convex_hull_measures(rr, cc)
        assert (row["feret_max_px"], row["feret_min_px"]) == (fmax, fmin)
        assert row["solidity"] == min(1.0, rr.size / hull) and hull == round(hull)


@pytest.mark.parametrize("big", [300, 2**40])
def test_instance_table_label_is_the_image_value_so_rows_join_back(tmp_path, big):
    """The table's label used to be the object's rank (1..N) among the values, not its value in the image: the
    rows of a label image with ids 7, 300, 2**40 came out as 1, 2, 3 and joined to the wrong objects (grain
    tables keep the values)."""
    import pandas as pd
    import tifffile

    from micro_seg.cli import main

    lab = np.zeros((60, 60), np.int64)
    lab[5:10, 5:10], lab[20:30, 20:30], lab[40:43, 40:52], lab[50:52, 2:4] = 7, big, 12, 2  # 25, 100, 36, 4 px
    res = measure_defects(lab, fields=None, min_size_px=5)  # the 4-px object is dropped, the others keep values
    assert dict(zip(res.table["label"].tolist(), res.table["area_px"].tolist())) == {7: 25, 12: 36, big: 100}
    # res.labels numbers the rows 1..N
    assert [int((res.labels == k + 1).sum()) for k in range(len(res.table))] == res.table["area_px"].tolist()
    mask = lab > 0  # a binary mask: its connected components, numbered
    assert measure_defects(mask, fields=None).table["label"].tolist() == [1, 2, 3, 4]
    tifffile.imwrite(tmp_path / "inst.tif", lab.astype(np.uint64 if big > 65535 else np.uint16))
    assert main(["measure", "defects", str(tmp_path / "inst.tif"), "--fields", "none",
                 "--table", str(tmp_path / "t.csv")]) == 0
    t = pd.read_csv(tmp_path / "t.csv")
    assert dict(zip(t["label"], t["area_px"])) == {2: 4, 7: 25, 12: 36, big: 100}


@pytest.mark.parametrize("shape, fields", [((100, 100), None), ((100, 100), 1), ((24, 24), "auto")])
def test_one_field_says_the_confidence_interval_is_undefined(shape, fields):
    """With one field (fields=None / --fields none, or an image too small to split) the CIs were NaN (null in the
    JSON) and nothing said why; measure phases warns in that case."""
    m = np.zeros(shape, bool)
    m[3:8, 3:8] = True
    res = measure_defects(m, pixel_size_um=1.0, fields=fields)
    assert res.summary["fields"]["n_fields"] == 1
    assert res.summary["area_fraction_ci95"] is None and res.summary["density_ci95_per_mm2"] is None
    assert any("one field" in w and "no confidence interval" in w for w in res.warnings)
    several = measure_defects(np.pad(m, 40), pixel_size_um=1.0, fields="auto")
    assert several.summary["area_fraction_ci95"] is not None
    assert not any("no confidence interval" in w for w in several.warnings)


@pytest.mark.parametrize("fields", [np.array([1, 1]), (np.int64(1), np.int64(1))])
def test_one_field_grid_given_as_numpy_values_is_measured(fields):
    """The one-field warning compared fields == "auto", which for a numpy grid is an array: np.array([1, 1])
    raised 'truth value of an array ... is ambiguous' instead of measuring (it was measured before)."""
    m = np.zeros((100, 100), bool)
    m[3:8, 3:8] = True
    res = measure_defects(m, pixel_size_um=1.0, fields=fields)
    assert res.summary["fields"]["n_fields"] == 1 and res.summary["count"] == 1
    assert any("measured as one field:" in w for w in res.warnings)  # not "(the image is too small to split)"


def test_an_image_with_one_nonzero_value_is_a_mask_so_its_label_is_the_component_number():
    """As the README and docstring say (a docs fix: they said 'value in an instance label image' without this case):
    one non-zero value cannot be told from a 0/255 mask, so a single object labelled 7 is label 1."""
    lab = np.zeros((40, 40), np.uint16)
    lab[5:10, 5:10] = 7
    assert measure_defects(lab, fields=None).table["label"].tolist() == [1]
    lab[20:25, 20:25] = 7  # two pieces of the one value: two objects (a mask), not one instance
    assert measure_defects(lab, fields=None).table["label"].tolist() == [1, 2]


def test_min_size_reports_what_it_removed(tmp_path, capsys):
    """min_size_px / --min-size dropped objects (and their pixels from the area fraction) without saying how many:
    the summary now counts them (n_removed_small, removed_area_fraction) and a warning says so."""
    import json

    import tifffile

    from micro_seg.cli import main

    m = np.zeros((64, 64), np.uint8)
    m[10:20, 10:20] = 1
    m[40:50, 40:50] = 1
    for i in range(5):  # five isolated 1-px specks
        m[2 + 12 * i, 60] = 1
    s = measure_defects(m, fields=None, min_size_px=5).summary
    assert s["count"] == 2 and s["area_fraction"] == pytest.approx(200 / 64**2)
    assert s["n_removed_small"] == 5 and s["removed_area_fraction"] == pytest.approx(5 / 64**2)
    assert sum("5 object(s) smaller than the minimum size of 5 px" in w for w in s["warnings"]) == 1
    kept = measure_defects(m, fields=None).summary  # nothing removed: zero, and no warning
    assert kept["count"] == 7 and kept["n_removed_small"] == 0 and kept["removed_area_fraction"] == 0
    assert not any("minimum size" in w for w in kept["warnings"])
    fn = tmp_path / "specks.tif"
    tifffile.imwrite(fn, m)
    assert main(["measure", "defects", str(fn), "--min-size", "5", "--fields", "none", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_removed_small"] == 5 and any("minimum size" in w for w in res["warnings"])
