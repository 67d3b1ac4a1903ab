"""Tests of micro_seg.synth: truth known by construction, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from micro_seg.synth import (
    GRAIN_KINDS,
    boolean_disks,
    boolean_disks_fraction,
    grain_seeds,
    relabel_consecutive,
    voronoi_from_seeds,
    voronoi_labels,
)


@pytest.mark.parametrize("kind", GRAIN_KINDS)
def test_voronoi_labels_consecutive_and_deterministic(kind):
    a = voronoi_labels((96, 128), n_grains=40, seed=7, kind=kind)
    b = voronoi_labels((96, 128), n_grains=40, seed=7, kind=kind)
    c = voronoi_labels((96, 128), n_grains=40, seed=8, kind=kind)
    assert a.dtype == np.int32 and a.shape == (96, 128)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    u = np.unique(a)
    np.testing.assert_array_equal(u, np.arange(1, a.max() + 1))


def test_voronoi_nearest_seed_exact():
    seeds = np.array([[2.0, 2.0], [2.0, 9.0], [8.0, 5.0]])
    idx = voronoi_from_seeds((11, 12), seeds)
    rr, cc = np.mgrid[:11, :12]
    d = (rr[..., None] - seeds[:, 0]) ** 2 + (cc[..., None] - seeds[:, 1]) ** 2
    np.testing.assert_array_equal(idx, d.argmin(axis=-1))


def test_poisson_voronoi_mean_area():
    # Grains whose seed lies inside the field tile it on average: mean area = A / n.
    shape, n = (400, 400), 400
    areas = []
    for s in range(3):
        seeds = grain_seeds(shape, n_grains=n, seed=s)
        idx = voronoi_from_seeds(shape, seeds)
        assert np.sum(np.all((seeds >= -0.5) & (seeds <= 399.5), axis=1)) == n
        counts = np.bincount(idx.ravel(), minlength=len(seeds))[:n]
        areas.append(counts.mean())
    assert np.mean(areas) == pytest.approx(shape[0] * shape[1] / n, rel=0.05)


def test_elongated_grains_have_aspect_ratio():
    from skimage.measure import regionprops

    lab = voronoi_labels((300, 300), n_grains=150, seed=1, kind="hardcore", aspect_ratio=4)
    props = [p for p in regionprops(lab) if p.area > 50]
    ratio = np.median([p.axis_major_length / p.axis_minor_length for p in props])
    orient = np.median([abs(p.orientation) for p in props])
    assert 2.5 < ratio < 6
    assert orient > np.deg2rad(70)  # long axis along the columns (orientation ~ +-90 deg)


def test_relabel_consecutive_sparse_keys():
    keys = np.array([[10**12, 5], [5, 3]])
    np.testing.assert_array_equal(relabel_consecutive(keys), [[3, 2], [2, 1]])


def test_boolean_disk_fraction_matches_formula():
    lam, r = 0.0015, 7.0
    m = boolean_disks((1024, 1024), intensity=lam, radius=r, seed=0)
    assert m.dtype == bool
    assert m.mean() == pytest.approx(boolean_disks_fraction(lam, r), abs=0.015)
    # unbiased at the edges too
    edge = np.concatenate([m[:20].ravel(), m[-20:].ravel(), m[:, :20].ravel(), m[:, -20:].ravel()])
    assert edge.mean() == pytest.approx(boolean_disks_fraction(lam, r), abs=0.04)


def test_bad_arguments_raise_valueerror():
    with pytest.raises(ValueError, match="kind"):
        voronoi_labels((10, 10), n_grains=3, kind="nope")
    with pytest.raises(ValueError, match="n_grains"):
        voronoi_labels((10, 10), n_grains=0)
    with pytest.raises(ValueError, match="shape"):
        voronoi_labels((0, 10), n_grains=3)
    with pytest.raises(ValueError, match="radius"):
        boolean_disks((10, 10), intensity=0.1, radius=-1)


# ------------------------------------------------------------------ more structure


def test_hardcore_seeds_respect_minimum_distance():
    from scipy.spatial import cKDTree

    n, shape = 200, (300, 300)
    seeds = grain_seeds(shape, n_grains=n, kind="hardcore", hardcore=0.7, seed=0, crop=False)
    spacing = np.sqrt(2.0 / (np.sqrt(3.0) * n / (shape[0] * shape[1])))
    d, _ = cKDTree(seeds).query(seeds, k=2)
    assert d[:, 1].min() >= 0.7 * spacing - 1e-9
    assert abs(len(seeds) - n) <= 0.03 * n


def test_regular_structures_have_narrower_size_spread():
    from skimage.segmentation import clear_border

    def cv(kind):
        lab = clear_border(voronoi_labels((300, 300), n_grains=150, seed=4, kind=kind))
        a = np.bincount(lab.ravel())[1:]
        a = a[a > 0]
        return a.std() / a.mean()

    # area CV of Poisson-Voronoi cells is 0.53; regular patterns are far narrower
    assert cv("poisson") == pytest.approx(0.53, abs=0.1)
    assert cv("lattice") < cv("hardcore") < 0.25


def test_bimodal_has_two_size_populations():
    lab = voronoi_labels((400, 400), n_grains=300, kind="bimodal", size_ratio=25, seed=2)
    a = np.bincount(lab.ravel())[1:]
    assert a.max() / np.median(a) > 10


def test_wavy_grains_stay_single_pieces():
    from skimage.measure import label

    lab = voronoi_labels((200, 200), n_grains=60, seed=5, waviness=0.3)
    assert label(lab, background=-1, connectivity=2).max() == lab.max()


# ------------------------------------------------------------------ grain micrographs

from micro_seg.synth import (  # noqa: E402
    DEFECT_CLASSES,
    STYLES,
    add_twins,
    defect_micrograph,
    degradations,
    grain_boundaries,
    grain_micrograph,
    phase_map,
    phase_micrograph,
    render_etched_optical,
)


@pytest.mark.parametrize("style", STYLES)
def test_grain_micrograph_deterministic_and_consistent(style):
    a = grain_micrograph((96, 112), n_grains=25, style=style, difficulty="hard", seed=11)
    b = grain_micrograph((96, 112), n_grains=25, style=style, difficulty="hard", seed=11)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.image.dtype == np.uint8
    assert a.image.shape == ((96, 112, 3) if style == "tint" else (96, 112))
    assert a.labels.dtype == np.int32 and a.labels.min() == 1
    assert a.n_grains == len(np.unique(a.labels)) == a.labels.max()
    assert a.pixel_size_um == 0.5 and a.meta["style"] == style
    assert a.boundaries.dtype == bool and a.twin_mask.dtype == bool


def test_uint16_output_uses_the_range():
    s = grain_micrograph((64, 64), n_grains=10, bit_depth=16, seed=0)
    assert s.image.dtype == np.uint16 and s.image.max() > 40000


def test_twins_do_not_change_labels_and_stay_inside_one_grain():
    plain = grain_micrograph((160, 160), n_grains=20, difficulty="clean", seed=3)
    twinned = grain_micrograph(
        (160, 160), n_grains=20, difficulty="clean", seed=3, twin_probability=1.0
    )
    np.testing.assert_array_equal(plain.labels, twinned.labels)
    np.testing.assert_array_equal(plain.boundaries, twinned.boundaries)
    assert twinned.twin_mask.mean() > 0.03 and not plain.twin_mask.any()
    # twin boundaries: at the band edges, never on grain boundaries
    tb = twinned.twin_boundaries
    assert tb.any() and not plain.twin_boundaries.any()
    assert not (tb & twinned.boundaries).any()
    assert np.all(ndi_dilate(twinned.twin_mask, 1)[tb])
    assert plain.n_grains == twinned.n_grains
    # every twin band lies inside one grain
    twin_ids, parent = add_twins(twinned.labels, probability=1.0, seed=0)
    for k, p in enumerate(parent, start=1):
        assert set(np.unique(twinned.labels[twin_ids == k]).tolist()) == {p}


def test_artefact_mask_marks_the_pits_and_scratches_drawn_and_leaves_the_image_alone():
    kw = dict(n_grains=30, difficulty="clean", seed=4)
    plain = grain_micrograph((128, 128), **kw)
    scratched = grain_micrograph((128, 128), scratch_count=4, pit_density=1e-3, **kw)
    assert not plain.artefact_mask.any()
    assert 0.005 < scratched.artefact_mask.mean() < 0.3
    np.testing.assert_array_equal(plain.labels, scratched.labels)
    # the marked pixels are the ones the artefacts darkened
    diff = plain.image.astype(float) - scratched.image.astype(float)
    assert diff[scratched.artefact_mask].mean() > 10 * max(1.0, abs(diff[~scratched.artefact_mask].mean()))


def test_twin_boundaries_are_drawn_in_the_optical_image():
    lab = np.ones((60, 60), np.int32)
    twin_ids = np.zeros_like(lab)
    twin_ids[:, 25:35] = 1
    img = render_etched_optical(
        lab, twin_ids=twin_ids, twin_parent=np.array([1]), twin_contrast=1.0,
        grain_shading=0.0, seed=0,
    )
    assert img[:, 24:26].mean() < img[:, 5:15].mean() - 0.2  # a line at the twin boundary
    assert not grain_boundaries(lab).any()  # ... which is not a grain boundary


def test_boundaries_mask_matches_label_changes():
    from skimage.measure import label

    s = grain_micrograph((128, 128), n_grains=30, seed=6, difficulty="clean")
    lab, bnd = s.labels, s.boundaries
    # every pair of 8-adjacent pixels with different labels has a boundary pixel
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = lab[max(0, -dr) or None : lab.shape[0] - dr, max(0, -dc) : lab.shape[1] - max(dc, 0)]
        b = lab[dr:, max(dc, 0) : lab.shape[1] + min(dc, 0) or None]
        ba = bnd[max(0, -dr) or None : lab.shape[0] - dr, max(0, -dc) : lab.shape[1] - max(dc, 0)]
        bb = bnd[dr:, max(dc, 0) : lab.shape[1] + min(dc, 0) or None]
        differ = a != b
        assert np.all(ba[differ] | bb[differ])
    # boundary pixels sit where labels change, and the line is thin
    assert bnd.mean() < 0.12
    changes = np.zeros_like(bnd)
    changes[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    changes[1:, :] |= lab[1:, :] != lab[:-1, :]
    changes[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    changes[:-1, :] |= lab[1:, :] != lab[:-1, :]
    from scipy import ndimage as ndi

    assert np.all(ndi.binary_dilation(changes, np.ones((3, 3)))[bnd])
    # regions between boundary lines never straddle two grains (8-connectivity)
    cc = label(~bnd, connectivity=2)
    for region in range(1, cc.max() + 1):
        assert len(np.unique(lab[cc == region])) == 1


def test_boundaries_are_dark_in_optical_images_and_fading_lightens_them():
    kw = dict(n_grains=40, difficulty="clean", seed=8, noise_sd=0.0)
    full = grain_micrograph((160, 160), fade_fraction=0.0, **kw)
    faded = grain_micrograph((160, 160), fade_fraction=1.0, **kw)
    on, off = full.boundaries, ~ndi_dilate(full.boundaries, 3)
    assert full.image[on].mean() < full.image[off].mean() - 60
    assert faded.image[on].mean() > full.image[on].mean() + 30


def ndi_dilate(mask, n):
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=n)


def test_degradation_presets():
    clean, hard = degradations("clean"), degradations("hard")
    assert clean.twin_probability == 0 and clean.scratch_count == 0 and clean.photons is None
    assert hard.fade_fraction > 0.3 and hard.twin_probability > 0.3 and hard.pit_density > 0
    mid = degradations(0.5)
    assert clean.blur_sigma_px < mid.blur_sigma_px < hard.blur_sigma_px
    with pytest.raises(TypeError, match="unknown degradation"):
        degradations("hard", twins=1)
    with pytest.raises(ValueError, match="difficulty"):
        degradations("insane")


def test_hard_images_are_harder_than_clean_ones():
    # a global threshold recovers the boundaries of a clean image, not of a hard one
    from skimage.filters import threshold_otsu

    def f1(diff):
        s = grain_micrograph((192, 192), n_grains=40, difficulty=diff, seed=2)
        pred = s.image < threshold_otsu(s.image)
        truth = ndi_dilate(s.boundaries, 1)
        tp = (pred & truth).sum()
        return 2 * tp / (pred.sum() + truth.sum())

    assert f1("clean") > 0.6
    assert f1("hard") < f1("clean") - 0.2


# ------------------------------------------------------------------ phases


def test_phase_fractions():
    m = phase_map((200, 200), fractions=(0.5, 0.3, 0.2), structure="blobs", seed=0)
    np.testing.assert_allclose(np.bincount(m.ravel()) / m.size, [0.5, 0.3, 0.2], atol=1e-4)
    g = phase_map((300, 300), fractions=(0.6, 0.4), structure="grains", n_grains=300, seed=0)
    assert (g == 1).mean() == pytest.approx(0.4, abs=0.01)
    d = phase_map((600, 600), fractions=(0.75, 0.25), structure="disks", radius_px=5, seed=0)
    assert (d == 1).mean() == pytest.approx(0.25, abs=0.02)


def test_phase_micrograph_truth_and_contrast():
    s = phase_micrograph((128, 128), fractions=(0.7, 0.3), difficulty="easy", seed=1)
    np.testing.assert_allclose(s.fractions, np.bincount(s.classes.ravel()) / s.classes.size)
    assert s.fractions.sum() == pytest.approx(1.0)
    assert s.image[s.classes == 0].mean() > s.image[s.classes == 1].mean() + 50  # optical
    sem = phase_micrograph((128, 128), fractions=(0.7, 0.3), style="sem", seed=1)
    assert sem.image[sem.classes == 0].mean() < sem.image[sem.classes == 1].mean()
    with pytest.raises(ValueError, match="sum to 1"):
        phase_micrograph((32, 32), fractions=(0.5, 0.4))


# ------------------------------------------------------------------ defects


def test_defect_micrograph_counts_and_instances():
    from skimage.measure import label

    s = defect_micrograph((256, 256), n_pores=12, n_cracks=2, n_inclusions=10, seed=4)
    assert s.counts == {"pore": 12, "crack": 2, "inclusion": 10}
    assert s.class_names == DEFECT_CLASSES
    assert s.instances.max() == 24
    for k in range(1, 25):
        obj = s.instances == k
        assert len(np.unique(s.classes[obj])) == 1
        assert label(obj, connectivity=2).max() == 1
    for cls, name in enumerate(DEFECT_CLASSES[1:], start=1):
        n = len(np.unique(s.instances[s.classes == cls]))
        assert n == s.counts[name]
    assert np.array_equal(s.instances > 0, s.classes > 0)
    # pores are darker than inclusions, both darker than the background
    bg = s.image[s.classes == 0].mean()
    assert s.image[s.classes == 1].mean() < s.image[s.classes == 3].mean() < bg


# ------------------------------------------------------------------ sample_images


SAMPLES = {
    "synthetic_etched_twins.tif": 0.5,
    "synthetic_sem_grains.tif": 0.05,
    "synthetic_two_phase.tif": 0.25,
    "synthetic_porous_section.tif": 1.0,
    "nist_steel_ferrite_crop.tif": 0.2252,
    "tbm_colour_etched_10-256-512.png": None,
    "tbm_colour_etched_14-512-512.png": None,
    "nasa_super1_spot1_0d_0.tif": None,
}


def _samples_dir():
    from micro_seg.resources import sample_images_dir

    return sample_images_dir()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_images_calibration_reads_back(name):
    from micro_seg.io import read_micrograph

    m = read_micrograph(_samples_dir() / name)
    if SAMPLES[name] is None:
        assert m.pixel_size_um is None
    else:
        assert m.pixel_size_um == pytest.approx(SAMPLES[name], rel=1e-6)
        assert m.calibration_source == "imagej"


def test_sample_images_folder_is_small():
    total = sum(p.stat().st_size for p in _samples_dir().rglob("*") if p.is_file())
    assert total < 4 * 1024 * 1024


def test_sample_truth_is_consistent():
    import json

    from micro_seg.io import read_labels, read_micrograph

    d = _samples_dir()
    truth = d / "truth"
    for name in ("synthetic_etched_twins", "synthetic_sem_grains"):
        info = json.loads((truth / f"{name}_labels.json").read_text())
        labels, px = read_labels(truth / f"{name}_labels.tif")
        bnd, _ = read_labels(truth / f"{name}_boundaries.tif")
        img = read_micrograph(d / f"{name}.tif").data
        assert px == info["pixel_size_um"]
        assert labels.shape == img.shape
        assert info["n_grains"] == labels.max() == len(np.unique(labels))
        np.testing.assert_array_equal(bnd.astype(bool), grain_boundaries(labels))
    info = json.loads((truth / "synthetic_two_phase_labels.json").read_text())
    classes, _ = read_labels(truth / "synthetic_two_phase_labels.tif")
    for i, name in enumerate(info["classes"]):
        assert (classes == i).mean() == pytest.approx(info["phase_fractions"][name], abs=1e-9)
    info = json.loads((truth / "synthetic_porous_section_labels.json").read_text())
    classes, _ = read_labels(truth / "synthetic_porous_section_labels.tif")
    inst, _ = read_labels(truth / "synthetic_porous_section_instances.tif")
    for i, name in enumerate(info["classes"][1:], start=1):
        assert len(np.unique(inst[classes == i])) == info["counts"][name]
