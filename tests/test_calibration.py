"""Calibration from every source, in the documented order of trust, via ``micro-seg info --json``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile

import data_builders as db
from micro_seg.cli import main
from micro_seg.errors import CalibrationError
from micro_seg.io import read_micrograph
from micro_seg.io_calibration import is_default_resolution, to_micrometres, validate_pixel_size

IMAGE = db.grain_image((64, 80), n_grains=20, seed=5)


def info_json(path, capsys, *extra):
    code = main(["info", str(path), "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    return json.loads(out)


# --------------------------------------------------------------------- unit helpers


@pytest.mark.parametrize(
    "value, unit, expected",
    [(1.0, "m", 1e6), (2.5, "mm", 2500.0), (3.0, "cm", 3e4), (0.5, "um", 0.5), (0.5, "µm", 0.5),
     (0.5, "μm", 0.5), (0.5, "micron", 0.5), (0.5, "\\u00B5m", 0.5), (250.0, "nm", 0.25), (10.0, "Å", 1e-3),
     (1.0, "inch", 25400.0), (1000.0, "pm", 1e-3), (4.0, "Âµm", 4.0)],
)
def test_to_micrometres(value, unit, expected):
    assert to_micrometres(value, unit) == pytest.approx(expected)


@pytest.mark.parametrize("unit", ["pixel", "", "px", "furlong"])
def test_non_length_units(unit):
    assert to_micrometres(1.0, unit) is None


@pytest.mark.parametrize("value", [0, -0.5, float("nan"), float("inf"), 1e-6, 2e4, "abc", None])
def test_validate_rejects(value):
    with pytest.raises(CalibrationError) as info:
        validate_pixel_size(value, source="ome", path="x.tif")
    assert "x.tif" in str(info.value) and "ome" in str(info.value)


@pytest.mark.parametrize(
    "x, y, unit, default",
    [(72, 72, "inch", True), (96, 96, "inch", True), (300, 300, "inch", True), (1, 1, "inch", True),
     (28.346457, 28.346457, "cm", True), (1, 1, "none", True), (5000, 5000, "none", True),
     (25400, 25400, "inch", False), (72.5, 72.5, "inch", False), (1e4, 1e4, "cm", False), (72, 96, "inch", False),
     (28.35, 28.35, "cm", True),  # 72 dpi with px/cm rounded to 2 decimals
     (1e4 / 30, 1e4 / 30, "cm", False), (1e4 / 42, 1e4 / 42, "cm", False),  # 30 and 42 um/pixel: not whole dpi
     # the usual defaults as some writers store px/cm: cut to 2 decimals, rounded to 1 or to a whole number
     (28.34, 28.34, "cm", True), (37.79, 37.79, "cm", True), (28.3, 28.3, "cm", True), (118.1, 118.1, "cm", True),
     (118, 118, "cm", True), (59, 59, "cm", True), (236, 236, "cm", True), (472.4, 472.4, "cm", True),
     (1e4 / 32, 1e4 / 32, "cm", False)],  # 312.5 px/cm (32 um/pixel) is 1 decimal but no default's rounding
)
def test_default_resolution_rule(x, y, unit, default):
    assert is_default_resolution(x, y, unit) is default


# --------------------------------------------------------------------- each source via the CLI


def test_resolution_tags_in_cm(tmp_path, capsys):
    path = db.resolution_tiff(tmp_path / "cm.tif", IMAGE, per_unit=1e4 / 0.37, unit="CENTIMETER")
    info = info_json(path, capsys)
    assert info["pixel_size_um"] == pytest.approx(0.37, rel=1e-9)
    assert info["calibration_source"] == "tiff-resolution"
    assert info["shape"] == [64, 80] and info["dtype"] == "uint8" and info["databar_rows"] == 0


def test_resolution_tags_in_inch(tmp_path, capsys):
    path = db.resolution_tiff(tmp_path / "inch.tif", IMAGE, per_unit=25400 / 0.125, unit="INCH")
    info = info_json(path, capsys)
    assert info["pixel_size_um"] == pytest.approx(0.125, rel=1e-9)
    assert info["calibration_source"] == "tiff-resolution"


@pytest.mark.parametrize("dpi, unit", [(72, "INCH"), (96, "INCH"), (300, "INCH"), (72 / 2.54, "CENTIMETER"), (5000, "NONE")])
def test_meaningless_resolution_is_null(tmp_path, capsys, dpi, unit):
    path = db.resolution_tiff(tmp_path / "d.tif", IMAGE, per_unit=dpi, unit=unit)
    info = info_json(path, capsys)
    assert info["pixel_size_um"] is None and info["calibration_source"] is None
    assert any("ignored" in note for note in info["calibration_notes"])


def test_plain_tiff_without_tags_is_null(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "p.tif", IMAGE)
    info = info_json(tmp_path / "p.tif", capsys)
    assert info["pixel_size_um"] is None and info["calibration_source"] is None


@pytest.mark.parametrize("unit, size, expected", [("micron", 0.2, 0.2), ("um", 0.2, 0.2), ("\\u00B5m", 0.2, 0.2),
                                                  ("nm", 5.0, 0.005), ("mm", 0.002, 2.0)])
def test_imagej(tmp_path, capsys, unit, size, expected):
    path = db.imagej_tiff(tmp_path / "ij.tif", IMAGE, pixel_size=size, unit=unit)
    info = info_json(path, capsys)
    assert info["pixel_size_um"] == pytest.approx(expected, rel=1e-6)
    assert info["calibration_source"] == "imagej"


def test_imagej_uncalibrated_inch_default_is_null(tmp_path, capsys):
    # ImageJ saves unit=inch at 72 px/inch when it opened an uncalibrated 72-dpi image
    path = db.imagej_tiff(tmp_path / "ij.tif", IMAGE, pixel_size=1 / 72, unit="inch")
    assert info_json(path, capsys)["pixel_size_um"] is None


def test_imagej_yunit(tmp_path, capsys):
    """ImageJ writes yunit= when Y has its own unit: x 2 px/micron and y 0.002 px/nm are the same 0.5 um square
    pixel, but Y was read in microns (500 um) and the file refused as 'not square (0.5 x 500 um)'."""
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, IMAGE, description="ImageJ=1.54f\nunit=micron\nyunit=nm\n", resolution=(2, 0.002),
                     metadata=None)
    info = info_json(path, capsys)
    assert (info["pixel_size_um"], info["calibration_source"]) == (0.5, "imagej")
    tifffile.imwrite(path, IMAGE, description="ImageJ=1.54f\nunit=micron\nyunit=nm\n", resolution=(2, 0.004),
                     metadata=None)
    with pytest.raises(CalibrationError, match=r"not square \(0.5 x 0.25 um"):
        read_micrograph(path)


@pytest.mark.parametrize("unit, size, expected", [("µm", 0.31, 0.31), ("nm", 4.5, 0.0045), ("mm", 0.001, 1.0),
                                                  ("Å", 20.0, 0.002), ("m", 2e-7, 0.2), (None, 0.8, 0.8)])
def test_ome(tmp_path, capsys, unit, size, expected):
    path = db.ome_tiff(tmp_path / "x.ome.tif", IMAGE, size_x=size, unit=unit)
    info = info_json(path, capsys)
    assert info["pixel_size_um"] == pytest.approx(expected, rel=1e-9)
    assert info["calibration_source"] == "ome"


@pytest.mark.parametrize("tag", [34682, 34680])
def test_fei(tmp_path, capsys, tag):
    path = db.fei_tiff(tmp_path / "fei.tif", IMAGE, px_m=4.96094e-9, tag=tag)
    with tifffile.TiffFile(path) as tif:  # tifffile parses our block like a real one
        assert tif.is_fei
        assert tif.fei_metadata["Scan"]["PixelWidth"] == pytest.approx(4.96094e-9)
        assert tif.fei_metadata["Beam"]["HV"] == 5000
    info = info_json(path, capsys)
    assert info["pixel_size_um"] == pytest.approx(0.00496094, rel=1e-9)
    assert info["calibration_source"] == "fei"


@pytest.mark.parametrize("value, unit, expected", [(2.233, "nm", 0.002233), (1.5, "µm", 1.5), (0.35, "um", 0.35),
                                                   (850.0, "pm", 0.00085)])
def test_zeiss_uses_image_pixel_size(tmp_path, capsys, value, unit, expected):
    path = db.zeiss_tiff(tmp_path / "zeiss.tif", IMAGE, value=value, unit=unit)  # AP_PIXEL_SIZE = 2x
    with tifffile.TiffFile(path) as tif:
        sem = tif.sem_metadata
        assert sem["ap_image_pixel_size"] == ("Image Pixel Size", value, unit)
        assert sem["ap_pixel_size"][1] == pytest.approx(2 * value)
    info = info_json(path, capsys)
    assert info["pixel_size_um"] == pytest.approx(expected, rel=1e-9)
    assert info["calibration_source"] == "zeiss-sem"
    assert read_micrograph(path, detect_databar=False).meta["magnification"] == 25000


def test_zeiss_without_image_pixel_size_does_not_use_scan_pixel_size(tmp_path, capsys):
    path = db.zeiss_tiff(tmp_path / "zeiss.tif", IMAGE, value=2.0, image_pixel_size=False)
    info = info_json(path, capsys)
    assert info["pixel_size_um"] is None
    assert any("ap_pixel_size" in note for note in info["calibration_notes"])


# --------------------------------------------------------------------- order of trust


def test_ome_beats_resolution_tags(tmp_path):
    path = tmp_path / "both.ome.tif"
    tifffile.imwrite(path, IMAGE, ome=True, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
                     resolution=(1e4 / 0.9, 1e4 / 0.9), resolutionunit="CENTIMETER")
    m = read_micrograph(path)
    assert (m.pixel_size_um, m.calibration_source) == (0.5, "ome")


@pytest.mark.parametrize("page", [1, 2])
def test_ome_z_stack_later_page_keeps_ome_calibration(tmp_path, capsys, page):
    # tifffile hands pages >= 1 of an OME series back as TiffFrame (no tags of their own): --page N must still work
    stack = np.stack([IMAGE // 4 * 1, IMAGE // 4 * 2, IMAGE // 4 * 3]).astype(np.uint8)
    path = tmp_path / "z.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    m = read_micrograph(path, page=page)
    np.testing.assert_array_equal(m.data, stack[page])
    assert (m.pixel_size_um, m.calibration_source, m.meta["page"]) == (0.5, "ome", page)
    assert m.meta["calibration_notes"] == []  # the page's own resolution tags agree
    info = info_json(path, capsys, "--page", str(page))
    assert (info["pixel_size_um"], info["calibration_source"], info["shape"]) == (0.5, "ome", [64, 80])


def test_ome_file_with_two_images_gives_each_page_its_own_pixel_size(tmp_path, capsys):
    """An OME-TIFF of two fields at different magnifications: --page 1 was given image 0's pixel size (0.5 um
    instead of 2 um, a silent 4 x error in lengths); the OME TiffData elements say which image a page belongs to."""
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(IMAGE, metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tif.write(IMAGE[:32, :40], metadata={"axes": "YX", "PhysicalSizeX": 2000, "PhysicalSizeY": 2000,
                                             "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"})
    assert read_micrograph(path, detect_databar=False).pixel_size_um == 0.5
    info = info_json(path, capsys, "--page", "1")
    assert (info["shape"], info["pixel_size_um"], info["calibration_source"]) == ([32, 40], 2.0, "ome")


def test_ome_images_with_different_pixel_sizes_and_no_page_map_are_not_guessed(tmp_path):
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(IMAGE, metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tif.write(IMAGE, metadata={"axes": "YX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    edited = tmp_path / "unmapped.ome.tif"
    stripped = xml.replace('<TiffData IFD="1" PlaneCount="1"/>', "").encode()
    assert len(stripped) < len(xml.encode())
    with tifffile.TiffWriter(edited) as tif:
        tif.write(IMAGE, description=stripped, metadata=None)
        tif.write(IMAGE, metadata=None)
    m = read_micrograph(edited, page=1, detect_databar=False)
    assert m.pixel_size_um is None
    assert any("does not say which one page 1 belongs to" in note for note in m.meta["calibration_notes"])


def test_fei_beats_zeiss_beats_imagej_beats_resolution(tmp_path):
    fei = db.FEI_TEXT.format(px_m="1e-08", py_m="1e-08")
    zeiss = "\r\n".join(db.ZEISS_LINES).format(value=3.0, unit="nm", scan_value=6.0).encode("latin-1")
    ij = dict(imagej=True, resolution=(1 / 0.7, 1 / 0.7), metadata={"unit": "um"})
    cases = [
        ([(34682, "s", 0, fei, True), (34118, 1, len(zeiss), zeiss, True)], ij, (0.01, "fei")),
        ([(34118, 1, len(zeiss), zeiss, True)], ij, (0.003, "zeiss-sem")),
        ([], ij, (0.7, "imagej")),
    ]
    for i, (tags, kwargs, (expected, source)) in enumerate(cases):
        path = tmp_path / f"c{i}.tif"
        tifffile.imwrite(path, IMAGE, extratags=tags, **kwargs)
        m = read_micrograph(path, detect_databar=False)
        assert m.calibration_source == source
        assert m.pixel_size_um == pytest.approx(expected, rel=1e-6)


def test_user_beats_everything_and_metadata_is_kept(tmp_path, capsys):
    path = db.fei_tiff(tmp_path / "fei.tif", IMAGE, px_m=1e-8)
    info = info_json(path, capsys, "--pixel-size", "0.25")
    assert (info["pixel_size_um"], info["calibration_source"]) == (0.25, "user")
    assert info["metadata_pixel_size_um"] == pytest.approx(0.01)
    assert info["metadata_calibration_source"] == "fei"


def test_user_pixel_size_rescues_a_bad_file_calibration(tmp_path):
    path = db.imagej_tiff(tmp_path / "aniso.tif", IMAGE, pixel_size=0.5, y_pixel_size=0.8)
    with pytest.raises(CalibrationError, match="not square"):
        read_micrograph(path)
    m = read_micrograph(path, pixel_size_um=0.5)
    assert m.calibration_source == "user"
    assert any("not square" in note for note in m.meta["calibration_notes"])


def test_nearly_square_pixels_are_accepted(tmp_path):
    path = db.resolution_tiff(tmp_path / "sq.tif", IMAGE, per_unit=1e4 / 0.5, y_per_unit=1e4 / 0.503, unit="CENTIMETER")
    assert read_micrograph(path).pixel_size_um == pytest.approx(0.5)


def test_pixel_size_user_source_named_in_error(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", IMAGE)
    with pytest.raises(CalibrationError, match=r"pixel size -2 um/pixel \(from user\)"):
        read_micrograph(tmp_path / "p.tif", pixel_size_um=-2)
    with pytest.raises(CalibrationError, match="not finite"):
        read_micrograph(tmp_path / "p.tif", pixel_size_um=math.nan)


def test_png_and_jpeg_are_uncalibrated_unless_told(tmp_path):
    png = db.save_pil(tmp_path / "a.png", IMAGE, dpi=(2540, 2540))
    m = read_micrograph(png)
    assert m.pixel_size_um is None and m.calibration_source is None
    assert read_micrograph(png, pixel_size_um=1.5).pixel_size_um == 1.5
    np.testing.assert_array_equal(m.data, IMAGE)


@pytest.mark.shared_data
def test_real_zeiss_sem_file(shared_datasets):
    """NIST's Ti-6Al-4V BSE image carries a real Zeiss SmartSEM block (tag 34118)."""
    path = shared_datasets / "nist_gsat" / "ex_segmentation" / "sem_polished" / "sem_alpha_beta_ti_6al_4v.tif"
    m = read_micrograph(path)
    assert m.calibration_source == "zeiss-sem"
    assert m.pixel_size_um == 0.1116  # AP_IMAGE_PIXEL_SIZE = 111.6 nm
    with tifffile.TiffFile(path) as tif:  # consistent with the field width Zeiss records
        width = tif.sem_metadata["ap_width"]
    assert width[2] == "µm" and m.shape[1] * m.pixel_size_um == pytest.approx(width[1], rel=1e-3)
    assert m.meta["magnification"] == 1000


def test_a_flag_is_not_a_pixel_size():
    from micro_seg.io_calibration import validate_pixel_size

    with pytest.raises(CalibrationError, match=r"x.tif: pixel size True \(from user\) is not a number"):
        validate_pixel_size(True, source="user", path="x.tif")  # float(True) is 1.0
    assert validate_pixel_size(1, source="user") == 1.0


@pytest.mark.parametrize("px_per_cm", [28.3, 28.34, 37.79, 118.1, 118.0, 236.0])
def test_a_default_dpi_stored_coarsely_in_px_per_cm_is_not_a_calibration(tmp_path, px_per_cm):
    """72 / 96 / 300 / 600 dpi written as px/cm cut to 2 decimals or rounded to 1 or 0 (28.34, 28.3, 118): a
    drawing program's default, not 353 or 84.7 um/pixel (grain sizes in millimetres); 30 um/pixel stays one."""
    tifffile.imwrite(tmp_path / "d.tif", IMAGE, resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER")
    m = read_micrograph(tmp_path / "d.tif")
    assert m.pixel_size_um is None and m.calibration_source is None
    tifffile.imwrite(tmp_path / "c.tif", IMAGE, resolution=(1e4 / 30, 1e4 / 30), resolutionunit="CENTIMETER")
    assert read_micrograph(tmp_path / "c.tif").pixel_size_um == pytest.approx(30.0)
