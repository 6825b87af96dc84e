"""Classify a raw Goodman-like frame from its primary header alone.

Kept free of I/O and of the database so the same rules serve the loader, the live watcher
and a reduction task graph. The rules follow the instrument's keywords: ``OBSTYPE`` says
bias/flat/comparison/object, ``WAVMODE``/``GRATING`` tell a spectrum from an image, and
the lamp keywords (``LAMP_QUA``, ``LAMP_DOM``) and ``OBJECT`` tell dome, lamp and sky flats
apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from astropy import units as u
from astropy.coordinates import Angle
from astropy.io.fits import Header
from astropy.time import Time

FRAME_TYPES = ("bias", "flat", "arc", "science_spectrum", "science_image", "other")
_PROPOSAL_KEYS = ("PROPID", "PROPOSAL", "PROP_ID", "PROGRAM", "PROGID")
_NO_VALUE = {"", "<NO GRATING>", "<NO FILTER>", "<NO MASK>", "NONE", "N/A"}


class ClassificationError(ValueError):
    """The header lacks what every frame must have (e.g. a usable DATE-OBS)."""


@dataclass(frozen=True)
class Classification:
    frame_type: str
    flat_kind: str | None
    obstype: str | None
    object: str | None
    proposal_id: str | None
    instrument: str | None
    camera: str | None
    wavmode: str | None
    grating: str | None
    slit: str | None
    filter: str | None
    filter2: str | None
    cam_targ: float | None
    grt_targ: float | None
    roi: str | None
    binning_x: int | None
    binning_y: int | None
    gain: float | None
    rdnoise: float | None
    date_obs: datetime
    mjd_obs: float
    night: str
    exptime: float | None
    ra: float | None
    dec: float | None
    airmass: float | None
    naxis1: int | None
    naxis2: int | None
    setup_key: str


def _text(header: Header, key: str) -> str | None:
    value = header.get(key)
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def _float(header: Header, key: str) -> float | None:
    value = header.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag(header: Header, key: str) -> bool:
    value = header.get(key)
    if isinstance(value, bool):
        return value
    return str(value).strip().upper() in ("TRUE", "T", "ON", "1") if value is not None else False


def _is_set(value: str | None) -> bool:
    return value is not None and value.upper() not in _NO_VALUE


def _binning(header: Header) -> tuple[int | None, int | None]:
    raw = _text(header, "CCDSUM")
    if not raw:
        return None, None
    parts = raw.split()
    try:
        return int(parts[0]), int(parts[1] if len(parts) > 1 else parts[0])
    except ValueError:
        return None, None


def _date_obs(header: Header) -> datetime:
    raw = _text(header, "DATE-OBS")
    if raw is None:
        raise ClassificationError("no DATE-OBS keyword")
    if "T" not in raw and _text(header, "UT"):  # old-style date plus separate UT
        raw = f"{raw}T{_text(header, 'UT')}"
    try:
        return Time(raw, scale="utc").to_datetime().replace(tzinfo=None)
    except ValueError as exc:
        raise ClassificationError(f"DATE-OBS {raw!r} is not an ISO date: {exc}") from None


def _coordinates(header: Header) -> tuple[float | None, float | None]:
    """Pointing in degrees: sexagesimal OBSRA (hours)/OBSDEC as Goodman writes, or RA/DEC."""
    for ra_key, dec_key in (("OBSRA", "OBSDEC"), ("RA", "DEC")):
        ra_raw, dec_raw = header.get(ra_key), header.get(dec_key)
        if ra_raw is None or dec_raw is None:
            continue
        try:
            if isinstance(ra_raw, str):
                ra = Angle(ra_raw.strip(), unit=u.hourangle).degree
            else:
                ra = float(ra_raw)
            dec = (
                Angle(dec_raw.strip(), unit=u.deg).degree
                if isinstance(dec_raw, str)
                else float(dec_raw)
            )
        except (ValueError, TypeError):
            continue
        if math.isfinite(ra) and math.isfinite(dec) and -90 <= dec <= 90:
            return float(ra % 360.0), float(dec)
    return None, None


def _frame_type(
    header: Header, obstype: str | None, wavmode: str | None, grating: str | None
) -> tuple[str, str | None]:
    kind = (obstype or "").upper()
    obj = (_text(header, "OBJECT") or "").upper()
    if kind in ("BIAS", "ZERO") or (not kind and obj in ("BIAS", "ZERO")):
        return "bias", None
    if kind in ("FLAT", "DOMEFLAT", "SKYFLAT", "LAMPFLAT") or (not kind and "FLAT" in obj):
        if _flag(header, "LAMP_QUA") or kind == "LAMPFLAT" or "QUARTZ" in obj:
            return "flat", "lamp"
        if "SKY" in obj or "TWILIGHT" in obj or kind == "SKYFLAT":
            return "flat", "sky"
        return "flat", "dome"
    if kind in ("COMP", "ARC", "COMPARISON", "LAMP"):
        return "arc", None
    if kind in ("OBJECT", "SPECTRUM", "SCIENCE", "EXPOSE", "STD", "STANDARD"):
        imaging = (wavmode or "").upper() == "IMAGING" or not _is_set(grating)
        return ("science_image" if imaging else "science_spectrum"), None
    return "other", None


def setup_key(c: dict[str, Any]) -> str:
    """Readout part first (all a bias must match), then the optical setup for flats/arcs.

    Calibration matching can therefore select biases by prefix and flats or arcs by the
    whole key.
    """
    readout = [
        c["camera"] or "?",
        f"{c['binning_x'] or '?'}x{c['binning_y'] or '?'}",
        c["roi"] or "?",
        f"g{c['gain']:.2f}" if c["gain"] is not None else "g?",
        f"rn{c['rdnoise']:.2f}" if c["rdnoise"] is not None else "rn?",
    ]
    if c["frame_type"] == "bias":
        return "|".join(readout)
    if c["frame_type"] == "science_image" or (c["wavmode"] or "").upper() == "IMAGING":
        optics = ["imaging", c["filter"] or "-", c["filter2"] or "-"]
    else:
        optics = [
            c["grating"] or "-",
            c["filter2"] or "-",
            c["slit"] or "-",
            f"{c['cam_targ']:.2f}" if c["cam_targ"] is not None else "-",
            f"{c['grt_targ']:.2f}" if c["grt_targ"] is not None else "-",
        ]
    return "|".join(readout) + "||" + "|".join(optics)


def classify(header: Header) -> Classification:
    obstype = _text(header, "OBSTYPE")
    wavmode = _text(header, "WAVMODE")
    grating = _text(header, "GRATING")
    frame_type, flat_kind = _frame_type(header, obstype, wavmode, grating)
    date_obs = _date_obs(header)
    binning_x, binning_y = _binning(header)
    ra, dec = _coordinates(header)
    fields: dict[str, Any] = {
        "frame_type": frame_type,
        "flat_kind": flat_kind,
        "obstype": obstype,
        "object": _text(header, "OBJECT"),
        "proposal_id": next((v for k in _PROPOSAL_KEYS if (v := _text(header, k))), None),
        "instrument": _text(header, "INSTRUME"),
        "camera": _text(header, "INSTCONF"),
        "wavmode": wavmode,
        "grating": grating,
        "slit": _text(header, "SLIT"),
        "filter": _text(header, "FILTER"),
        "filter2": _text(header, "FILTER2"),
        "cam_targ": _float(header, "CAM_TARG"),
        "grt_targ": _float(header, "GRT_TARG"),
        "roi": _text(header, "ROI"),
        "binning_x": binning_x,
        "binning_y": binning_y,
        "gain": _float(header, "GAIN"),
        "rdnoise": _float(header, "RDNOISE"),
        "date_obs": date_obs,
        "mjd_obs": float(Time(date_obs, scale="utc").mjd),
        "night": (date_obs - timedelta(hours=12)).date().isoformat(),
        "exptime": _float(header, "EXPTIME"),
        "ra": ra,
        "dec": dec,
        "airmass": _float(header, "AIRMASS"),
        "naxis1": header.get("NAXIS1"),
        "naxis2": header.get("NAXIS2"),
    }
    fields["setup_key"] = setup_key(fields)
    return Classification(**fields)


def header_to_json(header: Header) -> dict[str, Any]:
    """Every card, JSON-safe: repeated keywords (COMMENT, HISTORY) become lists."""
    result: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        if not key:
            continue
        value = card.value
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif isinstance(value, complex):
            value = [value.real, value.imag]
        elif not isinstance(value, str | int | float | bool):
            value = None if value is None or type(value).__name__ == "Undefined" else str(value)
        if key in ("COMMENT", "HISTORY", "") or key in result:
            existing = result.get(key)
            result[key] = (
                [*existing, value]
                if isinstance(existing, list)
                else ([value] if existing is None else [existing, value])
            )
        else:
            result[key] = value
    return result


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
