"""Runs queued jobs: claiming, heartbeats, abort and time limits, recovery, destruction.

Every process that serves a UWS service runs an engine. Engines share the job table and
know nothing of each other: a job is claimed by exactly one of them (SKIP LOCKED), a
worker that stops heart-beating has its jobs queued again by whichever engine notices
first, and a job interrupted too often ends in ERROR with the reason — never stuck.
Services plug in a ``JobKind``: the TAP query runner now, reductions later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from vo_service.uws.events import JobEvents
from vo_service.uws.model import EXECUTING, Job, Result
from vo_service.uws.store import JobStore

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job cannot complete; the message is the errorSummary users read."""

    def __init__(self, message: str, error_type: str = "fatal") -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class JobKind(Protocol):
    job_type: str

    async def run(self, job: Job, workdir: Path) -> list[Result]: ...

    def error_document(self, message: str) -> tuple[bytes, str]: ...


@dataclass(frozen=True)
class EngineSettings:
    concurrency: int = 2
    heartbeat_s: float = 2.0
    stale_after_s: float = 15.0
    sweep_every_s: float = 10.0
    max_attempts: int = 3


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Engine:
    def __init__(
        self,
        store: JobStore,
        events: JobEvents,
        home: Path,
        kinds: Sequence[JobKind],
        settings: EngineSettings | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.home = home
        self.kinds = {k.job_type: k for k in kinds}
        self.settings = settings or EngineSettings()
        self.host = socket.gethostname()
        self.worker = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self._tasks: list[asyncio.Task[None]] = []

    def workdir(self, job_id: str) -> Path:
        return self.home / "jobs" / job_id

    async def start(self) -> None:
        await self._recover_dead_local_workers()
        for index in range(self.settings.concurrency):
            self._tasks.append(asyncio.create_task(self._runner(), name=f"uws-runner-{index}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="uws-housekeeping"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.release(self.worker)

    async def _recover_dead_local_workers(self) -> None:
        """After a crash on this host, requeue at once rather than after the stale delay."""
        dead = []
        for worker in await self.store.workers_on_host(self.host):
            parts = worker.split(":")
            if len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
                dead.append(worker)
        if dead:
            jobs = await self.store.recover(
                stale_after=timedelta(days=3650),
                dead_workers=dead,
                max_attempts=self.settings.max_attempts,
            )
            log.info("recovered %d jobs of dead workers %s", len(jobs), dead)

    async def _runner(self) -> None:
        while True:
            job = await self.store.claim(list(self.kinds), self.worker)
            if job is None:
                await self.events.wait_any(5.0)
                continue
            await self._execute(job)

    async def _execute(self, job: Job) -> None:
        kind = self.kinds[job.job_type]
        workdir = self.workdir(job.job_id)
        workdir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + job.execution_duration if job.execution_duration else None
        task = asyncio.create_task(kind.run(job, workdir), name=f"job-{job.job_id}")
        try:
            while not task.done():
                remaining = deadline - loop.time() if deadline is not None else 5.0
                if remaining <= 0:
                    task.cancel()
                    await self.store.fail(
                        job.job_id,
                        self.worker,
                        f"execution duration of {job.execution_duration} s "
                        "exceeded; the job was stopped",
                    )
                    return
                await asyncio.wait({task}, timeout=min(remaining, 1.0))
                if task.done():
                    break
                if await self.store.phase_of(job.job_id) != EXECUTING:
                    task.cancel()  # aborted or deleted by the user
                    return
            results = task.result()
        except asyncio.CancelledError:
            task.cancel()
            raise
        except JobFailed as exc:
            await self.store.fail(job.job_id, self.worker, exc.message, exc.error_type)
            return
        except Exception:
            log.exception("job %s failed unexpectedly", job.job_id)
            await self.store.fail(
                job.job_id,
                self.worker,
                "internal error while executing the job; the incident was logged",
            )
            return
        await self.store.finish(job.job_id, self.worker, results)

    async def _housekeeping(self) -> None:
        since_sweep = self.settings.sweep_every_s
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.store.heartbeat(self.worker)
                await self.store.recover(
                    stale_after=timedelta(seconds=self.settings.stale_after_s),
                    max_attempts=self.settings.max_attempts,
                )
                since_sweep += self.settings.heartbeat_s
                if since_sweep >= self.settings.sweep_every_s:
                    since_sweep = 0
                    await self.sweep()
            except Exception:  # keep the engine alive through a database hiccup
                log.exception("UWS housekeeping failed; retrying")

    async def sweep(self) -> int:
        """Delete jobs past their destruction time, with their files."""
        expired = await self.store.expired()
        for job in expired:
            shutil.rmtree(self.workdir(job.job_id), ignore_errors=True)
        return len(expired)

    def remove_files(self, job_id: str) -> None:
        shutil.rmtree(self.workdir(job_id), ignore_errors=True)
