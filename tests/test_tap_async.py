"""TAP async on the UWS 1.1 engine, against the real server (pyvo and raw HTTP)."""

from __future__ import annotations

import time
from io import BytesIO

import httpx
import psycopg
import pytest
import pyvo
from astropy.io.votable import parse_single_table
from lxml import etree

from ingest.simulate import NightSummary

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
# Slow enough to abort or time out (tens of millions of joined rows), yet plain ADQL.
SLOW = (
    "SELECT COUNT(*) AS n FROM archive.frames AS a, archive.frames AS b, "
    "archive.frames AS c, archive.frames AS d, archive.frames AS e, archive.frames AS f"
)


def _create(tap_url: str, **params: str) -> str:
    response = httpx.post(f"{tap_url}/async", data={"LANG": "ADQL", **params})
    assert response.status_code == 303, response.text
    return response.headers["location"]


def _job(url: str, **params: str) -> etree._Element:
    response = httpx.get(url, params=params, timeout=90)
    assert response.status_code == 200
    return etree.fromstring(response.content)


def _phase(url: str) -> str:
    return httpx.get(f"{url}/phase").text.strip()


def _wait_final(url: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = _job(url, WAIT="5").findtext(f"{UWS}phase")
        if phase in ("COMPLETED", "ERROR", "ABORTED"):
            return phase
    raise AssertionError("job did not finish")


def test_pyvo_run_async(tap_url: str, night: NightSummary) -> None:
    service = pyvo.dal.TAPService(tap_url)
    result = service.run_async("SELECT TOP 7 obs_id, exptime FROM archive.frames")
    assert len(result) == 7
    assert result.fieldname_with_ucd("time.duration;obs.exposure") == "exptime"


def test_pyvo_submit_and_wait(tap_url: str, night: NightSummary) -> None:
    job = pyvo.dal.TAPService(tap_url).submit_job(
        "SELECT frame_type, COUNT(*) AS n FROM archive.frames GROUP BY frame_type"
    )
    job.run()
    job.wait(timeout=60)
    assert job.phase == "COMPLETED"
    counts = {str(r["frame_type"]): int(r["n"]) for r in job.fetch_result().to_table()}
    assert counts == {k: v for k, v in night.counts.items() if v}
    job.delete()


def test_UWS_M1_M6_job_document(tap_url: str) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames", RUNID="taplint-1")
    job_id = url.rsplit("/", 1)[1]
    root = _job(url)
    assert root.get("version") == "1.1"
    assert [c.tag.replace(UWS, "") for c in root] == [
        "jobId",
        "runId",
        "ownerId",
        "phase",
        "quote",
        "creationTime",
        "startTime",
        "endTime",
        "executionDuration",
        "destruction",
        "parameters",
        "results",
    ]
    assert root.findtext(f"{UWS}jobId") == job_id
    assert root.findtext(f"{UWS}phase") == "PENDING"
    assert root.find(f"{UWS}startTime").get(XSI_NIL) == "true"
    assert root.findtext(f"{UWS}creationTime").endswith("Z")
    assert root.findtext(f"{UWS}destruction").endswith("Z")
    assert int(root.findtext(f"{UWS}executionDuration")) > 0
    assert httpx.get(f"{url}/phase").headers["content-type"].startswith("text/plain")


def test_UWS_P9_parameters_replace_single_values(tap_url: str) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames", RUNID="first")
    response = httpx.post(f"{url}/parameters", data={"runId": "second"})
    assert response.status_code == 303 and response.headers["location"] == url
    params = _job(url).findall(f"{UWS}parameters/{UWS}parameter")
    ids = [p.get("id") for p in params]
    assert len(ids) == len({i.lower() for i in ids})
    assert _job(url).findtext(f"{UWS}runId") == "second"


def test_TAP_M4_bad_query_fails_at_run_not_at_creation(tap_url: str) -> None:
    url = _create(tap_url, QUERY="DUFF QUERY")
    assert _phase(url) == "PENDING"
    assert httpx.post(f"{url}/phase", data={"PHASE": "RUN"}).status_code == 303
    assert _wait_final(url) == "ERROR"
    root = _job(url)
    assert root.find(f"{UWS}errorSummary/{UWS}message").text
    error = httpx.get(f"{url}/error")
    assert error.status_code == 200 and b'value="ERROR"' in error.content
    assert httpx.get(f"{url}/results/result").status_code == 404


def test_TAP_M10_result_and_results_list(tap_url: str, night: NightSummary) -> None:
    url = _create(
        tap_url,
        QUERY="SELECT obs_id FROM archive.frames",
        PHASE="RUN",
        MAXREC="4",
        FORMAT="votable",
    )
    assert _wait_final(url) == "COMPLETED"
    results = etree.fromstring(httpx.get(f"{url}/results").content)
    hrefs = [r.get("{http://www.w3.org/1999/xlink}href") for r in results]
    assert hrefs == [f"{url}/results/result"]
    response = httpx.get(hrefs[0])
    assert response.status_code == 200
    assert len(parse_single_table(BytesIO(response.content)).array) == 4
    assert b'value="OVERFLOW"' in response.content


def test_UWS_M11_abort(tap_url: str, night: NightSummary) -> None:
    url = _create(tap_url, QUERY=SLOW, PHASE="RUN")
    time.sleep(0.5)
    assert httpx.post(f"{url}/phase", data={"PHASE": "ABORT"}).status_code == 303
    assert _wait_final(url) == "ABORTED"


def test_UWS_M11_execution_duration_is_enforced(tap_url: str, night: NightSummary) -> None:
    url = _create(tap_url, QUERY=SLOW, EXECUTIONDURATION="1", PHASE="RUN")
    assert _wait_final(url, timeout=30) == "ERROR"
    message = _job(url).findtext(f"{UWS}errorSummary/{UWS}message")
    assert "1 s" in message


def test_UWS_M2_delete_answers_303_then_404(tap_url: str) -> None:
    first = _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames")
    response = httpx.delete(first)
    assert response.status_code == 303 and response.headers["location"] == f"{tap_url}/async"
    assert httpx.get(first).status_code == 404
    assert httpx.get(f"{first}/phase").status_code == 404
    second = _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames")
    assert httpx.post(second, data={"ACTION": "DELETE"}).status_code == 303
    assert httpx.get(second).status_code == 404


def test_UWS_M3_illegal_changes_are_403(tap_url: str, night: NightSummary) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames", PHASE="RUN")
    assert _wait_final(url) == "COMPLETED"
    assert httpx.post(f"{url}/parameters", data={"QUERY": "x"}).status_code == 403
    assert httpx.post(f"{url}/phase", data={"PHASE": "RUN"}).status_code == 403
    assert httpx.post(url, data={"QUERY": "x"}).status_code == 403
    assert httpx.get(f"{tap_url}/async/nosuchjob").status_code == 404


def test_UWS_M9_wait_blocks_until_the_phase_changes(tap_url: str, night: NightSummary) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 3 obs_id FROM archive.frames")
    httpx.post(f"{url}/phase", data={"PHASE": "RUN"})
    started = time.monotonic()
    phase = _job(url, WAIT="30").findtext(f"{UWS}phase")
    assert phase in ("EXECUTING", "COMPLETED")
    assert time.monotonic() - started < 20
    # A final phase never blocks (UWS-P2).
    assert _wait_final(url) == "COMPLETED"
    started = time.monotonic()
    _job(url, WAIT="30")
    assert time.monotonic() - started < 5
    # PHASE= guard: the job is not PENDING, so answer at once.
    started = time.monotonic()
    _job(url, WAIT="30", PHASE="PENDING")
    assert time.monotonic() - started < 5


def test_UWS_S1_job_list_filters(tap_url: str, user_auth: tuple[str, str]) -> None:
    def listing(**params: str) -> etree._Element:
        response = httpx.get(f"{tap_url}/async", params=params, auth=user_auth)
        assert response.status_code == 200
        return etree.fromstring(response.content)

    created = httpx.post(
        f"{tap_url}/async",
        data={"LANG": "ADQL", "QUERY": "SELECT TOP 1 obs_id FROM archive.frames"},
        auth=user_auth,
    )
    marker = created.headers["location"]
    marker_id = marker.rsplit("/", 1)[1]
    stamp = etree.fromstring(httpx.get(marker, auth=user_auth).content)
    created_at = stamp.findtext(f"{UWS}creationTime")
    pending = listing(PHASE="PENDING")
    assert marker_id in {r.get("id") for r in pending}
    assert all(r.findtext(f"{UWS}phase") == "PENDING" for r in pending)
    assert [r.get("id") for r in listing(LAST="1")] == [marker_id]
    assert marker_id not in {r.get("id") for r in listing(AFTER=created_at)}
    bad = httpx.get(f"{tap_url}/async", params={"PHASE": "SLEEPING"}, auth=user_auth)
    assert bad.status_code == 400


def test_anonymous_job_list_shows_no_jobs(tap_url: str) -> None:
    _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames")
    root = etree.fromstring(httpx.get(f"{tap_url}/async").content)
    assert root.findall(f"{UWS}jobref") == []


def test_destruction_can_be_set_and_sweeper_removes_jobs(tap_url: str, db_url: str) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames")
    response = httpx.post(f"{url}/destruction", data={"DESTRUCTION": "2000-01-01T00:00:00Z"})
    assert response.status_code == 303
    assert httpx.get(f"{url}/destruction").text.startswith("2000-01-01T00:00:00")
    deadline = time.monotonic() + 90  # swept by the running server's housekeeping
    while httpx.get(url).status_code != 404:
        assert time.monotonic() < deadline, "expired job was not swept"
        time.sleep(1)


def test_jobs_of_a_dead_worker_are_resumed(tap_url: str, db_url: str, night: NightSummary) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 2 obs_id FROM archive.frames")
    job_id = url.rsplit("/", 1)[1]
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE uws.jobs SET phase = 'EXECUTING', worker = 'gone:1:x', "
            "heartbeat = now() - interval '1 hour', attempts = 1 WHERE job_id = %s",
            [job_id],
        )
    assert _wait_final(url) == "COMPLETED"


def test_jobs_interrupted_too_often_end_in_error(tap_url: str, db_url: str) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 2 obs_id FROM archive.frames")
    job_id = url.rsplit("/", 1)[1]
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE uws.jobs SET phase = 'EXECUTING', worker = 'gone:1:x', "
            "heartbeat = now() - interval '1 hour', attempts = 3 WHERE job_id = %s",
            [job_id],
        )
    assert _wait_final(url) == "ERROR"
    assert "interrupted" in _job(url).findtext(f"{UWS}errorSummary/{UWS}message")


@pytest.mark.parametrize("wait", ["soon", "1e999x"])
def test_bad_wait_is_an_error(tap_url: str, wait: str) -> None:
    url = _create(tap_url, QUERY="SELECT TOP 1 obs_id FROM archive.frames")
    assert httpx.get(url, params={"WAIT": wait}).status_code == 400
