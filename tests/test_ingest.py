"""Raw-frame ingest: classification, idempotency, change detection, quarantine."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
from astropy.io import fits

from ingest.classify import classify
from ingest.loader import ingest
from ingest.simulate import NightSummary


@pytest.fixture(autouse=True)
def _forget_scratch_frames(db_url: str, tmp_path: Path):
    """Frames a test ingests from its tmp_path leave the shared archive afterwards."""
    yield
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM archive.frames WHERE path LIKE %s", [f"{tmp_path}%"])
        conn.execute("DELETE FROM internal.quarantine WHERE path LIKE %s", [f"{tmp_path}%"])


def _frame_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM archive.frames").fetchone()[0]


def test_every_simulated_frame_is_one_classified_row(
    conn: psycopg.Connection, night: NightSummary
) -> None:
    rows = conn.execute(
        "SELECT frame_type, count(*) FROM archive.frames WHERE path LIKE %s GROUP BY 1",
        [f"{night.outdir}%"],
    ).fetchall()
    assert dict(rows) == {k: v for k, v in night.counts.items() if v}


def test_whole_header_is_kept(conn: psycopg.Connection, night: NightSummary) -> None:
    path = night.files[0]
    header = fits.getheader(path)
    stored = conn.execute(
        "SELECT header FROM archive.frames WHERE path = %s", [str(path)]
    ).fetchone()[0]
    for key in ("OBSTYPE", "DATE-OBS", "GAIN", "CCDSUM", "ROI", "INSTCONF"):
        assert stored[key] == header[key]


def test_setup_keys_group_calibrations(conn: psycopg.Connection, night: NightSummary) -> None:
    biases = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT setup_key FROM archive.frames WHERE frame_type = 'bias'"
        )
    }
    spectra = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT setup_key FROM archive.frames WHERE frame_type = 'science_spectrum'"
        )
    }
    flats = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT setup_key FROM archive.frames WHERE frame_type = 'flat'"
        )
    }
    assert len(biases) == 1
    assert all(key.startswith(next(iter(biases)) + "||") for key in spectra)
    assert spectra <= flats  # every science setup has flats taken in the same setup


def test_ingest_is_idempotent(conn: psycopg.Connection, night: NightSummary) -> None:
    before = _frame_count(conn)
    report = ingest(conn, [night.outdir], progress=False)
    assert not report.new and not report.changed and len(report.unchanged) == before
    assert _frame_count(conn) == before


def test_changed_file_is_detected_and_replaced(
    conn: psycopg.Connection, night: NightSummary, tmp_path: Path
) -> None:
    path = tmp_path / "changing.fits"
    shutil.copy(night.files[-1], path)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["OBJECT"] = "first"
    assert ingest(conn, [path], progress=False).new == [str(path)]
    frame_id = conn.execute(
        "SELECT frame_id FROM archive.frames WHERE path = %s", [str(path)]
    ).fetchone()[0]
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["OBJECT"] = "second"
    report = ingest(conn, [path], progress=False)
    assert report.changed == [str(path)]
    row = conn.execute(
        "SELECT frame_id, object FROM archive.frames WHERE path = %s", [str(path)]
    ).fetchone()
    assert row == (frame_id, "second")


def test_same_bytes_under_another_name_is_a_duplicate(
    conn: psycopg.Connection, night: NightSummary, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.fits"
    shutil.copy(night.files[0], copy)
    report = ingest(conn, [copy], progress=False)
    assert report.duplicates == [(str(copy), str(night.files[0]))]
    assert (
        conn.execute("SELECT count(*) FROM archive.frames WHERE path = %s", [str(copy)]).fetchone()[
            0
        ]
        == 0
    )


def _quarantine(conn: psycopg.Connection, path: Path) -> str | None:
    row = conn.execute(
        "SELECT reason FROM internal.quarantine WHERE path = %s", [str(path)]
    ).fetchone()
    return row[0] if row else None


def test_bad_files_are_quarantined_and_leave_no_row(
    conn: psycopg.Connection, night: NightSummary, tmp_path: Path
) -> None:
    raw = night.files[0].read_bytes()
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(raw[: len(raw) // 2])
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(raw[:2880].replace(b"SIMPLE  =", b"SIMPLX  =") + raw[2880:])
    not_fits = tmp_path / "notes.fits"
    not_fits.write_text("observing log: clouds at 03:00\n" * 50)
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    before = _frame_count(conn)
    report = ingest(conn, [truncated, corrupt, not_fits, empty], progress=False)
    assert len(report.quarantined) == 4 and not report.new
    assert _frame_count(conn) == before
    assert "truncated" in _quarantine(conn, truncated)
    assert "not a readable FITS file" in _quarantine(conn, corrupt)
    assert "not a readable FITS file" in _quarantine(conn, not_fits)
    assert _quarantine(conn, empty) == "empty file"


def test_repaired_file_leaves_quarantine(
    conn: psycopg.Connection, night: NightSummary, tmp_path: Path
) -> None:
    path = tmp_path / "late.fits"
    raw = night.files[1].read_bytes()
    path.write_bytes(raw[:5000])  # still being written
    assert ingest(conn, [path], progress=False).quarantined
    with fits.open(night.files[1]) as hdul:
        hdul[0].header["OBJECT"] = "complete now"
        hdul.writeto(path, overwrite=True)
    assert ingest(conn, [path], progress=False).new == [str(path)]
    assert _quarantine(conn, path) is None


def test_classification_rules() -> None:
    base = {
        "DATE-OBS": "2024-03-16T01:00:00.000",
        "CCDSUM": "2 2",
        "INSTCONF": "Red",
        "GAIN": 1.48,
        "RDNOISE": 3.89,
        "ROI": "Spectroscopic 2x2",
    }
    cases = [
        ({"OBSTYPE": "BIAS", "OBJECT": "BIAS"}, ("bias", None)),
        ({"OBSTYPE": "FLAT", "OBJECT": "QuartzFlat", "LAMP_QUA": "TRUE"}, ("flat", "lamp")),
        ({"OBSTYPE": "FLAT", "OBJECT": "DomeFlat", "LAMP_DOM": "TRUE"}, ("flat", "dome")),
        ({"OBSTYPE": "FLAT", "OBJECT": "SkyFlat"}, ("flat", "sky")),
        ({"OBSTYPE": "COMP", "OBJECT": "HgArNe"}, ("arc", None)),
        (
            {"OBSTYPE": "OBJECT", "WAVMODE": "400_M1", "GRATING": "SYZY_400"},
            ("science_spectrum", None),
        ),
        (
            {"OBSTYPE": "OBJECT", "WAVMODE": "IMAGING", "GRATING": "<NO GRATING>"},
            ("science_image", None),
        ),
        ({"OBSTYPE": "FOCUS"}, ("other", None)),
    ]
    for extra, expected in cases:
        header = fits.Header({**base, **extra})
        result = classify(header)
        assert (result.frame_type, result.flat_kind) == expected, extra
    header = fits.Header(
        {
            **base,
            "OBSTYPE": "OBJECT",
            "OBSRA": "10:00:00.0",
            "OBSDEC": "-30:30:00",
            "DATE-OBS": "2024-03-15T23:59:00",
        }
    )
    result = classify(header)
    assert abs(result.ra - 150.0) < 1e-9 and abs(result.dec + 30.5) < 1e-9
    assert result.night == "2024-03-15"
