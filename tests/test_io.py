"""read_micrograph on every supported format; write_labels / read_labels round trips."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

import data_builders as db
from micro_seg.errors import InputFileNotFoundError, InvalidImageError
from micro_seg.io import SUPPORTED_EXTENSIONS, Micrograph, read_labels, read_micrograph, write_labels

RNG = np.random.default_rng(42)
GREY = db.grain_image((48, 64), n_grains=12, seed=3)


def _random(dtype, shape=(48, 64)):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return RNG.random(shape).astype(dtype) * 1000 - 200
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


# --------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"])
def test_tiff_dtypes_round_trip(tmp_path, dtype):
    data = _random(dtype)
    tifffile.imwrite(tmp_path / "a.tif", data)
    m = read_micrograph(tmp_path / "a.tif", detect_databar=False)
    assert m.data.dtype == data.dtype
    np.testing.assert_array_equal(m.data, data)
    assert m.meta["format"] == "tiff" and m.meta["n_pages"] == 1 and m.meta["is_grey_rgb"] is False


@pytest.mark.parametrize("compression", [None, "lzw", "zlib", "zstd", "packbits", "lzma"])
def test_tiff_lossless_compressions(tmp_path, compression):
    data = _random("uint16")
    tifffile.imwrite(tmp_path / "c.tif", data, compression=compression)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "c.tif").data, data)


def test_tiff_jpeg_compression(tmp_path):
    tifffile.imwrite(tmp_path / "j.tif", GREY, compression="jpeg")
    m = read_micrograph(tmp_path / "j.tif")
    assert m.data.shape == GREY.shape
    assert np.abs(m.data.astype(int) - GREY).mean() < 4
    assert m.meta["compression"] == "JPEG"


def test_big_endian_becomes_native(tmp_path):
    data = _random("uint16")
    tifffile.imwrite(tmp_path / "be.tif", data.astype(">u2"), byteorder=">")
    m = read_micrograph(tmp_path / "be.tif")
    assert m.data.dtype.isnative and m.data.dtype == np.uint16
    np.testing.assert_array_equal(m.data, data)


def test_bigtiff(tmp_path):
    tifffile.imwrite(tmp_path / "b.tif", GREY, bigtiff=True)
    m = read_micrograph(tmp_path / "b.tif")
    assert m.meta["bigtiff"] is True
    np.testing.assert_array_equal(m.data, GREY)


def test_rgb_contig_and_planar(tmp_path):
    rgb = _random("uint8", (48, 64, 3))
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    for name in ("c.tif", "p.tif"):
        m = read_micrograph(tmp_path / name)
        assert m.shape == (48, 64, 3)
        np.testing.assert_array_equal(m.data, rgb)


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB"])
def test_png_colour_key_transparency_is_named(tmp_path, mode):
    """A PNG can mark one grey level or colour transparent (its tRNS chunk) instead of carrying an alpha channel
    (GIMP and ImageJ exports of masked fields do): those pixels were analysed as image without a word, as alpha
    masks were before. The reader now counts them and says which value the file marks."""
    rng = np.random.default_rng(3)
    if mode == "RGB":
        data = rng.integers(1, 255, (40, 60, 3), dtype=np.uint8)
        data[:10, :] = 0
        key, shown = (0, 0, 0), "(0, 0, 0)"
    else:
        top = 60000 if mode == "I;16" else 250
        data = rng.integers(1, top, (40, 60)).astype(np.uint16 if mode == "I;16" else np.uint8)
        data[:10, :] = top  # a quarter of the field is the transparent level
        key, shown = top, str(top)
    Image.fromarray(data).save(tmp_path / "keyed.png", transparency=key)
    m = read_micrograph(tmp_path / "keyed.png")
    np.testing.assert_array_equal(m.data, data)  # the pixels themselves are unchanged
    warned = [w for w in m.reader_warnings if "transparent" in w]
    assert len(warned) == 1 and warned[0].startswith("25 % of the pixels are (partly) transparent"), warned
    assert f"marks the value {shown} as transparent" in warned[0]
    Image.fromarray(data).save(tmp_path / "plain.png")  # no tRNS: nothing said
    assert not [w for w in read_micrograph(tmp_path / "plain.png").reader_warnings if "transparent" in w]


def test_rgba_drops_alpha(tmp_path):
    rgba = _random("uint8", (48, 64, 4))
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    m = read_micrograph(tmp_path / "a.tif")
    assert m.shape == (48, 64, 3) and m.meta["dropped_alpha"] is True
    np.testing.assert_array_equal(m.data, rgba[..., :3])


def test_transparent_pixels_are_named_when_alpha_is_dropped(tmp_path):
    """A PNG whose alpha masks a quarter of the field (a round mount cut out, a masked label): those pixels are
    analysed as image, so the reader says so; an opaque alpha channel (or one left at 0, unused) says nothing."""
    rgba = np.dstack([_random("uint8", (40, 60, 3)), np.full((40, 60), 255, np.uint8)])
    rgba[:20, :30, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "masked.png")
    m = read_micrograph(tmp_path / "masked.png")
    assert m.shape == (40, 60, 3)
    assert [w for w in m.reader_warnings if w.startswith("25 % of the pixels are (partly) transparent")]
    for alpha in (255, 0):
        rgba[..., 3] = alpha
        Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
        assert not read_micrograph(tmp_path / "opaque.png").reader_warnings


def test_grey_rgb_flag(tmp_path):
    grey3 = np.repeat(GREY[..., None], 3, axis=2)
    tifffile.imwrite(tmp_path / "g.tif", grey3, photometric="rgb")
    m = read_micrograph(tmp_path / "g.tif")
    assert m.shape == (48, 64, 3) and m.meta["is_grey_rgb"] is True
    jpg = db.save_pil(tmp_path / "g.jpg", grey3, quality=85)
    assert read_micrograph(jpg).meta["is_grey_rgb"] is True
    coloured = grey3.copy()
    coloured[..., 0] //= 2
    tifffile.imwrite(tmp_path / "c.tif", coloured, photometric="rgb")
    assert read_micrograph(tmp_path / "c.tif").meta["is_grey_rgb"] is False


def test_multipage_first_page_and_count(tmp_path):
    stack = np.stack([np.full((16, 16), i, np.uint8) for i in range(5)])
    tifffile.imwrite(tmp_path / "q.tif", stack, photometric="minisblack")  # shaped series, axis Q
    with tifffile.TiffWriter(tmp_path / "i.tif") as tw:  # independent pages
        for plane in stack:
            tw.write(plane, metadata=None)
    for name in ("q.tif", "i.tif"):
        m = read_micrograph(tmp_path / name)
        assert m.meta["n_pages"] == 5 and m.meta["page"] == 0 and m.data.max() == 0
        assert any("holds 5 pages" in w and "only page 0 is read" in w and "--page" in w for w in m.meta["warnings"])
        third = read_micrograph(tmp_path / name, page=3)
        assert third.data.max() == 3 and not third.meta.get("warnings")  # the user chose the page


def test_reduced_resolution_preview_before_the_image_is_skipped(tmp_path):
    """A preview IFD (NewSubfileType 1) stored first was read instead of the micrograph: 8 x smaller, at the
    main image's calibration (a silent 8 x error in every length)."""
    grey = db.grain_image((96, 128), n_grains=12, seed=4)
    res = dict(resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # 0.5 um/pixel
    with tifffile.TiffWriter(tmp_path / "p.tif") as tw:
        tw.write(grey[::8, ::8], subfiletype=1, **res)
        tw.write(grey, **res)
    m = read_micrograph(tmp_path / "p.tif")
    np.testing.assert_array_equal(m.data, grey)
    assert (m.pixel_size_um, m.meta["page"], m.meta["n_pages"], m.meta["previews_skipped"]) == (0.5, 1, 2, 1)
    assert any("page 1 is read" in w and "page 0 is a reduced-resolution preview, skipped" in w
               for w in m.meta["warnings"])
    # --page counts every page (IFD), previews included: page 0 is the preview, asked for
    preview = read_micrograph(tmp_path / "p.tif", page=0)
    assert preview.shape == (12, 16) and not preview.meta.get("warnings")
    assert read_micrograph(tmp_path / "p.tif", page=1).shape == (96, 128)
    # two previews, then two images: the first image is read and the others named
    with tifffile.TiffWriter(tmp_path / "pp.tif") as tw:
        for k in (16, 8):
            tw.write(grey[::k, ::k], subfiletype=1)
        for plane in (grey, 255 - grey):
            tw.write(plane)
    m = read_micrograph(tmp_path / "pp.tif")
    np.testing.assert_array_equal(m.data, grey)
    assert m.meta["page"] == 2 and any("pages 0-1 are reduced-resolution previews" in w and "holds 4 pages" in w
                                       for w in m.meta["warnings"])
    # a preview after the image (the usual place) changes nothing
    with tifffile.TiffWriter(tmp_path / "after.tif") as tw:
        tw.write(grey)
        tw.write(grey[::8, ::8], subfiletype=1)
    m = read_micrograph(tmp_path / "after.tif")
    assert m.meta["page"] == 0 and m.shape == (96, 128) and "previews_skipped" not in m.meta


def test_ome_tiff_2d_and_imagej(tmp_path):
    db.ome_tiff(tmp_path / "o.ome.tif", GREY, size_x=0.1)
    m = read_micrograph(tmp_path / "o.ome.tif")
    assert "ome" in m.meta["flavours"]
    np.testing.assert_array_equal(m.data, GREY)
    db.imagej_tiff(tmp_path / "ij.tif", GREY, pixel_size=0.1)
    m = read_micrograph(tmp_path / "ij.tif")
    assert "imagej" in m.meta["flavours"]
    np.testing.assert_array_equal(m.data, GREY)


def test_imagej_three_channel_composite_is_rgb(tmp_path):
    planes = _random("uint16", (3, 20, 24))
    tifffile.imwrite(tmp_path / "comp.tif", planes, imagej=True, metadata={"axes": "CYX", "mode": "composite"})
    m = read_micrograph(tmp_path / "comp.tif")
    assert m.shape == (20, 24, 3) and not m.meta.get("warnings")  # all three pages read, as one image
    np.testing.assert_array_equal(m.data, np.moveaxis(planes, 0, -1))


def test_bool_tiff_becomes_uint8(tmp_path):
    mask = RNG.random((20, 30)) > 0.5
    tifffile.imwrite(tmp_path / "b.tif", mask)
    m = read_micrograph(tmp_path / "b.tif")
    assert m.data.dtype == np.uint8 and m.meta["converted_from"] == "bool"
    np.testing.assert_array_equal(m.data, mask.astype(np.uint8))


def test_float16_becomes_float32(tmp_path):
    data = _random("float16")
    tifffile.imwrite(tmp_path / "h.tif", data)
    m = read_micrograph(tmp_path / "h.tif")
    assert m.data.dtype == np.float32 and m.meta["converted_from"] == "float16"
    np.testing.assert_array_equal(m.data, data.astype(np.float32))


def test_palette_tiff_applies_colormap(tmp_path):
    index = RNG.integers(0, 4, (10, 12), dtype=np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :4] = np.array([[0, 255, 0, 128], [0, 0, 255, 128], [0, 0, 0, 128]]) * 257
    tifffile.imwrite(tmp_path / "pal.tif", index, photometric="palette", colormap=cmap)
    m = read_micrograph(tmp_path / "pal.tif")
    assert m.shape == (10, 12, 3) and m.data.dtype == np.uint8
    np.testing.assert_array_equal(m.data, (cmap[:, index] // 257).transpose(1, 2, 0))


# --------------------------------------------------------------------- Pillow formats


@pytest.mark.parametrize("ext, kwargs", [(".png", {}), (".bmp", {}), (".jpg", {"quality": 95, "subsampling": 0}), (".jpeg", {"quality": 95, "subsampling": 0})])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_pillow_formats(tmp_path, ext, kwargs, mode):
    data = GREY if mode == "L" else np.stack([GREY, GREY[::-1], 255 - GREY], axis=-1)
    path = db.save_pil(tmp_path / f"a{ext}", data, **kwargs)
    m = read_micrograph(path)
    assert m.shape == data.shape and m.data.dtype == np.uint8
    assert m.pixel_size_um is None
    if ext in (".png", ".bmp"):
        np.testing.assert_array_equal(m.data, data)
    else:
        assert np.abs(m.data.astype(int) - data).mean() < 4


def test_png_16bit_rgba_and_palette(tmp_path):
    data16 = _random("uint16")
    Image.fromarray(data16).save(tmp_path / "16.png")
    m = read_micrograph(tmp_path / "16.png")
    assert m.data.dtype == np.uint16
    np.testing.assert_array_equal(m.data, data16)

    rgba = _random("uint8", (20, 30, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    m = read_micrograph(tmp_path / "a.png")
    assert m.shape == (20, 30, 3) and m.meta["dropped_alpha"]
    np.testing.assert_array_equal(m.data, rgba[..., :3])

    pal = Image.fromarray(GREY).convert("P")
    pal.save(tmp_path / "p.png")
    m = read_micrograph(tmp_path / "p.png")
    assert m.shape == GREY.shape + (3,)
    np.testing.assert_array_equal(m.data, np.asarray(pal.convert("RGB")))


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_png_16bit_colour_keeps_16_bits(tmp_path, channels):
    """Pillow reads a 16-bit RGB / RGBA / grey + alpha PNG as 8 bits: intensities lost their low byte and 16-bit
    labels above 255 stored in such a PNG were silently wrong."""
    import imagecodecs

    data = _random("uint16", (20, 30, channels))
    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(data))
    m = read_micrograph(tmp_path / "c.png", detect_databar=False)
    assert m.data.dtype == np.uint16
    np.testing.assert_array_equal(m.data, data[..., :3] if channels == 4 else data[..., 0] if channels == 2 else data)
    assert m.meta.get("dropped_alpha", False) == (channels != 3)
    labels = (np.arange(600).reshape(20, 30) * 97 % 1000).astype(np.uint16)
    (tmp_path / "l.png").write_bytes(imagecodecs.png_encode(np.repeat(labels[..., None], 3, axis=2)))
    np.testing.assert_array_equal(read_labels(tmp_path / "l.png")[0], labels)


def test_content_decides_not_extension(tmp_path):
    path = db.save_pil(tmp_path / "really_png.tif", GREY, format="PNG")
    m = read_micrograph(path)
    assert m.meta["format"] == "png"
    assert any("content is PNG" in w for w in m.meta["warnings"])
    np.testing.assert_array_equal(m.data, GREY)


def test_supported_extensions():
    assert {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"} <= set(SUPPORTED_EXTENSIONS)
    assert all(ext == ext.lower() and ext.startswith(".") for ext in SUPPORTED_EXTENSIONS)


def test_micrograph_dataclass():
    data = np.arange(60, dtype=np.uint8).reshape(10, 6)
    m = Micrograph(data, 0.5, "user", databar_rows=4)
    assert m.shape == (10, 6)
    assert m.analysis_data.shape == (6, 6)
    assert np.shares_memory(m.analysis_data, data)
    assert Micrograph(data, None, None).analysis_data is data


# --------------------------------------------------------------------- labels


@pytest.mark.parametrize("values, dtype", [((0, 5), np.uint8), ((0, 300), np.uint16), ((0, 70000), np.uint32),
                                           ((0, 2**33), np.int64)])
def test_write_read_labels_round_trip(tmp_path, values, dtype):
    labels = RNG.integers(values[0], values[1], size=(30, 40), endpoint=True).astype(np.int64)
    out = write_labels(tmp_path / "l.tif", labels, pixel_size_um=0.123456789, classes=["a", "b"])
    back, px = read_labels(out)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)
    assert px == 0.123456789  # exact, from the description
    m = read_micrograph(out, detect_databar=False)  # and through the resolution tags
    assert m.calibration_source == "tiff-resolution"
    assert m.pixel_size_um == pytest.approx(0.123456789, rel=1e-7)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tif.pages[0].resolutionunit == tifffile.RESUNIT.CENTIMETER
        assert json.loads(tif.pages[0].description)["micro_seg"]["classes"] == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["l.tif"]  # no temporary files left


def test_write_labels_uncalibrated_and_overwrite(tmp_path):
    path = tmp_path / "u.tif"
    write_labels(path, np.ones((4, 4), bool))
    write_labels(path, np.full((5, 5), 2.0))  # whole-number floats accepted
    labels, px = read_labels(path)
    assert px is None and labels.shape == (5, 5) and labels.max() == 2 and labels.dtype == np.uint8


def test_write_labels_rejects_bad_input(tmp_path):
    with pytest.raises(InvalidImageError, match="2-D"):
        write_labels(tmp_path / "x.tif", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(InvalidImageError, match="whole numbers"):
        write_labels(tmp_path / "x.tif", np.full((3, 3), 0.5))
    with pytest.raises(InputFileNotFoundError, match="does not exist"):
        write_labels(tmp_path / "nowhere" / "x.tif", np.zeros((3, 3), np.uint8))
    with pytest.raises(InvalidImageError, match=r"x\.tif: label values must be >= 0 \(0 = unlabelled\), got -2"):
        write_labels(tmp_path / "x.tif", np.array([[0, 1], [-2, 3]], np.int16))  # no measurement would take it
    assert not any(tmp_path.iterdir())


def test_read_labels_of_palette_images_gives_the_indices(tmp_path):
    """Indexed PNG / TIFF (the usual label export of annotation tools) were expanded to their display colours
    and refused as 'not single-channel'; their labels are the indices."""
    from PIL import Image

    labels = np.zeros((32, 48), np.uint8)
    labels[:, :10], labels[5:20, 30:] = 1, 2
    im = Image.fromarray(labels, "P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(tmp_path / "p.png")
    cmap = np.zeros((3, 256), np.uint16)
    cmap[0, 1] = cmap[1, 2] = 65535
    tifffile.imwrite(tmp_path / "p.tif", labels, photometric="palette", colormap=cmap)
    for name in ("p.png", "p.tif"):
        back, _ = read_labels(tmp_path / name)
        np.testing.assert_array_equal(back, labels)
    assert read_micrograph(tmp_path / "p.png", detect_databar=False).data.shape == (32, 48, 3)  # images: colours


def test_miniswhite_images_are_inverted_but_labels_keep_their_stored_values(tmp_path):
    """Photometric MINISWHITE (0 = white): a micrograph is read as it is shown (inverted), but a label image
    or mask holds its values as stored; inverting it turned 3 into 252 and a 0/255 mask inside out."""
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 3:9], labels[10:18, 20:28] = 3, 255
    tifffile.imwrite(tmp_path / "w.tif", labels, photometric="miniswhite")
    shown = read_micrograph(tmp_path / "w.tif", detect_databar=False)
    np.testing.assert_array_equal(shown.data, 255 - labels)
    assert shown.meta["inverted_miniswhite"] is True
    back, _ = read_labels(tmp_path / "w.tif")
    np.testing.assert_array_equal(back, labels)
    words = np.array([[0, 1], [40000, 2]], np.uint16)
    tifffile.imwrite(tmp_path / "w16.tif", words, photometric="miniswhite")
    np.testing.assert_array_equal(read_labels(tmp_path / "w16.tif")[0], words)


def test_read_labels_refuses_negative_values_naming_the_file(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "signed.tif", np.array([[0, 1], [-1, 2]], np.int16))
    with pytest.raises(InvalidImageError, match=r"signed\.tif: label values must be >= 0"):
        read_labels(tmp_path / "signed.tif")


def test_read_labels_from_png_and_grey_rgb(tmp_path):
    labels = RNG.integers(0, 4, (12, 14), dtype=np.uint8)
    db.save_pil(tmp_path / "l.png", labels)
    db.save_pil(tmp_path / "rgb.png", np.repeat(labels[..., None], 3, axis=2))
    for name in ("l.png", "rgb.png"):
        back, px = read_labels(tmp_path / name)
        np.testing.assert_array_equal(back, labels)
        assert px is None
    db.save_pil(tmp_path / "colour.png", RNG.integers(0, 255, (12, 14, 3), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match="single-channel"):
        read_labels(tmp_path / "colour.png")


@pytest.mark.parametrize("dtype, top", [(np.float16, 4096), (np.float32, 2**24 + 2)])
def test_float_labels_beyond_the_types_exact_whole_numbers_are_refused(tmp_path, dtype, top):
    # float16 has no 2049 and float32 no 2**24 + 1: labels there may already be merged, a silent wrong count
    import tifffile

    arr = np.zeros((4, 4), dtype)
    arr[0, 0], arr[1, 1] = 1, top
    path = tmp_path / "lab.tif"
    tifffile.imwrite(path, arr)
    with pytest.raises(InvalidImageError, match=rf"lab\.tif: label values up to {top} in a {np.dtype(dtype).name} image"):
        read_labels(path)
    with pytest.raises(InvalidImageError, match="save labels as integers"):
        write_labels(tmp_path / "out.tif", arr)
    arr[1, 1] = 2 ** (np.finfo(dtype).nmant + 1)  # the largest value below which every whole number exists
    tifffile.imwrite(path, arr)
    assert read_labels(path)[0].max() == arr[1, 1]


def test_float_label_arrays_beyond_exact_whole_numbers_are_refused_by_the_measurements():
    from micro_seg.measure import measure_defects, measure_grains

    arr = np.zeros((8, 8), np.float32)
    arr[:4] = 2**25  # 2**25 and 2**25 + 1 are the same float32: two grains may be one
    arr[4:] = 1
    for fn in (measure_grains, measure_defects):
        with pytest.raises(InvalidImageError, match="float32 holds whole numbers exactly only up to 16777216"):
            fn(arr)


def test_exif_orientation_is_reported_not_silently_ignored(tmp_path):
    """A phone JPEG with Orientation 6 is shown rotated by viewers; the labels follow the stored pixels."""
    from PIL import Image

    im = Image.fromarray(np.zeros((200, 128), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "o.jpg", exif=exif)
    m = read_micrograph(tmp_path / "o.jpg")
    assert m.shape[:2] == (200, 128)
    assert any("EXIF orientation is 6" in w and "rotated 90 degrees clockwise" in w for w in m.reader_warnings)
    im.save(tmp_path / "plain.jpg")
    assert not any("EXIF" in w for w in read_micrograph(tmp_path / "plain.jpg").reader_warnings)


@pytest.mark.parametrize("depth, key", [(1, 0), (1, 1), (2, 1), (4, 5), (4, 15)])
def test_png_colour_key_of_a_low_bit_depth_grey_image_is_named(tmp_path, depth, key):
    """A 1-, 2- or 4-bit grey PNG with a tRNS key: Pillow scales the pixels to 0..255 (1 bit: 0 / 1) but gives the
    key unscaled, so the keyed pixels were not found and nothing was said. They are found at the pixels' scale."""
    rng = np.random.default_rng(depth)
    raw = rng.integers(0, 2 ** depth, (16, 24))
    raw[raw == key] = (key + 1) % 2 ** depth
    raw[:4] = key  # a quarter of the field is the transparent level
    m = read_micrograph(db.low_depth_grey_png(tmp_path / "keyed.png", raw, depth, transparent=key))
    scale = 1 if depth == 1 else 255 // (2 ** depth - 1)
    np.testing.assert_array_equal(m.data, raw * scale)  # the pixels themselves, as read
    warned = [w for w in m.reader_warnings if "transparent" in w]
    assert len(warned) == 1 and warned[0].startswith("25 % of the pixels"), warned
    assert f"marks the value {key * scale} as transparent, but micro-seg analyses them as image pixels" in warned[0]
    plain = read_micrograph(db.low_depth_grey_png(tmp_path / "plain.png", raw, depth))
    assert not [w for w in plain.reader_warnings if "transparent" in w]


def test_write_labels_of_a_long_name_that_fits_writes_it_and_one_that_does_not_says_so(tmp_path):
    """'<80 CJK characters>_labels.tif' (251 bytes) fits a file name, its temporary (33 bytes more) did not: the
    OSError of the clean-up, not write_labels' own message, reached the user as an internal error."""
    from micro_seg.errors import MicroSegError

    fits = tmp_path / ("晶" * 80 + "_labels.tif")
    assert write_labels(fits, np.eye(3, dtype=int)) == fits
    assert read_labels(fits)[0].tolist() == np.eye(3, dtype=int).tolist()
    assert os.listdir(tmp_path) == [fits.name]
    too_long = tmp_path / ("晶" * 90 + "_labels.tif")
    with pytest.raises(MicroSegError, match="cannot write"):
        write_labels(too_long, np.eye(3, dtype=int))
