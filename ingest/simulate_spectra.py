"""Long-slit optics of the simulated 400 l/mm M1 setup: wavelengths, slit, trace, spectra.

Dispersion runs along NAXIS1 (x), the slit along NAXIS2 (y). All polynomials are power
series in the 0-based column index ``x`` of the raw binned frame, so the truth can be
evaluated on the raw files without knowing the binning or the prescan width. Every model
returns expected electrons; noise is the detector's business.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import Polynomial, chebyshev

from ingest.refdata import LineStrength, ReferenceSpectrum
from ingest.simulate_detector import PRESCAN_UNBINNED, Readout

FWHM_ARC_UNBINNED = 4.5  # instrumental line FWHM for the 1.0" slit, unbinned pixels
PLATE_SCALE = 0.15  # arcsec per unbinned pixel along the slit
SLIT_WIDTH_ARCSEC = 1.0
# Goodman's 1x1 spectroscopic ROI shows the long slit between about these rows (GSP_SLIT).
SLIT_ROWS_UNBINNED = (222.0, 1768.0)

SKY_LINES: tuple[tuple[float, float, str], ...] = (
    # air wavelength (Å), flux relative to 1 Å of sky continuum, origin
    (4358.34, 8.0, "Hg I (light pollution)"),
    (5460.74, 10.0, "Hg I (light pollution)"),
    (5577.34, 120.0, "[O I]"),
    (5889.95, 22.0, "Na I D2"),
    (5895.92, 14.0, "Na I D1"),
    (6300.30, 55.0, "[O I]"),
    (6363.78, 18.0, "[O I]"),
    (6498.73, 6.0, "OH 6-1"),
    (6553.62, 7.0, "OH 6-1"),
    (6863.96, 20.0, "OH 7-2"),
    (6923.22, 16.0, "OH 7-2"),
    (6948.94, 11.0, "OH 7-2"),
)

EMISSION_LINES: tuple[tuple[str, float, float], ...] = (
    # name, rest air wavelength (Å), typical equivalent width (Å) in a star-forming galaxy
    ("[OII]3727", 3727.42, 35.0),
    ("Hgamma", 4340.47, 6.0),
    ("Hbeta", 4861.33, 15.0),
    ("[OIII]4959", 4958.91, 18.0),
    ("[OIII]5007", 5006.84, 54.0),
    ("[NII]6548", 6548.05, 10.0),
    ("Halpha", 6562.80, 80.0),
    ("[NII]6583", 6583.45, 30.0),
    ("[SII]6716", 6716.44, 14.0),
    ("[SII]6731", 6730.82, 10.0),
)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none."""
    x = np.asarray(x, dtype=np.float64)
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return s * (1.0 - poly * np.exp(-a * a))


def pixel_gaussian(offset: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """Fraction of a unit Gaussian that falls in pixels centred ``offset`` from its mean.

    Integrating over the pixel keeps fluxes exact for lines only ~1.5 pixels wide (2x2).
    """
    k = 1.0 / (math.sqrt(2.0) * np.asarray(sigma, dtype=np.float64))
    return 0.5 * (erf((offset + 0.5) * k) - erf((offset - 0.5) * k))


def render_lines(
    n: int, centres: np.ndarray, fluxes: np.ndarray, sigma: np.ndarray | float
) -> np.ndarray:
    """Sum of pixel-integrated Gaussians on an ``n``-pixel axis (vectorised over lines)."""
    centres = np.asarray(centres, dtype=np.float64)
    out = np.zeros(n)
    if centres.size == 0:
        return out
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), centres.shape)
    half = math.ceil(7 * float(sig.max())) + 2
    offsets = np.arange(-half, half + 1)
    idx = np.rint(centres)[:, None].astype(np.int64) + offsets[None, :]
    w = pixel_gaussian(idx - centres[:, None], sig[:, None]) * np.asarray(fluxes)[:, None]
    ok = (idx >= 0) & (idx < n)
    out += np.bincount(idx[ok], weights=w[ok], minlength=n)
    return out


@dataclass(frozen=True)
class WavelengthSolution:
    """Air wavelength (Å) as a cubic power series in the raw binned column index."""

    coefficients: tuple[float, ...]
    x_range: tuple[int, int]  # columns where light falls (half-open)

    def wavelength(self, x: np.ndarray | float) -> np.ndarray:
        return np.asarray(Polynomial(self.coefficients)(x))

    def dispersion(self, x: np.ndarray | float) -> np.ndarray:
        """Å per binned pixel."""
        return np.asarray(Polynomial(self.coefficients).deriv()(x))

    def pixel(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Column (float) of each wavelength; Newton-polished to 1e-9 px."""
        wl = np.asarray(wavelength, dtype=np.float64)
        grid = np.arange(self.x_range[0] - 20.0, self.x_range[1] + 20.0)
        x = np.interp(wl, self.wavelength(grid), grid)
        for _ in range(6):
            x = x - (self.wavelength(x) - wl) / self.dispersion(x)
        return x


def make_wavelength_solution(
    ref: ReferenceSpectrum, readout: Readout, rng: np.random.Generator
) -> tuple[WavelengthSolution, dict[str, object]]:
    """The night's solution: the real 400_M1 one, re-set by the grating's repeatability.

    The reference solution (Chebyshev on unbinned trimmed pixels ``u``) is converted to a
    power series, perturbed by a few Å of zero point and ~0.1 % of scale (what a grating
    re-setting does), then rewritten in raw binned columns: ``u = b*x + (b-1)/2 - 50``.
    """
    b = readout.binning
    power = Polynomial(chebyshev.cheb2poly(ref.coefficients))
    shift = float(rng.normal(0.0, 4.0))
    scale = 1.0 + float(rng.normal(0.0, 1.0e-3))
    uc = ref.npix / 2.0
    perturbed = power(Polynomial([uc * (1.0 - scale), scale])) + shift
    u_of_x = Polynomial([(b - 1) / 2.0 - PRESCAN_UNBINNED, float(b)])
    coef = perturbed(u_of_x).coef
    sol = WavelengthSolution(tuple(float(c) for c in coef), readout.data_x)
    x0, x1 = readout.data_x
    truth = {
        "model": "polynomial",
        "coordinate": "x = 0-based column of the raw binned frame (FITS column - 1)",
        "coefficients": list(sol.coefficients),
        "coefficients_note": "wavelength_air_A = sum(c[i] * x**i)",
        "degree": len(coef) - 1,
        "wavelength_range_A": [float(sol.wavelength(x0)), float(sol.wavelength(x1 - 1))],
        "mean_dispersion_A_per_px": float(
            (sol.wavelength(x1 - 1) - sol.wavelength(x0)) / (x1 - 1 - x0)
        ),
        "derived_from": ref.path.name,
        "zero_point_shift_A": shift,
        "scale": scale,
        "samples": [[int(x), float(sol.wavelength(x))] for x in range(x0, x1, 100 // b)],
    }
    return sol, truth


@dataclass(frozen=True)
class Slit:
    """Illuminated part of the long slit on the detector and its response along y."""

    lower: tuple[float, ...]  # power series in x: first illuminated row (edge, 50 %)
    upper: tuple[float, ...]
    edge_sigma: float  # binned px
    dust: tuple[tuple[float, float, float], ...]  # (row, fractional depth, sigma px)
    vignetting: float  # fractional loss at the slit ends

    def illumination(self, readout: Readout) -> np.ndarray:
        """Relative illumination (float32, 0 outside the slit and the data section)."""
        ny, nx = readout.shape
        x0, x1 = readout.data_x
        x = np.arange(x0, x1, dtype=np.float64)
        lo = Polynomial(self.lower)(x)
        hi = Polynomial(self.upper)(x)
        y = np.arange(ny, dtype=np.float64)[:, None]
        k = 1.0 / (math.sqrt(2.0) * self.edge_sigma)
        ill = 0.25 * (1 + erf((y - lo) * k)) * (1 + erf((hi - y) * k))
        mid = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        ill *= 1.0 - self.vignetting * ((y - mid) / half) ** 2
        for row, depth, sig in self.dust:
            ill *= 1.0 - depth * np.exp(-0.5 * ((y - row) / sig) ** 2)
        out = np.zeros((ny, nx), dtype=np.float32)
        out[:, x0:x1] = np.clip(ill, 0, None)
        return out

    def truth(self) -> dict[str, object]:
        return {
            "lower_edge_coefficients": list(self.lower),
            "upper_edge_coefficients": list(self.upper),
            "edges_note": "row (0-based, raw binned) of the 50 % point = sum(c[i] * x**i)",
            "edge_sigma_px": self.edge_sigma,
            "vignetting_at_ends": self.vignetting,
            "dust": [{"row": r, "depth": d, "sigma_px": s} for r, d, s in self.dust],
        }


def _series(y_mid: float, tilt: float, sag: float, xm: float, half: float) -> tuple[float, ...]:
    """Power series of ``y_mid + tilt*t + sag*t**2`` with ``t = (x - xm)/half``."""
    t = Polynomial([-xm / half, 1.0 / half])
    return tuple(float(c) for c in (y_mid + tilt * t + sag * t**2).coef)


def make_slit(readout: Readout, rng: np.random.Generator) -> Slit:
    """Slit edges a little tilted and curved (optical distortion), two dust specks."""
    b = readout.binning
    x0, x1 = readout.data_x
    xm, half = 0.5 * (x0 + x1 - 1), 0.5 * (x1 - x0)
    lo_u, hi_u = SLIT_ROWS_UNBINNED
    lo = (lo_u + rng.normal(0, 3.0)) / b
    hi = (hi_u + rng.normal(0, 3.0)) / b
    tilt = rng.uniform(2.0, 5.0) / b
    sag = rng.uniform(3.0, 6.0) / b
    dust = tuple(
        (
            float(rng.uniform(lo + 40 / b, hi - 40 / b)),
            float(rng.uniform(0.03, 0.08)),
            1.5 / b + 0.5,
        )
        for _ in range(2)
    )
    return Slit(
        lower=_series(lo, tilt, sag, xm, half),
        upper=_series(hi, tilt * 1.1, sag, xm, half),
        edge_sigma=1.2 / b + 0.3,
        dust=dust,
        vignetting=0.06,
    )


@dataclass(frozen=True)
class Trace:
    """Centre of a point source along the slit: a tilted, slightly curved line."""

    coefficients: tuple[float, ...]
    fwhm: float  # binned px

    def centre(self, x: np.ndarray | float) -> np.ndarray:
        return np.asarray(Polynomial(self.coefficients)(x))

    def add(self, img: np.ndarray, readout: Readout, per_column: np.ndarray) -> None:
        """Add ``per_column`` electrons (one value per raw column) spread over the trace."""
        x0, x1 = readout.data_x
        yc = self.centre(np.arange(x0, x1, dtype=np.float64))
        sigma = self.fwhm / 2.3548
        r0 = max(math.floor(yc.min() - 8 * sigma), 0)
        r1 = min(math.ceil(yc.max() + 8 * sigma) + 1, img.shape[0])
        rows = np.arange(r0, r1, dtype=np.float64)[:, None]
        img[r0:r1, x0:x1] += pixel_gaussian(rows - yc[None, :], sigma) * per_column[None, x0:x1]

    def truth(self, readout: Readout) -> dict[str, object]:
        x0, x1 = readout.data_x
        step = 100 // readout.binning
        xs = [*list(range(x0, x1, step)), x1 - 1]
        return {
            "coefficients": list(self.coefficients),
            "coefficients_note": "row of the trace centre (0-based, raw binned) = sum(c[i] * x**i)",
            "fwhm_px": self.fwhm,
            "profile": "gaussian, pixel-integrated",
            "samples": [[int(x), float(self.centre(x))] for x in xs],
        }


def make_trace(slit: Slit, readout: Readout, seeing: float, rng: np.random.Generator) -> Trace:
    """A trace near the slit centre with a few pixels of tilt and curvature (unbinned)."""
    b = readout.binning
    x0, x1 = readout.data_x
    xm, half = 0.5 * (x0 + x1 - 1), 0.5 * (x1 - x0)
    lo, hi = Polynomial(slit.lower)(xm), Polynomial(slit.upper)(xm)
    mid = 0.5 * (lo + hi) + rng.normal(0, 25.0 / b)
    coef = _series(float(mid), rng.uniform(-8.0, 8.0) / b, rng.uniform(1.5, 4.0) / b, xm, half)
    return Trace(coef, seeing / (PLATE_SCALE * b))


# ------------------------------------------------------------------- spectral shapes


def throughput(wl: np.ndarray) -> np.ndarray:
    """Telescope + spectrograph + CCD efficiency: peaks near 5600 Å, falls faster blueward."""
    wl = np.asarray(wl, dtype=np.float64)
    width = np.where(wl < 5600.0, 1500.0, 2600.0)
    return 0.32 * np.exp(-0.5 * ((wl - 5600.0) / width) ** 2)


def extinction_mag(wl: np.ndarray) -> np.ndarray:
    """Atmospheric extinction (mag per airmass) at Cerro Pachón, Rayleigh plus aerosols."""
    return 0.015 + 0.1 * (5500.0 / np.asarray(wl, dtype=np.float64)) ** 4 + 0.03


def planck_shape(wl: np.ndarray, temperature: float) -> np.ndarray:
    """Photon spectrum of a black body, normalised at 5500 Å."""
    wl_m = np.asarray(wl, dtype=np.float64) * 1e-10
    c2 = 1.438777e-2  # m K

    def photons(w: np.ndarray) -> np.ndarray:
        return w**-4 / np.expm1(c2 / (w * temperature))

    return photons(wl_m) / photons(np.array(5500e-10))


# photons s^-1 Å^-1 collected by SOAR (10.3 m^2 unobstructed) from a V = 0 source
_V0_RATE = 1.0e3 * 1.03e5


def arc_profile(
    solution: WavelengthSolution,
    readout: Readout,
    lines: Sequence[LineStrength],
    peak_rate: float,
) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Electrons/s per binned pixel of an arc along a row of full illumination."""
    b = readout.binning
    nx = readout.naxis1
    wl = np.array([line.wavelength for line in lines])
    x = solution.pixel(wl)
    sigma = FWHM_ARC_UNBINNED / 2.3548 / b
    # Integrated flux per binned row that gives peak_rate e-/s per unbinned pixel.
    flux = (
        np.array([line.strength for line in lines])
        * peak_rate
        * math.sqrt(2 * math.pi)
        * (FWHM_ARC_UNBINNED / 2.3548)
        * b
    )
    x0, x1 = readout.data_x
    inside = (x >= x0 - 4 * sigma) & (x <= x1 - 1 + 4 * sigma)
    spec = render_lines(nx, x[inside], flux[inside], sigma)
    spec[:x0] = 0.0
    spec[x1:] = 0.0
    truth = [
        {
            "wavelength_A": line.wavelength,
            "species": line.species,
            "x": float(xi),
            "relative_strength": round(line.strength, 6),
            "electrons_per_s_per_row": round(float(f), 3),
        }
        for line, xi, f, ok in zip(lines, x, flux, inside, strict=True)
        if ok and x0 <= xi <= x1 - 1
    ]
    return spec, truth


def flat_profile(solution: WavelengthSolution, readout: Readout, peak_rate: float) -> np.ndarray:
    """Quartz lamp (3100 K) through the instrument, e-/s per binned pixel, peak normalised."""
    x0, x1 = readout.data_x
    out = np.zeros(readout.naxis1)
    wl = solution.wavelength(np.arange(x0, x1, dtype=np.float64))
    shape = planck_shape(wl, 3100.0) * throughput(wl)
    out[x0:x1] = shape / shape.max() * peak_rate * readout.binning**2
    return out


def sky_profile(
    solution: WavelengthSolution, readout: Readout, airmass: float, sky_v: float
) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Sky continuum and emission lines per binned pixel of the slit, e-/s."""
    b = readout.binning
    x0, x1 = readout.data_x
    xs = np.arange(x0, x1, dtype=np.float64)
    wl = solution.wavelength(xs)
    area = SLIT_WIDTH_ARCSEC * PLATE_SCALE * b  # arcsec^2 seen by one binned pixel
    # Twilight/moon-free sky is redder than a flat F_nu; a gentle slope is enough here.
    per_a = _V0_RATE * 10 ** (-0.4 * sky_v) * area * (wl / 5500.0) ** 0.8 * throughput(wl)
    out = np.zeros(readout.naxis1)
    out[x0:x1] = per_a * solution.dispersion(xs)
    lw = np.array([w for w, _, _ in SKY_LINES])
    lx = solution.pixel(lw)
    cont_at = _V0_RATE * 10 ** (-0.4 * sky_v) * area * (lw / 5500.0) ** 0.8 * throughput(lw)
    lflux = np.array([r for _, r, _ in SKY_LINES]) * cont_at
    sigma = FWHM_ARC_UNBINNED / 2.3548 / b
    inside = (lx >= x0) & (lx <= x1 - 1)
    out += render_lines(readout.naxis1, lx[inside], lflux[inside], sigma)
    out[:x0] = 0.0
    out[x1:] = 0.0
    truth = [
        {"wavelength_A": w, "origin": o, "x": float(xx), "electrons_per_s_per_px_row": float(f)}
        for (w, _, o), xx, f, ok in zip(SKY_LINES, lx, lflux, inside, strict=True)
        if ok
    ]
    return out, truth


def source_profile(
    solution: WavelengthSolution,
    readout: Readout,
    *,
    v_mag: float,
    slope: float,
    redshift: float,
    line_scale: float,
    velocity_sigma_kms: float,
    airmass: float,
    slit_loss: float,
) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Point-source electrons/s per binned column (summed over the trace profile)."""
    b = readout.binning
    x0, x1 = readout.data_x
    xs = np.arange(x0, x1, dtype=np.float64)
    wl = solution.wavelength(xs)

    def cont(w: np.ndarray) -> np.ndarray:
        atm = 10 ** (-0.4 * extinction_mag(w) * airmass)
        return (
            _V0_RATE * 10 ** (-0.4 * v_mag) * (w / 5500.0) ** slope * throughput(w) * atm
        ) * slit_loss

    out = np.zeros(readout.naxis1)
    out[x0:x1] = cont(wl) * solution.dispersion(xs)
    rest = np.array([w for _, w, _ in EMISSION_LINES])
    obs = rest * (1.0 + redshift)
    lx = solution.pixel(obs)
    flux = np.array([ew for _, _, ew in EMISSION_LINES]) * line_scale * cont(obs)
    disp = solution.dispersion(lx)
    sig_inst = FWHM_ARC_UNBINNED / 2.3548 / b
    sig = np.sqrt(sig_inst**2 + (obs * velocity_sigma_kms / 299792.458 / disp) ** 2)
    inside = (lx >= x0 + 3) & (lx <= x1 - 4)
    out += render_lines(readout.naxis1, lx[inside], flux[inside], sig[inside])
    out[:x0] = 0.0
    out[x1:] = 0.0
    truth = [
        {
            "name": name,
            "rest_wavelength_A": w,
            "observed_wavelength_A": float(o),
            "x": float(xx),
            "fwhm_px": float(s * 2.3548),
            "electrons_per_s": float(f),
        }
        for (name, w, _), o, xx, s, f, ok in zip(
            EMISSION_LINES, obs, lx, sig, flux, inside, strict=True
        )
        if ok
    ]
    return out, truth
