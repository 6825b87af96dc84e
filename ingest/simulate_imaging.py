"""Direct imaging through Goodman: circular field, TAN WCS, Moffat stars, twilight flats.

Stars are placed at fixed sky positions per field; each exposure projects them through
the WCS written in its own header (pointing dithers and all), so the truth pixel
positions are exactly what a WCS-aware reader of the raw frame computes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ingest.simulate_detector import Readout

PIXEL_SCALE = 0.15  # arcsec per unbinned pixel
FOV_DIAMETER_ARCMIN = 7.2  # Goodman's imaging field is a 7.2' circle
MOFFAT_BETA = 3.0


@dataclass(frozen=True)
class Filter:
    zero_point: float  # magnitude giving 1 e-/s above the atmosphere
    sky: float  # dark-sky surface brightness, mag/arcsec^2
    extinction: float  # mag per airmass


FILTERS: dict[str, Filter] = {
    "g-SDSS": Filter(26.55, 21.9, 0.18),
    "r-SDSS": Filter(26.75, 21.0, 0.10),
    "i-SDSS": Filter(26.35, 20.2, 0.06),
}
_BAND = {"g-SDSS": "g", "r-SDSS": "r", "i-SDSS": "i"}


@dataclass(frozen=True)
class Star:
    ra: float
    dec: float
    mags: dict[str, float]  # keyed by filter name


def make_field(ra0: float, dec0: float, rng: np.random.Generator) -> list[Star]:
    """Stars within 4' of the field centre, magnitudes from a rising number count."""
    n = int(rng.integers(150, 320))
    radius = rng.uniform(0, 1, n) ** 0.5 * (4.0 / 60.0)  # deg, uniform on the disc
    theta = rng.uniform(0, 2 * np.pi, n)
    dec = dec0 + radius * np.cos(theta)
    ra = ra0 + radius * np.sin(theta) / math.cos(math.radians(dec0))
    # N(<m) ~ 10^(0.3 m) between r = 13.5 and 22.5
    u = rng.uniform(0, 1, n)
    lo, hi = 10 ** (0.3 * 13.5), 10 ** (0.3 * 22.5)
    r = np.log10(lo + u * (hi - lo)) / 0.3
    g_r = rng.uniform(0.2, 1.4, n)
    r_i = 0.45 * g_r + rng.normal(0, 0.05, n)
    return [
        Star(
            float(a) % 360.0,
            float(d),
            {"g-SDSS": float(m + gr), "r-SDSS": float(m), "i-SDSS": float(m - ri)},
        )
        for a, d, m, gr, ri in zip(ra, dec, r, g_r, r_i, strict=True)
    ]


def wcs_cards(
    readout: Readout, ra: float, dec: float, rotation_deg: float
) -> list[tuple[str, object, str]]:
    """TAN WCS cards (CD matrix, north up, east left, rotated) for the raw frame."""
    x0, x1 = readout.data_x
    crpix1 = 0.5 * (x0 + x1 - 1) + 1.0  # FITS 1-based, centre of the data section
    crpix2 = 0.5 * (readout.naxis2 - 1) + 1.0
    s = PIXEL_SCALE * readout.binning / 3600.0
    c, n = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    return [
        ("WCSAXES", 2, "number of WCS axes"),
        ("CTYPE1", "RA---TAN", "gnomonic projection"),
        ("CTYPE2", "DEC--TAN", "gnomonic projection"),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
        ("CRPIX1", crpix1, "reference pixel (centre of DATASEC)"),
        ("CRPIX2", crpix2, "reference pixel"),
        ("CRVAL1", ra, "[deg] RA at reference pixel"),
        ("CRVAL2", dec, "[deg] Dec at reference pixel"),
        ("CD1_1", -s * c, ""),
        ("CD1_2", s * n, ""),
        ("CD2_1", s * n, ""),
        ("CD2_2", s * c, ""),
        ("RADESYS", "ICRS", ""),
    ]


def make_wcs(cards: list[tuple[str, object, str]]) -> WCS:
    header = fits.Header([(k, v) for k, v, _ in cards])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def fov_mask(readout: Readout) -> tuple[np.ndarray, dict[str, float]]:
    """Illumination of the circular field with a soft edge and mild vignetting (float32)."""
    b = readout.binning
    ny, nx = readout.shape
    x0, x1 = readout.data_x
    cx, cy = 0.5 * (x0 + x1 - 1) + 6.0 / b, 0.5 * (ny - 1) - 9.0 / b
    radius = FOV_DIAMETER_ARCMIN * 60.0 / 2.0 / (PIXEL_SCALE * b)
    y = np.arange(ny, dtype=np.float32)[:, None]
    x = np.arange(nx, dtype=np.float32)[None, :]
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    edge = 1.0 / (1.0 + np.exp(np.clip((r - radius) / (2.5 / b), -60, 60)))
    mask = (edge * (1.0 - 0.04 * (r / radius) ** 2)).astype(np.float32)
    mask[:, :x0] = 0.0
    mask[:, x1:] = 0.0
    return mask, {"centre_x": cx, "centre_y": cy, "radius_px": radius}


def _moffat_stamps(dx: np.ndarray, dy: np.ndarray, fwhm: float) -> np.ndarray:
    """Moffat PSF (unit flux) averaged over 2x2 sub-pixel samples."""
    alpha = fwhm / (2.0 * math.sqrt(2 ** (1.0 / MOFFAT_BETA) - 1.0))
    norm = (MOFFAT_BETA - 1.0) / (math.pi * alpha**2)
    acc = np.zeros(np.broadcast_shapes(dx.shape, dy.shape))
    for ox in (-0.25, 0.25):
        for oy in (-0.25, 0.25):
            r2 = (dx + ox) ** 2 + (dy + oy) ** 2
            acc += (1.0 + r2 / alpha**2) ** (-MOFFAT_BETA)
    return norm * acc / 4.0


def add_stars(
    img: np.ndarray,
    readout: Readout,
    wcs: WCS,
    stars: list[Star],
    filter_name: str,
    exptime: float,
    airmass: float,
    seeing: float,
    mask: np.ndarray,
) -> list[dict[str, object]]:
    """Add the stars that land on the frame; return their truth (0-based raw pixels)."""
    flt = FILTERS[filter_name]
    b = readout.binning
    fwhm = seeing / (PIXEL_SCALE * b)
    ra = np.array([s.ra for s in stars])
    dec = np.array([s.dec for s in stars])
    px, py = wcs.all_world2pix(ra, dec, 0)
    mags = np.array([s.mags[filter_name] for s in stars])
    flux = 10 ** (-0.4 * (mags + flt.extinction * airmass - flt.zero_point)) * exptime
    ny, nx = readout.shape
    x0, x1 = readout.data_x
    on = (px >= x0) & (px <= x1 - 1) & (py >= 0) & (py <= ny - 1)
    idx = np.flatnonzero(on)
    half = math.ceil(6 * fwhm)
    off = np.arange(-half, half + 1)
    cx = np.rint(px[idx]).astype(np.int64)
    cy = np.rint(py[idx]).astype(np.int64)
    gx = cx[:, None, None] + off[None, None, :]
    gy = cy[:, None, None] + off[None, :, None]
    stamps = _moffat_stamps(gx - px[idx, None, None], gy - py[idx, None, None], fwhm)
    stamps *= flux[idx, None, None]
    gx, gy = np.broadcast_arrays(gx, gy)
    ok = (gx >= x0) & (gx < x1) & (gy >= 0) & (gy < ny)
    flat = gy[ok] * nx + gx[ok]
    # Light outside the field stop never reaches the detector.
    contrib = np.bincount(flat, weights=stamps[ok], minlength=ny * nx).reshape(ny, nx)
    img += contrib * mask
    truth = []
    for i in idx:
        yi, xi = round(py[i]), round(px[i])
        truth.append(
            {
                "ra": round(float(ra[i]), 8),
                "dec": round(float(dec[i]), 8),
                "x": round(float(px[i]), 4),
                "y": round(float(py[i]), 4),
                "mag": round(float(mags[i]), 4),
                "electrons": round(float(flux[i]), 2),
                "illumination": round(float(mask[yi, xi]), 4),
            }
        )
    return truth


def sky_rate(readout: Readout, filter_name: str, twilight_mag: float | None = None) -> float:
    """Sky e-/s per binned pixel (dark sky, or a twilight brightness in mag/arcsec^2)."""
    flt = FILTERS[filter_name]
    sb = flt.sky if twilight_mag is None else twilight_mag
    area = (PIXEL_SCALE * readout.binning) ** 2
    return float(10 ** (-0.4 * (sb - flt.zero_point)) * area)
