"""Ordinary least squares with confidence and prediction intervals.

Small, dependency-free (numpy + scipy.stats) linear regression for
structure -> property relations: coefficient standard errors, 95% CIs from
Student's t, prediction intervals, propagation of uncertainty in the
predictor, and leave-one-out cross-validated error.

Examples
--------
>>> import numpy as np
>>> x = np.array([1.0, 2.0, 3.0, 4.0])
>>> fit = fit_linear(x[:, None], 2.0 + 3.0 * x, names=["x"])
>>> [round(float(c), 6) for c in fit.coef]
[2.0, 3.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from micro_seg.errors import PropertyTableError

__all__ = ["LinearFit", "fit_linear", "loo_cv_rmse", "n_distinct"]


@dataclass(frozen=True)
class LinearFit:
    """Result of an OLS fit ``y = b0 + b1 x1 + ... + bp xp``.

    Attributes
    ----------
    names : list of str
        ``["intercept", *predictor names]``.
    coef, se : ndarray
        Coefficients and their standard errors.
    cov : ndarray
        Covariance matrix of the coefficients.
    dof : int
        Residual degrees of freedom (n - p - 1).
    resid_std : float
        Residual standard deviation in the property's units:
        ``sqrt(sum(r_i^2) / dof)`` over the (unweighted) residuals
        ``r_i = y_i - yhat_i`` about the fitted line, weighted or not.  For
        an unweighted fit this is the usual OLS ``s``.
    r2 : float
        Coefficient of determination (weighted when the fit is).
    n : int
        Number of observations.
    cv_rmse : float or None
        Leave-one-out cross-validated RMSE, in the property's units, of the
        same (weighted, when weights are given) fit: each sample is predicted
        by the fit to the others with the same weights.
    center, cov_centered : ndarray or None
        The predictor means the fit was solved about and the coefficients'
        covariance there (intercept = the mean line at ``center``):
        :meth:`predict` uses them, so a large offset in a predictor (epoch
        seconds) does not cost precision.
    """

    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    cov: np.ndarray
    dof: int
    resid_std: float
    r2: float
    n: int
    cv_rmse: float | None = None
    extra: dict = field(default_factory=dict)
    center: np.ndarray | None = None
    cov_centered: np.ndarray | None = None

    @property
    def t95(self) -> float:
        """Two-sided 95% Student t quantile for the residual degrees of freedom."""
        return float(stats.t.ppf(0.975, self.dof))

    def ci95(self) -> np.ndarray:
        """Half-widths of the 95% confidence intervals of the coefficients."""
        return self.t95 * self.se

    def predict(self, x: np.ndarray, *, x_cov: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Predict at new predictor rows with 95% confidence and prediction half-widths.

        Parameters
        ----------
        x : (m, p) array
            Predictor values (without the intercept column).
        x_cov : (m, p, p) or (p, p) array, optional
            Covariance of the predictor values themselves (measurement
            uncertainty); propagated to first order: ``b^T Sigma_x b``.

        Returns
        -------
        dict with ``mean``, ``ci95`` (uncertainty of the mean line, including
        propagated predictor uncertainty) and ``pi95`` (for a new observation:
        ``t sqrt(var_mean + resid_std^2)``, the mean line's variance from the
        fit's covariance plus the residual scatter in the property's units;
        for an unweighted fit the textbook ``t s sqrt(1 + x0^T (X^T X)^-1 x0)``).
        """
        x = np.atleast_2d(np.asarray(x, dtype=float))
        center = np.zeros(x.shape[1]) if self.center is None else self.center
        cov = self.cov if self.cov_centered is None else self.cov_centered
        design = np.column_stack([np.ones(len(x)), x - center])
        coef = np.concatenate([[self.coef[0] + self.coef[1:] @ center], self.coef[1:]])
        mean = design @ coef
        var_mean = np.einsum("ij,jk,ik->i", design, cov, design)
        if x_cov is not None:
            slopes = self.coef[1:]
            xc = np.asarray(x_cov, dtype=float)
            if xc.ndim == 2:
                xc = np.broadcast_to(xc, (len(x),) + xc.shape)
            var_mean = var_mean + np.einsum("j,ijk,k->i", slopes, xc, slopes)
        t = self.t95
        return {
            "mean": mean,
            "ci95": t * np.sqrt(var_mean),
            "pi95": t * np.sqrt(var_mean + self.resid_std**2),
        }


def n_distinct(values: np.ndarray, *, rel_tol: float = 1e-6, noise_tol: float = 1e-10) -> int:
    """Number of different values, counting values closer than ``rel_tol`` x their spread as one.

    Values that differ by no more than rounding noise (``noise_tol`` x the largest magnitude) are one
    value whatever their spread, so a constant computed in floating point stays one value.  The
    tolerance is relative to the spread, not to the magnitude: predictors with a large offset (epoch
    seconds ``1e9 + 550 .. 850``, temperatures in K) keep their different values.

    Examples
    --------
    >>> n_distinct(np.array([12.5, 12.5, 12.5 * (1 + 1e-12), 30.0]))
    2
    >>> n_distinct(np.array([12.5, 12.5 * (1 + 1e-12)]))
    1
    >>> n_distinct(1e9 + np.array([550.0, 600.0, 700.0]))
    3
    """
    v = np.sort(np.asarray(values, dtype=float).ravel())
    if v.size == 0:
        return 0
    floor = noise_tol * float(np.max(np.abs(v)))
    spread = float(v[-1] - v[0])
    if spread <= floor:
        return 1
    return 1 + int(np.sum(np.diff(v) > max(floor, rel_tol * spread)))


def fit_linear(x: np.ndarray, y: np.ndarray, *, names: list[str] | None = None, weights: np.ndarray | None = None) -> LinearFit:
    """Fit ``y`` on the columns of ``x`` (plus an intercept) by least squares.

    Parameters
    ----------
    x : (n, p) array
    y : (n,) array
    names : list of str, optional
        Predictor names (default ``x1..xp``).
    weights : (n,) array, optional
        Observation weights (e.g. inverse variances); the residual scale is
        still estimated from the data: the coefficients' covariance is
        ``sum(w r^2) / dof * (X^T W X)^-1``.  ``resid_std`` is nevertheless
        in the property's units (see :class:`LinearFit`), whatever the units
        of the weights.

    Raises
    ------
    PropertyTableError
        Too few observations for the number of coefficients, non-finite
        values, or a predictor that has the same value everywhere (its
        coefficient cannot be told apart from the intercept).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(y, dtype=float).ravel()
    n, p = x.shape
    names = list(names) if names is not None else [f"x{i + 1}" for i in range(p)]
    if len(y) != n:
        raise PropertyTableError(f"{n} predictor rows but {len(y)} property values")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise PropertyTableError("the fit data contain missing or non-finite values")
    dof = n - p - 1
    if dof < 1:
        raise PropertyTableError(f"{n} matched samples are too few to fit {p + 1} coefficients with an uncertainty (need at least {p + 2})")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise PropertyTableError(f"predictor(s) {', '.join(map(repr, twice))} given more than once")
    for j, name in enumerate(names):
        if n_distinct(x[:, j]) < 2:
            raise PropertyTableError(f"predictor {name!r} has the same value ({x[0, j]:.6g}) for all {n} samples, "
                                     "so its effect cannot be fitted")
    _check_collinear(x, names)
    # solved about the predictors' means: a large offset (epoch seconds 1e9 + 550 .. 850) would otherwise make
    # the intercept column and the predictor numerically one, and lstsq / pinv drop the slope
    center = x.mean(axis=0)
    design = np.column_stack([np.ones(n), x - center])
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    sw = np.sqrt(w)
    coef_c, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    resid = y - design @ coef_c
    s2 = float(np.sum(w * resid**2) / dof)
    xtwx_inv = np.linalg.pinv((design * w[:, None]).T @ design)
    shift = np.eye(p + 1)  # back to y = b0 + b x: b0 = c0 - b . center
    shift[0, 1:] = -center
    coef = shift @ coef_c
    cov_c = s2 * xtwx_inv
    cov = shift @ cov_c @ shift.T
    ss_tot = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
    r2 = 1.0 - float(np.sum(w * resid**2)) / ss_tot if ss_tot > 0 else float("nan")
    return LinearFit(
        names=["intercept", *names],
        coef=coef,
        se=np.sqrt(np.diag(cov)),
        cov=cov,
        dof=dof,
        resid_std=float(np.sqrt(np.sum(resid**2) / dof)),  # property units, not those of w
        r2=r2,
        n=n,
        cv_rmse=loo_cv_rmse(x, y, weights=weights) if n >= p + 3 else None,
        center=center,
        cov_centered=cov_c,
    )


def _check_collinear(x: np.ndarray, names: list[str], *, rtol: float = 1e-8) -> None:
    """Refuse predictors of which one is a linear combination of the others (``t2 = 2 t + 1``): least squares
    then returns one of infinitely many coefficient sets, with intervals that mean nothing.

    >>> t = np.array([600.0, 650.0, 700.0, 750.0, 800.0])
    >>> try:
    ...     _check_collinear(np.column_stack([t, 2 * t + 1, t ** 2]), ["t", "t2", "tsq"])
    ... except ValueError as exc:
    ...     print(exc)
    predictors 't', 't2' are linearly dependent over these samples (one is a linear combination of the others), so their separate effects cannot be fitted: leave one out
    """
    if x.shape[1] < 2:
        return
    z = (x - x.mean(axis=0)) / x.std(axis=0)  # scale-free: a temperature next to a d^-1/2
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    if s[-1] > rtol * s[0]:
        return
    involved = [name for name, w in zip(names, vt[-1]) if abs(w) > 1e-6]
    raise PropertyTableError(f"predictors {', '.join(map(repr, involved))} are linearly dependent over these samples "
                             "(one is a linear combination of the others), so their separate effects cannot be "
                             "fitted: leave one out")


def loo_cv_rmse(x: np.ndarray, y: np.ndarray, *, weights: np.ndarray | None = None) -> float:
    """Leave-one-out cross-validated RMSE of a least-squares fit (exact, via the hat matrix).

    With ``weights`` the fit is weighted least squares (hat matrix
    ``X (X^T W X)^-1 X^T W``) and each left-out sample is predicted by the
    weighted fit to the others; the RMSE is of the plain prediction errors,
    in the units of ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(6.0)[:, None]
    >>> round(loo_cv_rmse(x, 1.0 + 2.0 * x[:, 0]), 9)
    0.0
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(y, dtype=float).ravel()
    design = np.column_stack([np.ones(len(y)), x - x.mean(axis=0)])  # centred: the hat matrix is the same
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    weighted = design * w[:, None]
    hat = design @ np.linalg.pinv(weighted.T @ design) @ weighted.T
    resid = y - hat @ y
    leverage = np.clip(np.diag(hat), 0.0, 1.0 - 1e-12)
    return float(np.sqrt(np.mean((resid / (1.0 - leverage)) ** 2)))
