"""Database access: where the database is, and bringing it up for a command's lifetime."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from vo_service.config import Settings
from vo_service.db.cluster import ClusterError, EmbeddedCluster
from vo_service.db.schema import upgrade
from vo_service.metadata import catalog

__all__ = ["ClusterError", "EmbeddedCluster", "connect", "database", "database_url", "upgrade"]


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return EmbeddedCluster(settings.home).url()


def connect(settings: Settings, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(database_url(settings), **kwargs)  # type: ignore[arg-type]


@contextmanager
def database(settings: Settings, *, migrate: bool = True) -> Iterator[str]:
    """Yield a URL of an up-to-date database, starting (and later stopping) the embedded one.

    The embedded cluster is stopped on exit only when this call started it, so a
    ``vo-service ingest`` next to a running ``vo-service serve`` leaves the server alone.
    """
    cluster = None if settings.database_url else EmbeddedCluster(settings.home)
    started = cluster.start() if cluster else False
    try:
        url = database_url(settings)
        if migrate:
            with psycopg.connect(url) as conn:
                upgrade(conn, catalog(), settings.query_role)
        yield url
    finally:
        if cluster is not None and started:
            cluster.stop()
