"""The job table: every state change of a UWS job is one SQL statement here.

Jobs live in PostgreSQL, never in process memory, so any number of service processes
share one queue and a restart loses nothing (UWS-P7). Workers claim queued jobs with
``FOR UPDATE SKIP LOCKED``; each change sends ``NOTIFY uws_jobs`` so that blocking
``WAIT`` requests and idle workers wake up at once instead of polling.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from vo_service.uws.model import (
    ABORTED,
    ACTIVE,
    ARCHIVED,
    COMPLETED,
    ERROR,
    EXECUTING,
    PENDING,
    QUEUED,
    Job,
    Parameter,
    Result,
)

CHANNEL = "uws_jobs"
_COLUMNS = (
    "job_id, job_type, owner, run_id, phase, creation_time, start_time, end_time, "
    "execution_duration, destruction, parameters, error_summary, error_type, results, "
    "attempts"
)


def _job(row: dict[str, Any]) -> Job:
    return Job(
        job_id=row["job_id"],
        job_type=row["job_type"],
        owner=row["owner"],
        run_id=row["run_id"],
        phase=row["phase"],
        creation_time=row["creation_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        execution_duration=row["execution_duration"],
        destruction=row["destruction"],
        parameters=tuple(Parameter(n, v, bool(r)) for n, v, r in row["parameters"]),
        error_summary=row["error_summary"],
        error_type=row["error_type"],
        results=tuple(Result.from_json(r) for r in row["results"]),
        attempts=row["attempts"],
    )


def _params_json(params: Sequence[Parameter]) -> Jsonb:
    return Jsonb([[p.name, p.value, p.by_reference] for p in params])


class JobStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _notify(self, conn: AsyncConnection, job_id: str) -> None:
        await conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, job_id])

    async def _one(self, query: str, params: Sequence[Any]) -> Job | None:
        async with self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(query, params)
            row = await cur.fetchone()
            if row is not None and query.lstrip().upper().startswith(("UPDATE", "INSERT")):
                await self._notify(conn, row["job_id"])
            return _job(row) if row else None

    async def create(
        self,
        job_type: str,
        owner: str | None,
        params: Sequence[Parameter],
        *,
        execution_duration: int,
        retention: timedelta,
    ) -> Job:
        job_id = secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        run_id = next((p.value for p in reversed(params) if p.name.upper() == "RUNID"), None)
        job = await self._one(
            f"INSERT INTO uws.jobs (job_id, job_type, owner, run_id, phase, execution_duration, "
            f"destruction, parameters) VALUES (%s, %s, %s, %s, %s, %s, now() + %s, %s) "
            f"RETURNING {_COLUMNS}",
            [
                job_id,
                job_type,
                owner,
                run_id,
                PENDING,
                execution_duration,
                retention,
                _params_json(params),
            ],
        )
        assert job is not None
        return job

    async def get(self, job_type: str, job_id: str) -> Job | None:
        return await self._one(
            f"SELECT {_COLUMNS} FROM uws.jobs WHERE job_type = %s AND job_id = %s",
            [job_type, job_id],
        )

    async def list(
        self,
        job_type: str,
        owner: str | None,
        *,
        phases: Sequence[str] = (),
        after: datetime | None = None,
        last: int | None = None,
    ) -> list[Job]:
        clauses = ["job_type = %s", "owner IS NOT DISTINCT FROM %s"]
        params: list[Any] = [job_type, owner]
        if phases:
            clauses.append("phase = ANY(%s)")
            params.append(list(phases))
        else:
            clauses.append("phase <> %s")
            params.append(ARCHIVED)
        if after is not None:
            clauses.append("creation_time > %s")
            params.append(after)
        query = f"SELECT {_COLUMNS} FROM uws.jobs WHERE {' AND '.join(clauses)}"
        if last is not None:
            query = f"SELECT * FROM ({query} ORDER BY creation_time DESC LIMIT %s) AS recent"
            params.append(last)
        query += " ORDER BY creation_time"
        async with self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(query, params)
            return [_job(r) for r in await cur.fetchall()]

    async def set_parameters(self, job_id: str, params: Sequence[Parameter]) -> Job | None:
        """Only while PENDING (UWS-S5); the caller has merged the values."""
        run_id = next((p.value for p in reversed(params) if p.name.upper() == "RUNID"), None)
        return await self._one(
            f"UPDATE uws.jobs SET parameters = %s, run_id = %s WHERE job_id = %s AND phase = %s "
            f"RETURNING {_COLUMNS}",
            [_params_json(params), run_id, job_id, PENDING],
        )

    async def set_destruction(self, job_id: str, when: datetime) -> Job | None:
        return await self._one(
            f"UPDATE uws.jobs SET destruction = %s WHERE job_id = %s RETURNING {_COLUMNS}",
            [when, job_id],
        )

    async def set_execution_duration(self, job_id: str, seconds: int) -> Job | None:
        return await self._one(
            f"UPDATE uws.jobs SET execution_duration = %s WHERE job_id = %s AND phase = %s "
            f"RETURNING {_COLUMNS}",
            [seconds, job_id, PENDING],
        )

    async def queue(self, job_id: str) -> Job | None:
        return await self._one(
            f"UPDATE uws.jobs SET phase = %s WHERE job_id = %s AND phase = %s RETURNING {_COLUMNS}",
            [QUEUED, job_id, PENDING],
        )

    async def abort(self, job_id: str) -> Job | None:
        return await self._one(
            f"UPDATE uws.jobs SET phase = %s, end_time = now(), worker = NULL "
            f"WHERE job_id = %s AND phase = ANY(%s) RETURNING {_COLUMNS}",
            [ABORTED, job_id, list(ACTIVE)],
        )

    async def delete(self, job_id: str) -> Job | None:
        return await self._one(
            f"DELETE FROM uws.jobs WHERE job_id = %s RETURNING {_COLUMNS}", [job_id]
        )

    async def claim(self, job_types: Sequence[str], worker: str) -> Job | None:
        """The oldest queued job of these types, now EXECUTING under this worker."""
        return await self._one(
            f"UPDATE uws.jobs SET phase = %s, start_time = now(), worker = %s, "
            f"heartbeat = now(), attempts = attempts + 1 WHERE job_id = ("
            f" SELECT job_id FROM uws.jobs WHERE phase = %s AND job_type = ANY(%s)"
            f" ORDER BY creation_time FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING {_COLUMNS}",
            [EXECUTING, worker, QUEUED, list(job_types)],
        )

    async def heartbeat(self, worker: str) -> list[str]:
        """Refresh this worker's jobs; returns the ids it still owns (others were aborted)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE uws.jobs SET heartbeat = now() WHERE worker = %s AND phase = %s "
                "RETURNING job_id",
                [worker, EXECUTING],
            )
            return [r[0] for r in await cur.fetchall()]

    async def finish(self, job_id: str, worker: str, results: Sequence[Result]) -> Job | None:
        return await self._one(
            f"UPDATE uws.jobs SET phase = %s, end_time = now(), results = %s, worker = NULL "
            f"WHERE job_id = %s AND worker = %s AND phase = %s RETURNING {_COLUMNS}",
            [COMPLETED, Jsonb([r.as_json() for r in results]), job_id, worker, EXECUTING],
        )

    async def fail(
        self, job_id: str, worker: str | None, message: str, error_type: str = "fatal"
    ) -> Job | None:
        return await self._one(
            f"UPDATE uws.jobs SET phase = %s, end_time = now(), error_summary = %s, "
            f"error_type = %s, worker = NULL WHERE job_id = %s "
            f"AND (worker = %s OR %s::text IS NULL) AND phase = ANY(%s) RETURNING {_COLUMNS}",
            [ERROR, message, error_type, job_id, worker, worker, list(ACTIVE)],
        )

    async def release(self, worker: str) -> None:
        """Hand this worker's jobs back to the queue (orderly shutdown)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE uws.jobs SET phase = %s, worker = NULL, start_time = NULL, "
                "attempts = greatest(attempts - 1, 0) WHERE worker = %s AND phase = %s "
                "RETURNING job_id",
                [QUEUED, worker, EXECUTING],
            )
            for (job_id,) in await cur.fetchall():
                await self._notify(conn, job_id)

    async def recover(
        self, *, stale_after: timedelta, dead_workers: Sequence[str] = (), max_attempts: int = 3
    ) -> list[Job]:
        """Executing jobs whose worker died: queue them again, or end them in ERROR."""
        async with self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                f"UPDATE uws.jobs SET "
                f" phase = CASE WHEN attempts < %s THEN %s ELSE %s END,"
                f" error_summary = CASE WHEN attempts < %s THEN NULL ELSE"
                f"  'execution was interrupted ' || attempts || ' times (service restarts); "
                f"given up' END,"
                f" error_type = CASE WHEN attempts < %s THEN NULL ELSE 'transient' END,"
                f" end_time = CASE WHEN attempts < %s THEN NULL ELSE now() END,"
                f" worker = NULL "
                f"WHERE phase = %s AND (heartbeat < now() - %s OR worker = ANY(%s)) "
                f"RETURNING {_COLUMNS}",
                [
                    max_attempts,
                    QUEUED,
                    ERROR,
                    max_attempts,
                    max_attempts,
                    max_attempts,
                    EXECUTING,
                    stale_after,
                    list(dead_workers),
                ],
            )
            rows = await cur.fetchall()
            for row in rows:
                await self._notify(conn, row["job_id"])
            return [_job(r) for r in rows]

    async def workers_on_host(self, host: str) -> list[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT worker FROM uws.jobs WHERE phase = %s AND worker LIKE %s",
                [EXECUTING, f"{host}:%"],
            )
            return [r[0] for r in await cur.fetchall()]

    async def expired(self) -> list[Job]:
        """Jobs past their destruction time, removed from the table in the same step."""
        async with self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                f"DELETE FROM uws.jobs WHERE destruction < now() RETURNING {_COLUMNS}"
            )
            return [_job(r) for r in await cur.fetchall()]

    async def phase_of(self, job_id: str) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT phase FROM uws.jobs WHERE job_id = %s", [job_id])
            row = await cur.fetchone()
            return row[0] if row else None


__all__ = ["CHANNEL", "JobStore"]
