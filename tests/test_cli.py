"""The command line: every command documents itself and fails clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    [],
    ["init"],
    ["db"],
    ["ingest"],
    ["simulate-night"],
    ["serve"],
    ["demo"],
    ["adql"],
    ["user", "add"],
    ["proposal", "add"],
    ["member", "add"],
    ["token", "create"],
    ["token", "revoke"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vo_service.cli.main", *command, "--help"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0
    assert "usage: vo-service" in proc.stdout


def test_db_status_and_ingest_of_missing_path(db_url: str) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "vo_service.cli.main", "db", "status"],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0 and "running on 127.0.0.1" in status.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "vo_service.cli.main", "ingest", "/nonexistent/frames"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_adql_command(db_url: str) -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "vo_service.cli.main",
            "adql",
            "SELECT TOP 1 obs_id FROM archive.frames",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "archive" in ok.stdout and "LIMIT" in ok.stdout.upper()
    bad = subprocess.run(
        [sys.executable, "-m", "vo_service.cli.main", "adql", "--parse-only", "SELECT FROM"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "line 1" in bad.stderr


def test_database_url_points_at_an_existing_server(db_url: str) -> None:
    """With DATABASE_URL the service uses that server and never manages a cluster."""
    import os

    env = {**os.environ, "DATABASE_URL": db_url, "VO_SERVICE_HOME": "/nonexistent/home"}
    upgrade = subprocess.run(
        [sys.executable, "-m", "vo_service.cli.main", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert upgrade.returncode == 0 and "database up to date" in upgrade.stdout
    status = subprocess.run(
        [sys.executable, "-m", "vo_service.cli.main", "db", "status"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert status.returncode == 0 and "external database" in status.stdout
    stop = subprocess.run(
        [sys.executable, "-m", "vo_service.cli.main", "db", "stop"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert stop.returncode == 2 and "not managed by vo-service" in stop.stderr
