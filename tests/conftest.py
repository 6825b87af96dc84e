"""Test fixtures: a private PostgreSQL cluster, a simulated night, and the real server.

Everything is real: the cluster is started by the same code the service uses (in a
temporary VO_SERVICE_HOME, never a system-wide server), the night is written by the
simulator and ingested by the loader, and the app runs as a separate ``vo-service serve``
process spoken to over HTTP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

# Tests never use an outside database, whatever the environment says.
os.environ.pop("DATABASE_URL", None)
_HOME = Path(tempfile.mkdtemp(prefix="vo-service-test-"))
_HOME.chmod(0o755)  # the postgres system user must traverse it when tests run as root
os.environ["VO_SERVICE_HOME"] = str(_HOME)
os.environ["VO_SERVICE_PG_FAST"] = "1"
_CACHE = Path(__file__).resolve().parents[1] / "var" / "cache"
if _CACHE.exists():  # reuse downloaded reference data between runs
    (_HOME / "cache").symlink_to(_CACHE)

from ingest.simulate import NightSummary, simulate_night  # noqa: E402
from tests.support import ServerProcess  # noqa: E402
from vo_service.config import Settings, settings  # noqa: E402
from vo_service.db import EmbeddedCluster, upgrade  # noqa: E402
from vo_service.metadata import catalog  # noqa: E402

NIGHT_SEED = 7


@pytest.fixture(scope="session")
def cfg() -> Settings:
    return settings()


@pytest.fixture(scope="session")
def cluster(cfg: Settings) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(cfg.home)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(cfg.home, ignore_errors=True)


@pytest.fixture(scope="session")
def db_url(cluster: EmbeddedCluster, cfg: Settings) -> str:
    url = cluster.url()
    with psycopg.connect(url) as conn:
        upgrade(conn, catalog(), cfg.query_role)
    return url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url) as connection:
        yield connection


@pytest.fixture(scope="session")
def night(cfg: Settings, db_url: str) -> NightSummary:
    """One simulated 2x2 night, ingested: the data every protocol test reads."""
    from ingest.loader import ingest

    summary = simulate_night(
        cfg.home / "nights" / "demo", seed=NIGHT_SEED, binning=2, home=cfg.home
    )
    with psycopg.connect(db_url) as connection:
        report = ingest(connection, [summary.outdir], progress=False)
    assert not report.quarantined, report.quarantined
    return summary


@pytest.fixture(scope="session")
def server(db_url: str, night: NightSummary) -> Iterator[str]:
    """The shared server every protocol test talks to; yields its base URL."""
    process = ServerProcess()
    yield process.base
    process.stop()


@pytest.fixture(scope="session")
def tap_url(server: str) -> str:
    return f"{server}/tap"


@pytest.fixture(scope="session")
def user_auth(db_url: str) -> tuple[str, str]:
    """A plain registered user, as (username, password) for HTTP Basic."""
    import asyncio

    from vo_service.auth import accounts

    async def create() -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            await accounts.add_user(conn, "jobuser", "jobs@example.org", "Spectra-Flux-900")

    asyncio.run(create())
    return ("jobuser", "Spectra-Flux-900")
