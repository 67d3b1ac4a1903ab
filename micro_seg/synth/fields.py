"""Smooth random fields used by the synthetic renderers (fast: built coarse, then upsampled).

Examples
--------
>>> import numpy as np
>>> from micro_seg.synth.fields import smooth_noise
>>> f = smooth_noise((64, 64), correlation_px=8, seed=0)
>>> f.shape, abs(float(f.mean())) < 0.5
((64, 64), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from micro_seg.synth._rng import as_rng, check_positive, check_shape

__all__ = ["smooth_noise", "illumination_field"]


def smooth_noise(
    shape: Sequence[int],
    *,
    correlation_px: float,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Gaussian random field, zero mean and unit standard deviation, float32.

    Parameters
    ----------
    shape : (rows, cols)
        Output shape.
    correlation_px : float
        Correlation length in pixels (standard deviation of the Gaussian kernel
        that smooths white noise).
    seed : int or Generator, optional
        Random seed.

    Returns
    -------
    ndarray of float32

    Examples
    --------
    >>> smooth_noise((10, 20), correlation_px=3, seed=1).dtype
    dtype('float32')
    """
    rows, cols = check_shape(shape)
    corr = check_positive("correlation_px", correlation_px)
    rng = as_rng(seed)
    step = max(1.0, corr / 3.0)  # coarse grid: 3 samples per correlation length
    cr = int(np.ceil(rows / step)) + 4
    cc = int(np.ceil(cols / step)) + 4
    coarse = ndi.gaussian_filter(rng.standard_normal((cr, cc)), corr / step, mode="wrap")
    if step > 1.0:
        # separable bilinear upsampling: cheap, and smooth enough at 3 samples per correlation
        coarse = coarse.astype(np.float32)
        cols_img = _lerp_axis(coarse, (np.arange(cols) + 0.5) / step + 1.5, axis=1)
        field = _lerp_axis(cols_img, (np.arange(rows) + 0.5) / step + 1.5, axis=0)
    else:
        field = coarse[2 : 2 + rows, 2 : 2 + cols].astype(np.float32)
    field = field - field.mean()
    sd = float(field.std())
    return (field / sd if sd > 0 else field).astype(np.float32)


def _lerp_axis(a: np.ndarray, pos: np.ndarray, *, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional indices ``pos`` along ``axis``."""
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, a.shape[axis] - 2)
    w = np.clip(pos - i0, 0.0, 1.0).astype(np.float32)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i0 + 1, axis=axis)
    shape = [1] * a.ndim
    shape[axis] = len(pos)
    w = w.reshape(shape)
    return lo * (1 - w) + hi * w


def illumination_field(
    shape: Sequence[int],
    *,
    gradient: float = 0.0,
    vignetting: float = 0.0,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Multiplicative uneven-illumination field (mean about 1), float32.

    A linear ramp in a random direction whose relative peak-to-peak amplitude
    is ``gradient``, times a radial fall-off that darkens the corners by the
    fraction ``vignetting``, with the optical centre slightly off the image centre.

    Examples
    --------
    >>> f = illumination_field((50, 80), gradient=0.2, vignetting=0.3, seed=0)
    >>> bool(f.min() > 0.5) and bool(f.max() <= 1.11)
    True
    """
    rows, cols = check_shape(shape)
    check_positive("gradient", gradient, allow_zero=True)
    check_positive("vignetting", vignetting, allow_zero=True)
    rng = as_rng(seed)
    r = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2) / max(rows, cols)
    c = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2) / max(rows, cols)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    t = rng.uniform(0, 2 * np.pi)
    ramp = rr * np.sin(t) + cc * np.cos(t)
    span = float(ramp.max() - ramp.min()) or 1.0
    field = 1.0 + gradient * ramp / span
    r0, c0 = rng.uniform(-0.15, 0.15, 2)
    rad2 = (rr - r0) ** 2 + (cc - c0) ** 2
    corner = float(max(((np.abs(r).max() + abs(r0)) ** 2 + (np.abs(c).max() + abs(c0)) ** 2), 1e-9))
    field = field * (1.0 - min(vignetting, 0.95) * rad2 / corner)
    return field.astype(np.float32)
