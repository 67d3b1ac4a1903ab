"""Image-quality measures on synthetic degradations with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from micro_seg.errors import InvalidImageError
from micro_seg.quality import (
    assess_image,
    blur_score,
    clipping_fractions,
    dynamic_range,
    full_scale,
    laplacian_sharpness,
    to_gray,
)
from micro_seg.synth import voronoi_labels


def grain_micrograph(seed: int = 0, shape=(256, 256), n_grains: int = 60) -> np.ndarray:
    """Etched-grain look: shaded grains, dark boundaries, mild noise, never clipped."""
    labels = voronoi_labels(shape, n_grains=n_grains, seed=seed)
    rng = np.random.default_rng(seed)
    shade = rng.uniform(120, 200, labels.max() + 1)
    img = shade[labels]
    img[find_boundaries(labels)] = 40
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 1, 254).astype(np.uint8)


def blurred(img: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return np.clip(ndi.gaussian_filter(img.astype(float), sigma), 0, 255).astype(np.uint8)


def clipped(img: np.ndarray) -> np.ndarray:
    return np.clip(img.astype(float) * 1.6, 0, 255).astype(np.uint8)


def low_contrast(img: np.ndarray) -> np.ndarray:
    return (128 + (img.astype(float) - 128) * 0.08).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_original_is_sharp_unclipped_and_contrasted(seed):
    q = assess_image(grain_micrograph(seed))
    assert q.blur < 0.3
    assert q.clipped_low_fraction == 0.0 and q.clipped_high_fraction == 0.0
    assert q.dynamic_range > 0.4


@pytest.mark.parametrize("sigma", [2.0, 3.0, 5.0])
def test_blur_increases_blur_score_monotonically(sigma):
    img = grain_micrograph(0)
    assert blur_score(blurred(img, sigma)) > 0.45
    assert blur_score(blurred(img, sigma)) > blur_score(blurred(img, sigma / 2)) > blur_score(img)
    assert laplacian_sharpness(blurred(img, sigma)) < 0.1 * laplacian_sharpness(img)


def test_blur_score_does_not_depend_on_contrast():
    img = grain_micrograph(3).astype(float)
    assert blur_score(img) == pytest.approx(blur_score(img * 0.25 + 7), abs=1e-6)


def test_clipping_detected_at_full_scale():
    img = clipped(grain_micrograph(0))
    low, high = clipping_fractions(img)
    # grains brighter than 255 / 1.6 = 159.4 saturate: about half of the shades in U(120, 200)
    assert 0.3 < high < 0.7 and low == 0.0
    dark = grain_micrograph(0).astype(float) - 60
    low, high = clipping_fractions(np.clip(dark, 0, 255).astype(np.uint8))
    assert low > 0.05 and high == 0.0


def test_clipping_known_fractions_and_colour():
    img = np.zeros((10, 10), np.uint8) + 100
    img[:2] = 255
    img[2:3] = 0
    assert clipping_fractions(img) == (0.1, 0.2)
    rgb = np.stack([img, np.full_like(img, 100), np.full_like(img, 100)], -1)
    assert clipping_fractions(rgb) == (0.1, 0.2)


def test_full_scale_infers_bit_depth():
    assert full_scale(np.array([[0, 4095]], np.uint16)) == (0.0, 4095.0)
    assert full_scale(np.array([[0, 4096]], np.uint16)) == (0.0, 16383.0)
    assert full_scale(np.array([[0, 255]], np.uint8)) == (0.0, 255.0)
    assert full_scale(np.array([[-3.0, 8.0]])) is None  # float outside 0..1: no known scale (not its min..max)
    assert full_scale(np.array([[0, 4000]], np.int16)) == (0.0, 4095.0)  # 12-bit data stored signed
    assert full_scale(np.array([[-5000, 4000]], np.int16)) == (-32768.0, 32767.0)
    assert full_scale(np.array([[-5, 4000]], np.int16)) == (-5.0, 4095.0)  # a few dark-subtracted negatives
    assert full_scale(np.array([[0, 32767]], np.int16)) == (0.0, 32767.0)  # not 0..65535: int16 stops at 32767
    # 12-bit saturation is found in uint16 storage
    img = np.full((4, 4), 1000, np.uint16)
    img[0] = 4095
    assert clipping_fractions(img) == (0.0, 0.25)


def test_low_contrast_detected():
    img = grain_micrograph(1)
    assert dynamic_range(low_contrast(img)) < 0.06
    assert dynamic_range(img) > 0.4
    # exact answer on a ramp: 1st..99th percentile of 0..255 spans 98% of the scale
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert dynamic_range(ramp) == pytest.approx(0.98, abs=0.002)


def test_flat_image_is_fully_blurred_and_flat():
    q = assess_image(np.full((32, 32), 90, np.uint8))
    assert q.blur == 1.0 and q.laplacian_sharpness == 0.0 and q.dynamic_range == 0.0


def test_to_gray_and_errors():
    assert to_gray(np.zeros((5, 5, 4), np.uint8)).shape == (5, 5)
    with pytest.raises(InvalidImageError):
        to_gray(np.zeros((5, 5, 5, 5)))
    with pytest.raises(InvalidImageError):
        to_gray(np.zeros((2, 50)))
    bad = np.zeros((8, 8))
    bad[0, 0] = np.nan
    with pytest.raises(InvalidImageError):
        assess_image(bad)


def _sample(name: str) -> np.ndarray:
    from micro_seg.io import read_micrograph
    from micro_seg.resources import sample_images_dir

    return to_gray(read_micrograph(sample_images_dir() / name).analysis_data)


def test_noisy_defocused_image_is_not_called_sharp():
    """blur_effect on raw pixels read detector noise as detail: the NIST crop defocused (sigma 5) with noise sd 10
    scored 0.262, sharper than the focused original (0.277), and passed the 0.45 QC limit."""
    img = _sample("nist_steel_ferrite_crop.tif")
    sharp = blur_score(img)
    assert sharp < 0.35
    rng = np.random.default_rng(0)
    for noise in (0.0, 5.0, 10.0):
        scores = [blur_score(np.clip(ndi.gaussian_filter(img, s) + rng.normal(0, noise, img.shape), 0, 255)
                             .astype(np.uint8)) for s in (1.0, 3.0, 5.0)]
        assert sharp < scores[0] < scores[1] < scores[2], (noise, scores)
        assert scores[1] > 0.45 and scores[2] > 0.45, (noise, scores)  # QC's limit flags them


@pytest.mark.parametrize("name", ["nist_steel_ferrite_crop.tif", "nasa_super1_spot1_0d_0.tif",
                                  "synthetic_etched_twins.tif", "synthetic_porous_section.tif",
                                  "synthetic_sem_grains.tif", "tbm_colour_etched_14-512-512.png"])
def test_focused_samples_stay_below_the_qc_blur_limit(name):
    assert blur_score(_sample(name)) < 0.45


def test_flat_image_with_one_odd_pixel_or_noise_has_no_structure():
    """A flat uint8 image scored 1.0 but ~0.0 (sharp) with one pixel changed by one grey level."""
    from micro_seg.quality import noise_sd

    flat = np.full((64, 64), 100, np.uint8)
    flat[3, 3] = 101
    assert blur_score(flat) == 1.0
    noisy = 100 + np.random.default_rng(1).normal(0, 3, (64, 64))
    assert blur_score(noisy) == 1.0
    assert noise_sd(noisy) == pytest.approx(3.0, rel=0.15)


def test_three_pixel_high_image_blur_is_not_measured_without_a_warning():
    """skimage printed a RuntimeWarning (invalid value in divide) for the blur of a 3-pixel-high image."""
    import warnings

    img = np.random.default_rng(0).integers(0, 255, (3, 40)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(assess_image(img).blur)


def test_the_same_pixels_stored_unsigned_signed_or_float_get_the_same_or_no_contrast_verdict():
    """Values 100..120: as uint16 and int16 (no negatives: the same 8-bit-wide data) the dynamic range is the same
    small fraction; as float outside 0..1 there is no known scale, so it is not measured (it used to be ~1.0, the
    image's own min..max, and its darkest and brightest pixels counted as clipped)."""
    import math

    from micro_seg.qc import evaluate, parse_spec
    from micro_seg.quality import clipping_fractions, dynamic_range

    pixels = np.tile(np.arange(100, 121), (21, 1))
    as_u16, as_i16, as_f64 = pixels.astype(np.uint16), pixels.astype(np.int16), pixels.astype(np.float64)
    assert dynamic_range(as_i16) == pytest.approx(dynamic_range(as_u16)) == pytest.approx(20 / 255, rel=0.05)
    assert clipping_fractions(as_i16) == clipping_fractions(as_u16) == (0.0, 0.0)
    assert math.isnan(dynamic_range(as_f64)) and all(math.isnan(v) for v in clipping_fractions(as_f64))
    spec = parse_spec({"image": {"dynamic_range": {"min": 0.1}, "clipped_high_fraction": 0.01}})
    assert evaluate(as_i16, spec).verdict == "review"  # low contrast, as for uint16
    res = evaluate(as_f64, spec)
    assert res.verdict == "review"
    assert {r.check for r in res.reasons} == {"image.dynamic_range", "image.clipped_high_fraction"}
    assert all("no known grey scale" in r.message for r in res.reasons)


def test_saturated_int16_is_clipped_and_one_negative_pixel_keeps_the_contrast():
    rng = np.random.default_rng(0)
    a = (rng.random((64, 64)) * 40000).clip(0, 32767).astype(np.int16)
    low, high = clipping_fractions(a)
    assert high == pytest.approx(float((a == 32767).mean())) and high > 0.1
    b = np.tile(np.arange(1000), (10, 1)).astype(np.int16)
    before = dynamic_range(b)
    b[0, 0] = -1
    assert dynamic_range(b) == pytest.approx(before, rel=0.01)
