"""What a running app holds: settings, the connection pool, the job engine, its health."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from psycopg_pool import AsyncConnectionPool

from vo_service.config import Settings
from vo_service.uws.engine import Engine
from vo_service.vosi.availability import availability


@dataclass
class AppState:
    settings: Settings
    pool: AsyncConnectionPool
    engine: Engine
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def last_modified(self) -> str:
        """Metadata changes only with a restart (declarations are read at start)."""
        return format_datetime(self.started, usegmt=True)

    async def availability(self) -> bytes:
        """A real check: the database must answer a query within two seconds."""
        try:
            async with asyncio.timeout(2), self.pool.connection() as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:  # any failure means: not available, say why
            return availability(False, None, [f"database unreachable: {type(exc).__name__}"])
        return availability(True, self.started, ["all systems nominal"])
