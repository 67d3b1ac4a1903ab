"""Field statistics (ASTM E112 section 15, E562, E1245) and splitting an image into fields.

For ``n`` field values ``x_i``: mean, sample standard deviation ``s`` (``n - 1``),
95 % confidence half-width ``CI = t(0.975, n - 1) s / sqrt(n)`` (Student t) and
relative accuracy ``%RA = 100 CI / mean``.

Examples
--------
>>> st = field_statistics([10.0, 12.0, 11.0, 13.0, 9.0])
>>> round(st["mean"], 3), round(st["ci95"], 3), round(st["ra_percent"], 2)
(11.0, 1.963, 17.85)
>>> field_grid((100, 60), fields=(2, 3))[4]
(slice(50, 100, None), slice(20, 40, None))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from micro_seg.errors import InvalidImageError

__all__ = ["t_critical", "field_statistics", "field_grid", "auto_field_grid", "field_index_maps",
           "check_field_size", "MIN_FIELD_SIDE_PX"]

#: Smallest side (pixels) of a field in a grid the caller asks for (``--fields``).  A field must hold a
#: measurement of its own (E112 section 15 / E1382 / E1245: several fields, each with many grains,
#: intercepts or objects); fields of a few pixels give per-field values that measure the field, and a
#: Student-t interval over thousands of them shrinks to nonsense.  16 px is also the smallest field
#: the automatic defect grid uses.
MIN_FIELD_SIDE_PX = 16


def t_critical(df: int, *, confidence: float = 0.95) -> float:
    """Two-sided Student t critical value ``t((1 + confidence) / 2, df)``.

    Examples
    --------
    >>> round(t_critical(4), 3), round(t_critical(29), 3)
    (2.776, 2.045)
    """
    from scipy.stats import t

    if df < 1:
        return math.nan
    return float(t.ppf(0.5 + confidence / 2.0, df))


def field_statistics(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> dict:
    """Mean, standard deviation, Student-t confidence half-width and %RA of field values.

    Parameters
    ----------
    values : sequence of float
        One value per field (non-finite values are dropped).
    confidence : float, optional
        Two-sided confidence level of the interval (default 0.95).

    Returns
    -------
    dict
        ``n``, ``mean``, ``sd`` (n - 1 denominator), ``ci95`` (half-width),
        ``ra_percent`` (100 ci95 / mean). ``sd``/``ci95``/``ra_percent`` are NaN
        for fewer than two fields.

    Examples
    --------
    >>> field_statistics([1.0])["ci95"]
    nan
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "ci95": math.nan, "ra_percent": math.nan}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": math.nan, "ci95": math.nan, "ra_percent": math.nan}
    sd = float(x.std(ddof=1))
    ci = t_critical(n - 1, confidence=confidence) * sd / math.sqrt(n)
    ra = 100.0 * ci / mean if mean != 0 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "ci95": ci, "ra_percent": ra}


def _check_grid(fields: int | tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    if isinstance(fields, (int, np.integer)):
        n = int(fields)
        if n < 1:
            msg = f"fields={fields!r}: must be >= 1"
            raise ValueError(msg)
        rows, cols = shape
        # Most square-like grid with nr * nc == n, oriented like the image.
        best = (1, n)
        for nr in range(1, n + 1):
            if n % nr == 0:
                nc = n // nr
                if abs(math.log((rows / nr) / (cols / nc))) < abs(math.log((rows / best[0]) / (cols / best[1]))):
                    best = (nr, nc)
        return best
    try:
        nr, nc = (int(v) for v in fields)
    except (TypeError, ValueError):
        msg = f"fields={fields!r}: expected an int or a (rows, cols) pair"
        raise ValueError(msg) from None
    if nr < 1 or nc < 1:
        msg = f"fields={fields!r}: both grid sizes must be >= 1"
        raise ValueError(msg)
    return nr, nc


def field_grid(shape: Sequence[int], *, fields: int | tuple[int, int]) -> list[tuple[slice, slice]]:
    """Split a ``rows x cols`` image into a grid of rectangular fields (row-major order).

    Parameters
    ----------
    shape : (rows, cols)
        Image shape.
    fields : int or (n_rows, n_cols)
        Number of fields (arranged as squarely as possible) or the grid itself.

    Returns
    -------
    list of (row slice, col slice)

    Examples
    --------
    >>> len(field_grid((90, 90), fields=9))
    9
    """
    rows, cols = int(shape[0]), int(shape[1])
    nr, nc = _check_grid(fields, (rows, cols))
    if nr > rows or nc > cols:
        msg = f"fields={fields!r}: more fields than pixels along an axis of a {rows} x {cols} image"
        raise ValueError(msg)
    re = np.linspace(0, rows, nr + 1).round().astype(int)
    ce = np.linspace(0, cols, nc + 1).round().astype(int)
    return [
        (slice(int(re[i]), int(re[i + 1])), slice(int(ce[j]), int(ce[j + 1])))
        for i in range(nr)
        for j in range(nc)
    ]


def field_index_maps(shape: Sequence[int], *, fields: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per-row and per-column field indices: field of pixel ``(r, c)`` is ``fr[r] * nc + fc[c]``.

    Examples
    --------
    >>> fr, fc, nr, nc = field_index_maps((4, 6), fields=(2, 3))
    >>> fr.tolist(), fc.tolist()
    ([0, 0, 1, 1], [0, 0, 1, 1, 2, 2])
    """
    rows, cols = int(shape[0]), int(shape[1])
    nr, nc = _check_grid(fields, (rows, cols))
    re = np.linspace(0, rows, nr + 1).round().astype(int)
    ce = np.linspace(0, cols, nc + 1).round().astype(int)
    fr = np.searchsorted(re, np.arange(rows), side="right") - 1
    fc = np.searchsorted(ce, np.arange(cols), side="right") - 1
    return fr.astype(np.intp), fc.astype(np.intp), nr, nc


def check_field_size(
    shape: Sequence[int], fields: int | tuple[int, int], *, what: str = "image", min_side: int = MIN_FIELD_SIDE_PX
) -> tuple[int, int]:
    """Grid ``(n_rows, n_cols)`` for ``fields``; refuse fields smaller than ``min_side`` pixels a side.

    A single field (the whole image) is always accepted.

    Raises
    ------
    InvalidImageError
        If the fields would be smaller than ``min_side`` pixels along an axis;
        the message names the largest grid that fits.

    Examples
    --------
    >>> check_field_size((200, 240), 16)
    (4, 4)
    >>> check_field_size((200, 240), 1000, what="x.tif")
    Traceback (most recent call last):
    ...
    micro_seg.errors.InvalidImageError: x.tif: --fields 1000 makes 25 x 40 fields of 8 x 6 px; a field needs at least 16 px a side to hold a measurement (at most 12 x 15 fields for this 200 x 240 image)
    """
    rows, cols = int(shape[0]), int(shape[1])
    nr, nc = _check_grid(fields, (rows, cols))
    if (nr, nc) == (1, 1):
        return nr, nc
    h, w = rows // nr, cols // nc
    if min(h, w) < min_side:
        given = f"{fields[0]}x{fields[1]}" if isinstance(fields, (tuple, list)) else f"{fields}"
        msg = (f"{what}: --fields {given} makes {nr} x {nc} fields of {h} x {w} px; a field needs at least "
               f"{min_side} px a side to hold a measurement (at most {max(1, rows // min_side)} x "
               f"{max(1, cols // min_side)} fields for this {rows} x {cols} image)")
        raise InvalidImageError(msg)
    return nr, nc


def auto_field_grid(shape: Sequence[int], n_objects: float, *, per_field: int = 50, max_side: int = 5) -> tuple[int, int]:
    """Grid of fields with about ``per_field`` objects each (E1382: >= 50 grains per field).

    At least 2 x 2 fields (so a confidence interval exists) and at most
    ``max_side x max_side``.

    Examples
    --------
    >>> auto_field_grid((4096, 4096), 20000)
    (5, 5)
    >>> auto_field_grid((600, 800), 300)
    (2, 2)
    """
    rows, cols = int(shape[0]), int(shape[1])
    n_target = max(4.0, min(float(max_side * max_side), float(n_objects) / per_field))
    side = math.sqrt(n_target * rows / cols), math.sqrt(n_target * cols / rows)
    nr = int(min(max_side, max(2, math.floor(side[0]))))
    nc = int(min(max_side, max(2, math.floor(side[1]))))
    nr, nc = min(nr, rows), min(nc, cols)
    return nr, nc
