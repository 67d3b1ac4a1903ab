"""Hall-Petch and hardness relations: ``P = P0 + k d^(-1/2)``.

``d`` is a grain size in micrometres (which one — mean lineal intercept, ECD,
... — is recorded in the fit); it is converted to metres so that ``k`` comes
out in ``<property unit>·m^0.5`` (MPa·m^0.5 for yield strength in MPa).

Examples
--------
>>> import numpy as np
>>> d = np.array([5.0, 10.0, 20.0, 50.0, 100.0])
>>> sy = 70.0 + 0.74 * (d * 1e-6) ** -0.5
>>> fit = fit_hall_petch(d, sy + np.array([1, -1, 0.5, -0.5, 0.0]))
>>> round(fit.k, 2), fit.units["k"]
(0.74, 'MPa·m^0.5')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micro_seg.errors import PropertyTableError
from micro_seg.properties.regression import LinearFit, fit_linear, n_distinct

__all__ = ["HallPetchFit", "fit_hall_petch", "hall_petch_x", "check_grain_size_spread"]

RELATIONS = {
    "hall-petch": ("sigma0", "yield strength"),
    "hardness": ("H0", "hardness"),
}


def _sample_values(data, what: str) -> np.ndarray:
    """One number per sample as a 1-D float array: a column (``df[["d"]]``, shape (n, 1)) or a row is taken as
    its values; text, or a table of several columns, is refused naming ``what``."""
    try:
        arr = np.asarray(data, dtype=float)
    except (TypeError, ValueError):
        raise PropertyTableError(f"{what}: not numbers (one number per sample)") from None
    if arr.ndim > 1 and arr.size == max(arr.shape):
        arr = arr.ravel()
    if arr.ndim != 1:
        raise PropertyTableError(f"{what}: expected one number per sample (a 1-D array or one column), "
                                 f"got shape {arr.shape}")
    return arr


def hall_petch_x(d_um: np.ndarray) -> np.ndarray:
    """``d^(-1/2)`` in m^(-1/2) from grain sizes in micrometres."""
    d_um = np.asarray(d_um, dtype=float)
    if np.any(~np.isfinite(d_um)) or np.any(d_um <= 0):
        raise PropertyTableError("grain sizes must be positive and finite to compute d^-1/2")
    return (d_um * 1e-6) ** -0.5


def check_grain_size_spread(d_um, *, d: str = "d", relation: str = "hall-petch", source: str | None = None) -> str | None:
    """Refuse a fit over one grain size (equal within 1e-6 relative); a warning (returned) for only two.

    With one grain size ``k`` is undetermined and least squares returns
    meaningless numbers.  Two grain sizes (e.g. two heat treatments with
    replicates) determine the line and its confidence intervals, but cannot
    show that the relation is straight: the returned text says so.  Fewer
    than 3 samples are left to :func:`~micro_seg.properties.regression.fit_linear`.

    Examples
    --------
    >>> try:
    ...     check_grain_size_spread([18.9, 18.9, 18.9, 18.9], d="mean_intercept_um")
    ... except ValueError as exc:
    ...     print(exc)
    column 'mean_intercept_um': all 4 samples have the same grain size (18.9 um); a hall-petch fit needs different grain sizes
    >>> print(check_grain_size_spread([10.0, 10.0, 40.0, 40.0]))
    column 'd': only 2 different grain sizes (10 and 40 um) among 4 samples: the fit cannot show that the hall-petch relation is straight over this range
    """
    values = np.asarray(d_um, dtype=float)
    if values.size < 3:
        return None
    # grain sizes have a natural zero (no offset as epoch seconds have): "the same" is relative to their size, so
    # 18.9 and 18.9000002 um (float32 rounding, a re-read table) are one grain size, not two
    k = n_distinct(values, rel_tol=0.0, noise_tol=1e-6)
    prefix = f"{source}: " if source else ""
    if k == 1:
        raise PropertyTableError(f"{prefix}column {d!r}: all {values.size} samples have the same grain size "
                                 f"({values[0]:.4g} um); a {relation} fit needs different grain sizes")
    if k == 2:
        return (f"{prefix}column {d!r}: only 2 different grain sizes ({values.min():.4g} and {values.max():.4g} um) "
                f"among {values.size} samples: the fit cannot show that the {relation} relation is straight over "
                "this range")
    return None


@dataclass(frozen=True)
class HallPetchFit:
    """A fitted ``P = P0 + k d^-1/2`` relation with 95% confidence intervals."""

    relation: str
    d: str
    property_name: str
    property_unit: str
    p0: float
    p0_ci95: float
    k: float
    k_ci95: float
    linear: LinearFit
    d_range_um: tuple[float, float]

    @property
    def units(self) -> dict[str, str]:
        return {"d": "um", "p0": self.property_unit, "k": f"{self.property_unit}·m^0.5", "d^-1/2": "m^-0.5"}

    def predict(self, d_um, *, d_se_um=None) -> dict[str, np.ndarray]:
        """Predicted property at grain sizes ``d_um``, with the grain-size uncertainty propagated.

        ``d_se_um`` (standard error of each d) enters to first order:
        ``se_x = 0.5 d^-3/2 se_d`` (d in metres).
        """
        d_um = np.atleast_1d(np.asarray(d_um, dtype=float))
        x = hall_petch_x(d_um)[:, None]
        x_cov = None
        if d_se_um is not None:
            se_x = 0.5 * (d_um * 1e-6) ** -1.5 * (np.broadcast_to(np.asarray(d_se_um, dtype=float), d_um.shape) * 1e-6)
            x_cov = (se_x**2)[:, None, None]
        return self.linear.predict(x, x_cov=x_cov)

    def as_dict(self) -> dict:
        """The fit as JSON data: a value that cannot be computed (``r2`` of a property with one value for all
        samples) is None, not NaN."""
        from micro_seg.jsonable import to_jsonable

        p0_key = RELATIONS[self.relation][0]
        return to_jsonable({
            "relation": self.relation,
            "d": self.d,
            "property": self.property_name,
            p0_key: self.p0,
            f"{p0_key}_ci95": self.p0_ci95,
            "k": self.k,
            "k_ci95": self.k_ci95,
            "r2": self.linear.r2,
            "residual_std": self.linear.resid_std,
            "cv_rmse": self.linear.cv_rmse,
            "n": self.linear.n,
            "d_range_um": list(self.d_range_um),
            "units": {p0_key: self.property_unit, "k": f"{self.property_unit}·m^0.5", "d": "um"},
        })


def fit_hall_petch(
    d_um,
    values,
    *,
    relation: str = "hall-petch",
    d: str = "mean_intercept_um",
    property_name: str = "yield_strength",
    property_unit: str = "MPa",
    d_se_um=None,
) -> HallPetchFit:
    """Fit ``values = P0 + k d^-1/2`` by least squares.

    Refuses (``PropertyTableError``) a single grain size (see
    :func:`check_grain_size_spread`).

    Parameters
    ----------
    d_um : array
        Grain size per sample in micrometres (state which one in ``d``).
    values : array
        Property per sample (yield strength, hardness, ...).
    relation : {"hall-petch", "hardness"}
    d : str
        Name of the grain-size measure used (recorded in the result).
    d_se_um : array, optional
        Standard errors of ``d``; when given, samples are weighted by the
        inverse of the variance that their grain-size uncertainty adds, so
        well-measured samples count more (the scale is still estimated from
        the residuals).
    """
    if relation not in RELATIONS:
        raise PropertyTableError(f"unknown relation {relation!r}; choose one of {sorted(RELATIONS)}")
    d_um = _sample_values(d_um, "d_um")
    values = _sample_values(values, "values")
    x = hall_petch_x(d_um)
    check_grain_size_spread(d_um, d=d, relation=relation)
    weights = None
    if d_se_um is not None:
        if np.ndim(d_se_um) == 0:  # one standard error for every sample
            d_se_um = np.broadcast_to(np.asarray(d_se_um), d_um.shape)
        d_se = _sample_values(d_se_um, "d_se_um")
        if d_se.shape != d_um.shape:
            raise PropertyTableError(f"d_se_um: {d_se.size} standard errors for {d_um.size} grain sizes")
        # first pass without weights gives k to convert the d uncertainty into property units
        k0 = fit_linear(x[:, None], values, names=["d^-1/2"]).coef[1]
        var = (k0 * 0.5 * (d_um * 1e-6) ** -1.5 * d_se * 1e-6) ** 2
        floor = max(float(np.median(var)), 1e-12)
        weights = 1.0 / (var + floor)
    lin = fit_linear(x[:, None], values, names=["d^-1/2"], weights=weights)
    ci = lin.ci95()
    return HallPetchFit(
        relation=relation,
        d=d,
        property_name=property_name,
        property_unit=property_unit,
        p0=float(lin.coef[0]),
        p0_ci95=float(ci[0]),
        k=float(lin.coef[1]),
        k_ci95=float(ci[1]),
        linear=lin,
        d_range_um=(float(d_um.min()), float(d_um.max())),
    )
