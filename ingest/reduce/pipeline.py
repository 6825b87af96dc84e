"""Reduce science frames into archived products: masters, reduced frames, spectra.

The work is a task graph in Dask's dict format (``key -> (function, *args)``, where an
argument naming another key receives its result) of pure steps: read a raw frame, combine
a master, calibrate, extract, calibrate wavelengths. :func:`run_graph` executes it in one
process for now; the same graph runs under ``dask.get`` unchanged. Only the driver talks
to the database, so the steps stay free to run on any worker.

What makes re-running cheap and safe:

- every planned product has an identity: its kind, the hash of its inputs (raw frames by
  checksum, products by their own identity) and the hash of the settings and method it
  depends on. A product whose identity is already in ``archive.products`` is reused, row
  and file untouched; other settings give a new version of the same subject and keep
  the old one. Settings a kind does not depend on do not touch it (a new extraction
  width re-extracts but keeps the masters and the reduced 2-D frame);
- files are written under a temporary name and renamed, then the product row and its
  provenance are inserted in one transaction; raw files are only read;
- every science frame ends with a row in ``archive.reduction_status``: reduced, waiting
  (and for which calibration) or failed (and why).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from astropy.io import fits
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.reduce.fitsio import write_atomic
from ingest.reduce.graph import Failed, Graph, run_graph
from ingest.reduce.selection import MAX_DAYS, SCIENCE_TYPES, Selection, readout_part, select_all
from ingest.reduce.settings import ReductionSettings, settings_from
from ingest.reduce.steps import (
    Built,
    bad_pixels,
    build_master_bias,
    build_master_flat,
    build_reduced,
    build_spectrum_1d,
    build_wavelength_calibrated,
    calibrate_arc,
    calibrate_spectrum,
    extract_spectrum,
    load_frame_product,
    load_template,
    read_header,
    read_raw,
)
from vo_service import __version__

SOFTWARE = f"vo-service {__version__}"

# Data levels as Goodman Live numbers them (0 is the raw frame).
LEVELS = {
    "master_bias": 1,
    "master_flat": 1,
    "reduced_image": 2,
    "reduced_spectrum_2d": 2,
    "spectrum_1d": 3,
    "wavelength_calibrated": 4,
}
# The settings each kind depends on: changing any other keeps the product.
SETTINGS_USED: dict[str, tuple[str, ...]] = {
    "master_bias": (),
    "master_flat": ("flat_normalisation", "saturation_threshold"),
    "reduced_image": ("cosmic_ray_method",),
    "reduced_spectrum_2d": ("cosmic_ray_method",),
    "spectrum_1d": ("extraction_type", "extraction_width"),
    "wavelength_calibrated": ("extraction_type", "extraction_width"),
}
# Part of the settings hash: bump one when its algorithm changes so old products are
# not reused as if they were made the new way.
METHODS = {
    "master_bias": "overscan fit, trimmed-mean 3-sigma stack on the noise model (1)",
    "master_flat": "bias-subtracted, saturated frames rejected, scaled stack, normalised (2)",
    "reduced_image": "overscan, trim, gain, bias, flat, cosmic rays, sky/PSF QA (2)",
    "reduced_spectrum_2d": "overscan, trim, gain, bias, flat, cosmic rays (2)",
    "spectrum_1d": "slit edges, brightest target, trace, sky bands, extraction (1)",
    "wavelength_calibrated": "arc along the trace, lamp template, Chebyshev, linear grid (1)",
}
SUFFIXES = {
    "reduced_image": "red",
    "reduced_spectrum_2d": "2d",
    "spectrum_1d": "1d",
    "wavelength_calibrated": "wcal",
}
Row = Mapping[str, Any]


# ------------------------------------------------------------------------------ plans


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Input:
    """One input of a planned product: a raw frame row or another planned product."""

    role: str  # progenitor, bias, flat or arc
    frame: Row | None = None
    product: ProductSpec | None = None

    @property
    def token(self) -> str:
        if self.frame is not None:
            return f"{self.role} frame {self.frame['sha256']}"
        assert self.product is not None
        return f"{self.role} product {self.product.identity}"


@dataclass(frozen=True, eq=False)
class ProductSpec:
    """A product as planned: enough to find it in the archive or to make it."""

    kind: str
    subject: str  # versions are counted per kind and subject
    inputs: tuple[Input, ...]
    settings: dict[str, Any]
    row: Row  # the science frame, or the first frame of a master
    setup_key: str
    night: str
    proposal_id: str | None
    inputs_hash: str = ""
    settings_hash: str = ""
    identity: str = ""

    def __post_init__(self) -> None:
        tokens = "\n".join(sorted(i.token for i in self.inputs))
        described = json.dumps({"method": METHODS[self.kind], **self.settings}, sort_keys=True)
        inputs_hash, settings_hash = _digest(tokens, 32), _digest(described, 16)
        object.__setattr__(self, "inputs_hash", inputs_hash)
        object.__setattr__(self, "settings_hash", settings_hash)
        object.__setattr__(
            self, "identity", _digest(f"{self.kind}|{inputs_hash}|{settings_hash}", 32)
        )

    @property
    def level(self) -> int:
        return LEVELS[self.kind]

    @property
    def products(self) -> list[ProductSpec]:
        return [i.product for i in self.inputs if i.product is not None]


def _majority(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    if not counts:
        return None
    return min(counts, key=lambda v: (-counts[v], v))


def _settings_of(kind: str, settings: ReductionSettings, *, imaging: bool = False) -> dict:
    values = {name: getattr(settings, name) for name in SETTINGS_USED[kind]}
    if kind == "master_flat" and imaging:
        values["flat_normalisation"] = "mean"  # the spectral fit has no meaning for images
    return values


def _master(
    kind: str, setup_key: str, rows: list[Row], settings: dict, bias: ProductSpec | None
) -> ProductSpec:
    inputs = [Input("progenitor", frame=r) for r in rows]
    if bias is not None:
        inputs.append(Input("bias", product=bias))
    night = _majority(r["night"] for r in rows) or rows[0]["night"]
    return ProductSpec(
        kind=kind,
        subject=f"{setup_key} {night}",
        inputs=tuple(inputs),
        settings=settings,
        row=min(rows, key=lambda r: r["mjd_obs"]),
        setup_key=setup_key,
        night=night,
        proposal_id=_majority(r.get("proposal_id") for r in rows),
    )


def plan_products(
    selection: Selection, frames: Mapping[int, Row], settings: ReductionSettings
) -> list[ProductSpec]:
    """Products for one ready science frame, inputs before the products that use them."""
    science = frames[selection.frame_id]
    imaging = not selection.spectrum
    planned: list[ProductSpec] = []
    master_bias = None
    if selection.bias.frame_ids:
        rows = [frames[i] for i in selection.bias.frame_ids]
        master_bias = _master("master_bias", selection.bias.setup_key, rows, {}, None)
        planned.append(master_bias)
    master_flat = None
    if selection.flat.frame_ids:
        flat_bias = None
        if selection.flat_bias is not None and selection.flat_bias.frame_ids:
            rows = [frames[i] for i in selection.flat_bias.frame_ids]
            flat_bias = _master("master_bias", selection.flat_bias.setup_key, rows, {}, None)
            planned.append(flat_bias)
        rows = [frames[i] for i in selection.flat.frame_ids]
        flat_settings = _settings_of("master_flat", settings, imaging=imaging)
        master_flat = _master("master_flat", selection.setup_key, rows, flat_settings, flat_bias)
        planned.append(master_flat)

    def product(kind: str, inputs: list[Input]) -> ProductSpec:
        spec = ProductSpec(
            kind=kind,
            subject=f"frame {science['frame_id']}",
            inputs=tuple(inputs),
            settings=_settings_of(kind, settings),
            row=science,
            setup_key=science["setup_key"],
            night=science["night"],
            proposal_id=science.get("proposal_id"),
        )
        planned.append(spec)
        return spec

    calibrations = [Input("progenitor", frame=science)]
    if master_bias is not None:
        calibrations.append(Input("bias", product=master_bias))
    if master_flat is not None:
        calibrations.append(Input("flat", product=master_flat))
    if imaging:
        product("reduced_image", calibrations)
        return _unique(planned)
    reduced = product("reduced_spectrum_2d", calibrations)
    extracted = product("spectrum_1d", [Input("progenitor", product=reduced)])
    assert selection.arc is not None
    arc = frames[selection.arc.frame_ids[0]]
    product(
        "wavelength_calibrated",
        [Input("progenitor", product=extracted), Input("arc", frame=arc)],
    )
    return _unique(planned)


def _unique(specs: list[ProductSpec]) -> list[ProductSpec]:
    seen: dict[str, ProductSpec] = {}
    for spec in specs:
        seen.setdefault(spec.identity, spec)
    return list(seen.values())


# ----------------------------------------------------------------------------- report


@dataclass
class ProductOutcome:
    kind: str
    product_id: int
    version: int
    file_name: str
    path: str
    made: bool  # False: an existing product was reused
    qa: dict[str, Any] = field(default_factory=dict)


@dataclass
class FrameOutcome:
    frame_id: int
    obs_id: str
    frame_type: str
    status: str  # reduced, waiting or failed
    message: str
    products: list[ProductOutcome] = field(default_factory=list)


@dataclass
class ReductionReport:
    frames: list[FrameOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # targets that named nothing to do
    elapsed_s: float = 0.0

    def by_status(self, status: str) -> list[FrameOutcome]:
        return [f for f in self.frames if f.status == status]

    @property
    def made(self) -> int:
        return len({p.product_id for f in self.frames for p in f.products if p.made})

    @property
    def reused(self) -> int:
        made = {p.product_id for f in self.frames for p in f.products if p.made}
        return len({p.product_id for f in self.frames for p in f.products} - made)

    def summary(self) -> str:
        frames = len(self.frames)
        return (
            f"{self.made} product{'s' * (self.made != 1)} made, {self.reused} reused; "
            f"{frames} science frame{'s' * (frames != 1)}: "
            f"{len(self.by_status('reduced'))} reduced, {len(self.by_status('waiting'))} "
            f"waiting, {len(self.by_status('failed'))} failed; {self.elapsed_s:.1f} s"
        )

    def __str__(self) -> str:
        lines: list[str] = [f"problem: {p}" for p in self.problems]
        for frame in self.frames:
            lines.append(f"{frame.status} {frame.obs_id} ({frame.frame_type})")
            lines.append(f"  {frame.message}")
            for p in frame.products:
                note = _qa_note(p.qa)
                lines.append(
                    f"  {'made  ' if p.made else 'reused'} {p.kind:<22} v{p.version:<3} "
                    f"{p.file_name}{'  ' + note if note else ''}"
                )
        lines.append(self.summary())
        return "\n".join(lines)


def _qa_note(qa: Mapping[str, Any]) -> str:
    parts = []
    if qa.get("wavecal_rms_px") is not None:
        parts.append(
            f"wavelength rms {qa['wavecal_rms_px']:.3f} px ({qa['wavecal_rms_angstrom']:.3f} A), "
            f"{qa['n_lines_used']} lines"
        )
    if qa.get("fwhm_arcsec") is not None:
        parts.append(f"FWHM {qa['fwhm_arcsec']:.2f} arcsec")
    if qa.get("n_stars") is not None:
        parts.append(f"{qa['n_stars']} sources")
    if qa.get("n_cosmics") is not None:
        parts.append(f"{qa['n_cosmics']} cosmic rays")
    if qa.get("n_combined") is not None:
        parts.append(f"{qa['n_combined']} frames")
    return "; ".join(parts)


# ------------------------------------------------------------------------- the driver

_FRAME_COLUMNS = (
    "frame_id", "obs_id", "file_name", "path", "sha256", "frame_type", "flat_kind", "object",
    "proposal_id", "filter", "grating", "wavmode", "setup_key", "night", "date_obs", "mjd_obs",
    "exptime", "ra", "dec",
)  # fmt: skip
_NIGHT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_QA_COLUMNS = (
    "em_min", "em_max", "n_combined", "n_cosmics", "sky_level", "sky_noise", "n_stars",
    "fwhm_arcsec", "trace_rms_px", "wavecal_rms_px", "wavecal_rms_angstrom", "n_lines_used",
    "n_lines_rejected",
)  # fmt: skip
_EXISTING = (
    "product_id, kind, inputs_hash, settings_hash, version, file_name, path, sha256, "
    + ", ".join(_QA_COLUMNS)
)


def _select_frames(where: str) -> str:
    columns = ", ".join(f'"{c}"' for c in _FRAME_COLUMNS)
    return f"SELECT {columns} FROM archive.frames WHERE {where}"


def _resolve_targets(
    conn: psycopg.Connection, targets: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Science frames named by night, obs_id, file name or path; and what named none."""
    found: dict[int, dict[str, Any]] = {}
    problems: list[str] = []
    cur = conn.cursor(row_factory=dict_row)
    for target in targets:
        if target == "waiting":
            rows = cur.execute(
                _select_frames(
                    "frame_id IN (SELECT frame_id FROM archive.reduction_status "
                    "WHERE status = 'waiting')"
                )
            ).fetchall()
        elif _NIGHT.match(target):
            rows = cur.execute(
                _select_frames("night = %s AND frame_type = ANY(%s)"),
                [target, list(SCIENCE_TYPES)],
            ).fetchall()
            if not rows:
                problems.append(f"{target}: no science frames of that night")
        else:
            path = str(Path(target).expanduser().resolve()) if "/" in target else target
            rows = cur.execute(
                _select_frames("obs_id = %s OR file_name = %s OR path = %s"),
                [target, target, path],
            ).fetchall()
            if not rows:
                problems.append(f"{target}: no such frame in the archive")
            science = [r for r in rows if r["frame_type"] in SCIENCE_TYPES]
            if rows and not science:
                problems.append(f"{target}: a {rows[0]['frame_type']} frame, not science")
            rows = science
        for row in rows:
            found[row["frame_id"]] = row
    return sorted(found.values(), key=lambda r: (r["mjd_obs"], r["frame_id"])), problems


def _candidates(conn: psycopg.Connection, science: Sequence[Row]) -> list[dict[str, Any]]:
    keys = sorted(
        {r["setup_key"] for r in science} | {readout_part(r["setup_key"]) for r in science}
    )
    lo = min(r["mjd_obs"] for r in science) - MAX_DAYS - 1
    hi = max(r["mjd_obs"] for r in science) + MAX_DAYS + 1
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            _select_frames(
                "frame_type IN ('bias', 'flat', 'arc') AND setup_key = ANY(%s) "
                "AND mjd_obs BETWEEN %s AND %s"
            ),
            [keys, lo, hi],
        )
        .fetchall()
    )


def _proposal_settings(
    conn: psycopg.Connection, science: Sequence[Row], overrides: Mapping[str, Any]
) -> dict[str | None, ReductionSettings | str]:
    """Effective settings per proposal (defaults, the proposal's choices, the command's),
    or the reason they are unusable."""
    proposals = sorted({r["proposal_id"] for r in science if r["proposal_id"]})
    stored = dict(
        conn.execute(
            "SELECT proposal_id, reduction_settings FROM auth.proposals "
            "WHERE proposal_id = ANY(%s)",
            [proposals],
        ).fetchall()
    )
    result: dict[str | None, ReductionSettings | str] = {None: settings_from(dict(overrides))}
    for code in proposals:
        try:
            result[code] = settings_from({**(stored.get(code) or {}), **overrides})
        except ValueError as exc:
            result[code] = f"failed: the reduction settings of {code} are unusable: {exc}"
    return result


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def _file_stem(spec: ProductSpec, version: int) -> Path:
    if spec.kind.startswith("master_"):
        readout = readout_part(spec.setup_key).split("|")[:3]
        tag = hashlib.sha256(spec.setup_key.encode()).hexdigest()[:6]
        name = f"{spec.kind}_{_slug('_'.join(readout))}_{tag}_v{version}.fits"
        return Path(spec.night) / "calibrations" / name
    obs_id = spec.row["obs_id"]
    return Path(spec.night) / obs_id / f"{obs_id}_{SUFFIXES[spec.kind]}_v{version}.fits"


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


class _Archive:
    """The driver's side: finds existing products, writes and registers new ones."""

    def __init__(self, conn: psycopg.Connection, home: Path) -> None:
        self.conn = conn
        self.root = Path(home) / "products"
        self.rows: dict[str, dict[str, Any]] = {}  # identity -> archive row
        self.made: set[str] = set()

    def lookup(self, specs: Iterable[ProductSpec]) -> None:
        wanted = {(s.kind, s.inputs_hash, s.settings_hash): s for s in specs}
        if not wanted:
            return
        with self.conn.transaction():
            rows = (
                self.conn.cursor(row_factory=dict_row)
                .execute(
                    f"SELECT {_EXISTING} FROM archive.products WHERE inputs_hash = ANY(%s)",
                    [sorted({k[1] for k in wanted})],
                )
                .fetchall()
            )
        for row in rows:
            spec = wanted.get((row["kind"], row["inputs_hash"], row["settings_hash"]))
            if spec is not None:
                self.rows[spec.identity] = row

    def register(self, spec: ProductSpec, built: Built) -> dict[str, Any]:
        """Write the file, then insert the product and its provenance in one transaction.

        The subject's advisory lock makes concurrent runs agree on version numbers and
        lets the second one find the first one's product instead of making it again.
        """
        assert built.hdul is not None
        conn = self.conn
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"vo-product|{spec.kind}|{spec.subject}"],
            )
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(
                f"SELECT {_EXISTING} FROM archive.products "
                "WHERE kind = %s AND inputs_hash = %s AND settings_hash = %s",
                [spec.kind, spec.inputs_hash, spec.settings_hash],
            ).fetchone()
            if row is not None:
                self.rows[spec.identity] = row
                return row
            version = cur.execute(
                "SELECT coalesce(max(version), 0) + 1 AS v FROM archive.products "
                "WHERE kind = %s AND subject = %s",
                [spec.kind, spec.subject],
            ).fetchone()["v"]
            path = self.root / _file_stem(spec, version)
            inputs = self._inputs(spec)
            self._provenance_cards(built.hdul[0].header, spec, version, inputs)
            size, sha = write_atomic(built.hdul, path)
            built.hdul = None  # written: nothing needs the HDUs any more
            science = spec.row
            is_master = spec.kind.startswith("master_")
            values = {
                "kind": spec.kind,
                "data_level": spec.level,
                "subject": spec.subject,
                "version": version,
                "frame_id": None if is_master else science["frame_id"],
                "obs_id": None if is_master else science["obs_id"],
                "file_name": path.name,
                "path": str(path),
                "file_size": size,
                "sha256": sha,
                "setup_key": spec.setup_key,
                "night": spec.night,
                "proposal_id": spec.proposal_id,
                "object": None if is_master else science["object"],
                "date_obs": science["date_obs"],
                "exptime": None if is_master else science["exptime"],
                "ra": None if is_master else science["ra"],
                "dec": None if is_master else science["dec"],
                "filter": science["filter"] if spec.kind == "reduced_image" else None,
                "grating": None
                if is_master or spec.kind == "reduced_image"
                else science["grating"],
                **{c: _finite(built.qa.get(c)) for c in _QA_COLUMNS},
                "inputs_hash": spec.inputs_hash,
                "settings_hash": spec.settings_hash,
                "settings": Jsonb(spec.settings),
                "software_version": SOFTWARE,
            }
            pos = None
            if values["ra"] is not None and values["dec"] is not None:
                pos = f"({values['ra']!r}d,{values['dec']!r}d)"
            names = list(values)
            columns = ", ".join(f'"{n}"' for n in names)
            params = ", ".join(f"%({n})s" for n in names)
            row = cur.execute(
                f"INSERT INTO archive.products ({columns}, pos, release_date, created_at) "
                f"VALUES ({params}, %(pos)s::spoint, "
                "auth.product_release_date(%(kind)s, %(date_obs)s, %(proposal_id)s, "
                "%(frame_id)s), "
                f"now() AT TIME ZONE 'UTC') RETURNING {_EXISTING}",
                {**values, "pos": pos},
            ).fetchone()
            cur.executemany(
                "INSERT INTO archive.provenance (product_id, input_kind, input_id, role) "
                "VALUES (%s, %s, %s, %s)",
                [(row["product_id"], kind, ident, role) for role, kind, ident, _, _ in inputs],
            )
        self.rows[spec.identity] = row
        self.made.add(spec.identity)
        return row

    def _inputs(self, spec: ProductSpec) -> list[tuple[str, str, int, str, str]]:
        """(role, input kind, id, file name, sha256) of every input, products registered."""
        out = []
        for item in spec.inputs:
            if item.frame is not None:
                f = item.frame
                out.append((item.role, "frame", f["frame_id"], f["file_name"], f["sha256"]))
            else:
                assert item.product is not None
                up = self.rows[item.product.identity]
                out.append((item.role, "product", up["product_id"], up["file_name"], up["sha256"]))
        return sorted(out, key=lambda i: (i[0] != "progenitor", i[0], i[3]))

    @staticmethod
    def _provenance_cards(
        header: fits.Header,
        spec: ProductSpec,
        version: int,
        inputs: list[tuple[str, str, int, str, str]],
    ) -> None:
        header["PRODKIND"] = (spec.kind, "product kind")
        header["PRODLVL"] = (spec.level, "1 master, 2 2-D, 3 1-D, 4 wavelength-cal.")
        header["PRODVER"] = (version, "version of this product of the same subject")
        header["PRODKEY"] = (spec.identity, "hash of kind, inputs and settings")
        header["SETHASH"] = (spec.settings_hash, "hash of the settings and method")
        header["PROCSOFT"] = (SOFTWARE, "software that made the product")
        header["PROCDATE"] = (datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "UTC")
        header["PROCMETH"] = METHODS[spec.kind]
        for name, value in spec.settings.items():
            header[f"HIERARCH SETTING {name.upper()}"] = value
        for n, (role, _kind, _ident, name, sha) in enumerate(inputs, start=1):
            # no comments: a long file name and a SHA-256 fill the card
            header[f"INP{n:03d}"] = f"{role} {name}"
            header[f"INS{n:03d}"] = sha
        named = {"bias": "MBIAS", "flat": "MFLAT", "arc": "ARCFILE"}
        for role, _kind, _ident, name, _sha in inputs:
            if role in named:
                header[named[role]] = (name, f"{role} used")


def _graph_for(
    specs: Sequence[ProductSpec],
    selection: Selection,
    frames: Mapping[int, Row],
    archive: _Archive,
    settings: ReductionSettings,
    home: Path,
    graph: Graph,
) -> None:
    """Add the steps making (or loading) ``specs`` to ``graph``; keys are shared, so
    masters and arcs used by several frames are made once."""

    def raw(row: Row) -> str:
        key = f"raw:{row['frame_id']}"
        graph.setdefault(key, (read_raw, row["path"]))
        return key

    def header(row: Row) -> str:
        key = f"header:{row['frame_id']}"
        graph.setdefault(key, (read_header, row["path"]))
        return key

    def value(spec: ProductSpec | None) -> str | None:
        """Key of the step giving the product's value: made here, or read back."""
        if spec is None:
            return None
        if spec.identity in archive.rows and spec.identity not in archive.made:
            key = f"load:{spec.identity}"
            graph.setdefault(key, (load_frame_product, archive.rows[spec.identity]["path"]))
            return key
        return f"build:{spec.identity}"

    def bpm(reduced: ProductSpec) -> str:
        """The bad-pixel mask of a reduced frame's masters (also used for its arc)."""
        bias, flat = _input(reduced, "bias"), _input(reduced, "flat")
        key = f"bpm:{bias.identity if bias else '-'}:{flat.identity if flat else '-'}"
        graph.setdefault(key, (bad_pixels, value(bias), value(flat)))
        return key

    by_kind = {s.kind: s for s in specs if not s.kind.startswith("master_")}
    science = frames[selection.frame_id]
    for spec in specs:
        key = f"build:{spec.identity}"
        if key in graph or spec.identity in archive.rows:
            continue
        raws = [raw(i.frame) for i in spec.inputs if i.frame is not None and i.role == "progenitor"]
        if spec.kind == "master_bias":
            graph[key] = (build_master_bias, raws)
        elif spec.kind == "master_flat":
            graph[key] = (
                build_master_flat,
                raws,
                value(_input(spec, "bias")),
                spec.settings["flat_normalisation"],
                spec.settings["saturation_threshold"] / 100.0,  # the setting is in per cent
            )
        elif spec.kind in ("reduced_image", "reduced_spectrum_2d"):
            graph[key] = (
                build_reduced,
                raws[0],
                value(_input(spec, "bias")),
                value(_input(spec, "flat")),
                bpm(spec),
                settings.cosmic_ray_method == "default",
                spec.kind == "reduced_image",
            )
        elif spec.kind == "spectrum_1d":
            extract = _extract_key(by_kind, graph, value, header, science, settings)
            graph[key] = (build_spectrum_1d, extract, header(science))
        elif spec.kind == "wavelength_calibrated":
            reduced = by_kind["reduced_spectrum_2d"]
            arc_row = next(i.frame for i in spec.inputs if i.role == "arc" and i.frame is not None)
            mask = bpm(reduced)
            arc = f"arc:{arc_row['frame_id']}:{mask}"
            graph.setdefault(
                arc,
                (
                    calibrate_arc,
                    raw(arc_row),
                    value(_input(reduced, "bias")),
                    value(_input(reduced, "flat")),
                    mask,
                ),
            )
            lamp = str(arc_row["object"] or "")  # Goodman names the lamp in OBJECT
            template = f"template:{science['wavmode']}:{lamp}"
            graph.setdefault(template, (load_template, str(home), science["wavmode"], lamp))
            calibrated = f"calibrated:{spec.identity}"
            extract = _extract_key(by_kind, graph, value, header, science, settings)
            graph[calibrated] = (calibrate_spectrum, extract, arc, template)
            graph[key] = (build_wavelength_calibrated, calibrated, header(science))


def _input(spec: ProductSpec, role: str) -> ProductSpec | None:
    return next((i.product for i in spec.inputs if i.role == role), None)


def _extract_key(
    by_kind: Mapping[str, ProductSpec],
    graph: Graph,
    value: Callable[[ProductSpec | None], str | None],
    header: Callable[[Row], str],
    science: Row,
    settings: ReductionSettings,
) -> str:
    spectrum_1d = by_kind["spectrum_1d"]
    key = f"extract:{spectrum_1d.identity}"
    graph.setdefault(
        key,
        (
            extract_spectrum,
            value(by_kind["reduced_spectrum_2d"]),
            header(science),
            settings.extraction_type,
            settings.extraction_width,
        ),
    )
    return key


def _record_status(
    conn: psycopg.Connection, outcomes: Sequence[FrameOutcome], hashes: Mapping[int, str | None]
) -> None:
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO archive.reduction_status (frame_id, obs_id, status, message, "
            "product_id, settings_hash, updated_at) VALUES (%s, %s, %s, %s, %s, %s, "
            "now() AT TIME ZONE 'UTC') ON CONFLICT (frame_id) DO UPDATE SET "
            "obs_id = excluded.obs_id, status = excluded.status, message = excluded.message, "
            "product_id = excluded.product_id, settings_hash = excluded.settings_hash, "
            "updated_at = excluded.updated_at",
            [
                (
                    o.frame_id,
                    o.obs_id,
                    o.status,
                    o.message,
                    o.products[-1].product_id if o.products else None,
                    hashes.get(o.frame_id),
                )
                for o in outcomes
            ],
        )


def _settings_digest(settings: ReductionSettings) -> str:
    return _digest(json.dumps(settings.as_dict(), sort_keys=True), 16)


def reduce_frames(
    conn: psycopg.Connection,
    science: Sequence[Row],
    settings_overrides: Mapping[str, Any] | None,
    home: Path,
) -> ReductionReport:
    """Reduce the given science frame rows (as ``_FRAME_COLUMNS`` selects them)."""
    started = time.perf_counter()
    report = ReductionReport()
    if not science:
        return report
    with conn.transaction():
        per_proposal = _proposal_settings(conn, science, settings_overrides or {})
        calibrations = _candidates(conn, science)
    frames = {r["frame_id"]: r for r in [*calibrations, *science]}

    unusable: dict[int, str] = {}

    def settings_of(row: Row) -> ReductionSettings:
        found = per_proposal.get(row["proposal_id"], per_proposal[None])
        if isinstance(found, str):
            unusable[row["frame_id"]] = found
            return ReductionSettings()
        return found

    selections = select_all(
        list(frames.values()), settings_of, science_ids=[r["frame_id"] for r in science]
    )
    archive = _Archive(conn, home)
    plans: dict[int, list[ProductSpec]] = {}
    for sel in selections:
        if sel.ready and sel.frame_id not in unusable:
            plans[sel.frame_id] = plan_products(sel, frames, settings_of(frames[sel.frame_id]))
    archive.lookup(s for specs in plans.values() for s in specs)

    graph: Graph = {}
    for sel in selections:
        if sel.frame_id in plans:
            _graph_for(
                plans[sel.frame_id],
                sel,
                frames,
                archive,
                settings_of(frames[sel.frame_id]),
                home,
                graph,
            )
    specs = {s.identity: s for specs in plans.values() for s in specs}
    pending: dict[str, Built] = {}
    failures: dict[str, str] = {}

    def on_done(key: str, result: Any) -> None:
        """Register products as soon as they and everything they use are made."""
        if not key.startswith("build:"):
            return
        identity = key.removeprefix("build:")
        if isinstance(result, Failed):
            failures[identity] = result.error
            return
        pending[identity] = result
        progress = True
        while progress:
            progress = False
            for ident, built in list(pending.items()):
                spec = specs[ident]
                if all(p.identity in archive.rows for p in spec.products):
                    try:
                        archive.register(spec, built)
                    except Exception as exc:  # a failed write must not stop the night
                        failures[ident] = f"{type(exc).__name__}: {exc}"
                    del pending[ident]
                    progress = True

    targets = [k for k in graph if k.startswith("build:")]
    run_graph(graph, targets, on_done, retain=False)

    hashes: dict[int, str | None] = {}
    for sel in selections:
        row = frames[sel.frame_id]
        hashes[sel.frame_id] = _settings_digest(settings_of(row))
        outcome = FrameOutcome(sel.frame_id, sel.obs_id, row["frame_type"], sel.status, sel.message)
        if sel.frame_id in unusable:
            outcome.status, outcome.message = "failed", unusable[sel.frame_id]
        elif sel.frame_id in plans:
            errors = []
            for spec in plans[sel.frame_id]:
                found = archive.rows.get(spec.identity)
                if found is None:
                    errors.append(f"{spec.kind}: {failures.get(spec.identity, 'inputs failed')}")
                    continue
                outcome.products.append(
                    ProductOutcome(
                        spec.kind,
                        found["product_id"],
                        found["version"],
                        found["file_name"],
                        found["path"],
                        spec.identity in archive.made,
                        {c: found.get(c) for c in _QA_COLUMNS if found.get(c) is not None},
                    )
                )
            if errors:
                first = next((e for e in errors if "inputs failed" not in e), errors[0])
                outcome.status, outcome.message = "failed", f"failed: {first}"
            else:
                outcome.status = "reduced"
        report.frames.append(outcome)
    report.frames.sort(key=lambda o: (frames[o.frame_id]["mjd_obs"], o.frame_id))
    _record_status(conn, report.frames, hashes)
    report.elapsed_s = time.perf_counter() - started
    return report


def reduce_command(
    conn: psycopg.Connection,
    targets: list[str],
    settings_overrides: dict[str, Any] | None,
    home: Path,
) -> ReductionReport:
    """Reduce nights (``YYYY-MM-DD``), frames (obs_id, file name or path) and, for the
    target ``waiting``, every frame still waiting for calibrations.

    ``conn`` is the service's own (admin) connection, outside any transaction: every
    product commits on its own, so an interrupted night keeps what it finished.
    ``settings_overrides`` apply on top of each proposal's stored settings; bad values
    raise ValueError before anything is done. ``str(report)`` prints a summary.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("reduce_command needs a connection outside any transaction")
    settings_from(dict(settings_overrides or {}))  # fail early on a bad override
    with conn.transaction():
        science, problems = _resolve_targets(conn, targets)
    report = reduce_frames(conn, science, settings_overrides, Path(home))
    report.problems[:0] = problems
    return report
