"""Behaviour that needs a server of its own: limits from settings, restarts, shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from ingest.simulate import NightSummary
from tests.support import ServerProcess

SLOW = (
    "SELECT COUNT(*) AS n FROM archive.frames AS a, archive.frames AS b, "
    "archive.frames AS c, archive.frames AS d, archive.frames AS e, archive.frames AS f"
)


@pytest.fixture(scope="module")
def strict_server(db_url: str, night: NightSummary):
    process = ServerProcess(
        {
            "VO_SERVICE_SYNC_TIMEOUT": "1",
            "VO_SERVICE_MAXREC": "5",
            "VO_SERVICE_HARD_MAXREC": "7",
            "VO_SERVICE_UPLOAD_LIMIT": "3000",
        },
        name="strict",
    )
    yield process.base
    process.stop()


def test_sync_timeout_is_reported_as_a_timeout(strict_server: str) -> None:
    started = time.monotonic()
    response = httpx.get(
        f"{strict_server}/tap/sync", params={"LANG": "ADQL", "QUERY": SLOW}, timeout=60
    )
    assert time.monotonic() - started < 20
    assert response.status_code == 504
    assert b'value="ERROR"' in response.content and b"timed out" in response.content


def test_maxrec_default_and_hard_limit(strict_server: str) -> None:
    from io import BytesIO

    from astropy.io.votable import parse_single_table

    query = {"LANG": "ADQL", "QUERY": "SELECT obs_id FROM archive.frames"}
    default = httpx.get(f"{strict_server}/tap/sync", params=query)
    assert len(parse_single_table(BytesIO(default.content)).array) == 5
    assert b'value="OVERFLOW"' in default.content
    capped = httpx.get(f"{strict_server}/tap/sync", params={**query, "MAXREC": "1000"})
    assert len(parse_single_table(BytesIO(capped.content)).array) == 7
    caps = httpx.get(f"{strict_server}/tap/capabilities").text
    assert '<default unit="row">5</default>' in caps and '<hard unit="row">7</hard>' in caps


def test_jobs_of_a_crashed_process_resume_at_restart(
    db_url: str, night: NightSummary, tap_url: str
) -> None:
    """A worker on this host whose process is gone: the next start requeues at once."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    response = httpx.post(
        f"{tap_url}/async",
        data={"LANG": "ADQL", "QUERY": "SELECT TOP 3 obs_id FROM archive.frames"},
    )
    job_url = response.headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE uws.jobs SET phase = 'EXECUTING', attempts = 1, heartbeat = now(), "
            "worker = %s WHERE job_id = %s",
            [f"{socket.gethostname()}:{dead.pid}:crashed", job_id],
        )
    restarted = ServerProcess(name="restarted")
    try:
        deadline = time.monotonic() + 10  # well before the stale-heartbeat rule would act
        while httpx.get(f"{job_url}/phase").text != "COMPLETED":
            assert time.monotonic() < deadline, "job was not resumed at restart"
            time.sleep(0.2)
    finally:
        restarted.stop()


def _executing_worker(conn: psycopg.Connection, job_id: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        phase, worker = conn.execute(
            "SELECT phase, worker FROM uws.jobs WHERE job_id = %s", [job_id]
        ).fetchone()
        if phase == "EXECUTING":
            return worker
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.05)


def test_orderly_shutdown_requeues_running_jobs(db_url: str, night: NightSummary) -> None:
    own = ServerProcess(name="draining")
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Other servers of the session share the queue; go on until this one claims a job.
        for _attempt in range(10):
            response = httpx.post(
                f"{own.base}/tap/async", data={"LANG": "ADQL", "QUERY": SLOW, "PHASE": "RUN"}
            )
            job_id = response.headers["location"].rsplit("/", 1)[1]
            worker = _executing_worker(conn, job_id)
            if worker.split(":")[1] == str(own.proc.pid):
                break
            conn.execute("UPDATE uws.jobs SET phase = 'ABORTED' WHERE job_id = %s", [job_id])
        else:
            raise AssertionError("the draining server never claimed a job")
        own.stop()
        phase, after = conn.execute(
            "SELECT phase, worker FROM uws.jobs WHERE job_id = %s", [job_id]
        ).fetchone()
        # Handed back to the queue (or already taken by another server), never left to
        # the stopped process.
        assert phase in ("QUEUED", "EXECUTING") and after != worker
        conn.execute("UPDATE uws.jobs SET phase = 'ABORTED' WHERE job_id = %s", [job_id])


def test_TAP_M14_oversized_upload_is_a_dali_error(strict_server: str) -> None:
    from io import BytesIO

    from astropy.io.votable import from_table, writeto
    from astropy.table import Table

    out = BytesIO()
    writeto(from_table(Table({"x": list(range(2000))})), out)
    assert len(out.getvalue()) > 3000
    response = httpx.post(
        f"{strict_server}/tap/sync",
        data={
            "LANG": "ADQL",
            "QUERY": "SELECT COUNT(*) FROM TAP_UPLOAD.big",
            "UPLOAD": "big,param:b",
        },
        files={"b": ("b.xml", out.getvalue())},
    )
    assert response.status_code == 400
    assert b'value="ERROR"' in response.content and b"limit of 3000 bytes" in response.content
    caps = httpx.get(f"{strict_server}/tap/capabilities").text
    assert '<hard unit="byte">3000</hard>' in caps
