"""Flux-conserving resampling onto a linear wavelength grid, and its FITS description.

Each input pixel's flux is spread uniformly over its wavelength extent and shared among
the output bins by overlap, so the summed flux is unchanged (an interpolation would not
conserve it where the dispersion varies) and the variance follows the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from .extract import Extraction
from .trace import Trace
from .wavecal import WavelengthSolution

Card = tuple[str, Any, str]


@dataclass(frozen=True)
class LinearSpectrum:
    """A spectrum on a uniform wavelength grid; ``flux`` is integrated over each bin."""

    crval: float  # wavelength at the centre of the first bin, Å
    cdelt: float  # bin width, Å
    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray  # True where a masked input pixel contributed or coverage is partial

    @property
    def wavelength(self) -> np.ndarray:
        return self.crval + self.cdelt * np.arange(self.flux.size)

    def wcs_cards(self, ctype: str = "WAVE") -> list[Card]:
        """Linear spectral WCS (FITS Paper III); ``ctype='AWAV'`` states air explicitly."""
        return [
            ("WCSAXES", 1, "one spectral axis"),
            ("CTYPE1", ctype, "wavelength (air)"),
            ("CUNIT1", "Angstrom", ""),
            ("CRPIX1", 1.0, "reference pixel (1-based)"),
            ("CRVAL1", self.crval, "wavelength at CRPIX1"),
            ("CDELT1", self.cdelt, "wavelength step per pixel"),
            ("SPECSYS", "TOPOCENT", "no velocity correction applied"),
            ("AIRORVAC", "air", "wavelengths in standard air"),
        ]


def resample_linear(
    flux: np.ndarray,
    variance: np.ndarray,
    solution: WavelengthSolution,
    mask: np.ndarray | None = None,
    *,
    start: float | None = None,
    step: float | None = None,
    n: int | None = None,
) -> LinearSpectrum:
    """Resample a 1-D spectrum onto ``start + step * k`` (k = 0 … n-1, bin centres).

    Defaults keep the pixel count and span of the input. Masked input pixels are
    replaced by interpolation from good neighbours (so totals stay close) and every bin
    they touch is flagged; so are bins the input does not fully cover.
    """
    f = np.asarray(flux, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    npx = f.size
    bad = ~np.isfinite(f) | ~np.isfinite(v)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    good = np.flatnonzero(~bad)
    if good.size < 2:
        raise ValueError("no good pixels to resample")
    if bad.any():
        f = f.copy()
        v = v.copy()
        f[bad] = np.interp(np.flatnonzero(bad), good, f[good])
        v[bad] = np.interp(np.flatnonzero(bad), good, v[good])
    edges_in = solution(np.arange(npx + 1, dtype=np.float64) - 0.5)
    if edges_in[-1] < edges_in[0]:  # wavelength decreasing with pixel: flip
        edges_in = edges_in[::-1]
        f, v, bad = f[::-1], v[::-1], bad[::-1]
    lo_in, hi_in = edges_in[:-1], edges_in[1:]
    width_in = hi_in - lo_in
    if np.any(width_in <= 0):
        raise ValueError("wavelength solution is not monotonic over the spectrum")
    if step is None:
        step = float((edges_in[-1] - edges_in[0]) / npx)
    if start is None:
        start = float(edges_in[0] + 0.5 * step)
    if n is None:
        n = math.floor((edges_in[-1] - (start - 0.5 * step)) / step + 1e-9)
    edges_out = start - 0.5 * step + step * np.arange(n + 1)
    k_lo = np.floor((lo_in - edges_out[0]) / step).astype(np.int64)
    k_hi = np.floor((hi_in - edges_out[0]) / step).astype(np.int64)
    out_f = np.zeros(n)
    out_v = np.zeros(n)
    cover = np.zeros(n)
    out_bad = np.zeros(n, dtype=bool)
    for j in range(int((k_hi - k_lo).max()) + 1):
        k = k_lo + j
        ok = (k >= 0) & (k < n) & (k <= k_hi)
        kk = np.clip(k, 0, n - 1)
        overlap = np.minimum(hi_in, edges_out[kk + 1]) - np.maximum(lo_in, edges_out[kk])
        overlap = np.where(ok, np.clip(overlap, 0.0, None), 0.0)
        frac = overlap / width_in
        out_f += np.bincount(kk, weights=frac * f, minlength=n)
        out_v += np.bincount(kk, weights=frac**2 * v, minlength=n)
        cover += np.bincount(kk, weights=overlap, minlength=n)
        out_bad |= np.bincount(kk, weights=(frac > 0) & bad, minlength=n) > 0
    out_bad |= cover < step * (1.0 - 1e-6)
    return LinearSpectrum(
        crval=float(start),
        cdelt=float(step),
        flux=out_f,
        error=np.sqrt(out_v),
        mask=out_bad,
    )


def solution_cards(solution: WavelengthSolution) -> list[Card]:
    """The non-linear pixel-to-wavelength solution and its honest quality figures."""
    cards: list[Card] = [
        ("WSOLFUNC", "chebyshev", "air wavelength (A) = chebval(t, WSOLCnnn)"),
        ("WSOLDLO", solution.domain[0], "pixel mapped to t = -1 (0-based)"),
        ("WSOLDHI", solution.domain[1], "pixel mapped to t = +1"),
        ("WSOLORD", solution.order, "polynomial order (cross-validated)"),
    ]
    cards += [(f"WSOLC{i:03d}", c, "") for i, c in enumerate(solution.coefficients)]
    cards += [
        ("WSOLRMSA", solution.rms_angstrom, "rms of line residuals [A]"),
        ("WSOLRMSP", solution.rms_pixel, "rms of line residuals [px]"),
        ("WSOLCVP", solution.loo_rms_pixel, "leave-one-out rms [px]"),
        ("WSOLERRP", solution.stderr_pixel, "standard error of the solution [px]"),
        ("WSOLNUSE", solution.n_used, "arc lines used in the fit"),
        ("WSOLNREJ", solution.n_rejected, "matched lines clipped by the fit"),
        ("WSOLNBLD", solution.n_blended, "matched lines set aside as blends"),
        ("WSOLNDET", solution.n_detected, "arc peaks detected"),
        ("WSOLREF", solution.reference, "reference lamp spectrum"),
        ("WSOLXCSH", solution.first_guess.shift, "cross-correlation shift [ref px]"),
        ("WSOLXCSC", solution.first_guess.scale, "cross-correlation scale"),
    ]
    return cards


def extraction_cards(extraction: Extraction, trace: Trace | None = None) -> list[Card]:
    """How the spectrum was extracted: method, aperture, trace and its quality."""
    cards: list[Card] = [
        ("EXTMETH", extraction.method, "extraction method"),
        ("EXTAPLO", extraction.aperture.lower, "aperture lower offset from trace [px]"),
        ("EXTAPHI", extraction.aperture.upper, "aperture upper offset from trace [px]"),
        ("EXTNREJ", extraction.n_rejected, "pixels rejected as outliers"),
    ]
    if trace is not None:
        cards += [
            ("TRCFUNC", "chebyshev", "trace row (0-based) = chebval(t, TRCCnnn)"),
            ("TRCDLO", trace.domain[0], "column mapped to t = -1 (0-based)"),
            ("TRCDHI", trace.domain[1], "column mapped to t = +1"),
        ]
        cards += [(f"TRCC{i:03d}", c, "") for i, c in enumerate(trace.coefficients)]
        cards += [
            ("TRCFWHM", trace.fwhm, "median spatial FWHM [px]"),
            ("TRCRMS", trace.rms, "rms of bin centres about the trace [px]"),
            ("TRCNUSE", trace.n_used, "trace bins used"),
            ("TRCNREJ", trace.n_rejected, "trace bins rejected"),
        ]
    return cards


def to_hdulist(
    spectrum: LinearSpectrum,
    *,
    solution: WavelengthSolution | None = None,
    cards: Sequence[Card] = (),
    ctype: str = "WAVE",
    bunit: str | None = None,
) -> fits.HDUList:
    """FLUX (primary), ERROR and MASK images sharing the spectral WCS, plus ARCLINES.

    ``cards`` (e.g. ``extraction_cards``, or the raw header's OBJECT, DATE-OBS…) go
    into the primary header; the lead decides what else the product carries.
    """
    wcs = spectrum.wcs_cards(ctype)
    primary = fits.PrimaryHDU(spectrum.flux.astype(np.float32))
    for key, value, comment in [*cards, *wcs]:
        primary.header[key] = (value, comment)
    if bunit is not None:
        primary.header["BUNIT"] = (bunit, "per wavelength bin")
    if solution is not None:
        for key, value, comment in solution_cards(solution):
            primary.header[key] = (value, comment)
    err = fits.ImageHDU(spectrum.error.astype(np.float32), name="ERROR")
    msk = fits.ImageHDU(spectrum.mask.astype(np.uint8), name="MASK")
    for hdu in (err, msk):
        for key, value, comment in wcs:
            hdu.header[key] = (value, comment)
    hdus: list[Any] = [primary, err, msk]
    if solution is not None:
        lines = solution.lines
        columns = fits.ColDefs(
            [
                fits.Column("pixel", "D", array=np.array([x.pixel for x in lines])),
                fits.Column("pixel_err", "D", array=np.array([x.pixel_err for x in lines])),
                fits.Column("fwhm", "D", array=np.array([x.fwhm for x in lines])),
                fits.Column(
                    "wavelength",
                    "D",
                    unit="Angstrom",
                    array=np.array([x.wavelength for x in lines]),
                ),
                fits.Column("species", "8A", array=np.array([x.species for x in lines])),
                fits.Column(
                    "residual", "D", unit="Angstrom", array=np.array([x.residual for x in lines])
                ),
                fits.Column("status", "10A", array=np.array([x.status for x in lines])),
            ]
        )
        # Not BinTableHDU.from_columns: its constructor imports astropy.table (0.1 CPU-s
        # per process) to check for a Table. Assigning the records gives the same HDU.
        table = fits.BinTableHDU()
        table.data = fits.FITS_rec.from_columns(columns)
        table.name = "ARCLINES"
        hdus.append(table)
    return fits.HDUList(hdus)
