"""TAP async: a UWS job kind that runs the same prepared query into a result file."""

from __future__ import annotations

from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from vo_service.auth.identity import user_id_of
from vo_service.config import Settings
from vo_service.dali import DALIError, Params
from vo_service.tap.execute import stream_query
from vo_service.tap.query import prepare
from vo_service.uws.engine import JobFailed
from vo_service.uws.model import Job, Result
from vo_service.votable import error_document

RESULT_FILE = "result"


class TapQueryJob:
    job_type = "tap"

    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    async def run(self, job: Job, workdir: Path) -> list[Result]:
        params = Params([(p.name, p.value) for p in job.parameters])
        timeout = job.execution_duration or self.settings.async_timeout_s
        try:
            inline = {
                p.name: workdir / "parameters" / p.name for p in job.parameters if p.by_reference
            }
            prepared = await prepare(
                params,
                self.settings,
                timeout_s=timeout,
                inline=inline,
                user_id=await user_id_of(self.pool, job.owner),
            )
            partial = workdir / f".{RESULT_FILE}.partial"
            with partial.open("wb") as out:
                async for chunk in stream_query(self.pool, prepared):
                    out.write(chunk)
        except DALIError as exc:
            raise JobFailed(exc.message) from None
        # Visible only once complete: a reader never sees half a result.
        final = workdir / RESULT_FILE
        partial.replace(final)
        return [Result("result", RESULT_FILE, prepared.media_type, final.stat().st_size)]

    def error_document(self, message: str) -> tuple[bytes, str]:
        return error_document(message), "application/x-votable+xml"
