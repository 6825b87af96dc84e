"""Speed, peak memory and quality of the 2-D reduction on a simulated 1x1 night.

Run as ``python tests/benchmarks/bench_reduce.py [--binning 1|2] [--seed N] [--workdir D]
[--no-ccdproc] [--astroscrappy] [--images]``. The night (10 biases, 10 flats, 2 arcs, 4
science spectra, 1x1 by default) is simulated once into ``--workdir`` and reused. Printed:

- time and peak traced memory of a 10-frame sigma-clipped combine (target <= 0.5 s), and
  of ``ccdproc.combine`` on the same frames (median + 3-sigma clip, as goodman-pipeline
  builds its master bias) when a separate virtualenv with goodman-pipeline 3.1.0 exists at
  ``/tmp/gsp-venv`` or can be created there;
- cosmic-ray detection time per frame (target <= 1 s) and quality against the truth
  (events removed, false pixels, false pixels on the trace; target >= 99 %, <= 1, 0);
- with ``--images``, the same for the 6 frames of an imaging night of the same seed and
  binning (false pixels within 3 FWHM of a star in place of the trace), calibrated as the
  pipeline does when it has no biases;
- the whole 2-D calibration of the night (masters, bad-pixel mask, every arc and science
  frame with cosmic rays), and the residual bias structure.

It only prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from night_common import (
    READ_NOISE_E,
    cosmic_quality,
    ensure_gsp_venv,
    night,
    trim_origin,
)

from ingest.reduce import (
    Flag,
    bad_pixel_mask,
    calibrate_frame,
    detect_cosmics,
    make_master_bias,
    make_master_flat,
    overscan_level,
    parse_section,
    prepare_calibration,
    sigma_clip_combine,
)

# first: night_common puts the repository root on sys.path for ingest
from ingest.simulate_truth import (
    known_defects,
    near_stars,
    score_cosmic_rays,
)

T = TypeVar("T")


def measure(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float, float]:
    """Result, best wall time (s) over ``repeat`` runs, and peak traced memory (MiB).

    The memory comes from one extra run under tracemalloc (numpy reports its buffers to
    it), kept apart because tracing slows every allocation down.
    """
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    del result
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, best, peak


def image_cosmic_quality(
    found: np.ndarray, f: dict[str, Any], header: Any, known: np.ndarray, signal: np.ndarray
) -> dict[str, float]:
    """As :func:`cosmic_quality`, with false pixels within 3 FWHM of a star counted."""
    origin = trim_origin(header)
    score = score_cosmic_rays(f, found, origin, known, signal, READ_NOISE_E)
    return {
        "events": score.events,
        "missed": score.missed,
        "false": int(score.false.sum()),
        "false_stars": int(near_stars(f, origin, score.false).sum()),
    }


def image_cosmics(args: argparse.Namespace) -> None:
    """Cosmic-ray time and quality on the frames of an imaging night."""
    truth, frames = night(args.workdir, args.seed, args.binning, images=True)
    print(
        f"\ncosmic rays in {args.binning}x{args.binning} images (seed {args.seed}, no bias: "
        "overscan only, as the pipeline without biases):"
    )
    times, totals = [], {"events": 0, "missed": 0, "false": 0, "false_stars": 0}
    for f, raw, h in frames:
        pre = calibrate_frame(raw, h)
        found, t_cr, _ = measure(
            lambda pre=pre, h=h: detect_cosmics(
                pre.data, read_noise=float(h["RDNOISE"]), mask=pre.mask, binning=args.binning
            ),
            repeat=2,
        )
        times.append(t_cr)
        known = known_defects(truth, h["ROI"], trim_origin(h), pre.data.shape)
        q = image_cosmic_quality(found.mask, f, h, known, found.cleaned)
        for k in totals:
            totals[k] += q[k]
        print(
            f"  {f['file']}: {t_cr:.3f} s | {q['events']} events, removed "
            f"{100 * (1 - q['missed'] / max(q['events'], 1)):.2f}% ({q['missed']} missed), "
            f"{q['false']} false pixels, {q['false_stars']} on stars "
            f"(sky {f['sky_electrons_per_px']:.0f} e-/px, FWHM {f['fwhm_px']:.2f} px)"
        )
        if args.astroscrappy:
            try:
                import astroscrappy
            except ImportError:
                print("  astroscrappy not installed")
            else:
                t0 = time.perf_counter()
                m, _ = astroscrappy.detect_cosmics(
                    pre.data, inmask=pre.mask > 0, gain=1.0, readnoise=3.89, satlevel=1e9
                )
                dt = time.perf_counter() - t0
                qa = image_cosmic_quality(m, f, h, known, found.cleaned)
                print(
                    f"    astroscrappy gain/RN set: {dt:.2f} s, removed "
                    f"{100 * (1 - qa['missed'] / max(qa['events'], 1)):.1f}%, "
                    f"{qa['false']} false, {qa['false_stars']} on stars"
                )
    n = max(totals["events"], 1)
    print(
        f"  mean {np.mean(times):.3f} s/frame; all frames: "
        f"{100 * (1 - totals['missed'] / n):.2f}% of {totals['events']} events removed, "
        f"{totals['false']} false pixels, {totals['false_stars']} on stars"
    )


def ccdproc_combine(arrays: list[np.ndarray]) -> dict[str, float] | None:
    """Time ccdproc.combine on the same frames in goodman-pipeline's own environment."""
    venv = ensure_gsp_venv()
    if venv is None:
        print("  skipping the ccdproc comparison")
        return None
    python = venv / "bin" / "python"
    script = r"""
import sys, time, json, tracemalloc, glob
import numpy as np
import astropy.units as u
from astropy.nddata import CCDData
import ccdproc
frames = [CCDData(np.load(p), unit=u.electron) for p in sorted(glob.glob(sys.argv[1] + "/*.npy"))]
out = {"ccdproc": ccdproc.__version__}
for method in ("median", "average"):
    best = 1e9
    for _ in range(2):
        tracemalloc.start()
        t0 = time.perf_counter()
        ccdproc.combine(frames, method=method, sigma_clip=True, sigma_clip_low_thresh=3.0,
                        sigma_clip_high_thresh=3.0, mem_limit=16e9)
        best = min(best, time.perf_counter() - t0)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    out[method] = {"time": best, "peak_mib": peak}
print(json.dumps(out))
"""
    with tempfile.TemporaryDirectory() as tmp:
        for i, a in enumerate(arrays):
            np.save(Path(tmp) / f"{i:02d}.npy", a)
        proc = subprocess.run(
            [str(python), "-c", script, tmp], capture_output=True, text=True, timeout=1800
        )
    if proc.returncode != 0:
        print("  ccdproc run failed:", proc.stderr.strip().splitlines()[-1:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binning", type=int, default=1, choices=(1, 2))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vo-bench-reduce")
    ap.add_argument("--no-ccdproc", action="store_true")
    ap.add_argument("--astroscrappy", action="store_true", help="also time astroscrappy")
    ap.add_argument("--images", action="store_true", help="also cosmic rays in images")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    truth, frames = night(args.workdir, args.seed, args.binning)
    by_kind: dict[str, list[Any]] = {}
    for item in frames:
        by_kind.setdefault(item[0]["kind"], []).append(item)
    raw0 = by_kind["bias"][0][1]
    print(
        f"\n== {args.binning}x{args.binning} night, seed {args.seed}: raw {raw0.shape}, "
        f"{len(frames)} frames, {os.cpu_count()} CPUs =="
    )

    # overscan estimators against the truth
    print("\noverscan level vs truth (all frames):")
    for method in ("fit", "mean", "row"):
        err, rows = [], []
        for f, raw, h in frames:
            ov = overscan_level(raw, parse_section(h["BIASSEC"], raw.shape), method=method)
            err.append(ov.mean - f["bias_level_adu"])
            rows.append(np.sqrt(np.mean((ov.level - f["bias_level_adu"]) ** 2)))
        worst = float(np.max(np.abs(err)))
        print(
            f"  {method:4s}: mean error {np.mean(err):+.4f} ADU (max |{worst:.4f}|), "
            f"per-row rms {np.mean(rows):.4f} ADU"
        )

    t_night = time.perf_counter()
    biases, t_bias, _ = measure(lambda: [calibrate_frame(r, h) for _, r, h in by_kind["bias"]])
    print(f"\ncalibrate 10 biases (overscan+trim): {t_bias:.2f} s ({t_bias / 10:.3f} s/frame)")
    data = [b.data for b in biases]
    _, t_comb, m_comb = measure(
        lambda: sigma_clip_combine(data, variances=[b.variance for b in biases]), repeat=3
    )
    _, t_med, m_med = measure(
        lambda: sigma_clip_combine(data, variances=[b.variance for b in biases], method="median")
    )
    stack_mib = sum(d.nbytes for d in data) / 2**20
    print(
        f"10-frame combine, mean+3sigma clip: {t_comb:.3f} s, peak {m_comb:.0f} MiB "
        f"(inputs {stack_mib:.0f} MiB); median+clip: {t_med:.3f} s, peak {m_med:.0f} MiB"
    )
    if not args.no_ccdproc:
        cp = ccdproc_combine(data)
        if cp:
            print(f"ccdproc {cp['ccdproc']} combine (same 10 frames, in /tmp/gsp-venv):")
            for method, ours, ours_mem in (("average", t_comb, m_comb), ("median", t_med, m_med)):
                c = cp[method]
                speed, mem = c["time"] / ours, c["peak_mib"] / ours_mem
                print(
                    f"  {method:7s}: ccdproc {c['time']:.2f} s / {c['peak_mib']:.0f} MiB"
                    f" | ours {ours:.3f} s / {ours_mem:.0f} MiB"
                    f" | speed-up x{speed:.1f}, memory x{mem:.1f}"
                )

    master_bias = make_master_bias(biases[:9])
    held = biases[9]
    gain = truth["detector"]["gain_e_per_adu"]
    rn_adu = truth["detector"]["rdnoise_e"] / gain
    resid = calibrate_frame(by_kind["bias"][9][1], by_kind["bias"][9][2], master_bias=master_bias)
    bpm = bad_pixel_mask(master_bias)
    good = bpm.mask == 0
    r_adu = np.where(good, resid.data / gain, 0.0)
    ny, nx = r_adu.shape
    blocks = (
        r_adu[: ny // 16 * 16, : nx // 16 * 16].reshape(ny // 16, 16, nx // 16, 16).mean((1, 3))
    )
    noise = rn_adu * np.sqrt(1 + 1 / 9)
    excess = np.sqrt(max(blocks.var() - noise**2 / 256, 0.0))
    raw_pattern = held.data / gain
    rb = (
        raw_pattern[: ny // 16 * 16, : nx // 16 * 16]
        .reshape(ny // 16, 16, nx // 16, 16)
        .mean((1, 3))
    )
    print(
        f"\nresidual bias (held-out bias, master of 9): mean {r_adu[good].mean():+.3f} ADU, "
        f"pixel rms {r_adu[good].std():.3f} ADU (noise model {noise:.3f}), 16x16-block structure "
        f"{excess:.3f} ADU rms (overscan only, no master: {rb.std():.3f} ADU)"
    )

    master_bias = make_master_bias(biases)
    flats, t_flat_cal, _ = measure(
        lambda: [calibrate_frame(r, h, master_bias=master_bias) for _, r, h in by_kind["flat"]]
    )
    mflat, t_mflat, m_mflat = measure(lambda: make_master_flat(flats))
    bpm, t_bpm, _ = measure(lambda: bad_pixel_mask(master_bias, mflat.flat))
    print(
        f"calibrate 10 flats {t_flat_cal:.2f} s; master flat (combine + 'simple' "
        f"normalisation) {t_mflat:.2f} s, peak {m_mflat:.0f} MiB; bad-pixel mask {t_bpm:.2f} s "
        f"{bpm.counts}"
    )

    print("\ncosmic rays (detection alone, on the bias-subtracted frame) and quality vs truth:")
    cr_times = []
    for f, raw, h in by_kind["science_spectrum"]:
        pre = calibrate_frame(raw, h, master_bias=master_bias, bad_pixel_mask=bpm.mask)
        found, t_cr, m_cr = measure(
            lambda pre=pre, h=h: detect_cosmics(
                pre.data,
                read_noise=float(h["RDNOISE"]),
                mask=pre.mask,
                binning=args.binning,
                extra_variance=master_bias.variance,
            ),
            repeat=2,
        )
        cr_times.append(t_cr)
        origin = trim_origin(h)
        known = known_defects(truth, h["ROI"], origin, pre.data.shape) | (
            (pre.mask & (Flag.HOT | Flag.BAD_COLUMN)) != 0
        )
        q = cosmic_quality(found.mask, f, origin, known, found.cleaned)
        print(
            f"  {f['file']}: {t_cr:.3f} s, peak {m_cr:.0f} MiB | {q['events']} events, "
            f"removed {100 * (1 - q['missed'] / max(q['events'], 1)):.2f}% "
            f"({q['missed']} missed), {q['false']} false pixels, {q['false_trace']} on the "
            f"trace; {found.n_pixels} px / {found.n_events} groups flagged"
        )
        if args.astroscrappy:
            try:
                import astroscrappy
            except ImportError:
                print("  astroscrappy not installed")
            else:
                for label, kw in (
                    ("defaults", {}),
                    ("gain/RN set", {"gain": 1.0, "readnoise": 3.89, "satlevel": 1e9}),
                ):
                    t0 = time.perf_counter()
                    m, _ = astroscrappy.detect_cosmics(pre.data, inmask=pre.mask > 0, **kw)
                    dt = time.perf_counter() - t0
                    qa = cosmic_quality(m, f, origin, known, found.cleaned)
                    print(
                        f"    astroscrappy {label}: {dt:.2f} s, removed "
                        f"{100 * (1 - qa['missed'] / max(qa['events'], 1)):.1f}%, "
                        f"{qa['false']} false, {qa['false_trace']} on trace"
                    )
    print(f"  mean {np.mean(cr_times):.3f} s/frame")
    if args.images:
        image_cosmics(args)

    def calibrate_all() -> list[Any]:
        return [
            calibrate_frame(r, h, master_bias, mflat.flat, bpm.mask, cosmics=True)
            for kind in ("arc", "science_spectrum")
            for _, r, h in by_kind[kind]
        ]

    products, t_sci, m_sci = measure(calibrate_all)
    n_sci = len(products)
    del products
    print(
        f"\ncalibrate {n_sci} arc+science frames (overscan, trim, bias, flat, cosmics): "
        f"{t_sci:.2f} s ({t_sci / n_sci:.2f} s/frame), peak {m_sci:.0f} MiB"
    )

    def whole_night() -> int:
        """Raw arrays to calibrated arcs and science frames, nothing else; the masters
        from pending calibrations, as ``vo-service reduce`` builds them."""
        mb = make_master_bias([prepare_calibration(r, h) for _, r, h in by_kind["bias"]])
        pending = [prepare_calibration(r, h, master_bias=mb) for _, r, h in by_kind["flat"]]
        mf = make_master_flat(pending)
        mask = bad_pixel_mask(mb, mf.flat).mask
        n = 0
        for kind in ("arc", "science_spectrum"):
            for _, r, h in by_kind[kind]:
                calibrate_frame(r, h, mb, mf.flat, mask, cosmics=True)
                n += 1
        return n

    _, t_whole, m_whole = measure(whole_night)
    print(
        f"whole 2-D calibration of the night ({len(frames)} raw frames -> masters, bad-pixel "
        f"mask, {n_sci} calibrated frames): {t_whole:.1f} s, peak {m_whole:.0f} MiB"
    )
    print(f"(this run, all measurements included: {time.perf_counter() - t_night:.0f} s)")


if __name__ == "__main__":
    main()
