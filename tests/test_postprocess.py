import numpy as np
import pytest
from scipy import ndimage as ndi
from types import SimpleNamespace

from micro_seg.errors import InvalidImageError, ModelError
from micro_seg.postprocess import (
    boundary_class_index,
    defect_instances,
    grains_from_boundary_probability,
    grains_from_boundary_probability_tiled,
    phases_from_labels,
    postprocess,
    remove_small_islands,
)
from micro_seg.synth import voronoi_labels
from micro_seg.synth.render import grain_boundaries


def _prob_from_truth(truth, seed, noise=0.08):
    b = ndi.binary_dilation(grain_boundaries(truth))
    rng = np.random.default_rng(seed)
    prob = ndi.gaussian_filter(b.astype(np.float32), 0.7) * 1.2 + rng.normal(0, noise, b.shape)
    return np.clip(prob, 0, 1).astype(np.float32), b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voronoi_grains_recovered_one_to_one(seed):
    truth = voronoi_labels((256, 320), n_grains=60, seed=seed, kind="hardcore", waviness=0.1)
    prob, b = _prob_from_truth(truth, seed)
    lab = grains_from_boundary_probability(prob, min_grain_px=4)
    assert lab.dtype == np.int32 and lab.shape == truth.shape
    # truth grains that keep an interior of >= 4 px outside the drawn boundary
    interior_area = np.bincount(truth[~b], minlength=truth.max() + 1)
    expected = int(np.sum(interior_area[1:] >= 4))
    assert lab.max() == expected
    # every predicted grain lies inside exactly one true grain and matches it
    for g in range(1, lab.max() + 1):
        t = truth[lab == g]
        major = np.bincount(t).argmax()
        assert np.mean(t == major) > 0.97
    majors = [np.bincount(truth[lab == g]).argmax() for g in range(1, lab.max() + 1)]
    assert len(set(majors)) == len(majors)  # no grain split in two
    assert set(np.unique(lab[~b & (interior_area[truth] >= 4)])) - {0} == set(range(1, lab.max() + 1))


def test_gaps_in_boundaries_are_closed():
    # 4 x 4 square grains of 40 px with 2 px boundaries; erase 4-px stretches of several boundaries
    n, size = 4, 40
    prob = np.zeros((n * size, n * size), np.float32)
    for k in range(1, n):
        prob[k * size - 1 : k * size + 1, :] = 0.95
        prob[:, k * size - 1 : k * size + 1] = 0.95
    rng = np.random.default_rng(3)
    for k in range(1, n):
        for _ in range(2):
            c = int(rng.integers(5, n * size - 9))
            prob[k * size - 1 : k * size + 1, c : c + 4] = 0.05  # gap in a horizontal boundary
            prob[c : c + 4, k * size - 1 : k * size + 1] = 0.05  # gap in a vertical boundary
    naive = ndi.label(prob <= 0.5)[1]
    assert naive < n * n  # the gaps really merge grains for a plain connected-component count
    lab = grains_from_boundary_probability(prob, min_grain_px=16)
    assert lab.max() == n * n
    for i in range(n):
        for j in range(n):
            core = lab[i * size + 5 : (i + 1) * size - 5, j * size + 5 : (j + 1) * size - 5]
            assert len(np.unique(core)) == 1 and core[0, 0] > 0


def test_small_fragments_merged_and_boundaries_kept_or_filled():
    prob = np.zeros((60, 60), np.float32)
    prob[:, 29:31] = 1.0
    prob[10:13, 5:8] = 0.0
    prob[8:15, 3:10] = np.where(np.pad(np.zeros((5, 5)), 1, constant_values=1) > 0, 1.0, 0.0)  # 5x5 enclosed fragment
    lab = grains_from_boundary_probability(prob, min_grain_px=40)
    assert lab.max() == 2
    assert np.all(lab[:, 29:31] == 0)
    filled = grains_from_boundary_probability(prob, min_grain_px=40, keep_boundaries=False)
    assert filled.min() == 1 and filled.max() == 2
    assert np.all(filled[:, :25] == filled[0, 0]) and np.all(filled[:, 35:] == filled[0, -1])


def test_mask_excludes_region_and_empty_interior():
    prob = np.zeros((40, 40), np.float32)
    mask = np.ones((40, 40), bool)
    mask[:, 20:] = False
    lab = grains_from_boundary_probability(prob, mask=mask)
    assert np.all(lab[:, 20:] == 0) and lab.max() == 1
    assert grains_from_boundary_probability(np.ones((10, 10))).max() == 0
    with pytest.raises(InvalidImageError):
        grains_from_boundary_probability(np.zeros((3, 3, 3)))


def test_grains_feed_measure_grains():
    from micro_seg.measure import measure_grains

    truth = voronoi_labels((200, 200), n_grains=40, seed=5, kind="hardcore")
    prob, _ = _prob_from_truth(truth, 5)
    lab = grains_from_boundary_probability(prob)
    got = measure_grains(lab, pixel_size_um=1.0, fields=None).summary
    ref = measure_grains(truth, pixel_size_um=1.0, fields=None).summary
    assert got["n_grains"] == pytest.approx(ref["n_grains"], abs=3)
    assert got["mean_intercept_um"] == pytest.approx(ref["mean_intercept_um"], rel=0.05)


def test_small_islands_removed():
    lab = np.zeros((20, 20), np.uint8)
    lab[:, 10:] = 1
    lab[5, 5] = 1  # 1-px island of class 1 inside class 0
    lab[14:16, 14:16] = 2  # 4-px island of class 2 inside class 1
    out = remove_small_islands(lab, min_island_px=5)
    assert out[5, 5] == 0 and np.all(out[14:16, 14:16] == 1)
    assert np.array_equal(phases_from_labels(lab), lab)
    assert np.array_equal(phases_from_labels(lab, min_island_px=5), out)
    assert np.array_equal(remove_small_islands(lab, min_island_px=2)[14:16, 14:16], lab[14:16, 14:16])


def test_defect_instances_known_counts():
    lab = np.zeros((50, 50), np.uint8)
    lab[2:6, 2:6] = 1
    lab[10:14, 30:34] = 1
    lab[40, 40] = 1  # below min area: dropped
    lab[20:22, 5:45] = 2  # one crack
    inst = defect_instances(lab, classes=["matrix", "pore", "crack"], defect_classes=["pore", "crack"], min_area_px=4)
    assert inst["pore"].max() == 2 and inst["crack"].max() == 1
    assert inst["pore"][40, 40] == 0
    with pytest.raises(ModelError, match="inclusion"):
        defect_instances(lab, classes=["matrix", "pore"], defect_classes=["inclusion"])


def test_postprocess_dispatch():
    p = np.zeros((3, 40, 40), np.float32)
    p[0] = 1.0
    p[:, :, 19:21] = np.array([0, 1, 0])[:, None, None]
    p[:, 30:35, 5:10] = np.array([0, 0, 1])[:, None, None]  # a pore inside the left grain
    pred = SimpleNamespace(labels=p.argmax(0).astype(np.uint8), probabilities=p, probability_classes=[0, 1, 2])
    card = SimpleNamespace(task="grains", classes=["grain", "boundary", "pore"], defect_classes=[])
    res = postprocess(pred, card, min_grain_px=4)
    assert res.labels.max() == 2 and np.all(res.labels[30:35, 5:10] == 0)
    sem = postprocess(pred, SimpleNamespace(task="semantic", classes=["a", "b", "pore"], defect_classes=["pore"]))
    assert np.array_equal(sem.labels, pred.labels) and sem.defects["pore"].max() == 1
    with pytest.raises(ModelError):
        postprocess(pred, SimpleNamespace(task="classification", classes=["a"], defect_classes=[]))
    with pytest.raises(ModelError, match="boundary"):
        boundary_class_index(["a", "b"])
    no_probs = SimpleNamespace(labels=pred.labels, probabilities=None, probability_classes=[])
    with pytest.raises(ModelError, match="keep_probabilities"):
        postprocess(no_probs, card)


def test_tiled_grains_match_whole_image():
    from micro_seg.postprocess import grains_from_boundary_probability_tiled

    truth = voronoi_labels((520, 610), n_grains=150, seed=7, kind="hardcore")
    prob, _ = _prob_from_truth(truth, 7)
    whole = grains_from_boundary_probability(prob, min_grain_px=4)
    tiled = grains_from_boundary_probability_tiled(prob, tile=200, margin=96, min_grain_px=4)
    assert tiled.max() == whole.max()
    # same partition: each tiled grain coincides with one whole-image grain
    agree = 0
    for g in range(1, tiled.max() + 1):
        w = whole[tiled == g]
        agree += np.bincount(w).max() / w.size > 0.98 and np.bincount(w).argmax() > 0
    assert agree >= tiled.max() - 1
    assert np.mean((tiled > 0) == (whole > 0)) > 0.995


def test_relabel_in_place_for_large_int32():
    from micro_seg.postprocess import _relabel

    lab = np.zeros((2100, 2100), np.int32)
    lab[:1000, :1000] = 7
    lab[1500:, 1500:] = 3
    out = _relabel(lab)
    assert out[0, 0] == 2 and out[-1, -1] == 1 and out[1200, 0] == 0


def test_component_flood_equals_whole_image_watershed():
    """Flooding each connected interior on its own gives the whole-image flood's interiors."""
    from skimage.segmentation import watershed

    from micro_seg.postprocess import _flood_components

    truth = voronoi_labels((300, 360), n_grains=90, seed=3, kind="hardcore", waviness=0.1)
    prob, b = _prob_from_truth(truth, 3, noise=0.15)
    rows, cols = np.nonzero(b)
    fade = (rows // 20 + cols // 20) % 9 == 0        # some boundaries fade out: multi-marker interiors
    prob[rows[fade], cols[fade]] *= 0.3
    interior = prob <= 0.5
    dist = ndi.distance_transform_edt(interior)
    elevation = (prob - 0.5 * dist / dist.max()).astype(np.float32)
    markers, _ = ndi.label((dist >= 4) & interior)
    comp, n_comp = ndi.label(interior)
    has = np.bincount(comp[markers > 0], minlength=n_comp + 1) > 0
    missing = ~has[comp] & (comp > 0)
    extra, _ = ndi.label(missing)
    markers[missing] = extra[missing] + markers.max()
    n_markers = np.bincount([comp[markers == m][0] for m in range(1, markers.max() + 1)], minlength=n_comp + 1)
    assert (n_markers[1:] > 1).sum() >= 5 and (n_markers[1:] == 1).sum() >= 5   # both cases exercised
    ours = _flood_components(elevation, markers, comp, n_comp)
    ref = watershed(elevation, markers, watershed_line=True)
    ref[~interior] = 0
    assert np.array_equal(ours, ref)


def test_card_postprocess_defaults_apply_and_run_time_options_win():
    """A boundary at probability 0.45: one grain at the default threshold 0.5, two with the card's 0.4;
    an explicit option overrides the card."""
    from types import SimpleNamespace

    from micro_seg.postprocess import postprocess

    p = np.zeros((2, 40, 40), np.float32)
    p[1, :, 19:21] = 0.45
    p[0] = 1 - p[1]
    pred = SimpleNamespace(labels=p.argmax(0).astype(np.uint8), probabilities=p, probability_classes=[0, 1])
    plain = SimpleNamespace(task="grains", classes=["grain", "boundary"], defect_classes=[], postprocess={})
    card = SimpleNamespace(task="grains", classes=["grain", "boundary"], defect_classes=[],
                           postprocess={"threshold": 0.4})
    assert int(postprocess(pred, plain).labels.max()) == 1
    assert int(postprocess(pred, card).labels.max()) == 2
    assert int(postprocess(pred, card, threshold=0.5).labels.max()) == 1


def test_card_postprocess_options_are_validated(tmp_path):
    from micro_seg.errors import ModelError
    from micro_seg.registry import ModelCard

    ok = ModelCard(name="g", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                   postprocess={"threshold": 0.4, "split_ratio": 1.5})
    assert ModelCard.from_dict(ok.to_dict()).postprocess == {"threshold": 0.4, "split_ratio": 1.5}
    with pytest.raises(ModelError, match="min_island_px"):
        ModelCard(name="g", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                  postprocess={"min_island_px": 3})
    with pytest.raises(ModelError, match="threshold"):
        ModelCard(name="g", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                  postprocess={"threshold": "high"})
    with pytest.raises(ModelError, match="between 0 and 1"):  # a probability, as --boundary-threshold
        ModelCard(name="g", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                  postprocess={"threshold": 1.5})


def test_segment_image_without_the_prediction_keeps_what_measuring_needs():
    """``keep_prediction=False`` (``analyze`` / ``batch``, which measure and write no probabilities): the same labels,
    but no prediction (probabilities, uncertainty, class map: 1.3 GB at 16k x 16k) is held afterwards."""
    from micro_seg.postprocess import segment_image
    from micro_seg.registry import load_model

    from data_builders import grain_image

    model = load_model("grain-boundaries")
    img = grain_image((160, 160), n_grains=20, seed=4)
    full = segment_image(img, model)
    lean = segment_image(img, model, keep_prediction=False)
    assert full.prediction.uncertainty is not None and full.result.class_labels is not None
    assert lean.prediction is None and lean.result.class_labels is None
    assert full.labels.max() > 5
    np.testing.assert_array_equal(lean.labels, full.labels)


def test_segment_image_warns_on_an_image_too_small_to_trust():
    """A 3 x 3 'micrograph' is segmented (any size works) but the result says it cannot be trusted."""
    from micro_seg.postprocess import SMALL_IMAGE_SIDE, segment_image
    from micro_seg.registry import load_model

    model = load_model("pores-defects")
    rng = np.random.default_rng(0)
    small = segment_image((rng.random((3, 40)) * 255).astype(np.uint8), model)
    assert small.labels.shape == (3, 40)
    assert any("only 3 x 40 pixels" in w and "unreliable" in w for w in small.warnings)
    ok = segment_image((rng.random((SMALL_IMAGE_SIDE, 40)) * 255).astype(np.uint8), model)
    assert not any("unreliable" in w for w in ok.warnings)


def test_segment_image_can_release_the_micrographs_pixels_after_inference():
    """``release_image`` (used by ``micro-seg segment`` / ``analyze``) frees the pixels before post-processing a huge
    image and changes no result; anything but a Micrograph is refused rather than silently kept."""
    import gc
    import weakref

    from micro_seg.io import Micrograph
    from micro_seg.postprocess import segment_image
    from micro_seg.registry import load_model

    from data_builders import grain_image

    model = load_model("grain-boundaries")
    img = grain_image((192, 160), n_grains=25, seed=3)
    kept = segment_image(Micrograph(img.copy(), 0.5, "user"), model)
    pixels = np.pad(img, ((0, 8), (0, 0)))  # 8 data-bar rows: the model sees a view of this buffer
    mg = Micrograph(pixels, 0.5, "user", databar_rows=8)
    freed = weakref.ref(pixels)
    del pixels
    released = segment_image(mg, model, release_image=True)
    gc.collect()
    assert freed() is None, "the micrograph still holds its pixel buffer"
    assert mg.data.size == 0 and mg.meta["released_shape"] == (200, 160) and mg.pixel_size_um == 0.5
    assert kept.labels.max() > 5
    np.testing.assert_array_equal(released.labels, kept.labels)
    with pytest.raises(TypeError, match="needs a Micrograph"):
        segment_image(img, model, release_image=True)


@pytest.mark.parametrize("split_ratio", [0.0, 1.0, 1.5, 2.0])
def test_grains_touching_only_at_a_corner_are_two_grains(split_ratio):
    """With split_ratio <= 1 ("never split") an 8-connected marker spanned two interiors that touch at one corner
    (4-connected apart): the second got no grain, its 289 pixels were left 0."""
    p = np.ones((40, 40), np.float32)
    p[2:19, 2:19] = 0
    p[19:37, 19:37] = 0
    lab = grains_from_boundary_probability(p, split_ratio=split_ratio, min_grain_px=4)
    assert lab.max() == 2 and np.count_nonzero(lab) == 17 * 17 + 18 * 18
    assert len(np.unique(lab[2:19, 2:19])) == 1 and len(np.unique(lab[19:37, 19:37])) == 1


@pytest.mark.slow
def test_tiled_post_processing_keeps_grains_wider_than_the_old_context_whole(monkeypatch):
    """Grains of several hundred px on a 1600^2 map processed in tiles of 512: with a fixed context narrower than
    the grains two tiles each kept a piece of one grain (a real 3072^2 image: 38 -> 46 grains, G +0.3). The context
    now follows the widest grain interior."""
    from micro_seg import postprocess as pp

    lab = voronoi_labels((1600, 1600), n_grains=20, seed=4)
    prob = ndi.binary_dilation(grain_boundaries(lab)).astype(np.float32)
    whole = grains_from_boundary_probability(prob, min_grain_px=16)
    old = grains_from_boundary_probability_tiled(prob, tile=512, margin=128, min_grain_px=16)
    assert old.max() > whole.max()  # what the fixed context did
    margin, widest = pp.tiled_margin(prob)
    assert widest > 512 and margin == min(widest, pp.TILED_MARGIN_MAX)
    warnings: list[str] = []
    auto = grains_from_boundary_probability_tiled(prob, tile=512, min_grain_px=16, warnings=warnings)
    assert auto.max() == whole.max() and warnings == []
    # grains wider than the largest context allowed are said to be at risk
    monkeypatch.setattr(pp, "TILED_MARGIN_MAX", 300)
    grains_from_boundary_probability_tiled(prob, tile=512, min_grain_px=16, warnings=warnings)
    assert len(warnings) == 1 and "may be counted twice" in warnings[0]


def test_marker_threshold_splits_grains_along_a_faint_boundary():
    """A boundary drawn at probability 0.4 (below the 0.5 threshold) across a whole grain: one grain by default;
    with cores taken from probability <= 0.3 the two halves are two grains, split along the faint line."""
    p = np.zeros((60, 120), np.float32)
    p[:, :2] = p[:, -2:] = p[:2] = p[-2:] = 1.0  # a closed frame
    p[:, 59:61] = 0.4  # the faint boundary
    assert grains_from_boundary_probability(p, min_grain_px=16).max() == 1
    lab = grains_from_boundary_probability(p, min_grain_px=16, marker_threshold=0.3)
    assert lab.max() == 2 and len(set(np.unique(lab[5:55, 5:55])) - {0}) == 1
    assert set(np.unique(lab[5:55, 5:55])) != set(np.unique(lab[5:55, 65:115]))
    # a core threshold at or above the threshold changes nothing
    np.testing.assert_array_equal(grains_from_boundary_probability(p, min_grain_px=16, marker_threshold=0.5),
                                  grains_from_boundary_probability(p, min_grain_px=16))


def test_a_card_can_carry_marker_threshold_and_postprocess_applies_it():
    from micro_seg.errors import ModelError
    from micro_seg.registry import ModelCard

    p = np.zeros((60, 120), np.float32)
    p[:, :2] = p[:, -2:] = p[:2] = p[-2:] = 1.0
    p[:, 59:61] = 0.4
    probs = np.stack([1 - p, p])
    pred = SimpleNamespace(labels=probs.argmax(0).astype(np.uint8), probabilities=probs, probability_classes=[0, 1])
    card = ModelCard(name="m", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                     postprocess={"marker_threshold": 0.3, "min_grain_px": 16})
    assert postprocess(pred, card).labels.max() == 2
    with pytest.raises(ModelError, match="marker_threshold must be strictly between 0 and 1"):
        ModelCard(name="m", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                  postprocess={"marker_threshold": 1.5})


def test_marker_threshold_follows_the_run_time_threshold_and_never_split_wins():
    """With a card's marker 0.35, raising the boundary threshold to merge grains kept splitting them (cores stayed
    at 0.35), and --split-ratio 0 ("never") still split: a threshold given alone now turns the card's marker off,
    and so does never splitting."""
    from micro_seg.errors import ModelError
    from micro_seg.registry import ModelCard

    p = np.zeros((60, 120), np.float32)
    p[:, :2] = p[:, -2:] = p[:2] = p[-2:] = 1.0
    p[:, 59:61] = 0.6  # a ridge between the card's threshold (0.5) and a raised one (0.7)
    probs = np.stack([1 - p, p])
    pred = SimpleNamespace(labels=probs.argmax(0).astype(np.uint8), probabilities=probs, probability_classes=[0, 1])
    card = ModelCard(name="m", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                     postprocess={"threshold": 0.5, "split_ratio": 2.0, "marker_threshold": 0.35, "min_grain_px": 16})
    assert postprocess(pred, card).labels.max() == 2  # the ridge is boundary at 0.5
    assert postprocess(pred, card, threshold=0.7).labels.max() == 1  # raised threshold: merged
    assert postprocess(pred, card, threshold=0.7, marker_threshold=0.5).labels.max() == 2  # unless asked
    p[:, 59:61] = 0.4
    probs = np.stack([1 - p, p])
    pred.probabilities = probs
    assert postprocess(pred, card).labels.max() == 2  # faint ridge split by the marker
    assert postprocess(pred, card, split_ratio=0).labels.max() == 1  # "never split" wins
    with pytest.raises(ModelError, match="must be below its threshold"):
        ModelCard(name="m", task="grains", arch="msnet", in_channels=1, classes=["grain", "boundary"],
                  postprocess={"threshold": 0.4, "marker_threshold": 0.45})


def test_few_pores_on_a_clipped_background_are_measured_as_drawn():
    """Under 0.5 % porosity on a saturated (noise-free) background: the pores are found with their true area and no
    crack or inclusion appears (the percentile normalisation collapsed to scale 1 made them 50 % larger, with
    spurious cracks and inclusions around them)."""
    from micro_seg.postprocess import segment_image
    from micro_seg.registry import load_model

    yy, xx = np.mgrid[:256, :256]
    pores = np.zeros((256, 256), bool)
    for cy, cx in [(60, 60), (180, 190)]:
        pores |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 6 ** 2  # 0.35 % of the field
    img = np.where(pores, 50, 255).astype(np.uint8)
    seg = segment_image(img, load_model("pores-defects"))
    counts = np.bincount(seg.labels.ravel(), minlength=4)
    assert abs(int(counts[1]) - int(pores.sum())) <= 0.05 * pores.sum()
    assert counts[2] == counts[3] == 0
    assert int(seg.result.defects["pore"].max()) == 2


def test_few_pores_on_a_clipped_noisy_background_are_measured_as_drawn():
    """The realistic clipped background: 98.6 % of the pixels at 255, the rest of it just below (250 .. 254).  The
    percentiles (253 .. 255) no longer coincide, so the min/max fall-back did not apply and the pores, at -100,
    came out 1.85x too large with spurious cracks and inclusions."""
    from micro_seg.postprocess import segment_image
    from micro_seg.registry import load_model

    yy, xx = np.mgrid[:256, :256]
    pores = np.zeros((256, 256), bool)
    for cy, cx in [(60, 60), (180, 190)]:
        pores |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 6 ** 2
    background = np.random.default_rng(0).normal(262, 3, (256, 256))
    img = np.clip(np.where(pores, 50, background), 0, 255).astype(np.uint8)
    assert 0.98 < np.mean(img == 255) < 0.99
    seg = segment_image(img, load_model("pores-defects"))
    counts = np.bincount(seg.labels.ravel(), minlength=4)
    assert abs(int(counts[1]) - int(pores.sum())) <= 0.05 * pores.sum()
    assert counts[2] == counts[3] == 0
