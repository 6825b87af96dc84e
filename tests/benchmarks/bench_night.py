"""A whole simulated night reduced by vo-service and by goodman-pipeline 3.1.0, side by side.

Run as ``python tests/benchmarks/bench_night.py [--workdir D] [--seed N] [--binning 1|2]
[--skip-gsp] [--keep]`` with the project's virtualenv (``.venv/bin/python``), from any
folder. The night (10 biases, 10 flats, 2 arcs, 4 science spectra; 4142x1896 raw at 1x1)
is simulated once into ``--workdir`` (default: the one ``bench_reduce.py`` uses) and
reused. Both reductions run as child processes on the same raw frames:

- vo-service: a fresh ``VO_SERVICE_HOME`` with the reference-data cache copied in,
  ``init``, ``db start``, ``ingest``, then the measured ``reduce <night>``, and ``db stop``;
- goodman-pipeline (GSP) 3.1.0 from a separate virtualenv (``/tmp/gsp-venv``, created with
  pip when absent; its ``dcr`` cosmic-ray program is compiled from the source it ships):
  ``redccd`` then ``redspec`` on a copy of the raw frames.

Printed: a table with CPU seconds (user + sys of the child and the children it waited
for), wall seconds, peak resident memory, and quality against the simulator's truth
(wavelength error at the arc lines, trace error, cosmic rays removed and false pixels,
residual bias pattern and level), one column per pipeline, their ratio and the target;
then the same per science frame and how each figure was obtained. Logs of every command
stay in ``<workdir>/run-<night>/logs``. It only prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from night_common import (
    GSP_VERSION,
    READ_NOISE_E,
    ROOT,
    cosmic_quality,
    ensure_dcr,
    ensure_gsp_venv,
    night_dir,
    truth_bias_pattern,
)

from ingest import refdata
from ingest.reduce import parse_section

# first: night_common puts the repository root on sys.path for ingest
from ingest.simulate_truth import known_defects

COSMIC_RAY = 16  # bit of the MASK extension of vo-service's 2-D products
BLOCK = 16  # the bias pattern is measured on 16x16-pixel block means
TARGET_CPU_FRACTION = 0.1
TARGET_PEAK_MIB = 1024.0


@dataclass
class Run:
    """One child process: what ``os.wait4`` reported."""

    name: str
    cpu_s: float
    wall_s: float
    peak_mib: float
    returncode: int
    log: Path


@dataclass
class Quality:
    """Figures against the truth; a figure that could not be computed has a reason."""

    wave_px: list[float] = field(default_factory=list)  # per arc line and frame
    trace_px: list[float] = field(default_factory=list)  # per column and frame
    cr: dict[str, int] = field(
        default_factory=lambda: {"events": 0, "missed": 0, "false": 0, "false_trace": 0}
    )
    cr_frames: int = 0
    bias_pattern_adu: float | None = None
    bias_level_adu: list[float] = field(default_factory=list)  # per science frame
    per_frame: dict[str, dict[str, str]] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # figure -> reason it is missing
    region: dict[str, str] = field(default_factory=dict)  # figure -> raw area it covers
    extra: list[str] = field(default_factory=list)  # further figures, printed as they are


def run_child(name: str, cmd: Sequence[str], log: Path, cwd: Path, env: dict[str, str]) -> Run:
    """Run ``cmd`` to completion, its output into ``log``; CPU and peak RSS from wait4."""
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        name,
        usage.ru_utime + usage.ru_stime,
        wall,
        usage.ru_maxrss / 1024.0,  # KiB on Linux
        proc.returncode,
        log,
    )


def postgres_cpu(home: Path) -> float | None:
    """CPU seconds the embedded server has used so far: postmaster, its live children,
    and the children it has reaped (finished backends); None when not running/readable."""
    pidfile = home / "pg" / "data" / "postmaster.pid"
    try:
        master = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        rest = text[text.rfind(")") + 2 :].split()
        pid, ppid = int(stat.parent.name), int(rest[1])
        if pid == master or ppid == master:
            total += sum(int(v) for v in rest[11:15])  # utime stime cutime cstime
    return total / tick


# -- vo-service ------------------------------------------------------------------------


def vo_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "VO_SERVICE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    return env


def vo_cli(*args: str) -> list[str]:
    # cwd is the repository, so these are this checkout's packages
    return [sys.executable, "-m", "vo_service.cli.main", *args]


def stop_cluster(home: Path, logs: Path) -> None:
    if (home / "pg" / "data" / "postmaster.pid").exists():
        with (logs / "vo-db-stop.log").open("a") as fh:
            subprocess.run(vo_cli("db", "stop"), cwd=ROOT, env=vo_env(home), stdout=fh, stderr=fh)


def run_vo(night: Path, date: str, home: Path, logs: Path) -> tuple[Run | None, float | None]:
    """The vo-service side; returns the ``reduce`` run and PostgreSQL's CPU during it."""
    stop_cluster(home, logs)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    home.chmod(0o755)  # the embedded server may run as another user when we are root
    cache = next(
        (c for c in (ROOT / "var" / "cache", night.parent / "home" / "cache") if c.is_dir()), None
    )
    if cache is not None:
        shutil.copytree(cache, home / "cache")
        print(f"vo-service: fresh home {home}, reference-data cache copied from {cache}")
    else:
        t0 = time.perf_counter()
        refdata.ensure_reference_data(home)
        print(
            f"vo-service: fresh home {home}, reference data fetched before the run "
            f"(warm-up, {time.perf_counter() - t0:.1f} s, not counted)"
        )
    env = vo_env(home)
    try:
        for name, args in (
            ("init", ("init",)),
            ("db-start", ("db", "start")),
            ("ingest", ("ingest", str(night))),
        ):
            r = run_child(name, vo_cli(*args), logs / f"vo-{name}.log", ROOT, env)
            print(f"  {name}: {r.wall_s:.1f} s wall (not counted)")
            if r.returncode != 0:
                print(f"  vo-service {name} failed (exit {r.returncode}), see {r.log}")
                return None, None
        before = postgres_cpu(home)
        run = run_child("reduce", vo_cli("reduce", date), logs / "vo-reduce.log", ROOT, env)
        time.sleep(0.3)  # let the postmaster reap the finished backend
        after = postgres_cpu(home)
        if run.returncode != 0:
            print(f"  vo-service reduce exited {run.returncode}, see {run.log}")
        pg = after - before if before is not None and after is not None else None
        return run, pg
    finally:
        stop_cluster(home, logs)


# -- goodman-pipeline ------------------------------------------------------------------


def prepare_gsp_raw(night: Path, raw: Path) -> int:
    """Copy the raw frames for GSP; returns how many calibration headers were adjusted.

    GSP 3.1.0 groups biases and flats by OBSRA/OBSDEC (to 0.01 deg). The simulator writes
    the zenith's right ascension at each frame's start there for afternoon calibrations,
    so no two frames share it and GSP finds no set to combine (then fails making the
    master flat). The copies get the first calibration frame's OBSRA/OBSDEC, as a
    telescope parked all afternoon would report; pixels and every other card are untouched.
    """
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    first: tuple[str, str] | None = None
    changed = 0
    for src in sorted(night.glob("*.fits")):
        dst = raw / src.name
        shutil.copyfile(src, dst)
        h = fits.getheader(dst)
        if h.get("OBSTYPE") not in ("BIAS", "FLAT"):
            continue
        if first is None:
            first = (h["OBSRA"], h["OBSDEC"])
        elif (h["OBSRA"], h["OBSDEC"]) != first:
            fits.setval(dst, "OBSRA", value=first[0])
            fits.setval(dst, "OBSDEC", value=first[1])
            changed += 1
    return changed


def run_gsp(night: Path, binning: int, scratch: Path, logs: Path) -> list[Run] | None:
    venv = ensure_gsp_venv()
    if venv is None:
        print("goodman-pipeline: no virtualenv, skipped")
        return None
    cosmic: list[str] = []
    dcr = ensure_dcr(venv) if binning == 1 else None
    if binning == 1 and dcr is None:
        print("goodman-pipeline: dcr cannot be built here, using --cosmic lacosmic instead")
        cosmic = ["--cosmic", "lacosmic"]
    raw, red, out = scratch / "raw", scratch / "red", scratch / "out"
    changed = prepare_gsp_raw(night, raw)
    for d in (red, out):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    print(
        f"goodman-pipeline {GSP_VERSION}: raw frames copied to {raw}; OBSRA/OBSDEC of "
        f"{changed} bias/flat copies set to the first calibration frame's (see notes)"
    )
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONPATH", None)
    commands = [
        (
            "redccd",
            [
                str(venv / "bin" / "redccd"),
                "--raw-path",
                str(raw),
                "--red-path",
                str(red),
                *cosmic,
            ],
        ),
        (
            "redspec",
            [str(venv / "bin" / "redspec"), "--data-path", str(red), "--proc-path", str(out)],
        ),
    ]
    runs = []
    for name, cmd in commands:
        print("  $ " + " ".join(cmd))
        r = run_child(name, cmd, logs / f"gsp-{name}.log", scratch, env)
        runs.append(r)
        if r.returncode != 0:
            tail = r.log.read_text().strip().splitlines()[-1:]
            print(f"  {name} failed (exit {r.returncode}): {tail}; log {r.log}")
            break
    return runs


# -- quality against the truth -------------------------------------------------------------


def truth_wavelength(truth: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arc lines on the detector: raw column, air wavelength, dispersion (A/px) there."""
    spec = truth["spectroscopy"]
    sol = np.polynomial.Polynomial(spec["wavelength_solution"]["coefficients"])
    lo, hi = truth["detector"]["readouts"][truth["frames"][0]["roi"]]["light_columns"]
    lines = [(a["x"], a["wavelength_A"]) for a in spec["arc_lines"] if lo <= a["x"] <= hi]
    x = np.array([p[0] for p in lines])
    return x, np.array([p[1] for p in lines]), sol.deriv()(x)


def chebyshev(header: Any, prefix: str, lo_key: str, hi_key: str, x: np.ndarray) -> np.ndarray:
    """vo-service's ``chebval(t, <prefix>nnn)`` with ``t`` mapping [lo, hi] to [-1, 1]."""
    coef = [header[f"{prefix}{i:03d}"] for i in range(100) if f"{prefix}{i:03d}" in header]
    lo, hi = header[lo_key], header[hi_key]
    return np.polynomial.chebyshev.chebval(2 * (x - lo) / (hi - lo) - 1, coef)


def block_rms(resid: np.ndarray, good: np.ndarray, pixel_noise: float) -> float:
    """Rms of 16x16 block means of ``resid`` (good pixels), less the white noise left in
    each mean (``pixel_noise`` per pixel), so only structure counts."""
    ny, nx = (s // BLOCK * BLOCK for s in resid.shape)
    r = np.where(good, resid, 0.0)[:ny, :nx].reshape(ny // BLOCK, BLOCK, nx // BLOCK, BLOCK)
    n = good[:ny, :nx].reshape(ny // BLOCK, BLOCK, nx // BLOCK, BLOCK).sum((1, 3))
    ok = n >= BLOCK * BLOCK // 2
    means = r.sum((1, 3))[ok] / n[ok]
    noise = float(np.mean(pixel_noise**2 / n[ok]))
    return math.sqrt(max(float(means.var()) - noise, 0.0))


def bias_extra(resid: np.ndarray, good: np.ndarray, pixel_noise: float, binning: int) -> str:
    """Where the block figure comes from: pixel-level rms and the amplifier-ramp side."""
    edge = 256 // binning  # the simulated ramp decays over ~120 unbinned columns
    return (
        f"bias residual: pixel rms {resid[good].std():.2f} ADU (read noise of the master "
        f"alone: {pixel_noise:.2f}); 16x16 blocks in the {edge} columns next to the readout "
        f"side {block_rms(resid[:, :edge], good[:, :edge], pixel_noise):.3f} ADU, beyond "
        f"{block_rms(resid[:, edge:], good[:, edge:], pixel_noise):.3f} ADU"
    )


def wave_trace_errors(
    q: Quality,
    name: str,
    lam_at: Callable[[np.ndarray], np.ndarray],
    row_at: Callable[[np.ndarray], np.ndarray],
    f: dict[str, Any],
    lines: tuple[np.ndarray, np.ndarray, np.ndarray],
    columns: np.ndarray,
) -> None:
    """Add one frame's wavelength errors (px) at the true lines and trace errors per column.

    ``lam_at(x)`` and ``row_at(x)`` take and return raw pixel coordinates."""
    x, lam, disp = lines
    dw = (lam_at(x) - lam) / disp
    true_row = np.polynomial.Polynomial(f["trace"]["coefficients"])(columns)
    dt = row_at(columns) - true_row
    q.wave_px += dw.tolist()
    q.trace_px += dt.tolist()
    q.per_frame.setdefault(name, {}).update(
        wave=f"{_rms(dw):.3f} px ({len(dw)} lines)", trace=f"{_rms(dt):.3f} px"
    )


def add_cosmics(q: Quality, name: str, score: dict[str, int]) -> None:
    for k in q.cr:
        q.cr[k] += score[k]
    q.cr_frames += 1
    removed = 100 * (1 - score["missed"] / max(score["events"], 1))
    q.per_frame.setdefault(name, {})["cr"] = (
        f"{removed:.1f}% of {score['events']}, {score['false']} false ({score['false_trace']}"
        " on trace)"
    )


def _big_false(
    removed: np.ndarray,
    f: dict[str, Any],
    origin: tuple[int, int],
    known: np.ndarray,
    cleaned: np.ndarray,
    gain: float,
) -> int:
    """Pixels no event touched whose value the cosmic-ray step changed by more than 5 sigma."""
    hit = np.zeros(removed.shape, bool)
    for event in f["cosmic_rays"]["events"]:
        for y, x in event["pixels"]:
            y, x = y - origin[0], x - origin[1]
            if 0 <= y < hit.shape[0] and 0 <= x < hit.shape[1]:
                hit[y, x] = True
    sigma = np.sqrt(READ_NOISE_E**2 + np.clip(cleaned * gain, 0, None)) / gain
    return int(((np.abs(removed) > 5 * sigma) & ~hit & ~known).sum())


def _rms(v: Sequence[float] | np.ndarray) -> float:
    a = np.asarray(v, dtype=float)
    return float(np.sqrt(np.mean(a**2))) if a.size else math.nan


def _section_text(y0: int, y1: int, x0: int, x1: int) -> str:
    return f"rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1} (0-based raw)"


def vo_quality(
    truth: dict[str, Any], home: Path, pattern: np.ndarray | None, known_raw: np.ndarray
) -> Quality:
    q = Quality()
    products = home / "products" / truth["date"]
    lines = truth_wavelength(truth)
    science = [f for f in truth["frames"] if f["kind"] == "science_spectrum"]
    gain = truth["detector"]["gain_e_per_adu"]
    master, n_bias = None, 0
    found = _latest(products / "calibrations", "master_bias_*_v*.fits")
    if found is not None:
        with fits.open(found) as mb:
            master = mb["SCI"].data.astype(np.float64) / gain
            n_bias = int(mb[0].header.get("NCOMBINE", 10))
    for f in science:
        stem = Path(f["file"]).stem
        d2 = _latest(products / stem, f"{stem}_2d_v*.fits")
        wcal = _latest(products / stem, f"{stem}_wcal_v*.fits")
        if d2 is None:
            q.per_frame[stem] = {"missing": "no 2-D product"}
            continue
        with fits.open(d2) as hdul:
            h0 = hdul[0].header
            sci = hdul["SCI"].data.astype(np.float64)
            crmask = (hdul["MASK"].data & COSMIC_RAY) != 0
        y0, x0 = int(-h0["LTV2"]), int(-h0["LTV1"])  # raw = product - LTV
        ny, nx = sci.shape
        known = known_raw[y0 : y0 + ny, x0 : x0 + nx]
        add_cosmics(q, stem, cosmic_quality(crmask, f, (y0, x0), known, sci))
        q.region["cr"] = _section_text(y0, y0 + ny, x0, x0 + nx)
        if wcal is not None:
            h = fits.getheader(wcal)
            wave_trace_errors(
                q,
                stem,
                lambda x, h=h, x0=x0: chebyshev(h, "WSOLC", "WSOLDLO", "WSOLDHI", x - x0),
                lambda x, h=h, x0=x0, y0=y0: chebyshev(h, "TRCC", "TRCDLO", "TRCDHI", x - x0) + y0,
                f,
                lines,
                np.arange(x0, x0 + nx, dtype=float),
            )
        else:
            q.per_frame[stem]["wave"] = "no wavelength-calibrated product"
        if master is not None and pattern is not None:
            # what reduce took off this frame: the overscan level, then the master bias
            subtracted = float(h0["OVSCLEVL"]) + master
            resid = subtracted - (f["bias_level_adu"] + pattern[y0 : y0 + ny, x0 : x0 + nx])
            q.bias_level_adu.append(float(resid[~known].mean()))
            if q.bias_pattern_adu is None:
                rn_adu = truth["detector"]["rdnoise_e"] / gain
                noise = rn_adu / math.sqrt(n_bias)  # mean of n frames
                flat = resid - resid[~known].mean()
                q.bias_pattern_adu = block_rms(flat, ~known, noise)
                q.extra.append(bias_extra(flat, ~known, noise, truth["binning"]))
                q.region["bias"] = _section_text(y0, y0 + ny, x0, x0 + nx)
    if master is None:
        q.why["bias"] = "no master bias product"
    elif pattern is None:
        q.why["bias"] = "the truth bias pattern could not be rebuilt from the seed"
    return q


def gsp_quality(
    truth: dict[str, Any], scratch: Path, pattern: np.ndarray | None, known_raw: np.ndarray
) -> Quality:
    q = Quality()
    raw_dir, red, out = scratch / "raw", scratch / "red", scratch / "out"
    lines = truth_wavelength(truth)
    science = [f for f in truth["frames"] if f["kind"] == "science_spectrum"]
    gain = truth["detector"]["gain_e_per_adu"]
    rn_adu = truth["detector"]["rdnoise_e"] / gain
    masters = sorted(red.glob("master_bias_*.fits"))
    master = fits.getdata(masters[0]).astype(np.float64) if masters else None
    n_bias = sum(1 for k in fits.getheader(masters[0]) if k.startswith("GSP_IC")) if masters else 0
    for f in science:
        stem, name = Path(f["file"]).stem, f["file"]
        reduced = red / f"cfzst_{name}"
        if not reduced.exists():
            q.per_frame[stem] = {"missing": "no reduced 2-D frame"}
            continue
        with fits.open(reduced) as hdul:
            h = hdul[0].header
            cleaned = hdul[0].data.astype(np.float64)
        trim = parse_section(h["GSP_TRIM"])
        slit = parse_section(h["GSP_SLIT"]) if str(h.get("GSP_SLIT", "none")) != "none" else None
        sy, sx = (slit.y0, slit.x0) if slit is not None else (0, 0)
        y0, x0 = trim.y0 + sy, trim.x0 + sx  # raw (y, x) of the reduced frame's [0, 0]
        ny, nx = cleaned.shape
        known = known_raw[y0 : y0 + ny, x0 : x0 + nx]

        # The master bias as GSP placed it. 3.1.0 cuts its untrimmed master by GSP_SLIT
        # alone (images/image_processor.py: image_trim(self.master_bias, slit_trim)) while
        # the frame was cut by TRIMSEC first, so the master lands TRIMSEC's offset away.
        applied: np.ndarray | float = 0.0
        my, mx = y0, x0
        if master is not None:
            if master.shape == known_raw.shape:
                my, mx = (sy, sx) if slit is not None else (trim.y0, trim.x0)
            else:  # an already trimmed master
                my, mx = y0 - trim.y0, x0 - trim.x0
            applied = master[my : my + ny, mx : mx + nx]

        # Cosmic rays: the pixels GSP's cosmic-ray step changed, found by redoing its
        # arithmetic without that step (raw minus the master as placed, over the flat
        # normalised by its mean as ccdproc.flat_correct does) and comparing.
        with fits.open(raw_dir / name) as hdul:
            before = hdul[0].data[y0 : y0 + ny, x0 : x0 + nx].astype(np.float64) - applied
        flat_name = str(h.get("GSP_FLAT", "none"))
        if flat_name != "none" and (red / flat_name).exists():
            flat = fits.getdata(red / flat_name).astype(np.float64)
            before = before / (flat / flat.mean())
        changed = np.abs(cleaned - before) > 1e-4 * np.abs(before) + 1e-3
        if changed.mean() < 0.01:  # the redone arithmetic matches everywhere else
            add_cosmics(q, stem, cosmic_quality(changed, f, (y0, x0), known, cleaned * gain))
            big = _big_false(before - cleaned, f, (y0, x0), known, cleaned, gain)
            q.per_frame[stem]["cr"] += f"; {big} of the false ones changed by > 5 sigma"
            q.region["cr"] = _section_text(y0, y0 + ny, x0, x0 + nx)
        else:
            q.why["cr"] = (
                f"redoing GSP's calibration of {name} differs in {100 * changed.mean():.0f}% "
                "of the pixels, so the pixels its cosmic-ray step changed are unknown"
            )

        # wavelength and trace from the calibrated spectrum of the first target
        spectra = []
        for p in sorted(out.glob(f"w*{stem}*.fits")):
            hp = fits.getheader(p)
            if hp.get("GSP_ONAM") == name and hp.get("OBSTYPE") == "OBJECT":
                spectra.append(p)
        if spectra:
            with fits.open(spectra[0]) as hdul:
                hw = hdul[0].header
                table = hdul["SPECTRUM"].data["WAVELENGTH"].astype(np.float64)
            # the table gives the wavelength of every extracted pixel, index = column of
            # the reduced frame; GSP_TCnn is a power series of that column giving its row
            tc = [hw[f"GSP_TC{i:02d}"] for i in range(int(hw["GSP_TORD"]) + 1)]
            wave_trace_errors(
                q,
                stem,
                lambda x, t=table, x0=x0: np.interp(x - x0, np.arange(t.size), t),
                lambda x, tc=tc, x0=x0, y0=y0: np.polynomial.polynomial.polyval(x - x0, tc) + y0,
                f,
                lines,
                np.arange(x0, x0 + nx, dtype=float),
            )
        else:
            q.per_frame.setdefault(stem, {})["wave"] = "no wavelength-calibrated spectrum"

        if master is not None and pattern is not None:
            resid = applied - (f["bias_level_adu"] + pattern[y0 : y0 + ny, x0 : x0 + nx])
            good = ~known & ~known_raw[my : my + ny, mx : mx + nx]
            q.bias_level_adu.append(float(resid[good].mean()))
            if q.bias_pattern_adu is None:
                # median of n frames: noise sqrt(pi/2) times that of the mean
                noise = rn_adu * math.sqrt(math.pi / 2 / max(n_bias, 1))
                flat_resid = resid - resid[good].mean()
                q.bias_pattern_adu = block_rms(flat_resid, good, noise)
                q.extra.append(bias_extra(flat_resid, good, noise, truth["binning"]))
                q.region["bias"] = _section_text(y0, y0 + ny, x0, x0 + nx) + (
                    f"; master pixels taken from rows {my}-{my + ny - 1}, "
                    f"columns {mx}-{mx + nx - 1}"
                )
    if master is None:
        q.why["bias"] = "no master bias file"
    elif pattern is None:
        q.why["bias"] = "the truth bias pattern could not be rebuilt from the seed"
    return q


def _latest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern), key=lambda p: int(p.stem.rsplit("_v", 1)[1]))
    return found[-1] if found else None


# -- the table ---------------------------------------------------------------------------


def _fmt(v: float | None, digits: int) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def figures(
    runs: Sequence[Run] | None, q: Quality | None, pg: float | None = None
) -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(
        ("cpu", "wall", "peak", "pg", "wave", "trace", "cr", "crf", "crt", "bias", "level")
    )
    if runs:
        ok = all(r.returncode == 0 for r in runs)
        out["cpu"] = sum(r.cpu_s for r in runs) if ok else None
        out["wall"] = sum(r.wall_s for r in runs) if ok else None
        out["peak"] = max(r.peak_mib for r in runs) if ok else None
    out["pg"] = pg
    if q is not None:
        out["wave"] = _rms(q.wave_px) if q.wave_px else None
        out["trace"] = _rms(q.trace_px) if q.trace_px else None
        if q.cr_frames:
            out["cr"] = 100 * (1 - q.cr["missed"] / max(q.cr["events"], 1))
            out["crf"] = q.cr["false"] / q.cr_frames
            out["crt"] = float(q.cr["false_trace"])
        out["bias"] = q.bias_pattern_adu
        out["level"] = float(np.mean(q.bias_level_adu)) if q.bias_level_adu else None
    return out


def print_table(vo: dict[str, float | None], gsp: dict[str, float | None]) -> None:
    cpu_target = (
        f"<= {TARGET_CPU_FRACTION * gsp['cpu']:.1f} (1/10 GSP)"
        if gsp["cpu"] is not None
        else "<= 1/10 of GSP"
    )
    rows = [
        ("CPU s (user+sys)", "cpu", 1, cpu_target),
        ("wall s", "wall", 1, "-"),
        ("peak RSS MiB", "peak", 0, f"<= {TARGET_PEAK_MIB:.0f}"),
        ("PostgreSQL CPU s (server)", "pg", 2, "-"),
        ("wavelength rms px (lines)", "wave", 3, "<= 0.05"),
        ("trace rms px", "trace", 3, "<= 0.1"),
        ("CR events removed %", "cr", 1, ">= 99"),
        ("CR false px / frame", "crf", 1, "<= 1"),
        ("CR false px on trace", "crt", 0, "0"),
        ("bias pattern ADU rms", "bias", 3, "<= 0.3"),
        ("bias level error ADU", "level", 2, "-"),
    ]
    head = f"{'figure':28s} {'vo-service':>11s} {'goodman-pipeline':>17s} {'ratio':>7s}  target"
    print("\n" + head)
    print("-" * len(head))
    for label, key, digits, target in rows:
        a, b = vo[key], gsp[key]
        b_text = "-" if key == "pg" else _fmt(b, digits)
        ratio = (
            f"{a / b:.2f}"
            if a is not None and b is not None and b != 0 and key not in ("pg", "level")
            else "-"
        )
        print(f"{label:28s} {_fmt(a, digits):>11s} {b_text:>17s} {ratio:>7s}  {target}")
    print("ratio = vo-service / goodman-pipeline; n/a: see the reasons below")


def print_details(
    runs: dict[str, Sequence[Run] | None], qs: dict[str, Quality | None], notes: list[str]
) -> None:
    print("\nprocesses:")
    for side, rs in runs.items():
        for r in rs or ():
            print(
                f"  {side:17s} {r.name:8s} CPU {r.cpu_s:6.1f} s  wall {r.wall_s:6.1f} s  "
                f"peak {r.peak_mib:6.0f} MiB  exit {r.returncode}  log {r.log}"
            )
    for side, q in qs.items():
        if q is None:
            continue
        print(f"\n{side}, per science frame:")
        for stem, d in q.per_frame.items():
            print(f"  {stem}: " + "; ".join(f"{k} {v}" for k, v in d.items()))
        if q.bias_level_adu:
            levels = ", ".join(f"{v:+.2f}" for v in q.bias_level_adu)
            print(f"  bias level error per frame (ADU): {levels}")
        for line in q.extra:
            print(f"  {line}")
        for k, v in q.region.items():
            print(f"  {k} scored on {v}")
        for k, v in q.why.items():
            print(f"  {k}: n/a because {v}")
    if notes:
        print("\nnotes:")
        for n in notes:
            print(f"  - {n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vo-bench-reduce")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--binning", type=int, default=1, choices=(1, 2))
    ap.add_argument("--skip-gsp", action="store_true", help="reduce with vo-service only")
    ap.add_argument("--keep", action="store_true", help="keep products and scratch copies")
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    night = night_dir(workdir, args.seed, args.binning)
    truth = json.loads((night / "truth.json").read_text())
    roi = truth["frames"][0]["roi"]
    run_dir = workdir / f"run-{night.name}"
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    readout = truth["detector"]["readouts"][roi]
    print(
        f"== night {truth['date']} ({night}): {len(truth['frames'])} frames, "
        f"{readout['naxis1']}x{readout['naxis2']} raw, {args.binning}x{args.binning}; "
        f"{os.cpu_count()} CPUs =="
    )
    pattern = truth_bias_pattern(truth, roi)
    raw_shape = (readout["naxis2"], readout["naxis1"])
    known_raw = known_defects(truth, roi, (0, 0), raw_shape)
    notes = [
        "CPU = user+sys of the child and of the children it waited for (os.wait4); peak = "
        "its ru_maxrss. vo-service: the 'reduce' command alone (init/ingest not counted); "
        "GSP: redccd (with its dcr runs) + redspec, peak = the larger of the two.",
        "wavelength: each product's pixel-to-wavelength solution at the true column of every "
        "arc line on the detector, minus the line's wavelength, over the true dispersion "
        "there; rms over lines and the 4 science frames.",
        "trace: each product's trace row minus the true trace centre at every column it "
        "covers, in raw pixels; rms over columns and frames.",
        "cosmic rays: the same scorer as bench_reduce (an event counts when a pixel of it got "
        "> 5 sigma; false = flagged pixels no event touched, truth hot pixels and hot column "
        "excluded); vo-service: MASK bit COSMIC_RAY of the 2-D product; GSP: the pixels its "
        "cosmic-ray step (dcr at 1x1, astroscrappy at 2x2) changed, found by redoing its "
        "arithmetic without that step (raw minus the master bias as placed, over the "
        "mean-normalised flat) and comparing with its 2-D frame. Each over the area its "
        "2-D frame covers.",
        "bias: (level + master bias each pipeline subtracted from a science pixel) minus the "
        "true (level + fixed pattern) there, the pattern rebuilt from the seed; 'pattern' = "
        "rms of 16x16 block means after removing the mean, less the master's read noise; "
        "'level error' = that mean, averaged over the science frames.",
    ]

    vo_run, pg_cpu, vo_q = None, None, None
    home = run_dir / "vo-home"
    scratch = run_dir / "gsp"
    try:
        vo_run, pg_cpu = run_vo(night, truth["date"], home, logs)
        if vo_run is not None and vo_run.returncode == 0:
            vo_q = vo_quality(truth, home, pattern, known_raw)

        gsp_runs: list[Run] | None = None
        gsp_q: Quality | None = None
        if args.skip_gsp:
            notes.append("goodman-pipeline: n/a, skipped (--skip-gsp)")
        else:
            gsp_runs = run_gsp(night, args.binning, scratch, logs)
            if gsp_runs is None:
                notes.append("goodman-pipeline: n/a, it could not be installed")
            else:
                gsp_q = gsp_quality(truth, scratch, pattern, known_raw)
                notes.append(
                    "GSP input: the OBSRA/OBSDEC of the bias and flat copies were set to the "
                    "first calibration frame's (GSP 3.1.0 groups calibrations by them; the "
                    "simulator writes the drifting zenith RA, which would leave GSP without a "
                    "master bias or flat). Pixel data are the same files."
                )
        vo_fig = figures([vo_run] if vo_run else None, vo_q, pg_cpu)
        gsp_fig = figures(gsp_runs, gsp_q)
        print_table(vo_fig, gsp_fig)
        print_details(
            {"vo-service": [vo_run] if vo_run else None, "goodman-pipeline": gsp_runs},
            {"vo-service": vo_q, "goodman-pipeline": gsp_q},
            notes,
        )
    finally:
        stop_cluster(home, logs)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)
            print(f"\nlogs kept in {logs} (products removed; --keep keeps them)")
        else:
            print(f"\nkept: vo-service home {home}, GSP scratch {scratch}, logs {logs}")


if __name__ == "__main__":
    main()
