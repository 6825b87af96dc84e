"""Combining frames: sigma-clipped stacks, master bias, master flat, bad-pixel mask.

The stack is clipped against each pixel's *expected* noise (the variance planes the
calibration already carries) rather than the scatter of the few frames themselves: with
5-10 frames a per-pixel standard deviation is too noisy to clip on, and a cosmic ray
inflates it. The robust starting centre is the mean without each pixel's lowest and highest
value, which costs two reductions instead of a median's sort, so a 10-frame 1x1 stack
takes a fraction of a second. Work proceeds in row chunks to bound memory.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.reduce.ccd import (
    DEFECT_FLAGS,
    CalibratedFrame,
    Cards,
    Flag,
    PendingCalibration,
    median_along,
)

CHUNK_BYTES = 16 * 2**20  # one chunk of the stack: small enough to stay in cache
COMBINE_METHODS = ("mean", "median")


@dataclass(frozen=True)
class Combined:
    """A stacked frame; ``n_used`` counts the values kept per pixel."""

    data: np.ndarray  # float32
    variance: np.ndarray  # float32
    n_used: np.ndarray  # uint16
    n_rejected: int  # values clipped or masked over the whole stack


@functools.cache
def _trimmed_std_factor(n: int) -> float:
    """Ratio of the true sigma to the std of the n-2 middle values of n normal draws.

    Used only when no variances are given; computed once per n from a fixed-seed sample
    so the result is deterministic.
    """
    rng = np.random.default_rng(12345)
    x = np.sort(rng.standard_normal((200_000, n)), axis=1)[:, 1:-1]
    return float(1.0 / np.sqrt(np.mean(np.var(x, axis=1, ddof=1))))


def _rows(a: Any, rows: slice) -> np.ndarray:
    return np.asarray(a[rows], dtype=np.float32)


def sigma_clip_combine(
    frames: Sequence[np.ndarray],
    *,
    variances: Sequence[np.ndarray | float] | None = None,
    masks: Sequence[np.ndarray] | None = None,
    scales: Sequence[float] | None = None,
    method: str = "mean",
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    iterations: int = 2,
    chunk_bytes: int = CHUNK_BYTES,
) -> Combined:
    """Combine equally shaped frames pixel by pixel, rejecting outliers.

    Parameters:
        frames: 2-D arrays (memory maps are fine: only one chunk of rows is read at a time).
        variances: per-frame variance arrays or scalars, in the frames' units. Clipping
            is at ``sigma_low``/``sigma_high`` times the expected sigma of a pixel (the root
            of the mean of the frames' variances). Without them the noise is the
            min/max-trimmed scatter of the stack itself.
        masks: per-frame arrays whose non-zero pixels are excluded (e.g. saturated).
        scales: each frame is divided by its scale first (flats at different levels);
            variances are divided by its square.
        method: ``mean`` of the kept values or ``median`` of them (slower: a sort).
            The variance is the kept frames' variances summed / n_used², times π/2 for the
            median.
        iterations: clip passes on suspect pixels; each recentres on the mean of the
            values kept so far.

    Speed: a pixel whose values all lie within the clip range of the min/max-trimmed mean
    and are unmasked (nearly all) gets the plain mean from sums already taken; only the
    rest go through the iterative clip. Pixels where every value was rejected fall back to
    the median of the stack and get ``n_used = 0``.
    """
    n = len(frames)
    if n == 0:
        raise ValueError("nothing to combine")
    if method not in COMBINE_METHODS:
        raise ValueError(f"method must be one of {COMBINE_METHODS}, not {method!r}")
    shape = np.shape(frames[0])
    if len(shape) != 2:
        raise ValueError(f"frames must be 2-D, got shape {shape}")
    for f in frames:
        if np.shape(f) != shape:
            raise ValueError(f"frames differ in shape: {np.shape(f)} vs {shape}")
    for what, seq in (("variances", variances), ("masks", masks), ("scales", scales)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries for {n} frames")
    ny, nx = shape
    scale_arr = np.ones(n, np.float32) if scales is None else np.asarray(scales, np.float32)
    if np.any(~np.isfinite(scale_arr)) or np.any(scale_arr <= 0):
        raise ValueError("scales must be positive and finite")
    inv = (1.0 / scale_arr).astype(np.float32)
    out = np.empty(shape, np.float32)
    out_var = np.empty(shape, np.float32)
    n_used = np.empty(shape, np.uint16)
    n_rejected = 0
    step = int(max(1, min(ny, chunk_bytes // max(n * nx * 4 * 3, 1))))
    trim_factor = _trimmed_std_factor(n) if n >= 4 else 1.0
    lo_k, hi_k = np.float32(sigma_low), np.float32(sigma_high)
    # variances that are numbers (a bias: read noise alone) are summed once, in the order
    # and precision the per-pixel sum would use, and stay numbers
    constant_var = None
    if variances is not None and not any(np.ndim(v) for v in variances):
        acc = np.float32(0.0)
        for i, v in enumerate(variances):
            acc = np.float32(acc + np.float32(v) * inv[i] ** 2)
        constant_var = np.float32(acc / np.float32(n))
    # one stack buffer for all chunks: fresh memory per chunk costs page faults
    stack_buf = np.empty((n, step, nx), np.float32)

    for r0 in range(0, ny, step):
        rows = slice(r0, min(ny, r0 + step))
        m = rows.stop - rows.start
        stack = stack_buf[:, :m]
        for i, f in enumerate(frames):
            stack[i] = f[rows]
            if scales is not None:
                stack[i] *= inv[i]
        suspect = np.zeros((m, nx), bool)
        if masks is not None:
            for mk in masks:
                suspect |= np.asarray(mk[rows]) != 0
        var_mean: np.ndarray | np.float32 | None = constant_var
        if variances is not None and constant_var is None:
            var_mean = np.zeros((m, nx), np.float32)
            for i, v in enumerate(variances):
                var_mean += (_rows(v, rows) if np.ndim(v) else np.float32(v)) * inv[i] ** 2
            var_mean /= np.float32(n)

        value = out[rows]
        total = stack.sum(axis=0)
        lowest, highest = stack.min(axis=0), stack.max(axis=0)
        if n >= 4:
            centre = (total - lowest - highest) / np.float32(n - 2)
        else:
            centre = np.median(stack, axis=0)
        if var_mean is not None:
            sigma = np.sqrt(var_mean)
        else:
            sigma = _trimmed_sigma(stack, np.ones(stack.shape, bool), centre)
            sigma *= np.float32(trim_factor)
        # a value beyond the clip range exists exactly when the extremes are beyond it
        highest -= centre
        np.subtract(centre, lowest, out=lowest)
        suspect |= highest > hi_k * sigma
        suspect |= lowest > lo_k * sigma

        if method == "median":
            value[...] = np.median(stack, axis=0)
        else:
            np.divide(total, np.float32(n), out=value)
        out_var[rows] = (var_mean if var_mean is not None else sigma * sigma) / np.float32(n)
        n_used[rows] = n

        idx = np.flatnonzero(suspect)
        if idx.size:
            sub = np.take(stack.reshape(n, -1), idx, axis=1)
            valid = None
            if masks is not None:
                valid = np.stack([np.asarray(mk[rows]).ravel()[idx] == 0 for mk in masks])
            sub_var: np.ndarray
            if constant_var is not None:
                assert variances is not None
                sub_var = np.array([[np.float32(v) * inv[i] ** 2] for i, v in enumerate(variances)])
            elif variances is not None:
                sub_var = np.empty(sub.shape, np.float32)
                for i, v in enumerate(variances):
                    if np.ndim(v):
                        np.multiply(_rows(v, rows).ravel()[idx], inv[i] ** 2, out=sub_var[i])
                    else:
                        sub_var[i] = np.float32(v) * inv[i] ** 2
            else:
                sub_var = np.broadcast_to(np.asarray(sigma).ravel()[idx] ** 2, sub.shape)
            val, var_s, cnt_s, rej = _clip_subset(
                sub, valid, sub_var, lo_k, hi_k, iterations, method
            )
            value.reshape(-1)[idx] = val
            out_var[rows].reshape(-1)[idx] = var_s
            n_used[rows].reshape(-1)[idx] = cnt_s
            n_rejected += rej
    return Combined(out, out_var, n_used, n_rejected)


def _clip_subset(
    stack: np.ndarray,
    valid: np.ndarray | None,
    var: np.ndarray,
    lo_k: np.float32,
    hi_k: np.float32,
    iterations: int,
    method: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Iterative clipping of the (n, m) values of the suspect pixels.

    ``valid`` None means every value is usable; ``var`` may be (n, 1), one variance per
    frame.
    """
    n = stack.shape[0]
    var = np.broadcast_to(var, stack.shape)
    if valid is None:
        sigma = np.sqrt(var.sum(0).astype(np.float64) / n)
    else:
        sigma = np.sqrt(np.where(valid, var, 0).sum(0) / np.maximum(valid.sum(0), 1))
    centre = _robust_centre(stack, valid)
    hi_s, lo_s = hi_k * sigma, -lo_k * sigma
    keep = np.ones(stack.shape, bool) if valid is None else valid
    for _ in range(max(iterations, 1)):
        dev = stack - centre
        keep = dev <= hi_s
        keep &= dev >= lo_s
        if valid is not None:
            keep &= valid
        cnt = keep.sum(axis=0)
        total = np.where(keep, stack, np.float32(0.0)).sum(axis=0, dtype=np.float64)
        centre = np.where(cnt > 0, total / np.maximum(cnt, 1), centre).astype(np.float32)
    cnt = keep.sum(axis=0)
    if method == "median":
        with np.errstate(all="ignore"):
            value = np.nanmedian(np.where(keep, stack, np.nan), axis=0)
    else:
        value = centre
    empty = cnt == 0
    kept_var = np.where(keep, var, np.float32(0.0)).sum(axis=0)
    v = kept_var / np.maximum(cnt, 1) ** 2
    if empty.any():
        value = np.where(empty, np.median(stack, axis=0), value)
        v = np.where(empty, np.mean(var, axis=0) / n, v)
    value = value.astype(np.float32)
    if method == "median":
        v = v * np.pi / 2
    return value, v.astype(np.float32), cnt.astype(np.uint16), int(keep.size - keep.sum())


def _robust_centre(stack: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Per-pixel mean without the lowest and highest valid value (median for n < 4)."""
    n = stack.shape[0]
    if valid is None:
        if n >= 4:
            total = stack.sum(axis=0, dtype=np.float64)
            return ((total - stack.max(axis=0) - stack.min(axis=0)) / (n - 2)).astype(np.float32)
        valid = np.ones(stack.shape, bool)
    if n < 3:
        return (np.where(valid, stack, 0).sum(0) / np.maximum(valid.sum(0), 1)).astype(np.float32)
    if n == 3:
        return np.median(stack, axis=0).astype(np.float32)
    big = np.float32(np.finfo(np.float32).max)
    hi = np.where(valid, stack, -big).max(axis=0)
    lo = np.where(valid, stack, big).min(axis=0)
    cnt = valid.sum(axis=0)
    total = np.where(valid, stack, 0.0).sum(axis=0, dtype=np.float64)
    trimmed = (total - hi - lo) / np.maximum(cnt - 2, 1)
    plain = total / np.maximum(cnt, 1)
    return np.where(cnt >= 4, trimmed, plain).astype(np.float32)


def _trimmed_sigma(stack: np.ndarray, valid: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Std of the stack without each pixel's lowest and highest value (outliers)."""
    big = np.float32(np.finfo(np.float32).max)
    hi = np.where(valid, stack, -big).max(axis=0)
    lo = np.where(valid, stack, big).min(axis=0)
    dev = np.where(valid, stack - centre, 0.0)
    cnt = valid.sum(axis=0)
    ss = (dev * dev).sum(axis=0) - (hi - centre) ** 2 - (lo - centre) ** 2
    return np.sqrt(np.maximum(ss, 0.0) / np.maximum(cnt - 3, 1)).astype(np.float32)


# --------------------------------------------------------------------------- masters


FrameSource = CalibratedFrame | PendingCalibration


class _Blocks:
    """The planes of one frame source, computed once per block of rows.

    The combine asks for a block's data, variance and mask separately (and the suspect
    pixels' values again); a pending calibration would otherwise redo the block each time.
    Only the planes the combine will read are computed.
    """

    def __init__(self, source: PendingCalibration, variance: bool, mask: bool) -> None:
        self.source = source
        self.variance, self.mask = variance, mask
        self._rows: tuple[int, int] | None = None
        self._planes: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None

    def planes(self, rows: slice) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        key = (rows.start, rows.stop)
        if self._planes is None or key != self._rows:
            self._rows = key
            self._planes = self.source.block(rows, variance=self.variance, mask=self.mask)
        return self._planes


class _Plane:
    """One plane of a frame source as the row-sliceable array the combine reads."""

    ndim = 2

    def __init__(self, blocks: _Blocks, index: int, bits: int | None = None) -> None:
        self.blocks, self.index, self.bits = blocks, index, bits
        self.shape = blocks.source.shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        plane = self.blocks.planes(rows)[self.index]
        assert plane is not None
        return plane if self.bits is None else plane & np.uint16(self.bits)


def _stack_inputs(
    frames: Sequence[FrameSource], mask_bits: int
) -> tuple[list[Any], list[Any], list[Any] | None]:
    """Data, variance and ``mask_bits`` of the mask of every frame, for the combine.

    Calibrated frames hand over their arrays; pending calibrations are calibrated one
    block of rows at a time as the combine reaches it. No masks at all when no frame
    has any of ``mask_bits``: the combine then skips them.
    """
    if not frames:
        raise ValueError("no frames given")
    shape = frames[0].shape
    for f in frames:
        if f.shape != shape:
            raise ValueError(f"frames differ in shape: {f.shape} vs {shape}")
    flagged = any(f.may_flag(mask_bits) for f in frames)
    data: list[Any] = []
    var: list[Any] = []
    masks: list[Any] = []
    for f in frames:
        if isinstance(f, CalibratedFrame):
            data.append(f.data)
            var.append(f.variance)
            if flagged:
                masks.append(f.mask & np.uint16(mask_bits))
        else:
            constant = f.constant_variance
            blocks = _Blocks(f, variance=constant is None, mask=flagged)
            data.append(_Plane(blocks, 0))
            var.append(_Plane(blocks, 1) if constant is None else constant)
            masks.append(_Plane(blocks, 2, mask_bits))
    return data, var, masks if flagged else None


def make_master_bias(
    frames: Sequence[FrameSource],
    *,
    method: str = "mean",
    sigma: float = 3.0,
) -> CalibratedFrame:
    """Master bias (electrons) from overscan-corrected, trimmed bias frames.

    Its variance plane (read noise² / n) lets every frame it corrects carry the master's
    own noise; its mask is empty: defects are found by :func:`bad_pixel_mask`.
    """
    data, var, sat = _stack_inputs(frames, Flag.SATURATED)
    comb = sigma_clip_combine(
        data, variances=var, masks=sat, method=method, sigma_low=sigma, sigma_high=sigma
    )
    cards: Cards = {
        "NCOMBINE": (len(frames), "bias frames combined"),
        "COMBMETH": (f"{method}, {sigma:g}-sigma clip on the noise model", "combine method"),
        "NREJECT": (comb.n_rejected, "pixel values rejected in the stack"),
        "BUNIT": ("electron", ""),
    }
    mask = np.where(comb.n_used == 0, np.uint16(Flag.SATURATED), np.uint16(0)).astype(np.uint16)
    return CalibratedFrame(comb.data, comb.variance, mask, cards)


FLAT_NORMALISATIONS = ("simple", "mean", "none")


@dataclass(frozen=True)
class RejectedFrame:
    index: int
    reason: str


@dataclass(frozen=True)
class MasterFlat:
    """The normalised flat plus what went into it and what was left out, and why."""

    flat: CalibratedFrame
    used: list[int]
    rejected: list[RejectedFrame]
    response: np.ndarray | None = None  # the fitted 1-D spectral shape (``simple`` only)
    meta: dict[str, Any] = field(default_factory=dict)


def flat_saturation(frame: FrameSource, max_fraction: float = 1e-3) -> str | None:
    """Why a flat is unusable because of saturation, or None.

    The SATURATED bits come from ``calibrate_frame``, which applies the readout mode's real
    threshold (the converter ceiling, or bias + 50 % full well in the high-gain modes).
    Pixels already known to be defects do not count.
    """
    n, size = frame.count_saturated(), frame.shape[0] * frame.shape[1]
    return _saturation_reason(n, size, frame.header_updates, max_fraction)


def _saturation_reason(n: int, size: int, cards: Cards, max_fraction: float) -> str | None:
    frac = n / size
    if frac > max_fraction:
        level = cards.get("SATURATE")
        at = f" at or above {level[0]:.0f} raw ADU" if level else ""
        return f"saturated: {n} pixels ({100 * frac:.3f}% > {100 * max_fraction:.3f}% allowed){at}"
    return None


@dataclass(frozen=True)
class _Survey:
    """What rejecting and scaling a flat needs, from one pass over it."""

    saturated: int  # saturated pixels that are not known defects
    size: int
    positive: bool  # any pixel above zero (in the sample)
    level: float  # typical lit level (of every other pixel of every other row)


def _survey(frame: FrameSource) -> _Survey:
    """Saturation counted on every pixel, level and emptiness on a quarter of them.

    The sample (every other pixel of every other row) is enough for a level taken as a
    median over a million lit pixels, and a pending calibration computes only it.
    """
    ny, nx = frame.shape
    if isinstance(frame, PendingCalibration):
        data, _, mask = frame.block(slice(None, None, 2), step=2, variance=False)
        assert mask is not None
    else:
        data, _, mask = frame.rows(slice(None, None, 2), step=2)
    level, _ = _illuminated_level(data, mask & np.uint16(DEFECT_FLAGS))
    return _Survey(frame.count_saturated(), ny * nx, bool(np.any(data > 0)), level)


def _illuminated_level(
    data: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Typical level of the lit pixels and where they are (a flat's slit or field).

    Lit means above half the 99th percentile: the unlit margins of a long-slit or imaging
    flat sit near zero, so they would drag a plain mean or median down.
    """
    sample = data[::4, ::4]
    if mask is not None:
        sample = sample[mask[::4, ::4] == 0]
    top = float(np.percentile(sample, 99.0))
    lit = data > 0.5 * top
    if mask is not None:
        lit &= mask == 0
    level = float(np.median(data[lit][:: max(1, int(lit.sum() // 500_000))])) if lit.any() else 1.0
    return level, lit


def make_master_flat(
    frames: Sequence[FrameSource],
    *,
    normalization: str = "simple",
    dispersion_axis: int = 1,
    order: int = 15,
    sigma: float = 3.0,
    max_saturated_fraction: float = 1e-3,
    min_response: float = 0.2,
) -> MasterFlat:
    """Combine bias-subtracted flats, reject saturated ones, and normalise.

    Each flat is scaled by its lit median before stacking (lamp output and twilight fade
    between exposures), so clipping compares like with like.

    ``normalization``:
        ``mean``: divide by the mean of the lit pixels (imaging flats: the field's shape
            is vignetting, which science frames share, so it stays in the flat).
        ``simple``: for spectroscopic flats. The lamp's spectrum (colour temperature x
            grating and CCD efficiency) is not a property of the pixels: it is the
            per-column clipped mean over the lit slit rows, fitted with a Chebyshev series
            of ``order`` along ``dispersion_axis`` and divided out. What remains is pixel
            response x slit illumination (vignetting along the slit, dust on the jaws):
            science and arc light pass the same slit, so it is kept on purpose. The
            Chebyshev fit, not the raw profile, is divided so the flat's noise does not
            imprint on every column.
        ``none``: the scaled stack as is.

    Pixels below ``min_response`` of the lit level (outside the slit or field, where the
    flat carries no information) are set to 1 and flagged UNILLUMINATED; with ``mean``
    on a spectroscopic flat that includes the faint ends of the lamp spectrum.
    """
    if normalization not in FLAT_NORMALISATIONS:
        raise ValueError(f"normalization must be one of {FLAT_NORMALISATIONS}")
    if dispersion_axis not in (0, 1):
        raise ValueError("dispersion_axis is 0 (along y) or 1 (along x, Goodman)")
    rejected: list[RejectedFrame] = []
    used: list[int] = []
    surveys = [_survey(f) for f in frames]
    for i, (f, survey) in enumerate(zip(frames, surveys, strict=True)):
        reason = _saturation_reason(
            survey.saturated, survey.size, f.header_updates, max_saturated_fraction
        )
        if reason is None and not survey.positive:
            reason = "empty: no positive signal"
        if reason is not None:
            rejected.append(RejectedFrame(i, reason))
        else:
            used.append(i)
    if not used:
        raise ValueError(
            "no usable flat: " + "; ".join(f"#{r.index}: {r.reason}" for r in rejected)
        )
    good = [frames[i] for i in used]
    levels = [surveys[i].level for i in used]
    data, var, excl = _stack_inputs(good, Flag.SATURATED | Flag.BAD_COLUMN)
    comb = sigma_clip_combine(
        data, variances=var, masks=excl, scales=levels, sigma_low=sigma, sigma_high=sigma
    )
    flat = comb.data
    fvar = comb.variance
    response = None
    meta: dict[str, Any] = {"levels": levels, "normalization": normalization}
    if normalization == "simple":
        response, lit_rows = _spectral_response(flat, dispersion_axis, order, sigma)
        shape = response[None, :] if dispersion_axis == 1 else response[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.where(shape > 0, shape, np.inf).astype(np.float32)
            flat /= safe  # the combine's own arrays: divided in place
            fvar /= safe * safe
        meta["lit_rows"] = lit_rows
        meta["order"] = order
    level, _ = _illuminated_level(flat)
    unlit = ~(flat > min_response * level)
    if normalization in ("simple", "mean"):
        # one set of lit pixels both defines the normalisation and gets the flat: its
        # mean is exactly 1, everything else is UNILLUMINATED
        lit_mean = float(np.mean(flat[~unlit])) if np.any(~unlit) else 1.0
        flat /= np.float32(lit_mean)
        fvar /= np.float32(lit_mean**2)
        meta["norm"] = lit_mean
    mask = np.multiply(unlit, np.uint16(Flag.UNILLUMINATED), dtype=np.uint16)
    mask[comb.n_used == 0] |= np.uint16(Flag.SATURATED)
    np.copyto(flat, np.float32(1.0), where=unlit)
    np.copyto(fvar, np.float32(0.0), where=unlit)
    cards: Cards = {
        "NCOMBINE": (len(good), "flat frames combined"),
        "NREJFLAT": (len(rejected), "flat frames rejected (saturation)"),
        "FLATNORM": (normalization, "flat normalisation"),
        "BUNIT": ("", "dimensionless response"),
    }
    if normalization == "simple":
        cards["FLATORDR"] = (order, "Chebyshev order of the lamp spectrum fit")
    return MasterFlat(CalibratedFrame(flat, fvar, mask, cards), used, rejected, response, meta)


def _spectral_response(
    flat: np.ndarray, axis: int, order: int, sigma: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """Chebyshev fit of the lamp spectrum along the dispersion axis, over the lit slit."""
    img = flat if axis == 1 else flat.T
    nx = img.shape[1]
    rowlevel = median_along(img, 1)
    top = float(np.percentile(rowlevel, 95))
    lit = np.flatnonzero(rowlevel > 0.7 * top)
    if lit.size < 3:
        raise ValueError("flat has no lit rows to measure the lamp spectrum on")
    # the interior of the slit only: its edges are tilted and would bias the profile
    lo, hi = int(lit[0]), int(lit[-1]) + 1
    pad = max(2, (hi - lo) // 20)
    block = img[lo + pad : hi - pad]
    profile = median_along(block, 0).astype(np.float64)
    cols = np.arange(nx)
    lit_cols = profile > 0.02 * float(np.max(profile))
    x = cols[lit_cols]
    y = profile[lit_cols]
    keep = np.ones(x.size, dtype=bool)
    cheb = np.polynomial.Chebyshev.fit(x, y, order)
    for _ in range(5):
        resid = (y - cheb(x)) / np.maximum(np.abs(cheb(x)), 1e-12)
        s = 1.4826 * np.median(np.abs(resid[keep]))
        new_keep = np.abs(resid) <= sigma * max(s, 1e-6)
        if np.array_equal(new_keep, keep) or new_keep.sum() <= order + 1:
            break
        keep = new_keep
        cheb = np.polynomial.Chebyshev.fit(x[keep], y[keep], order)
    response = np.zeros(nx)
    response[lit_cols] = cheb(x)
    response[response <= 0] = 0.0
    return response, (lo + pad, hi - pad)


# ----------------------------------------------------------------------- bad pixels


@dataclass(frozen=True)
class BadPixels:
    mask: np.ndarray  # uint16 Flag bits
    counts: dict[str, int]
    thresholds: dict[str, float]


def _separable_background(img: np.ndarray, smooth: int = 9) -> np.ndarray:
    """Row medians plus a smoothed column profile: the bias structure (ramps, slopes,
    ripples) is separable and smooth along x, while a bad column is one column wide, so it
    stays in the residual instead of being absorbed as "structure"."""
    rows = median_along(img, 1, keepdims=True)
    cols = median_along(img - rows, 0)
    pad = smooth // 2
    padded = np.pad(cols, pad, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, smooth)
    cols_smooth = np.median(windows, axis=1)
    return (rows + cols_smooth[None, :]).astype(np.float32)


def _running_mean(img: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Boxcar mean along ``axis`` of a 2-D array (edges use the available pixels).

    Summed in float64 one block of lines at a time: a whole frame's cumulative sums
    would cost several float64 copies of it.
    """
    a = np.moveaxis(np.asarray(img), axis, -1)
    n = a.shape[-1]
    out = np.empty(a.shape, np.float32)
    half = width // 2
    idx = np.arange(n)
    hi = np.minimum(idx + half + 1, n)
    lo = np.maximum(idx - half, 0)
    w = 2 * half + 1
    edge = np.r_[0 : min(half, n), max(n - half, half) : n]  # windows cut by the ends
    step = max(1, CHUNK_BYTES // (8 * (n + 1)))
    for r0 in range(0, a.shape[0], step):
        block = a[r0 : r0 + step]
        c = np.zeros((block.shape[0], n + 1))
        np.cumsum(block, axis=-1, dtype=np.float64, out=c[:, 1:])
        if n > 2 * half:  # full windows: two shifted slices, no gathering
            out[r0 : r0 + step, half : n - half] = (c[:, w:] - c[:, : n + 1 - w]) / w
        out[r0 : r0 + step, edge] = (c[:, hi[edge]] - c[:, lo[edge]]) / (hi[edge] - lo[edge])
    return np.moveaxis(out, -1, axis)


def _near(flags: np.ndarray, half: int) -> np.ndarray:
    """Pixels with a flagged pixel within ``half`` columns (a dilation along x).

    Grown by doubling shifts, a few boolean passes, where a running mean of the flags
    would take float64 cumulative sums of the whole frame.
    """
    ny, nx = flags.shape
    near = np.zeros((ny, nx + 2 * half), bool)  # padded: a flag near an end grows evenly
    near[:, half : half + nx] = flags
    reach = 0
    while reach < half:
        s = min(2 * reach + 1, half - reach)
        grown = near.copy()
        grown[:, s:] |= near[:, :-s]
        grown[:, :-s] |= near[:, s:]
        near, reach = grown, reach + s
    return near[:, half : half + nx]


def bad_pixel_mask(
    master_bias: CalibratedFrame | None = None,
    master_flat: CalibratedFrame | None = None,
    *,
    hot_sigma: float = 6.0,
    column_min_run: int = 20,
    low_response: float = 0.8,
    response_window: int = 31,
) -> BadPixels:
    """Flag detector defects: hot pixels and columns from the bias, dead pixels from the flat.

    Hot: the master bias above its separable row/column structure by more than
    ``hot_sigma`` x its robust pixel scatter (fixed pattern + master noise). A column with a
    run of >= ``column_min_run`` hot pixels is a bad column and flagged over the whole run.
    Low response: the normalised flat below ``low_response`` x its running mean along x
    (``response_window`` pixels), tested only where the whole window is lit, so the slit
    and field edges are not mistaken for dead pixels (they carry UNILLUMINATED instead).
    Only biases see hot pixels above a few e-/s; fainter ones show up in long exposures as
    sharp single pixels, which the cosmic-ray step catches.
    """
    if master_bias is None and master_flat is None:
        raise ValueError("need a master bias, a master flat, or both")
    shape = (master_bias or master_flat).data.shape  # type: ignore[union-attr]
    mask = np.zeros(shape, np.uint16)
    counts: dict[str, int] = {}
    thresholds: dict[str, float] = {}
    if master_bias is not None:
        resid = master_bias.data - _separable_background(master_bias.data)
        sample = resid[::3, ::3]
        med = float(np.median(sample))
        sig = float(1.4826 * np.median(np.abs(sample - med)))
        limit = med + hot_sigma * sig
        hot = resid > limit
        thresholds["hot_e"] = limit
        col = _column_runs(hot, column_min_run)
        mask[hot] |= np.uint16(Flag.HOT)
        mask[col] |= np.uint16(Flag.BAD_COLUMN)
        counts["hot"] = int(np.count_nonzero(hot & ~col))
        counts["bad_column_pixels"] = int(np.count_nonzero(col))
        counts["bad_columns"] = int(np.count_nonzero(col.any(axis=0)))
    if master_flat is not None:
        flat = master_flat.data
        unlit = (master_flat.mask & np.uint16(Flag.UNILLUMINATED)) != 0
        fully_lit = ~_near(unlit, response_window // 2)
        ref = _running_mean(np.where(unlit, np.float32(0.0), flat), response_window, axis=1)
        with np.errstate(all="ignore"):
            ratio = flat / ref
        low = fully_lit & ~unlit & (ratio < low_response)
        mask[low] |= np.uint16(Flag.LOW_RESPONSE)
        counts["low_response"] = int(np.count_nonzero(low))
        thresholds["low_response"] = low_response
    return BadPixels(mask, counts, thresholds)


def _column_runs(hot: np.ndarray, min_run: int) -> np.ndarray:
    """Pixels in vertical runs of >= ``min_run`` flagged pixels (gaps of one allowed)."""
    out = np.zeros(hot.shape, dtype=bool)
    candidates = np.flatnonzero(hot.sum(axis=0) >= min_run)
    for x in candidates:
        colmask = hot[:, x].copy()
        # bridge single-pixel gaps (noise dips below the threshold along the column)
        colmask[1:-1] |= colmask[:-2] & colmask[2:]
        edges = np.diff(np.concatenate([[0], colmask.astype(np.int8), [0]]))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        for s, e in zip(starts, ends, strict=True):
            if e - s >= min_run:
                out[s:e, x] = True
    return out
