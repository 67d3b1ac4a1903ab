"""SEM data-bar detection: 0 on ordinary micrographs, the exact band height on SEM-style images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

import data_builders as db
from micro_seg.databar import detect_databar
from micro_seg.io import read_micrograph

RNG = np.random.default_rng(7)


def _flat_micrograph(shape, seed, *, level=170.0, noise=3.0, n_particles=15, particle=20.0):
    """A flat, low-noise micrograph with sparse round particles (an SEM image of a polished section)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    image = level + rng.normal(0, noise, shape)
    for _ in range(n_particles):
        r0, c0, radius = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(3, 10)
        image[(rr - r0) ** 2 + (cc - c0) ** 2 < radius * radius] = particle
    return image


def _sem_band(rows, cols, *, background=0, ink=255):
    """A flat band with a scale bar and a row of digit-like blocks."""
    band = np.full((rows, cols), float(background))
    band[rows // 3 : rows // 3 + 6, 20:200] = ink
    for c in range(240, cols - 20, 14):
        band[rows // 4 : rows * 3 // 4, c : c + 7] = ink
    return band


def _dark_material_bottom(seed):
    """A flat micrograph whose bottom ~40 rows are a dark phase (noisy, ragged edge, a few bright particles)."""
    image = _flat_micrograph((300, 400), seed)
    dark = _flat_micrograph((300, 400), seed + 1, level=40, n_particles=40, particle=220)
    edge = 260 + (6 * np.sin(np.arange(400) / 23) + np.random.default_rng(seed).normal(0, 2, 400)).astype(int)
    image = np.where(np.arange(300)[:, None] >= edge[None, :], dark, image)
    return np.clip(image, 0, 255).astype(np.uint8)


def _no_band_images():
    rng = np.random.default_rng(1)
    grains = [db.grain_image((300, 400), n_grains=n, seed=s) for s, n in [(0, 40), (1, 150), (2, 8), (3, 400)]]
    flat = db.grain_image((300, 400), n_grains=6, seed=4, noise=0, boundary=False)  # noise-free, few big grains
    noise = rng.integers(0, 256, (300, 400)).astype(np.uint8)
    gauss = np.clip(rng.normal(128, 30, (300, 400)), 0, 255).astype(np.uint8)
    dark = np.zeros((300, 400), np.uint8)  # dark field: black with sparse bright particles
    dark[rng.random((300, 400)) < 0.01] = 255
    dark_low = rng.poisson(0.3, (300, 400)).astype(np.uint16)  # under-exposed
    bright = np.full((300, 400), 255, np.uint8)  # over-exposed with a few dark pits
    bright[rng.random((300, 400)) < 0.02] = 40
    gradient = np.clip(np.linspace(60, 255, 300)[:, None] + rng.normal(0, 8, (300, 400)), 0, 255).astype(np.uint8)
    blank_strip = db.grain_image((300, 400), seed=5)
    blank_strip[-30:] = 0  # an empty black strip without text is not a data bar
    uniform = np.full((300, 400), 77, np.uint8)
    grains16 = db.grain_image((300, 400), seed=6).astype(np.uint16) * 200
    flat_sem = np.clip(_flat_micrograph((300, 400), 11), 0, 255).astype(np.uint8)
    return {
        "grains_40": grains[0], "grains_150": grains[1], "grains_8": grains[2], "grains_400": grains[3],
        "flat_grains": flat, "uniform_noise": noise, "gaussian_noise": gauss, "dark_field": dark,
        "under_exposed_16bit": dark_low, "over_exposed": bright, "gradient": gradient,
        "blank_strip": blank_strip, "uniform": uniform, "grains_16bit": grains16,
        "tiny": np.zeros((10, 10), np.uint8), "rgb_grains": np.stack([grains[0]] * 3, axis=-1),
        "flat_low_noise_sem": flat_sem, "flat_with_dark_material_bottom": _dark_material_bottom(12),
    }


NO_BAND = _no_band_images()


@pytest.mark.parametrize("name", sorted(NO_BAND))
def test_no_band_on_ordinary_images(name):
    assert detect_databar(NO_BAND[name]) == 0


@pytest.mark.parametrize("fraction", [0.05, 0.08, 0.12, 0.2])
@pytest.mark.parametrize("background, ink", [(0, 255), (255, 0), (20, 230)])
def test_band_height_exact(fraction, background, ink):
    image = db.grain_image((400, 512), seed=int(fraction * 100))
    rows = int(400 * fraction)
    assert detect_databar(db.add_databar(image, rows, background=background, ink=ink)) == rows


@pytest.mark.parametrize("seed", range(4))
def test_band_on_dark_and_bright_micrographs(seed):
    rng = np.random.default_rng(seed)
    dark = np.clip(rng.normal(25, 10, (300, 400)), 0, 255).astype(np.uint8)  # dark image, black band
    assert detect_databar(db.add_databar(dark, 36, background=0, ink=255)) == 36
    bright = np.clip(rng.normal(225, 12, (300, 400)), 0, 255).astype(np.uint8)  # bright image, white band
    assert detect_databar(db.add_databar(bright, 36, background=255, ink=0)) == 36


def test_band_with_frame_line():
    image = db.add_databar(db.grain_image((300, 400), seed=9), 40, background=255, ink=0)
    image[-40] = 0  # a black line framing the band, as on MetalDAM/FEI images
    image[-1] = 0
    assert detect_databar(image) == 40


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("background, ink", [(0, 255), (255, 0)])
def test_band_below_a_flat_low_noise_micrograph(seed, background, ink):
    """The rows of a flat, low-noise micrograph with sparse particles are within two levels of one value, like a
    frame line: they were taken for band rows, so the band had no sharp edge and was missed (0 instead of 48)."""
    micrograph = _flat_micrograph((480, 512), seed)
    image = np.clip(np.vstack([micrograph, _sem_band(48, 512, background=background, ink=ink)]), 0, 255)
    assert detect_databar(image.astype(np.uint8)) == 48
    assert detect_databar(np.clip(micrograph, 0, 255).astype(np.uint8)) == 0


def test_a_dark_layer_of_material_under_a_flat_micrograph_is_no_band():
    """Under a flat micrograph, a dark bottom layer with a few bright particles (resin, a coating) was cut off as a
    60-row data bar once flat micrograph rows stopped counting as frame lines; a drawn band is flat exactly."""
    rng = np.random.default_rng(0)
    image = 150 + rng.normal(0, 1, (400, 400))
    for _ in range(180):
        y, x = rng.integers(0, 337), rng.integers(0, 397)
        image[y : y + 3, x : x + 3] = 30
    layer = 20 + rng.normal(0, 1, (60, 400))
    layer[rng.random((60, 400)) < 0.005] = 230
    image[340:] = layer
    assert detect_databar(np.clip(np.round(image), 0, 255).astype(np.uint8)) == 0


@pytest.mark.parametrize("level, noise", [(20, 1.0), (20, 3.0), (60, 4.0)])
def test_a_dark_layer_of_material_under_grains_is_no_band(level, noise):
    """Under a grain micrograph (no flat rows), a noisy dark bottom layer with a straight edge and a few bright
    particles (a coating, resin, a dark phase) was cut off as a 60-row data bar: real material lost from analysis."""
    rng = np.random.default_rng(3)
    image = db.grain_image((400, 400), n_grains=60, seed=3).astype(float)
    layer = level + rng.normal(0, noise, (60, 400))
    layer[rng.random((60, 400)) < 0.005] = 230
    image[340:] = layer
    assert detect_databar(np.clip(np.round(image), 0, 255).astype(np.uint8)) == 0
    banded = db.add_databar(db.grain_image((400, 400), n_grains=60, seed=3), 60, background=level)
    assert detect_databar(banded) == 60  # a drawn band of the same level and height still is one


@pytest.mark.parametrize("porosity", [0.3, 0.4])
def test_black_band_under_black_pores(porosity):
    """Pores clipped to black (30-40 % of each row) over a black band made the rows above share the band's level,
    so the band was missed and measured as porosity; it is still found, while a dark-field image's bright object
    with a wavy lower edge above black rows (no clean margin at the top of the 'band') is still not cut."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    field = ndi.gaussian_filter(rng.normal(size=(600, 800)), 6)
    image = np.where(field < np.quantile(field, porosity), 0, 160 + rng.normal(0, 10, field.shape))
    image = np.clip(image, 0, 255).astype(np.uint8)
    assert detect_databar(db.add_databar(image, 48, background=0, ink=255)) == 48
    assert detect_databar(image) == 0
    rows, cols = np.mgrid[:330, :510]
    lower = 272 + (6 * np.sin(cols[0] / 15)).astype(int)
    dark_field = ((rows >= 210) & (rows < lower) & (np.abs(cols - 255) < 200)).astype(np.uint8) * 255
    assert detect_databar(dark_field) == 0


@pytest.mark.parametrize("rows", [45, 51, 60])
def test_black_band_under_black_pores_jpeg(rows):
    """The same band saved as JPEG: unless the band starts on an 8-row block boundary (48 rows of 600 does), the
    block it starts in mixes pores and material with it, so its first rows are no longer exactly background (88-95 %
    within one level): asking for two exactly clean rows at the top missed every such band at quality <= 85."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    field = ndi.gaussian_filter(rng.normal(size=(600, 800)), 6)
    image = np.where(field < np.quantile(field, 0.3), 0, 160 + rng.normal(0, 10, field.shape))
    image = np.clip(image, 0, 255).astype(np.uint8)

    def jpeg(a, q=75):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(buf))

    assert detect_databar(jpeg(db.add_databar(image, rows, background=0, ink=255))) == rows
    assert detect_databar(jpeg(image)) == 0
    rr, cc = np.mgrid[:330, :510]  # the dark-field object with a wavy lower edge: still not cut once compressed
    lower = 272 + (6 * np.sin(cc[0] / 15)).astype(int)
    dark_field = ((rr >= 210) & (rr < lower) & (np.abs(cc - 255) < 200)).astype(np.uint8) * 255
    assert detect_databar(jpeg(dark_field)) == 0


@pytest.mark.parametrize("q", [30, 75])
@pytest.mark.parametrize("background, ink", [(60, 250), (128, 255)])
def test_band_grey_background_jpeg(q, background, ink):
    """A grey band with dense text, saved as JPEG: its ringing leaves ~55 % of the band at one exact value."""
    banded = db.add_databar(db.grain_image((300, 400), seed=1), 33, background=background, ink=ink)
    buf = io.BytesIO()
    Image.fromarray(banded).save(buf, format="JPEG", quality=q)
    assert abs(detect_databar(np.asarray(Image.open(buf))) - 33) <= 2


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_band_other_dtypes(dtype):
    image = db.grain_image((300, 400), seed=2).astype(dtype)
    if dtype == np.uint16:
        image *= 250
    else:
        image /= 255.0
    assert detect_databar(db.add_databar(image, 30)) == 30


def test_band_on_12_bit_data_in_16_bit_container():
    image = db.grain_image((300, 400), seed=12).astype(np.uint16) * 16  # 0..4080
    banded = db.add_databar(image, 30)  # black band, text at 65535
    assert detect_databar(banded) == 30
    assert detect_databar(image) == 0


def test_band_rgb_and_jpeg(tmp_path):
    rgb = np.stack([db.grain_image((300, 400), seed=s) for s in (3, 4, 5)], axis=-1)
    banded = db.add_databar(rgb, 33)
    assert detect_databar(banded) == 33
    buf = io.BytesIO()
    Image.fromarray(banded).save(buf, format="JPEG", quality=75)
    decoded = np.asarray(Image.open(buf))
    assert abs(detect_databar(decoded) - 33) <= 1


def test_read_micrograph_excludes_band(tmp_path):
    image = db.add_databar(db.grain_image((240, 320), seed=8), 24)
    db.fei_tiff(tmp_path / "sem.tif", image, px_m=1e-8)
    m = read_micrograph(tmp_path / "sem.tif")
    assert m.databar_rows == 24
    assert m.analysis_data.shape == (216, 320)
    np.testing.assert_array_equal(m.analysis_data, image[:216])
    assert read_micrograph(tmp_path / "sem.tif", detect_databar=False).databar_rows == 0
    tifffile.imwrite(tmp_path / "plain.tif", db.grain_image((240, 320), seed=8))
    assert read_micrograph(tmp_path / "plain.tif").databar_rows == 0


@pytest.mark.slow
@pytest.mark.shared_data
def test_metaldam_bands(shared_datasets):
    folder = shared_datasets / "metaldam" / "datasets" / "MetalDAM"
    images = sorted((folder / "images").glob("micrograph*.jpg"))
    assert len(images) >= 20
    for path in images:
        label_rows = Image.open(folder / "labels" / (path.stem + ".png")).size[1]
        m = read_micrograph(path)
        rows = m.shape[0]
        # the labels were cropped a little above the band: the band lies inside the cropped rows
        assert 0.6 * (rows - label_rows) <= m.databar_rows <= rows - label_rows, path.name
        band = m.data[rows - m.databar_rows + 1 : -1].mean(axis=2)
        assert np.median(band) > 240 or np.median(band) < 15, path.name  # flat white or black background
        assert m.meta["is_grey_rgb"], path.name  # grey micrograph above a band with a coloured logo


@pytest.mark.slow
@pytest.mark.shared_data
def test_no_band_on_real_micrographs_without_one(shared_datasets):
    """Optical micrographs and steel-surface images carry no data bar: nothing may be cut."""
    files = (sorted((shared_datasets / "neu_det" / "IMAGES").glob("*.jpg"))[::15]
             + sorted(shared_datasets.glob("magnetic_tile/*/Imgs/*.jpg"))[::8]
             + sorted(shared_datasets.glob("tbm_mlographypp/**/*.png"))[::2])
    assert len(files) > 100
    cut = [f.name for f in files if read_micrograph(f).databar_rows]
    assert cut == []
