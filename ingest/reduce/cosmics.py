"""Cosmic-ray detection and cleaning by sharpness against the optics' resolution limit.

Why this works, and why it leaves traces, lines and stars alone: everything that came
through the telescope is blurred by the seeing or the slit image to some minimum FWHM, so
its curvature at one-pixel scale is bounded. For a pixel at height ``F`` above the local
background, the drop to the mean of its two neighbours along x or y,
``C = p - (left + right)/2`` (or up/down), can be at most ``r(FWHM) * F``, where ``r`` is
fixed by the sharpest real profile the instrument can produce. A cosmic-ray track is a
charge deposit of sub-pixel width: across the track ``C ~ F``. So a pixel is a cosmic ray
when ``C`` is significant *and* exceeds the optics' bound by a significant margin, both
measured in units of the expected noise (read noise and Poisson noise of the local model,
in electrons).

- A spectral trace is sharp across the slit but smooth along x, a sky or arc line is sharp
  along x but smooth along y, a star or an emission line is sharp in both: each has
  ``C <= r F`` along every axis, however bright, because the test is relative.
- Only the two axis directions are used: diagonal neighbours of a compact 2-D source are
  relatively fainter (the profile enters twice), which would push real stars towards the
  cosmic-ray side, while a thin track in any direction has both axis neighbours dark.
- Two bounds, either of which admits a hit. ``F`` is measured, per axis, against the
  minimum of on-axis samples a few FWHM away: across a trace or a line they lie on the
  sky, along it on the feature, so a hit on a sky line is measured against the line it
  sits on, and a neighbouring line rarely covers all four. On a slope (a star's wing, the
  edge of the imaging field) that floor drops far below the pixel's real background, so
  the drop ``D`` to the lowest pixel two or three away on the axis is used as well:
  ``C/D`` of a real profile is bounded too (by ``q(FWHM)``), needs no background at all,
  and a straight slope only adds to ``D``.
- Compact hits that a binned pixel grid splits (common at 2x2) are tested as units of two
  pixels along x or y and of 2x2, each along both axes with the limits of a one- or
  two-pixel unit: a unit has no wings, a real profile does. Each flagged member must
  carry charge of its own against its smooth estimate, so a trace flank next to a hit
  is never dragged along. The 2x2 unit pools its two axes (each must be too sharp, and
  both together significantly so), as the two-pixel limits are loose.
- The noise model includes the master bias's own variance, a pixel-response term (the
  test runs before flat-fielding, where a bright line's pixel-to-pixel roughness is PRNU,
  not photon noise) and, in the significance threshold, the Poisson skewness of the
  photon noise, whose upper tail at a few tens of electrons is several times the Gaussian
  one. The level it is taken at includes the diagonals, so a pair of neighbours low by
  chance does not understate it.
- Nothing is tested across the frame edge: a line or a star centred just outside looks as
  sharp there as a hit, so edge pixels are tested along the edge only.
- Pixels next to a detection are re-tested (one- and two-pixel units, lower thresholds,
  significance pooled over all four axis neighbours) after the detected pixels are
  replaced by their best smooth estimate, so a track whose charge splits between two rows
  is completed, while a trace pixel next to a hit is judged against the trace, not the
  hit: the level of a flagged neighbour is estimated without the pixel under test and
  errs high (a ridge through both keeps its level).

The whole-frame pass is a handful of shifted-array operations on row chunks (no median
filters); the full tests run only where a cheap significance cut passes, and re-testing
touches only the few thousand pixels around detections: about half a second for a
4k x 2k frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.reduce.ccd import Flag

DEFAULT_MIN_FWHM_UNBINNED = 3.5  # px: ~0.5" on Goodman, sharper than seeing or a 1" slit
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


def near_sharpness_limit(min_fwhm_px: float) -> float:
    """Largest ``C/D`` of a real feature of FWHM >= ``min_fwhm_px``, where ``D`` is the
    drop from the pixel to the lower of the two pixels two away along the axis.

    No background enters: a straight slope adds nothing to ``C`` and at least as much to
    ``D`` as to the drop it hides, and a sum of profiles obeys the largest ratio among
    them. It falls from this value at the narrowest profile (centred on the pixel, the
    sharpest case) towards 1/4 for broad ones.
    """
    s = _sigma_of(min_fwhm_px)
    centre = _gauss_cdf(0.5, s) - _gauss_cdf(-0.5, s)
    one = _gauss_cdf(1.5, s) - _gauss_cdf(0.5, s)
    two = _gauss_cdf(2.5, s) - _gauss_cdf(1.5, s)
    return (1.0 - one / centre) / (1.0 - two / centre)


def near_pair_sharpness_limit(min_fwhm_px: float) -> float:
    """The same for two adjacent pixels taken as one unit (profile centred on their
    common edge)."""
    s = _sigma_of(min_fwhm_px)
    inner = _gauss_cdf(1.0, s) - _gauss_cdf(0.0, s)
    one = _gauss_cdf(2.0, s) - _gauss_cdf(1.0, s)
    two = _gauss_cdf(3.0, s) - _gauss_cdf(2.0, s)
    return (1.0 - one / inner) / (1.0 - two / inner)


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


_FLOOR_VAR = 0.5  # variance of the far floor (minimum of four samples), in pixel variances
_NEAR_VAR = 0.7  # variance of the near reference (lower of two samples), in pixel variances
_K_MEMBER = 3.5  # sigma by which each flagged member of a unit stands out by itself
_NO_REF = np.nan  # no near reference: its samples fall outside the frame


@dataclass(frozen=True)
class _Limits:
    """What the sharpest real profile allows along one axis, for units one and two
    pixels long along it: ``C/F`` against the far floor and ``C/D`` against the drop to
    the samples two pixels out."""

    r: tuple[float, float]
    q: tuple[float, float]

    @classmethod
    def of(cls, fwhm: float) -> _Limits:
        return cls(
            (sharpness_limit(fwhm), pair_sharpness_limit(fwhm)),
            (near_sharpness_limit(fwhm), near_pair_sharpness_limit(fwhm)),
        )


@dataclass(frozen=True)
class _Test:
    """Noise model and thresholds of one pass (the core test or the re-test of
    neighbours), with the optics' limits along x and y."""

    lx: _Limits
    ly: _Limits
    k_signal: float
    k_sharp: float
    read_var: float
    prnu: float
    pool_on_mean: bool  # pooled test gated on the unit against all its axis neighbours

    def variance(self, level: np.ndarray, extra: np.ndarray | float = 0.0) -> np.ndarray:
        m = np.maximum(level, np.float32(0.0))
        return self.read_var + extra + m + (np.float32(self.prnu) * m) ** 2

    def beyond(
        self,
        excess: np.ndarray,
        weight: float,
        var_unit: np.ndarray,
        var_out: np.ndarray,
        var_ref: np.ndarray,
        k: float,
    ) -> np.ndarray:
        """``excess`` (curvature minus ``weight`` x a height) beyond ``k`` of its noise.

        The unit's value enters with weight ``1 - weight``, its outer neighbours' mean
        with 1 and the height's reference level with ``weight``; the unit's own variance
        is that of its measured level, so a bright real feature keeps its photon noise in
        the margin.
        """
        var = (1.0 - weight) ** 2 * var_unit + var_out + weight * weight * var_ref
        return (excess > 0) & (excess * excess > np.float32(k * k) * var)


@dataclass
class _Unit:
    """One to four pixels tested as a unit, and what surrounds it along one axis:
    values are arrays over candidate positions (or whole-chunk views)."""

    inner: np.ndarray  # mean of the unit's pixels
    size: int  # number of pixels
    out: tuple[np.ndarray, np.ndarray]  # mean of the axis neighbours before / after
    n_out: int  # pixels in those two means together
    near: np.ndarray  # lower of the mean levels two pixels beyond either side (NaN: none)
    floor: np.ndarray  # mean far floor of the unit's pixels along the axis
    n_rows: int  # rows (or columns) averaged across the axis
    long: int  # 0: one pixel along the axis, 1: two


def _axis_test(
    u: _Unit, lim: _Limits, t: _Test, var_nb: np.ndarray, var_in: np.ndarray, lam: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Significance and sharpness of a unit along one axis.

    Returns (significant, sharp, excess, weight of the unit's value in the excess minus
    one, variance of the excess without the unit's own): the unit's curvature against
    its two axis neighbours must be significant, and exceed what a real profile allows
    by ``k_sharp`` sigma against either bound: ``r`` x its height over the far floor (a
    lower bound of the background that survives neighbouring lines), or ``q`` x its drop
    to the samples two or three pixels out (which needs no background, so it holds on a
    slope such as a star's wing or the edge of the field).

    The significance threshold carries the Poisson skewness of the photon noise
    (Cornish-Fisher, first order, ``lam`` being the photon level): at a few tens of
    electrons a pixel's upper tail is several times the Gaussian one.
    """
    curv = u.inner - (u.out[0] + u.out[1]) * np.float32(0.5)
    var_out = var_nb * np.float32(1.0 / u.n_out)
    var_null = var_nb * np.float32(1.0 / u.size) + var_out
    k = t.k_signal
    kappa3 = lam * np.float32(1.0 / u.size**2 - 1.0 / u.n_out**2)
    thr = np.float32(k) * np.sqrt(var_null) + np.float32((k * k - 1.0) / 6.0) * kappa3 / var_null
    sig = curv > thr
    zero = np.float32(0.0)
    r, q = lim.r[u.long], lim.q[u.long]
    ex_far = curv - np.float32(r) * np.maximum(u.inner - u.floor, zero)
    ex_near = curv - np.float32(q) * np.maximum(u.inner - u.near, zero)
    ex_near = np.where(np.isnan(u.near), np.float32(-1.0), ex_near)
    v_far = var_nb * np.float32(_FLOOR_VAR / u.n_rows)
    v_near = var_nb * np.float32(_NEAR_VAR / u.n_rows)
    sharp = t.beyond(ex_far, r, var_in, var_out, v_far, t.k_sharp)
    sharp |= t.beyond(ex_near, q, var_in, var_out, v_near, t.k_sharp)
    # the better of the two, for the combined test of both axes
    use_near = ex_near > ex_far
    excess = np.where(use_near, ex_near, ex_far)
    weight = np.where(use_near, np.float32(q), np.float32(r))
    var_rest = var_out + weight * weight * np.where(use_near, v_near, v_far)
    return sig, sharp, excess, weight, var_rest


def _unit_hit(
    ux: _Unit,
    uy: _Unit,
    t: _Test,
    var_nb: np.ndarray,
    var_in: np.ndarray,
    lam: np.ndarray,
    ok_x: np.ndarray | bool = True,
    ok_y: np.ndarray | bool = True,
) -> np.ndarray:
    """A unit is a hit if it is significant along x or y and too sharp along that axis,
    or significant along both, too sharp along both (each excess positive) and the two
    excesses together significantly so: a compact hit stands out along both axes, a
    trace or a line along one at most, so pooling the axes lowers the noise of the
    sharpness margin (the loose two-pixel limits need it) without admitting either; a
    noise peak on a line, significant along one axis only, cannot borrow the line's own
    margin from the other."""
    sig_x, sharp_x, e1, w1, v1 = _axis_test(ux, t.lx, t, var_nb, var_in, lam)
    sig_y, sharp_y, e2, w2, v2 = _axis_test(uy, t.ly, t, var_nb, var_in, lam)
    sig_x &= ok_x
    sig_y &= ok_y
    hit = (sig_x & sharp_x) | (sig_y & sharp_y)
    excess = (e1 + e2) * np.float32(0.5)
    if t.pool_on_mean:
        # next to a detection (few trials, and a charged neighbour is likely) the gate is
        # the unit against all of its axis neighbours, which averages their noise
        curv = ux.inner - (ux.out[0] + ux.out[1] + uy.out[0] + uy.out[1]) * np.float32(0.25)
        n_out = ux.n_out + uy.n_out
        var_null = var_nb * np.float32(1.0 / ux.size + 0.25 / ux.n_out + 0.25 / uy.n_out)
        k = t.k_signal
        kappa3 = lam * np.float32(1.0 / ux.size**2 - 1.0 / n_out**2)
        thr = np.float32(k) * np.sqrt(var_null)
        thr += np.float32((k * k - 1.0) / 6.0) * kappa3 / var_null
        gate = (curv > thr) & ok_x & ok_y
    else:
        gate = sig_x & sig_y
    both = gate & (e1 > 0) & (e2 > 0)
    # the unit's own value enters both excesses: its noise does not average out
    var = (np.float32(2.0) - w1 - w2) ** 2 * var_in + v1 + v2
    both &= excess * excess > np.float32(0.25 * t.k_sharp**2) * var
    return hit | both


# Units other than single pixels: member offsets from the candidate position (top-left).
_PAIR_X = ((0, 0), (0, 1))
_PAIR_Y = ((0, 0), (1, 0))
_QUAD = ((0, 0), (0, 1), (1, 0), (1, 1))


def _build_unit(
    get: Any,
    members: tuple[tuple[int, int], ...],
    axis: int,
    floor: Any,
    inside: Any,
) -> _Unit:
    """The unit of ``members`` seen along ``axis`` (1: x, 0: y). ``get(dy, dx)`` gives
    values, ``floor(dy, dx)`` the far floor along the axis, ``inside(dy, dx)`` whether
    that offset lies in the frame (scalar True for whole-chunk views)."""
    along = sorted({m[axis] for m in members})
    across = sorted({m[1 - axis] for m in members})
    lo, hi = along[0], along[-1]

    def off(a: int, c: int) -> tuple[int, int]:
        return (c, a) if axis == 1 else (a, c)

    scale = np.float32(1.0 / len(across))

    def mean_at(a: int) -> np.ndarray:
        vals = [get(*off(a, c)) for c in across]
        out = vals[0]
        for v in vals[1:]:
            out = out + v
        return out * scale

    inner = sum((get(*m) for m in members), start=np.float32(0.0)) * np.float32(1.0 / len(members))
    near = np.minimum(np.minimum(mean_at(lo - 2), mean_at(hi + 2)), mean_at(lo - 3))
    np.minimum(near, mean_at(hi + 3), out=near)
    ok = inside(*off(lo - 3, across[0])) & inside(*off(hi + 3, across[-1]))
    near = np.where(ok, near, np.float32(_NO_REF))
    fl = sum((floor(*m) for m in members), start=np.float32(0.0)) * np.float32(1.0 / len(members))
    return _Unit(
        inner=inner,
        size=len(members),
        out=(mean_at(lo - 1), mean_at(hi + 1)),
        n_out=2 * len(across),
        near=near,
        floor=fl,
        n_rows=len(across),
        long=hi - lo,
    )


def _members_stand_out(
    work: np.ndarray,
    flagged: np.ndarray,
    gy: np.ndarray,
    gx: np.ndarray,
    members: tuple[tuple[int, int], ...],
    var_nb: np.ndarray,
    k: float,
    read_var: float,
) -> list[np.ndarray]:
    """Each member against its smooth estimate from pixels outside the unit: a unit's
    charge must not drag along an uncharged pixel, such as a trace flank next to a hit on
    the trace (which stands out from a plain neighbour mean, but not from the estimate
    along the flank)."""
    out = []
    for my, mx in members:
        others = [(gy + oy, gx + ox) for oy, ox in members if (oy, ox) != (my, mx)]
        y, x = gy + my, gx + mx
        est = _estimate(work, flagged, y, x, None, read_var, skip=others)
        d = work[y, x] - est
        ok = np.isfinite(est) & (d > 0)
        out.append(ok & (d * d > np.float32(1.5 * k * k) * var_nb))
    return out


def _near(at: Any, axis: int) -> np.ndarray:
    """A single pixel's near reference along an axis: the lowest sample two or three
    pixels away on either side (three, so that another hit or a line two pixels off on
    one side and the feature's own shoulder on the other cannot both spoil it)."""
    if axis == 1:
        views = (at(0, -2), at(0, 2), at(0, -3), at(0, 3))
    else:
        views = (at(-2, 0), at(2, 0), at(-3, 0), at(3, 0))
    out = np.minimum(views[0], views[1])
    np.minimum(out, views[2], out=out)
    np.minimum(out, views[3], out=out)
    return out


def _level(
    left: np.ndarray,
    right: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    diagonal: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Photon level of a pixel under the smooth hypothesis: the highest of the x pair's,
    the y pair's and the diagonals' means (at least 0). The diagonals keep a pair that is
    low by chance from understating the noise, which would fatten the tail of the test."""
    out = np.maximum(left + right, up + down) * np.float32(0.5)
    diag = (diagonal[0] + diagonal[1] + diagonal[2] + diagonal[3]) * np.float32(0.25)
    np.maximum(out, diag, out=out)
    return np.maximum(out, np.float32(0.0), out=out)


def _rows_ext(a: np.ndarray, r0: int, n: int) -> np.ndarray:
    """Rows r0 .. r0+n of ``a`` (the last repeated past the end), matching a chunk."""
    out = a[r0 : r0 + n + 1]
    if out.shape[0] < n + 1:
        out = np.concatenate([out, out[-1:]], axis=0)
    return out


def _floor(at: Any, radius: int, axis: int) -> np.ndarray:
    """Background floor seen along one axis: the minimum of on-axis samples at ``radius``
    and ``radius + 2`` on both sides. Along a sky line (smooth in y) the y floor stays on
    the line, along a trace the x floor stays on the trace, so a hit on either is measured
    against the feature it sits on; across them the floor drops to the sky, even where a
    neighbouring line covers some of the samples. Its low bias only makes the test more
    conservative."""
    r, r2 = radius, radius + 2
    if axis == 1:
        views = (at(0, -r), at(0, r), at(0, -r2), at(0, r2))
    else:
        views = (at(-r, 0), at(r, 0), at(-r2, 0), at(r2, 0))
    out = np.minimum(views[0], views[1])
    np.minimum(out, views[2], out=out)
    np.minimum(out, views[3], out=out)
    return out


def _units_at(
    get: Any,
    floor_x: Any,
    floor_y: Any,
    inside: Any,
    members: tuple[tuple[int, int], ...],
    t: _Test,
    extra: np.ndarray | float,
    need: int,
    k_member: float,
    where: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Full test of a multi-pixel unit at candidate positions; returns the hits and,
    per member, whether to flag it (it stands out by ``k_member`` sigma by itself, and
    the unit has at least ``need`` such members). ``where`` is the working image, the
    flagged pixels, the candidates' positions in it and the read-noise variance."""
    ux = _build_unit(get, members, 1, floor_x, inside)
    uy = _build_unit(get, members, 0, floor_y, inside)
    h = max(m[0] for m in members)
    w = max(m[1] for m in members)
    ok_x = inside(0, -1) & inside(0, w + 1)  # no test across the frame edge
    ok_y = inside(-1, 0) & inside(h + 1, 0)
    level = np.maximum(
        (ux.out[0] + ux.out[1]) * np.float32(0.5), (uy.out[0] + uy.out[1]) * np.float32(0.5)
    )
    lam = np.maximum(level, np.float32(0.0))
    var_nb = t.variance(level, extra)
    var_in = t.variance(ux.inner, extra) * np.float32(1.0 / len(members))
    hit = _unit_hit(ux, uy, t, var_nb, var_in, lam, ok_x, ok_y)
    work, flagged, gy, gx, read_var = where
    i = np.flatnonzero(hit)
    stand = _members_stand_out(work, flagged, gy[i], gx[i], members, var_nb[i], k_member, read_var)
    n = sum(s.astype(np.int8) for s in stand)
    flags = []
    for s_ in stand:
        f = np.zeros(hit.shape, dtype=bool)
        f[i] = s_ & (n >= need)
        flags.append(f)
    hit[i] &= n >= need
    return hit, flags


def _stage_one(
    img: np.ndarray,
    bad: np.ndarray,
    extra_var: np.ndarray | float,
    t: _Test,
    radius: tuple[int, int],
    chunk_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-frame test; returns the core detections and the two axis floors.

    Single pixels are tested everywhere; two-pixel and 2x2 units only where a cheap
    pre-selection finds their mean well above their surroundings and none of their pixels
    passed the one-pixel test (otherwise the hit is already found, and pairing it with a
    neighbour on a steep real gradient, a trace flank, would flag that neighbour). The
    frame is mirrored at its edges, and nothing is tested across an edge: a line or star
    centred just outside looks as sharp there as a hit.
    """
    ny, nx = img.shape
    core = np.zeros((ny, nx), dtype=bool)
    floor_x = np.empty((ny, nx), dtype=np.float32)
    floor_y = np.empty((ny, nx), dtype=np.float32)
    pad = max(radius) + 3
    padded = np.pad(img, pad, mode="reflect")
    for r0 in range(0, ny, chunk_rows):
        r1 = min(ny, r0 + chunk_rows)
        n = r1 - r0
        m = n + 1  # one extra row below: the partners of the last row
        blk = padded[r0 : r1 + 2 * pad]

        def at(dy: int, dx: int, blk: np.ndarray = blk, m: int = m) -> np.ndarray:
            return blk[pad + dy : pad + dy + m, pad + dx : pad + dx + nx]

        fx = _floor(at, radius[0], axis=1)
        fy = _floor(at, radius[1], axis=0)
        floor_x[r0:r1] = fx[:n]
        floor_y[r0:r1] = fy[:n]
        extra = extra_var if np.isscalar(extra_var) else _rows_ext(extra_var, r0, n)  # type: ignore[arg-type]
        p, left, right, up, down = at(0, 0), at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
        lam = _level(left, right, up, down, (at(-1, -1), at(-1, 1), at(1, -1), at(1, 1)))
        var_nb = t.variance(lam, extra)
        # single pixels: the full test only where the curvature along x or y passes the
        # Gaussian part of the significance threshold (the skewness only raises it)
        k2 = np.float32(1.5 * t.k_signal**2) * var_nb
        c = p - (left + right) * np.float32(0.5)
        pre = (c > 0) & (c * c > k2)
        c = p - (up + down) * np.float32(0.5)
        pre |= (c > 0) & (c * c > k2)
        iy, ix = np.nonzero(pre)
        gy = iy + r0

        def g(dy: int, dx: int, iy: np.ndarray = iy, ix: np.ndarray = ix) -> np.ndarray:
            return at(dy, dx)[iy, ix]

        in_x = (ix >= 3) & (ix < nx - 3)
        in_y = (gy >= 3) & (gy < ny - 3)
        far = np.float32(_NO_REF)
        pv = g(0, 0)
        ux = _Unit(
            pv, 1, (g(0, -1), g(0, 1)), 2, np.where(in_x, _near(g, 1), far),
            fx[iy, ix], 1, 0,
        )  # fmt: skip
        uy = _Unit(
            pv, 1, (g(-1, 0), g(1, 0)), 2, np.where(in_y, _near(g, 0), far),
            fy[iy, ix], 1, 0,
        )  # fmt: skip
        ex = extra if np.isscalar(extra) else extra[iy, ix]  # type: ignore[index]
        # nothing across an edge: at edge columns only along y, at edge rows only along x
        ok_x = (ix > 0) & (ix < nx - 1)
        ok_y = (gy > 0) & (gy < ny - 1)
        single = np.zeros((m, nx), dtype=bool)
        single[iy, ix] = _unit_hit(
            ux, uy, t, var_nb[iy, ix], t.variance(pv, ex), lam[iy, ix], ok_x, ok_y
        )
        if r1 == ny:
            single[n] = False
        core[r0:r1] |= single[:n]
        # multi-pixel units (top-left corner here): pre-selected by their mean against
        # all of their axis neighbours, from running sums of two pixels along x and y
        hs = blk[:, :-1] + blk[:, 1:]
        vs = blk[:-1] + blk[1:]

        def hsum(dy: int, dx: int, hs: np.ndarray = hs, n: int = n) -> np.ndarray:
            return hs[pad + dy : pad + dy + n, pad + dx : pad + dx + nx - 1]

        def vsum(dy: int, dx: int, vs: np.ndarray = vs, n: int = n) -> np.ndarray:
            return vs[pad + dy : pad + dy + n, pad + dx : pad + dx + nx - 1]

        sd = np.sqrt(var_nb[:n, : nx - 1])
        free = ~single
        f00, f01, f10, f11 = free[:n, :-1], free[:n, 1:], free[1:, :-1], free[1:, 1:]
        pre = []
        for members, inner, ring, n_ring, ok in (
            (_PAIR_X, hsum(0, 0), hsum(-1, 0) + hsum(1, 0) + left[:n, :-1] + at(0, 2)[:n, :-1],
             6, f00 & f01),
            (_PAIR_Y, vsum(0, 0), vsum(0, -1) + vsum(0, 1) + up[:n, :-1] + at(2, 0)[:n, :-1],
             6, f00 & f10),
            (_QUAD, hsum(0, 0) + hsum(1, 0), hsum(-1, 0) + hsum(2, 0) + vsum(0, -1) + vsum(0, 2),
             8, f00 & f01 & f10 & f11),
        ):  # fmt: skip
            size = len(members)
            k_pre = 0.8 * t.k_signal * math.sqrt(1.0 / size + 1.0 / n_ring)
            d = inner * np.float32(1.0 / size) - ring * np.float32(1.0 / n_ring)
            cand = (d > np.float32(k_pre) * sd) & ok
            h = max(dy for dy, _ in members)
            if r1 > ny - 1 - h:  # units reaching past the last row
                cand[max(ny - h - r0, 0) :] = False
            pre.append(cand)
        iy_all, ix_all = np.nonzero(pre[0] | pre[1] | pre[2])
        for (members, need), cand in zip(
            ((_PAIR_X, 2), (_PAIR_Y, 2), (_QUAD, 3)), pre, strict=True
        ):
            sel = cand[iy_all, ix_all]
            iy, ix = iy_all[sel], ix_all[sel]
            if iy.size == 0:
                continue
            gy, gx = iy + r0, ix

            def get(
                dy: int, dx: int, blk: np.ndarray = blk, iy: np.ndarray = iy, ix: np.ndarray = ix
            ) -> np.ndarray:
                return blk[pad + dy + iy, pad + dx + ix]

            def inside(dy: int, dx: int, gy: np.ndarray = gy, gx: np.ndarray = gx) -> np.ndarray:
                y, x = gy + dy, gx + dx
                return (y >= 0) & (y < ny) & (x >= 0) & (x < nx)

            def flx(
                dy: int, dx: int, f: np.ndarray = fx, iy: np.ndarray = iy, ix: np.ndarray = ix
            ) -> np.ndarray:
                return f[iy + dy, ix + dx]

            def fly(
                dy: int, dx: int, f: np.ndarray = fy, iy: np.ndarray = iy, ix: np.ndarray = ix
            ) -> np.ndarray:
                return f[iy + dy, ix + dx]  # fmt: skip

            ex = extra if np.isscalar(extra) else extra[iy, ix]  # type: ignore[index]
            where = (img, bad, gy, gx, t.read_var)
            _, flags = _units_at(get, flx, fly, inside, members, t, ex, need, _K_MEMBER, where)
            for (dy, dx), f in zip(members, flags, strict=True):
                core[gy[f] + dy, gx[f] + dx] = True
    core &= ~bad
    return core, floor_x, floor_y


_AXES = ((0, -1), (0, 1), (-1, 0), (1, 0))
_PAIRS = (  # two-sided pairs and the axis each lies on (None: diagonal)
    (((0, -1), (0, 1)), 1),
    (((-1, 0), (1, 0)), 0),
    (((-1, -1), (1, 1)), None),
    (((-1, 1), (1, -1)), None),
    (((0, -2), (0, 2)), 1),
    (((-2, 0), (2, 0)), 0),
)
_ONE_SIDED = tuple(
    (((sy * d1, sx * d1), (sy * d2, sx * d2)), 0 if sy else 1)
    for sy, sx in _AXES
    for d1, d2 in ((1, 2), (2, 3))
)


def _estimate(
    work: np.ndarray,
    flagged: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    floor: np.ndarray | None,
    read_var: float,
    skip: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    high: bool = False,
) -> np.ndarray:
    """Smooth estimate at flagged pixels from pairs of opposite good neighbours.

    Among the pairs (x, y, two diagonals, and x and y two pixels out, for hits that cover
    the near pair) whose members agree within 3 sigma, the highest mean wins: it runs along
    a ridge, so a hit on a trace or a sky line is replaced by that feature's own level. A
    pair that disagrees has a member still carrying part of the hit (a split track) and
    would leave charge behind. Where no two-sided pair along an axis can be formed (a track
    along a trace covers both), two good pixels on one side along it give the level;
    where one can, extrapolating from one side is not needed and would carry the level of
    a line beside the pixel onto it. ``skip`` lists more pixels per query not to use (the
    neighbour being judged against this estimate, the other pixels of a unit). With
    ``high`` (for judging a neighbour, where too low a level makes it look sharp), the
    estimate is raised to what one side gives along any axis on which the nearer sample
    is a crest across that axis (above the pixels two away across it), two-sided pairs or
    not: that is a ridge running through
    the pixel (a trace along a track), whose two-sided pair a not yet flagged part of the
    hit can spoil, and not a line beside it; where nothing agrees, it is at least the
    highest one-sided mean. Without an agreeing pair see below;
    with no good neighbour at all, the floor (NaN without one).
    """
    ny, nx = work.shape
    flat_work, flat_flag = work.reshape(-1), flagged.reshape(-1)
    base = ys.astype(np.int64) * nx + xs
    skips = [sy.astype(np.int64) * nx + sx for sy, sx in skip]

    def sample(dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
        inside = (ys >= -dy) & (ys < ny - dy) & (xs >= -dx) & (xs < nx - dx)
        idx = np.where(inside, base + (dy * nx + dx), base)
        ok = inside & ~flat_flag[idx]
        for k in skips:
            ok &= idx != k
        return flat_work[idx], ok

    def agreeing(a: np.ndarray, b: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = 0.5 * (a + b)
        tol = 3.0 * np.sqrt(2.0 * (read_var + np.maximum(mean, 0.0)))
        return mean, ok & (np.abs(a - b) <= tol)

    best = np.full(ys.size, -np.inf)
    total = np.zeros(ys.size)
    count = np.zeros(ys.size)
    two_sided = np.zeros((2, ys.size), dtype=bool)  # a two-sided pair exists along y / x
    raised = np.full(ys.size, -np.inf)
    one_side = np.full(ys.size, -np.inf)  # highest one-sided mean, agreeing or not
    for (da, db), axis in _PAIRS:
        a, oa = sample(*da)
        b, ob = sample(*db)
        ok = oa & ob
        mean, agree = agreeing(a, b, ok)
        best = np.where(agree, np.maximum(best, mean), best)
        total += np.where(ok, mean, 0.0)
        count += ok
        if axis is not None:
            two_sided[axis] |= ok
    # one side below the two-sided pairs' mean is the low side of a slope (a flat
    # extrapolation there digs a hole), not a ridge's level
    with _quiet():
        floor_two = np.where(count > 0, total / np.maximum(count, 1), -np.inf)
    for (da, db), axis in _ONE_SIDED:
        a, oa = sample(*da)
        b, ob = sample(*db)
        ok = oa & ob
        mean, agree = agreeing(a, b, ok)
        one_side = np.where(ok, np.maximum(one_side, mean), one_side)
        usable = agree & ~two_sided[axis] & (mean >= floor_two)
        best = np.where(usable, np.maximum(best, mean), best)
        if high:
            # the nearer sample stands above the pixels two away across the axis (a trace
            # centred between two rows has an equal neighbour at one)
            (py, px), (qy, qx) = (
                ((da[0], da[1] - 2), (da[0], da[1] + 2))
                if axis == 0
                else ((da[0] - 2, da[1]), (da[0] + 2, da[1]))
            )
            c, oc = sample(py, px)
            d, od = sample(qy, qx)
            crest = a - 0.5 * (c + d)
            crest_ok = oc & od & (crest > 0)
            crest_ok &= crest * crest > 6.0 * (read_var + np.maximum(a, 0.0))  # 2 sigma
            raised = np.where(agree & crest_ok, np.maximum(raised, mean), raised)
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
        bad = flagged[yy, xx]
        for sy, sx in skip:
            bad |= (yy == sy[missing, None]) & (xx == sx[missing, None])
        vals[bad] = np.nan
        with _quiet():
            med = np.nanmedian(vals, axis=1)
        pair_mean = np.where(
            count[missing] > 0, total[missing] / np.maximum(count[missing], 1), np.nan
        )
        with _quiet():
            est = np.fmax(med, pair_mean)
        if high:
            # nothing agrees around a pixel whose ridge is covered by the hit (a track
            # along a line): the line's level one side gives is the safer guess
            est = np.fmax(est, np.where(np.isfinite(one_side[missing]), one_side[missing], np.nan))
        best[missing] = np.where(
            np.isfinite(est), est, floor[my, mx] if floor is not None else np.nan
        )
    if high:
        best = np.fmax(best, raised)
    return best.astype(np.float32)


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored at the frame edges, as the whole-frame pass pads the frame."""
    i = np.abs(i)
    return np.where(i > n - 1, 2 * (n - 1) - i, i)


def _retest(
    work: np.ndarray,
    flagged: np.ndarray,
    bad: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    floors: tuple[np.ndarray, np.ndarray, np.ndarray],
    extra_var: np.ndarray | float,
    t: _Test,
    core: _Test,
    read_var: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The unit tests at neighbours of detections, on the working image.

    Only a pixel that shares a side with a detection gets the re-test's lower thresholds
    (``t``): one that touches detections at a corner only rarely shares their charge
    unless it is bright, so it must pass the ``core`` test.

    A flagged axis neighbour counts at its smooth estimate made without the pixel under
    test, so two charged pixels on either side of a detection cannot vouch for it. A
    neighbour is also tested as a two-pixel unit with each unflagged axis neighbour, for
    compact hits three pixels wide; it joins only if it stands out by itself, since the
    partner may carry all of the charge. Returns the pixels to flag.
    """
    ny, nx = work.shape
    floor_x, floor_y, floor = floors
    p = work[ys, xs]
    vals = []
    side = np.zeros(ys.size, dtype=bool)
    for dy, dx in _AXES:
        y, x = _reflect(ys + dy, ny), _reflect(xs + dx, nx)
        v = work[y, x]
        f = flagged[y, x]
        side |= f
        if np.any(f):
            v = v.copy()
            v[f] = _estimate(
                work, flagged, y[f], x[f], floor, read_var, skip=[(ys[f], xs[f])], high=True
            )
        vals.append(v)
    left, right, up, down = vals

    def at(dy: int, dx: int, ys: np.ndarray = ys, xs: np.ndarray = xs) -> np.ndarray:
        return work[np.clip(ys + dy, 0, ny - 1), np.clip(xs + dx, 0, nx - 1)]

    def near(axis: int, ok: np.ndarray) -> np.ndarray:
        return np.where(ok, _near(at, axis), np.float32(_NO_REF))

    extra = extra_var if np.isscalar(extra_var) else extra_var[ys, xs]  # type: ignore[index]
    lam = _level(left, right, up, down, (at(-1, -1), at(-1, 1), at(1, -1), at(1, 1)))
    var_nb = t.variance(lam, extra)
    var_p = t.variance(p, extra)
    ux = _Unit(
        p, 1, (left, right), 2, near(1, (xs >= 3) & (xs < nx - 3)),
        floor_x[ys, xs], 1, 0,
    )  # fmt: skip
    uy = _Unit(
        p, 1, (up, down), 2, near(0, (ys >= 3) & (ys < ny - 3)),
        floor_y[ys, xs], 1, 0,
    )  # fmt: skip
    ok_x, ok_y = (xs > 0) & (xs < nx - 1), (ys > 0) & (ys < ny - 1)
    hit = np.where(
        side,
        _unit_hit(ux, uy, t, var_nb, var_p, lam, ok_x, ok_y),
        _unit_hit(ux, uy, core, var_nb, var_p, lam, ok_x, ok_y),
    )
    out_y, out_x = [ys[hit]], [xs[hit]]
    for members, (dy, dx), idx in (
        (_PAIR_X, (0, 1), 0),
        (_PAIR_X, (0, -1), 1),
        (_PAIR_Y, (1, 0), 0),
        (_PAIR_Y, (-1, 0), 1),
    ):
        qy, qx = ys + dy, xs + dx
        ok = ~hit & (qy >= 0) & (qy < ny) & (qx >= 0) & (qx < nx)
        qy, qx = np.clip(qy, 0, ny - 1), np.clip(qx, 0, nx - 1)
        ok &= ~flagged[qy, qx] & ~bad[qy, qx]
        if not np.any(ok):
            continue
        i = np.flatnonzero(ok)
        ty, tx = np.minimum(ys[i], qy[i]), np.minimum(xs[i], qx[i])  # the unit's top-left

        def get(dy: int, dx: int, ty: np.ndarray = ty, tx: np.ndarray = tx) -> np.ndarray:
            return work[np.clip(ty + dy, 0, ny - 1), np.clip(tx + dx, 0, nx - 1)]

        def inside(dy: int, dx: int, ty: np.ndarray = ty, tx: np.ndarray = tx) -> np.ndarray:
            y, x = ty + dy, tx + dx
            return (y >= 0) & (y < ny) & (x >= 0) & (x < nx)

        def fget(
            dy: int, dx: int, f: np.ndarray, ty: np.ndarray = ty, tx: np.ndarray = tx
        ) -> np.ndarray:
            return f[np.clip(ty + dy, 0, ny - 1), np.clip(tx + dx, 0, nx - 1)]

        ex = extra if np.isscalar(extra) else extra[i]  # type: ignore[index]
        _, flags = _units_at(
            get,
            lambda dy, dx: fget(dy, dx, floor_x),
            lambda dy, dx: fget(dy, dx, floor_y),
            inside, members, t, ex, 2, t.k_signal, (work, flagged, ty, tx, read_var),
        )  # fmt: skip
        pair = flags[idx] & flags[1 - idx]
        out_y += [ys[i[pair]], qy[i[pair]]]
        out_x += [xs[i[pair]], qx[i[pair]]]
    cy, cx = np.concatenate(out_y), np.concatenate(out_x)
    flat = np.unique(cy.astype(np.int64) * nx + cx)
    return flat // nx, flat % nx


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
    k_grow: float = 4.25,
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
        k_signal: a core unit's curvature must exceed this many sigma;
        k_sharp: ... and exceed the optics' bound (``r`` x height over the far floor, or
            ``q`` x drop to the near samples) by this many sigma.
        k_grow, k_grow_sharp: the same thresholds for neighbours of detections, re-tested
            after the detections are replaced (up to ``iterations`` rounds); each re-test
            is a handful of trials per detection rather than one per pixel of the frame,
            which is what lets them be lower.
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

    lim_x, lim_y = _Limits.of(fwhm_x), _Limits.of(fwhm_y)
    core_test = _Test(lim_x, lim_y, k_signal, k_sharp, read_var, prnu, pool_on_mean=False)
    grow_test = _Test(lim_x, lim_y, k_grow, k_grow_sharp, read_var, prnu, pool_on_mean=True)
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
    core, floor_x, floor_y = _stage_one(work, bad, extra, core_test, radius, max(8, chunk_rows))
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
        ty, tx = _retest(
            work,
            flagged,
            bad,
            cy,
            cx,
            (floor_x, floor_y, floor),
            extra,
            grow_test,
            core_test,
            read_var,
        )
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
        sharpness_limit=lim_x.r[0],
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
