"""UWS 1.1 XML documents: job list, job, results, parameters (schema order, nil rules)."""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from vo_service.uws.model import Job, isoformat
from vo_service.xml import XSI, serialize

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
_NSMAP = {"uws": UWS, "xlink": XLINK, "xsi": XSI}


def _el(
    parent: etree._Element | None, tag: str, text: str | None = None, **attrs: str
) -> etree._Element:
    name = f"{{{UWS}}}{tag}"
    element = (
        etree.Element(name, nsmap=_NSMAP) if parent is None else etree.SubElement(parent, name)
    )
    for key, value in attrs.items():
        element.set(key, value)
    if text is not None:
        element.text = text
    return element


def _nillable(parent: etree._Element, tag: str, text: str | None) -> None:
    element = _el(parent, tag, text or None)
    if not text:
        element.set(f"{{{XSI}}}nil", "true")


def _parameters(parent: etree._Element | None, job: Job, job_url: str) -> etree._Element:
    holder = _el(parent, "parameters")
    seen: set[str] = set()
    # One entry per name (UWS-P6): the last value wins, UPLOAD-like lists are joined.
    for param in reversed(job.parameters):
        key = param.name.lower()
        if key in seen:
            continue
        seen.add(key)
        values = job.parameter_values(param.name)
        text = ";".join(values) if key == "upload" else param.value
        attrs = {"id": key}
        if param.by_reference:
            attrs["byReference"] = "true"
            text = f"{job_url}/parameters/{param.name}"
        _el(holder, "parameter", text, **attrs)
    holder[:] = list(reversed(holder))
    return holder


def _results(parent: etree._Element | None, job: Job, job_url: str) -> etree._Element:
    holder = _el(parent, "results")
    for result in job.results:
        _el(
            holder,
            "result",
            None,
            id=result.id,
            size=str(result.size),
            **{
                "mime-type": result.mime_type,
                f"{{{XLINK}}}href": f"{job_url}/results/{result.id}",
                f"{{{XLINK}}}type": "simple",
            },
        )
    return holder


def job_document(job: Job, job_url: str) -> bytes:
    root = _el(None, "job", version="1.1")
    _el(root, "jobId", job.job_id)
    if job.run_id:
        _el(root, "runId", job.run_id)
    _nillable(root, "ownerId", job.owner)
    _el(root, "phase", job.phase)
    _nillable(root, "quote", None)
    _el(root, "creationTime", isoformat(job.creation_time))
    _nillable(root, "startTime", isoformat(job.start_time))
    _nillable(root, "endTime", isoformat(job.end_time))
    _el(root, "executionDuration", str(job.execution_duration))
    _nillable(root, "destruction", isoformat(job.destruction))
    _parameters(root, job, job_url)
    _results(root, job, job_url)
    if job.error_summary:
        summary = _el(root, "errorSummary", None, type=job.error_type or "fatal", hasDetail="true")
        _el(summary, "message", job.error_summary)
    return serialize(root)


def job_list(jobs: Sequence[Job], jobs_url: str) -> bytes:
    root = _el(None, "jobs", version="1.1")
    for job in jobs:
        ref = _el(
            root,
            "jobref",
            None,
            id=job.job_id,
            **{f"{{{XLINK}}}href": f"{jobs_url}/{job.job_id}", f"{{{XLINK}}}type": "simple"},
        )
        _el(ref, "phase", job.phase)
        if job.run_id:
            _el(ref, "runId", job.run_id)
        _nillable(ref, "ownerId", job.owner)
        _el(ref, "creationTime", isoformat(job.creation_time))
    return serialize(root)


def results_document(job: Job, job_url: str) -> bytes:
    return serialize(_results(None, job, job_url))


def parameters_document(job: Job, job_url: str) -> bytes:
    return serialize(_parameters(None, job, job_url))
