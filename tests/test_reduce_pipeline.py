"""The reduction driver on the shared simulated night: products, provenance, reuse,
versions, waiting frames and access rules, checked in the database and the files.

The precision of the engine is tested in test_reduce_ccd/test_reduce_spectra; here the
figures only have to show that the right frames went through the right steps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from astropy.io import fits
from numpy.polynomial import Polynomial, chebyshev
from psycopg.rows import dict_row

from ingest.loader import ingest
from ingest.reduce.graph import Failed, run_graph
from ingest.reduce.pipeline import ReductionReport, reduce_command
from ingest.reduce.selection import select_calibrations
from ingest.reduce.settings import ReductionSettings
from ingest.simulate import NightSummary, simulate_night
from vo_service.auth import accounts
from vo_service.config import Settings

PROPOSAL = "REDUCE-P1"
WAIT_DATE = "2024-03-20"  # another night than the shared one, so night targets never mix


def _truth(night: NightSummary) -> dict[str, Any]:
    return json.loads(night.truth_path.read_text())


def _obs_ids(night: NightSummary, kind: str) -> list[str]:
    return sorted(p.name.split(".")[0] for p in night.files if f"_{kind}_" in p.name)


def _rows(conn: psycopg.Connection, query: str, params: Any = ()) -> list[dict[str, Any]]:
    with conn.transaction():
        return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


def _products(conn: psycopg.Connection, obs_id: str) -> dict[str, dict[str, Any]]:
    """The newest version of each kind made for a science frame, masters included."""
    rows = _rows(
        conn,
        "WITH mine AS (SELECT DISTINCT p.product_id FROM archive.products p "
        "WHERE p.obs_id = %(o)s UNION SELECT v.input_id FROM archive.provenance v "
        "JOIN archive.products p ON p.product_id = v.product_id WHERE p.obs_id = %(o)s "
        "AND v.input_kind = 'product' UNION SELECT v2.input_id FROM archive.provenance v2 "
        "JOIN archive.provenance v ON v.input_kind = 'product' AND v.input_id = v2.product_id "
        "JOIN archive.products p ON p.product_id = v.product_id WHERE p.obs_id = %(o)s "
        "AND v2.input_kind = 'product') "
        "SELECT * FROM archive.products WHERE product_id IN (SELECT * FROM mine) "
        "ORDER BY version",
        {"o": obs_id},
    )
    return {r["kind"]: r for r in rows}


def _inputs(conn: psycopg.Connection, product_id: int) -> list[tuple[str, str, str]]:
    """(role, input kind, name) of a product's inputs."""
    rows = _rows(
        conn,
        "SELECT v.role, v.input_kind, coalesce(f.obs_id, p.kind) AS name "
        "FROM archive.provenance v "
        "LEFT JOIN archive.frames f ON v.input_kind = 'frame' AND f.frame_id = v.input_id "
        "LEFT JOIN archive.products p ON v.input_kind = 'product' AND p.product_id = v.input_id "
        "WHERE v.product_id = %s ORDER BY 1, 3",
        [product_id],
    )
    return [(r["role"], r["input_kind"], r["name"]) for r in rows]


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reduced(db_url: str, night: NightSummary, cfg: Settings) -> ReductionReport:
    with psycopg.connect(db_url) as conn:
        return reduce_command(conn, [_truth(night)["date"]], None, cfg.home)


# ----------------------------------------------------------------------------- selection


def _row(frame_id: int, frame_type: str, setup_key: str, night: str, mjd: float, **kw: Any) -> dict:
    return {
        "frame_id": frame_id,
        "obs_id": f"f{frame_id:03d}",
        "frame_type": frame_type,
        "flat_kind": kw.get("flat_kind"),
        "setup_key": setup_key,
        "night": night,
        "mjd_obs": mjd,
    }


def test_selection_picks_nearest_matching_calibrations_and_says_why() -> None:
    readout, other_readout = "Red|2x2|Spec|g1.48|rn3.89", "Red|1x1|Spec|g1.48|rn3.89"
    key = readout + "||SYZY_400|-|1.0_LONG_SLIT|11.60|5.80"
    other_optics = readout + "||SYZY_600|-|1.0_LONG_SLIT|15.00|7.50"
    m = 60384.1  # 2024-03-16 02:24 UTC, night 2024-03-15
    science = _row(1, "science_spectrum", key, "2024-03-15", m)
    frames = [science]
    frames += [_row(10 + i, "bias", readout, "2024-03-14", m - 1.2) for i in range(5)]
    frames += [_row(20 + i, "bias", readout, "2024-03-15", m - 0.3) for i in range(2)]
    frames += [_row(30 + i, "bias", other_readout, "2024-03-15", m - 0.3) for i in range(5)]
    frames += [
        _row(40 + i, "flat", key, "2024-03-15", m - 0.25, flat_kind="lamp") for i in range(3)
    ]
    frames += [_row(50 + i, "flat", other_optics, "2024-03-15", m - 0.2) for i in range(5)]
    frames += [_row(60 + i, "flat", key, "2024-03-15", m - 0.2, flat_kind="sky") for i in range(5)]
    frames += [_row(80 + i, "flat", key, "2024-03-15", m - 0.2, flat_kind="dome") for i in range(4)]
    frames += [
        _row(70, "arc", key, "2024-03-15", m - 0.02),  # 29 min before
        _row(71, "arc", key, "2024-03-15", m + 0.01),  # 14 min after: nearest
        _row(72, "arc", other_optics, "2024-03-15", m + 0.0001),
        _row(73, "arc", key, "2024-03-16", m + 0.9),
    ]
    sel = select_calibrations(science, frames, ReductionSettings())
    assert sel.ready and sel.status == "ready"
    # two biases of its own readout that night are too few: the previous night's five
    assert sel.bias.frame_ids == tuple(range(10, 15))
    assert "1 night(s) earlier" in sel.bias.reason and "only 2" in sel.bias.reason
    # lamp flats of exactly this setup, never mixed with its dome flats; no sky flats
    # (they only correct the illumination) and no flats of another grating
    assert sel.flat.frame_ids == (40, 41, 42)
    assert sel.flat.reason.startswith("3 lamp flats of the same night 2024-03-15, taken 6.0 h")
    assert sel.arc is not None and sel.arc.frame_ids == (71,)
    assert "14 min after" in sel.arc.reason
    assert sel.flat_bias is not None and sel.flat_bias.frame_ids == tuple(range(10, 15))
    assert "bias: 5 biases of 2024-03-14" in sel.message

    # fewer frames needed: the same night wins over a bigger set of another night
    sel = select_calibrations(science, frames, ReductionSettings(min_biases=2))
    assert sel.bias.frame_ids == (20, 21) and "same night" in sel.bias.reason

    # nothing for this readout: waiting, and saying for what
    no_bias = [f for f in frames if not (f["frame_type"] == "bias" and f["setup_key"] == readout)]
    sel = select_calibrations(science, no_bias, ReductionSettings())
    assert not sel.ready and sel.status == "waiting"
    assert sel.message == f"waiting: no bias for setup {readout}"
    # ... unless biases are ignored: then flats are used without a bias too
    sel = select_calibrations(science, no_bias, ReductionSettings(ignore_bias=True))
    assert sel.ready and sel.bias.frame_ids == () and "ignore_bias" in sel.bias.reason
    sel = select_calibrations(science, frames, ReductionSettings(min_flats=4))
    assert sel.flat.frame_ids == (80, 81, 82, 83) and "4 dome flats" in sel.flat.reason
    sel = select_calibrations(science, frames, ReductionSettings(min_flats=5))
    assert sel.message == (
        f"waiting: not enough flat frames for setup {key}: 5 needed, at most 4 of one kind "
        "in one night within 30 days"
    )
    sel = select_calibrations(science, frames[:-4], ReductionSettings())
    assert sel.message == f"waiting: no arc for setup {key}"


def test_run_graph_hands_failures_on_and_carries_on() -> None:
    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    graph = {
        "a": (int, "1"),
        "b": (boom, "a"),
        "c": (lambda x: x + 1, "b"),
        "d": (sum, ["a", "a"]),
    }
    done: list[str] = []
    out = run_graph(graph, ["c", "d"], lambda key, _value: done.append(key))
    assert out["d"] == 2
    assert isinstance(out["c"], Failed) and out["c"].key == "b" and "bad 1" in out["c"].error
    assert sorted(done) == ["a", "b", "c", "d"]


def test_run_graph_without_retaining_drops_targets_once_handed_over() -> None:
    """A target is dropped after ``on_done`` unless another step still needs it."""
    alive: list[int] = []

    class Tracked:
        def __init__(self, n: int) -> None:
            self.n = n
            alive.append(n)

        def __del__(self) -> None:
            alive.remove(self.n)

    seen: list[tuple[str, list[int]]] = []
    graph = {
        "a": (Tracked, 1),
        "b": (lambda a: Tracked(a.n + 1), "a"),
        "c": (lambda a: Tracked(a.n + 2), "a"),
    }
    out = run_graph(
        graph, ["a", "b", "c"], lambda key, _v: seen.append((key, sorted(alive))), retain=False
    )
    assert out == {}
    # "a" is a target too, but stays until "c" no longer needs it; "b" goes before "c"
    assert seen == [("a", [1]), ("b", [1, 2]), ("c", [1, 3])]
    assert alive == []


# ---------------------------------------------------------------------------- the night


def test_night_products_levels_and_provenance(
    conn: psycopg.Connection, night: NightSummary, reduced: ReductionReport
) -> None:
    spectra = _obs_ids(night, "science_spectrum")
    outcome = {f.obs_id: f for f in reduced.frames}
    for obs_id in spectra:
        assert outcome[obs_id].status == "reduced", outcome[obs_id].message
    for obs_id in _obs_ids(night, "science_image"):  # no imaging biases that night
        assert outcome[obs_id].status == "waiting"
        assert outcome[obs_id].message.startswith("waiting: no bias for setup Red|2x2|Imaging")
    products = _products(conn, spectra[0])
    levels = {kind: row["data_level"] for kind, row in products.items()}
    assert levels == {
        "master_bias": 1,
        "master_flat": 1,
        "reduced_spectrum_2d": 2,
        "spectrum_1d": 3,
        "wavelength_calibrated": 4,
    }
    bias = _obs_ids(night, "bias")
    flats = _obs_ids(night, "flat")
    assert _inputs(conn, products["master_bias"]["product_id"]) == [
        ("progenitor", "frame", b) for b in bias
    ]
    assert _inputs(conn, products["master_flat"]["product_id"]) == [
        ("bias", "product", "master_bias"),
        *[("progenitor", "frame", f) for f in flats],
    ]
    assert _inputs(conn, products["reduced_spectrum_2d"]["product_id"]) == [
        ("bias", "product", "master_bias"),
        ("flat", "product", "master_flat"),
        ("progenitor", "frame", spectra[0]),
    ]
    assert _inputs(conn, products["spectrum_1d"]["product_id"]) == [
        ("progenitor", "product", "reduced_spectrum_2d")
    ]
    arcs = _obs_ids(night, "arc")
    assert _inputs(conn, products["wavelength_calibrated"]["product_id"]) == [
        ("arc", "frame", arcs[0]),
        ("progenitor", "product", "spectrum_1d"),
    ]
    # one master per setup and night, shared by every spectrum
    masters = _rows(
        conn,
        "SELECT kind, count(*) AS n FROM archive.products "
        "WHERE kind LIKE 'master_%%' AND night = %s GROUP BY kind",
        [_truth(night)["date"]],
    )
    assert {r["kind"]: r["n"] for r in masters} == {"master_bias": 1, "master_flat": 1}
    wcal = products["wavelength_calibrated"]
    assert 0 < wcal["wavecal_rms_px"] < 0.2 and wcal["n_lines_used"] >= 30
    assert wcal["em_min"] == pytest.approx(3.04e-7, abs=1e-8)
    assert wcal["em_max"] == pytest.approx(7.06e-7, abs=1e-8)
    assert products["reduced_spectrum_2d"]["n_cosmics"] > 100
    status = _rows(
        conn,
        "SELECT status, message, product_id FROM archive.reduction_status WHERE obs_id = %s",
        [spectra[0]],
    )[0]
    assert status["status"] == "reduced" and status["product_id"] == wcal["product_id"]
    assert "10 biases of the same night" in status["message"]
    print(reduced)


def test_each_spectrum_uses_the_nearest_arc(
    conn: psycopg.Connection, night: NightSummary, reduced: ReductionReport
) -> None:
    truth = _truth(night)
    arcs = {f["file"].split(".")[0]: f["date_obs"] for f in truth["frames"] if f["kind"] == "arc"}
    for frame in truth["frames"]:
        if frame["kind"] != "science_spectrum":
            continue
        obs_id = frame["file"].split(".")[0]
        nearest = min(
            arcs, key=lambda a: abs(np.datetime64(arcs[a]) - np.datetime64(frame["date_obs"]))
        )
        wcal = _products(conn, obs_id)["wavelength_calibrated"]
        assert ("arc", "frame", nearest) in _inputs(conn, wcal["product_id"])
        message = next(f.message for f in reduced.frames if f.obs_id == obs_id)
        assert f"arc: {nearest} taken" in message and "the nearest of the same night" in message


def test_files_carry_provenance_and_raw_frames_are_untouched(
    conn: psycopg.Connection, cfg: Settings, night: NightSummary, reduced: ReductionReport
) -> None:
    products = _products(conn, _obs_ids(night, "science_spectrum")[0])
    for row in products.values():
        assert _sha256(row["path"]) == row["sha256"]
        assert Path(row["path"]).stat().st_size == row["file_size"]
        assert Path(row["path"]).is_relative_to(cfg.home / "products")
        assert row["release_date"] is not None and row["software_version"].startswith("vo-service")
    with fits.open(products["reduced_spectrum_2d"]["path"], checksum=True) as hdul:
        h = hdul[0].header
        assert [x.name for x in hdul] == ["PRIMARY", "SCI", "ERR", "MASK"]
        assert h["PRODKIND"] == "reduced_spectrum_2d" and h["PRODLVL"] == 2 and h["PRODVER"] == 1
        assert h["MBIAS"] == products["master_bias"]["file_name"]
        assert h["MFLAT"] == products["master_flat"]["file_name"]
        assert h["INP001"].startswith("progenitor 0") and len(h["INS001"]) == 64
        assert h["SETTING COSMIC_RAY_METHOD"] == "default" and h["BUNIT"] == "electron"
        assert h["PROCSOFT"].startswith("vo-service") and "OVSCMETH" in h and "CRMETHOD" in h
    with fits.open(products["wavelength_calibrated"]["path"]) as hdul:
        h = hdul[0].header
        assert h["PRODLVL"] == 4 and h["ARCFILE"].endswith(".fits") and h["WSOLNUSE"] >= 30
        assert h["SETTING EXTRACTION_WIDTH"] == 2.0 and h["CTYPE1"] == "WAVE"
        assert h["INP001"] == f"progenitor {products['spectrum_1d']['file_name']}"
    raw = _rows(
        conn, "SELECT path, sha256 FROM archive.frames WHERE path LIKE %s", [f"{night.outdir}/%"]
    )
    assert len(raw) == len(night.files)
    assert all(_sha256(r["path"]) == r["sha256"] for r in raw)


def test_wavelengths_match_the_simulator_truth(
    conn: psycopg.Connection, night: NightSummary, reduced: ReductionReport
) -> None:
    truth = _truth(night)
    true = Polynomial(truth["spectroscopy"]["wavelength_solution"]["coefficients"])
    frame = next(f for f in truth["frames"] if f["kind"] == "science_spectrum")
    path = _products(conn, frame["file"].split(".")[0])["wavelength_calibrated"]["path"]
    with fits.open(path) as hdul:
        h = hdul[0].header
        flux = np.asarray(hdul[0].data, dtype=float)
        wave = h["CRVAL1"] + h["CDELT1"] * (np.arange(flux.size) + 1 - h["CRPIX1"])
        coeffs = [h[f"WSOLC{i:03d}"] for i in range(h["WSOLORD"] + 1)]
        lo, hi = h["WSOLDLO"], h["WSOLDHI"]
    trimsec = fits.getheader(night.outdir / frame["file"])["TRIMSEC"]
    x0 = int(trimsec.strip("[").split(":")[0]) - 1  # raw column of the product's pixel 0
    xs = np.arange(lo, hi + 1)
    solved = chebyshev.chebval((2 * xs - (lo + hi)) / (hi - lo), coeffs)
    error = np.abs(solved - true(xs + x0))
    assert error.max() < 0.2, error.max()  # Å (measured 0.01-0.03); the engine tests are strict
    for line in frame["emission_lines"]:
        if line["name"] not in ("[OIII]5007", "Halpha"):
            continue
        near = np.abs(wave - line["observed_wavelength_A"]) < 15
        peak = wave[near][np.argmax(flux[near])]
        assert abs(peak - line["observed_wavelength_A"]) < 2.0, line["name"]  # one ~2 Å bin


def test_rerunning_reuses_rows_and_files(
    db_url: str, cfg: Settings, night: NightSummary, reduced: ReductionReport
) -> None:
    before = {
        p.path: (p.product_id, Path(p.path).stat().st_mtime_ns)
        for f in reduced.frames
        for p in f.products
    }
    with psycopg.connect(db_url) as conn:
        again = reduce_command(conn, [_truth(night)["date"]], None, cfg.home)
    assert again.made == 0 and again.reused == len(before) > 0
    after = {
        p.path: (p.product_id, Path(p.path).stat().st_mtime_ns)
        for f in again.frames
        for p in f.products
    }
    assert after == before
    assert again.elapsed_s < 2.0


def test_targets_naming_nothing_are_reported(
    db_url: str, cfg: Settings, night: NightSummary
) -> None:
    bias = _obs_ids(night, "bias")[0]
    with psycopg.connect(db_url) as conn:
        report = reduce_command(conn, ["no-such-frame", bias, "1999-01-01"], None, cfg.home)
        assert report.frames == [] and report.problems == [
            "no-such-frame: no such frame in the archive",
            f"{bias}: a bias frame, not science",
            "1999-01-01: no science frames of that night",
        ]
        with pytest.raises(ValueError, match="extraction_width"):
            reduce_command(conn, [bias], {"extraction_width": 99}, cfg.home)
    assert str(report).splitlines()[-1].startswith("0 products made, 0 reused; 0 science")


def test_changed_settings_make_a_new_version_and_keep_the_old(
    db_url: str, cfg: Settings, night: NightSummary, reduced: ReductionReport
) -> None:
    obs_id = _obs_ids(night, "science_spectrum")[1]
    with psycopg.connect(db_url) as conn:
        old = _products(conn, obs_id)
        report = reduce_command(conn, [obs_id], {"extraction_width": 2.5}, cfg.home)
        new = _products(conn, obs_id)
        versions = _rows(
            conn,
            "SELECT kind, version, path FROM archive.products "
            "WHERE obs_id = %s ORDER BY kind, version",
            [obs_id],
        )
    made = {p.kind: p.made for p in report.frames[0].products}
    # the masters and the 2-D frame do not depend on the extraction width
    assert made == {
        "master_bias": False,
        "master_flat": False,
        "reduced_spectrum_2d": False,
        "spectrum_1d": True,
        "wavelength_calibrated": True,
    }
    for kind in ("spectrum_1d", "wavelength_calibrated"):
        assert new[kind]["version"] == old[kind]["version"] + 1
        assert new[kind]["settings_hash"] != old[kind]["settings_hash"]
        assert (
            Path(old[kind]["path"]).is_file() and _sha256(old[kind]["path"]) == old[kind]["sha256"]
        )
        with fits.open(new[kind]["path"]) as hdul:
            assert hdul[0].header["SETTING EXTRACTION_WIDTH"] == 2.5
    assert new["reduced_spectrum_2d"]["product_id"] == old["reduced_spectrum_2d"]["product_id"]
    assert [(v["kind"], v["version"]) for v in versions].count(("spectrum_1d", 1)) == 1
    assert ("spectrum_1d", 2) in [(v["kind"], v["version"]) for v in versions]


# -------------------------------------------------- a frame waiting for its calibrations


@pytest.fixture(scope="module")
def waiting_night(
    db_url: str, cfg: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """An image and its biases read out in another mode (gain 1.54, read noise 3.45) than
    the shared night, of a proprietary proposal whose stored settings ignore flats."""

    async def people() -> int:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn, aconn.transaction():
            uid = await accounts.add_user(aconn, "reducer", "reducer@example.org", None)
            await accounts.add_proposal(aconn, PROPOSAL, "reducer", proprietary_months=120)
            await aconn.execute(
                "UPDATE auth.proposals SET reduction_settings = %s WHERE proposal_id = %s",
                ['{"ignore_flats": true}', PROPOSAL],
            )
            return uid

    user_id = asyncio.run(people())
    base = tmp_path_factory.mktemp("waiting")
    summary = simulate_night(
        base / "sim",
        seed=5,
        binning=2,
        home=cfg.home,
        n_bias=3,
        n_flat=0,
        n_arc=0,
        n_science_spectra=0,
        n_science_images=1,
        date=WAIT_DATE,
    )
    folders = {"science": base / "science", "bias": base / "bias"}
    for folder in folders.values():
        folder.mkdir()
    for source in summary.files:
        kind = "bias" if "_bias_" in source.name else "science"
        target = folders[kind] / f"WAIT-{source.name}"
        shutil.copy(source, target)
        with fits.open(target, mode="update") as hdul:
            hdul[0].header.update(GAIN=1.54, RDNOISE=3.45, PROPID=PROPOSAL)
    yield {
        "folders": folders,
        "truth": json.loads(summary.truth_path.read_text()),
        "user_id": user_id,
        "image": next(f"WAIT-{p.stem}" for p in summary.files if "_science_image_" in p.name),
    }
    with psycopg.connect(db_url) as conn, conn.transaction():
        conn.execute(
            "DELETE FROM archive.provenance WHERE product_id IN "
            "(SELECT product_id FROM archive.products WHERE proposal_id = %s)",
            [PROPOSAL],
        )
        conn.execute("DELETE FROM archive.products WHERE proposal_id = %s", [PROPOSAL])
        conn.execute("DELETE FROM archive.reduction_status WHERE obs_id LIKE 'WAIT-%'")
        conn.execute("DELETE FROM archive.frames WHERE obs_id LIKE 'WAIT-%'")
        conn.execute("DELETE FROM auth.memberships WHERE proposal_id = %s", [PROPOSAL])
        conn.execute("DELETE FROM auth.proposals WHERE proposal_id = %s", [PROPOSAL])
        conn.execute("DELETE FROM auth.users WHERE user_id = %s", [user_id])


def _as_reader(
    conn: psycopg.Connection, role: str, query: str, params: Any = (), user_id: int | None = None
) -> list[tuple]:
    """``query`` as the TAP query role sees it, for an anonymous or a named user."""
    with conn.transaction():
        conn.execute(
            "SELECT set_config('vo.user_id', %s, true)", ["" if user_id is None else str(user_id)]
        )
        conn.execute(f'SET LOCAL ROLE "{role}"')
        return conn.execute(query, params).fetchall()


def test_frame_waits_for_biases_then_is_reduced_and_stays_proprietary(
    conn: psycopg.Connection, cfg: Settings, waiting_night: dict[str, Any]
) -> None:
    image = waiting_night["image"]
    readout = "Red|2x2|Imaging 2x2|g1.54|rn3.45"
    assert not ingest(conn, [waiting_night["folders"]["science"]], progress=False).quarantined
    first = reduce_command(conn, [image], None, cfg.home)
    assert [(f.obs_id, f.status) for f in first.frames] == [(image, "waiting")]
    assert first.frames[0].message == f"waiting: no bias for setup {readout}"
    assert first.made == 0 and first.frames[0].products == []
    status = _rows(
        conn,
        "SELECT status, message, product_id FROM archive.reduction_status WHERE obs_id = %s",
        [image],
    )[0]
    assert status == {"status": "waiting", "message": first.frames[0].message, "product_id": None}

    assert not ingest(conn, [waiting_night["folders"]["bias"]], progress=False).quarantined
    second = reduce_command(conn, ["waiting"], None, cfg.home)  # every waiting frame
    outcome = {f.obs_id: f for f in second.frames}
    assert outcome[image].status == "reduced"
    assert "3 biases of the same night" in outcome[image].message
    assert "ignored (ignore_flats is set)" in outcome[image].message  # the proposal's setting
    assert {f.status for f in second.frames if f.obs_id != image} == {"waiting"}
    products = _products(conn, image)
    assert set(products) == {"master_bias", "reduced_image"}
    master, red = products["master_bias"], products["reduced_image"]
    assert (master["data_level"], red["data_level"]) == (1, 2)
    assert master["setup_key"] == readout and master["n_combined"] == 3
    assert _inputs(conn, red["product_id"]) == [
        ("bias", "product", "master_bias"),
        ("progenitor", "frame", image),
    ]
    # image QA against the simulator
    frame = next(f for f in waiting_night["truth"]["frames"] if f["kind"] == "science_image")
    assert red["fwhm_arcsec"] == pytest.approx(frame["seeing_arcsec"], rel=0.15)
    assert red["sky_level"] == pytest.approx(frame["sky_electrons_per_px"], rel=0.1)
    assert red["n_stars"] > 20 and red["sky_noise"] > 0 and red["filter"] == frame["filter"]
    assert red["proposal_id"] == PROPOSAL and red["release_date"].year >= 2034
    assert (
        _rows(conn, "SELECT status FROM archive.reduction_status WHERE obs_id = %s", [image])[0][
            "status"
        ]
        == "reduced"
    )

    # access: the reduced image, its provenance and its status are proprietary; the
    # master bias (a calibration) is public at once
    role = cfg.query_role
    ids = [master["product_id"], red["product_id"]]
    anonymous = _as_reader(
        conn, role, "SELECT product_id FROM archive.products WHERE product_id = ANY(%s)", [ids]
    )
    assert anonymous == [(master["product_id"],)]
    assert (
        _as_reader(
            conn,
            role,
            "SELECT * FROM archive.provenance WHERE product_id = %s",
            [red["product_id"]],
        )
        == []
    )
    assert (
        len(
            _as_reader(
                conn,
                role,
                "SELECT * FROM archive.provenance WHERE product_id = %s",
                [master["product_id"]],
            )
        )
        == 3
    )
    assert (
        _as_reader(conn, role, "SELECT * FROM archive.reduction_status WHERE obs_id = %s", [image])
        == []
    )
    member = _as_reader(
        conn,
        role,
        "SELECT product_id FROM archive.products WHERE product_id = ANY(%s) ORDER BY 1",
        [ids],
        waiting_night["user_id"],
    )
    assert member == [(i,) for i in sorted(ids)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_reader(conn, role, "SELECT path FROM archive.products LIMIT 1")
    # products follow their proposal: without a proprietary period the image is public
    with conn.transaction():
        conn.execute(
            "UPDATE auth.proposals SET proprietary_months = 0 WHERE proposal_id = %s", [PROPOSAL]
        )
    released = _as_reader(
        conn, role, "SELECT product_id FROM archive.products WHERE product_id = ANY(%s)", [ids]
    )
    assert sorted(released) == [(i,) for i in sorted(ids)]
    # ... and an embargo set by hand on the science frame holds its products back
    with conn.transaction():
        conn.execute(
            "UPDATE archive.frames SET release_fixed = true, release_date = '2100-01-01' "
            "WHERE obs_id = %s",
            [image],
        )
    embargoed = _as_reader(
        conn, role, "SELECT product_id FROM archive.products WHERE product_id = ANY(%s)", [ids]
    )
    assert embargoed == [(master["product_id"],)]
    assert (
        red["frame_id"]
        == _rows(conn, "SELECT frame_id FROM archive.frames WHERE obs_id = %s", [image])[0][
            "frame_id"
        ]
    )


def test_released_products_are_public(
    conn: psycopg.Connection, cfg: Settings, night: NightSummary, reduced: ReductionReport
) -> None:
    # the shared night's proposal is unregistered: twelve months, long past
    obs_id = _obs_ids(night, "science_spectrum")[0]
    seen = _as_reader(
        conn,
        cfg.query_role,
        "SELECT kind, data_level, wavecal_rms_px FROM archive.products WHERE obs_id = %s",
        [obs_id],
    )
    assert {k for k, *_ in seen} >= {"reduced_spectrum_2d", "spectrum_1d", "wavelength_calibrated"}
    visible = _as_reader(
        conn,
        cfg.query_role,
        "SELECT count(*) FROM archive.reduction_status WHERE obs_id = %s",
        [obs_id],
    )
    assert visible == [(1,)]


def test_product_downloads_follow_the_access_rules(
    reduced: ReductionReport, db_url: str, server: str
) -> None:
    """Products download through the same rights check as raw frames; hidden ones 404."""
    import asyncio

    import httpx

    from vo_service.auth import accounts

    async def staff() -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            await accounts.add_user(
                conn, "productstaff", "ps@example.org", "Grism-Order-2b", staff=True
            )

    asyncio.run(staff())
    with psycopg.connect(db_url) as conn:
        product_id, release = conn.execute(
            "SELECT product_id, release_date FROM archive.products "
            "WHERE kind = 'wavelength_calibrated' ORDER BY product_id LIMIT 1"
        ).fetchone()
    url = f"{server}/data/products/{product_id}"
    public = httpx.get(url)
    assert public.status_code == 200 and public.content[:9] == b"SIMPLE  ="
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE archive.products SET release_date = '2999-01-01', "
            "release_fixed = true WHERE product_id = %s",
            [product_id],
        )
    try:
        assert httpx.get(url).status_code == 404
        assert httpx.get(url, auth=("productstaff", "Grism-Order-2b")).status_code == 200
    finally:
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "UPDATE archive.products SET release_date = %s, release_fixed = false "
                "WHERE product_id = %s",
                [release, product_id],
            )
    assert httpx.get(f"{server}/data/products/999999999").status_code == 404
