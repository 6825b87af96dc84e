"""Which calibration frames reduce which science frame, and why.

Pure over frame rows (mappings with the ``archive.frames`` columns ``frame_id``,
``obs_id``, ``frame_type``, ``flat_kind``, ``setup_key``, ``night``, ``mjd_obs``) and
:class:`~ingest.reduce.settings.ReductionSettings`, so the rules can be tested without a
database and rerun by a scheduler. Matching follows ``classify.setup_key``: biases share
the readout part (before ``||``), flats and arcs the whole key.

Biases and flats are taken as whole nightly sets, not as the N nearest frames: every
science frame of a night then shares one master, which is what makes masters cacheable.
The set of the science frame's own night wins when it is large enough; otherwise the
nearest night within ``max_days`` that has enough. Arcs are single frames, nearest in
time, same night first, because the instrument flexes between pointings.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ingest.reduce.settings import ReductionSettings

Row = Mapping[str, Any]
READOUT_SEPARATOR = "||"
MAX_DAYS = 30.0  # calibrations further away than this describe a different instrument
SCIENCE_TYPES = ("science_spectrum", "science_image")
# Flats of one kind are never mixed (their illumination differs); the kinds a setup can
# use, best first. Sky flats only correct a spectrum's illumination along the slit.
FLAT_KINDS = {"spectrum": ("lamp", "dome", None), "image": ("sky", "dome", "lamp", None)}


def readout_part(setup_key: str) -> str:
    """The part of a setup key a bias has to match."""
    return setup_key.split(READOUT_SEPARATOR, 1)[0]


@dataclass(frozen=True)
class Choice:
    """The frames picked for one role of one science frame, and the reason in words.

    ``frame_ids`` is empty when the role is ignored by the settings or nothing fits;
    ``missing`` says the science frame has to wait for this role.
    """

    role: str  # "bias", "flat" or "arc"
    setup_key: str  # the key the candidates had to match
    frame_ids: tuple[int, ...]
    night: str | None
    reason: str
    missing: bool = False


@dataclass(frozen=True)
class Selection:
    """Calibrations for one science frame; ``flat_bias`` are the biases of its flats."""

    frame_id: int
    obs_id: str
    setup_key: str
    spectrum: bool
    bias: Choice
    flat: Choice
    arc: Choice | None  # spectra only
    flat_bias: Choice | None  # biases for the master flat (None when flats are ignored)

    @property
    def choices(self) -> tuple[Choice, ...]:
        found = [self.bias, self.flat, self.arc, self.flat_bias]
        return tuple(c for c in found if c is not None)

    @property
    def ready(self) -> bool:
        return not any(c.missing for c in self.choices)

    @property
    def status(self) -> str:
        return "ready" if self.ready else "waiting"

    @property
    def message(self) -> str:
        """One line for the status table: what is missing, or what was chosen."""
        if not self.ready:
            missing = dict.fromkeys(c.reason for c in self.choices if c.missing)
            return "waiting: " + "; ".join(missing)
        main = (self.bias, self.flat, self.arc)
        return "; ".join(f"{c.role}: {c.reason}" for c in main if c is not None)


def _nights_apart(a: str, b: str) -> int:
    return (date.fromisoformat(a) - date.fromisoformat(b)).days


def _when(days: float) -> str:
    """A time difference in words: '25 s before', '3.2 h after'."""
    seconds = abs(days) * 86400.0
    side = "before" if days < 0 else "after"
    if seconds < 120:
        text = f"{seconds:.0f} s"
    elif seconds < 7200:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 2 * 86400:
        text = f"{seconds / 3600:.1f} h"
    else:
        text = f"{seconds / 86400:.1f} d"
    return f"{text} {side}"


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def pick_set(
    role: str,
    setup_key: str,
    candidates: Iterable[Row],
    night: str,
    mjd: float,
    minimum: int,
    *,
    max_days: float = MAX_DAYS,
    label: str | None = None,
) -> Choice:
    """A night's whole set of ``role`` frames: the given night's if large enough, else the
    nearest night (by median time) that has ``minimum`` frames within ``max_days``.
    ``label`` names the frames in the reason (``lamp flat``)."""
    by_night: dict[str, list[Row]] = defaultdict(list)
    for row in candidates:
        by_night[row["night"]].append(row)
    if not by_night:
        return Choice(role, setup_key, (), None, f"no {role} for setup {setup_key}", True)
    own = len(by_night.get(night, ()))
    eligible = []
    for other, rows in by_night.items():
        offset = _median([r["mjd_obs"] for r in rows]) - mjd
        if len(rows) >= minimum and abs(offset) <= max_days:
            eligible.append((other != night, abs(offset), other, offset, rows))
    if not eligible:
        best = max(len(rows) for rows in by_night.values())
        return Choice(
            role,
            setup_key,
            (),
            None,
            f"not enough {role} frames for setup {setup_key}: {minimum} needed, at most "
            f"{best} in one night within {max_days:g} days",
            True,
        )
    _, _, chosen, offset, rows = min(eligible, key=lambda e: e[:3])
    ids = tuple(sorted(r["frame_id"] for r in rows))
    taken = f"taken {_when(offset)} (median)"
    named = _plural(len(ids), label or role)
    if chosen == night:
        reason = f"{named} of the same night {chosen}, {taken}"
    else:
        apart = _nights_apart(chosen, night)
        direction = "earlier" if apart < 0 else "later"
        short = f"only {own}" if own else "none"
        reason = (
            f"{named} of {chosen}, {abs(apart)} night(s) {direction}, "
            f"{taken}: the same night has {short} ({minimum} needed)"
        )
    return Choice(role, setup_key, ids, chosen, reason)


def pick_nearest(
    role: str,
    setup_key: str,
    candidates: Iterable[Row],
    night: str,
    mjd: float,
    *,
    max_days: float = MAX_DAYS,
) -> Choice:
    """The one frame nearest in time, preferring the science frame's own night."""
    rows = [r for r in candidates if abs(r["mjd_obs"] - mjd) <= max_days]
    if not rows:
        return Choice(role, setup_key, (), None, f"no {role} for setup {setup_key}", True)
    best = min(rows, key=lambda r: (r["night"] != night, abs(r["mjd_obs"] - mjd), r["frame_id"]))
    offset = best["mjd_obs"] - mjd
    if best["night"] == night:
        reason = f"{best['obs_id']} taken {_when(offset)}, the nearest of the same night"
    else:
        apart = _nights_apart(best["night"], night)
        direction = "earlier" if apart < 0 else "later"
        reason = (
            f"{best['obs_id']} of {best['night']}, {abs(apart)} night(s) {direction}: "
            f"none on the same night"
        )
    return Choice(role, setup_key, (best["frame_id"],), best["night"], reason)


def _pick_flats(
    key: str,
    flats: list[Row],
    night: str,
    mjd: float,
    minimum: int,
    spectrum: bool,
    max_days: float,
) -> Choice:
    """The best set of one flat kind: the science night's first, then by kind."""
    kinds = FLAT_KINDS["spectrum" if spectrum else "image"]
    usable = [f for f in flats if f.get("flat_kind") in kinds]
    picks = []
    for rank, kind in enumerate(kinds):
        same = [f for f in usable if f.get("flat_kind") == kind]
        if same:
            label = f"{kind} flat" if kind else "flat"
            pick = pick_set("flat", key, same, night, mjd, minimum, max_days=max_days, label=label)
            if not pick.missing:
                picks.append((pick.night != night, rank, pick))
    if picks:
        return min(picks, key=lambda p: p[:2])[2]
    if not usable:
        return Choice("flat", key, (), None, f"no flat for setup {key}", True)
    near = [f for f in usable if abs(f["mjd_obs"] - mjd) <= max_days]
    most = max(Counter((f["night"], f.get("flat_kind")) for f in near).values(), default=0)
    reason = (
        f"not enough flat frames for setup {key}: {minimum} needed, at most {most} of one "
        f"kind in one night within {max_days:g} days"
    )
    return Choice("flat", key, (), None, reason, True)


def _ignored(role: str, setup_key: str, setting: str) -> Choice:
    return Choice(role, setup_key, (), None, f"ignored ({setting} is set)")


class _Candidates:
    """Calibration frames indexed by (frame type, setup key), built once per run."""

    def __init__(self, frames: Iterable[Row]) -> None:
        self.by_key: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for row in frames:
            if row["frame_type"] in ("bias", "flat", "arc") and row.get("setup_key"):
                self.by_key[(row["frame_type"], row["setup_key"])].append(row)

    def get(self, frame_type: str, setup_key: str) -> list[Row]:
        return self.by_key.get((frame_type, setup_key), [])


def _select(
    science: Row, pool: _Candidates, settings: ReductionSettings, max_days: float
) -> Selection:
    key = science["setup_key"]
    readout = readout_part(key)
    spectrum = science["frame_type"] == "science_spectrum"
    night, mjd = science["night"], science["mjd_obs"]

    if settings.ignore_bias:
        bias = _ignored("bias", readout, "ignore_bias")
    else:
        biases = pool.get("bias", readout)
        bias = pick_set("bias", readout, biases, night, mjd, settings.min_biases, max_days=max_days)

    flat_bias: Choice | None = None
    if settings.ignore_flats:
        flat = _ignored("flat", key, "ignore_flats")
    else:
        flats = pool.get("flat", key)
        flat = _pick_flats(key, flats, night, mjd, settings.min_flats, spectrum, max_days)
        if settings.ignore_bias:
            flat_bias = _ignored("bias", readout, "ignore_bias")
        elif not flat.missing:
            # the flats' own biases: their night may not be the science frame's
            chosen = [f for f in flats if f["frame_id"] in set(flat.frame_ids)]
            taken = _median([f["mjd_obs"] for f in chosen])
            biases = pool.get("bias", readout)
            flat_bias = pick_set(
                "bias",
                readout,
                biases,
                flat.night or night,
                taken,
                settings.min_biases,
                max_days=max_days,
            )

    arc = None
    if spectrum:
        arc = pick_nearest("arc", key, pool.get("arc", key), night, mjd, max_days=max_days)
    return Selection(
        frame_id=science["frame_id"],
        obs_id=science["obs_id"],
        setup_key=key,
        spectrum=spectrum,
        bias=bias,
        flat=flat,
        arc=arc,
        flat_bias=flat_bias,
    )


def select_calibrations(
    science: Row,
    frames: Iterable[Row],
    settings: ReductionSettings,
    *,
    max_days: float = MAX_DAYS,
) -> Selection:
    """Calibrations for one science frame out of ``frames`` (any mix of frame types)."""
    return _select(science, _Candidates(frames), settings, max_days)


def select_all(
    frames: Sequence[Row],
    settings_of: Callable[[Row], ReductionSettings],
    *,
    science_ids: Iterable[int] | None = None,
    max_days: float = MAX_DAYS,
) -> list[Selection]:
    """Selections for the science frames among ``frames`` (or those in ``science_ids``),
    grouped by setup so that frames sharing calibrations come out together."""
    pool = _Candidates(frames)
    wanted = set(science_ids) if science_ids is not None else None
    science = [
        row
        for row in frames
        if row["frame_type"] in SCIENCE_TYPES
        and row.get("setup_key")
        and (wanted is None or row["frame_id"] in wanted)
    ]
    science.sort(key=lambda r: (r["setup_key"], r["mjd_obs"], r["frame_id"]))
    return [_select(row, pool, settings_of(row), max_days) for row in science]
