import numpy as np
import pytest

from micro_seg.errors import InvalidImageError, ModelError
from micro_seg.preprocess import normalisation_stats, to_channels, to_network_input

PCT = {"mode": "percentile", "low": 0.5, "high": 99.5}


def _ramp(dtype, scale):
    rng = np.random.default_rng(0)
    base = rng.random((40, 50))
    return (base * scale).astype(dtype), base


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (np.uint16, 4095), (np.float32, 1.0), (np.float64, 7.5), (np.int32, 1000),
                                         (np.float64, 1e-20)])  # a detector signal in amperes: not "constant"
def test_percentile_is_bit_depth_invariant(dtype, scale):
    img, base = _ramp(dtype, scale)
    ref = to_network_input(base, in_channels=1, normalisation=PCT)
    x = to_network_input(img, in_channels=1, normalisation=PCT)
    assert x.dtype == np.float32 and x.shape == (1, 40, 50)
    tol = 2.5 / scale if np.dtype(dtype).kind in "iu" else 1e-5
    np.testing.assert_allclose(x, ref, atol=tol * 1.1 + 1e-5)
    assert np.mean(x < 0) == pytest.approx(0.005, abs=0.002)


def test_grey_to_rgb_and_rgb_to_grey():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = to_channels(grey, in_channels=3)
    assert rgb.shape == (3, 3, 4) and np.all(rgb[0] == rgb[2])
    colour = np.zeros((3, 4, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 100, 50, 10
    g = to_channels(colour, in_channels=1)
    assert g.shape == (1, 3, 4)
    assert g[0, 0, 0] == pytest.approx(0.2125 * 100 + 0.7154 * 50 + 0.0721 * 10, rel=1e-6)
    rgba = np.concatenate([colour, np.full((3, 4, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_channels(rgba, in_channels=3), to_channels(colour, in_channels=3))
    grey_alpha = np.stack([grey, np.full_like(grey, 255)], axis=2)
    np.testing.assert_array_equal(to_channels(grey_alpha, in_channels=1), to_channels(grey, in_channels=1))


def test_fixed_normalisation_and_dtype_scale():
    img = np.full((2, 2), 65535, np.uint16)
    x = to_network_input(img, in_channels=3, normalisation={"mode": "fixed", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": "dtype"})
    np.testing.assert_allclose(x, 2.0)
    x = to_network_input(np.full((2, 2), 255, np.uint8), in_channels=1, normalisation={"mode": "fixed", "mean": [0.5], "std": [0.5], "scale": 255})
    np.testing.assert_allclose(x, 1.0)


def test_input_not_modified_and_nan_handled():
    img = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    img[0, 0] = np.nan
    keep = img.copy()
    x = to_network_input(img, in_channels=1, normalisation={"mode": "minmax"})
    np.testing.assert_array_equal(np.isnan(img), np.isnan(keep))
    assert np.isfinite(x).all() and x[0, 0, 0] == 0.0


def test_constant_image_does_not_divide_by_zero():
    x = to_network_input(np.full((5, 5), 7, np.uint8), in_channels=1, normalisation=PCT)
    assert np.isfinite(x).all()


def test_stats_of_whole_image_apply_to_tiles():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    stats = normalisation_stats(img, in_channels=1, normalisation=PCT)
    whole = to_network_input(img, in_channels=1, stats=stats)
    tile = to_network_input(img[10:30, 5:40], in_channels=1, stats=stats)
    np.testing.assert_array_equal(tile, whole[:, 10:30, 5:40])


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), np.zeros((2, 3, 4, 5)), np.zeros((4, 4, 7)), np.array([["a"]])])
def test_bad_images_refused(bad):
    with pytest.raises(InvalidImageError):
        to_network_input(bad, in_channels=1, normalisation=PCT)


def test_bad_normalisation_refused():
    with pytest.raises(ModelError, match="percentile"):
        to_network_input(np.zeros((4, 4)), in_channels=1, normalisation={"mode": "zscore-ish"})
    with pytest.raises(ModelError):
        to_network_input(np.zeros((4, 4)), in_channels=1, normalisation={"mode": "percentile", "low": 90, "high": 10})


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, bool])
def test_histogram_percentiles_equal_numpy(dtype):
    from micro_seg.preprocess import _percentiles

    rng = np.random.default_rng(4)
    hi = 2 if dtype is bool else np.iinfo(dtype).max + 1
    for n in (1, 2, 7, 1000):
        vals = rng.integers(0, min(hi, 5000), n).astype(dtype)
        for q in [(0.5, 99.5), (0, 100), (1, 99), (37.3, 62.1)]:
            ref = np.percentile(vals.astype(np.float64), q)
            np.testing.assert_allclose(_percentiles(vals, *q), ref, rtol=0, atol=1e-9)


def test_grey_stats_same_for_one_and_three_channels():
    img = np.random.default_rng(2).integers(0, 4096, (50, 60)).astype(np.uint16)
    s1 = normalisation_stats(img, in_channels=1, normalisation=PCT)
    s3 = normalisation_stats(img, in_channels=3, normalisation=PCT)
    assert s3["offset"] == s1["offset"] * 3 and s3["scale"] == s1["scale"] * 3


def test_rescale_image_keeps_dtype_channels_and_mean():
    from micro_seg.preprocess import rescale_image, rescale_labels, scaled_shape

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 4096, (60, 80, 3)).astype(np.uint16)
    small = rescale_image(rgb, 0.5)
    assert small.shape == (30, 40, 3) and small.dtype == np.uint16
    # anti-aliased: a 2x reduction averages, so the mean is kept and noise shrinks
    assert abs(float(small.mean()) - float(rgb.mean())) < 20
    assert small.std() < 0.7 * rgb.std()
    assert rescale_image(rgb, 1.0) is rgb
    f = rescale_image(np.full((10, 10), 0.25, np.float32), 2.0)
    assert f.shape == (20, 20) and f.dtype == np.float32 and np.allclose(f, 0.25)
    assert scaled_shape((703, 1024), 0.5) == (352, 512)
    lab = np.kron(np.array([[1, 2], [0, 3]]), np.ones((6, 6), np.int64))
    half = rescale_labels(lab, (6, 6))
    assert half.tolist() == np.kron(np.array([[1, 2], [0, 3]]), np.ones((3, 3), np.int64)).tolist()


def test_percentile_range_of_a_mostly_constant_image_falls_back_to_its_full_range():
    """A clipped background with a few small dark features: more than 99.5 % of the pixels share one value, so the
    0.5 / 99.5 percentiles coincide.  The features must still map near 0 and the background near 1, not to raw
    grey-level differences (a pore 150 levels below the background at -150)."""
    img = np.full((100, 100), 200, np.uint8)
    img[10:13, 10:13] = 50  # 0.09 % of the pixels
    for dtype in (np.uint8, np.float32):
        x = to_network_input(img.astype(dtype), in_channels=1, normalisation=PCT)
        assert float(x.min()) == pytest.approx(0.0) and float(x.max()) == pytest.approx(1.0)
    s = normalisation_stats(np.dstack([img, img, np.full_like(img, 9)]), in_channels=3,
                            normalisation={**PCT, "per_channel": True})
    assert s["offset"] == [50.0, 50.0, 9.0] and s["scale"] == [150.0, 150.0, 1.0]


def test_a_five_channel_image_is_refused_with_its_own_shape():
    """Normalising (training, classify) a 5-channel array named the 1 x 1 corner checked: 'shape (1, 1, 5)'."""
    from micro_seg.errors import InvalidImageError

    for norm in (PCT, {"mode": "minmax"}):
        with pytest.raises(InvalidImageError, match=r"image of shape \(40, 50, 5\) is not grey"):
            to_network_input(np.zeros((40, 50, 5)), in_channels=1, normalisation=norm)


def test_percentile_range_of_a_clipped_background_with_a_few_pixels_below_the_clip():
    """98.6 % of the pixels clipped at 200, 1 % just below (199), 0.4 % dark features (50): the percentiles 199 / 200
    do not coincide, but the features must still map near 0, not to (50 - 199) / 1 = -149."""
    img = np.full((100, 100), 200, np.uint8)
    img[50:60, 0:10] = 199  # 1 %
    img[10:12, 10:30] = 50  # 0.4 %
    s = normalisation_stats(img, in_channels=1, normalisation=PCT)
    assert s["offset"] == [50.0] and s["scale"] == [150.0]
    noisy = np.random.default_rng(0).normal(1000, 30, (100, 100)).astype(np.uint16)  # an ordinary image: unchanged
    lo, hi = np.percentile(noisy, [0.5, 99.5])
    s = normalisation_stats(noisy, in_channels=1, normalisation=PCT)
    assert s["offset"][0] == pytest.approx(lo) and s["scale"][0] == pytest.approx(hi - lo)
