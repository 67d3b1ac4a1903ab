"""Image-quality measures for quality control: focus, clipping, contrast.

These are no-reference measures computed from the pixels alone, so they work
on any micrograph before (or without) segmentation:

``blur``
    the *blur effect* of Crete-Roffet et al. (2007), "The Blur Effect:
    perception and estimation with a new no-reference perceptual blur metric",
    Proc. SPIE 6492 (:func:`skimage.measure.blur_effect`): 0 = sharp, 1 =
    fully blurred.  It compares the image with a re-blurred copy of itself, so
    it does not depend on brightness or contrast.  Well-focused micrographs
    typically score 0.15-0.35.  Pixel noise would read as fine detail (a
    defocused but noisy image scored *sharper* than the focused original), so
    the noise is estimated first (:func:`noise_sd`) and the image lightly
    smoothed in proportion to it before the measure; an image whose grey range
    is no larger than a few noise levels has no structure to be sharp and
    scores 1.
``laplacian_sharpness``
    variance of the Laplacian divided by the variance of the image (a
    contrast-normalised "variance of Laplacian"); reported for information.
``clipped_low_fraction`` / ``clipped_high_fraction``
    fraction of pixels at the bottom / top of the detector's full scale
    (black clipping / saturation).
``dynamic_range``
    ``(p99 - p1) / full scale``: the fraction of the available grey range
    the image uses (the definition of :func:`skimage.exposure.is_low_contrast`).

The full scale of an integer image is its dtype range, except for unsigned
types wider than 8 bits, whose bit depth is inferred from the maximum value
(a 12-bit detector stores 0..4095 in uint16).  Float images in [0, 1] use
[0, 1]; other float images have no known scale: clipping and contrast are not measured (NaN), and QC
says why.  Signed integer images without negative values are read as unsigned data of the same width.

Colour images are converted to grey (mean of the colour channels; an alpha
channel is dropped).  Large images are measured on a central crop of at most
``MAX_SIDE`` pixels per side for the blur measures (they are local measures).

Examples
--------
>>> import numpy as np
>>> from micro_seg.quality import assess_image
>>> rng = np.random.default_rng(0)
>>> img = np.kron(rng.integers(0, 256, (8, 8)), np.ones((8, 8))).astype(np.uint8)  # sharp-edged blocks
>>> q = assess_image(img)
>>> q.blur < 0.3, round(q.dynamic_range, 2) > 0.9
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from micro_seg.errors import InvalidImageError

__all__ = [
    "ImageQuality",
    "assess_image",
    "blur_score",
    "clipping_fractions",
    "dynamic_range",
    "full_scale",
    "laplacian_sharpness",
    "noise_sd",
    "to_gray",
    "MAX_SIDE",
]

#: Largest side (pixels) the blur measures look at (central crop beyond it).
MAX_SIDE = 2048

#: Gaussian sigma (pixels) of the smoothing before the blur effect, per unit of
#: noise / grey range (p1..p99): noise at 5 % of the range -> sigma 0.4.
NOISE_SMOOTHING = 8.0

#: An image whose p1..p99 grey range is at most this many noise standard
#: deviations holds no structure (pure noise spans about 4.7).
MIN_RANGE_IN_NOISE = 6.0


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D float64 grey image (mean of colour channels, alpha dropped).

    Parameters
    ----------
    image : ndarray
        ``(rows, cols)``, ``(rows, cols, 3)`` or ``(rows, cols, 4)``, any
        numeric dtype.

    Returns
    -------
    ndarray of float64, shape (rows, cols)

    Raises
    ------
    InvalidImageError
        Wrong number of dimensions, empty image or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> float(to_gray(np.full((4, 4, 3), 9, np.uint8))[0, 0])
    9.0
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        channels = arr.shape[-1]
        keep = 3 if channels == 4 else (1 if channels == 2 else channels)
        arr = arr[..., :keep].astype(np.float64).mean(axis=-1)
    elif arr.ndim != 2:
        raise InvalidImageError(f"expected a 2-D grey or (rows, cols, channels) colour image, got shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 3:
        raise InvalidImageError(f"image of shape {arr.shape} is too small for quality checks (>= 3 x 3 pixels)")
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    out = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise InvalidImageError("image contains NaN or infinite values")
    return out


#: Why clipping and contrast are not measured on a float image outside 0..1 (its grey scale is unknown).
NO_SCALE_REASON = ("a floating-point image with values outside 0..1 has no known grey scale, so its clipping and "
                   "contrast cannot be judged: save it as 8/16-bit integers or scaled to 0..1")


def full_scale(image: np.ndarray) -> tuple[float, float] | None:
    """Bottom and top of the grey scale the image was recorded on, or None when it is unknown (a floating-point
    image with values outside 0..1: its own minimum and maximum would make every such image look full-range).

    Signed integer images without negative values are read as unsigned data of the same width (cameras and
    converters store 12-bit data as int16), with the same bit-depth inference.

    Examples
    --------
    >>> import numpy as np
    >>> full_scale(np.array([[0, 4000]], np.uint16))   # 12-bit data
    (0.0, 4095.0)
    >>> full_scale(np.array([[0, 4000]], np.int16))    # the same data stored signed
    (0.0, 4095.0)
    >>> full_scale(np.array([[0.2, 0.9]]))
    (0.0, 1.0)
    >>> full_scale(np.array([[100.0, 120.0]])) is None
    True
    """
    arr = np.asarray(image)
    dtype = arr.dtype
    if dtype == bool:
        return 0.0, 1.0
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        signed = np.issubdtype(dtype, np.signedinteger)
        low = int(arr.min()) if arr.size else 0
        top = int(arr.max()) if arr.size else 0
        value_bits = info.bits - 1 if signed else info.bits  # int16 holds 0..32767 at most
        # a few small negatives (a dark-subtracted detector) do not make signed data full-range
        if info.bits > 8 and (low >= 0 or (signed and -low <= max(16, top // 64))):
            for bits in (8, 10, 12, 14, 15, 16, 20, 24, 31, 32, 63, 64):
                if bits <= value_bits and top <= 2**bits - 1:
                    return (min(0.0, float(low)), float(2**bits - 1))
        if signed and low >= 0:
            return 0.0, float(info.max)  # int8 without negatives: 0..127
        return float(info.min), float(info.max)
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return None


def _grey_and_scale(image: np.ndarray) -> tuple[np.ndarray, tuple[float, float] | None]:
    arr = np.asarray(image)
    return to_gray(arr), full_scale(arr[..., :3] if arr.ndim == 3 and arr.shape[-1] == 4 else arr)


def _central_crop(gray: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    rows, cols = gray.shape
    r0 = max(0, (rows - max_side) // 2)
    c0 = max(0, (cols - max_side) // 2)
    return gray[r0 : r0 + max_side, c0 : c0 + max_side]


def noise_sd(image: np.ndarray) -> float:
    """Standard deviation of the pixel noise, robust to edges (Immerkaer 1996).

    The image is filtered with the difference of two Laplacians (which
    removes smooth shading and most edges) and the noise level read from the
    median absolute response, so the edges that are left count little.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).normal(100, 5, (256, 256))
    >>> round(noise_sd(img))
    5
    >>> noise_sd(np.full((8, 8), 7.0))
    0.0
    """
    gray = to_gray(image)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = ndi.convolve(gray, kernel, mode="reflect")[1:-1, 1:-1]
    return float(np.median(np.abs(response)) / 0.6745 / 6.0)  # 6 = norm of the kernel


def blur_score(image: np.ndarray, *, h_size: int = 11) -> float:
    """Blur effect (0 = sharp, 1 = blurred) of Crete-Roffet et al. (2007), robust to pixel noise.

    Noise would count as fine detail, so the image is first smoothed with a
    Gaussian of sigma ``NOISE_SMOOTHING * noise / (p99 - p1)`` pixels (the
    noise level of :func:`noise_sd` relative to the grey range; a clean image
    is measured as it is).  An image whose grey range is at most
    ``MIN_RANGE_IN_NOISE`` noise levels (flat, or flat but for noise or a few
    odd pixels) has no structure and scores 1, as a flat image.

    Limits: the noise level is read from pixel-scale detail, so aliased
    hard-edged textures only a few pixels across (binarised or rendered
    images: 4-px checkerboards, 8-px diagonal lamellae) are taken for noise
    and score 1 (a false *review*, never a false pass); and a defocused image
    with strong noise can still score below a 0.45 limit.

    Parameters
    ----------
    image : ndarray
        Grey or colour image, any dtype.
    h_size : int, optional
        Size of the re-blurring filter (the reference uses 11).

    Returns
    -------
    float
        NaN (not measured) for an image 3 pixels high or wide.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> img = np.kron(np.random.default_rng(1).random((8, 8)), np.ones((8, 8)))  # sharp-edged blocks
    >>> blur_score(img) < blur_score(ndi.gaussian_filter(img, 2))
    True
    >>> blur_score(img + np.random.default_rng(2).normal(0, 0.01, img.shape)) < 0.45  # noise does not blur it
    True
    >>> blur_score(np.random.default_rng(3).random((64, 64)))  # pure noise: no structure
    1.0
    """
    from skimage.measure import blur_effect

    gray = _central_crop(to_gray(image))
    if min(gray.shape) < 4:  # blur_effect measures nothing (and warns) on 3 pixels
        return float("nan")
    p_lo, p_hi = np.percentile(gray, (1.0, 99.0))
    spread = float(p_hi - p_lo)
    noise = noise_sd(gray)
    if spread <= MIN_RANGE_IN_NOISE * noise:
        return 1.0  # no edges at all, or none above the noise
    sigma = NOISE_SMOOTHING * noise / spread
    if sigma > 0.05:
        gray = ndi.gaussian_filter(gray, sigma)
    return float(blur_effect(gray, h_size=int(h_size)))


def laplacian_sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian over the variance of the image.

    0 for a flat or perfectly smooth image, 20 for white noise.

    Examples
    --------
    >>> import numpy as np
    >>> laplacian_sharpness(np.zeros((8, 8)))
    0.0
    """
    gray = _central_crop(to_gray(image))
    var = float(gray.var())
    if var == 0.0:
        return 0.0
    return float(ndi.laplace(gray, mode="reflect")[1:-1, 1:-1].var() / var)


def clipping_fractions(image: np.ndarray) -> tuple[float, float]:
    """Fractions of pixels at the bottom and at the top of the full scale; NaN (not measured) when the
    scale is unknown (:func:`full_scale`).

    For colour images a pixel counts when any colour channel is clipped.

    Examples
    --------
    >>> import numpy as np
    >>> clipping_fractions(np.array([[0, 255, 255, 10]], np.uint8))
    (0.25, 0.5)
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3):
        raise InvalidImageError(f"expected a 2-D grey or (rows, cols, channels) colour image, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidImageError("image is empty")
    scale = full_scale(arr)
    if scale is None:
        return math.nan, math.nan
    lo, hi = scale
    if arr.ndim == 3:
        low = np.any(arr <= lo, axis=-1)
        high = np.any(arr >= hi, axis=-1)
    else:
        low, high = arr <= lo, arr >= hi
    return float(low.mean()), float(high.mean())


def dynamic_range(image: np.ndarray, *, percentiles: tuple[float, float] = (1.0, 99.0)) -> float:
    """Fraction of the full grey scale spanned by the given percentiles; NaN (not measured) when the scale is
    unknown (:func:`full_scale`).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.tile(np.arange(100, 151, dtype=np.uint8), (4, 1))
    >>> round(dynamic_range(img, percentiles=(0, 100)), 3)
    0.196
    """
    gray, scale = _grey_and_scale(image)
    if scale is None:
        return math.nan
    lo, hi = scale
    if hi <= lo:
        return 0.0
    p_lo, p_hi = np.percentile(gray, percentiles)
    return float((p_hi - p_lo) / (hi - lo))


@dataclass(frozen=True)
class ImageQuality:
    """Result of :func:`assess_image` (see the module docstring for meanings)."""

    blur: float
    laplacian_sharpness: float
    clipped_low_fraction: float
    clipped_high_fraction: float
    dynamic_range: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict (JSON-friendly)."""
        return asdict(self)


def assess_image(image: np.ndarray) -> ImageQuality:
    """Measure focus, clipping and contrast of one image.

    Parameters
    ----------
    image : ndarray or Micrograph
        The analysed pixels (exclude an SEM data bar first:
        ``Micrograph.analysis_data``, which is what a Micrograph gives).

    Returns
    -------
    ImageQuality

    Examples
    --------
    >>> import numpy as np
    >>> q = assess_image(np.full((16, 16), 255, np.uint8))
    >>> q.clipped_high_fraction, q.blur
    (1.0, 1.0)
    """
    from micro_seg.io import analysis_pixels
    from micro_seg.measure._units import as_input_array

    image = analysis_pixels(image)  # a Micrograph (was refused as an image of shape ()); released: says so
    image = as_input_array(image, "image")  # a masked array's mask would be ignored: masked pixels judged
    low, high = clipping_fractions(image)
    return ImageQuality(
        blur=blur_score(image),
        laplacian_sharpness=laplacian_sharpness(image),
        clipped_low_fraction=low,
        clipped_high_fraction=high,
        dynamic_range=dynamic_range(image),
    )
