"""Cosmic-ray detection and cleaning by sharpness against the optics' resolution limit.

Why this works, and why it leaves traces, lines and stars alone: everything that came
through the telescope is blurred by the seeing or the slit image to some minimum FWHM, so
its curvature at one-pixel scale is bounded. For a pixel at height ``F`` above the local
background, the drop to the mean of its two neighbours along x or y,
``C = p - (left + right)/2`` (or up/down), can be at most ``r(FWHM) * F``, where ``r`` is
fixed by the sharpest real profile the instrument can produce. A cosmic-ray track is a
charge deposit of sub-pixel width: across the track ``C ~ F``. So a pixel is a cosmic ray
when ``C`` is significant *and* exceeds ``r * F`` by a significant margin, both measured in
units of the expected noise (read noise and Poisson noise of the local model, in electrons).

- A spectral trace is sharp across the slit but smooth along x, a sky or arc line is sharp
  along x but smooth along y, a star or an emission line is sharp in both: each has
  ``C <= r F`` along every axis, however bright, because the test is relative.
- Only the two axis directions are used: diagonal neighbours of a compact 2-D source are
  relatively fainter (the profile enters twice), which would push real stars towards the
  cosmic-ray side, while a thin track in any direction has both axis neighbours dark.
- ``F`` is measured, per axis, against the minimum of on-axis samples a few FWHM away: across
  a trace or a line they lie on the sky, along it they lie on the feature, so a hit on a
  sky line is measured against the line it sits on. Their low bias only makes the test
  more conservative.
- Two adjacent pixels are also tested as one unit: a compact hit split over a pixel
  boundary (common at 2x2) has no wings, a real profile does.
- The noise model includes the master bias's own variance and a pixel-response term (the
  test runs before flat-fielding, where a bright line's pixel-to-pixel roughness is PRNU,
  not photon noise).
- Pixels next to a detection are re-tested after the detected pixels are replaced by their
  best smooth estimate, so a track whose charge splits between two rows (the partner pixel
  is not sharp while its brighter twin is present) is completed, while a trace pixel next
  to a hit is judged against the trace, not against the hit.

The whole-frame pass is a handful of shifted-array operations on row chunks (no median
filters), and re-testing touches only the few thousand pixels around detections: well under
a second for a 4k x 2k frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ingest.reduce.ccd import Flag

DEFAULT_MIN_FWHM_UNBINNED = 3.5  # px: ~0.5" on Goodman, sharper than seeing or a 1" slit
_SQRT_1_5 = math.sqrt(1.5)
_RING8 = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
_FILLED = Flag.HOT | Flag.BAD_COLUMN | Flag.LOW_RESPONSE


@dataclass(frozen=True)
class CosmicRays:
    """Result of :func:`detect_cosmics`."""

    mask: np.ndarray  # bool, True on cosmic-ray pixels
    cleaned: np.ndarray  # float32 copy of the input with those pixels replaced
    n_pixels: int
    n_events: int  # 8-connected groups of flagged pixels
    sharpness_limit: float  # the r(FWHM) used
    params: dict[str, float]


def _gauss_cdf(z: float, s: float) -> float:
    return 0.5 * (1.0 + math.erf(z / (s * math.sqrt(2.0))))


def _sigma_of(fwhm: float) -> float:
    if fwhm <= 0:
        raise ValueError("FWHM must be positive")
    return fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def sharpness_limit(min_fwhm_px: float) -> float:
    """Largest ``C/F`` a real feature of FWHM >= ``min_fwhm_px`` can show along an axis.

    Computed for a pixel-integrated Gaussian centred on a pixel, the sharpest case; a
    Moffat core is somewhat sharper, which is why the default FWHM floor sits below any
    real seeing or slit width.
    """
    s = _sigma_of(min_fwhm_px)
    centre = _gauss_cdf(0.5, s) - _gauss_cdf(-0.5, s)
    neighbour = _gauss_cdf(1.5, s) - _gauss_cdf(0.5, s)
    return 1.0 - neighbour / centre


def pair_sharpness_limit(min_fwhm_px: float) -> float:
    """The same limit for two adjacent pixels taken as one unit (profile centred on their
    common edge, the sharpest case): mean of the outer pair over the inner pair."""
    s = _sigma_of(min_fwhm_px)
    inner = _gauss_cdf(1.0, s) - _gauss_cdf(0.0, s)
    outer = _gauss_cdf(2.0, s) - _gauss_cdf(1.0, s)
    return 1.0 - outer / inner


def _shift(a: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """View of padded array ``a`` shifted by (dy, dx), cropped to the unpadded size."""
    ny, nx = a.shape[0] - 2 * pad, a.shape[1] - 2 * pad
    return a[pad + dy : pad + dy + ny, pad + dx : pad + dx + nx]


def _fill_defects(img: np.ndarray, bad: np.ndarray, read_var: float) -> np.ndarray:
    """Replace known-bad pixels by the same ridge-preserving estimate used for hits.

    A hot column must not serve as the "neighbour" that makes a real pixel look sharp or
    hides a cosmic ray, and a hot pixel inside a narrow arc line must be filled at the
    line's level (a plain neighbour median would dig a hole that makes its neighbours
    along the line look sharp). Clusters are filled from the outside in.
    """
    out = img.copy()
    ys, xs = np.nonzero(bad)
    if ys.size == 0:
        return out
    todo = bad.copy()
    for _ in range(4):
        est = _estimate(out, todo, ys, xs, None, read_var)
        ok = np.isfinite(est)
        out[ys[ok], xs[ok]] = est[ok]
        todo[ys[ok], xs[ok]] = False
        ys, xs = ys[~ok], xs[~ok]
        if ys.size == 0:
            break
    out[ys, xs] = 0.0
    return out


class _quiet:
    """Silence numpy's all-NaN slice warning inside a block."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


@dataclass(frozen=True)
class _Test:
    """Thresholds of the sharpness test along one axis."""

    r_single: float  # C/F limit of a real feature at one-pixel scale
    r_pair: float  # the same for a two-pixel unit (compact hits binned over two pixels)
    k_signal: float
    k_sharp: float
    read_var: float
    prnu: float

    def variance(self, model: np.ndarray, extra: np.ndarray | float = 0.0) -> np.ndarray:
        m = np.maximum(model, 0.0)
        return self.read_var + extra + m + (self.prnu * m) ** 2

    def single(
        self, p: np.ndarray, a: np.ndarray, b: np.ndarray, floor: np.ndarray, sigma: np.ndarray
    ) -> np.ndarray:
        """``p`` sharper than its neighbours ``a``, ``b`` allow for a real feature."""
        s = sigma * np.float32(_SQRT_1_5)
        curv = p - (a + b) * np.float32(0.5)
        hit = curv > self.k_signal * s
        hit &= (curv - np.float32(self.r_single) * (p - floor)) > self.k_sharp * s
        return hit

    def pair(
        self,
        p: np.ndarray,
        q: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        floor: np.ndarray,
        sigma: np.ndarray,
    ) -> np.ndarray:
        """The two-pixel unit ``p, q`` (outer neighbours ``a``, ``b``) is too sharp.

        A compact hit that lands on a pixel boundary splits into two equal pixels, whose
        one-pixel curvature is only half their height, as for a real feature of ~2 px FWHM;
        measured as a unit it still has no wings, while a real profile does. Both pixels
        stand out from their own outer neighbour, so a hit never drags an uncharged
        neighbour along.
        """
        inner = (p + q) * np.float32(0.5)
        curv = inner - (a + b) * np.float32(0.5)
        hit = curv > self.k_signal * sigma
        hit &= (curv - np.float32(self.r_pair) * (inner - floor)) > self.k_sharp * sigma
        hit &= (p - a > self.k_signal * sigma) & (q - b > self.k_signal * sigma)
        return hit


def _rows_ext(a: np.ndarray, r0: int, n: int) -> np.ndarray:
    """Rows r0 .. r0+n of ``a`` (the last repeated past the end), matching a chunk."""
    out = a[r0 : r0 + n + 1]
    if out.shape[0] < n + 1:
        out = np.concatenate([out, out[-1:]], axis=0)
    return out


def _floor(blk: np.ndarray, radius: int, pad: int, axis: int) -> np.ndarray:
    """Background floor seen along one axis: the minimum of on-axis samples at ``radius``
    and ``radius + 2`` on both sides. Along a sky line (smooth in y) the y floor stays on
    the line, along a trace the x floor stays on the trace, so a hit on either is measured
    against the feature it sits on; across them the floor drops to the sky."""
    offsets = (-radius, radius, -radius - 2, radius + 2)
    if axis == 1:
        views = [_shift(blk, 0, o, pad) for o in offsets]
    else:
        views = [_shift(blk, o, 0, pad) for o in offsets]
    out = np.minimum(views[0], views[1])
    np.minimum(out, views[2], out=out)
    np.minimum(out, views[3], out=out)
    return out


def _stage_one(
    img: np.ndarray,
    bad: np.ndarray,
    extra_var: np.ndarray | float,
    tx: _Test,
    ty: _Test,
    radius: tuple[int, int],
    chunk_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-frame test; returns the core detections and the two axis floors.

    A two-pixel unit counts only where neither of its pixels passed the one-pixel test:
    otherwise the hit is already found, and pairing it with a neighbour on a steep real
    gradient (a trace flank) would flag that neighbour.
    """
    ny, nx = img.shape
    core = np.zeros((ny, nx), dtype=bool)
    floor_x = np.empty((ny, nx), dtype=np.float32)
    floor_y = np.empty((ny, nx), dtype=np.float32)
    pad = max(radius) + 2
    padded = np.pad(img, ((pad, pad + 1), (pad, pad)), mode="edge")
    for r0 in range(0, ny, chunk_rows):
        r1 = min(ny, r0 + chunk_rows)
        n = r1 - r0
        blk = padded[r0 : r1 + 1 + 2 * pad]  # one extra row: the partners of the last row

        def at(dy: int, dx: int, blk: np.ndarray = blk, n: int = n) -> np.ndarray:
            return blk[pad + dy : pad + dy + n + 1, pad + dx : pad + dx + nx]

        p, left, right, up, down = at(0, 0), at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
        fx = _floor(blk, radius[0], pad, axis=1)
        fy = _floor(blk, radius[1], pad, axis=0)
        floor_x[r0:r1] = fx[:n]
        floor_y[r0:r1] = fy[:n]
        model = np.maximum(left + right, up + down) * np.float32(0.5)
        extra = extra_var if np.isscalar(extra_var) else _rows_ext(extra_var, r0, n)  # type: ignore[arg-type]
        sigma = np.sqrt(tx.variance(model, extra)).astype(np.float32)
        single = tx.single(p, left, right, fx, sigma) | ty.single(p, up, down, fy, sigma)
        if r1 == ny:
            single[n] = False
        # two-pixel units, tested only where both pixels stand out from their outer
        # neighbours (rare), so the full test runs on a few pixels per chunk
        k_x = np.float32(tx.k_signal) * sigma[:n, :-1]
        cand_x = (p[:n, :-1] - left[:n, :-1] > k_x) & (right[:n, :-1] - at(0, 2)[:n, :-1] > k_x)
        cand_x &= ~single[:n, :-1] & ~single[:n, 1:]
        pair_x = np.zeros((n, nx), dtype=bool)
        iy, ix = np.nonzero(cand_x)
        if iy.size:
            pair_x[iy, ix] = tx.pair(
                p[iy, ix], right[iy, ix], left[iy, ix], at(0, 2)[iy, ix], fx[iy, ix], sigma[iy, ix]
            )
        k_y = np.float32(ty.k_signal) * sigma[:n]
        cand_y = (p[:n] - up[:n] > k_y) & (down[:n] - at(2, 0)[:n] > k_y)
        cand_y &= ~single[:n] & ~single[1 : n + 1]
        if r1 == ny:
            cand_y[n - 1] = False
        pair_y = np.zeros((n, nx), dtype=bool)
        iy, ix = np.nonzero(cand_y)
        if iy.size:
            pair_y[iy, ix] = ty.pair(
                p[iy, ix], down[iy, ix], up[iy, ix], at(2, 0)[iy, ix], fy[iy, ix], sigma[iy, ix]
            )
        hit = single[:n] | pair_x | pair_y
        hit[:, 1:] |= pair_x[:, :-1]  # the partner one pixel right
        core[r0:r1] |= hit
        core[r0 + 1 : r1 + 1] |= pair_y[: min(n, ny - r0 - 1)]  # the partner one row down
    core &= ~bad
    return core, floor_x, floor_y


_AXES = np.array([(0, -1), (0, 1), (-1, 0), (1, 0)])
_ONE_SIDED = (
    ((0, -1), (0, -2)),
    ((0, 1), (0, 2)),
    ((-1, 0), (-2, 0)),
    ((1, 0), (2, 0)),
)
_PAIRS = (
    ((0, -1), (0, 1)),
    ((-1, 0), (1, 0)),
    ((-1, -1), (1, 1)),
    ((-1, 1), (1, -1)),
    ((0, -2), (0, 2)),
    ((-2, 0), (2, 0)),
)


def _estimate(
    work: np.ndarray,
    flagged: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    floor: np.ndarray | None,
    read_var: float,
) -> np.ndarray:
    """Smooth estimate at flagged pixels from pairs of opposite good neighbours.

    Among the pairs (x, y, two diagonals, and x and y two pixels out, for hits that cover
    the near pair) whose members agree within 3 sigma, the highest mean wins: it runs along
    a ridge, so a hit on a trace or a sky line is replaced by that feature's own level. A
    pair that disagrees has a member still carrying part of the hit (a split track) and
    would leave charge behind. Without an agreeing pair see below; with no good neighbour
    at all, the floor (NaN without one).
    """
    ny, nx = work.shape
    best = np.full(ys.size, -np.inf)
    total = np.zeros(ys.size)
    count = np.zeros(ys.size)
    for (ay, ax), (by, bx) in _PAIRS:
        y1, x1 = np.clip(ys + ay, 0, ny - 1), np.clip(xs + ax, 0, nx - 1)
        y2, x2 = np.clip(ys + by, 0, ny - 1), np.clip(xs + bx, 0, nx - 1)
        ok = ~flagged[y1, x1] & ~flagged[y2, x2]
        a = work[y1, x1].astype(np.float64)
        b = work[y2, x2].astype(np.float64)
        mean = 0.5 * (a + b)
        diff = np.abs(a - b)
        agree = ok & (diff <= 3.0 * np.sqrt(2.0 * (read_var + np.maximum(mean, 0.0))))
        best = np.where(agree, np.maximum(best, mean), best)
        total += np.where(ok, mean, 0.0)
        count += ok
    for (ay, ax), (by, bx) in _ONE_SIDED:
        # two good pixels on one side along an axis: the level of a line or trace whose
        # other side is still covered by the hit
        y1, x1 = np.clip(ys + ay, 0, ny - 1), np.clip(xs + ax, 0, nx - 1)
        y2, x2 = np.clip(ys + by, 0, ny - 1), np.clip(xs + bx, 0, nx - 1)
        ok = ~flagged[y1, x1] & ~flagged[y2, x2]
        a = work[y1, x1].astype(np.float64)
        b = work[y2, x2].astype(np.float64)
        mean = 0.5 * (a + b)
        agree = ok & (np.abs(a - b) <= 3.0 * np.sqrt(2.0 * (read_var + np.maximum(mean, 0.0))))
        best = np.where(agree, np.maximum(best, mean), best)
    missing = ~np.isfinite(best)
    if np.any(missing):
        # no agreeing pair (a hit on a steep slope or along a line's flank): the higher of
        # the good-pair mean and the good-neighbour median. Each can fall short (pairs
        # that straddle a line, neighbours on the low side of a slope); too low an
        # estimate would make the next pixel look sharp, too high only costs a faint tail.
        my, mx = ys[missing], xs[missing]
        yy = np.clip(my[:, None] + _RING8[None, :, 0], 0, ny - 1)
        xx = np.clip(mx[:, None] + _RING8[None, :, 1], 0, nx - 1)
        vals = work[yy, xx].astype(np.float64)
        vals[flagged[yy, xx]] = np.nan
        with _quiet():
            med = np.nanmedian(vals, axis=1)
        pair_mean = np.where(
            count[missing] > 0, total[missing] / np.maximum(count[missing], 1), np.nan
        )
        with _quiet():
            est = np.fmax(med, pair_mean)
        best[missing] = np.where(
            np.isfinite(est), est, floor[my, mx] if floor is not None else np.nan
        )
    return best.astype(np.float32)


def _retest(
    work: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    floor_x: np.ndarray,
    floor_y: np.ndarray,
    extra_var: np.ndarray | float,
    tx: _Test,
    ty: _Test,
) -> np.ndarray:
    """The one-pixel test at selected pixels of the (partly cleaned) working image."""
    ny, nx = work.shape
    p = work[ys, xs]
    left, right, up, down = (
        work[np.clip(ys + dy, 0, ny - 1), np.clip(xs + dx, 0, nx - 1)] for dy, dx in _AXES
    )
    model = np.maximum(left + right, up + down) * np.float32(0.5)
    extra = extra_var if np.isscalar(extra_var) else extra_var[ys, xs]  # type: ignore[index]
    sigma = np.sqrt(tx.variance(model, extra)).astype(np.float32)
    return tx.single(p, left, right, floor_x[ys, xs], sigma) | ty.single(
        p, up, down, floor_y[ys, xs], sigma
    )


def _neighbours(
    ys: np.ndarray, xs: np.ndarray, flagged: np.ndarray, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels 8-adjacent to (ys, xs) that are neither flagged nor excluded."""
    ny, nx = flagged.shape
    yy = np.clip(ys[:, None] + _RING8[None, :, 0], 0, ny - 1).ravel()
    xx = np.clip(xs[:, None] + _RING8[None, :, 1], 0, nx - 1).ravel()
    flat = np.unique(yy * nx + xx)
    cy, cx = flat // nx, flat % nx
    keep = ~flagged[cy, cx] & ~exclude[cy, cx]
    return cy[keep], cx[keep]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a boolean mask by one pixel (8-connected)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    out[:, 1:] |= grown[:, :-1]
    out[:, :-1] |= grown[:, 1:]
    return out


def count_events(mask: np.ndarray) -> int:
    """Number of 8-connected groups of True pixels (union-find on the flagged ones only)."""
    ys, xs = np.nonzero(mask)
    return _count_groups(ys, xs, mask.shape)


def _count_groups(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, ...]) -> int:
    n = ys.size
    if n == 0:
        return 0
    nx = shape[1]
    flat = ys.astype(np.int64) * nx + xs
    order = np.argsort(flat)
    flat = flat[order]
    ys, xs = ys[order], xs[order]
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        ty, tx = ys + dy, xs + dx
        ok = (ty < shape[0]) & (tx >= 0) & (tx < nx)
        target = ty.astype(np.int64) * nx + tx
        pos = np.clip(np.searchsorted(flat, target), 0, n - 1)
        hit = ok & (flat[pos] == target)
        for i, j in zip(np.flatnonzero(hit), pos[hit], strict=True):
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[ri] = rj
    return len({find(i) for i in range(n)})


def detect_cosmics(
    data: np.ndarray,
    *,
    read_noise: float,
    gain: float = 1.0,
    mask: np.ndarray | None = None,
    min_fwhm_px: float | tuple[float, float] | None = None,
    binning: int = 1,
    prnu: float = 0.01,
    extra_variance: np.ndarray | float = 0.0,
    k_signal: float = 6.0,
    k_sharp: float = 3.0,
    k_grow: float = 4.0,
    k_grow_sharp: float = 1.5,
    iterations: int = 4,
    chunk_rows: int = 128,
) -> CosmicRays:
    """Find cosmic-ray pixels in a bias-subtracted frame and return a cleaned copy.

    Parameters:
        data: bias-subtracted signal, *before* flat-fielding, so that its noise is
            ``read_noise² + signal`` in electrons (``gain`` converts if it is in ADU).
        read_noise: electrons.
        mask: :class:`~ingest.reduce.ccd.Flag` bits (or bool) of known defects; they are
            never reported as cosmic rays nor used as neighbours.
        min_fwhm_px: FWHM (binned pixels) of the sharpest real feature, one number or
            ``(along x, along y)``: in a spectrum the arc-line width along the dispersion
            and the best seeing along the slit. Default 3.5 unbinned pixels / ``binning``
            (0.5" on Goodman) on both axes; passing the real values gains sensitivity.
        prnu: pixel-to-pixel response scatter of the unflattened frame; above ~15 000 e-
            it, not photon noise, sets the pixel-scale roughness of a bright line.
        extra_variance: electrons² of signal-independent noise beyond the read noise, a
            scalar or a per-pixel array: the master bias's own variance (read noise² / n),
            which a 3-bias master makes a third of the read noise².
        k_signal: a core pixel's curvature must exceed this many sigma;
        k_sharp: ... and exceed the optics' limit ``r(FWHM) x height`` by this many sigma.
        k_grow, k_grow_sharp: the same thresholds for neighbours of detections, re-tested
            after the detections are replaced (up to ``iterations`` rounds).
    """
    img = np.asarray(data, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError("data must be 2-D")
    if gain != 1.0:
        img = img * np.float32(gain)
    if min_fwhm_px is None:
        min_fwhm_px = DEFAULT_MIN_FWHM_UNBINNED / max(binning, 1)
    fwhm_x, fwhm_y = (
        (float(min_fwhm_px), float(min_fwhm_px))
        if np.isscalar(min_fwhm_px)
        else (float(min_fwhm_px[0]), float(min_fwhm_px[1]))  # type: ignore[index]
    )
    read_var = float(read_noise) ** 2

    def tests(k_sig: float, k_shp: float) -> tuple[_Test, _Test]:
        return (
            _Test(sharpness_limit(fwhm_x), pair_sharpness_limit(fwhm_x), k_sig, k_shp,
                  read_var, prnu),
            _Test(sharpness_limit(fwhm_y), pair_sharpness_limit(fwhm_y), k_sig, k_shp,
                  read_var, prnu),
        )  # fmt: skip

    core_x, core_y = tests(k_signal, k_sharp)
    grow_x, grow_y = tests(k_grow, k_grow_sharp)
    radius = (max(3, math.ceil(2.5 * fwhm_x)), max(3, math.ceil(2.5 * fwhm_y)))
    if mask is None:
        bad = np.zeros(img.shape, dtype=bool)
        saturated = bad
    elif mask.dtype == bool:
        bad = mask
        saturated = np.zeros(img.shape, dtype=bool)
    else:
        bad = (mask & np.uint16(_FILLED)) != 0
        saturated = _dilate((mask & np.uint16(Flag.SATURATED)) != 0)
    work = _fill_defects(img, bad, read_var)
    # saturated pixels keep their (clipped) value: a star's flat top is a better neighbour
    # than anything interpolated, and they and their edge are never called cosmic rays
    bad = bad | saturated
    extra = (
        float(extra_variance)
        if np.isscalar(extra_variance)
        else np.asarray(extra_variance, dtype=np.float32)
    )
    core, floor_x, floor_y = _stage_one(
        work, bad, extra, core_x, core_y, radius, max(8, chunk_rows)
    )
    floor = np.minimum(floor_x, floor_y)
    flagged = core.copy()
    fy, fx = np.nonzero(flagged)
    ty, tx = fy, fx  # pixels whose neighbours are still to be re-tested
    for _ in range(max(iterations, 0)):
        if ty.size == 0:
            break
        work[fy, fx] = _estimate(work, flagged, fy, fx, floor, read_var)
        cy, cx = _neighbours(ty, tx, flagged, bad)
        if cy.size == 0:
            break
        new = _retest(work, cy, cx, floor_x, floor_y, extra, grow_x, grow_y)
        ty, tx = cy[new], cx[new]
        flagged[ty, tx] = True
        fy, fx = np.concatenate([fy, ty]), np.concatenate([fx, tx])
    if fy.size:
        work[fy, fx] = _estimate(work, flagged, fy, fx, floor, read_var)
    cleaned = np.where(bad, img, work).astype(np.float32)
    if gain != 1.0:
        cleaned /= np.float32(gain)
    return CosmicRays(
        mask=flagged,
        cleaned=cleaned,
        n_pixels=int(fy.size),
        n_events=_count_groups(fy, fx, flagged.shape),
        sharpness_limit=core_x.r_single,
        params={
            "min_fwhm_x_px": fwhm_x,
            "min_fwhm_y_px": fwhm_y,
            "k_signal": k_signal,
            "k_sharp": k_sharp,
            "k_grow": k_grow,
            "k_grow_sharp": k_grow_sharp,
            "prnu": prnu,
        },
    )
