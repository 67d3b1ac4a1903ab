"""ASTM E112 / E1382 / E930 relations between grain-size measures and the grain size number G.

All lengths are in millimetres at 1x and all areas in mm^2, as in the standards.

Constants (ASTM E112-13, Table 6 footnotes and section 13; the same values are
used by E1382 and E930):

* planimetric: ``G = 3.321928 log10(N_A) - 2.954`` with ``N_A`` grains per mm^2;
* lineal intercept: ``G = -6.643856 log10(l) - 3.288`` with ``l`` the mean
  lineal intercept length in mm;
* mean grain area: ``G = -3.3223 log10(A) - 2.955`` with ``A`` the mean grain
  area in mm^2 (``A = 1 / N_A``; E1382 / E930 form).

``3.321928 = 1 / log10(2)``, so multiplying ``N_A`` by 4 raises G by exactly 2,
and ``6.643856 = 2 / log10(2)``, so doubling ``l`` lowers G by exactly 2.

Examples
--------
>>> round(g_from_intercept(0.005), 2)   # l = 5 um
12.0
>>> round(g_from_grains_per_mm2(1984), 2)
8.0
>>> round(g_from_intercept(0.320), 2)
-0.0
"""

from __future__ import annotations

import math

__all__ = [
    "G_NA_SLOPE",
    "G_NA_OFFSET",
    "G_L_SLOPE",
    "G_L_OFFSET",
    "G_AREA_SLOPE",
    "G_AREA_OFFSET",
    "g_from_grains_per_mm2",
    "g_from_intercept",
    "g_from_mean_area",
    "intercept_from_g",
    "grains_per_mm2_from_g",
]

G_NA_SLOPE = 3.321928
G_NA_OFFSET = -2.954
G_L_SLOPE = -6.643856
G_L_OFFSET = -3.288
G_AREA_SLOPE = -3.3223
G_AREA_OFFSET = -2.955


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        msg = f"{name}={value!r}: must be a positive finite number"
        raise ValueError(msg)
    return value


def g_from_grains_per_mm2(n_a: float) -> float:
    """ASTM grain size number from the number of grains per mm^2 (planimetric).

    Examples
    --------
    >>> round(g_from_grains_per_mm2(1984.0), 3)
    8.0
    """
    return G_NA_SLOPE * math.log10(_positive("grains_per_mm2", n_a)) + G_NA_OFFSET


def g_from_intercept(mean_intercept_mm: float) -> float:
    """ASTM grain size number from the mean lineal intercept length in mm.

    Examples
    --------
    >>> round(g_from_intercept(0.005), 2)
    12.0
    """
    return G_L_SLOPE * math.log10(_positive("mean_intercept_mm", mean_intercept_mm)) + G_L_OFFSET


def g_from_mean_area(mean_area_mm2: float) -> float:
    """ASTM grain size number from the mean grain area in mm^2 (E1382 / E930 ALA).

    Examples
    --------
    >>> round(g_from_mean_area(1 / 1984.0), 2)
    8.0
    """
    return G_AREA_SLOPE * math.log10(_positive("mean_area_mm2", mean_area_mm2)) + G_AREA_OFFSET


def intercept_from_g(g: float) -> float:
    """Mean lineal intercept (mm) for a grain size number (inverse of :func:`g_from_intercept`).

    Examples
    --------
    >>> round(intercept_from_g(0.0), 4)
    0.32
    """
    return 10.0 ** ((float(g) - G_L_OFFSET) / G_L_SLOPE)


def grains_per_mm2_from_g(g: float) -> float:
    """Grains per mm^2 for a grain size number (inverse of :func:`g_from_grains_per_mm2`).

    Examples
    --------
    >>> round(grains_per_mm2_from_g(8.0))
    1984
    """
    return 10.0 ** ((float(g) - G_NA_OFFSET) / G_NA_SLOPE)
