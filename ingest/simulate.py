"""Deterministic simulator of a night of raw SOAR Goodman (Red camera) FITS frames.

Exists so that ingest, classification and reduction can be tested end to end without real
data: every frame carries the instrument's own header conventions and detector effects,
and ``truth.json`` records exactly what was put in (wavelength solution, traces, line and
star positions, cosmic-ray pixels, bias levels), so results can be checked, not eyeballed.

The arcs are built from real Goodman HgArNe comparison spectra and NIST line lists (see
``ingest.refdata``), fetched once into ``<home>/cache``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date as date_cls
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ingest import refdata
from ingest import simulate_plan as night_plan
from ingest.simulate_detector import (
    CR_MIN_ELECTRONS,
    CR_RATE_PER_CM2_MIN,
    GAIN,
    RDNOISE,
    READ_TIME_S,
    SATURATION,
    Detector,
    Readout,
    bias_level,
    cosmic_rays,
    make_detector,
    make_readout,
    read_out,
)
from ingest.simulate_imaging import (
    FILTERS,
    add_stars,
    fov_mask,
    make_wcs,
    sky_rate,
    wcs_cards,
)
from ingest.simulate_plan import ARC_LAMP, SITE_LAT, SITE_LON, Frame, Target, iso, plan_night
from ingest.simulate_spectra import (
    FWHM_ARC_UNBINNED,
    Slit,
    WavelengthSolution,
    arc_profile,
    flat_profile,
    make_slit,
    make_trace,
    make_wavelength_solution,
    sky_profile,
    source_profile,
)

TRUTH_VERSION = 1
KINDS = ("bias", "flat", "arc", "science_spectrum", "science_image")


@dataclass(frozen=True)
class SpectroMode:
    wavmode: str
    grating: str
    cam_targ: float
    grt_targ: float
    filter2: str


LAMP_KEYS = (
    "LAMP_HGA",
    "LAMP_NE",
    "LAMP_AR",
    "LAMP_FE",
    "LAMP_CU",
    "LAMP_QUA",
    "LAMP_BUL",
    "LAMP_DOM",
)
MODE_400_M1 = SpectroMode("400_M1", "SYZY_400", 11.6, 5.8, "<NO FILTER>")
SLIT = "1.0_LONG_SLIT"


@dataclass
class NightSummary:
    """What ``simulate_night`` wrote."""

    outdir: Path
    files: list[Path]
    counts: dict[str, int]
    truth_path: Path


def simulate_night(
    outdir: Path,
    *,
    seed: int = 1,
    binning: int = 2,
    home: Path | None = None,
    n_bias: int = 10,
    n_flat: int = 10,
    n_arc: int = 2,
    n_science_spectra: int = 4,
    n_science_images: int = 3,
    n_sky_flats: int = 0,
    date: str = "2024-03-15",
) -> NightSummary:
    """Write one simulated Goodman night into ``outdir`` and return what was written.

    Parameters:
        outdir: folder for ``NNNN_<kind>_<object>.fits`` and ``truth.json`` (created if
            needed; files of the same names are overwritten, others are left alone).
        seed: the whole night (targets, timings, detector defects, noise) follows from it;
            the same seed and arguments give byte-identical files.
        binning: 1 or 2 (CCDSUM ``'1 1'``/``'2 2'``), applied to every frame.
        home: service state folder holding the reference-data cache
            (default ``$VO_SERVICE_HOME`` or ``var``); the first call downloads
            goodman-pipeline's lamp library from PyPI into ``<home>/cache``.
        n_bias: afternoon biases, all in one ROI: the spectroscopic one whenever any
            spectroscopic frame is planned, else the imaging one. Images carry BIASSEC
            overscan for their bias level.
        n_flat: spectroscopic quartz-lamp flats (OBJECT ``QuartzFlat``), afternoon.
        n_arc: HgArNe comparison arcs; one before each spectroscopic target while they
            last, the rest after the last science spectrum (afternoon if there is none).
        n_science_spectra: long-slit exposures, two per target (emission-line galaxies).
        n_science_images: imaging exposures cycling through g, r, i per star field.
        n_sky_flats: twilight imaging flats (OBJECT ``SkyFlat``), spread over the filters.
        date: observing night (local evening), ``YYYY-MM-DD``; calibrations are dated that
            afternoon (UTC), science starts after 23:30 UTC and may run past midnight.

    The returned ``counts`` are keyed by the classification names ``bias``, ``flat``,
    ``arc``, ``science_spectrum`` and ``science_image``.
    """
    if binning not in (1, 2):
        raise ValueError("binning must be 1 or 2")
    for name, value in {
        "n_bias": n_bias,
        "n_flat": n_flat,
        "n_arc": n_arc,
        "n_science_spectra": n_science_spectra,
        "n_science_images": n_science_images,
        "n_sky_flats": n_sky_flats,
    }.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0")
    night = date_cls.fromisoformat(date)
    home = Path(home) if home is not None else Path(os.environ.get("VO_SERVICE_HOME", "var"))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    master = np.random.default_rng(seed)
    camera_rng, plan_rng, optics_rng, frames_rng = master.spawn(4)
    plan, targets, night_info = plan_night(
        night,
        binning,
        plan_rng,
        n_bias,
        n_flat,
        n_arc,
        n_science_spectra,
        n_science_images,
        n_sky_flats,
    )

    readouts = {
        "spec": make_readout("Spectroscopic", binning),
        "img": make_readout("Imaging", binning),
    }
    modes_used = sorted({f.mode for f in plan})
    # One camera: every ROI gets a generator with the same seed, hence the same defects.
    camera_key = int(camera_rng.integers(2**63))
    detectors: dict[str, Detector] = {
        mode: make_detector(readouts[mode], np.random.default_rng(camera_key))
        for mode in modes_used
    }

    spectro = None
    if any(f.mode == "spec" and f.kind != "bias" for f in plan):
        spectro = _SpectroSetup.build(home, readouts["spec"], optics_rng)

    bias_params = {
        "base_adu": float(plan_rng.uniform(790.0, 815.0)),
        "drift_adu_per_hour": float(plan_rng.uniform(-1.2, 1.2)),
        "wobble_adu": float(plan_rng.uniform(0.3, 1.5)),
        "wobble_period_hours": 5.0,
        "phase": float(plan_rng.uniform(0.0, 2 * math.pi)),
        "reference_time": iso(plan[0].start) if plan else None,
    }

    files: list[Path] = []
    counts = dict.fromkeys(KINDS, 0)
    frames_truth: list[dict[str, Any]] = []
    masks: dict[str, np.ndarray] = {}
    frame_rngs = frames_rng.spawn(len(plan))
    for seq, (frame, frng) in enumerate(zip(plan, frame_rngs, strict=True), start=1):
        readout = readouts[frame.mode]
        det = detectors[frame.mode]
        render_rng, cr_rng, noise_rng = frng.spawn(3)
        hours = (frame.start - plan[0].start).total_seconds() / 3600.0
        level = bias_level(
            hours,
            bias_params["base_adu"],
            bias_params["drift_adu_per_hour"],
            bias_params["wobble_adu"],
            bias_params["phase"],
        )
        electrons, ftruth, extra_cards = _render(frame, readout, det, spectro, masks, render_rng)
        electrons += det.dark_electrons(frame.exptime)
        if frame.exptime > 0:
            cr_img, cr_events = cosmic_rays(readout, frame.exptime, cr_rng)
        else:
            cr_img, cr_events = None, []
        data = read_out(electrons, det, level, noise_rng, shot_noise=True, extra_electrons=cr_img)
        del electrons, cr_img

        name = f"{seq:04d}_{frame.kind}_{_sanitise(frame.obj)}.fits"
        header = _header(frame, readout, seed, night_info, extra_cards)
        _write_fits(outdir / name, header, data)
        files.append(outdir / name)
        counts[frame.kind] += 1
        frames_truth.append(
            {
                "file": name,
                "seq": seq,
                "kind": frame.kind,
                "obstype": frame.obstype,
                "object": frame.obj,
                "mode": "spectroscopy" if frame.mode == "spec" else "imaging",
                "roi": readout.roi,
                "filter": frame.filter,
                "flat_kind": frame.flat_kind,
                "date_obs": iso(frame.start),
                "exptime": frame.exptime,
                "target": frame.target.name if frame.target else None,
                "bias_level_adu": round(level, 6),
                "saturated_pixels": int(np.count_nonzero(data == SATURATION)),
                "cosmic_rays": {
                    "n_events": len(cr_events),
                    "n_pixels": sum(len(e["pixels"]) for e in cr_events),
                    "events": cr_events,
                },
                **ftruth,
            }
        )

    truth = _truth_document(
        seed,
        binning,
        date,
        outdir,
        readouts,
        detectors,
        spectro,
        targets,
        night_info,
        bias_params,
        frames_truth,
        counts,
        {
            "n_bias": n_bias,
            "n_flat": n_flat,
            "n_arc": n_arc,
            "n_science_spectra": n_science_spectra,
            "n_science_images": n_science_images,
            "n_sky_flats": n_sky_flats,
        },
    )
    truth_path = outdir / "truth.json"
    tmp = truth_path.with_name(".truth.json.part")
    tmp.write_text(_dumps(truth) + "\n", encoding="utf-8")
    os.replace(tmp, truth_path)
    return NightSummary(outdir=outdir, files=files, counts=counts, truth_path=truth_path)


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9+-]+", "_", name).strip("_") or "UNKNOWN"


# ----------------------------------------------------------------------- rendering


@dataclass
class _SpectroSetup:
    solution: WavelengthSolution
    solution_truth: dict[str, Any]
    slit: Slit
    illumination: np.ndarray
    arc: np.ndarray  # e-/s per binned pixel at full illumination
    arc_lines: list[dict[str, Any]]
    flat: np.ndarray
    reference: dict[str, Any]

    @classmethod
    def build(cls, home: Path, readout: Readout, rng: np.random.Generator) -> _SpectroSetup:
        ref_dir = refdata.ensure_reference_data(home)
        ref_path = refdata.find_reference_spectrum(ref_dir, MODE_400_M1.wavmode, ARC_LAMP)
        ref = refdata.load_reference_spectrum(ref_path)
        nist = [
            line
            for el in refdata.lamp_elements([ARC_LAMP])
            for line in refdata.load_nist_lines(ref_dir, el)
        ]
        strengths = refdata.measure_line_strengths(ref, nist)
        sol_rng, slit_rng = rng.spawn(2)
        solution, sol_truth = make_wavelength_solution(ref, readout, sol_rng)
        slit = make_slit(readout, slit_rng)
        arc, arc_lines = arc_profile(solution, readout, strengths, peak_rate=11000.0)
        flat = flat_profile(solution, readout, peak_rate=1500.0)
        reference = {
            "package": f"{refdata.PACKAGE}=={refdata.VERSION}",
            "license": "BSD-3-Clause",
            "lamp_spectrum": ref_path.name,
            "line_lists": [
                f"nist_air_strong_lines_{el}.txt" for el in refdata.lamp_elements([ARC_LAMP])
            ],
            "reference_fwhm_px": refdata.measured_fwhm(ref),
            "n_lines_with_strength": len(strengths),
        }
        return cls(
            solution, sol_truth, slit, slit.illumination(readout), arc, arc_lines, flat, reference
        )


Cards = list[tuple[str, Any, str]]


def _render(
    frame: Frame,
    readout: Readout,
    det: Detector,
    spectro: _SpectroSetup | None,
    masks: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, Any], Cards]:
    """Expected electrons of the frame's light, its truth entries and extra header cards."""
    img = np.zeros(readout.shape)
    truth: dict[str, Any] = {}
    cards: Cards = []
    if frame.kind == "bias":
        return img, truth, cards
    if frame.mode == "spec":
        assert spectro is not None
        ill = spectro.illumination * det.prnu
        if frame.kind == "flat":
            img += ill * (spectro.flat * frame.exptime)[None, :]
            truth["peak_electrons_per_px"] = float(spectro.flat.max() * frame.exptime)
        elif frame.kind == "arc":
            img += ill * (spectro.arc * frame.exptime)[None, :]
            truth["lamp"] = ARC_LAMP
            truth["arc_lines"] = "see spectroscopy.arc_lines (same wavelength solution)"
        else:
            tgt = frame.target
            assert tgt is not None
            p = tgt.params
            airmass = night_plan.airmass(frame.start, tgt.ra, tgt.dec)
            seeing = p["seeing_arcsec"] * float(rng.uniform(0.95, 1.05))
            # Same seed for every exposure of a target: its trace stays put.
            trace_rng = np.random.default_rng(p["trace_seed"])
            trace = make_trace(spectro.slit, readout, seeing, trace_rng)
            sky, sky_lines = sky_profile(
                spectro.solution, readout, airmass, p["sky_v_mag_per_arcsec2"]
            )
            src, lines = source_profile(
                spectro.solution,
                readout,
                v_mag=p["v_mag"],
                slope=p["continuum_slope"],
                redshift=p["redshift"],
                line_scale=p["line_scale"],
                velocity_sigma_kms=p["velocity_sigma_kms"],
                airmass=airmass,
                slit_loss=p["slit_loss"],
            )
            img += ill * (sky * frame.exptime)[None, :]
            obj = np.zeros(readout.shape)
            trace.add(obj, readout, src * frame.exptime)
            img += obj * det.prnu
            for line in lines:
                line["y"] = float(trace.centre(line["x"]))
                line["electrons"] = line.pop("electrons_per_s") * frame.exptime
            truth.update(
                {
                    "airmass": round(airmass, 4),
                    "seeing_arcsec": round(seeing, 4),
                    "trace": trace.truth(readout),
                    "emission_lines": lines,
                    "sky_lines": sky_lines,
                    "redshift": p["redshift"],
                }
            )
        return img, truth, cards

    # imaging
    if "fov" not in masks:
        masks["fov"], _ = fov_mask(readout)
    mask = masks["fov"] * det.prnu
    if frame.kind == "flat":
        level = 22000.0  # e- per binned pixel: exposures lengthen as the twilight fades
        img += mask * level
        truth["sky_electrons_per_px"] = level
        return img, truth, cards
    tgt = frame.target
    assert tgt is not None
    ra, dec = night_plan.dithered(tgt, frame.dither)
    wcs_c = wcs_cards(readout, ra, dec, tgt.params["rotation_deg"])
    wcs = make_wcs(wcs_c)
    airmass = night_plan.airmass(frame.start, ra, dec)
    seeing = tgt.params["seeing_arcsec"] * float(rng.uniform(0.93, 1.07))
    sky = sky_rate(readout, frame.filter) * frame.exptime
    img += mask * sky
    stars = add_stars(
        img, readout, wcs, tgt.stars, frame.filter, frame.exptime, airmass, seeing, mask
    )
    truth.update(
        {
            "airmass": round(airmass, 4),
            "seeing_arcsec": round(seeing, 4),
            "fwhm_px": round(seeing / (0.15 * readout.binning), 4),
            "psf": "moffat, beta=3",
            "sky_electrons_per_px": round(sky, 3),
            "pointing": {"ra": ra, "dec": dec, "dither_arcsec": list(frame.dither)},
            "wcs": {k: v for k, v, _ in wcs_c},
            "stars": stars,
        }
    )
    return img, truth, wcs_c


# ---------------------------------------------------------------------- FITS output


def _header(
    frame: Frame, readout: Readout, seed: int, info: dict[str, Any], extra: Cards
) -> fits.Header:
    spec = frame.mode == "spec"
    end = frame.start + timedelta(seconds=frame.exptime + READ_TIME_S[readout.binning])
    if frame.target is not None:
        ra, dec = night_plan.dithered(frame.target, frame.dither)
        obsra, obsdec = frame.target.ra, frame.target.dec
    else:  # afternoon calibrations: telescope parked at the zenith
        ra = obsra = night_plan.lst_hours(frame.start) * 15.0
        dec = obsdec = SITE_LAT
    lamps = dict.fromkeys(LAMP_KEYS, "FALSE")
    if frame.kind == "arc":
        lamps["LAMP_HGA"] = lamps["LAMP_NE"] = "TRUE"
    elif frame.flat_kind == "lamp":
        lamps["LAMP_QUA"] = "TRUE"
    elif frame.flat_kind == "dome":
        lamps["LAMP_DOM"] = "TRUE"
    b = readout.binning
    hms, dms = night_plan.sexagesimal, night_plan.sexagesimal
    lst = night_plan.lst_hours(frame.start)
    cards: Cards = [
        ("DATE-OBS", iso(frame.start), "start of exposure, UTC"),
        ("DATE", end.strftime("%Y-%m-%dT%H:%M:%S"), "file written, UTC"),
        ("UT", iso(frame.start)[11:], "time at start of exposure [UTC]"),
        ("TELESCOP", "SOAR 4.1m", ""),
        ("OBSERVAT", "SOAR", ""),
        ("INSTRUME", "Goodman Spectrograph", ""),
        ("INSTCONF", "Red", "camera"),
        ("OBJECT", frame.obj, ""),
        ("OBSTYPE", frame.obstype, "observation type"),
        ("EXPTIME", frame.exptime, "integration time [s]"),
        ("RA", hms(ra / 15.0, 2), "right ascension [hh:mm:ss.sss]"),
        ("DEC", dms(dec, 1), "declination [dd:mm:ss.sss]"),
        ("OBSRA", hms(obsra / 15.0, 2), "target right ascension [hh:mm:ss.sss]"),
        ("OBSDEC", dms(obsdec, 1), "target declination [dd:mm:ss.sss]"),
        ("EQUINOX", 2000.0, "equinox of coordinates"),
        ("AIRMASS", round(night_plan.airmass(frame.start, ra, dec), 6), "at start of exposure"),
        ("LST", hms(lst, 2), "local sidereal time"),
        ("HA", dms(night_plan.hour_angle(frame.start, ra), 1), "hour angle"),
        ("POSANGLE", 0.0, "position angle [deg. E of N]"),
    ]
    for key, value in lamps.items():
        cards.append((key, value, ""))
    cards += [
        ("CAM_TARG", MODE_400_M1.cam_targ if spec else 0.0, "camera target [deg]"),
        ("GRT_TARG", MODE_400_M1.grt_targ if spec else 0.0, "grating target [deg]"),
        ("FILTER", "<NO FILTER>" if spec else frame.filter, "primary filter wheel"),
        ("FILTER2", MODE_400_M1.filter2 if spec else "<NO FILTER>", "secondary filter wheel"),
        ("GRATING", MODE_400_M1.grating if spec else "<NO GRATING>", "VPH grating"),
        ("SLIT", SLIT if spec else "<NO MASK>", "slit [arcsec]"),
        ("WAVMODE", MODE_400_M1.wavmode if spec else "IMAGING", "wavelength mode"),
        ("ROI", readout.roi, "region of interest"),
        ("CCDSUM", f"{b} {b}", "binning"),
        ("GAIN", GAIN, "CCD gain [e-/ADU]"),
        ("RDNOISE", RDNOISE, "CCD readnoise [e-]"),
        ("OBSERVER", info["observer"], ""),
        ("PROPID", info["proposal_id"], "proposal id"),
        ("DATASEC", readout.datasec, "light-sensitive pixels"),
        ("TRIMSEC", readout.trimsec, "section kept after trimming"),
        ("BIASSEC", readout.biassec, "overscan (prescan) strip"),
        ("DETSIZE", "[1:4096,1:4096]", ""),
        ("BUNIT", "adu", ""),
    ]
    if spec:
        cards.append(("DISPAXIS", 1, "dispersion along NAXIS1"))
    cards += extra
    cards += [
        ("SIMULATE", True, "simulated frame (vo-service ingest.simulate)"),
        ("SIMSEED", seed, "simulator seed"),
        ("SIMVERS", TRUTH_VERSION, "simulator version"),
    ]
    return fits.Header(cards)


def _write_fits(path: Path, header: fits.Header, data: np.ndarray) -> None:
    """Write atomically so a watcher never picks up half a file."""
    hdu = fits.PrimaryHDU(data=data, header=header)
    tmp = path.with_name(f".{path.name}.part")
    hdu.writeto(tmp, overwrite=True, output_verify="exception")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- truth


def _truth_document(
    seed: int,
    binning: int,
    date: str,
    outdir: Path,
    readouts: dict[str, Readout],
    detectors: dict[str, Detector],
    spectro: _SpectroSetup | None,
    targets: list[Target],
    info: dict[str, Any],
    bias_params: dict[str, Any],
    frames: list[dict[str, Any]],
    counts: dict[str, int],
    requested: dict[str, int],
) -> dict[str, Any]:
    ro_truth = {}
    for mode, ro in readouts.items():
        if mode not in detectors:
            continue
        ro_truth[ro.roi] = {
            "naxis1": ro.naxis1,
            "naxis2": ro.naxis2,
            **ro.sections(),
            "light_columns": [ro.data_x[0], ro.data_x[1] - 1],
            "unilluminated_columns": [ro.data_x[1], ro.naxis1 - 1]
            if ro.data_x[1] < ro.naxis1
            else None,
            "defects": detectors[mode].truth,
        }
    doc: dict[str, Any] = {
        "format": "vo-service simulated Goodman night",
        "version": TRUTH_VERSION,
        "seed": seed,
        "binning": binning,
        "date": date,
        "parameters": requested,
        "conventions": {
            "pixels": "0-based indices of the raw binned array: data[y, x]; x along NAXIS1",
            "sections": "FITS keywords DATASEC/TRIMSEC/BIASSEC are 1-based inclusive",
            "wavelengths": "air, Angstrom",
            "electrons": "before gain; ADU = electrons / GAIN + bias level + pattern",
        },
        "night": {**info, "site": {"lat": SITE_LAT, "lon": SITE_LON, "name": "Cerro Pachon"}},
        "detector": {
            "gain_e_per_adu": GAIN,
            "rdnoise_e": RDNOISE,
            "saturation_adu": SATURATION,
            "storage": "BITPIX=16 with BZERO=32768 (unsigned 16-bit)",
            "bias": bias_params,
            "cosmic_rays": {
                "rate_per_cm2_per_min": CR_RATE_PER_CM2_MIN,
                "min_electrons_listed": CR_MIN_ELECTRONS,
                "note": "only on frames with EXPTIME > 0; pixels are [y, x]",
            },
            "readouts": ro_truth,
        },
        "counts": counts,
        "targets": [
            {
                "name": t.name,
                "ra": t.ra,
                "dec": t.dec,
                "params": t.params,
                "stars": [
                    {"ra": s.ra, "dec": s.dec, **{_band(k): round(v, 4) for k, v in s.mags.items()}}
                    for s in t.stars
                ],
            }
            for t in targets
        ],
    }
    if spectro is not None:
        doc["spectroscopy"] = {
            "wavmode": MODE_400_M1.wavmode,
            "grating": MODE_400_M1.grating,
            "slit": SLIT,
            "arc_lamp": ARC_LAMP,
            "line_fwhm_unbinned_px": FWHM_ARC_UNBINNED,
            "line_fwhm_px": FWHM_ARC_UNBINNED / binning,
            "wavelength_solution": spectro.solution_truth,
            "slit_illumination": spectro.slit.truth(),
            "arc_lines": spectro.arc_lines,
            "reference_data": spectro.reference,
        }
    if any(t.stars for t in targets):
        doc["imaging"] = {
            "pixel_scale_arcsec": 0.15 * binning,
            "filters": {k: vars(v) for k, v in FILTERS.items()},
            "field_of_view": fov_mask(readouts["img"])[1],
        }
    doc["frames"] = frames
    return doc


def _band(filter_name: str) -> str:
    return filter_name.split("-")[0]


def _dumps(obj: Any, indent: int = 0) -> str:
    """JSON with objects broken over lines but number lists kept on one line."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list | tuple):
        if all(not isinstance(v, dict) for v in _flatten(obj)):
            return json.dumps(obj, separators=(",", ":"))
        items = [pad + _dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(obj)


def _flatten(obj: list[Any] | tuple[Any, ...]) -> Iterator[Any]:
    for v in obj:
        if isinstance(v, list | tuple):
            yield from _flatten(v)
        else:
            yield v
