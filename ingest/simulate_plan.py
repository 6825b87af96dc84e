"""The observing sequence of a simulated Goodman night, and the clock and sky it runs on.

Separate from rendering so the timeline (what is taken when, at which pointing) can be
reasoned about and tested on its own; every random choice comes from the plan generator,
so targets and timings follow from the seed alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import date as date_cls
from typing import Any

import numpy as np

from ingest.simulate_detector import READ_TIME_S
from ingest.simulate_imaging import Star, make_field

SITE_LAT = -30.2378  # Cerro Pachón
SITE_LON = -70.7337
ARC_LAMP = "HgArNe"
IMAGING_FILTERS = ("g-SDSS", "r-SDSS", "i-SDSS")


@dataclass
class Target:
    name: str
    ra: float  # deg
    dec: float
    params: dict[str, Any] = field(default_factory=dict)
    stars: list[Star] = field(default_factory=list)


@dataclass
class Frame:
    kind: str
    mode: str  # "spec" | "img"
    obstype: str
    obj: str
    exptime: float
    start: datetime
    filter: str = "<NO FILTER>"
    target: Target | None = None
    flat_kind: str | None = None
    dither: tuple[float, float] = (0.0, 0.0)  # arcsec east, north


def plan_night(
    night: date_cls,
    binning: int,
    rng: np.random.Generator,
    n_bias: int,
    n_flat: int,
    n_arc: int,
    n_spec: int,
    n_img: int,
    n_sky: int,
) -> tuple[list[Frame], list[Target], dict[str, Any]]:
    """Observing sequence with start times; targets are placed near the meridian."""
    midnight = datetime(night.year, night.month, night.day, tzinfo=UTC)
    read = READ_TIME_S[binning]
    plan: list[Frame] = []
    semester = "A" if 2 <= night.month <= 7 else "B"
    sem_year = night.year - 1 if night.month == 1 else night.year
    info = {
        "proposal_id": f"SOAR{sem_year}{semester}-{int(rng.integers(1, 40)):03d}",
        "observer": "Simulated Observer",
    }

    def ms(t: datetime) -> datetime:
        return t.replace(microsecond=(t.microsecond // 1000) * 1000)

    t = midnight + timedelta(hours=18, minutes=30, seconds=float(rng.uniform(0, 600)))
    # One bias set per night, in the ROI of the main programme (one bias setup_key).
    bias_mode = "spec" if n_flat + n_arc + n_spec > 0 or n_img + n_sky == 0 else "img"
    for _ in range(n_bias):
        plan.append(Frame("bias", bias_mode, "BIAS", "BIAS", 0.0, ms(t)))
        t += timedelta(seconds=read + float(rng.uniform(2.0, 4.0)))
    flat_exp = 20.0 if binning == 1 else 5.0
    arc_exp = 4.0 if binning == 1 else 1.0
    t = max(t + timedelta(minutes=8), midnight + timedelta(hours=19, minutes=20))
    for _ in range(n_flat):
        plan.append(Frame("flat", "spec", "FLAT", "QuartzFlat", flat_exp, ms(t), flat_kind="lamp"))
        t += timedelta(seconds=flat_exp + read + float(rng.uniform(3.0, 6.0)))
    spec_targets = _spread(n_spec, 2)
    if not spec_targets:
        for _ in range(n_arc):
            plan.append(Frame("arc", "spec", "COMP", ARC_LAMP, arc_exp, ms(t)))
            t += timedelta(seconds=arc_exp + read + float(rng.uniform(3.0, 6.0)))

    filters_used = list(IMAGING_FILTERS[: max(1, min(3, n_img))]) if n_img else ["r-SDSS"]
    if n_sky:
        t = midnight + timedelta(hours=22, minutes=48, seconds=float(rng.uniform(0, 120)))
        per_filter = _spread(n_sky, math.ceil(n_sky / len(filters_used)))
        for filt, n in zip(filters_used, per_filter, strict=False):
            for k in range(n):
                exp = round(3.0 * 1.6**k * (1 if binning == 2 else 4), 1)
                plan.append(
                    Frame(
                        "flat", "img", "FLAT", "SkyFlat", exp, ms(t), filter=filt, flat_kind="sky"
                    )
                )
                t += timedelta(seconds=exp + read + 12.0)

    targets: list[Target] = []
    t = midnight + timedelta(hours=23, minutes=32, seconds=float(rng.uniform(0, 300)))
    arcs_left = n_arc
    for i, n_exp in enumerate(spec_targets):
        t += timedelta(minutes=float(rng.uniform(6.0, 10.0)))  # slew and acquisition
        tgt = _new_target(t, rng, prefix="SIM")
        tgt.params = {
            "v_mag": float(rng.uniform(16.3, 17.6)),
            "continuum_slope": float(rng.uniform(-1.5, 0.5)),
            "redshift": float(rng.uniform(0.004, 0.035)),
            "line_scale": float(rng.uniform(0.6, 1.6)),
            "velocity_sigma_kms": float(rng.uniform(60.0, 180.0)),
            "seeing_arcsec": float(rng.uniform(0.7, 1.1)),
            "sky_v_mag_per_arcsec2": float(rng.uniform(20.2, 21.3)),
            "slit_loss": 0.72,
            "trace_seed": int(rng.integers(2**32)),
        }
        targets.append(tgt)
        if arcs_left > 0:
            plan.append(Frame("arc", "spec", "COMP", ARC_LAMP, arc_exp, ms(t), target=tgt))
            t += timedelta(seconds=arc_exp + read + 20.0)
            arcs_left -= 1
        exptime = float(rng.choice([600.0, 900.0, 1200.0]))
        for _ in range(n_exp):
            plan.append(
                Frame("science_spectrum", "spec", "OBJECT", tgt.name, exptime, ms(t), target=tgt)
            )
            t += timedelta(seconds=exptime + read + 5.0)
        if i == len(spec_targets) - 1:
            while arcs_left > 0:
                plan.append(Frame("arc", "spec", "COMP", ARC_LAMP, arc_exp, ms(t), target=tgt))
                t += timedelta(seconds=arc_exp + read + 20.0)
                arcs_left -= 1

    per_field = _spread(n_img, 3)
    for n in per_field:
        t += timedelta(minutes=float(rng.uniform(5.0, 8.0)))
        tgt = _new_target(t, rng, prefix="SIMF")
        tgt.params = {
            "seeing_arcsec": float(rng.uniform(0.75, 1.05)),
            "rotation_deg": float(rng.normal(0.0, 0.3)),
        }
        tgt.stars = make_field(tgt.ra, tgt.dec, rng)
        targets.append(tgt)
        for k in range(n):
            filt = filters_used[k % len(filters_used)]
            exptime = {"g-SDSS": 120.0, "r-SDSS": 90.0, "i-SDSS": 90.0}[filt]
            dither = (float(rng.uniform(-15, 15)), float(rng.uniform(-15, 15)))
            plan.append(
                Frame(
                    "science_image",
                    "img",
                    "OBJECT",
                    tgt.name,
                    exptime,
                    ms(t),
                    filter=filt,
                    target=tgt,
                    dither=dither,
                )
            )
            t += timedelta(seconds=exptime + read + 25.0)
    return plan, targets, info


def _spread(total: int, size: int) -> list[int]:
    """Split ``total`` exposures into groups of ``size`` (the last may be smaller)."""
    return [min(size, total - i) for i in range(0, total, size)] if size > 0 else []


def _new_target(t: datetime, rng: np.random.Generator, prefix: str) -> Target:
    ra = (lst_hours(t) + float(rng.uniform(-1.0, 1.5))) % 24.0 * 15.0
    dec = float(rng.uniform(-65.0, 0.0))
    hms = sexagesimal(ra / 15.0, 2)[:8].replace(":", "")
    dms = sexagesimal(abs(dec), 1)[:5].replace(":", "")
    return Target(f"{prefix} J{hms}{'-' if dec < 0 else '+'}{dms}", ra, dec)


def lst_hours(t: datetime) -> float:
    """Local sidereal time at the site (GMST, IAU 1982; good to ~0.1 s for this use)."""
    jd = t.timestamp() / 86400.0 + 2440587.5
    d = jd - 2451545.0
    gmst = 18.697374558 + 24.06570982441908 * d
    return (gmst + SITE_LON / 15.0) % 24.0


def hour_angle(t: datetime, ra_deg: float) -> float:
    return ((lst_hours(t) - ra_deg / 15.0 + 12.0) % 24.0) - 12.0


def airmass(t: datetime, ra_deg: float, dec_deg: float) -> float:
    """Kasten & Young (1989) airmass; calibrations at the zenith give 1.0."""
    ha = math.radians(hour_angle(t, ra_deg) * 15.0)
    lat, dec = math.radians(SITE_LAT), math.radians(dec_deg)
    alt = math.asin(math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha))
    z = 90.0 - math.degrees(alt)
    x = 1.0 / (math.cos(math.radians(z)) + 0.50572 * (96.07995 - z) ** -1.6364)
    return max(x, 1.0)


def sexagesimal(value: float, kind: int) -> str:
    """``hh:mm:ss.sss`` (kind 2, input hours) or ``±dd:mm:ss.sss`` (kind 1, degrees)."""
    sign = "-" if value < 0 else ""
    ms_total = round(abs(value) * 3600 * 1000)
    whole, msec = divmod(ms_total, 1000)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    if kind == 2:
        h %= 24
        return f"{h:02d}:{m:02d}:{s:02d}.{msec:03d}"
    return f"{sign}{h:02d}:{m:02d}:{s:02d}.{msec:03d}"


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def dithered(tgt: Target, dither: tuple[float, float]) -> tuple[float, float]:
    dec = tgt.dec + dither[1] / 3600.0
    ra = (tgt.ra + dither[0] / 3600.0 / math.cos(math.radians(tgt.dec))) % 360.0
    return ra, dec
