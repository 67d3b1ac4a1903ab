"""Read micrographs with their calibration; write calibrated label images.

:func:`read_micrograph` reads TIFF (8/16/32-bit integer, float, RGB/RGBA,
multi-page, BigTIFF, OME-TIFF, ImageJ, LZW/deflate/zstd/JPEG-compressed via
imagecodecs), PNG, JPEG and BMP, and returns a :class:`Micrograph`: the pixel
data, the pixel size in micrometres and where it came from (see
:mod:`micro_seg.io_calibration` for the order of trust), the rows of an SEM data
bar found at the bottom (see :mod:`micro_seg.databar`) and a ``meta`` dict.

The file type is recognised from its first bytes, not its name. Every problem a
user can cause raises a :mod:`micro_seg.errors` class whose one-line message
names the file: missing file or folder given (``InputFileNotFoundError``), empty,
truncated or corrupt file (``CorruptFileError``), unsupported format
(``UnsupportedFormatError``), unusable pixels - 0-size, stacks with more than two
dimensions, channel counts other than 1, 3 or 3 + alpha, complex numbers,
NaN/Inf (``InvalidImageError``), images above the pixel limit
(``ImageTooLargeError``), bad pixel sizes (``CalibrationError``).

Pages and stacks: a plain multi-page file (pages without named axes) gives its
first full-resolution page and records ``meta["n_pages"]``; reduced-resolution
previews stored before it (TIFF NewSubfileType bit 0) are skipped, with a warning
naming the page read. ``page=`` (CLI ``--page N``) counts every page (IFD) from 0,
previews included. A file whose OME/ImageJ metadata
declares stack axes (Z depth, T time, C channels other than 3) is refused with
each axis and its size named, unless ``page=`` picks one plane. An OME/ImageJ
file with exactly three channel planes is read as ``rows x cols x 3``. Alpha
channels are dropped (``meta["dropped_alpha"]``); bool pixels become uint8 0/1,
float16 becomes float32, big-endian data native.

Decompression-bomb guard: images with more than :data:`DEFAULT_MAX_PIXELS`
(1.2e9) rows x cols are refused *before* their pixels are decoded, from the
TIFF/PNG/JPEG/BMP header. Raise the limit with ``max_pixels=`` or the
``MICRO_SEG_MAX_PIXELS`` environment variable. Pillow's own guard
(``Image.MAX_IMAGE_PIXELS``, about 179 megapixels) gives way to this one: a PNG,
JPEG or BMP above Pillow's limit has its header read again with Pillow's guard
lifted for that call only (under a lock), and our limit decides; Pillow's
``DecompressionBombError`` always surfaces as ``ImageTooLargeError``. The
header's shape x pixel type is checked too: an image whose decoded pixels need
more bytes than the computer has (or its container's cgroup limit; a float64 RGB image takes 24
bytes a pixel) is refused before decoding (``ImageTooLargeError``).

Examples
--------
>>> import numpy as np, tempfile, os
>>> fn = os.path.join(tempfile.mkdtemp(), "labels.tif")
>>> _ = write_labels(fn, np.array([[0, 1], [2, 2]]), pixel_size_um=0.5)
>>> labels, pixel_size = read_labels(fn)
>>> labels.tolist(), pixel_size
([[0, 1], [2, 2]], 0.5)
>>> m = read_micrograph(fn, detect_databar=False)
>>> m.shape, m.pixel_size_um, m.calibration_source
((2, 2), 0.5, 'tiff-resolution')
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from micro_seg.databar import detect_databar as _detect_databar
from micro_seg.errors import (
    CalibrationError,
    CorruptFileError,
    ImageTooLargeError,
    InputFileNotFoundError,
    InvalidImageError,
    MicroSegError,
    UnsupportedFormatError,
)
from micro_seg.io_calibration import sem_magnification, tiff_calibration, validate_pixel_size

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "SUPPORTED_EXTENSIONS",
    "Micrograph",
    "read_micrograph",
    "write_labels",
    "read_labels",
    "labels_are_instances",
    "labels_source",
    "is_written_labels",
    "read_label_page",
    "max_pixels_limit",
    "check_output_folder",
]

#: Largest image (rows x cols, channels not counted) read without ``max_pixels=``.
DEFAULT_MAX_PIXELS = 1_200_000_000
#: Environment variable overriding :data:`DEFAULT_MAX_PIXELS`.
MAX_PIXELS_ENV = "MICRO_SEG_MAX_PIXELS"
#: File name extensions micro-seg reads (the content decides the actual format).
SUPPORTED_EXTENSIONS = (".tif", ".tiff", ".btf", ".png", ".jpg", ".jpeg", ".bmp")

_FORMAT_NAMES = {"tiff": "TIFF", "png": "PNG", "jpeg": "JPEG", "bmp": "BMP"}
_EXT_FORMAT = {".tif": "tiff", ".tiff": "tiff", ".btf": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp"}
_UNSUPPORTED_MAGIC = (
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"ZISRAWFILE", "Zeiss CZI file"),
    (b"\x89HDF", "HDF5 file"),
    (b"%PDF", "PDF document"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000 image"),
    (b"\xffO\xffQ", "JPEG 2000 codestream"),
)
_UNSUPPORTED_EXT = {
    ".czi": "Zeiss CZI", ".nd2": "Nikon ND2", ".lif": "Leica LIF", ".lsm": "Zeiss LSM",
    ".dm3": "Gatan DM3", ".dm4": "Gatan DM4", ".ser": "FEI SER", ".emd": "Velox EMD",
    ".vsi": "Olympus VSI", ".oib": "Olympus OIB", ".ims": "Imaris", ".mrc": "MRC",
    ".h5": "HDF5", ".gif": "GIF", ".webp": "WebP", ".jp2": "JPEG 2000", ".txt": "text",
    ".csv": "CSV table", ".pdf": "PDF", ".zip": "ZIP archive", ".npy": "NumPy array",
}
_PIL_LOCK = threading.Lock()


@dataclass
class Micrograph:
    """A micrograph: pixels, calibration, SEM data bar and metadata.

    Attributes
    ----------
    data : ndarray
        The full image, ``rows x cols`` or ``rows x cols x 3`` (RGB), native dtype
        (bool is returned as uint8 0/1, float16 as float32).
    pixel_size_um : float or None
        Micrometres per pixel; ``None`` when uncalibrated (results then stay in pixels).
    calibration_source : str or None
        ``"user"``, ``"ome"``, ``"fei"``, ``"zeiss-sem"``, ``"imagej"``,
        ``"tiff-resolution"`` or ``None``.
    databar_rows : int
        Rows of an SEM information band at the bottom, excluded by :attr:`analysis_data`.
    path : Path or None
        The file read.
    meta : dict
        ``format``, ``n_pages``, ``page``, ``is_grey_rgb``, ``calibration_notes``, ...

    Examples
    --------
    >>> import numpy as np
    >>> m = Micrograph(np.zeros((10, 4), np.uint8), None, None, databar_rows=3)
    >>> m.shape, m.analysis_data.shape
    ((10, 4), (7, 4))
    """

    data: np.ndarray
    pixel_size_um: float | None
    calibration_source: str | None
    databar_rows: int = 0
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the full image (rows, cols[, channels])."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def analysis_data(self) -> np.ndarray:
        """The image without the SEM data-bar rows (a view, not a copy)."""
        if self.databar_rows <= 0:
            return self.data
        return self.data[: self.data.shape[0] - self.databar_rows]

    @property
    def reader_warnings(self) -> list[str]:
        """What the reader noticed about the file (pages not read, name and content disagree, ...)."""
        return [str(w) for w in (self.meta or {}).get("warnings") or []]

    def release_pixels(self) -> None:
        """Drop the pixel array, keeping calibration and metadata, once nothing needs the pixels.

        For huge images: ``micro-seg segment`` releases them after inference,
        so that post-processing runs without them (a 16k x 16k 8-bit grey image
        is 268 MB).  ``data`` becomes an empty array of the same dtype
        (``shape`` then reports 0 rows); ``meta["released_shape"]`` keeps the
        shape the image had.

        Examples
        --------
        >>> import numpy as np
        >>> m = Micrograph(np.zeros((10, 4), np.uint8), 0.5, "user")
        >>> m.release_pixels()
        >>> m.data.shape, m.meta["released_shape"], m.pixel_size_um
        ((0, 4), (10, 4), 0.5)
        """
        self.meta = {**self.meta, "released_shape": self.shape}
        self.data = np.empty((0, *self.data.shape[1:]), self.data.dtype)  # not a view: that would keep the pixels


def analysis_pixels(image: Any) -> Any:
    """A :class:`Micrograph`'s ``analysis_data`` (its pixels without the SEM data bar), anything else as given; a
    Micrograph whose pixels were released (:meth:`Micrograph.release_pixels`) is an InvalidImageError naming its file
    (its empty array would be refused as 'image is empty', naming neither).

    >>> import numpy as np
    >>> m = Micrograph(np.zeros((10, 4), np.uint8), 0.5, "user", databar_rows=2, path="a.tif")
    >>> analysis_pixels(m).shape
    (8, 4)
    >>> m.release_pixels()
    >>> analysis_pixels(m)
    Traceback (most recent call last):
    ...
    micro_seg.errors.InvalidImageError: a.tif: its pixels were released (release_pixels, or segment_image(release_image=True)); read the file again
    """
    if not hasattr(image, "analysis_data"):
        return image
    released = (getattr(image, "meta", None) or {}).get("released_shape")
    if released is not None and image.data.size == 0:
        from micro_seg.errors import InvalidImageError

        raise InvalidImageError(f"{getattr(image, 'path', None) or 'micrograph'}: its pixels were released "
                                "(release_pixels, or segment_image(release_image=True)); read the file again")
    return image.analysis_data


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels``, else ``$MICRO_SEG_MAX_PIXELS``, else the default.

    Examples
    --------
    >>> max_pixels_limit(1000)
    1000
    """
    if max_pixels is not None:
        value: Any = max_pixels
        origin = "max_pixels"
    elif os.environ.get(MAX_PIXELS_ENV, "").strip():
        value = os.environ[MAX_PIXELS_ENV].strip()
        origin = MAX_PIXELS_ENV
    else:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value))
    except (TypeError, ValueError, OverflowError):
        limit = 0
    if limit <= 0:
        raise ImageTooLargeError(f"{origin}={value!r} is not a positive number of pixels")
    return limit


def _too_large(path: Any, rows: int, cols: int, limit: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{path}: image has {rows} x {cols} = {rows * cols:,} pixels, more than the limit of "
        f"{limit:,} (decompression-bomb guard); if you trust the file, raise the limit with the "
        f"{MAX_PIXELS_ENV} environment variable (`micro-seg info --max-pixels`, or max_pixels= in Python)"
    )


_CGROUP_ROOT = "/sys/fs/cgroup"
_PROC_SELF_CGROUP = "/proc/self/cgroup"


def _cgroup_memory_limit() -> int | None:
    """The smallest memory limit of this process's cgroup and its parents (a container's limit), or ``None``.

    cgroup v2 (``0::/path`` -> ``memory.max``) and v1 (the ``memory`` controller -> ``memory.limit_in_bytes``);
    "max" and v1's "no limit" (about 2**63) count as no limit. Anything unreadable counts as no limit.
    """
    try:
        with open(_PROC_SELF_CGROUP, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    places = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2 unified hierarchy
            places.append((os.path.join(_CGROUP_ROOT, "unified") if os.path.isdir(
                os.path.join(_CGROUP_ROOT, "unified")) else _CGROUP_ROOT, rel, "memory.max"))
        elif "memory" in controllers.split(","):
            places.append((os.path.join(_CGROUP_ROOT, "memory"), rel, "memory.limit_in_bytes"))
    limits = []
    for base, rel, name in places:
        rel = rel.strip("/")
        while True:  # the cgroup itself, then each parent up to the mount's root (limits are inherited)
            try:
                with open(os.path.join(base, rel, name), encoding="utf-8") as f:
                    text = f.read().strip()
                value = int(text)
            except (OSError, ValueError):
                value = None
            if value is not None and 0 < value < 2 ** 62:
                limits.append(value)
            if not rel:
                break
            rel = os.path.dirname(rel)
    return min(limits) if limits else None


def _physical_memory() -> int | None:
    """The memory this process may use, in bytes: the computer's physical memory, or a container's (cgroup)
    limit where that is smaller; ``None`` where the system says neither."""
    try:
        page, pages = int(os.sysconf("SC_PAGE_SIZE")), int(os.sysconf("SC_PHYS_PAGES"))
        total = page * pages if page > 0 and pages > 0 else None  # sysconf says -1 for "indeterminate"
    except (AttributeError, ValueError, OSError):
        total = None
    limit = _cgroup_memory_limit()
    if limit is not None and (total is None or limit < total):
        return limit
    return total


def _check_memory(path: Any, rows: int, cols: int, samples: int, itemsize: int, dtype: str) -> None:
    """Refuse, before decoding, an image whose pixels alone need more bytes than this process may use (see _physical_memory).

    The pixel limit counts rows x cols only; a float64 RGB image within it needs 24 bytes a pixel (28 GB at the
    limit): it would end in an out-of-memory error or the system's out-of-memory killer, after minutes of work.
    """
    need = rows * cols * max(1, samples) * max(1, itemsize)
    total = _physical_memory()
    if total and need > total:
        def size(n: float) -> str:
            return f"{n / 1e9:.3g} GB" if n >= 1e9 else f"{n / 1e6:.3g} MB"

        shape = f"{rows} x {cols}" + (f" x {samples}" if samples > 1 else "")
        raise ImageTooLargeError(
            f"{path}: the {shape} {dtype} image needs {size(need)} of memory to read, more than the {size(total)} "
            f"this computer (or its container's limit) allows; crop it or convert it to a smaller pixel type "
            f"(e.g. 8 or 16 bits) first")


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(_one_line(record.getMessage()))


@contextlib.contextmanager
def _captured(sink: list[str]) -> Iterator[None]:
    """Collect tifffile log records and Python warnings into ``sink`` (keeps stderr clean)."""
    logger = logging.getLogger("tifffile")
    handler = _ListHandler(sink)
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                sink.extend(_one_line(str(w.message)) for w in caught)
    finally:
        logger.removeHandler(handler)


def _sniff(head: bytes) -> str | None:
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM") and len(head) >= 18:
        return "bmp"
    return None


def _check_file(path: Path) -> str:
    """Validate the path and return the sniffed format (``"tiff"``, ``"png"``, ...)."""
    if not path.exists():
        raise InputFileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileNotFoundError(f"{path}: is a folder, not an image file")
    if not path.is_file():  # a named pipe would block the reader for ever; a device is no image either
        raise InputFileNotFoundError(f"{path}: is not a regular file (a pipe, socket or device), not an image file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as exc:
        raise InputFileNotFoundError(f"{path}: cannot be read ({_one_line(exc.strerror or exc)})") from None
    ext = path.suffix.lower()
    if size == 0:
        raise CorruptFileError(f"{path}: file is empty (0 bytes)")
    fmt = _sniff(head)
    if fmt is not None:
        return fmt
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise UnsupportedFormatError(
                f"{path}: {name} is not supported; micro-seg reads {', '.join(SUPPORTED_EXTENSIONS)} (export as TIFF)"
            )
    if ext in _EXT_FORMAT:
        name = _FORMAT_NAMES[_EXT_FORMAT[ext]]
        raise CorruptFileError(f"{path}: not a valid {name} file (unrecognised content, {size} bytes)")
    kind = _UNSUPPORTED_EXT.get(ext, f"'{ext}'" if ext else "extension-less")
    raise UnsupportedFormatError(
        f"{path}: {kind} files are not supported; micro-seg reads {', '.join(SUPPORTED_EXTENSIONS)} (export as TIFF)"
    )


# ----------------------------------------------------------------------------- TIFF

_AXIS_NAMES = {"Z": "depth", "T": "time", "C": "channel", "I": "page", "Q": "page", "R": "tile",
               "E": "lambda", "H": "lifetime", "A": "angle", "P": "phase", "L": "exposure",
               "V": "view", "M": "mosaic", "O": "other"}


def _is_reduced(page: Any) -> bool:
    """Whether a TIFF page is a reduced-resolution version of another (NewSubfileType bit 0: a preview / thumbnail)."""
    return bool(int(getattr(page, "subfiletype", 0) or 0) & 1)  # a TiffFrame has no tags: a page like its key page


def _first_full_resolution_page(tif: Any, n_pages: int) -> int:
    """The first page that is not a reduced-resolution preview (0 if every page is one)."""
    for i in range(n_pages):
        if not _is_reduced(tif.pages[i]):
            return i
    return 0


def _tiff_page_index(tif: Any, path: Path, page: int | None, n_pages: int) -> tuple[int, bool]:
    """Page to read and whether an ImageJ/OME 3-channel ``C`` axis forms an RGB image.

    ``page`` counts every page (IFD) of the file, reduced-resolution previews included; by default the first
    page that is not a reduced-resolution preview is read (a preview stored before the main image is skipped).
    """
    if page is not None:
        if not 0 <= page < n_pages:
            raise InvalidImageError(f"{path}: page {page} requested but the file has {n_pages} page(s) (0..{n_pages - 1})")
        return page, False
    main = _first_full_resolution_page(tif, n_pages)
    # tifffile makes a series of a preview stored first: the axes that matter are those of the main image's series
    series = next((s for s in tif.series if s.pages and not _is_reduced(s.pages[0])), None) if main else None
    series = series or (tif.series[0] if tif.series else None)
    if series is None:
        return main, False
    extra = [(ax, int(n)) for ax, n in zip(series.axes, series.shape) if ax not in "YXS" and int(n) > 1]
    named = [(ax, n) for ax, n in extra if ax not in "IQ"]
    if not named:
        shape = tuple(int(n) for n in series.shape)
        if len(shape) == 3 and series.axes[1:] == "YX" and shape[0] >= 16 and shape[1] >= 16 and shape[2] <= 8:
            # tifffile writes an (rows, cols, channels) array that is not RGB as rows pages of cols x channels
            raise InvalidImageError(
                f"{path}: {shape[0]} pages of {shape[1]} x {shape[2]} pixels: this looks like one {shape[0]} x "
                f"{shape[1]} image with {shape[2]} channels saved page by page; micro-seg reads grey or RGB images: "
                "save one channel per file (or choose a page with --page N if the pages really are images)")
        return main, False  # plain multi-page file: first full-resolution page, n_pages recorded
    if named == [("C", 3)] and len(extra) == 1 and series.axes.index("C") < series.axes.index("Y"):
        return 0, True
    dims = ", ".join(f"axis {ax} ({_AXIS_NAMES.get(ax, 'extra')}) has {n}" for ax, n in extra)
    raise InvalidImageError(
        f"{path}: image has more than 2 dimensions ({series.axes} {tuple(series.shape)}: {dims}); micro-seg "
        "analyses one 2-D image: save a single plane, or choose a page with page=N (CLI: --page N)"
    )


def _page_axes_to_yxs(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Reorder a decoded page to rows x cols[ x samples]."""
    if data.ndim != len(axes) or "Y" not in axes or "X" not in axes:
        raise InvalidImageError(f"{path}: unexpected page layout {axes} {data.shape}")
    for ax, n in zip(axes, data.shape):
        if ax not in "YXS" and n > 1:
            raise InvalidImageError(f"{path}: page has an extra axis {ax} of size {n}; micro-seg needs a 2-D image")
    data = data.reshape([n for ax, n in zip(axes, data.shape) if ax in "YXS"])
    axes = "".join(ax for ax in axes if ax in "YXS")
    return data.transpose([axes.index(ax) for ax in "YXS" if ax in axes])


def _read_tiff(path: Path, page: int | None, limit: int, user_px: float | None, meta: dict[str, Any],
               stored_values: bool = False) -> tuple[np.ndarray, bool, float | None, str | None]:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, struct.error, EOFError, ...
        raise CorruptFileError(f"{path}: not a readable TIFF file ({_one_line(exc)})") from None
    with tif:
        try:
            n_pages = len(tif.pages)
            _ = tif.series
        except Exception as exc:
            raise CorruptFileError(f"{path}: corrupt TIFF structure ({_one_line(exc)})") from None
        if n_pages == 0:
            raise CorruptFileError(f"{path}: TIFF file contains no images")
        index, channel_series = _tiff_page_index(tif, path, page, n_pages)
        if channel_series:
            meta["pages_merged"] = 3  # the three pages are the R, G, B channels of one image
        if page is None and index > 0:
            meta["previews_skipped"] = index  # pages 0 .. index-1: reduced-resolution previews
        # OME/shaped series make tifffile return later pages as TiffFrame (no tags of their own): read as a page
        pg = tif.pages[index].aspage()
        rows, cols = int(pg.imagelength), int(pg.imagewidth)
        meta.update(format="tiff", n_pages=n_pages, page=index, bigtiff=bool(tif.is_bigtiff),
                    compression=getattr(pg.compression, "name", str(pg.compression)),
                    photometric=getattr(pg.photometric, "name", str(pg.photometric)),
                    axes=tif.series[0].axes if tif.series else pg.axes)
        for flag in ("ome", "imagej", "fei", "sem", "shaped"):
            if getattr(tif, f"is_{flag}", False):
                meta.setdefault("flavours", []).append(flag)
        if rows == 0 or cols == 0:
            raise InvalidImageError(f"{path}: image is empty ({rows} x {cols} pixels)")
        if rows * cols > limit:
            raise _too_large(path, rows, cols, limit)
        if int(getattr(pg, "imagedepth", 1)) > 1:
            raise InvalidImageError(f"{path}: page is a 3-D volume (depth {pg.imagedepth}); micro-seg needs a 2-D image")
        samples = int(pg.samplesperpixel)
        photometric = int(pg.photometric)
        dtype = np.dtype(pg.dtype) if pg.dtype is not None else np.dtype(np.uint8)
        decoded = 3 if photometric == int(tifffile.PHOTOMETRIC.PALETTE) else samples * (3 if channel_series else 1)
        _check_memory(path, rows, cols, decoded, dtype.itemsize, dtype.name)
        if photometric == int(tifffile.PHOTOMETRIC.SEPARATED):
            raise InvalidImageError(f"{path}: CMYK (separated) TIFF is not supported; convert it to RGB or greyscale")
        extras = tuple(int(e) for e in (pg.extrasamples or ()))
        alpha_last = bool(extras) and extras[-1] in (1, 2) or (photometric == 2 and samples == 4)
        pages = [tif.pages[i].aspage() for i in range(3)] if channel_series else [pg]
        file_size = os.path.getsize(path)
        for p in pages:
            ends = [int(o) + int(c) for o, c in zip(p.dataoffsets, p.databytecounts)]
            if ends and max(ends) > file_size:
                raise CorruptFileError(
                    f"{path}: file is truncated (image data runs to byte {max(ends):,} but the file has {file_size:,} bytes)"
                )
        try:
            if channel_series:
                data = np.stack([_page_axes_to_yxs(p.asarray(), p.axes, path) for p in pages], axis=-1)
            else:
                data = _page_axes_to_yxs(pg.asarray(), pg.axes, path)
        except MicroSegError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise CorruptFileError(f"{path}: cannot decode the TIFF image data, truncated or corrupt ({_one_line(exc)})") from None
        if photometric == int(tifffile.PHOTOMETRIC.PALETTE) and pg.colormap is not None and data.ndim == 2:
            cmap = np.asarray(pg.colormap)
            rgb = np.moveaxis(cmap[:, data], 0, -1)
            data = (rgb // 257 if cmap.max() > 255 else rgb).astype(np.uint8)
            meta["palette_applied"] = True
        elif (photometric == int(tifffile.PHOTOMETRIC.MINISWHITE) and data.dtype.kind in "ui" and data.ndim == 2
              and not stored_values):  # a micrograph as it is shown; label values and masks stay as stored
            data = np.iinfo(data.dtype).max - data if data.dtype.kind == "u" else -data
            meta["inverted_miniswhite"] = True
        try:
            px, source, info = tiff_calibration(tif, pg, path=path)
        except CalibrationError as exc:
            if user_px is None:
                raise
            px, source, info = None, None, {"notes": [_one_line(exc)], "conflicts": []}
        meta["calibration_notes"] = info["notes"] + info["conflicts"]
        for conflict in info["conflicts"]:
            if user_px is None:  # the user's pixel size settles it (and is compared below)
                warnings.warn(conflict, stacklevel=2)
        magnification = sem_magnification(tif)
        if magnification is not None:
            meta["magnification"] = magnification
        if px is not None:
            meta["metadata_pixel_size_um"], meta["metadata_calibration_source"] = px, source
    return data, alpha_last, px, source


# ----------------------------------------------------------------------------- Pillow


_EXIF_ORIENTATION = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
                     5: "mirrored and rotated", 6: "rotated 90 degrees clockwise", 7: "mirrored and rotated",
                     8: "rotated 90 degrees counter-clockwise"}


def _read_pillow(path: Path, fmt: str, page: int | None, limit: int, meta: dict[str, Any]) -> tuple[np.ndarray, bool]:
    from PIL import Image, UnidentifiedImageError

    name = _FORMAT_NAMES[fmt]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit applies, not Pillow's
            try:
                im = Image.open(path)
            except Image.DecompressionBombError:
                # above Pillow's global guard: read the header again without it (under a lock,
                # restoring the guard at once) so our own, documented limit decides
                with _PIL_LOCK:
                    saved = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        im = Image.open(path)
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{path}: {_one_line(exc)}") from None
    except UnidentifiedImageError:
        raise CorruptFileError(f"{path}: not a readable {name} file (corrupt header)") from None
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a readable {name} file ({_one_line(exc)})") from None
    with im:
        cols, rows = im.size
        n_pages = int(getattr(im, "n_frames", 1) or 1)
        meta.update(format=fmt, n_pages=n_pages, page=page or 0, mode=im.mode)
        if "dpi" in im.info:
            meta["dpi"] = tuple(float(v) for v in im.info["dpi"])
        orientation = 1
        raw_exif = im.info.get("exif")  # from the header: im.getexif() would decode a PNG's pixel data here
        if raw_exif:
            try:
                exif = Image.Exif()
                exif.load(raw_exif)
                orientation = int(exif.get(0x0112, 1) or 1)
            except Exception:  # a broken EXIF block: the pixels are still readable
                orientation = 1
        if orientation != 1:  # viewers rotate / mirror the picture; the stored pixels (and so the labels) are not
            meta["exif_orientation"] = orientation
        if rows == 0 or cols == 0:
            raise InvalidImageError(f"{path}: image is empty ({rows} x {cols} pixels)")
        if rows * cols > limit:
            raise _too_large(path, rows, cols, limit)
        if page:
            if not 0 <= page < n_pages:
                raise InvalidImageError(f"{path}: page {page} requested but the file has {n_pages} page(s)")
            im.seek(page)
        colour_16 = _png_16bit_colour(path) if fmt == "png" and not page else None
        if colour_16:
            bands, itemsize = len(colour_16.split(";")[0]), 2
        else:
            bands = 4 if im.mode == "PA" else 3 if im.mode == "P" else len(im.getbands())
            itemsize = 2 if im.mode.startswith("I;16") else 4 if im.mode in ("I", "F") else 1
        _check_memory(path, rows, cols, bands, itemsize, f"{8 * itemsize}-bit")
        try:
            if colour_16:
                # Pillow keeps 16 bits only for grey: a 16-bit RGB / RGBA / grey + alpha PNG would lose its low byte
                meta["mode"] = colour_16
                data = _png_decode_16bit(path)
                return data, data.ndim == 3 and data.shape[2] in (2, 4)
            im.load()
            mode = im.mode
            if mode in ("P", "PA"):
                im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
                im = im.convert("RGB")
            elif mode == "La":
                im = im.convert("LA")
            data = np.asarray(im)
            key = im.info.get("transparency") if mode in ("1", "L", "I;16", "I", "RGB") else None
            if isinstance(key, int) and mode in ("1", "L") and fmt == "png":
                # a 1-, 2- or 4-bit grey PNG: Pillow scales the pixels to 0..255 (mode "1": False / True) and
                # gives its tRNS key unscaled (mode "1": 0 or 255), so compare at the scale of the pixels
                depth = _png_grey_depth(path)
                if mode == "1":
                    key = key != 0
                elif depth in (1, 2, 4):
                    key = key * (255 // (2 ** depth - 1))
            if isinstance(key, (bool, int, tuple)):  # a PNG tRNS colour key: pixels of that value are transparent
                hit = data == key if data.ndim == 2 else np.all(data == np.asarray(key, data.dtype), axis=-1)
                count = int(np.count_nonzero(hit))
                if count:
                    meta["transparent_fraction"] = count / hit.size
                    meta["transparent_key"] = int(key) if isinstance(key, bool) else key
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{path}: {_one_line(exc)}") from None
        except MemoryError:
            raise
        except Exception as exc:
            raise CorruptFileError(f"{path}: cannot decode the {name} image data, truncated or corrupt ({_one_line(exc)})") from None
        alpha_last = im.mode in ("RGBA", "LA")
    return data, alpha_last


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG's header (IHDR), or ``None`` when the file does not start with one."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _png_grey_depth(path: Path) -> int | None:
    """The bits per pixel of a greyscale PNG without alpha (IHDR colour type 0), else ``None``."""
    header = _png_header(path)
    return header[0] if header is not None and header[1] == 0 else None


def _png_16bit_colour(path: Path) -> str | None:
    """The mode (``"RGB;16"``, ``"LA;16"``, ``"RGBA;16"``) of a PNG whose header (IHDR) says 16 bits per sample
    with colour or alpha, else ``None``."""
    header = _png_header(path)
    if header is None or header[0] != 16:
        return None
    return {2: "RGB;16", 4: "LA;16", 6: "RGBA;16"}.get(header[1])


def _png_decode_16bit(path: Path) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.png_decode(path.read_bytes()))


def pillow_pixels(im: Any, path: Path) -> np.ndarray:
    """The pixels of ``im``, a Pillow image opened from ``path``, as stored: Pillow keeps only the high byte of a
    16-bit RGB / RGBA / grey + alpha PNG (labels 1..255 read as 0), so such a PNG is decoded at 16 bits."""
    if im.format == "PNG" and _png_16bit_colour(path):
        return _png_decode_16bit(path)
    return np.asarray(im)


# ----------------------------------------------------------------------------- common


def _grey_rgb(data: np.ndarray, lossy: bool) -> bool:
    tol = 0
    if lossy:
        span = float(np.iinfo(data.dtype).max) if data.dtype.kind in "ui" else float(np.ptp(data)) or 1.0
        tol = 0.02 * span
    for start in range(0, data.shape[0], 512):
        block = data[start : start + 512].astype(np.float64 if data.dtype.kind == "f" else np.int64)
        if np.abs(block[..., 0] - block[..., 1]).max() > tol or np.abs(block[..., 1] - block[..., 2]).max() > tol:
            return False
    return True


def _transparent_fraction(alpha: np.ndarray) -> float:
    """Fraction of pixels less opaque than the most opaque ones (0 when the alpha channel is constant: unused).

    >>> a = np.full((4, 5), 255, np.uint8); a[:2, :2] = 0
    >>> _transparent_fraction(a), _transparent_fraction(np.zeros((4, 5), np.uint8))
    (0.2, 0.0)
    """
    from micro_seg.measure.labels import row_blocks

    top = alpha.max()
    if alpha.min() == top:
        return 0.0
    return sum(int(np.count_nonzero(alpha[rows] < top)) for rows in row_blocks(alpha)) / alpha.size


def _finish(data: np.ndarray, path: Path, alpha_last: bool, meta: dict[str, Any]) -> np.ndarray:
    """Channel, dtype and finiteness checks shared by all formats."""
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim == 3:
        channels = data.shape[2]
        if channels in (2, 4) and alpha_last:
            meta["transparent_fraction"] = _transparent_fraction(data[..., -1])
            data = data[..., :-1]
            meta["dropped_alpha"] = True
            if data.shape[2] == 1:
                data = data[..., 0]
        elif channels != 3:
            raise InvalidImageError(
                f"{path}: image has {channels} channels; micro-seg reads greyscale, RGB or RGB + alpha "
                "(save the channel to analyse as a greyscale image)"
            )
    if data.ndim not in (2, 3):
        raise InvalidImageError(f"{path}: image has {data.ndim} dimensions {data.shape}; micro-seg needs a 2-D image")
    if 0 in data.shape:
        raise InvalidImageError(f"{path}: image is empty ({data.shape[0]} x {data.shape[1]} pixels)")
    kind = data.dtype.kind
    if kind == "c":
        raise InvalidImageError(f"{path}: complex-valued pixels ({data.dtype}) are not supported; save the magnitude")
    if kind == "b":
        data = data.astype(np.uint8)
        meta["converted_from"] = "bool"
    elif kind == "f" and data.dtype.itemsize < 4:
        data = data.astype(np.float32)
        meta["converted_from"] = "float16"
    elif kind not in "uif":
        raise InvalidImageError(f"{path}: pixel type {data.dtype} is not supported")
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        bad = int(finite.size - np.count_nonzero(finite))
        if bad:
            n_nan = int(np.count_nonzero(np.isnan(data)))
            raise InvalidImageError(
                f"{path}: {bad} of {data.size} pixels are not finite ({n_nan} NaN, {bad - n_nan} infinite); "
                "replace them before analysis"
            )
    return data


def _check_databar_rows(value: Any, path: Path) -> None:
    """Refuse a ``databar_rows`` that is not a whole number >= 0, naming the file."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidImageError(f"{path}: databar_rows must be a whole number of rows >= 0 (0 = no data bar), "
                                f"got {value!r}")


def read_micrograph(
    path: str | os.PathLike[str],
    *,
    pixel_size_um: float | None = None,
    max_pixels: int | None = None,
    page: int | None = None,
    detect_databar: bool = True,
    stored_values: bool = False,
    databar_rows: int | None = None,
) -> Micrograph:
    """Read a micrograph with its calibration and SEM data bar.

    Parameters
    ----------
    path : str or path-like
        TIFF (incl. BigTIFF, OME-TIFF, ImageJ), PNG, JPEG or BMP file.
    pixel_size_um : float, optional
        Micrometres per pixel; overrides any calibration in the file (source ``"user"``).
    max_pixels : int, optional
        Refuse images with more rows x cols than this, before decoding. Default:
        ``$MICRO_SEG_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS` (1.2e9).
    page : int, optional
        Page (IFD) to read, counting every page of the file from 0, reduced-resolution
        previews included (``meta["n_pages"]`` of them). By default the first page of a
        plain multi-page file that is not a reduced-resolution preview (TIFF
        NewSubfileType bit 0; ``meta["previews_skipped"]`` counts the previews before it);
        files with named stack axes (Z, T, more channels) need an explicit page.
    detect_databar : bool, optional
        Look for an SEM information band at the bottom (see :mod:`micro_seg.databar`).
    databar_rows : int, optional
        Rows of the data bar, given by the user instead of detected (the detector
        can miss a bar or take real microstructure for one): ``0`` = no bar, ``N`` =
        exactly the bottom N rows (``0 <= N <`` the image's rows).  ``meta["databar_source"]``
        says ``"user"`` then, ``"detected"`` when the detector ran.
    stored_values : bool, optional
        Keep the pixel values as stored. By default a TIFF with photometric
        MINISWHITE (0 = white) is inverted so that the image reads as it is
        displayed (``meta["inverted_miniswhite"]``); label images and masks
        need their stored values (:func:`read_label_page` sets this).

    Returns
    -------
    Micrograph
        ``meta`` holds ``format``, ``n_pages``, ``page``, ``calibration_notes``,
        ``is_grey_rgb`` (3 channels equal, within JPEG noise, outside the data
        bar: the caller may convert to grey) and, where relevant,
        ``dropped_alpha``, ``metadata_pixel_size_um`` and
        ``metadata_calibration_source`` (calibration found in the file, kept
        when ``pixel_size_um`` overrides it), ``magnification`` (Zeiss SEM),
        ``warnings`` (reader messages, e.g. file name and content disagree).

    Raises
    ------
    InputFileNotFoundError, UnsupportedFormatError, CorruptFileError,
    InvalidImageError, ImageTooLargeError, CalibrationError

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> fn = os.path.join(tempfile.mkdtemp(), "a.tif")
    >>> tifffile.imwrite(fn, np.zeros((64, 64), "uint16"), resolution=(25400 / 0.2, 25400 / 0.2), resolutionunit="INCH")
    >>> m = read_micrograph(fn)
    >>> m.shape, round(m.pixel_size_um, 6), m.calibration_source, m.databar_rows
    ((64, 64), 0.2, 'tiff-resolution', 0)
    >>> read_micrograph(fn, pixel_size_um=0.5).calibration_source
    'user'
    >>> m = read_micrograph(fn, databar_rows=10)
    >>> m.databar_rows, m.analysis_data.shape, m.meta["databar_source"]
    (10, (54, 64), 'user')
    """
    path = Path(path)
    if databar_rows is not None:
        _check_databar_rows(databar_rows, path)
    user_px = None if pixel_size_um is None else validate_pixel_size(pixel_size_um, source="user", path=path)
    limit = max_pixels_limit(max_pixels)
    fmt = _check_file(path)
    meta: dict[str, Any] = {}
    diagnostics: list[str] = []
    px: float | None = None
    source: str | None = None
    with _captured(diagnostics):
        if fmt == "tiff":
            data, alpha_last, px, source = _read_tiff(path, page, limit, user_px, meta, stored_values)
        else:
            data, alpha_last = _read_pillow(path, fmt, page, limit, meta)
            meta["calibration_notes"] = [f"{_FORMAT_NAMES[fmt]} files carry no trusted calibration"]
    if meta.get("exif_orientation"):
        o = meta["exif_orientation"]
        diagnostics.append(f"the file's EXIF orientation is {o} (viewers show it "
                           f"{_EXIF_ORIENTATION.get(o, 'transformed')}); micro-seg reads the pixels as stored, so "
                           "labels and overlays follow the stored orientation, not what a photo viewer shows")
    n_pages = int(meta.get("n_pages", 1))
    skipped = int(meta.get("previews_skipped", 0))
    if page is None and skipped:
        which = "page 0 is a reduced-resolution preview" if skipped == 1 else \
            f"pages 0-{skipped - 1} are reduced-resolution previews"
        diagnostics.append(f"the file holds {n_pages} pages; page {skipped} is read, the first full-resolution image "
                           f"({which}, skipped; the command line's --page N, or page=N in Python, counts every page "
                           "and reads others)")
    elif page is None and n_pages > max(1, int(meta.get("pages_merged", 1))):
        axes = f" (axes {meta['axes']})" if meta.get("axes") else ""
        diagnostics.append(f"the file holds {n_pages} pages{axes}; only page 0 is read (the command line's --page N, or page=N in Python, reads others)")
    ext_fmt = _EXT_FORMAT.get(path.suffix.lower())
    if ext_fmt and ext_fmt != fmt:
        diagnostics.append(f"file name says {_FORMAT_NAMES[ext_fmt]} but the content is {_FORMAT_NAMES[fmt]}")
    data = _finish(data, path, alpha_last, meta)
    if meta.get("transparent_fraction"):
        how = (f"the file marks the value {meta['transparent_key']} as transparent, but micro-seg analyses them"
               if "transparent_key" in meta else "micro-seg drops the alpha channel and analyses them")
        diagnostics.append(f"{100 * meta['transparent_fraction']:.3g} % of the pixels are (partly) transparent: "
                           f"{how} as image pixels, so they enter every "
                           "phase fraction, count and density (crop them away, or fill them, before measuring)")
    file_px = meta.get("metadata_pixel_size_um")
    if user_px is not None and file_px is not None and abs(user_px / file_px - 1) > 0.01:
        diagnostics.append(
            f"the pixel size given ({user_px:.6g} um/pixel) overrides the file's own ({file_px:.6g} um/pixel, from "
            f"{meta.get('metadata_calibration_source')}), {max(user_px, file_px) / min(user_px, file_px):.3g} x "
            "different: check which is right")
    if diagnostics:
        meta["warnings"] = list(dict.fromkeys(diagnostics))[:20]
    if user_px is not None:
        px, source = user_px, "user"
    if databar_rows is not None:
        if databar_rows >= data.shape[0]:
            raise InvalidImageError(f"{path}: a data bar of {databar_rows} rows does not fit an image of "
                                    f"{data.shape[0]} rows (give 0 to {data.shape[0] - 1}, or auto to detect it)")
        rows = int(databar_rows)
        meta["databar_source"] = "user"
    else:
        rows = int(_detect_databar(data)) if detect_databar else 0
        if detect_databar:
            meta["databar_source"] = "detected"
    # grey-RGB test on the analysed area: SEM data bars often carry a coloured logo
    lossy = meta.get("format") == "jpeg" or "JPEG" in str(meta.get("compression", "")).upper()
    meta["is_grey_rgb"] = bool(data.ndim == 3 and _grey_rgb(data[: data.shape[0] - rows], lossy))
    return Micrograph(data, px, source, databar_rows=rows, path=path, meta=meta)


# ----------------------------------------------------------------------------- labels


def _label_dtype(labels: np.ndarray, path: Path, stored_as: np.dtype | None = None) -> np.ndarray:
    """Labels as the smallest integer type that holds them; ``stored_as`` is the file's float type if it was
    widened on reading (float16 is read as float32)."""
    if labels.dtype.kind == "b":
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        from micro_seg.measure.labels import whole_float_labels

        labels = whole_float_labels(labels, str(path), stored_as)
    if labels.dtype.kind not in "ui":
        raise InvalidImageError(f"{path}: label image must be integer, got {labels.dtype}")
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if lo < 0:  # no measurement takes them: 0 is unlabelled / matrix, classes and objects are 1, 2, ...
        raise InvalidImageError(f"{path}: label values must be >= 0 (0 = unlabelled), got {lo}")
    for dtype in (np.uint8, np.uint16, np.uint32, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            if lo >= 0 and labels.dtype.kind == "i" and np.dtype(dtype).itemsize == labels.dtype.itemsize:
                return labels.view(dtype)  # same bits: no copy of a huge label image
            return labels.astype(dtype, copy=False)
    raise InvalidImageError(f"{path}: label values {lo}..{hi} do not fit in 64 bits")


def check_output_folder(path: str | os.PathLike[str] | None, name: str) -> None:
    """Refuse, before any work, an output folder that cannot be one; ``name`` is how the user gave it.

    ``None`` (an optional folder not given) passes.

    The folder may exist or not; the deepest part of its path that exists must
    be a folder the user can write to, and the folder must really be creatable
    with a file in it (tried, then undone).  Commands call this first so that a
    run never fails at its end for want of a place to write.

    Raises
    ------
    OutputPathError
        ``path`` is a file, a file stands on its path, or the folder is not writable.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     try:
    ...         check_output_folder(Path(f.name) / "sub", "--out")
    ...     except ValueError as exc:
    ...         print(str(exc).split(": ", 1)[1].split(":")[0])
    --out cannot be created
    """
    from micro_seg.errors import OutputPathError

    if path is None:
        return
    out = Path(path)
    for p in (out, *out.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            if p == out:
                raise OutputPathError(f"{path}: {name} is an existing file, not a folder")
            raise OutputPathError(f"{path}: {name} cannot be created: {p} is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"{path}: {name} cannot be written: permission denied on {p}")
        break
    # permissions can pass where nothing can be made (/proc, a read-only mount, root's view): try it, then undo it
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputPathError(f"{path}: {name} cannot be created or written there ({exc.strerror or exc})") from None
    finally:
        for p in created:  # deepest first: leave the disk as it was
            try:
                os.rmdir(p)
            except OSError:
                pass


def write_labels(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    classes: Sequence[str] | None = None,
    source: str | os.PathLike[str] | None = None,
    instances: bool = False,
) -> Path:
    """Write a 2-D label image as a deflate-compressed TIFF that keeps the calibration.

    The pixel size goes into the TIFF resolution tags in pixels per centimetre
    (read by ImageJ/Fiji, GIMP, tifffile and :func:`read_micrograph`) and, exactly,
    into a JSON image description together with ``classes``. The smallest
    unsigned integer type that holds the labels is used. The file is written
    to a temporary name in the same folder and renamed, so readers never see a
    half-written file.

    Parameters
    ----------
    path : str or path-like
        Output ``.tif`` file (its folder must exist).
    labels : ndarray
        2-D integer (or bool, or whole-number float) label image, values >= 0 (0 = unlabelled).
    pixel_size_um : float, optional
        Micrometres per pixel.
    classes : sequence of str, optional
        Class names, ``classes[i]`` for pixel value ``i``.
    source : path-like, optional
        The micrograph the labels were made from, recorded in the description
        (:func:`labels_source` reads it back).
    instances : bool
        The labels are object instances (each grain, pore ... its own number), not classes: recorded, so that
        ``micro-seg train`` does not read them as class values (:func:`labels_are_instances`).

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> fn = os.path.join(tempfile.mkdtemp(), "l.tif")
    >>> write_labels(fn, np.eye(3, dtype=int), pixel_size_um=0.25, classes=["matrix", "pore"]).name
    'l.tif'
    """
    import tifffile

    from micro_seg.measure._units import as_input_array

    path = Path(path)
    arr = as_input_array(labels, str(path))  # a masked array's mask would be dropped: its pixels written as labels
    if arr.ndim != 2 or 0 in arr.shape:
        raise InvalidImageError(f"{path}: label image must be 2-D and non-empty, got shape {arr.shape}")
    arr = _label_dtype(arr, path)
    px = None if pixel_size_um is None else validate_pixel_size(pixel_size_um, source="argument", path=path)
    if not path.parent.is_dir():
        raise InputFileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    info: dict[str, Any] = {"pixel_size_um": px}
    if classes is not None:
        if isinstance(classes, (str, bytes)):  # its characters were recorded as the names: "matrix" -> m, a, t, ...
            raise InvalidImageError(f"{path}: classes={classes!r}: a string, not a sequence of class names "
                             f"(e.g. {[classes]!r})")
        info["classes"] = [str(c) for c in classes]
    if source is not None:
        info["source"] = str(Path(source).resolve())
    if instances:
        info["kind"] = "instances"
    kwargs: dict[str, Any] = {"compression": "zlib", "metadata": {"micro_seg": info}}
    if px is not None:
        kwargs.update(resolution=(1e4 / px, 1e4 / px), resolutionunit="CENTIMETER")
    tmp = _temporary_name(path)
    try:
        tifffile.imwrite(tmp, arr, **kwargs)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputFileNotFoundError(f"{path}: cannot write ({_one_line(exc.strerror or exc)})") from None
    finally:
        try:
            tmp.unlink()
        except OSError:  # renamed (the usual case), or never made (its exists() raised for a name too long)
            pass
    return path


def _temporary_name(path: Path) -> Path:
    """``.<name>.<pid>.<8 hex>.tmp`` beside ``path``, the name part cut (its suffix kept) where the whole would pass
    the 255 bytes a file name may have: the labels of a long image name are written whenever their own name fits.

    >>> len(_temporary_name(Path("/out") / ("晶" * 80 + "_labels.tif")).name.encode()) <= 255
    True
    """
    tail = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    stem = path.stem
    while stem and len(os.fsencode(f".{stem}{path.suffix}{tail}")) > 255:
        stem = stem[:-1]
    return path.with_name(f".{stem}{path.suffix}{tail}")


#: The class schema of a training folder (napari Annotate writes it next to ``images/`` and ``labels/``;
#: ``micro-seg train`` reads its names): ``{"classes": [...], ...}``, label value i = classes[i - 1].
CLASS_SCHEMA_FILE = "classes.json"


def labels_classes(path: str | os.PathLike[str]) -> list[str] | None:
    """The class names a :func:`write_labels` file records (``classes[i]`` for pixel value ``i``), if any.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> fn = write_labels(os.path.join(tempfile.mkdtemp(), "c.tif"), np.eye(2, dtype=int), classes=["ferrite", "pearlite"])
    >>> labels_classes(fn)
    ['ferrite', 'pearlite']
    """
    info = _micro_seg_description(Path(path)) if Path(path).suffix.lower() in (".tif", ".tiff") else None
    value = info.get("classes") if info else None
    return [str(c) for c in value] if isinstance(value, list) and value else None


def labels_are_instances(path: str | os.PathLike[str]) -> bool:
    """Whether a :func:`write_labels` file records object instances (grains, pores: each its own number).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> labels_are_instances(write_labels(os.path.join(d, "g.tif"), np.eye(2, dtype=int), instances=True))
    True
    >>> labels_are_instances(write_labels(os.path.join(d, "c.tif"), np.eye(2, dtype=int), classes=["a", "b"]))
    False
    """
    info = _micro_seg_description(Path(path)) if Path(path).suffix.lower() in (".tif", ".tiff") else None
    return bool(info) and info.get("kind") == "instances"


def labels_source(path: str | os.PathLike[str]) -> str | None:
    """The micrograph a :func:`write_labels` file was made from (absolute path), if it recorded one.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> fn = write_labels(os.path.join(d, "a_labels.tif"), np.ones((2, 2)), source=os.path.join(d, "a.png"))
    >>> os.path.basename(labels_source(fn)), labels_source(write_labels(os.path.join(d, "b.tif"), np.ones((2, 2))))
    ('a.png', None)
    """
    info = _micro_seg_description(Path(path))
    value = info.get("source") if info else None
    return str(value) if value is not None else None


def is_written_labels(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a label image :func:`write_labels` wrote (``segment``'s labels, napari's File > Save
    of a Labels layer, a training folder's labels): a TIFF whose micro-seg description is not that of another
    micro-seg output (``kind``, e.g. the float ``probabilities``); grain or defect instance labels (``kind``
    ``instances``, :func:`labels_are_instances`) are label images too.

    Examples
    --------
    >>> import numpy as np, tempfile, os, tifffile
    >>> d = tempfile.mkdtemp()
    >>> tifffile.imwrite(os.path.join(d, "img.tif"), np.zeros((2, 2), "uint8"))
    >>> is_written_labels(write_labels(os.path.join(d, "l.tif"), np.eye(2, dtype=int))), is_written_labels(os.path.join(d, "img.tif"))
    (True, False)
    >>> is_written_labels(write_labels(os.path.join(d, "g.tif"), np.eye(2, dtype=int), instances=True))
    True
    """
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return False
    info = _micro_seg_description(Path(path))
    return info is not None and info.get("kind") in (None, "instances")


def _palette_indices(path: Path, page: int, shape: tuple) -> np.ndarray:
    """The palette indices of page ``page`` of an indexed TIFF / PNG / GIF (shape checked against ``shape``)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                data = tif.pages[page].aspage().asarray()
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.seek(page)
                data = np.asarray(im)
    except Exception as exc:  # it was read once already: anything here is a corrupt file
        raise CorruptFileError(f"{path}: cannot read the palette indices ({_one_line(exc)})") from None
    if data.shape[:2] != tuple(shape) or data.ndim != 2:
        raise InvalidImageError(f"{path}: palette image of shape {data.shape}, expected {tuple(shape)}")
    return data


def read_labels(path: str | os.PathLike[str]) -> tuple[np.ndarray, float | None]:
    """Read a label image and its pixel size (micrometres, or ``None``).

    Accepts files from :func:`write_labels` (exact pixel size from its JSON
    description) and any greyscale integer image :func:`read_micrograph` reads;
    an RGB image with three equal channels is reduced to one channel. Values are
    read as stored: a MINISWHITE TIFF is not inverted, a palette image gives its indices.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> fn = os.path.join(tempfile.mkdtemp(), "l.tif")
    >>> _ = write_labels(fn, np.full((2, 3), 7), pixel_size_um=0.1)
    >>> labels, px = read_labels(fn)
    >>> labels.dtype.name, labels.shape, px
    ('uint8', (2, 3), 0.1)
    """
    data, px, _ = read_label_page(path)
    return data, px


def read_label_page(path: str | os.PathLike[str], page: int | None = None,
                    pixel_size_um: float | None = None) -> tuple[np.ndarray, float | None, Micrograph]:
    """:func:`read_labels` for any ``page`` of a multi-page file, also returning the :class:`Micrograph` read.

    With ``pixel_size_um`` (a user's value) the file's calibration is not needed: a broken calibration tag
    is a reader note, not an error, and the pixel size returned is the file's own where it has a valid one.
    """
    # stored_values: a MINISWHITE label image or mask holds its labels as stored, not inverted for display
    m = read_micrograph(path, detect_databar=False, page=page, pixel_size_um=pixel_size_um, stored_values=True)
    data = m.data
    if m.meta.get("palette_applied") or m.meta.get("mode") == "P":
        # an indexed (palette) image, the usual label export of annotation tools: its labels are the indices,
        # not the display colours the micrograph reader turns them into
        data = _palette_indices(m.path or Path(str(path)), m.meta.get("page") or 0, data.shape[:2])
    if data.ndim == 3:
        if not m.meta.get("is_grey_rgb"):
            raise InvalidImageError(f"{m.path}: label image must be single-channel, got {data.shape[2]} different channels")
        data = data[..., 0]
    stored_as = np.float16 if m.meta.get("converted_from") == "float16" else None
    data = _label_dtype(data, m.path or Path(str(path)), stored_as)
    if pixel_size_um is not None:
        return data, m.meta.get("metadata_pixel_size_um"), m
    px = m.pixel_size_um
    if m.meta.get("format") == "tiff":
        exact = _micro_seg_description(m.path)
        if exact is not None and exact.get("pixel_size_um") is not None:
            px = validate_pixel_size(exact["pixel_size_um"], source="micro-seg description", path=m.path)
    return data, px, m


def _micro_seg_description(path: Path | None) -> dict[str, Any] | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shaped = tif.shaped_metadata or ()
    except Exception:
        return None
    for entry in shaped:
        if isinstance(entry, dict) and isinstance(entry.get("micro_seg"), dict):
            return entry["micro_seg"]
    return None
