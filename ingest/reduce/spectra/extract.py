"""Sky subtraction and 1-D extraction along a trace: optimal (Horne 1986) and aperture.

Every pixel is addressed by its offset from the trace centre, so tilted and curved traces
need no resampling of the image (which would correlate the noise). The sky is a low-order
polynomial along the slit per column, fitted in side bands; its own uncertainty is
carried into the extracted variance instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev

from .slit import SlitEdges
from .trace import Trace

_SKY_SCALE = 20.0  # px: sky polynomials are in (offset / _SKY_SCALE) to stay well conditioned


@dataclass(frozen=True)
class NoiseModel:
    """CCD noise, so that variances can be predicted from a model rather than the data.

    Horne's point: weights from the noisy data itself bias an optimal extraction low,
    because pixels that fluctuated down get more weight.
    """

    gain: float  # electrons per data unit (1.0 for data in electrons)
    read_noise: float  # electrons rms

    def variance(self, expected: np.ndarray) -> np.ndarray:
        return (self.read_noise / self.gain) ** 2 + np.maximum(expected, 0.0) / self.gain


@dataclass(frozen=True)
class Aperture:
    """Extraction window as offsets (px) from the trace centre along the slit."""

    lower: float
    upper: float

    @classmethod
    def around(cls, trace: Trace, n_fwhm: float = 2.0) -> Aperture:
        """Symmetric window of ±``n_fwhm`` FWHM: ±2 FWHM holds all of a Gaussian's light."""
        h = n_fwhm * trace.fwhm
        return cls(-h, h)


@dataclass(frozen=True)
class SkyBands:
    """Sky regions as (lower, upper) offsets from the trace, and the polynomial order."""

    bands: tuple[tuple[float, float], ...]
    order: int = 1


def default_sky_bands(
    trace: Trace,
    ny: int,
    edges: SlitEdges | None = None,
    others: Sequence[float] = (),
    *,
    gap_fwhm: float = 4.0,
    width: float | None = None,
    order: int = 1,
) -> SkyBands:
    """Bands on both sides of the target, clear of its wings, other targets and slit ends.

    ``others`` are rows of other targets (e.g. from ``find_targets``) at the trace's
    reference column; a band is trimmed to stay ``gap_fwhm`` FWHM away from each.
    """
    fw = trace.fwhm
    gap = gap_fwhm * fw
    width = width if width is not None else max(12.0, 8.0 * fw)
    xs = np.arange(trace.n_columns, dtype=np.float64)
    tc = trace(xs)
    if edges is not None:
        lo_e, hi_e = edges.at(xs)
        lim_lo = float(np.max(lo_e - tc)) + 3.0
        lim_hi = float(np.min(hi_e - tc)) - 3.0
    else:
        lim_lo = float(np.max(-tc)) + 3.0
        lim_hi = float(np.min(ny - 1 - tc)) - 3.0
    xm = 0.5 * (trace.n_columns - 1)
    centre = float(trace(xm))
    bands: list[tuple[float, float]] = []
    for lo, hi in ((max(-gap - width, lim_lo), -gap), (gap, min(gap + width, lim_hi))):
        for other in others:
            off = other - centre
            if abs(off) < 0.5 * fw:
                continue  # the target itself
            if lo - gap < off < hi + gap:
                if off < 0:
                    lo = max(lo, off + gap)
                else:
                    hi = min(hi, off - gap)
        if hi - lo >= 3.0:
            bands.append((lo, hi))
    if not bands:
        raise ValueError("no room for sky bands between the target and the slit ends")
    return SkyBands(tuple(bands), order)


@dataclass(frozen=True)
class SkyModel:
    """Per-column sky polynomial in the offset from the trace, with its covariance."""

    coefficients: np.ndarray  # (order + 1, nx), power series in offset / _SKY_SCALE
    covariance: np.ndarray  # (nx, order + 1, order + 1)
    valid: np.ndarray  # columns with enough sky pixels for a fit
    n_pixels: np.ndarray  # pixels used per column
    n_rejected: int
    bands: SkyBands

    def basis(self, offset: np.ndarray) -> np.ndarray:
        """(order + 1, *offset.shape) powers of the scaled offset."""
        s = np.asarray(offset, dtype=np.float64) / _SKY_SCALE
        return np.stack([s**j for j in range(self.coefficients.shape[0])])

    def evaluate(self, offset: np.ndarray) -> np.ndarray:
        """Sky per pixel at ``offset`` (m, nx) from the trace."""
        return np.einsum("jmx,jx->mx", self.basis(offset), self.coefficients)

    def variance_of_sum(self, weight: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Variance of ``sum_y weight * sky`` per column, from the fit covariance."""
        s = np.einsum("jmx,mx->xj", self.basis(offset), weight)
        return np.einsum("xj,xjk,xk->x", s, self.covariance, s)


def _offsets(trace: Trace, rows: tuple[int, int], nx: int) -> np.ndarray:
    ys = np.arange(rows[0], rows[1], dtype=np.float64)[:, None]
    return ys - trace(np.arange(nx, dtype=np.float64))[None, :]


def fit_sky(
    image: np.ndarray,
    variance: np.ndarray,
    trace: Trace,
    bands: SkyBands,
    mask: np.ndarray | None = None,
    *,
    edges: SlitEdges | None = None,
    clip: float = 3.0,
    max_iter: int = 5,
) -> SkyModel:
    """Fit the sky per column in ``bands``, rejecting outliers (stars, cosmic rays) by
    ``clip`` sigma; ``edges``, when given, keep the fit off unilluminated rows."""
    ny, nx = np.shape(image)
    xs = np.arange(nx, dtype=np.float64)
    tc = trace(xs)
    lo = min(b[0] for b in bands.bands)
    hi = max(b[1] for b in bands.bands)
    r0 = max(int(np.floor(tc.min() + lo)), 0)
    r1 = min(int(np.ceil(tc.max() + hi)) + 1, ny)
    off = _offsets(trace, (r0, r1), nx)
    use = np.zeros(off.shape, dtype=bool)
    for a, b in bands.bands:
        use |= (off >= a) & (off <= b)
    d = np.asarray(image[r0:r1], dtype=np.float64)  # only the rows used, in float64
    v = np.asarray(variance[r0:r1], dtype=np.float64)
    use &= np.isfinite(d) & np.isfinite(v) & (v > 0)
    if mask is not None:
        use &= ~np.asarray(mask[r0:r1], dtype=bool)
    if edges is not None:
        lo_e, hi_e = edges.at(xs)
        ys = np.arange(r0, r1, dtype=np.float64)[:, None]
        use &= (ys >= lo_e[None, :] + 1.5) & (ys <= hi_e[None, :] - 1.5)
    npar = bands.order + 1
    basis = np.stack([(off / _SKY_SCALE) ** j for j in range(npar)])  # (j, m, x)
    w = np.where(use, 1.0 / np.where(v > 0, v, 1.0), 0.0)
    d0 = np.where(use, d, 0.0)
    n_start = int(use.sum())
    coef = np.zeros((npar, nx))
    cov = np.zeros((nx, npar, npar))
    model = np.zeros_like(d)
    # After the first pass only the columns that lost pixels are refitted: the others
    # would get the same fit and reject nothing new. Column by column the arithmetic is
    # that of a whole-frame pass, except the data sums, which einsum adds in another
    # order over fewer columns and so are always taken whole.
    cols = np.arange(nx)
    for _ in range(max_iter):
        every = cols.size == nx
        b_c = basis if every else basis[:, :, cols]
        alpha = np.einsum("jmx,kmx,mx->xjk", b_c, b_c, w if every else w[:, cols])
        beta = np.einsum("jmx,mx->xj", basis, w * d0)[cols]
        # Columns with too few sky pixels get a singular system: regularise, flag later.
        alpha += np.eye(npar)[None] * 1e-12 * np.maximum(alpha[:, :1, :1], 1e-30)
        cov[cols] = c_c = np.linalg.inv(alpha)
        coef[:, cols] = c_k = np.einsum("xjk,xk->jx", c_c, beta)
        model[:, cols] = m_c = np.einsum("jmx,jx->mx", b_c, c_k)
        if every:
            resid = (d - m_c) * np.sqrt(w)
            bad = use & (np.abs(resid) > clip)
        else:
            resid = (d[:, cols] - m_c) * np.sqrt(w[:, cols])
            bad = use[:, cols] & (np.abs(resid) > clip)
        hit = np.flatnonzero(bad.any(axis=0))
        if hit.size == 0:
            break
        cols, bad = cols[hit], bad[:, hit]
        keep = use[:, cols] & ~bad
        use[:, cols] = keep
        w[:, cols] = np.where(keep, w[:, cols], 0.0)
        d0[:, cols] = np.where(keep, d0[:, cols], 0.0)
    n_pix = use.sum(axis=0)
    # Sky scatter beyond the variance (flat-field residuals) inflates the covariance.
    chi2 = np.sum(((d - model) ** 2) * w, axis=0)  # model is that of the final coef
    red = chi2 / np.maximum(n_pix - npar, 1)
    cov = cov * np.maximum(red, 1.0)[:, None, None]
    valid = n_pix > npar + 1
    coef[:, ~valid] = 0.0
    cov[~valid] = 0.0
    return SkyModel(
        coefficients=coef,
        covariance=cov,
        valid=valid,
        n_pixels=n_pix,
        n_rejected=n_start - int(use.sum()),
        bands=bands,
    )


@dataclass(frozen=True)
class Extraction:
    """A 1-D spectrum per column of the input frame (pixel ``x`` = array column ``x``)."""

    flux: np.ndarray  # data units summed along the slit
    variance: np.ndarray
    mask: np.ndarray  # True where the value is unreliable (too much of the profile masked)
    sky: np.ndarray  # sky summed over the aperture, same units as ``flux``
    method: str  # "optimal" or "aperture"
    aperture: Aperture
    n_rejected: int  # pixels rejected as outliers during the extraction

    @property
    def error(self) -> np.ndarray:
        return np.sqrt(self.variance)


def _window(trace: Trace, aperture: Aperture, ny: int, nx: int) -> tuple[int, int, np.ndarray]:
    tc = trace(np.arange(nx, dtype=np.float64))
    r0 = max(int(np.floor(tc.min() + aperture.lower)) - 1, 0)
    r1 = min(int(np.ceil(tc.max() + aperture.upper)) + 2, ny)
    if r1 - r0 < 2:
        raise ValueError("aperture falls outside the frame")
    return r0, r1, _offsets(trace, (r0, r1), nx)


def aperture_weights(offset: np.ndarray, aperture: Aperture) -> np.ndarray:
    """Fraction of each pixel (centred at ``offset``) inside the aperture."""
    lo = np.maximum(offset - 0.5, aperture.lower)
    hi = np.minimum(offset + 0.5, aperture.upper)
    return np.clip(hi - lo, 0.0, 1.0)


def extract_aperture(
    image: np.ndarray,
    variance: np.ndarray,
    trace: Trace,
    aperture: Aperture,
    mask: np.ndarray | None = None,
    *,
    sky: SkyModel | None = None,
) -> Extraction:
    """Sum the pixels inside the aperture, edge pixels by the fraction they cover.

    Used for arcs (never sky-subtracted: the lamp fills the slit) and as the robust
    reference for the optimal extraction. A column with a masked pixel in the aperture
    is summed without it and flagged, since its flux is then an underestimate.
    """
    ny, nx = np.shape(image)
    r0, r1, off = _window(trace, aperture, ny, nx)
    wt = aperture_weights(off, aperture)
    d = np.asarray(image[r0:r1], dtype=np.float64)
    v = np.asarray(variance[r0:r1], dtype=np.float64)
    bad = ~np.isfinite(d) | ~np.isfinite(v)
    if mask is not None:
        bad |= np.asarray(mask[r0:r1], dtype=bool)
    good_w = np.where(bad, 0.0, wt)
    sky_pix = sky.evaluate(off) if sky is not None else np.zeros_like(off)
    flux = np.sum(good_w * np.where(bad, 0.0, d - sky_pix), axis=0)
    fvar = np.sum(good_w**2 * np.where(bad, 0.0, v), axis=0)
    sky_sum = np.sum(good_w * sky_pix, axis=0)
    if sky is not None:
        fvar = fvar + sky.variance_of_sum(good_w, off)
    col_bad = np.any(bad & (wt > 0), axis=0) | ~np.isfinite(fvar)
    if sky is not None:
        col_bad |= ~sky.valid
    return Extraction(
        flux=flux,
        variance=fvar,
        mask=col_bad,
        sky=sky_sum,
        method="aperture",
        aperture=aperture,
        n_rejected=0,
    )


def _profile_fit(
    q: np.ndarray,
    w: np.ndarray,
    off: np.ndarray,
    knots: np.ndarray,
    xt: np.ndarray,
    order: int,
) -> np.ndarray:
    """Least-squares profile F(offset, x): linear interpolation between ``knots`` along
    the slit times a Chebyshev series along the dispersion; returns F at every pixel.

    The tilt of the trace samples the profile at all sub-pixel phases, which is what
    lets knots closer than a pixel be determined; a small curvature penalty keeps them
    defined when the trace is perfectly aligned with the rows.
    """
    nk = knots.size
    h = knots[1] - knots[0]
    pos = np.clip((off - knots[0]) / h, 0.0, nk - 1 - 1e-9)
    k = np.floor(pos).astype(np.int64)
    t = pos - k
    cheb = chebyshev.chebvander(xt, order)  # (nx, order+1)
    npar = nk * (order + 1)
    # Each pixel touches two knots x (order + 1) Chebyshev terms: the normal matrix is
    # block-tridiagonal, accumulated one knot interval at a time. The used pixels are
    # taken in knot order directly (a stable radix sort of small keys, in row-major
    # order within a knot), so each array is gathered once.
    flat = np.flatnonzero(w > 0)
    key = k.ravel()[flat]
    flat = flat[np.argsort(key.astype(np.min_scalar_type(nk - 1)), kind="stable")]
    kk, tt, qq, ww = k.ravel()[flat], t.ravel()[flat], q.ravel()[flat], w.ravel()[flat]
    cc = cheb[flat % off.shape[1]]
    val = np.empty((flat.size, 2 * (order + 1)))
    np.multiply((1.0 - tt)[:, None], cc, out=val[:, : order + 1])
    np.multiply(tt[:, None], cc, out=val[:, order + 1 :])
    ata = np.zeros((npar, npar))
    atb = np.zeros(npar)
    starts = np.flatnonzero(np.diff(kk, prepend=-1))
    for a, b in zip(starts, [*starts[1:], kk.size], strict=True):
        v = val[a:b]
        vw = v * ww[a:b, None]
        j = slice(int(kk[a]) * (order + 1), (int(kk[a]) + 2) * (order + 1))
        ata[j, j] += vw.T @ v
        atb[j] += vw.T @ qq[a:b]
    d2 = np.zeros((nk - 2, nk))
    for i in range(nk - 2):
        d2[i, i : i + 3] = (1.0, -2.0, 1.0)
    pen = np.kron(d2.T @ d2, np.eye(order + 1))
    lam = (
        1e-3 * float(np.median(np.diag(ata)[np.diag(ata) > 0])) if np.any(np.diag(ata) > 0) else 1.0
    )
    coef = np.linalg.solve(ata + lam * pen + 1e-9 * lam * np.eye(npar), atb)
    a = coef.reshape(nk, order + 1)
    at_k = np.einsum("kj,xj->kx", a, cheb)  # profile at each knot and column
    cols = np.broadcast_to(np.arange(off.shape[1]), off.shape)
    return (1.0 - t) * at_k[k, cols] + t * at_k[np.minimum(k + 1, nk - 1), cols]


def extract_optimal(
    image: np.ndarray,
    variance: np.ndarray,
    trace: Trace,
    aperture: Aperture,
    mask: np.ndarray | None = None,
    *,
    sky: SkyModel | None = None,
    noise: NoiseModel | None = None,
    clip: float = 5.0,
    profile_order: int = 2,
    knot_spacing: float = 0.5,
    max_iter: int = 20,
) -> Extraction:
    """Horne (1986) optimal extraction with an empirical spatial profile.

    The profile is measured from the sky-subtracted data, normalised by the aperture sum,
    and smoothed along the dispersion (see ``_profile_fit``); weights are ``P / V`` with
    ``V`` predicted by ``noise`` from the model when given (it then replaces the input
    variance, which only seeds the first pass), else the input variance.
    Outliers beyond ``clip`` sigma are rejected one per column per pass, the worst
    first, so a cosmic ray cannot drag its neighbours out with it.
    """
    ny, nx = np.shape(image)
    r0, r1, off = _window(trace, aperture, ny, nx)
    inside = (off >= aperture.lower - 0.5) & (off <= aperture.upper + 0.5)
    d = np.asarray(image[r0:r1], dtype=np.float64)
    v_in = np.asarray(variance[r0:r1], dtype=np.float64)
    good = inside & np.isfinite(d) & np.isfinite(v_in) & (v_in > 0)
    if mask is not None:
        good &= ~np.asarray(mask[r0:r1], dtype=bool)
    sky_pix = sky.evaluate(off) if sky is not None else np.zeros_like(off)
    ds = np.where(np.isfinite(d), d - sky_pix, 0.0)
    cols = np.arange(nx)
    xt = np.linspace(-1.0, 1.0, nx)
    knots = np.arange(aperture.lower - 1.0, aperture.upper + 1.0 + knot_spacing, knot_spacing)
    wt_ap = aperture_weights(off, aperture)
    n_in = np.maximum(inside.sum(axis=0), 1)
    f = np.sum(np.where(good, ds, 0.0) * wt_ap, axis=0) * (
        n_in / np.maximum((good & inside).sum(axis=0), 1)
    )
    v = np.where(good, v_in, np.inf)
    n_rej = 0
    prof = np.zeros_like(off)
    fvar = np.full(nx, np.inf)
    for _outer in range(2):
        fv0 = np.sum(np.where(good, v_in, 0.0) * wt_ap**2, axis=0)
        usable = (f > 3.0 * np.sqrt(np.maximum(fv0, 1e-30)))[None, :] & good
        q = np.where(usable, ds / np.where(f > 0, f, 1.0), 0.0)
        wq = np.where(usable, f[None, :] ** 2 / np.where(good, v, 1.0), 0.0)
        if not usable.any():
            raise ValueError("target too faint along the whole trace for a profile")
        prof = np.clip(_profile_fit(q, wq, off, knots, xt, profile_order), 0.0, None)
        prof = np.where(inside, prof, 0.0)
        prof /= np.maximum(prof.sum(axis=0), 1e-30)
        for _ in range(max_iter):
            model = f[None, :] * prof
            v = noise.variance(model + sky_pix) if noise is not None else v_in
            v = np.where(good, np.maximum(v, 1e-30), np.inf)
            den = np.sum(np.where(good, prof**2 / v, 0.0), axis=0)
            num = np.sum(np.where(good, prof * ds / v, 0.0), axis=0)
            f = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
            fvar = np.where(den > 0, 1.0 / np.where(den > 0, den, 1.0), np.inf)
            r2 = np.where(good, (ds - f[None, :] * prof) ** 2 / v, 0.0)
            worst = np.argmax(r2, axis=0)
            hit = r2[worst, cols] > clip**2
            if not hit.any():
                break
            good[worst[hit], cols[hit]] = False
            n_rej += int(hit.sum())
    # columns without usable pixels keep fvar = inf (flagged below) and no weights
    weights = np.where(good, prof / v, 0.0) * np.where(np.isfinite(fvar), fvar, 0.0)[None, :]
    sky_sum = np.sum(sky_pix * wt_ap, axis=0)
    if sky is not None:
        fvar = fvar + sky.variance_of_sum(weights, off)
    covered = np.sum(np.where(good, prof, 0.0), axis=0)
    col_bad = (covered < 0.5) | ~np.isfinite(fvar)
    if sky is not None:
        col_bad |= ~sky.valid
    return Extraction(
        flux=f,
        variance=fvar,
        mask=col_bad,
        sky=sky_sum,
        method="optimal",
        aperture=aperture,
        n_rejected=n_rej,
    )
