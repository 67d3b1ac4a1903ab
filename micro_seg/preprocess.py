"""Turn a micrograph of any dtype / bit depth into a network input.

Training and inference both call :func:`to_network_input`, so a model always
sees pixels prepared exactly as during training.  Two steps:

1. **Channels** -- grey (2-D, ``(rows, cols, 1)``, or grey + alpha) and colour
   (RGB, RGBA) are converted to what the model card asks: grey is repeated to
   RGB, RGB is reduced to grey by luminance (ITU-R 709 weights, as
   :func:`skimage.color.rgb2gray`), alpha is dropped.
2. **Normalisation** -- an affine map per channel ``(x - offset) / scale``,
   resolved from the card's ``normalisation`` dict by
   :func:`normalisation_stats`:

   ``{"mode": "percentile", "low": 0.5, "high": 99.5}``
       per image: the ``low`` / ``high`` percentiles map to 0 / 1 (robust to
       bit depth and exposure; all channels share one range unless
       ``"per_channel": true``); where they coincide (most pixels share one
       value, e.g. a clipped background around a few pores), the minimum /
       maximum do, and where one of them sits on a value held by 97 % of the
       pixels or more (a clipped background with a few pixels just below the
       clip), the other is taken from the remaining pixels.  Computed on a regular subsample of at most
       ``max_samples`` pixels, so huge images stay cheap and tiles of one
       image share the statistics of the whole image.
   ``{"mode": "fixed", "mean": [...], "std": [...], "scale": 255}``
       ``(x / scale - mean) / std``; ``scale`` may be ``"dtype"`` (the
       integer dtype's maximum, 1 for floats).
   ``{"mode": "minmax"}``
       the image minimum / maximum map to 0 / 1.
   ``{"mode": "none"}``
       the values unchanged (as float32).

Examples
--------
>>> import numpy as np
>>> from micro_seg.preprocess import to_network_input
>>> img = np.arange(100, dtype=np.uint16).reshape(10, 10) * 600
>>> x = to_network_input(img, in_channels=3, normalisation={"mode": "minmax"})
>>> x.shape, x.dtype, float(x.min()), float(x.max())
((3, 10, 10), dtype('float32'), 0.0, 1.0)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from micro_seg.errors import InvalidImageError, ModelError

__all__ = ["to_network_input", "normalisation_stats", "to_channels", "rescale_image", "rescale_labels", "scaled_shape",
           "DEFAULT_NORMALISATION"]

#: Normalisation used when a card does not say otherwise.
DEFAULT_NORMALISATION: dict[str, Any] = {"mode": "percentile", "low": 0.5, "high": 99.5}

_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
_MODES = ("percentile", "fixed", "minmax", "none")
#: Normalisation modes a model card may name.
NORMALISATION_MODES = _MODES


def to_channels(image: np.ndarray, *, in_channels: int) -> np.ndarray:
    """Return ``image`` as float32 ``(in_channels, rows, cols)`` (no scaling).

    Accepts 2-D grey, ``(rows, cols, C)`` with C = 1 (grey), 2 (grey +
    alpha), 3 (RGB) or 4 (RGBA), of any numeric or bool dtype.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.zeros((4, 5, 3), np.uint8); rgb[..., 1] = 100
    >>> to_channels(rgb, in_channels=1)[0, 0, 0].round(2)
    np.float32(71.54)
    """
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise InvalidImageError(f"image of dtype {image.dtype} is not numeric; expected integer, float or bool pixels")
    _check_layout(image.shape)
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[..., 0]  # grey (+ alpha dropped)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # RGBA -> RGB
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image is empty ({image.shape[0]} x {image.shape[1]} pixels)")
    if in_channels not in (1, 3):
        raise ModelError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
    if image.ndim == 2:
        grey = image.astype(np.float32, copy=False)
        if in_channels == 1:
            return grey[None]
        return np.broadcast_to(grey, (3, *grey.shape)).copy()
    if in_channels == 3:
        return np.moveaxis(image, 2, 0).astype(np.float32)
    out = np.zeros(image.shape[:2], dtype=np.float32)
    for c in range(3):
        out += _LUMA[c] * image[..., c].astype(np.float32, copy=False)
    return out[None]


def _check_layout(shape: tuple[int, ...]) -> None:
    """Refuse a shape that is not grey ``(rows, cols)`` or ``(rows, cols, 1|2|3|4)``, naming the whole shape."""
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 2, 3, 4)):
        raise InvalidImageError(
            f"image of shape {shape} is not grey (rows, cols) or colour (rows, cols, 3|4); "
            "multi-page or hyperspectral images need one plane selected first"
        )


def _subsample(image: np.ndarray, max_samples: int) -> np.ndarray:
    rows, cols = image.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(rows * cols / max(1, max_samples)))))
    return image[::step, ::step]


def _percentiles(values: np.ndarray, low_q: float, high_q: float) -> tuple[float, float]:
    """np.percentile (linear) of two quantiles; exact and fast via a histogram for small ints."""
    if values.dtype.kind in "bu" and values.dtype.itemsize <= 2:
        counts = np.bincount(values.ravel().astype(np.int64, copy=False) if values.dtype.kind == "b" else values.ravel())
        cum = np.cumsum(counts)
        n = int(cum[-1])
        out = []
        for q in (low_q, high_q):
            k = q / 100.0 * (n - 1)
            lo_rank, frac = int(np.floor(k)), k - np.floor(k)
            a = float(np.searchsorted(cum, lo_rank, side="right"))
            b = float(np.searchsorted(cum, min(lo_rank + 1, n - 1), side="right"))
            out.append(a + (b - a) * frac)
        return out[0], out[1]
    lo, hi = np.percentile(values, [low_q, high_q])
    return float(lo), float(hi)


def normalisation_stats(
    image: np.ndarray,
    *,
    in_channels: int,
    normalisation: Mapping[str, Any] | None = None,
    max_samples: int = 1 << 22,
) -> dict[str, Any]:
    """Resolve ``normalisation`` for one image into ``{"offset", "scale"}``.

    The result is the per-channel affine map ``(x - offset) / scale`` that
    :func:`to_network_input` applies; pass it as ``stats=`` to normalise
    tiles of a large image with the statistics of the whole image.

    Parameters
    ----------
    image : ndarray
        Grey or colour image, any dtype.
    in_channels : int
        1 or 3, as the model card says.
    normalisation : dict, optional
        Card normalisation (see module docstring); default percentile
        0.5 / 99.5.
    max_samples : int
        Pixels sampled (on a regular grid) for data-dependent modes.

    Returns
    -------
    dict
        ``{"offset": list[float], "scale": list[float]}``, one entry per
        input channel.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.linspace(0, 1000, 10001).reshape(1, -1)
    >>> s = normalisation_stats(img, in_channels=1, normalisation={"mode": "percentile", "low": 1, "high": 99})
    >>> [round(s["offset"][0], 3), round(s["scale"][0], 3)]
    [10.0, 980.0]
    """
    norm = dict(DEFAULT_NORMALISATION if normalisation is None else normalisation)
    mode = norm.get("mode", "percentile")
    if mode not in _MODES:
        raise ModelError(f"unknown normalisation mode {mode!r}; available: {', '.join(_MODES)}")
    image = np.asarray(image)
    if mode == "none":
        return {"offset": [0.0] * in_channels, "scale": [1.0] * in_channels}
    if mode == "fixed":
        scale = norm.get("scale", 1.0)
        if scale == "dtype":
            scale = float(np.iinfo(image.dtype).max) if image.dtype.kind in "iu" else 1.0
        scale = float(scale)
        mean = np.broadcast_to(np.asarray(norm.get("mean", 0.0), dtype=np.float64), (in_channels,))
        std = np.broadcast_to(np.asarray(norm.get("std", 1.0), dtype=np.float64), (in_channels,))
        if scale <= 0 or np.any(std <= 0):
            raise ModelError(f"fixed normalisation needs scale > 0 and std > 0, got scale={scale}, std={list(std)}")
        return {"offset": list(map(float, mean * scale)), "scale": list(map(float, std * scale))}
    _check_layout(image.shape)  # the whole shape named, not that of the corner checked next
    to_channels(image[:1, :1] if image.ndim >= 2 else image, in_channels=in_channels)  # validates dtype / shape
    per_channel = bool(norm.get("per_channel", False))
    sub = _subsample(image, max_samples)
    grey = sub.ndim == 2 or sub.shape[2] in (1, 2)
    if grey and not per_channel:
        # grey input: channels are copies, so the statistics of the grey values suffice
        sample = (sub if sub.ndim == 2 else sub[..., 0]).reshape(1, -1)
    else:
        sample = to_channels(sub, in_channels=in_channels).reshape(in_channels, -1)
    if mode == "minmax":
        low_q, high_q = 0.0, 100.0
    else:
        low_q, high_q = float(norm.get("low", 0.5)), float(norm.get("high", 99.5))
        if not 0.0 <= low_q < high_q <= 100.0:
            raise ModelError(f"percentile normalisation needs 0 <= low < high <= 100, got low={low_q}, high={high_q}")
    if sample.dtype.kind in "fc":
        finite = np.isfinite(sample)
        if not finite.any():
            raise InvalidImageError("image has no finite pixel values (all NaN or infinite)")
    else:
        finite = None
    if per_channel:
        lows, highs = [], []
        for c in range(sample.shape[0]):
            vals = sample[c] if finite is None else sample[c][finite[c]]
            lo, hi = _value_range(vals, low_q, high_q) if vals.size else (0.0, 1.0)
            lows.append(lo)
            highs.append(hi)
    else:
        lo, hi = _value_range(sample.ravel() if finite is None else sample[finite], low_q, high_q)
        lows, highs = [lo] * in_channels, [hi] * in_channels
    scales = [h - l if _spans(l, h) else 1.0 for l, h in zip(lows, highs)]
    return {"offset": lows, "scale": scales}


#: Share of the pixels on one value from which that value is a plateau (a clipped background) for the percentile
#: normalisation; real micrographs stay far below it (at most 0.45 % in the datasets and training sets checked;
#: only segmented / annotated images reach 0.95).
_PLATEAU_FRACTION = 0.97


def _spans(low: float, high: float) -> bool:
    """``high`` above ``low`` beyond rounding, relative to the values' own magnitude (an image in amperes,
    1e-20 .. 1e-19, has contrast)."""
    return high - low > max(1e-9 * max(abs(low), abs(high)), 1e-300)


def _value_range(values: np.ndarray, low_q: float, high_q: float) -> tuple[float, float]:
    """The ``low_q`` / ``high_q`` percentiles of ``values``; their minimum / maximum where those coincide, and the
    other percentile of the remaining pixels where one lies on a plateau (a value of nearly all pixels).

    When nearly all pixels share one value (a clipped background around a few small pores: under 0.5 % of the
    field for 0.5 / 99.5), both percentiles land on it, and scale 1 would leave the features' contrast in raw
    grey levels (a pore 150 levels below the background at -150, where the network learnt values near 0 .. 1).

    >>> v = np.full(1000, 200, np.uint8); v[:3] = 50
    >>> _value_range(v, 0.5, 99.5), _value_range(np.full(9, 7.0), 0.5, 99.5)
    ((50.0, 200.0), (7.0, 7.0))
    """
    lo, hi = _percentiles(values, low_q, high_q)
    if (low_q, high_q) == (0.0, 100.0):
        return float(lo), float(hi)
    if not _spans(lo, hi):
        lo, hi = _percentiles(values, 0.0, 100.0)
        return float(lo), float(hi)
    # a clipped background is rarely exactly one value: a few pixels just below the clip put one percentile beside
    # the plateau the other sits on (253 .. 255), and the pores still come out at -100.  Where one percentile's
    # value holds nearly all pixels, the other comes from the remaining pixels.
    for plateau in (lo, hi):
        if np.count_nonzero(values == plateau) >= _PLATEAU_FRACTION * values.size:
            rest = values[values != plateau]
            r_lo, r_hi = _percentiles(rest, low_q, high_q)
            lo, hi = min(lo, r_lo), max(hi, r_hi)
            break
    return float(lo), float(hi)


def to_network_input(
    image: np.ndarray,
    *,
    in_channels: int,
    normalisation: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Prepare ``image`` for a network: float32 ``(in_channels, rows, cols)``.

    Parameters
    ----------
    image : ndarray
        2-D grey or ``(rows, cols, 1|2|3|4)`` colour image of any dtype
        (uint8, uint16, int, float, bool).
    in_channels : int
        1 (grey) or 3 (RGB), from the model card.
    normalisation : dict, optional
        Card normalisation (see module docstring).  Default percentile
        0.5 / 99.5.
    stats : dict, optional
        Precomputed :func:`normalisation_stats` (e.g. of the whole image when
        ``image`` is one tile of it); overrides ``normalisation``.

    Returns
    -------
    ndarray
        float32 ``(in_channels, rows, cols)``; non-finite input pixels become 0.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((8, 8), 4095, np.uint16); img[:4] = 0
    >>> x = to_network_input(img, in_channels=1, normalisation={"mode": "percentile", "low": 0, "high": 100})
    >>> x.shape, float(x[0, 0, 0]), float(x[0, 7, 0])
    ((1, 8, 8), 0.0, 1.0)
    """
    if stats is None:
        stats = normalisation_stats(image, in_channels=in_channels, normalisation=normalisation)
    x = to_channels(image, in_channels=in_channels)
    if x.base is not None or not x.flags.writeable:
        x = np.array(x, dtype=np.float32)
    offset = np.asarray(stats["offset"], dtype=np.float32).reshape(-1, 1, 1)
    scale = np.asarray(stats["scale"], dtype=np.float32).reshape(-1, 1, 1)
    if offset.shape[0] != in_channels or scale.shape[0] != in_channels:
        raise ModelError(f"normalisation stats have {offset.shape[0]} channels, the model expects {in_channels}")
    x -= offset
    x /= scale
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """Rows x cols of an image of ``shape`` resized by ``factor`` (at least 1 x 1)."""
    return max(1, int(round(shape[0] * factor))), max(1, int(round(shape[1] * factor)))


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize a micrograph by ``factor`` (anti-aliased bilinear), keeping its dtype and channels.

    Used for models whose card has an ``input_scale`` other than 1: training
    and inference both resize with this function, so the network always sees
    the same pixel scale.  Integer images are rounded and clipped back to
    their dtype (so ``"fixed"`` normalisation with ``scale: dtype`` still
    means what it says).

    Examples
    --------
    >>> import numpy as np
    >>> small = rescale_image(np.full((8, 6), 4000, np.uint16), 0.5)
    >>> small.shape, small.dtype, int(small.min()), int(small.max())
    ((4, 3), dtype('uint16'), 4000, 4000)
    """
    import torch
    import torch.nn.functional as F

    if not factor > 0:
        raise InvalidImageError(f"rescale factor must be > 0, got {factor}")
    arr = np.asarray(image)
    if factor == 1:
        return arr
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    rows, cols = scaled_shape(arr.shape, factor)
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    x = x[None, None] if arr.ndim == 2 else x.permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(rows, cols), mode="bilinear", align_corners=False, antialias=factor < 1)[0]
    out = (y[0] if arr.ndim == 2 else y.permute(1, 2, 0)).numpy()
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(arr.dtype)
    elif arr.dtype.kind == "f":
        out = out.astype(arr.dtype, copy=False)
    return out


def nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` samples resampling an axis of ``n_in`` (pixel centres)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


def rescale_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample an integer label image to ``shape`` (rows, cols) by nearest neighbour.

    Examples
    --------
    >>> import numpy as np
    >>> rescale_labels(np.array([[1, 2], [3, 0]]), (4, 4)).tolist()
    [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]
    """
    lab = np.asarray(labels)
    if lab.shape[:2] == tuple(shape):
        return lab
    return lab[np.ix_(nearest_indices(shape[0], lab.shape[0]), nearest_indices(shape[1], lab.shape[1]))]
