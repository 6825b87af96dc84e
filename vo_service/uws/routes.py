"""The UWS 1.1 resource tree over HTTP, for any JobKind mounted at any path."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from vo_service.dali import DALIError, Params, read_params
from vo_service.urls import site_root
from vo_service.uws.documents import (
    job_document,
    job_list,
    parameters_document,
    results_document,
)
from vo_service.uws.engine import Engine
from vo_service.uws.model import (
    ACTIVE,
    FINAL,
    PENDING,
    PHASES,
    Job,
    Parameter,
    isoformat,
    parse_instant,
)
from vo_service.uws.store import JobStore

XML = "text/xml"
MAX_WAIT_S = 60.0
_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# Parameters that take one value: a new value replaces the old (UWS-P9); others append.
MULTI_VALUED = frozenset({"UPLOAD"})
_CONTROL = frozenset({"PHASE", "ACTION", "DESTRUCTION", "EXECUTIONDURATION", "WAIT"})


class UWSError(DALIError):
    """HTTP-level UWS refusals (404 unknown job, 403 illegal in this phase)."""


def _merge(existing: tuple[Parameter, ...], new: list[Parameter]) -> list[Parameter]:
    merged = list(existing)
    for param in new:
        if param.name.upper() not in MULTI_VALUED:
            merged = [p for p in merged if p.name.upper() != param.name.upper()]
        merged.append(param)
    return merged


class UWSService:
    """Routes for one job list; ``owner_of`` maps a request to the owner id (None: anon)."""

    def __init__(
        self,
        engine: Engine,
        job_type: str,
        path: str,
        *,
        default_duration: int,
        retention: timedelta,
        owner_of: Callable[[Request], str | None] = lambda r: None,
    ) -> None:
        self.engine = engine
        self.job_type = job_type
        self.path = path.rstrip("/")
        self.default_duration = default_duration
        self.retention = retention
        self.owner_of = owner_of

    @property
    def store(self) -> JobStore:
        return self.engine.store

    def jobs_url(self, request: Request) -> str:
        return site_root(request) + self.path

    async def _job(self, request: Request) -> Job:
        job = await self.store.get(self.job_type, request.path_params["job_id"])
        if job is None or job.owner != self.owner_of(request):
            raise UWSError("no such job", 404)
        return job

    def _job_url(self, request: Request, job_id: str) -> str:
        return f"{self.jobs_url(request)}/{job_id}"

    def _see(self, request: Request, job_id: str) -> Response:
        return RedirectResponse(self._job_url(request, job_id), status_code=303)

    async def _parameters(self, request: Request, params: Params, job_id: str) -> list[Parameter]:
        """Plain values, plus inline (multipart) files stored under the job by reference."""
        found = [Parameter(k.lower(), v) for k, v in params.items() if k.upper() not in _CONTROL]
        for name, upload in params.files.items():
            if not _SAFE_NAME.match(name):
                raise UWSError(f"illegal name for an inline parameter: {name!r}")
            target = self.engine.workdir(job_id) / "parameters"
            target.mkdir(parents=True, exist_ok=True)
            with (target / name).open("wb") as handle:
                while chunk := await upload.read(1 << 20):
                    handle.write(chunk)
            found.append(Parameter(name, f"param:{name}", by_reference=True))
        return found

    # -- the job list ---------------------------------------------------------------------

    async def list_or_create(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.create(request)
        params = Params(request.query_params.multi_items())
        phases = [p.upper() for p in params.getlist("PHASE")]
        unknown = [p for p in phases if p not in PHASES]
        if unknown:
            raise UWSError(f"unknown phase {unknown[0]!r}")
        after = params.get("AFTER")
        try:
            after_time = parse_instant(after) if after else None
        except ValueError:
            raise UWSError(f"AFTER must be an ISO 8601 instant, not {after!r}") from None
        owner = self.owner_of(request)
        if owner is None:
            # Anonymous jobs are reachable by their unguessable URL only: listing them would
            # show one anonymous user the queries of all others.
            return Response(job_list([], self.jobs_url(request)), media_type=XML)
        jobs = await self.store.list(
            self.job_type,
            self.owner_of(request),
            phases=phases,
            after=after_time,
            last=params.get_int("LAST"),
        )
        return Response(job_list(jobs, self.jobs_url(request)), media_type=XML)

    async def create(self, request: Request) -> Response:
        params = await read_params(request)
        duration = params.get_int("EXECUTIONDURATION")
        job = await self.store.create(
            self.job_type,
            self.owner_of(request),
            [],
            execution_duration=self.default_duration if duration is None else duration,
            retention=self.retention,
        )
        values = await self._parameters(request, params, job.job_id)
        if values:
            await self.store.set_parameters(job.job_id, values)
        destruction = params.get("DESTRUCTION")
        if destruction:
            await self._set_destruction(job, destruction)
        if (params.get("PHASE") or "").upper() == "RUN":
            await self.store.queue(job.job_id)
        return self._see(request, job.job_id)

    # -- one job ----------------------------------------------------------------------------

    async def job(self, request: Request) -> Response:
        job = await self._job(request)
        if request.method == "DELETE":
            return await self._delete(request, job)
        if request.method == "POST":
            params = await read_params(request)
            if (params.get("ACTION") or "").upper() == "DELETE":
                return await self._delete(request, job)
            if params.get("PHASE"):
                return await self._phase_change(request, job, params.get("PHASE") or "")
            raise UWSError(
                "POST to a job accepts ACTION=DELETE or PHASE only; parameters "
                "go to the job's /parameters",
                403,
            )
        wait = request.query_params.get("WAIT")
        if wait is not None and job.phase in ACTIVE:
            expected = request.query_params.get("PHASE")
            if expected is None or expected.upper() == job.phase:
                job = await self._wait(job, wait)
        return Response(job_document(job, self._job_url(request, job.job_id)), media_type=XML)

    async def _wait(self, job: Job, wait: str) -> Job:
        try:
            seconds = float(wait)
        except ValueError:
            raise UWSError(f"WAIT must be a number of seconds, not {wait!r}") from None
        timeout = MAX_WAIT_S if seconds < 0 else min(seconds, MAX_WAIT_S)
        if timeout > 0:
            await self.engine.events.wait_for(job.job_id, timeout)
        return await self.store.get(self.job_type, job.job_id) or job

    async def _delete(self, request: Request, job: Job) -> Response:
        await self.store.delete(job.job_id)
        self.engine.remove_files(job.job_id)
        return RedirectResponse(self.jobs_url(request), status_code=303)

    async def _phase_change(self, request: Request, job: Job, phase: str) -> Response:
        phase = phase.upper()
        if phase == "RUN":
            if job.phase == PENDING:
                await self.store.queue(job.job_id)
            elif job.phase in FINAL:
                raise UWSError(f"the job is {job.phase} and cannot run again", 403)
        elif phase == "ABORT":
            if job.phase in ACTIVE:
                await self.store.abort(job.job_id)
        else:
            raise UWSError(f"PHASE must be RUN or ABORT, not {phase!r}")
        return self._see(request, job.job_id)

    async def phase(self, request: Request) -> Response:
        job = await self._job(request)
        if request.method == "POST":
            params = await read_params(request)
            return await self._phase_change(request, job, params.get("PHASE") or "")
        return PlainTextResponse(job.phase)

    async def execution_duration(self, request: Request) -> Response:
        job = await self._job(request)
        if request.method == "POST":
            params = await read_params(request)
            seconds = params.get_int("EXECUTIONDURATION")
            if seconds is None:
                raise UWSError("EXECUTIONDURATION is required")
            if job.phase != PENDING:
                raise UWSError("the execution duration can change only while PENDING", 403)
            await self.store.set_execution_duration(job.job_id, seconds)
            return self._see(request, job.job_id)
        return PlainTextResponse(str(job.execution_duration))

    async def _set_destruction(self, job: Job, value: str) -> None:
        try:
            when = parse_instant(value)
        except ValueError:
            raise UWSError(f"DESTRUCTION must be an ISO 8601 instant, not {value!r}") from None
        latest = job.creation_time + self.retention
        await self.store.set_destruction(job.job_id, min(when, latest))

    async def destruction(self, request: Request) -> Response:
        job = await self._job(request)
        if request.method == "POST":
            params = await read_params(request)
            await self._set_destruction(job, params.get("DESTRUCTION") or "")
            return self._see(request, job.job_id)
        return PlainTextResponse(isoformat(job.destruction))

    async def quote(self, request: Request) -> Response:
        await self._job(request)
        return PlainTextResponse("")

    async def owner(self, request: Request) -> Response:
        job = await self._job(request)
        return PlainTextResponse(job.owner or "")

    async def error(self, request: Request) -> Response:
        job = await self._job(request)
        if not job.error_summary:
            raise UWSError("the job has no error", 404)
        body, media_type = self.engine.kinds[self.job_type].error_document(job.error_summary)
        return Response(body, media_type=media_type)

    async def results(self, request: Request) -> Response:
        job = await self._job(request)
        return Response(results_document(job, self._job_url(request, job.job_id)), media_type=XML)

    async def result(self, request: Request) -> Response:
        job = await self._job(request)
        wanted = request.path_params["result_id"]
        for result in job.results:
            if result.id == wanted:
                path = self.engine.workdir(job.job_id) / result.file
                if path.exists():
                    return FileResponse(path, media_type=result.mime_type)
        raise UWSError("no such result", 404)

    async def parameters(self, request: Request) -> Response:
        job = await self._job(request)
        if request.method == "POST":
            if job.phase != PENDING:
                raise UWSError("parameters can change only while the job is PENDING", 403)
            params = await read_params(request)
            values = await self._parameters(request, params, job.job_id)
            await self.store.set_parameters(job.job_id, _merge(job.parameters, values))
            return self._see(request, job.job_id)
        return Response(
            parameters_document(job, self._job_url(request, job.job_id)), media_type=XML
        )

    async def parameter_file(self, request: Request) -> Response:
        job = await self._job(request)
        name = request.path_params["name"]
        path: Path = self.engine.workdir(job.job_id) / "parameters" / name
        if not _SAFE_NAME.match(name) or not path.is_file():
            raise UWSError("no such parameter file", 404)
        return FileResponse(path, media_type="application/octet-stream")

    def routes(self) -> list[Route]:
        """Absolute paths, so the job list answers without a trailing-slash redirect."""
        any_method = ["GET", "POST"]
        job = self.path + "/{job_id}"
        return [
            Route(self.path, self.list_or_create, methods=any_method),
            Route(job, self.job, methods=["GET", "POST", "DELETE"]),
            Route(job + "/phase", self.phase, methods=any_method),
            Route(job + "/executionduration", self.execution_duration, methods=any_method),
            Route(job + "/destruction", self.destruction, methods=any_method),
            Route(job + "/quote", self.quote),
            Route(job + "/owner", self.owner),
            Route(job + "/error", self.error),
            Route(job + "/results", self.results),
            Route(job + "/results/{result_id}", self.result),
            Route(job + "/parameters", self.parameters, methods=any_method),
            Route(job + "/parameters/{name}", self.parameter_file),
        ]
