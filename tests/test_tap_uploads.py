"""Table uploads (TAP-M13, TAP-M14, DALI-M8): inline and by URL, joined with our tables."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import pyvo
from astropy.io.votable import from_table, parse_single_table, writeto
from astropy.table import Table

from ingest.simulate import NightSummary


def _targets(db_url: str) -> Table:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT object, ra, dec FROM archive.frames "
            "WHERE frame_type = 'science_spectrum' ORDER BY object"
        ).fetchall()
    return Table(
        rows=[(f"t{i}", r[1] + 0.001, r[2]) for i, r in enumerate(rows)],
        names=["name", "ra", "dec"],
    )


def _votable_bytes(table: Table, fmt: str) -> bytes:
    out = BytesIO()
    votable = from_table(table)
    votable.get_first_table().format = fmt
    writeto(votable, out)
    return out.getvalue()


def test_TAP_M13_pyvo_upload_crossmatch(tap_url: str, db_url: str, night: NightSummary) -> None:
    targets = _targets(db_url)
    service = pyvo.dal.TAPService(tap_url)
    result = service.run_sync(
        "SELECT u.name, f.obs_id, DISTANCE(POINT('ICRS', u.ra, u.dec), f.pos) AS d "
        "FROM TAP_UPLOAD.mine AS u JOIN archive.frames AS f "
        "ON CONTAINS(POINT('ICRS', u.ra, u.dec), CIRCLE('ICRS', f.ra, f.dec, 0.01)) = 1 "
        "WHERE f.frame_type = 'science_spectrum'",
        uploads={"mine": targets},
    ).to_table()
    assert len(result) == night.counts["science_spectrum"]
    assert np.all(result["d"] < 0.01)


@pytest.mark.parametrize("fmt", ["tabledata", "binary", "binary2"])
def test_TAP_M13_every_serialization_round_trips(tap_url: str, fmt: str) -> None:
    table = Table(
        {
            "d_int": np.array([1, 2, 3], dtype=np.int32),
            "d_double": [1.5, np.nan, -2.25],
            "d_string": ["a", "é ü", ""],
            "Weird Name": [True, False, True],
        }
    )
    response = httpx.post(
        f"{tap_url}/sync",
        data={
            "LANG": "ADQL",
            "QUERY": 'SELECT d_int, d_double, d_string, "Weird Name" '
            "FROM TAP_UPLOAD.t1 ORDER BY d_int",
            "UPLOAD": "t1,param:f1",
        },
        files={"f1": ("t1.xml", _votable_bytes(table, fmt))},
    )
    assert response.status_code == 200, response.text
    back = parse_single_table(BytesIO(response.content)).to_table(use_names_over_ids=True)
    assert list(back["d_int"]) == [1, 2, 3]
    assert back["d_double"][0] == 1.5 and back["d_double"].mask[1]
    assert list(back["d_string"][:2]) == ["a", "é ü"]
    assert list(back["Weird Name"]) == [True, False, True]


def test_upload_by_url(tap_url: str, tmp_path: Path) -> None:
    (tmp_path / "t.xml").write_bytes(_votable_bytes(Table({"x": [1, 2, 3, 4]}), "tabledata"))
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/t.xml"
        response = httpx.get(
            f"{tap_url}/sync",
            params={
                "LANG": "ADQL",
                "QUERY": "SELECT SUM(x) AS s FROM TAP_UPLOAD.remote",
                "UPLOAD": f"remote,{url}",
            },
        )
        assert response.status_code == 200, response.text
        assert int(parse_single_table(BytesIO(response.content)).array["s"][0]) == 10
    finally:
        server.shutdown()


def test_upload_in_async_job(tap_url: str) -> None:
    table = Table({"x": [5, 6]})
    response = httpx.post(
        f"{tap_url}/async",
        data={
            "LANG": "ADQL",
            "QUERY": "SELECT MAX(x) AS m FROM TAP_UPLOAD.a",
            "UPLOAD": "a,param:part",
            "PHASE": "RUN",
        },
        files={"part": ("a.xml", _votable_bytes(table, "binary2"))},
    )
    assert response.status_code == 303
    job = pyvo.dal.AsyncTAPJob(response.headers["location"])
    job.wait(timeout=60)
    assert job.phase == "COMPLETED"
    assert int(job.fetch_result().to_table()["m"][0]) == 6


@pytest.mark.parametrize(
    "upload, files, fragment",
    [
        ("t1,param:f1", {"f1": ("x.xml", b"<not a votable")}, b"not a readable VOTable"),
        ("t1,param:nothere", {"f1": ("x.xml", b"")}, b"nothere"),
        ("1bad,param:f1", {"f1": ("x.xml", b"")}, b"not an ADQL identifier"),
        ("t1,ftp://example.org/x", {"f1": ("x.xml", b"")}, b"only param: and http(s)"),
    ],
)
def test_bad_uploads_are_dali_errors(
    tap_url: str, upload: str, files: dict, fragment: bytes
) -> None:
    response = httpx.post(
        f"{tap_url}/sync",
        data={"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.t1", "UPLOAD": upload},
        files=files,
    )
    assert response.status_code == 400
    assert b'value="ERROR"' in response.content and fragment in response.content


def test_upload_is_not_visible_to_other_queries(tap_url: str) -> None:
    response = httpx.get(
        f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.t1"}
    )
    assert response.status_code == 400
