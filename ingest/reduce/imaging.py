"""Image quality of a calibrated direct image: sky, noise, sources, PSF width.

The numbers are the ones an observer or an archive user filters on (seeing, sky
brightness, depth), so they are measured the robust way: the sky from clipped box
statistics that ignore stars and the dark corners outside Goodman's circular field, the
PSF from a Moffat fit (the profile real seeing has, with wings a Gaussian misses) to
isolated, unsaturated, well-exposed stars only, and its width reported as FWHM; ``sigma``
is the FWHM / 2.3548 of the equivalent Gaussian.

scipy is imported where it is used: it costs a quarter of a second to load, which a
night of spectra, reduced by the same command, never needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.reduce.ccd import Flag

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class Star:
    x: float  # 0-based column of the centroid in the given array
    y: float
    flux: float  # background-subtracted sum in the measuring aperture (data units)
    peak: float
    fwhm_px: float | None = None  # from the Moffat fit (PSF stars only)
    beta: float | None = None


@dataclass(frozen=True)
class ImageQuality:
    """Per-frame QA; every length in pixels of the given array unless named arcsec."""

    sky_level: float  # median sky per pixel (data units)
    sky_noise: float  # robust rms per pixel about the sky
    n_sources: int  # detections above ``detect_sigma``
    n_psf_stars: int  # isolated stars the PSF was fitted on
    fwhm_px: float | None
    psf_sigma_px: float | None
    fwhm_arcsec: float | None
    psf_sigma_arcsec: float | None
    moffat_beta: float | None
    ellipticity: float | None  # 1 - b/a from second moments, median of the PSF stars
    pixel_scale_arcsec: float | None
    detect_sigma: float
    sources: list[Star] = field(default_factory=list)

    def header_cards(self) -> dict[str, tuple[Any, str]]:
        """FITS cards summarising the QA, for the product's primary header."""

        def r(v: float | None, nd: int) -> Any:
            return None if v is None or not math.isfinite(v) else round(float(v), nd)

        cards: dict[str, tuple[Any, str]] = {
            "QASKY": (r(self.sky_level, 3), "median sky per pixel (BUNIT)"),
            "QASKYRMS": (r(self.sky_noise, 3), "robust sky rms per pixel (BUNIT)"),
            "QANSRC": (self.n_sources, f"sources above {self.detect_sigma:g} sigma"),
            "QANPSF": (self.n_psf_stars, "isolated stars used for the PSF"),
            "QAFWHMPX": (r(self.fwhm_px, 3), "[pix] median PSF FWHM (Moffat)"),
            "QAFWHM": (r(self.fwhm_arcsec, 3), "[arcsec] median PSF FWHM (Moffat)"),
            "QAPSFSIG": (r(self.psf_sigma_arcsec, 3), "[arcsec] FWHM / 2.3548"),
            "QABETA": (r(self.moffat_beta, 2), "median Moffat beta"),
            "QAELLIP": (r(self.ellipticity, 3), "median 1 - b/a of the PSF stars"),
        }
        return {k: v for k, v in cards.items() if v[0] is not None}


def pixel_scale_arcsec(header: Mapping[str, Any]) -> float | None:
    """Mean pixel scale from the CD matrix (or CDELT), arcsec per pixel of the array."""
    try:
        if "CD1_1" in header:
            det = float(header["CD1_1"]) * float(header.get("CD2_2", 0.0)) - float(
                header.get("CD1_2", 0.0)
            ) * float(header.get("CD2_1", 0.0))
            return math.sqrt(abs(det)) * 3600.0
        if "CDELT1" in header and "CDELT2" in header:
            return math.sqrt(abs(float(header["CDELT1"]) * float(header["CDELT2"]))) * 3600.0
    except (TypeError, ValueError):
        return None
    return None


def _box_stats(
    data: np.ndarray, good: np.ndarray, box: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky level and rms per ``box`` x ``box`` cell, and the cell's good fraction.

    Every other pixel of a cell is sorted once: the rms comes from the lower half
    (median - 15.87th percentile), which stars cannot inflate, and the level is the median
    of the values below median + 3 rms, so stars do not drag it up either.
    """
    ny, nx = data.shape
    gy, gx = max(1, ny // box), max(1, nx // box)
    d = data[: gy * box : 2, : gx * box : 2].reshape(gy, box // 2, gx, box // 2)
    g = good[: gy * box : 2, : gx * box : 2].reshape(gy, box // 2, gx, box // 2)
    v = np.where(g, d, np.inf).transpose(0, 2, 1, 3).reshape(gy, gx, -1)
    v = np.sort(v, axis=2)
    n = np.isfinite(v).sum(axis=2)
    frac = n / v.shape[2]

    def at(q: np.ndarray) -> np.ndarray:
        idx = np.clip(q.astype(np.int64), 0, v.shape[2] - 1)
        return np.take_along_axis(v, idx[..., None], axis=2)[..., 0].astype(np.float64)

    empty = n < 8
    with np.errstate(invalid="ignore"):
        med = at((n - 1) * 0.5)
        low = at((n - 1) * 0.1587)
        sigma = np.maximum(med - low, 1e-6)
        k = (v <= (med + 3.0 * sigma)[..., None]).sum(axis=2)
        level = at((k - 1) * 0.5)
    level[empty] = np.nan
    sigma[empty] = np.nan
    return level, sigma, frac


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def _upsample(grid: np.ndarray, shape: tuple[int, int], box: int) -> np.ndarray:
    """Bilinear interpolation of cell values (at cell centres) onto the full array."""
    gy, gx = grid.shape
    cy = (np.arange(gy) + 0.5) * box - 0.5
    cx = (np.arange(gx) + 0.5) * box - 0.5
    ys = np.arange(shape[0], dtype=np.float64)
    xs = np.arange(shape[1], dtype=np.float64)
    cols = np.empty((shape[0], gx))
    for j in range(gx):
        cols[:, j] = np.interp(ys, cy, grid[:, j])
    out = np.empty(shape, dtype=np.float32)
    for i in range(shape[0]):
        out[i] = np.interp(xs, cx, cols[i])
    return out


_SUB = (np.arange(3) - 1.0) / 3.0  # 3x3 sub-pixel samples: the model is pixel-integrated


def _moffat(params: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Pixel-averaged Moffat: at 2x2 binning the PSF is under 3 px wide, and a model
    sampled at pixel centres would read the pixel's own width as seeing."""
    amp, x0, y0, alpha, beta, bkg = params
    acc = np.zeros(np.broadcast_shapes(yy.shape, xx.shape))
    for oy in _SUB:
        for ox in _SUB:
            r2 = (xx + ox - x0) ** 2 + (yy + oy - y0) ** 2
            acc += (1.0 + r2 / alpha**2) ** (-beta)
    return bkg + amp * acc / _SUB.size**2


def _fit_moffat(
    stamp: np.ndarray, weight: np.ndarray, fwhm_guess: float
) -> tuple[float, float, float, float] | None:
    """Fit a circular Moffat; returns (x, y, fwhm, beta) in stamp pixels or None."""
    from scipy import optimize

    ny, nx = stamp.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    beta0 = 3.0
    alpha0 = fwhm_guess / (2.0 * math.sqrt(2 ** (1 / beta0) - 1.0))
    bkg0 = float(np.median(np.concatenate([stamp[0], stamp[-1], stamp[:, 0], stamp[:, -1]])))
    amp0 = float(stamp.max() - bkg0)
    p0 = np.array([amp0, (nx - 1) / 2, (ny - 1) / 2, alpha0, beta0, bkg0])
    lo = [0.0, 0.0, 0.0, 0.3, 1.05, -np.inf]
    hi = [np.inf, nx - 1.0, ny - 1.0, 4.0 * nx, 20.0, np.inf]

    def resid(p: np.ndarray) -> np.ndarray:
        return ((_moffat(p, yy, xx) - stamp) * weight).ravel()

    try:
        sol = optimize.least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", max_nfev=200)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not sol.success:
        return None
    _amp, x0, y0, alpha, beta, _bkg = sol.x
    fwhm = 2.0 * alpha * math.sqrt(2 ** (1.0 / beta) - 1.0)
    return float(x0), float(y0), float(fwhm), float(beta)


def image_quality(
    data: np.ndarray,
    header: Mapping[str, Any] | None = None,
    *,
    mask: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    detect_sigma: float = 5.0,
    box: int = 64,
    psf_snr: float = 50.0,
    max_psf_stars: int = 60,
    saturation: float | None = None,
) -> ImageQuality:
    """Measure sky, noise, sources and PSF of a calibrated image (pure function).

    Pixels flagged in ``mask`` (cosmic rays, saturation, defects, outside the field) are
    ignored; so are cells of the sky grid that are mostly dark (Goodman's circular field
    leaves the corners unlit even without a flat). Detection is on the image smoothed
    with a Gaussian matched to a ~1" PSF, ``detect_sigma`` above the local sky noise.
    PSF stars are detections with S/N >= ``psf_snr``, no other detection within 4 FWHM,
    no flagged pixel in their stamp and a peak below ``saturation`` (when given).
    """
    from scipy import ndimage

    img = np.asarray(data, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError("image must be 2-D")
    flagged = np.zeros(img.shape, bool) if mask is None else np.asarray(mask) != 0
    good = ~flagged & np.isfinite(img)
    # saturated stars are still sources (their clipped top is bright): detect them, but
    # never fit them nor count them as sky
    saturated = (
        np.zeros(img.shape, bool)
        if mask is None
        else (np.asarray(mask) & np.uint16(Flag.SATURATED)) != 0
    )
    usable = (good | saturated) & np.isfinite(img)
    scale = pixel_scale_arcsec(header) if header is not None else None

    # the lit field: Goodman's circular field leaves dark corners even without a flat
    fwhm0 = (1.0 / scale) if scale else 4.0  # ~1" in pixels
    rough = ndimage.uniform_filter(np.where(good, img, 0.0).astype(np.float32), 9)
    level0 = float(np.median(rough[::8, ::8]))
    top = float(np.percentile(rough[::8, ::8], 90))
    lit_px = rough > 0.5 * max(top, level0)
    # keep away from the field edge by a few PSF widths: its gradient is not sky
    margin = 2 * max(3, math.ceil(3 * fwhm0)) + 1
    lit_px = ndimage.uniform_filter(lit_px.astype(np.float32), margin) > 0.999

    # sky: box statistics over lit, unflagged pixels
    med, rms, frac = _box_stats(img, good & lit_px, box)
    lit = (frac > 0.25) & np.isfinite(med)
    if not lit.any():
        raise ValueError("no usable sky: every cell is masked or unlit")
    sky_level = float(np.nanmedian(med[lit]))
    sky_noise = float(np.nanmedian(rms[lit]))
    grid = np.where(lit, med, np.nan)
    if np.isnan(grid).any():  # dark or masked cells: nearest lit value, for interpolation
        idx = ndimage.distance_transform_edt(
            np.isnan(grid), return_distances=False, return_indices=True
        )
        grid = grid[tuple(idx)]
    background = _upsample(grid, img.shape, box)

    # detection on the smoothed residual
    resid = np.where(usable, img - background, 0.0).astype(np.float32)
    bad_cols = _column_defects(resid, lit_px & good)
    if bad_cols.size:  # a hot column smoothed along its length looks like a row of stars
        resid[:, bad_cols] = 0.0
        usable = usable.copy()
        usable[:, bad_cols] = False
        flagged = flagged.copy()
        flagged[:, bad_cols] = True
    ksig = max(fwhm0 / FWHM_PER_SIGMA, 0.8)
    smooth = ndimage.gaussian_filter(resid, ksig, mode="constant")
    noise_smooth = sky_noise / (2.0 * math.sqrt(math.pi) * ksig)  # noise of the smoothed map
    peaks = (smooth == ndimage.maximum_filter(smooth, size=5)) & (
        smooth > detect_sigma * noise_smooth
    )
    peaks &= lit_px & usable
    py, px = np.nonzero(peaks)
    n_sources = int(py.size)

    # centroids and fluxes in a small aperture
    r_ap = max(2, math.ceil(1.5 * fwhm0))
    stars: list[Star] = []
    ny, nx = img.shape
    for y, x in zip(py, px, strict=True):
        y0, y1 = max(0, y - r_ap), min(ny, y + r_ap + 1)
        x0, x1 = max(0, x - r_ap), min(nx, x + r_ap + 1)
        cut = resid[y0:y1, x0:x1].astype(np.float64)
        w = np.clip(cut, 0, None)
        tot = w.sum()
        if tot <= 0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        stars.append(
            Star(
                x=float((w * xx).sum() / tot),
                y=float((w * yy).sum() / tot),
                flux=float(cut.sum()),
                peak=float(img[y, x]),
            )
        )

    # PSF on isolated, bright, clean stars
    fwhms: list[float] = []
    betas: list[float] = []
    ellips: list[float] = []
    fitted: dict[int, Star] = {}
    if stars:
        xy = np.array([(s.x, s.y) for s in stars])
        flux = np.array([s.flux for s in stars])
        ap_noise = sky_noise * math.sqrt(math.pi) * r_ap
        snr = flux / max(ap_noise, 1e-12)
        iso_r = 4.0 * fwhm0
        d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        isolated = d2.min(axis=1) > iso_r**2 if len(stars) > 1 else np.ones(1, bool)
        order = np.argsort(-snr)
        half = max(4, math.ceil(2.5 * fwhm0))
        for i in order:
            if len(fwhms) >= max_psf_stars:
                break
            if snr[i] < psf_snr:
                break
            if not isolated[i]:
                continue
            s = stars[i]
            if saturation is not None and s.peak >= saturation:
                continue
            cy, cx = round(s.y), round(s.x)
            y0, y1, x0, x1 = cy - half, cy + half + 1, cx - half, cx + half + 1
            if y0 < 0 or x0 < 0 or y1 > ny or x1 > nx:
                continue
            if flagged[y0:y1, x0:x1].any() or not lit_px[y0:y1, x0:x1].all():
                continue
            stamp = img[y0:y1, x0:x1].astype(np.float64)
            if variance is not None:
                wgt = 1.0 / np.sqrt(np.maximum(variance[y0:y1, x0:x1], 1e-6))
            else:
                wgt = 1.0 / np.sqrt(sky_noise**2 + np.clip(stamp - sky_level, 0, None))
            fit = _fit_moffat(stamp, wgt, fwhm0)
            if fit is None:
                continue
            fx, fy, fwhm, beta = fit
            if not (0.5 < fwhm < 6.0 * fwhm0) or abs(fx - half) > 2 or abs(fy - half) > 2:
                continue
            fwhms.append(fwhm)
            betas.append(beta)
            ellips.append(_ellipticity(stamp - np.median(stamp[0]), fx, fy, fwhm))
            fitted[int(i)] = Star(s.x, s.y, s.flux, s.peak, fwhm, beta)
    stars = [fitted.get(i, s) for i, s in enumerate(stars)]

    fwhm_px = float(np.median(fwhms)) if fwhms else None
    sigma_px = fwhm_px / FWHM_PER_SIGMA if fwhm_px is not None else None
    return ImageQuality(
        sky_level=sky_level,
        sky_noise=sky_noise,
        n_sources=n_sources,
        n_psf_stars=len(fwhms),
        fwhm_px=fwhm_px,
        psf_sigma_px=sigma_px,
        fwhm_arcsec=fwhm_px * scale if (fwhm_px is not None and scale) else None,
        psf_sigma_arcsec=sigma_px * scale if (sigma_px is not None and scale) else None,
        moffat_beta=float(np.median(betas)) if betas else None,
        ellipticity=float(np.median(ellips)) if ellips else None,
        pixel_scale_arcsec=scale,
        detect_sigma=detect_sigma,
        sources=stars,
    )


def _column_defects(resid: np.ndarray, lit: np.ndarray, nsigma: float = 8.0) -> np.ndarray:
    """Columns whose sky-subtracted median stands out: hot or dead columns that no bad-pixel
    mask covered (e.g. an imaging ROI without its own biases)."""
    ncol = lit.sum(axis=0)
    ok = ncol > 0.2 * lit.shape[0]
    if ok.sum() < 10:
        return np.zeros(0, dtype=np.int64)
    vals = np.where(lit, resid, np.nan)
    with np.errstate(all="ignore"), _quiet():
        colmed = np.nanmedian(vals[::2], axis=0)
    good = ok & np.isfinite(colmed)
    centre = np.median(colmed[good])
    spread = 1.4826 * np.median(np.abs(colmed[good] - centre))
    return np.flatnonzero(good & (np.abs(colmed - centre) > nsigma * max(spread, 1e-6)))


def _ellipticity(stamp: np.ndarray, x0: float, y0: float, fwhm: float) -> float:
    """1 - b/a from intensity-weighted second moments within 1.5 FWHM of the centre."""
    ny, nx = stamp.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    w = np.clip(stamp, 0, None) * (((xx - x0) ** 2 + (yy - y0) ** 2) <= (1.5 * fwhm) ** 2)
    tot = w.sum()
    if tot <= 0:
        return math.nan
    mxx = (w * (xx - x0) ** 2).sum() / tot
    myy = (w * (yy - y0) ** 2).sum() / tot
    mxy = (w * (xx - x0) * (yy - y0)).sum() / tot
    common = math.sqrt(max(((mxx - myy) / 2) ** 2 + mxy**2, 0.0))
    a2 = (mxx + myy) / 2 + common
    b2 = (mxx + myy) / 2 - common
    if a2 <= 0 or b2 <= 0:
        return math.nan
    return 1.0 - math.sqrt(b2 / a2)
