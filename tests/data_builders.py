"""Build test images and files at test time (no binary corpora in the repository).

Micrographs with known content (Voronoi grains, SEM data bars), calibrated TIFFs
written the way microscopes and ImageJ/OME write them (FEI and Zeiss private
tags with realistic text), and bad files (truncated, bombs, wrong content).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw, ImageFont

# ----------------------------------------------------------------------------- images


def grain_image(shape=(256, 256), n_grains=60, *, seed=0, noise=6.0, boundary=True) -> np.ndarray:
    """uint8 Voronoi grain image (grain grey levels 70..200, dark boundaries, Gaussian noise)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    rows, cols = shape
    seeds = rng.random((n_grains, 2)) * [rows, cols]
    rr, cc = np.mgrid[:rows, :cols]
    _, labels = cKDTree(seeds).query(np.c_[rr.ravel(), cc.ravel()])
    labels = labels.reshape(shape)
    levels = rng.uniform(70, 200, n_grains)
    image = levels[labels]
    if boundary:
        edge = np.zeros(shape, bool)
        edge[:-1] |= labels[:-1] != labels[1:]
        edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        image[edge] = 30
    image = image + rng.normal(0, noise, shape) if noise else image
    return np.clip(image, 0, 255).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


def add_databar(image: np.ndarray, rows: int, *, background: int = 0, ink: int = 255) -> np.ndarray:
    """Append an SEM-style information band of ``rows`` rows: flat background, text and a scale bar.

    The band replaces the bottom ``rows`` rows (like microscope software does)
    and has the image's dtype; ``background``/``ink`` are 8-bit levels scaled to
    the dtype's range for 16-bit images.
    """
    out = image.copy()
    height, width = image.shape[:2]
    band = Image.new("L", (width, rows), background)
    draw = ImageDraw.Draw(band)
    size = max(8, rows // 3)
    font = _font(size)
    draw.text((4, rows // 6), "HV 15.00 kV  WD 5.1 mm  mag 10 000 x  ETD", fill=ink, font=font)
    bar_w = max(10, width // 6)
    top = rows - max(3, rows // 4) - 2
    draw.rectangle([width - bar_w - 8, top, width - 8, top + max(2, rows // 10)], fill=ink)
    draw.text((width - bar_w - 8, max(0, top - size - 2)), "1 um", fill=ink, font=font)
    arr = np.asarray(band)
    if image.dtype == np.uint16:
        arr = arr.astype(np.uint16) * 257
    elif image.dtype.kind == "f":
        arr = arr.astype(image.dtype) / 255.0
    if image.ndim == 3:
        arr = np.repeat(arr[..., None], image.shape[2], axis=2)
    out[height - rows :] = arr.astype(image.dtype)
    return out


# ----------------------------------------------------------------------------- calibrated TIFFs

FEI_TEXT = """[User]
Date=03/14/2019
Time=10:22:05 AM
User=supervisor
UserTextUnicode=
[System]
Type=SEM
Dnumber=D8439
Software=7.6.2.3406
BuildNr=3406
Source=FEG
Column=Elstar
FinalLens=Elstar
Chamber=xT-SDB
Stage=150mm
Pump=TMP
ESEM=no
Aperture=AVA
Scan=PIA 2.0
Acq=PIA 2.0
EucWD=0.004
SystemType=Helios NanoLab 600i
DisplayWidth=0.338
DisplayHeight=0.22
[Beam]
HV=5000
Spot=3
StigmatorX=0.0134
StigmatorY=-0.0087
BeamShiftX=0
BeamShiftY=0
ScanRotation=0
ImageMode=Normal
Beam=EBeam
Scan=EScan
[EBeam]
Source=FEG
ColumnType=Elstar
FinalLens=Elstar
Acq=PIA 2.0
Aperture=AVA
ApertureDiameter=3.2e-005
HV=5000
HFW=1.27e-005
VFW=8.4667e-006
WD=0.00415
BeamCurrent=8.6e-011
TiltCorrectionIsOn=no
[Scan]
InternalScan=true
Dwelltime=3e-006
PixelWidth={px_m}
PixelHeight={py_m}
HorFieldsize=1.27e-005
VerFieldsize=8.4667e-006
Average=0
Integrate=0
FrameTime=3.87
[EScan]
Scan=PIA 2.0
InternalScan=true
Dwelltime=3e-006
PixelWidth={px_m}
PixelHeight={py_m}
HorFieldsize=1.27e-005
VerFieldsize=8.4667e-006
FrameTime=3.87
[Image]
DigitalContrast=1
DigitalBrightness=0
DigitalGamma=1
ZoomFactor=1
ResolutionX=1536
ResolutionY=1024
MagCanvasRealWidth=0.127
MagnificationMode=4
"""

ZEISS_LINES = [
    "0", "0", "0", "0", "0",
    "AP_WD", "WD = 8.5 mm",
    "AP_MAG", "Mag = 25.00 K X",
    "AP_ACTUALKV", "EHT = 5.00 kV",
    "DP_DETECTOR_CHANNEL", "Signal A = InLens",
    "AP_PIXEL_SIZE", "Pixel Size = {scan_value} {unit}",
    "AP_IMAGE_PIXEL_SIZE", "Image Pixel Size = {value} {unit}",
    "DP_SCANRATE", "Scan Speed = 7",
    "AP_HEIGHT", "Height = 2.287 µm",
    "AP_WIDTH", "Width = 3.049 µm",
    "SV_USER_NAME", "User Name = Operator",
    "AP_DATE", "Date :25 Nov 2020",
    "AP_TIME", "Time :14:03:12",
    "END",
]


def fei_tiff(path: Path, image: np.ndarray, *, px_m: float, py_m: float | None = None, tag: int = 34682) -> Path:
    """TIFF with an FEI/Thermo metadata block (tag 34682 FEI_HELIOS or 34680 FEI_SFEG)."""
    text = FEI_TEXT.format(px_m=f"{px_m:g}", py_m=f"{(py_m if py_m is not None else px_m):g}").replace("\n", "\r\n")
    tifffile.imwrite(path, image, extratags=[(tag, "s", 0, text, True)])
    return path


def zeiss_tiff(path: Path, image: np.ndarray, *, value: float, unit: str = "nm", scan_value: float | None = None,
               image_pixel_size: bool = True) -> Path:
    """TIFF with a Zeiss SmartSEM CZ_SEM block (tag 34118), latin-1 encoded like SmartSEM writes it.

    ``AP_PIXEL_SIZE`` (scan resolution) holds ``scan_value`` (default: twice the
    image pixel size) to catch readers that pick the wrong entry.
    """
    lines = list(ZEISS_LINES)
    if not image_pixel_size:
        i = lines.index("AP_IMAGE_PIXEL_SIZE")
        del lines[i : i + 2]
    scan = scan_value if scan_value is not None else 2 * value
    text = "\r\n".join(lines).format(value=value, unit=unit, scan_value=scan)
    data = text.encode("latin-1") + b"\x00"
    tifffile.imwrite(path, image, extratags=[(34118, 1, len(data), data, True)])
    return path


def ome_tiff(path: Path, image: np.ndarray, *, size_x: float, size_y: float | None = None, unit: str | None = "µm") -> Path:
    meta = {"axes": "YX" if image.ndim == 2 else "YXS", "PhysicalSizeX": size_x,
            "PhysicalSizeY": size_x if size_y is None else size_y}
    if unit is not None:
        meta.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
    tifffile.imwrite(path, image, ome=True, metadata=meta, photometric="rgb" if image.ndim == 3 else "minisblack")
    return path


def imagej_tiff(path: Path, image: np.ndarray, *, pixel_size: float, unit: str = "micron", y_pixel_size: float | None = None) -> Path:
    y = pixel_size if y_pixel_size is None else y_pixel_size
    tifffile.imwrite(path, image, imagej=True, resolution=(1 / pixel_size, 1 / y), metadata={"unit": unit})
    return path


def resolution_tiff(path: Path, image: np.ndarray, *, per_unit: float, unit: str, y_per_unit: float | None = None) -> Path:
    """Plain TIFF with X/YResolution in pixels per ``unit`` ("INCH", "CENTIMETER" or "NONE")."""
    y = per_unit if y_per_unit is None else y_per_unit
    tifffile.imwrite(path, image, resolution=(per_unit, y), resolutionunit=unit)
    return path


# ----------------------------------------------------------------------------- bad files


def minimal_tiff(path: Path, *, width: int, height: int, data: bytes = b"\x00" * 16, bits: int = 8) -> Path:
    """Hand-made little-endian TIFF whose header claims ``width x height`` (data may be short)."""
    entries = [
        (256, 4, 1, width),            # ImageWidth LONG
        (257, 4, 1, height),           # ImageLength
        (258, 3, 1, bits),             # BitsPerSample SHORT
        (259, 3, 1, 1),                # Compression none
        (262, 3, 1, 1),                # Photometric minisblack
        (273, 4, 1, 0),                # StripOffsets (patched below)
        (277, 3, 1, 1),                # SamplesPerPixel
        (278, 4, 1, max(height, 1)),   # RowsPerStrip
        (279, 4, 1, len(data)),        # StripByteCounts
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_offset
        packed = struct.pack("<H", value) + b"\x00\x00" if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0) + data
    path.write_bytes(bytes(out))
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def low_depth_grey_png(path: Path, values: np.ndarray, depth: int, *, transparent: int | None = None) -> Path:
    """Greyscale PNG of ``depth`` (1, 2 or 4) bits per pixel holding raw ``values`` (0 .. 2**depth - 1), with a
    tRNS colour key ``transparent`` (a raw value) when given; Pillow cannot write these depths for grey."""
    rows = b""
    for row in np.asarray(values):
        bits = "".join(format(int(v), f"0{depth}b") for v in row)
        bits += "0" * (-len(bits) % 8)
        rows += b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")
    h, w = np.asarray(values).shape
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0))
    if transparent is not None:
        out += _png_chunk(b"tRNS", struct.pack(">H", transparent))
    path.write_bytes(out + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))
    return path


def png_bomb(path: Path, *, width: int = 60000, height: int = 60000) -> Path:
    """PNG whose header claims a huge greyscale image; the data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def jpeg_bomb(path: Path, *, width: int = 65000, height: int = 65000) -> Path:
    """A small valid JPEG whose SOF header is patched to claim ``width x height``."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def save_pil(path: Path, image: np.ndarray, **kwargs) -> Path:
    Image.fromarray(image).save(path, **kwargs)
    return path


def threshold_net(num_classes, bright_class, k=40.0):
    """msnet whose class ``bright_class`` logit is k * (x - 0.5) and class 0 the opposite."""
    import torch

    from micro_seg.nets import build_network

    net = build_network("msnet", in_channels=1, num_classes=num_classes, widths=[4, 8])
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
        net.encoder[0][0][0].weight[0, 0, 1, 1] = 1.0  # full-res feature 0 = input
        net.decoder[0][0].weight[0, 8, 1, 1] = 1.0  # fused feature 0 = skip feature 0
        net.head.weight[bright_class, 0] = k
        net.head.bias[bright_class] = -k / 2
        net.head.weight[0, 0] = -k
        net.head.bias[0] = k / 2
        if num_classes > 2:
            net.head.bias[2:] = -100.0
    return net.eval()


def faint_boundary_image() -> np.ndarray:
    """64 x 64 grains split by one faint vertical boundary: with :func:`threshold_net` (k=40) and min-max
    normalisation its boundary probability is ~0.29 (one grain at threshold 0.5, two at 0.2)."""
    img = np.full((64, 64), 40, np.uint8)
    img[:, 30:33] = 128  # minmax-normalised 0.489 -> p(boundary) = 1 / (1 + exp(80 * 0.011)) ~ 0.29
    img[:2, :2] = 220  # sets the normalisation maximum
    return img
