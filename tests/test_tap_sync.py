"""TAP sync against the real server, with pyvo as the client (TAP 1.1, DALI 1.1)."""

from __future__ import annotations

from io import BytesIO

import httpx
import pytest
import pyvo
from astropy.io.votable import parse_single_table

from ingest.simulate import NightSummary
from vo_service.tap.examples import EXAMPLES


def _votable(response: httpx.Response):
    return parse_single_table(BytesIO(response.content)).to_table()


def test_TAP_M1_pyvo_lists_tap_schema_tables(tap_url: str) -> None:
    service = pyvo.dal.TAPService(tap_url)
    result = service.run_sync("SELECT TOP 5 * FROM TAP_SCHEMA.tables")
    names = {str(n) for n in result.to_table()["table_name"]}
    assert len(result) == 5
    assert "tap_schema.tables" in names


def test_frame_counts_per_type_match_the_simulated_night(tap_url: str, night: NightSummary) -> None:
    service = pyvo.dal.TAPService(tap_url)
    result = service.run_sync(
        "SELECT frame_type, COUNT(*) AS n FROM archive.frames GROUP BY frame_type"
    ).to_table()
    counts = {str(row["frame_type"]): int(row["n"]) for row in result}
    expected = {kind: n for kind, n in night.counts.items() if n}
    assert counts == expected


def test_TAP_M8_fields_carry_declared_metadata(tap_url: str, night: NightSummary) -> None:
    service = pyvo.dal.TAPService(tap_url)
    result = service.run_sync("SELECT TOP 3 obs_id, exptime, date_obs, pos FROM archive.frames")
    fields = {f.name: f for f in result.fielddescs}
    assert fields["exptime"].unit == "s"
    assert fields["exptime"].ucd == "time.duration;obs.exposure"
    assert fields["date_obs"].xtype == "timestamp"
    assert fields["pos"].xtype == "point"
    assert fields["pos"].arraysize == "2"


def test_TAP_M11_maxrec_overflow(tap_url: str, night: NightSummary) -> None:
    service = pyvo.dal.TAPService(tap_url)
    result = service.run_sync("SELECT obs_id FROM archive.frames", maxrec=3)
    assert len(result) == 3
    assert result.query_status == "OVERFLOW"


def test_TAP_M11_top_below_maxrec_is_not_overflow(tap_url: str, night: NightSummary) -> None:
    response = httpx.get(
        f"{tap_url}/sync",
        params={"LANG": "ADQL", "QUERY": "SELECT TOP 2 obs_id FROM archive.frames", "MAXREC": "5"},
    )
    assert response.status_code == 200
    assert b'value="OVERFLOW"' not in response.content
    assert len(_votable(response)) == 2


def test_TAP_M11_maxrec_zero_returns_metadata_only(tap_url: str, night: NightSummary) -> None:
    response = httpx.get(
        f"{tap_url}/sync",
        params={
            "LANG": "ADQL",
            "QUERY": "SELECT obs_id, exptime FROM archive.frames",
            "MAXREC": "0",
        },
    )
    assert response.status_code == 200
    table = _votable(response)
    assert len(table) == 0
    assert table.colnames == ["obs_id", "exptime"]


def test_TAP_M3_post_and_case_insensitive_params(tap_url: str, night: NightSummary) -> None:
    response = httpx.post(
        f"{tap_url}/sync",
        data={
            "lang": "ADQL-2.1",
            "query": "SELECT COUNT(*) AS n FROM archive.frames",
            "request": "doQuery",
            "dummy": "ignore-me",
        },
    )
    assert response.status_code == 200
    assert int(_votable(response)["n"][0]) == len(night.files)


def test_TAP_M6_syntax_error_is_a_dali_error(tap_url: str) -> None:
    response = httpx.get(f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": "DUFF QUERY"})
    assert response.status_code == 400
    assert b'name="QUERY_STATUS" value="ERROR"' in response.content
    with pytest.raises(pyvo.dal.DALQueryError):
        pyvo.dal.TAPService(tap_url).run_sync("SELECT FROM WHERE")


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("SELECT * FROM archive.nosuchtable", "nosuchtable"),
        ("SELECT nosuchcolumn FROM archive.frames", "nosuchcolumn"),
        ("SELECT header FROM archive.frames", "header"),
        ("SELECT pg_sleep(1) FROM archive.frames", "pg_sleep"),
        ("SELECT * FROM internal.quarantine", "quarantine"),
    ],
)
def test_unknown_or_unpublished_names_are_errors(tap_url: str, query: str, fragment: str) -> None:
    response = httpx.get(f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": query})
    assert response.status_code == 400
    assert b'value="ERROR"' in response.content
    assert fragment.encode() in response.content
    assert b"Traceback" not in response.content


def test_TAP_M6_unknown_language(tap_url: str) -> None:
    response = httpx.get(f"{tap_url}/sync", params={"LANG": "OOBLECK", "QUERY": "SELECT 1"})
    assert response.status_code == 400
    assert b"unknown query language" in response.content


def test_DALI_M3_repeated_single_valued_parameter(tap_url: str) -> None:
    response = httpx.get(
        f"{tap_url}/sync",
        params=[
            ("LANG", "ADQL"),
            ("QUERY", "SELECT TOP 1 obs_id FROM archive.frames"),
            ("MAXREC", "1"),
            ("MAXREC", "2"),
        ],
    )
    assert response.status_code == 400
    assert b"MAXREC" in response.content


def test_bad_maxrec_and_format(tap_url: str) -> None:
    query = "SELECT TOP 1 obs_id FROM archive.frames"
    bad_maxrec = httpx.get(
        f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": query, "MAXREC": "lots"}
    )
    assert bad_maxrec.status_code == 400 and b"MAXREC" in bad_maxrec.content
    bad_format = httpx.get(
        f"{tap_url}/sync",
        params={"LANG": "ADQL", "QUERY": query, "FORMAT": "application/x-nonsense"},
    )
    assert bad_format.status_code == 400 and b'value="ERROR"' in bad_format.content


def test_csv_output(tap_url: str, night: NightSummary) -> None:
    response = httpx.get(
        f"{tap_url}/sync",
        params={
            "LANG": "ADQL",
            "FORMAT": "csv",
            "QUERY": "SELECT TOP 3 obs_id, frame_type FROM archive.frames ORDER BY obs_id",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.strip().splitlines()
    assert lines[0] == "obs_id,frame_type" and len(lines) == 4


def test_server_header_names_the_software(tap_url: str) -> None:
    assert httpx.get(f"{tap_url}/availability").headers["server"].startswith("vo-service/")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_every_published_example_runs(tap_url: str, night: NightSummary, example) -> None:
    result = pyvo.dal.TAPService(tap_url).run_sync(example.query)
    assert result.query_status == "OK"
    if "POINT(" not in example.query:  # a fixed position need not hold simulated data
        assert len(result) > 0


def test_examples_document_is_rdfa(tap_url: str) -> None:
    from lxml import etree

    root = etree.fromstring(httpx.get(f"{tap_url}/examples").content)
    body = root.find("{http://www.w3.org/1999/xhtml}body")
    assert body.get("vocab") == "http://www.ivoa.net/rdf/examples#"
    ids = [d.get("id") for d in body.iter("{http://www.w3.org/1999/xhtml}div")]
    assert ids == [e.id for e in EXAMPLES]
