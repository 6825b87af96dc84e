"""The embedded PostgreSQL cluster: a private server the service owns under its home.

A new user gets a working database without configuring one: on first use the cluster is
created with the system's ``initdb`` under ``VO_SERVICE_HOME/pg``, started with ``pg_ctl``
on a free loopback port and stopped again by whoever started it. PostgreSQL refuses to run
as root, so when the service runs as root the server process runs as the ``postgres``
system user (created by Debian's packages) and owns only the cluster directory.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "vo_admin"
DATABASE = "vo"


class ClusterError(RuntimeError):
    """The embedded cluster could not be created, started or reached."""


def find_bindir() -> Path:
    """Newest PostgreSQL server binaries; ``VO_SERVICE_PG_BINDIR`` overrides the search."""
    override = os.environ.get("VO_SERVICE_PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ClusterError(
        "PostgreSQL server binaries not found; install postgresql-15 (make demo does) "
        "or set DATABASE_URL to an existing server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedCluster:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "pg"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.home / "pg-password"

    # -- running commands as the right user ------------------------------------------

    def _owner(self) -> pwd.struct_passwd | None:
        """The system user the server runs as when we are root, else None (ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(os.environ.get("VO_SERVICE_PG_USER", "postgres"))
        except KeyError:
            raise ClusterError(
                "running as root, but there is no 'postgres' system user to run the "
                "embedded PostgreSQL; install postgresql-15 or run as a normal user"
            ) from None

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        owner = self._owner()
        kwargs: dict = {}
        if owner is not None:
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        # A session of its own: Ctrl-C in the terminal must reach us, not the postmaster,
        # so the server is stopped in order by whoever started it.
        proc = subprocess.run(
            args,
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            start_new_session=True,
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"{Path(args[0]).name} failed: {proc.stderr.strip() or proc.stdout}")
        return proc

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster with password authentication on loopback only."""
        if self.initialized:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(mode=0o755, exist_ok=True)
        owner = self._owner()
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            probe = self._run(["test", "-w", str(self.root)], check=False)
            if probe.returncode != 0:
                raise ClusterError(
                    f"the postgres user cannot reach {self.root}; make its parent "
                    "directories traversable (chmod o+x) or choose another VO_SERVICE_HOME"
                )
        password = secrets.token_urlsafe(24)
        pwfile = self.root / ".initdb-pw"
        pwfile.write_text(password + "\n")
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        try:
            self._run(
                [
                    str(find_bindir() / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.password_file.write_text(password)
        self.password_file.chmod(0o600)

    def port(self) -> int | None:
        """Port of the running server, read from its pid file; None when it is down."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port

    @property
    def running(self) -> bool:
        return self.port() is not None

    def start(self, port: int | None = None) -> bool:
        """Start the server unless it runs already; True when this call started it."""
        self.init()
        if self.running:
            self._wait_ready()
            return False
        fast = os.environ.get("VO_SERVICE_PG_FAST") == "1"
        last_error: ClusterError | None = None
        for _attempt in range(3):
            chosen = port or free_port()
            opts = [
                f"-p {chosen}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c max_connections=200",
                "-c shared_buffers=128MB",
            ]
            if fast:  # throw-away test clusters: durability buys nothing there
                opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            try:
                self._run(
                    [
                        str(find_bindir() / "pg_ctl"),
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        " ".join(opts),
                        "start",
                    ]
                )
            except ClusterError as exc:
                last_error = exc
                if port is not None:
                    break
                continue
            self._wait_ready()
            self._ensure_database()
            return True
        tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
        raise ClusterError(f"{last_error}\n{tail}")

    def stop(self) -> None:
        if not self.initialized or not self.running:
            return
        self._run(
            [str(find_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]
        )

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=5):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"embedded PostgreSQL does not answer: {exc}") from exc
                time.sleep(0.2)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def url(self, database: str = DATABASE) -> str:
        port = self.port()
        if port is None:
            raise ClusterError("the embedded PostgreSQL is not running (vo-service db start)")
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{database}"
