"""One LISTEN connection per process turns job-table changes into asyncio wake-ups.

Blocking ``WAIT`` requests, idle workers and running jobs (to notice an ABORT) all wait
on these events; no one polls the database in a loop. A short fallback timeout keeps
everything correct if a notification is ever missed (e.g. while reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import psycopg

from vo_service.uws.store import CHANNEL

log = logging.getLogger(__name__)


class JobEvents:
    """Job changes, plus other channels' notifications handed to their callbacks
    (``also``); a callback is called with None when the connection is lost and with ""
    once it listens again, as notifications may have been missed in between."""

    def __init__(
        self, database_url: str, also: dict[str, Callable[[str | None], None]] | None = None
    ) -> None:
        self.database_url = database_url
        self._also = also or {}
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.any_change = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="uws-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True
                ) as conn:
                    for channel in (CHANNEL, *self._also):
                        await conn.execute(f"LISTEN {channel}")
                    self._tell_others("")
                    async for note in conn.notifies():
                        if note.channel == CHANNEL:
                            self._fire(note.payload)
                        elif note.channel in self._also:
                            self._also[note.channel](note.payload)
            except asyncio.CancelledError:
                self._tell_others(None)
                raise
            except Exception as exc:  # reconnect; waiters fall back to their timeouts
                log.warning("job listener lost its connection (%s); reconnecting", exc)
                self._tell_others(None)
                self._fire(None)
                await asyncio.sleep(1)

    def _tell_others(self, payload: str | None) -> None:
        for callback in self._also.values():
            callback(payload)

    def _fire(self, job_id: str | None) -> None:
        self.any_change.set()
        self.any_change = asyncio.Event()
        targets = (
            self._waiters.get(job_id, set())
            if job_id
            else {e for events in self._waiters.values() for e in events}
        )
        for event in targets:
            event.set()

    async def wait_for(self, job_id: str, timeout: float) -> bool:
        """Block until the job changes or the timeout passes; True when it changed."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters[job_id].discard(event)
            if not self._waiters[job_id]:
                del self._waiters[job_id]

    async def wait_any(self, timeout: float) -> None:
        event = self.any_change
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
