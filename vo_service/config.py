"""Settings read from the environment once, so every entry point agrees on them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    query_role: str
    sync_maxrec: int
    hard_maxrec: int
    sync_timeout_s: float
    async_timeout_s: float
    async_retention_days: float
    public_url: str | None
    upload_limit_bytes: int
    workers: int

    @property
    def embedded(self) -> bool:
        """True when the service runs its own PostgreSQL cluster under ``home``."""
        return not self.database_url


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def settings() -> Settings:
    return Settings(
        home=Path(os.environ.get("VO_SERVICE_HOME", "var")).resolve(),
        database_url=os.environ.get("DATABASE_URL") or None,
        query_role=os.environ.get("VO_SERVICE_QUERY_ROLE", "vo_tap_reader"),
        sync_maxrec=_int("VO_SERVICE_MAXREC", 100_000),
        hard_maxrec=_int("VO_SERVICE_HARD_MAXREC", 10_000_000),
        sync_timeout_s=float(os.environ.get("VO_SERVICE_SYNC_TIMEOUT", "60")),
        async_timeout_s=float(os.environ.get("VO_SERVICE_ASYNC_TIMEOUT", "3600")),
        async_retention_days=float(os.environ.get("VO_SERVICE_RETENTION_DAYS", "7")),
        public_url=os.environ.get("VO_SERVICE_PUBLIC_URL") or None,
        upload_limit_bytes=_int("VO_SERVICE_UPLOAD_LIMIT", 50 * 1024 * 1024),
        workers=_int("VO_SERVICE_WORKERS", 1),
    )
