"""Literature Hall-Petch constants, so a micrograph gives a property range without a user table.

Each entry gives ranges, not single numbers: published constants scatter with
purity, strain offset and test method.  The ranges below are indicative
values collected from the cited reviews and studies; check them against the
source before using them for acceptance decisions (they are marked
``verified: False`` until someone has).  ``d`` is the mean lineal intercept
unless noted (most classic studies used it).

Examples
--------
>>> from micro_seg.properties.reference import predict_from_reference
>>> r = predict_from_reference("copper", 25.0)
>>> 40 <= r["yield_strength_MPa_low"] < r["yield_strength_MPa_high"] < 80
True
"""

from __future__ import annotations

import math

from micro_seg.errors import PropertyTableError

__all__ = ["REFERENCE_CONSTANTS", "predict_from_reference", "reference_materials"]

# sigma0 in MPa, k in MPa·m^0.5, validity range of d in micrometres.
REFERENCE_CONSTANTS: dict[str, dict] = {
    "low-carbon-steel": {
        "sigma0_MPa": (50.0, 100.0), "k_MPa_m05": (0.55, 0.80), "d_range_um": (5.0, 200.0),
        "source": "N. J. Petch, J. Iron Steel Inst. 174 (1953) 25; Z. C. Cordero, B. E. Knight, C. A. Schuh, Int. Mater. Rev. 61 (2016) 495",
        "notes": "ferritic low-carbon steels; k depends on free interstitial content",
    },
    "pure-iron": {
        "sigma0_MPa": (30.0, 100.0), "k_MPa_m05": (0.55, 0.70), "d_range_um": (5.0, 500.0),
        "source": "Cordero, Knight & Schuh, Int. Mater. Rev. 61 (2016) 495",
        "notes": "alpha-iron, room temperature",
    },
    "copper": {
        "sigma0_MPa": (20.0, 30.0), "k_MPa_m05": (0.10, 0.14), "d_range_um": (1.0, 300.0),
        "source": "N. Hansen, B. Ralph, Acta Metall. 30 (1982) 411; Cordero et al. (2016)",
        "notes": "annealed OFHC copper, 0.2% proof stress; twins excluded from d",
    },
    "aluminium": {
        "sigma0_MPa": (10.0, 20.0), "k_MPa_m05": (0.03, 0.07), "d_range_um": (1.0, 500.0),
        "source": "N. Hansen, Acta Metall. 25 (1977) 863; Cordero et al. (2016)",
        "notes": "commercially pure aluminium",
    },
    "nickel": {
        "sigma0_MPa": (15.0, 30.0), "k_MPa_m05": (0.15, 0.20), "d_range_um": (1.0, 300.0),
        "source": "A. W. Thompson, Acta Metall. 25 (1977) 83; Cordero et al. (2016)",
        "notes": "pure nickel, 0.2% proof stress",
    },
    "titanium": {
        "sigma0_MPa": (70.0, 150.0), "k_MPa_m05": (0.35, 0.45), "d_range_um": (1.0, 200.0),
        "source": "Cordero et al. (2016), commercially pure titanium",
        "notes": "CP titanium grade 1-2; strongly oxygen dependent",
    },
}


def reference_materials() -> list[str]:
    """Names accepted by :func:`predict_from_reference`."""
    return sorted(REFERENCE_CONSTANTS)


def predict_from_reference(material: str, d_um: float) -> dict:
    """Yield-strength range from the literature constants at grain size ``d_um``.

    The low end uses the low sigma0 and k, the high end the high ones; a
    warning is included when ``d_um`` is outside the validity range.
    """
    key = material.strip().lower().replace(" ", "-").replace("_", "-")
    if key not in REFERENCE_CONSTANTS:
        raise PropertyTableError(f"no reference Hall-Petch constants for {material!r}; known: {', '.join(reference_materials())}")
    try:  # one grain size: a numpy or Decimal number is reported as a plain float (JSON takes no numpy types)
        d_um = float(d_um)
    except (TypeError, ValueError):
        raise PropertyTableError(f"grain size must be one number of micrometres, got {d_um!r} (for several, "
                                 "call once per grain size)") from None
    if not (math.isfinite(d_um) and d_um > 0):
        raise PropertyTableError(f"grain size must be positive, got {d_um!r} um")
    ref = REFERENCE_CONSTANTS[key]
    x = (d_um * 1e-6) ** -0.5
    lo = ref["sigma0_MPa"][0] + ref["k_MPa_m05"][0] * x
    hi = ref["sigma0_MPa"][1] + ref["k_MPa_m05"][1] * x
    out = {
        "material": key,
        "d_um": d_um,
        "yield_strength_MPa_low": lo,
        "yield_strength_MPa_high": hi,
        "source": ref["source"],
        "verified": False,
        "warnings": [],
    }
    dmin, dmax = ref["d_range_um"]
    if not dmin <= d_um <= dmax:
        out["warnings"].append(f"d = {d_um:g} um is outside the range {dmin:g}-{dmax:g} um the constants were measured over")
    return out
