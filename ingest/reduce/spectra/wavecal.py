"""Wavelength calibration of an extracted arc against a reference lamp and its line list.

Three steps, each narrowing what the next has to search:

1. Cross-correlation with the reference lamp spectrum over a grid of scales gives a first
   pixel-to-wavelength map good to a fraction of a pixel (the peak is interpolated, so the
   lag is not restricted to whole pixels).
2. Every arc line is fitted with a pixel-integrated Gaussian; lines are matched to the
   catalogue (NIST wavelengths, strengths as the reference lamp shows them), and catalogue
   lines whose centroid a neighbour would pull are set aside as blends before any fit.
3. A Chebyshev series is fitted with sigma clipping; its order is chosen by leave-one-out
   cross-validation, and the residuals reported are those of the lines actually used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.polynomial import chebyshev
from numpy.typing import ArrayLike

from ingest import refdata

from ._fit import FWHM_PER_SIGMA, GaussFit, fit_gaussians, pixel_gaussian, robust_chebyshev, windows


@dataclass(frozen=True)
class CatalogueLine:
    wavelength: float  # air, Å
    strength: float  # relative to the lamp's strongest line
    species: str


@dataclass(frozen=True)
class LampTemplate:
    """A calibrated reference lamp spectrum (unbinned pixels) and its line catalogue."""

    reference: refdata.ReferenceSpectrum
    lines: tuple[CatalogueLine, ...]
    fwhm: float  # of the reference lines, reference pixels

    @property
    def name(self) -> str:
        return self.reference.path.name

    def wavelength(self, u: np.ndarray | float) -> np.ndarray:
        return self.reference.wavelength(u)


def load_lamp_template(ref_dir: Path, wavmode: str, lamp: str) -> LampTemplate:
    """Read the reference lamp of a mode (``"400_M1"``, ``"HgArNe"``) and its lines.

    Line strengths are measured on the reference spectrum itself (NIST intensities are
    not comparable between species), so blends can be judged from how strong each
    neighbour really is in this lamp. This reads files: call it once per setup and pass
    the (picklable) template to the pure steps.
    """
    ref = refdata.load_reference_spectrum(refdata.find_reference_spectrum(ref_dir, wavmode, lamp))
    nist = [
        line
        for el in refdata.lamp_elements([lamp])
        for line in refdata.load_nist_lines(ref_dir, el)
    ]
    strengths = refdata.measure_line_strengths(ref, nist)
    return LampTemplate(
        reference=ref,
        lines=tuple(CatalogueLine(s.wavelength, s.strength, s.species) for s in strengths),
        fwhm=refdata.measured_fwhm(ref),
    )


@dataclass(frozen=True)
class FirstGuess:
    """Cross-correlation map from arc pixels ``x`` to reference pixels ``u``.

    ``u = c + scale * (binning * x + (binning - 1) / 2 + offset - c) + shift`` with
    ``c`` the reference's centre pixel: binned pixel ``x`` covers unbinned pixels
    ``binning * x ... binning * x + binning - 1`` of a frame starting ``offset`` unbinned
    pixels after the reference's first pixel.
    """

    shift: float  # reference pixels
    scale: float
    peak: float  # normalised cross-correlation at the maximum
    binning: int
    offset: float
    centre: float

    def u(self, x: np.ndarray | float) -> np.ndarray:
        b = self.binning
        ub = b * np.asarray(x, dtype=np.float64) + (b - 1) / 2.0 + self.offset
        return self.centre + self.scale * (ub - self.centre) + self.shift


def _baseline(flux: np.ndarray, width: int) -> np.ndarray:
    """Lower envelope (running minimum, then running mean) under the lines."""
    half = max(width // 2, 1)
    pad = np.pad(flux, half, mode="edge")
    low = np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1).min(axis=1)
    pad = np.pad(low, half, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1).mean(axis=1)


def _compress(signal: np.ndarray) -> np.ndarray:
    """Square-root stretch: the brightest lines must not decide the correlation alone.

    Along the last axis, so a batch of models is stretched in one pass (row by row the
    same arithmetic: each mean is one contiguous reduction, each norm one dot product).
    """
    s = np.sqrt(np.clip(signal, 0.0, None))
    s = s - s.mean(axis=-1, keepdims=True)
    if s.ndim == 1:
        return s / max(float(np.linalg.norm(s)), 1e-30)
    norms = np.array([max(float(np.linalg.norm(row)), 1e-30) for row in s])
    return s / norms[:, None]


def _peak_2d(table: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """Sub-grid offsets of the maximum from a quadratic fit to its 3x3 neighbourhood.

    Fitted jointly, because shift and scale are correlated whenever the lamp's lines
    crowd one end of the spectrum; on the logarithm when possible, since a
    cross-correlation peak is close to a Gaussian and a parabola would pull it toward
    the grid point.
    """
    if not (0 < i < table.shape[0] - 1 and 0 < j < table.shape[1] - 1):
        return 0.0, 0.0
    z = table[i - 1 : i + 2, j - 1 : j + 2]
    z = np.log(z) if np.all(z > 0) else z
    u, v = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")
    design = np.stack(
        [np.ones(9), u.ravel(), v.ravel(), u.ravel() ** 2, v.ravel() ** 2, (u * v).ravel()], axis=1
    )
    _, bu, bv, auu, avv, auv = np.linalg.lstsq(design, z.ravel(), rcond=None)[0]
    hess = np.array([[2 * auu, auv], [auv, 2 * avv]])
    if np.linalg.det(hess) <= 0 or hess[0, 0] >= 0:
        return 0.0, 0.0
    du, dv = np.linalg.solve(hess, [-bu, -bv])
    return float(np.clip(du, -1.0, 1.0)), float(np.clip(dv, -1.0, 1.0))


def cross_correlate(
    flux: np.ndarray,
    template: LampTemplate,
    *,
    binning: int,
    offset: float = 0.0,
    max_scale: float = 0.01,
    scale_step: float | None = None,
    max_shift: float | None = None,
    mask: np.ndarray | None = None,
) -> FirstGuess:
    """Best shift and scale of the reference lamp against the arc, to sub-pixel precision.

    A coarse search tries scales on a grid that moves the ends by half a pixel and finds
    the lag of each by FFT cross-correlation; the best cell is then refined on a grid of
    a tenth of a pixel in both shift and scale, evaluated directly (no whole-pixel lags),
    and the maximum interpolated by a joint quadratic. ``max_shift`` (binned pixels)
    bounds the lag; by default a quarter of the spectrum.
    """
    arc = np.asarray(flux, dtype=np.float64)
    n = arc.size
    if mask is not None:
        arc = np.where(mask, np.nan, arc)
    arc = np.where(np.isfinite(arc), arc, np.nanmedian(arc))
    ref = template.reference
    c = ref.npix / 2.0
    fw = max(template.fwhm / binning, 1.0)
    a = _compress(arc - _baseline(arc, int(20 * fw)))
    ref_flux = ref.flux - _baseline(ref.flux, int(20 * template.fwhm))
    grid = np.arange(ref.npix, dtype=np.float64)
    # Unbinned pixels covered by each binned pixel, relative to the reference centre.
    ub = (
        binning * np.arange(n, dtype=np.float64)[:, None] + np.arange(binning)[None, :] + offset - c
    )

    def models(scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """The compressed reference for each (scale, shift) pair, one per row."""
        u = c + scale[:, None, None] * ub[None] + shift[:, None, None]
        return _compress(np.interp(u, grid, ref_flux, left=0.0, right=0.0).mean(axis=-1))

    step = scale_step if scale_step is not None else 0.5 / (binning * n / 2.0)
    scales = np.arange(1.0 - max_scale, 1.0 + max_scale + step / 2, step)
    lag_max = int(max_shift if max_shift is not None else n // 4)
    size = 1 << math.ceil(math.log2(2 * n))
    fa = np.fft.rfft(a, size)
    lags = np.arange(-lag_max, lag_max + 1)
    spectra = np.fft.rfft(models(scales, np.zeros(scales.size)), size, axis=-1)
    table = np.fft.irfft(fa * np.conj(spectra), size, axis=-1)[:, lags % size]
    i, j = np.unravel_index(int(np.argmax(table)), table.shape)
    # arc(x) ~ model(x - lag), i.e. the reference pixel of x is u(x - lag).
    s0 = float(scales[i])
    h0 = -float(lags[j]) * binning * s0
    # Shift and scale trade along a ridge when the lines crowd one end: walk the fine
    # grid until its maximum is interior.
    for _ in range(20):
        fine_s = s0 + step * np.linspace(-1.0, 1.0, 11)
        fine_h = h0 + binning * np.linspace(-1.0, 1.0, 21)
        pairs = models(np.repeat(fine_s, fine_h.size), np.tile(fine_h, fine_s.size))
        fine = np.array([float(a @ m) for m in pairs]).reshape(fine_s.size, fine_h.size)
        fi, fj = (int(k) for k in np.unravel_index(int(np.argmax(fine)), fine.shape))
        if 0 < fi < fine_s.size - 1 and 0 < fj < fine_h.size - 1:
            break
        s0, h0 = float(fine_s[fi]), float(fine_h[fj])
    di, dj = _peak_2d(fine, fi, fj)
    return FirstGuess(
        shift=float(fine_h[fj] + dj * (fine_h[1] - fine_h[0])),
        scale=float(fine_s[fi] + di * (fine_s[1] - fine_s[0])),
        peak=float(fine[fi, fj]),
        binning=binning,
        offset=offset,
        centre=c,
    )


@dataclass(frozen=True)
class LineFits:
    """Gaussian fits of lines in a 1-D spectrum (pixel = array index)."""

    centre: np.ndarray
    centre_err: np.ndarray
    fwhm: np.ndarray
    flux: np.ndarray  # integrated above the local linear background
    flux_err: np.ndarray
    ok: np.ndarray


def _as_linefits(fit: GaussFit) -> LineFits:
    return LineFits(
        centre=fit.centre,
        centre_err=fit.centre_err,
        fwhm=fit.sigma * FWHM_PER_SIGMA,
        flux=fit.amplitude,
        flux_err=fit.amplitude_err,
        ok=fit.ok,
    )


def fit_lines(
    flux: np.ndarray,
    variance: np.ndarray,
    guesses: ArrayLike,
    fwhm: float,
    mask: np.ndarray | None = None,
    *,
    half_width: int | None = None,
) -> LineFits:
    """Fit pixel-integrated Gaussians plus a linear background around ``guesses``.

    The window is ±1.5 FWHM by default: wide enough for the wings that fix the centre,
    narrow enough to keep most neighbours out.
    """
    f = np.asarray(flux, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    g = np.atleast_1d(np.asarray(guesses, dtype=np.float64))
    hw = half_width if half_width is not None else max(math.ceil(1.5 * fwhm), 3)
    x, y, w = windows(f, v, g, hw, None if mask is None else np.asarray(mask, dtype=bool))
    return _as_linefits(fit_gaussians(x, y, w, g, fwhm / FWHM_PER_SIGMA))


def find_lines(
    flux: np.ndarray,
    variance: np.ndarray,
    fwhm: float,
    mask: np.ndarray | None = None,
    *,
    min_snr: float = 8.0,
) -> np.ndarray:
    """Pixels of local maxima standing ``min_snr`` sigma above the continuum."""
    f = np.asarray(flux, dtype=np.float64)
    sig = np.sqrt(np.maximum(np.asarray(variance, dtype=np.float64), 0.0))
    bad = ~np.isfinite(f) | ~np.isfinite(sig)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    f = np.where(bad, np.nan, f)
    base = _baseline(np.where(bad, np.nanmedian(f), f), int(max(20 * fwhm, 20)))
    h = f - base
    peak = np.zeros(f.size, dtype=bool)
    peak[1:-1] = (h[1:-1] > h[:-2]) & (h[1:-1] >= h[2:]) & (h[1:-1] > min_snr * sig[1:-1])
    return np.flatnonzero(peak & ~bad)


@dataclass(frozen=True)
class ArcLine:
    """One arc line and what became of it."""

    pixel: float
    pixel_err: float
    fwhm: float
    wavelength: float  # catalogue wavelength (nan when unmatched)
    species: str
    strength: float
    residual: float  # catalogue minus solution, Å (nan when unmatched)
    status: str  # "used", "clipped", "blend", "unmatched", "bad_fit"


@dataclass(frozen=True)
class WavelengthSolution:
    """Air wavelength (Å) as a Chebyshev series of the extracted pixel index."""

    coefficients: tuple[float, ...]
    domain: tuple[float, float]  # pixels mapped onto [-1, 1]
    order: int
    rms_angstrom: float  # residuals of the lines used
    rms_pixel: float
    loo_rms_pixel: float  # leave-one-out: each line predicted by a fit without it
    stderr_pixel: float  # rms standard error of the solution curve over the spectrum
    n_used: int
    n_rejected: int  # matched, then clipped by the fit
    n_blended: int  # matched to a catalogue line a neighbour would pull; not fitted
    n_detected: int
    lines: tuple[ArcLine, ...]
    first_guess: FirstGuess
    reference: str  # reference lamp file

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return chebyshev.chebval(self._t(x), np.asarray(self.coefficients))

    def _t(self, x: np.ndarray | float) -> np.ndarray:
        lo, hi = self.domain
        return (2.0 * np.asarray(x, dtype=np.float64) - (lo + hi)) / (hi - lo)

    def dispersion(self, x: np.ndarray | float) -> np.ndarray:
        """Å per pixel."""
        lo, hi = self.domain
        d = chebyshev.chebder(np.asarray(self.coefficients))
        return chebyshev.chebval(self._t(x), d) * 2.0 / (hi - lo)

    def pixel(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Inverse by Newton steps from a tabulated start (the series is monotonic)."""
        wl = np.asarray(wavelength, dtype=np.float64)
        lo, hi = self.domain
        grid = np.linspace(lo - 10, hi + 10, int(hi - lo) + 21)
        lam = self(grid)
        order = np.argsort(lam)
        x = np.interp(wl, lam[order], grid[order])
        for _ in range(5):
            x = x - (self(x) - wl) / self.dispersion(x)
        return x


def _blend_bias(
    cat_x: np.ndarray, strengths: np.ndarray, sigma: float, half_width: int
) -> np.ndarray:
    """Centroid shift (px) each catalogue line would suffer from its neighbours.

    The lamp is rendered noiselessly from the catalogue and every line is fitted exactly
    as a real one would be, so the screen follows the fitting window and line width.
    """
    lo = math.floor(cat_x.min()) - 4 * half_width
    hi = math.ceil(cat_x.max()) + 4 * half_width
    xs = np.arange(lo, hi + 1, dtype=np.float64)
    model = np.zeros(xs.size)
    reach = math.ceil(8 * sigma) + 2
    for xc, s in zip(cat_x, strengths, strict=True):
        k0 = round(xc) - lo
        sl = slice(max(k0 - reach, 0), min(k0 + reach + 1, xs.size))
        model[sl] += s * pixel_gaussian(xs[sl] - xc, sigma)
    noise = 1e-4 * max(float(model.max()), 1e-30)
    x, y, w = windows(model, np.full(model.size, noise**2), cat_x - lo, half_width)
    fit = fit_gaussians(x, y, w, cat_x - lo, sigma)
    return np.where(fit.ok, fit.centre + lo - cat_x, np.inf)


def calibrate_wavelength(
    flux: np.ndarray,
    variance: np.ndarray,
    template: LampTemplate,
    *,
    binning: int,
    offset: float = 0.0,
    mask: np.ndarray | None = None,
    orders: tuple[int, ...] = (3, 4, 5),
    min_snr: float = 8.0,
    max_blend_bias: float = 0.02,
    clip: float = 3.0,
    systematic: float = 0.005,
    max_scale: float = 0.01,
) -> WavelengthSolution:
    """Wavelength solution of an arc extracted along the science trace.

    ``binning`` is the spectral binning (CCDSUM's first number) and ``offset`` the
    unbinned column of the frame's first pixel relative to the reference spectrum's
    first pixel (0 for Goodman frames trimmed by TRIMSEC). ``max_blend_bias`` (px) is
    the largest pull from catalogue neighbours a line may suffer and still be fitted;
    ``systematic`` (px) is added in quadrature to each line's centroid error.
    """
    f = np.asarray(flux, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    n = f.size
    bad = ~np.isfinite(f) | ~np.isfinite(v) | (v <= 0)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    guess = cross_correlate(
        f, template, binning=binning, offset=offset, mask=bad, max_scale=max_scale
    )

    def first(x: np.ndarray) -> np.ndarray:
        return template.wavelength(guess.u(x))

    # Line width: from the strongest detections, not from the reference's resolution.
    fw0 = max(template.fwhm * guess.scale / binning, 1.2)
    peaks = find_lines(f, v, fw0, bad, min_snr=min_snr)
    if peaks.size < max(orders) + 3:
        raise ValueError(f"only {peaks.size} arc lines above {min_snr} sigma")
    strongest = peaks[np.argsort(-f[peaks])[: min(15, peaks.size)]]
    trial = fit_lines(f, v, strongest.astype(float), fw0, bad, half_width=math.ceil(2 * fw0) + 1)
    fwhm = float(np.median(trial.fwhm[trial.ok])) if trial.ok.any() else fw0
    hw = max(math.ceil(1.5 * fwhm), 3)
    fits = fit_lines(f, v, peaks.astype(float), fwhm, bad, half_width=hw)
    sane = fits.ok & (np.abs(fits.fwhm / fwhm - 1.0) < 0.3) & (np.abs(fits.centre - peaks) < 1.0)
    # Catalogue lines on this detector, with their predicted pixels and blend pulls.
    grid = np.arange(-5.0, n + 5.0)
    lam_grid = first(grid)
    srt = np.argsort(lam_grid)
    cat = [c for c in template.lines if lam_grid.min() <= c.wavelength <= lam_grid.max()]
    if len(cat) < max(orders) + 3:
        raise ValueError("reference catalogue has too few lines in the arc's range")
    cat_w = np.array([c.wavelength for c in cat])
    cat_s = np.array([c.strength for c in cat])
    cat_x = np.interp(cat_w, lam_grid[srt], grid[srt])
    bias = _blend_bias(cat_x, cat_s, fwhm / FWHM_PER_SIGMA, hw)
    clean = np.abs(bias) <= max_blend_bias
    # Catalogue lines too faint to be among the detections must not claim one: scale the
    # strengths by the brightest detection and keep those above a third of the faintest.
    det_flux = fits.flux[sane]
    if det_flux.size == 0:
        raise ValueError("no arc line could be fitted")
    k = float(det_flux.max()) / float(cat_s.max())
    visible = np.flatnonzero(cat_s * k >= 0.3 * float(det_flux.min()))

    def match(pred: np.ndarray, tol: float) -> np.ndarray:
        """Catalogue index per detection (-1: none): the nearest visible line within
        ``tol``, kept only by the closest of the detections claiming it."""
        out = np.full(peaks.size, -1)
        d = np.abs(fits.centre[:, None] - pred[None, visible])
        d[~sane] = np.inf
        near = np.argmin(d, axis=1)
        dist = d[np.arange(peaks.size), near]
        for i in np.flatnonzero(dist <= tol):
            rivals = np.flatnonzero((near == near[i]) & (dist <= tol))
            if i == rivals[np.argmin(dist[rivals])]:
                out[i] = visible[near[i]]
        return out

    tol = max(2.0, 0.75 * fwhm)
    matched = match(cat_x, tol)
    wl_domain = (float(cat_w.min()), float(cat_w.max()))
    for _ in range(5):
        use = (matched >= 0) & clean[np.maximum(matched, 0)]
        if use.sum() < min(orders) + 3:
            raise ValueError(f"only {int(use.sum())} unblended arc lines matched")
        # Pixel as a function of wavelength while matching: the errors are in pixels.
        inverse = robust_chebyshev(
            cat_w[matched[use]],
            fits.centre[use],
            min(orders),
            sigma=fits.centre_err[use],
            floor=systematic,
            domain=wl_domain,
            clip=clip,
        )
        cat_x = np.asarray(inverse(cat_w))
        new = match(cat_x, max(0.5, 5.0 * inverse.rms))
        if np.array_equal(new, matched):
            break
        matched = new
    use = (matched >= 0) & clean[np.maximum(matched, 0)]
    xs = fits.centre[use]
    lam = cat_w[matched[use]]
    domain = (0.0, float(n - 1))
    # Forward solution, order by cross-validation: errors converted to Å by the dispersion.
    disp = np.abs(np.gradient(np.asarray(first(grid)), grid))
    err_a = np.hypot(fits.centre_err[use], systematic) * np.interp(xs, grid, disp)
    best = None
    for order in orders:
        if use.sum() < order + 4:
            continue
        cand = robust_chebyshev(xs, lam, order, sigma=err_a, domain=domain, clip=clip)
        if best is None or cand.loo_rms < 0.97 * best.loo_rms:
            best = cand
    if best is None:
        raise ValueError("too few arc lines for the lowest polynomial order")
    final = best
    used = final.used
    solution = WavelengthSolution(
        coefficients=tuple(float(c) for c in final.coefficients),
        domain=domain,
        order=final.coefficients.size - 1,
        rms_angstrom=final.rms,
        rms_pixel=math.nan,
        loo_rms_pixel=math.nan,
        stderr_pixel=math.nan,
        n_used=int(used.sum()),
        n_rejected=int((~used).sum()),
        n_blended=0,
        n_detected=int(peaks.size),
        lines=(),
        first_guess=guess,
        reference=template.name,
    )
    disp_used = np.abs(solution.dispersion(xs[used]))
    pix = np.arange(n, dtype=np.float64)
    resid = lam - solution(xs)
    lines: list[ArcLine] = []
    use_idx = np.flatnonzero(use)
    status_used = dict(zip(use_idx.tolist(), used.tolist(), strict=True))
    for i in range(peaks.size):
        j = int(matched[i])
        if j < 0:
            status = "unmatched" if sane[i] else "bad_fit"
            lines.append(
                ArcLine(
                    float(fits.centre[i]),
                    float(fits.centre_err[i]),
                    float(fits.fwhm[i]),
                    math.nan,
                    "",
                    math.nan,
                    math.nan,
                    status,
                )
            )
            continue
        c = cat[j]
        status = ("used" if status_used[i] else "clipped") if i in status_used else "blend"
        r = float(c.wavelength - solution(fits.centre[i]))
        lines.append(
            ArcLine(
                float(fits.centre[i]),
                float(fits.centre_err[i]),
                float(fits.fwhm[i]),
                c.wavelength,
                c.species,
                c.strength,
                r,
                status,
            )
        )
    return dataclasses.replace(
        solution,
        rms_pixel=float(np.sqrt(np.mean((resid[used] / disp_used) ** 2))),
        loo_rms_pixel=float(np.sqrt(np.mean((final.loo / disp_used) ** 2))),
        stderr_pixel=float(
            np.sqrt(np.mean((final.stderr(pix) / np.abs(solution.dispersion(pix))) ** 2))
        ),
        n_blended=sum(line.status == "blend" for line in lines),
        lines=tuple(lines),
    )
