"""Numerical kernels shared by the spectral steps: batched line fits and robust polynomials.

Kept in numpy only: each fit is small, so batching many of them into one vectorised
Levenberg-Marquardt loop is both faster than a per-line optimiser and free of a SciPy
dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev

_ERF = np.frompyfunc(math.erf, 1, 1)
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Exact Φ(z): pixel-integrated profiles need it and numpy has no erf."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.asarray(_ERF(z / _SQRT2), dtype=np.float64))


def pixel_gaussian(offset: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """Fraction of a unit Gaussian falling in pixels centred ``offset`` from its mean.

    Integrating over the pixel instead of sampling the centre removes the pixel-phase
    bias that a point-sampled model leaves on lines only ~2 px wide.
    """
    s = np.asarray(sigma, dtype=np.float64)
    return normal_cdf((offset + 0.5) / s) - normal_cdf((offset - 0.5) / s)


@dataclass(frozen=True)
class GaussFit:
    """Results of a batch of Gaussian + linear background fits (one row per problem)."""

    amplitude: np.ndarray  # integrated flux of the Gaussian
    centre: np.ndarray
    sigma: np.ndarray
    background: np.ndarray  # (n, 2): level at the window centre and slope per pixel
    centre_err: np.ndarray
    amplitude_err: np.ndarray
    chi2_red: np.ndarray
    ok: np.ndarray  # converged with a positive amplitude and a sane width


def _edge_mean(y: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Mean of the first two good pixels of each row (the background start guess)."""
    rank = np.cumsum(good, axis=1)
    pick = good & (rank <= 2)
    return np.sum(np.where(pick, y, 0.0), axis=1) / np.maximum(pick.sum(axis=1), 1)


def fit_gaussians(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    centre0: np.ndarray,
    sigma0: np.ndarray | float,
    *,
    slope: bool = True,
    max_iter: int = 40,
    sigma_bounds: tuple[float, float] = (0.2, 50.0),
) -> GaussFit:
    """Fit pixel-integrated Gaussians plus a linear background to many windows at once.

    ``x``, ``y`` and ``weight`` (inverse variance, 0 for pixels to ignore) are (n, m):
    ragged windows are padded with zero weight. Errors come from the curvature matrix,
    inflated by the reduced chi-square when that exceeds one, so that a poor model
    does not report a precision it does not have.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    n = x.shape[0]
    npar = 5 if slope else 4
    xc = np.sum(x * (w > 0), axis=1) / np.maximum(np.sum(w > 0, axis=1), 1)
    dx = x - xc[:, None]
    mu = np.asarray(centre0, dtype=np.float64).copy()
    sig = np.broadcast_to(np.asarray(sigma0, dtype=np.float64), (n,)).copy()
    # Linear start: background from the window edges, amplitude from the excess.
    good = w > 0
    b0 = np.minimum(_edge_mean(y, good), _edge_mean(y[:, ::-1], good[:, ::-1]))
    amp = np.maximum(np.sum(np.where(good, y - b0[:, None], 0.0), axis=1), 1e-12)
    p = np.zeros((n, npar))
    p[:, 0], p[:, 1], p[:, 2], p[:, 3] = amp, mu, sig, b0

    # Contiguous windows (the usual case): a pixel's upper edge is the next one's lower
    # edge, so Φ and φ (the costly part, erf is a Python call per value) are evaluated
    # once per edge, with the same values as per pixel side.
    shared = x.shape[1] > 1 and np.array_equal(x[:, 1:] - 0.5, x[:, :-1] + 0.5)
    edges = np.concatenate([x[:, :1] - 0.5, x + 0.5], axis=1) if shared else x

    def model_and_jac(par: np.ndarray, rows: Any = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Model and Jacobian of the problems ``rows`` (a slice or indices) at ``par``."""
        a, m, s = par[:, 0:1], par[:, 1:2], par[:, 2:3]
        if shared:
            ze = (edges[rows] - m) / s
            cdf = normal_cdf(ze)
            pdf = np.exp(-0.5 * ze * ze) * _INV_SQRT_2PI
            zp, zm, php, phm = ze[:, 1:], ze[:, :-1], pdf[:, 1:], pdf[:, :-1]
            g = cdf[:, 1:] - cdf[:, :-1]
        else:
            xr = x[rows]
            zp = (xr + 0.5 - m) / s
            zm = (xr - 0.5 - m) / s
            g = normal_cdf(zp) - normal_cdf(zm)
            php = np.exp(-0.5 * zp * zp) * _INV_SQRT_2PI
            phm = np.exp(-0.5 * zm * zm) * _INV_SQRT_2PI
        jac = np.empty((*g.shape, npar))
        jac[..., 0] = g
        jac[..., 1] = a * (phm - php) / s
        jac[..., 2] = a * (phm * zm - php * zp) / s
        jac[..., 3] = 1.0
        mod = a * g + par[:, 3:4]
        if slope:
            jac[..., 4] = dx[rows]
            mod = mod + par[:, 4:5] * dx[rows]
        return mod, jac

    mod, jac = model_and_jac(p)
    chi2 = np.sum(w * (y - mod) ** 2, axis=1)
    lam = np.full(n, 1e-3)
    active = np.ones(n, dtype=bool)
    eye = np.eye(npar)
    # Converged problems drop out of the iteration: each problem's arithmetic is its
    # own (row subsets of these einsums, solves and sums give the same values), so the
    # rest reach the same result with less work.
    for _ in range(max_iter):
        ids = np.flatnonzero(active)
        if ids.size == 0:
            break
        rows: Any = slice(None) if ids.size == n else ids
        ya, wa = y[rows], w[rows]
        r = ya - mod[rows]
        jtw = jac[rows] * wa[..., None]
        alpha = np.einsum("nmi,nmj->nij", jtw, jac[rows])
        beta = np.einsum("nmi,nm->ni", jtw, r)
        diag = np.einsum("nii->ni", alpha)
        lam_a = lam[rows]
        damped = alpha + lam_a[:, None, None] * eye * np.maximum(diag, 1e-30)[:, :, None]
        try:
            step = np.linalg.solve(damped, beta[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack(
                [np.linalg.lstsq(d, b, rcond=None)[0] for d, b in zip(damped, beta, strict=True)]
            )
        trial = p[rows] + step
        trial[:, 2] = np.clip(trial[:, 2], *sigma_bounds)
        tmod, tjac = model_and_jac(trial, rows)
        tchi2 = np.sum(wa * (ya - tmod) ** 2, axis=1)
        chi2_a = chi2[rows]
        better = tchi2 <= chi2_a
        rel = np.abs(chi2_a - tchi2) / np.maximum(chi2_a, 1e-30)
        won = ids[better]
        p[won] = trial[better]
        mod[won] = tmod[better]
        jac[won] = tjac[better]
        lam_a = np.where(better, lam_a * 0.3, lam_a * 10.0)
        lam[ids] = lam_a
        done = (better & ((rel < 1e-10) | (np.abs(step[:, 1]) < 1e-7))) | (lam_a > 1e8)
        chi2[ids] = np.where(better, tchi2, chi2_a)
        active[ids[done]] = False
    jtw = jac * w[..., None]
    alpha = np.einsum("nmi,nmj->nij", jtw, jac)
    dof = np.maximum(np.sum(w > 0, axis=1) - npar, 1)
    chi2_red = chi2 / dof
    cov = np.full_like(alpha, np.nan)
    det_ok = np.abs(np.linalg.det(alpha)) > 0
    if det_ok.any():
        cov[det_ok] = np.linalg.inv(alpha[det_ok])
    infl = np.maximum(chi2_red, 1.0)
    c_err = np.sqrt(np.abs(cov[:, 1, 1]) * infl)
    a_err = np.sqrt(np.abs(cov[:, 0, 0]) * infl)
    bg = np.zeros((n, 2))
    bg[:, 0] = p[:, 3]
    if slope:
        bg[:, 1] = p[:, 4]
    lo_x = np.where(good, x, np.inf).min(axis=1)
    hi_x = np.where(good, x, -np.inf).max(axis=1)
    ok = (
        det_ok
        & np.isfinite(c_err)
        & (p[:, 0] > 0)
        & (p[:, 2] > sigma_bounds[0] * 1.01)
        & (p[:, 2] < sigma_bounds[1] * 0.99)
        & (p[:, 1] > lo_x)
        & (p[:, 1] < hi_x)
    )
    return GaussFit(
        amplitude=p[:, 0],
        centre=p[:, 1],
        sigma=p[:, 2],
        background=bg,
        centre_err=c_err,
        amplitude_err=a_err,
        chi2_red=chi2_red,
        ok=ok,
    )


def windows(
    profile: np.ndarray,
    variance: np.ndarray,
    centres: np.ndarray,
    half_width: int,
    bad: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut (x, y, weight) windows of ``2*half_width+1`` pixels around integer centres."""
    n = profile.size
    c = np.rint(np.asarray(centres, dtype=np.float64)).astype(np.int64)
    idx = c[:, None] + np.arange(-half_width, half_width + 1)[None, :]
    inside = (idx >= 0) & (idx < n)
    safe = np.clip(idx, 0, n - 1)
    y = profile[safe]
    var = variance[safe]
    w = np.where(inside & np.isfinite(y) & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    if bad is not None:
        w[bad[safe]] = 0.0
    y = np.where(np.isfinite(y), y, 0.0)
    return idx.astype(np.float64), y, w


@dataclass(frozen=True)
class RobustFit:
    """A Chebyshev series fitted with iterative sigma clipping."""

    coefficients: np.ndarray
    domain: tuple[float, float]
    used: np.ndarray  # bool per input point
    rms: float  # unweighted rms of the residuals of the points used
    loo: np.ndarray  # leave-one-out residual of each point used (prediction without it)
    covariance: np.ndarray  # of the coefficients

    def stderr(self, x: np.ndarray | float) -> np.ndarray:
        """Standard error of the fitted curve itself at ``x``."""
        v = chebyshev.chebvander(_map(x, self.domain), self.coefficients.size - 1)
        return np.sqrt(np.einsum("...i,ij,...j->...", v, self.covariance, v))

    @property
    def loo_rms(self) -> float:
        return float(np.sqrt(np.mean(self.loo**2)))

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return chebyshev.chebval(_map(x, self.domain), self.coefficients)


def _map(x: np.ndarray | float, domain: tuple[float, float]) -> np.ndarray:
    lo, hi = domain
    return (2.0 * np.asarray(x, dtype=np.float64) - (lo + hi)) / (hi - lo)


def robust_chebyshev(
    x: np.ndarray,
    y: np.ndarray,
    order: int,
    *,
    sigma: np.ndarray | None = None,
    domain: tuple[float, float] | None = None,
    clip: float = 3.0,
    max_iter: int = 10,
    floor: float = 0.0,
) -> RobustFit:
    """Weighted least-squares Chebyshev fit, clipping points beyond ``clip`` robust sigmas.

    The scatter is measured with the MAD of the normalised residuals rather than their
    rms, so one gross outlier cannot hide the next. ``floor`` is added in quadrature to
    the point errors: formal errors of bright lines understate systematic ones.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    err = np.ones_like(x) if sigma is None else np.hypot(np.asarray(sigma, dtype=np.float64), floor)
    if domain is None:
        domain = (float(x.min()), float(x.max()))
    t = _map(x, domain)
    vander = chebyshev.chebvander(t, order)
    used = np.isfinite(y) & np.isfinite(err) & (err > 0)
    coef = np.zeros(order + 1)
    for _ in range(max_iter):
        if used.sum() <= order + 1:
            raise ValueError(f"too few points ({int(used.sum())}) for order {order}")
        wsq = 1.0 / err[used]
        coef = np.linalg.lstsq(vander[used] * wsq[:, None], y[used] * wsq, rcond=None)[0]
        norm = (y - vander @ coef) / err
        scale = 1.4826 * float(np.median(np.abs(norm[used])))
        if sigma is not None:
            scale = max(scale, 1.0)  # never clip tighter than the stated errors
        new = np.isfinite(norm) & (np.abs(norm) <= clip * max(scale, 1e-12))
        if np.array_equal(new, used):
            break
        used = new
    resid = y - vander @ coef
    a = vander[used] / err[used, None]
    inv = np.linalg.pinv(a.T @ a)
    hat = np.einsum("ij,jk,ik->i", a, inv, a)
    loo = resid[used] / np.maximum(1.0 - hat, 1e-6)
    # Without stated errors the scatter is the error; with them, scatter beyond them
    # (reduced chi-square > 1) inflates the covariance rather than being ignored.
    dof = max(int(used.sum()) - order - 1, 1)
    chi2_red = float(np.sum((resid[used] / err[used]) ** 2)) / dof
    cov = inv * (chi2_red if sigma is None else max(chi2_red, 1.0))
    return RobustFit(
        coefficients=coef,
        domain=(float(domain[0]), float(domain[1])),
        used=used,
        rms=float(np.sqrt(np.mean(resid[used] ** 2))),
        loo=loo,
        covariance=cov,
    )
