"""Detect the SEM information band ("data bar") at the bottom of a micrograph.

Scanning electron microscopes (FEI/Thermo, Zeiss, JEOL, Tescan, ...) burn a band
of text into the bottom of the saved image: magnification, voltage, detector,
date and a scale bar, on a flat black, white or grey background. Measuring it as
if it were material ruins grain counts and phase fractions, so it must be
excluded from analysis.

The rule :func:`detect_databar` applies (robust to JPEG noise, any bit depth):

1. Convert to grey (mean of channels) and quantise into levels of 1/64 of
   the robust intensity range (0.5 to 99.5 percentile) of the rows above the
   bottom ``max_fraction`` (which cannot be band), so saturated text or a band
   far outside the image's range (65535 text on 12-bit data stored in 16
   bits) does not squeeze the image into a few levels. Then look only at the
   bottom ``max_fraction`` of the rows.
2. A row is *band-like* when at least ``min_background`` of its pixels sit
   within one level of the band's background level (the commonest level of the
   bottom rows), or when 90 % of the row sits within two levels of one value
   (a frame line drawn around the band) that is not a level at which rows of
   the micrograph above are flat too (a flat, low-noise micrograph with sparse
   features has such rows: they are no frame line).
3. Walk up from the bottom row; the band ends above the last band-like row
   once ``max(4, 3 % of the height)`` consecutive rows are not band-like.
4. Accept the band only if all hold: its height is between ``max(8, 3 %)``
   of the rows and ``max_fraction`` of them; at least 80 % of its rows are
   band-like; it contains "ink" on its background (text or a scale bar: in the
   rows dominated by the background level, pixels that differ from it by a
   quarter of the intensity range make up at least 0.3 % of the band area and
   appear in at least 3 rows);
   on average 60 % of the band's pixels sit at the background level; and no
   row just above the band is band-like or has more than 35 % of its pixels at
   the background level (20 % on average): a sharp edge - or, where the rows
   above share the band's level in part (black pores over a black band), the
   band is at least 85 % background, starts sharply (its first two rows are
   85 % within two levels of it: JPEG blurs the 8-row block a band starts in,
   while an object of the micrograph running into black rows ramps up from
   45 %), has at least three clean rows, and the rows above are at most 45 %
   background on average;
   and at least half of the band's pixels share one exact value, as in a band
   drawn by software (a layer of material - resin, a coating, a dark phase -
   has noise). The edge test is what keeps uniformly dark or bright
   micrographs, and flat grain images, from being cut; the exact-value test
   keeps a dark or bright layer of material with a straight edge and a few
   specks on it.

Returns 0 when no band is found.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> image = rng.integers(60, 200, size=(200, 300)).astype(np.uint8)
>>> detect_databar(image)
0
>>> image[180:] = 0                 # a black band ...
>>> image[186:194, 20:120] = 255    # ... with a white scale bar
>>> detect_databar(image)
20
"""

from __future__ import annotations

import numpy as np

__all__ = ["detect_databar", "recorded_databar_rows"]

_LEVELS = 64


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return image.astype(np.float32).mean(axis=2)
    return image.astype(np.float32, copy=False)


def _quantise(grey: np.ndarray, lo: float, unit: float) -> np.ndarray:
    """Levels of ``unit`` from ``lo``, offset so that they run 0 .. 3 * _LEVELS - 1 (NaN lowest)."""
    levels = np.clip(np.round((grey - lo) / unit), -_LEVELS, 2 * _LEVELS - 1)
    return np.nan_to_num(levels, nan=-_LEVELS).astype(np.int64) + _LEVELS


def _row_histograms(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row and level, the fraction of the row's pixels within +-1 and within +-2 levels of it."""
    n_rows, n_cols = levels.shape
    width = 3 * _LEVELS + 4  # two empty bins either side, so +-2 level sums need no edge cases
    index = (np.arange(n_rows)[:, None] * width + levels + 2).ravel()
    hist = np.bincount(index, minlength=n_rows * width).reshape(n_rows, width)
    near = (hist[:, 1:-3] + hist[:, 2:-2] + hist[:, 3:-1]) / n_cols
    near2 = (hist[:, :-4] + hist[:, 1:-3] + hist[:, 2:-2] + hist[:, 3:-1] + hist[:, 4:]) / n_cols
    return near, near2


def detect_databar(
    image: np.ndarray,
    *,
    max_fraction: float = 0.3,
    min_background: float = 0.45,
) -> int:
    """Number of rows of an SEM information band at the bottom of ``image``.

    Parameters
    ----------
    image : ndarray
        2-D greyscale or ``rows x cols x channels`` image, any real dtype.
    max_fraction : float, optional
        Largest band height considered, as a fraction of the rows.
    min_background : float, optional
        Fraction of a row's pixels that must sit at the band background level
        for the row to count as part of the band.

    Returns
    -------
    int
        Rows to drop from the bottom (0 if there is no band).

    Examples
    --------
    >>> import numpy as np
    >>> detect_databar(np.zeros((100, 100), np.uint8))
    0
    """
    if image.ndim not in (2, 3) or image.shape[0] < 20 or image.shape[1] < 8:
        return 0
    rows = image.shape[0]
    n_bottom = int(rows * max_fraction)
    # look at the bottom rows plus a margin above for the "rows above" test
    margin = max(5, n_bottom // 2)
    start = max(0, rows - n_bottom - margin)
    step = max(1, image.shape[1] // 2048)
    region = _grey(image[start:, ::step])
    finite = np.isfinite(region)
    if not finite.all():
        region = np.where(finite, region, np.nan)
    # Intensity scale from the rows that cannot be band (robust 0.5-99.5 percentile range), so
    # saturated text or a band far outside the image's range (e.g. 65535 on 12-bit data) does
    # not squeeze the image into a few levels. Values outside map to up to one range beyond.
    upper = max(1, rows - n_bottom)
    content = _grey(image[:upper:max(1, upper // 512), ::step])
    lo, hi = np.nanpercentile(content, [0.5, 99.5]) if np.isfinite(content).any() else (np.nan, np.nan)
    if not hi > lo:
        lo, hi = np.nanmin(region), np.nanmax(region)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return 0
    unit = (hi - lo) / (_LEVELS - 1)
    levels = _quantise(region, lo, unit)
    n_rows, n_cols = levels.shape
    near, near2 = _row_histograms(levels)

    bottom = near[-max(3, n_bottom // 4):]
    background = int(np.argmax(bottom.sum(axis=0)))
    at_bg = near[:, background]
    # a frame line (JPEG ringing allowed): a row within two levels of one value, at a level no row of the
    # micrograph above (which cannot be band) is flat at - a flat, low-noise micrograph has such rows too
    line_level = np.argmax(near2, axis=1)
    uniform = near2.max(axis=1) >= 0.9
    _, content_near2 = _row_histograms(_quantise(content, lo, unit))
    flat = np.zeros(near2.shape[1] + 4, bool)
    for level in np.unique(np.argmax(content_near2, axis=1)[content_near2.max(axis=1) >= 0.9]):
        flat[level : level + 5] = True  # the level +-2 (flat is offset by 2)
    uniform &= ~flat[line_level + 2]
    band_like = (at_bg >= min_background) | uniform

    gap_max = max(4, int(0.03 * rows))
    top = n_rows  # index (in region) of the band's first row
    gap = 0
    for r in range(n_rows - 1, n_rows - 1 - n_bottom, -1):
        if band_like[r]:
            top = r
            gap = 0
        else:
            gap += 1
            if gap >= gap_max:
                break
    height = n_rows - top
    if height < max(8, int(0.03 * rows)) or height > n_bottom:
        return 0
    if band_like[top:].mean() < 0.8:
        return 0
    text_rows = top + np.flatnonzero(at_bg[top:] >= min_background)
    ink = np.abs(levels[text_rows] - background) >= _LEVELS // 4
    ink_rows = ink.mean(axis=1) >= 0.002
    if ink.size == 0 or ink.sum() < 0.003 * height * n_cols or ink_rows.sum() < 3:
        return 0
    above = slice(max(0, top - max(5, height // 2)), top)
    if top - above.start < 3:
        return 0
    if band_like[above].any():
        return 0
    if at_bg[above].max() > 0.35 or at_bg[above].mean() > 0.2:
        # rows above share the band's level in part (black pores over a black band): still an edge when the band
        # is almost all background, starts sharply (its first two rows >= 85 % within two levels of it: JPEG's
        # ringing from the micrograph and the text above/below blurs an 8-row block, so exact rows are not asked
        # for there; an object cut by the bottom of the image ramps up from 45 % instead), has >= 3 clean rows,
        # and the rows above are mostly not background
        clean = at_bg[top:] >= 0.998
        sharp = near2[top : top + 2, background] >= 0.85
        if at_bg[top:].mean() < 0.85 or not sharp.all() or clean.sum() < 3 or at_bg[above].mean() > 0.45:
            return 0
    if at_bg[top:].mean() < 0.6:
        return 0
    if not _drawn_flat(region[top:]):
        return 0
    return int(height)


def _drawn_flat(band: np.ndarray) -> bool:
    """True when at least half the band's pixels share one exact value, as a band drawn by the microscope's
    software does (MetalDAM's: 71-89 %; a JPEG-saved band with dense text: 53 % or more).  A layer of material at
    the bottom (resin, a coating, a dark phase: 20 +- 1 grey levels with a few bright particles) passes every
    other test under a micrograph with a straight edge, but its noise leaves ~40 % at the commonest value."""
    _, counts = np.unique(np.asarray(band), return_counts=True)  # the band is the grey (2-D) analysis copy
    return bool(counts.max() >= 0.5 * band.size)


def recorded_databar_rows(value) -> int | None:
    """The ``databar_rows`` a batch recorded for an image (an ``images.csv`` cell, as text or number), or None
    (detect it again) when it is missing or not a count of rows.

    The batch may have been run with ``--databar-rows N``: its labels cover the rows above *that* bar, which a
    new detection need not find.

    >>> recorded_databar_rows(48.0), recorded_databar_rows("48"), recorded_databar_rows(float("nan"))
    (48, 48, None)
    >>> recorded_databar_rows(None), recorded_databar_rows(""), recorded_databar_rows("12.5"), recorded_databar_rows(-1)
    (None, None, None, None)
    """
    import math

    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return int(v) if math.isfinite(v) and v >= 0 and v.is_integer() else None
