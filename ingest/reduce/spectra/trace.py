"""Trace of a point source along the dispersion, to a small fraction of a pixel.

The trace is followed outward from a bright reference column in bins of columns, each
fitted with a pixel-integrated Gaussian, and summarised by a low-order Chebyshev series
with outlier rejection: extraction and the arc both depend on it, so a bin hit by a
cosmic ray or a sky-line residual must not bend it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._fit import FWHM_PER_SIGMA, RobustFit, fit_gaussians, robust_chebyshev


@dataclass(frozen=True)
class TraceBin:
    """One binned measurement of the spatial profile."""

    column: float  # mean column of the bin
    row: float
    row_err: float
    fwhm: float
    flux: float
    used: bool  # kept by the polynomial fit


@dataclass(frozen=True)
class Trace:
    """Row of the trace centre as a Chebyshev series in the column index."""

    fit: RobustFit
    fwhm: float  # median FWHM of the profile along the slit (px)
    bins: tuple[TraceBin, ...]
    n_columns: int

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return np.asarray(self.fit(x))

    @property
    def coefficients(self) -> tuple[float, ...]:
        return tuple(float(c) for c in self.fit.coefficients)

    @property
    def domain(self) -> tuple[float, float]:
        return self.fit.domain

    @property
    def rms(self) -> float:
        """Rms (px) of the bin centres about the fit: the trace's internal scatter."""
        return self.fit.rms

    @property
    def n_used(self) -> int:
        return sum(b.used for b in self.bins)

    @property
    def n_rejected(self) -> int:
        return sum(not b.used for b in self.bins)


def fit_trace(
    image: np.ndarray,
    variance: np.ndarray,
    row: float,
    mask: np.ndarray | None = None,
    *,
    column: float | None = None,
    fwhm: float = 3.0,
    bin_width: int | None = None,
    order: int = 3,
    clip: float = 3.0,
    min_snr: float = 10.0,
    max_jump: float | None = None,
    systematic: float = 0.01,
) -> Trace:
    """Fit the trace of the target near ``row`` (at ``column``, default the frame centre).

    Bins default to ~40 along the dispersion. Each bin is summed over its columns (masked
    pixels are replaced by the bin's mean of good pixels in that row, scaled), a local
    background is fitted with the Gaussian, and the next bin starts from the last good
    centre so curved traces are followed. Bins below ``min_snr`` or jumping more than
    ``max_jump`` px (default one FWHM) are not used; ``systematic`` px is added in
    quadrature to each bin's error so that very bright bins do not dominate the fit.
    """
    ny, nx = np.shape(image)
    width = bin_width or max(nx // 40, 5)
    starts = np.arange(0, nx - width // 2, width)
    centres = np.minimum(starts + width / 2.0 - 0.5, nx - 1)
    ref = float(column) if column is not None else 0.5 * (nx - 1)
    k0 = int(np.argmin(np.abs(centres - ref)))
    jump = max_jump if max_jump is not None else max(fwhm, 2.0)
    half = int(np.ceil(max(3.0 * fwhm, 6.0)))
    results: dict[int, TraceBin] = {}
    for direction in (range(k0, len(starts)), range(k0 - 1, -1, -1)):
        guess = float(row)
        sig = fwhm / FWHM_PER_SIGMA
        for k in direction:
            a = int(starts[k])
            b = min(a + width, nx)
            r0 = max(round(guess) - half, 0)
            r1 = min(round(guess) + half + 1, ny)
            d = np.asarray(image[r0:r1, a:b], dtype=np.float64)  # only the bin, in float64
            v = np.asarray(variance[r0:r1, a:b], dtype=np.float64)
            m = ~np.isfinite(d) | ~np.isfinite(v) | (v <= 0)
            if mask is not None:
                m |= np.asarray(mask[r0:r1, a:b], dtype=bool)
            ngood = (~m).sum(axis=1)
            scale = (b - a) / np.maximum(ngood, 1)
            prof = np.where(m, 0.0, d).sum(axis=1) * scale
            pvar = np.where(m, 0.0, v).sum(axis=1) * scale**2
            w = np.where(ngood > 0.5 * (b - a), 1.0 / np.maximum(pvar, 1e-30), 0.0)
            xs = np.arange(r0, r1, dtype=np.float64)
            fit = fit_gaussians(xs[None], prof[None], w[None], np.array([guess]), sig)
            col = float(np.mean(np.arange(a, b)))
            if not fit.ok[0]:
                continue
            c, e = float(fit.centre[0]), float(fit.centre_err[0])
            snr = fit.amplitude[0] / max(fit.amplitude_err[0], 1e-30)
            if snr < min_snr or abs(c - guess) > jump:
                continue
            results[k] = TraceBin(
                column=col,
                row=c,
                row_err=e,
                fwhm=float(fit.sigma[0] * FWHM_PER_SIGMA),
                flux=float(fit.amplitude[0]),
                used=True,
            )
            guess = c
            sig = float(fit.sigma[0])
    good = [results[k] for k in sorted(results)]
    if len(good) < order + 2:
        raise ValueError(f"trace lost: only {len(good)} usable bins near row {row:.1f}")
    xs = np.array([g.column for g in good])
    ys = np.array([g.row for g in good])
    es = np.array([g.row_err for g in good])
    rf = robust_chebyshev(
        xs, ys, order, sigma=es, floor=systematic, domain=(0.0, float(nx - 1)), clip=clip
    )
    bins = tuple(
        TraceBin(g.column, g.row, g.row_err, g.fwhm, g.flux, bool(u))
        for g, u in zip(good, rf.used, strict=True)
    )
    fw = float(np.median([b.fwhm for b in bins if b.used]))
    return Trace(fit=rf, fwhm=fw, bins=bins, n_columns=nx)
