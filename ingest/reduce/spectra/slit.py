"""Where the slit is illuminated and where the targets sit along it.

Goodman's long slit covers only part of the spectroscopic ROI, and its ends are tilted and
curved: sky must never be fitted on unilluminated rows, and targets are only searched for
between the edges.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ._fit import FWHM_PER_SIGMA, RobustFit, fit_gaussians, robust_chebyshev, windows


@dataclass(frozen=True)
class SlitEdges:
    """Rows of the 50 % illumination points along the slit, as functions of the column."""

    lower: RobustFit  # first illuminated row (0-based array row)
    upper: RobustFit  # last illuminated row
    n_columns: int

    def at(self, x: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.lower(x)), np.asarray(self.upper(x))

    @property
    def rows(self) -> tuple[float, float]:
        """Innermost edges over the whole frame: a safe row range for everything."""
        xs = np.arange(self.n_columns, dtype=np.float64)
        lo, hi = self.at(xs)
        return float(lo.max()), float(hi.min())


def collapse(block: np.ndarray) -> np.ndarray:
    """Interquartile mean of each row, ignoring NaN (masked) pixels.

    Robust to cosmic rays, lines and hot pixels like a median, but not quantised:
    a median of integer ADU on a faint sky moves in whole steps, which hides both the
    slit edge and the noise level. Sorted in the block's own precision (numpy's
    vectorised sort makes float32 twice as fast), summed in float64.
    """
    srt = np.sort(block, axis=1)  # NaN sort last
    n = np.sum(np.isfinite(srt), axis=1)
    m = srt.shape[1]
    out = np.full(srt.shape[0], np.nan)
    counts = np.unique(n[n > 0])
    if counts.size <= 16:  # few distinct NaN counts (a bad column): one slice per count
        for k in counts:
            rows = n == k
            lo, hi = k // 4, max(-(-3 * k // 4), k // 4 + 1)
            out[rows] = srt[rows, lo:hi].sum(axis=1, dtype=np.float64) / float(hi - lo)
        return out
    some = n > 0
    if some.any():
        part, k = srt[some], n[some]
        lo_k = k // 4
        hi_k = np.maximum(-(-3 * k // 4), lo_k + 1)
        cum = np.zeros((part.shape[0], m + 1))
        np.cumsum(np.nan_to_num(part), axis=1, dtype=np.float64, out=cum[:, 1:])
        rows = np.arange(part.shape[0])
        out[some] = (cum[rows, hi_k] - cum[rows, lo_k]) / (hi_k - lo_k)
    return out


def nan_masked(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The image with masked pixels NaN, kept in float32 when it is (half the sorting).

    What ``find_slit_edges`` and ``find_targets`` make of ``image`` and ``mask``: a
    caller running both passes this once (with no mask) instead of two frame copies.
    """
    data = np.asarray(image)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    return data if mask is None else np.where(mask, np.nan, data)


def _edge(prof: np.ndarray, start: int, direction: int, dark: float, min_level: float) -> float:
    """Sub-pixel 50 % point of one slit end, walking outward from the lit row ``start``.

    Dark and plateau levels are taken on either side of this end only: bias structure
    and vignetting make them differ between the two ends of a faint sky.
    """
    n = prof.size
    inner = prof[np.clip(start - direction * np.arange(8, 40), 0, n - 1)]
    outer_idx = start + direction * np.arange(8, 40)
    outer_idx = outer_idx[(outer_idx >= 0) & (outer_idx < n)]
    local_dark = float(np.median(prof[outer_idx])) if outer_idx.size >= 5 else dark
    plateau = float(np.median(inner))
    if plateau - local_dark < min_level:
        return np.nan
    level = 0.5 * (plateau + local_dark)
    i = start - 8 * direction
    while 0 <= i + direction < n and prof[i + direction] >= level:
        i += direction
    j = i + direction  # first row below the level
    if not 0 <= j < n:
        return np.nan
    return i + direction * (prof[i] - level) / (prof[i] - prof[j])


def find_slit_edges(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    n_bins: int = 16,
    order: int = 2,
    min_level: float = 5.0,
) -> SlitEdges:
    """Find both slit ends from a frame lit along the slit (flat, sky or arc continuum).

    Columns are combined by ``collapse`` in ``n_bins`` bins, so lines, cosmic rays and
    the target do not matter; each end is the 50 % point between the dark rows just
    outside it and the plateau just inside, and a low-order polynomial follows the tilt
    and curvature. ``min_level`` (data units) is the step below which a bin is too faint
    to use. A flat gives the best edges; a science frame's sky works when bright enough.
    """
    data = nan_masked(image, mask)
    ny, nx = data.shape
    edges = np.linspace(0, nx, n_bins + 1).astype(int)
    xs, lows, highs = [], [], []
    for a, b in itertools.pairwise(edges):
        prof = collapse(data[:, a:b])
        prof = np.where(np.isfinite(prof), prof, 0.0)
        ends = np.concatenate([prof[: max(ny // 20, 3)], prof[-max(ny // 20, 3) :]])
        dark = float(np.median(ends))
        lit = np.flatnonzero(prof > dark + 0.5 * (np.percentile(prof, 90) - dark))
        if lit.size < 10:
            continue
        lo = _edge(prof, int(lit[0]), -1, dark, min_level)
        hi = _edge(prof, int(lit[-1]), +1, dark, min_level)
        if np.isfinite(lo) and np.isfinite(hi):
            xs.append(0.5 * (a + b - 1))
            lows.append(lo)
            highs.append(hi)
    if len(xs) < order + 2:
        raise ValueError("slit illumination too faint to locate the slit edges")
    xa = np.asarray(xs)
    domain = (0.0, float(nx - 1))
    lower = robust_chebyshev(xa, np.asarray(lows), order, domain=domain, clip=4.0)
    upper = robust_chebyshev(xa, np.asarray(highs), order, domain=domain, clip=4.0)
    return SlitEdges(lower=lower, upper=upper, n_columns=nx)


@dataclass(frozen=True)
class Target:
    """A source found in the spatial profile collapsed along the dispersion."""

    row: float  # centre at column ``column``
    column: float
    fwhm: float  # px along the slit
    peak: float  # per-column amplitude above the sky (data units)
    flux: float  # per-column integrated flux above the sky
    snr: float  # of ``flux`` in the collapsed profile


@dataclass(frozen=True)
class TargetSearch:
    """All targets found, brightest first; ``best`` is the one to extract by default."""

    targets: tuple[Target, ...]
    profile: np.ndarray  # sky-subtracted collapsed profile used for the search
    noise: float  # robust per-row noise of ``profile``

    @property
    def best(self) -> Target:
        if not self.targets:
            raise ValueError("no target found along the slit")
        return self.targets[0]


def find_targets(
    image: np.ndarray,
    edges: SlitEdges | None = None,
    mask: np.ndarray | None = None,
    *,
    columns: tuple[int, int] | None = None,
    edge_margin: float = 8.0,
    min_snr: float = 8.0,
    max_targets: int = 10,
) -> TargetSearch:
    """Detect point-like sources along the slit, brightest first.

    The profile is ``collapse`` over ``columns`` (default: the central half, where
    most spectra are brightest), which ignores cosmic rays and lines; the sky along the
    slit is a robust cubic (vignetting and dust shape it), and rows within
    ``edge_margin`` px of a slit end are never searched because the illumination step
    there looks like a source.
    """
    data = nan_masked(image, mask)
    ny, nx = data.shape
    c0, c1 = columns if columns is not None else (nx // 4, 3 * nx // 4)
    prof = collapse(data[:, c0:c1])
    prof = np.where(np.isfinite(prof), prof, 0.0)
    if edges is not None:
        lo, hi = edges.at(0.5 * (c0 + c1 - 1))
        r0, r1 = float(lo) + edge_margin, float(hi) - edge_margin
    else:
        r0, r1 = edge_margin, ny - 1 - edge_margin
    rows = np.arange(ny)
    inside = (rows >= r0) & (rows <= r1)
    if inside.sum() < 10:
        raise ValueError("slit too short to search for targets")
    # Vignetting and dust shape the sky along the slit: a constant would leave bumps.
    sky_fit = robust_chebyshev(rows[inside], prof[inside], 3, clip=2.5)
    sub = prof - sky_fit(rows)
    step = np.diff(sub[inside])
    noise = float(1.4826 * np.median(np.abs(step - np.median(step))) / np.sqrt(2.0))
    noise = max(noise, 1e-12)
    peaks = (
        np.flatnonzero(
            inside[1:-1]
            & (sub[1:-1] > sub[:-2])
            & (sub[1:-1] >= sub[2:])
            & (sub[1:-1] > min_snr * noise)
        )
        + 1
    )
    # Keep the highest peak of each clump: noise spikes on a bright profile are not sources.
    peaks = peaks[np.argsort(-sub[peaks])]
    chosen: list[int] = []
    for p in peaks:
        if all(abs(int(p) - q) > 4 for q in chosen):
            chosen.append(int(p))
        if len(chosen) >= 3 * max_targets:
            break
    if not chosen:
        return TargetSearch((), sub, noise)
    half = 8
    var = np.full(ny, noise**2)
    xw, yw, ww = windows(sub, var, np.asarray(chosen, dtype=float), half)
    ww[~inside[np.clip(xw.astype(int), 0, ny - 1)]] = 0.0
    fit = fit_gaussians(xw, yw, ww, np.asarray(chosen, dtype=float), 1.5, slope=False)
    found: list[Target] = []
    for i in range(len(chosen)):
        if not fit.ok[i] or not (r0 <= fit.centre[i] <= r1):
            continue
        fwhm = float(fit.sigma[i] * FWHM_PER_SIGMA)
        snr = float(fit.amplitude[i] / max(fit.amplitude_err[i], 1e-12))
        if snr < min_snr or any(abs(fit.centre[i] - t.row) < 0.5 * fwhm for t in found):
            continue
        found.append(
            Target(
                row=float(fit.centre[i]),
                column=0.5 * (c0 + c1 - 1),
                fwhm=fwhm,
                peak=float(fit.amplitude[i] / (fit.sigma[i] * np.sqrt(2 * np.pi))),
                flux=float(fit.amplitude[i]),
                snr=snr,
            )
        )
    found.sort(key=lambda t: -t.flux)
    return TargetSearch(tuple(found[:max_targets]), sub, noise)
