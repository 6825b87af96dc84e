"""Large results stream batch by batch: overflow, an empty result, an error after the
first rows, and a client that leaves half way, whose query must stop rather than run to
its end."""

from __future__ import annotations

import time
from io import BytesIO

import httpx
import numpy as np
import psycopg
from astropy.io.votable import from_table, parse, writeto
from astropy.table import Table

ROWS = 25_000  # more than two of the server's fetch batches (10 000 rows)


def _upload() -> bytes:
    ids = np.arange(ROWS, dtype=np.int32)
    table = Table({"id": ids, "x": ids * 0.5, "big": ids.astype(np.int64) << 33})
    out = BytesIO()
    votable = from_table(table)
    votable.get_first_table().format = "binary2"
    writeto(votable, out)
    return out.getvalue()


def _sync(tap_url: str, query: str, maxrec: int) -> httpx.Response:
    return httpx.post(
        f"{tap_url}/sync",
        data={"LANG": "ADQL", "QUERY": query, "MAXREC": str(maxrec), "UPLOAD": "big,param:big"},
        files={"big": ("big.xml", _upload(), "application/x-votable+xml")},
        timeout=120,
    )


def _statuses(content: bytes) -> list[tuple[str, str | None]]:
    votable = parse(BytesIO(content))
    resource = votable.resources[0]
    return [(i.value, i.content) for i in resource.infos if i.name == "QUERY_STATUS"]


def _reading(db_url: str) -> list[tuple]:
    """Backends with the result's cursor still being read or waiting in its transaction."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT state, query FROM pg_stat_activity WHERE state <> 'idle' "
            "AND query LIKE '%tap_result%' AND pid <> pg_backend_pid()"
        ).fetchall()


def test_TAP_M11_DALI_M13_overflow_of_a_streamed_result(tap_url: str) -> None:
    response = _sync(tap_url, "SELECT id, x, big FROM TAP_UPLOAD.big", 20_000)
    assert response.status_code == 200, response.text[:500]
    table = parse(BytesIO(response.content)).get_first_table().to_table()
    assert len(table) == 20_000
    ids = np.asarray(table["id"])
    assert len(np.unique(ids)) == 20_000 and ids.max() < ROWS
    row = table[12_345]
    assert row["x"] == row["id"] * 0.5 and row["big"] == int(row["id"]) << 33
    assert _statuses(response.content)[-1][0] == "OVERFLOW"


def test_DALI_M12_an_empty_streamed_result(tap_url: str) -> None:
    response = _sync(tap_url, "SELECT id, x, big FROM TAP_UPLOAD.big WHERE id < 0", 20_000)
    assert response.status_code == 200
    assert len(parse(BytesIO(response.content)).get_first_table().array) == 0
    assert _statuses(response.content) == [("OK", None)]


def test_DALI_M14_an_error_after_the_first_batch_ends_the_table_in_band(tap_url: str) -> None:
    # No ORDER BY: rows leave in table order, so the division by zero comes at row 15 000,
    # after the first batch went out with a 200.
    response = _sync(tap_url, "SELECT id, 1 / (id - 15000) AS r FROM TAP_UPLOAD.big", ROWS)
    assert response.status_code == 200
    statuses = _statuses(response.content)
    assert statuses[-1][0] == "ERROR", statuses
    assert "division by zero" in (statuses[-1][1] or "")
    rows = parse(BytesIO(response.content)).get_first_table().array
    assert 10_000 <= len(rows) <= 15_000


def test_a_client_that_leaves_cancels_its_query(tap_url: str, db_url: str) -> None:
    # A cross join of 625 million rows: it runs until somebody stops it.
    query = (
        "SELECT a.id, b.id AS id2, a.x * b.x AS xx FROM TAP_UPLOAD.big AS a, TAP_UPLOAD.big AS b"
    )
    with httpx.stream(
        "POST",
        f"{tap_url}/sync",
        data={"LANG": "ADQL", "QUERY": query, "MAXREC": "10000000", "UPLOAD": "big,param:big"},
        files={"big": ("big.xml", _upload(), "application/x-votable+xml")},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 1_000_000:
                assert _reading(db_url), "the check below would see nothing"
                break
    deadline = time.monotonic() + 30
    running = ["?"]
    while running and time.monotonic() < deadline:
        running = _reading(db_url)
        time.sleep(0.2)
    assert not running, running
    # and the pool's connections still work
    for _ in range(8):
        ok = httpx.get(
            f"{tap_url}/sync",
            params={"LANG": "ADQL", "QUERY": "SELECT COUNT(*) AS n FROM archive.frames"},
            timeout=60,
        )
        assert ok.status_code == 200 and _statuses(ok.content)[0][0] == "OK"
