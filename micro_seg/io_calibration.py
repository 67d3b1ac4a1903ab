"""Pixel-size calibration of micrographs: read it from metadata, validate it.

Sources, in the order of trust :func:`micro_seg.io.read_micrograph` applies:

1. ``"user"``: the ``pixel_size_um`` argument (``--pixel-size``).
2. ``"ome"``: OME-XML ``Pixels/@PhysicalSizeX``/``Y`` with their units
   (default unit micrometre, as in the OME schema), of the image whose
   ``TiffData`` holds the page read (a file may hold several images).
3. ``"fei"``: FEI/Thermo Fisher ``[Scan] PixelWidth``/``PixelHeight`` in metres
   (TIFF tags 34680 FEI_SFEG / 34682 FEI_HELIOS; ``[EScan]`` as fall-back).
4. ``"zeiss-sem"``: Zeiss SmartSEM ``AP_IMAGE_PIXEL_SIZE`` (TIFF tag 34118
   CZ_SEM). Only this entry is the size of one pixel of *the stored image*;
   ``AP_PIXEL_SIZE`` and friends can refer to the scan or the store resolution
   and differ from it, so they are never used.
5. ``"imagej"``: ImageJ ``unit=`` (and ``yunit=`` where Y has its own unit)
   in the description plus the X/YResolution tags (pixels per unit).
6. ``"tiff-resolution"``: X/YResolution tags with ResolutionUnit inch or
   centimetre.

Meaningless resolution tags are ignored (rule applied by
:func:`is_default_resolution`): ResolutionUnit "none" or missing; and, for
unit inch or centimetre with equal X and Y resolution, a value that is a whole
number of dots per inch up to 1200 (1, 72, 96, 150, 300, 600, ...), i.e. what
drawing/scanning software writes by default (to within a px/cm value rounded
to 2 decimals; for the usual defaults 72, 96, 150, 300, 600, 1200 ... dpi,
to within 0.1 %, or as a px/cm value rounded or cut to 1 decimal or to a
whole number, as some writers store them: 28.3 or 28.34 for 72 dpi, 118 for
300). A real micrograph calibration of 21 um/pixel or coarser stored as a
whole dpi number is therefore ignored too; pass the pixel size explicitly for
such images. Files micro-seg wrote (labels, probabilities) record the
exact pixel size in their JSON description, and tags that agree with it are
always a calibration.

Pixels whose width and height differ by more than 1 % (anisotropic pixels)
raise :class:`~micro_seg.errors.CalibrationError`: every measurement in
micro-seg takes one scalar pixel size, so using either axis would give a
silently wrong answer. Pass ``pixel_size_um`` explicitly after resampling.

Examples
--------
>>> to_micrometres(250, "nm")
0.25
>>> validate_pixel_size(0.5, source="user", path="a.tif")
0.5
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from micro_seg.errors import CalibrationError

__all__ = [
    "MIN_PIXEL_SIZE_UM",
    "MAX_PIXEL_SIZE_UM",
    "CALIBRATION_SOURCES",
    "ANISOTROPY_TOLERANCE",
    "to_micrometres",
    "validate_pixel_size",
    "is_default_resolution",
    "tiff_calibration",
    "sem_magnification",
]

#: Smallest and largest plausible pixel sizes in micrometres (0.1 angstrom .. 1 cm).
MIN_PIXEL_SIZE_UM = 1e-5
MAX_PIXEL_SIZE_UM = 1e4

#: Relative difference between pixel width and height tolerated as "square".
ANISOTROPY_TOLERANCE = 0.01

#: Calibration sources, most trusted first (strings fixed by the CLI contract).
CALIBRATION_SOURCES = ("user", "ome", "fei", "zeiss-sem", "imagej", "tiff-resolution")

_UNIT_TO_UM = {
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "um": 1.0,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # greek mu U+03BC
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,  # angstrom sign variants, lower-cased
    "a": 1e-4,
    "angstrom": 1e-4,
    "inch": 25400.0,
    "inches": 25400.0,
    "in": 25400.0,
}

_DEFAULT_DPI_MAX = 1200
#: How far from a whole number of dpi a software default may lie: half a unit of the second decimal of a
#: px/cm value, in dpi.
_DEFAULT_DPI_TOLERANCE = 0.005 * 2.54
#: The resolutions writers default to (screen, print, scan); these are also recognised within 0.1 % and when their
#: px/cm value was rounded or cut to 1 decimal or a whole number (28.3 or 28.34 for 72 dpi, 118 for 300 dpi).
_COMMON_DEFAULT_DPI = (72, 96, 100, 120, 144, 150, 180, 200, 240, 300, 360, 400, 600, 720, 1200)


def _normalise_unit(unit: str) -> str:
    text = str(unit).strip()
    # ImageJ writes the micro sign as a literal "\u00B5" escape in its description
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    text = text.replace("Âµ", "µ").replace("\u212b", "å")  # mojibake micro sign, angstrom sign
    return text.lower()


def to_micrometres(value: float, unit: str) -> float | None:
    """Convert a length ``value`` in ``unit`` to micrometres.

    Returns ``None`` for units that are not lengths (``"pixel"``, ``""``, ...).

    Examples
    --------
    >>> to_micrometres(1.5, "mm")
    1500.0
    >>> to_micrometres(2.0, "\\\\u00B5m")
    2.0
    >>> to_micrometres(3.0, "pixel") is None
    True
    """
    factor = _UNIT_TO_UM.get(_normalise_unit(unit))
    if factor is None:
        return None
    um = float(value) * factor
    # drop binary noise of the conversion (111.6 nm -> 0.1116, not 0.11159999999999999)
    return float(f"{um:.12g}") if math.isfinite(um) else um


def validate_pixel_size(value: Any, *, source: str, path: Any = None) -> float:
    """Return ``value`` as a float, or raise if it is not a plausible pixel size.

    Raises
    ------
    CalibrationError
        If the value is not a number, is NaN/infinite, zero or negative, or lies
        outside ``MIN_PIXEL_SIZE_UM .. MAX_PIXEL_SIZE_UM`` micrometres per pixel.

    Examples
    --------
    >>> validate_pixel_size(-1, source="user", path="x.tif")
    Traceback (most recent call last):
    ...
    micro_seg.errors.CalibrationError: x.tif: pixel size -1 um/pixel (from user) must be positive
    """
    where = f"{path}: " if path is not None else ""
    if isinstance(value, (bool, np.bool_)):  # float(True) is 1.0: a flag mistaken for a size
        raise CalibrationError(f"{where}pixel size {value!r} (from {source}) is not a number")
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}pixel size {value!r} (from {source}) is not a number") from None
    if math.isnan(size) or math.isinf(size):
        raise CalibrationError(f"{where}pixel size {value} um/pixel (from {source}) is not finite")
    if size <= 0:
        raise CalibrationError(f"{where}pixel size {value:g} um/pixel (from {source}) must be positive")
    if not MIN_PIXEL_SIZE_UM <= size <= MAX_PIXEL_SIZE_UM:
        raise CalibrationError(
            f"{where}pixel size {size:g} um/pixel (from {source}) is outside the plausible range "
            f"{MIN_PIXEL_SIZE_UM:g}..{MAX_PIXEL_SIZE_UM:g} um/pixel (check the unit)"
        )
    return size


def _isotropic(x_um: float, y_um: float | None, *, source: str, path: Any) -> float:
    x_um = validate_pixel_size(x_um, source=source, path=path)
    if y_um is None:
        return x_um
    y_um = validate_pixel_size(y_um, source=source, path=path)
    if abs(x_um - y_um) > ANISOTROPY_TOLERANCE * max(x_um, y_um):
        raise CalibrationError(
            f"{path}: pixels are not square ({x_um:g} x {y_um:g} um from {source}); micro-seg needs "
            "square pixels: resample the image and pass the pixel size explicitly"
        )
    return x_um


def is_default_resolution(x_res: float, y_res: float, unit: str) -> bool:
    """True if TIFF resolution tags look like a software default, not a calibration.

    ``unit`` is ``"inch"``, ``"cm"`` or anything else (treated as "none").
    See the module docstring for the rule.

    Examples
    --------
    >>> is_default_resolution(72, 72, "inch")
    True
    >>> is_default_resolution(28.346457, 28.346457, "cm")  # 72 dpi in px/cm
    True
    >>> is_default_resolution(25400, 25400, "inch")  # 1 um/pixel
    False
    """
    if unit not in ("inch", "cm"):
        return True
    if not (x_res > 0 and y_res > 0):
        return True
    if abs(x_res - y_res) > 1e-6 * max(x_res, y_res):
        return False
    dpi = x_res if unit == "inch" else x_res * 2.54
    nearest = round(dpi)
    # whole dpi, allowing a px/cm value rounded to 2 decimals (28.35 for 72 dpi); a relative tolerance would call
    # every value from 500 dpi up "whole" (846.67 dpi = 333.33 px/cm, a real 30 um/pixel, is 0.04 % from 847)
    if 1 <= nearest <= _DEFAULT_DPI_MAX and abs(dpi - nearest) <= _DEFAULT_DPI_TOLERANCE:
        return True
    # the usual defaults as writers store them with less care: within 0.1 %, or in px/cm rounded or cut to 1
    # decimal or a whole number (28.3 or 28.34 px/cm for 72 dpi is 71.88 / 71.98 dpi, 118 px/cm for 300 dpi 299.72)
    for d in _COMMON_DEFAULT_DPI:
        if abs(dpi - d) <= 1e-3 * d:
            return True
        if unit == "cm":
            exact = d / 2.54
            for k in (0, 1, 2):
                for stored in (round(exact, k), math.floor(exact * 10 ** k) / 10 ** k):
                    if abs(x_res - stored) <= 1e-6 * stored:
                        return True
    return False


def _rational(value: Any) -> float | None:
    try:
        if isinstance(value, tuple):
            num, den = value[:2]
            return float(num) / float(den) if den else None
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _resolution(page: Any) -> tuple[float | None, float | None, int | None]:
    tags = page.tags
    x = _rational(tags["XResolution"].value) if "XResolution" in tags else None
    y = _rational(tags["YResolution"].value) if "YResolution" in tags else None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None
    return x, y, unit


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_pixels(root: Any, index: int) -> tuple[Any, str | None]:
    """The OME ``Pixels`` element of the image that holds IFD ``index`` of this file, and why none if none.

    An OME-TIFF may hold several images (fields, magnifications, an overview) with different pixel sizes;
    their ``TiffData`` elements say which IFDs belong to which image."""
    all_pixels = [el for el in root.iter() if _local(el.tag) == "Pixels"]
    if len(all_pixels) <= 1:
        return (all_pixels[0] if all_pixels else None), None
    size_keys = ("PhysicalSizeX", "PhysicalSizeXUnit", "PhysicalSizeY", "PhysicalSizeYUnit")
    if len({tuple(p.get(k) for k in size_keys) for p in all_pixels}) == 1:
        return all_pixels[0], None  # every image has the same pixel size
    own_uuid = root.get("UUID")
    for pixels in all_pixels:
        for data in (el for el in pixels if _local(el.tag) == "TiffData"):
            uuid = next((el for el in data if _local(el.tag) == "UUID"), None)
            if uuid is not None and own_uuid and (uuid.text or "").strip() != own_uuid:
                continue  # planes stored in another file of a multi-file set
            try:
                first = int(data.get("IFD", 0))
                count = int(data.get("PlaneCount", 1 if data.get("IFD") is not None else 1 << 62))
            except ValueError:
                continue
            if first <= index < first + count:
                return pixels, None
    return None, (f"ome: the file holds {len(all_pixels)} images with different pixel sizes and its OME-XML "
                  f"does not say which one page {index} belongs to; ignored")


def _from_ome(tif: Any, path: Any, notes: list[str], index: int = 0) -> float | None:
    xml = tif.ome_metadata
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        notes.append(f"ome: unreadable OME-XML ({exc})")
        return None
    pixels, why_not = _ome_pixels(root, index)
    if why_not:
        notes.append(why_not)
    if pixels is None or pixels.get("PhysicalSizeX") is None:
        return None
    sizes = []
    for axis in ("X", "Y"):
        raw = pixels.get(f"PhysicalSize{axis}")
        if raw is None:
            sizes.append(None)
            continue
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        try:
            number = float(raw)
        except ValueError:
            raise CalibrationError(f"{path}: OME PhysicalSize{axis}={raw!r} is not a number") from None
        um = to_micrometres(number, unit)
        if um is None:
            notes.append(f"ome: PhysicalSize{axis} unit {unit!r} is not a length; ignored")
            return None
        sizes.append(um)
    return _isotropic(sizes[0], sizes[1], source="ome", path=path)


def _from_fei(tif: Any, path: Any, notes: list[str]) -> float | None:
    meta = tif.fei_metadata
    if not meta:
        return None
    for section in ("Scan", "EScan"):
        sec = meta.get(section) or {}
        width = sec.get("PixelWidth")
        if width is None:
            continue
        height = sec.get("PixelHeight")
        try:
            x_um = float(width) * 1e6
            y_um = float(height) * 1e6 if height is not None else None
        except (TypeError, ValueError):
            raise CalibrationError(f"{path}: FEI [{section}] PixelWidth={width!r} is not a number") from None
        return _isotropic(x_um, y_um, source="fei", path=path)
    notes.append("fei: metadata present but has no [Scan] PixelWidth")
    return None


def _from_zeiss(tif: Any, path: Any, notes: list[str]) -> float | None:
    meta = tif.sem_metadata
    if not meta:
        return None
    entry = meta.get("ap_image_pixel_size")
    if entry is None:
        others = sorted(k for k in meta if "pixel_size" in str(k))
        notes.append(f"zeiss-sem: no ap_image_pixel_size (ignored {others or 'nothing'})")
        return None
    # tifffile gives ("Image Pixel Size", value, unit) or ("Image Pixel Size", "value unit")
    value, unit = None, None
    if len(entry) >= 3:
        value, unit = entry[1], entry[2]
    elif len(entry) == 2 and isinstance(entry[1], str):
        match = re.match(r"^\s*([-+0-9.eE]+)\s*(\S+)\s*$", entry[1])
        if match:
            value, unit = match.group(1), match.group(2)
    if value is None:
        raise CalibrationError(f"{path}: Zeiss AP_IMAGE_PIXEL_SIZE {entry!r} has no value and unit")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{path}: Zeiss AP_IMAGE_PIXEL_SIZE value {value!r} is not a number") from None
    um = to_micrometres(number, unit)
    if um is None:
        raise CalibrationError(f"{path}: Zeiss AP_IMAGE_PIXEL_SIZE unit {unit!r} is not a length unit")
    return validate_pixel_size(um, source="zeiss-sem", path=path)


def _from_imagej(tif: Any, page: Any, path: Any, notes: list[str]) -> float | None:
    meta = tif.imagej_metadata
    if not meta or not meta.get("unit"):
        return None
    unit = str(meta["unit"])
    x_res, y_res, _ = _resolution(page)
    if to_micrometres(1.0, unit) is None:
        notes.append(f"imagej: unit {unit!r} is not a length; ignored")
        return None
    if not x_res:
        notes.append("imagej: unit given but no XResolution tag; ignored")
        return None
    y_res = y_res or x_res
    # ImageJ writes yunit= when the Y axis has its own unit (x in micron, y in nm): Y's pixels per yunit
    y_unit = str(meta.get("yunit") or unit)
    if to_micrometres(1.0, y_unit) is None:
        notes.append(f"imagej: yunit {y_unit!r} is not a length; ignored")
        return None
    norm = _normalise_unit(unit)
    coarse = {"inch": "inch", "inches": "inch", "in": "inch", "cm": "cm", "centimeter": "cm", "centimetre": "cm"}
    if norm in coarse and _normalise_unit(y_unit) == norm and is_default_resolution(x_res, y_res, coarse[norm]):
        notes.append(f"imagej: {x_res:g} pixels per {unit} ignored (software default, not a calibration)")
        return None
    x_um = to_micrometres(1.0 / x_res, unit)
    y_um = to_micrometres(1.0 / y_res, y_unit)
    return _isotropic(x_um, y_um, source="imagej", path=path)


def _micro_seg_pixel_size(page: Any) -> float | None:
    """The pixel size micro-seg recorded in the JSON description of a file it wrote (labels, probabilities)."""
    import json

    try:
        info = json.loads(page.description or "")["micro_seg"]
        return float(info["pixel_size_um"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _from_resolution_tags(page: Any, path: Any, notes: list[str]) -> float | None:
    x_res, y_res, unit_code = _resolution(page)
    if x_res is None:
        return None
    unit = {2: "inch", 3: "cm"}.get(unit_code or 0, "none")
    y_res = y_res if y_res is not None else x_res
    per = 25400.0 if unit == "inch" else 1e4
    own = _micro_seg_pixel_size(page)
    if (own is not None and unit != "none" and x_res > 0 and y_res > 0
            and abs(own * x_res / per - 1) < 1e-6 and abs(own * y_res / per - 1) < 1e-6):
        # tags micro-seg wrote with the exact value beside them: a calibration even where it is a whole dpi
        # (--pixel-size 50 is 508 dpi)
        return validate_pixel_size(own, source="tiff-resolution", path=path)
    if is_default_resolution(x_res, y_res, unit):
        notes.append(f"tiff-resolution: {x_res:g} x {y_res:g} per {unit} ignored (software default, not a calibration)")
        return None
    if x_res <= 0 or y_res <= 0:
        raise CalibrationError(f"{path}: TIFF resolution {x_res:g} x {y_res:g} pixels per {unit} must be positive")
    return _isotropic(per / x_res, per / y_res, source="tiff-resolution", path=path)


def tiff_calibration(tif: Any, page: Any, *, path: Any = None) -> tuple[float | None, str | None, dict[str, Any]]:
    """Pixel size (um) and its source from an open :class:`tifffile.TiffFile`.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file (its first page carries OME/FEI/Zeiss/ImageJ metadata).
    page : tifffile.TiffPage
        The page being read (its resolution tags are used).
    path : path-like, optional
        Named in error messages.

    Returns
    -------
    pixel_size_um, source, info
        ``(None, None, info)`` when the file carries no usable calibration.
        ``info`` has ``"notes"`` (ignored or unusable entries, one string each) and ``"conflicts"``
        (less trusted sources of the file that give another pixel size, one string each).

    Raises
    ------
    CalibrationError
        If the most trusted source present holds an invalid or anisotropic value.

    Examples
    --------
    >>> import tifffile, numpy as np, tempfile, os
    >>> fn = os.path.join(tempfile.mkdtemp(), "a.tif")
    >>> tifffile.imwrite(fn, np.zeros((4, 4), "uint8"), resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    >>> with tifffile.TiffFile(fn) as tif:
    ...     tiff_calibration(tif, tif.pages[0])[:2]
    (1.0, 'tiff-resolution')
    """
    notes: list[str] = []
    first = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    readers = (
        ("ome", lambda: _from_ome(tif, path, notes, _page_index(page))),
        ("fei", lambda: _from_fei(tif, path, notes)),
        ("zeiss-sem", lambda: _from_zeiss(tif, path, notes)),
        ("imagej", lambda: _from_imagej(tif, first, path, notes)),
        ("tiff-resolution", lambda: _from_resolution_tags(page, path, notes)),
    )
    for i, (source, reader) in enumerate(readers):
        value = reader()
        if value is not None:
            n_notes = len(notes)
            conflicts = _conflicts(value, source, readers[i + 1:])
            del notes[n_notes:]  # what the unused sources noted is not news
            return value, source, {"notes": notes, "conflicts": conflicts}
    return None, None, {"notes": notes, "conflicts": []}


def _page_index(page: Any) -> int:
    """The IFD number of ``page`` in its file (a page in a SubIFD counts as its top-level page)."""
    index = getattr(page, "index", 0)
    if isinstance(index, tuple):
        index = index[0] if index else 0
    try:
        return int(index)
    except (TypeError, ValueError):
        return 0


def _conflicts(value: float, source: str, others: Any) -> list[str]:
    """Less trusted calibration sources of the file that disagree with the one used by more than 1 %."""
    out = []
    for other, reader in others:
        try:
            v = reader()
        except CalibrationError:
            continue
        if v is not None and abs(v / value - 1) > 0.01:
            out.append(f"the file's calibrations disagree: {source} gives {value:.6g} um/pixel, {other} "
                       f"{v:.6g} um/pixel ({max(v, value) / min(v, value):.3g} x); {source} is used")
    return out


def sem_magnification(tif: Any) -> float | None:
    """Magnification recorded by Zeiss SmartSEM (``AP_MAG``, e.g. ``"25.00 K X"`` -> 25000).

    Returns ``None`` when absent or unreadable (magnification is informative
    only; the pixel size is what measurements use).
    """
    meta = getattr(tif, "sem_metadata", None) or {}
    entry = meta.get("ap_mag")
    if not entry or len(entry) < 2:
        return None
    text = " ".join(str(part) for part in entry[1:]).upper().replace(",", "")
    match = re.match(r"^\s*([0-9.]+)\s*(K|M)?\s*X?\s*$", text)
    if not match:
        return None
    factor = {"K": 1e3, "M": 1e6}.get(match.group(2) or "", 1.0)
    try:
        return float(match.group(1)) * factor
    except ValueError:
        return None
