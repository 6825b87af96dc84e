"""A local GAVO DaCHS serving the benchmark's ``archive.frames``, for live comparisons.

``bench_tap.py --dachs auto`` compares vo-service with DaCHS on the same queries and the
same rows; before, only figures measured elsewhere, on an unknown table, could be quoted.
This module makes that peer reproducible on a Debian machine (as root):

- installs ``gavodachs2-server`` with apt when it is not installed. Its postinst runs
  ``createdb`` and ``dachs init`` against the system cluster (15/main, port 5432), so
  PostgreSQL is installed and that cluster started first. An installed PostgreSQL is
  never upgraded on the way: vo-service's own clusters run on the same binaries. No
  systemd is needed: the cluster runs under ``pg_ctlcluster``, DaCHS under
  ``dachs serve start``;
- writes an RD (``/var/gavo/inputs/vobench/q.rd``) whose table ``archive.frames`` is
  generated from our declarative metadata (names, types, units, UCDs, descriptions and
  indexes of the published columns), so DaCHS describes the same table and the
  benchmark's queries run unchanged; ``pos`` is a pgsphere ``spoint`` on both sides;
- copies the rows vo-service was filled with into it, value for value, and analyses it;
- sets ``/etc/gavo.rc`` so DaCHS listens on a free loopback port with the MAXREC limits
  and sync timeout the benchmark gives vo-service.

Command line: ``dachs_peer.py up [--source DATABASE_URL] [--maxrec N]`` loads from a
vo-service database when given one, starts DaCHS and prints its TAP URL;
``dachs_peer.py down`` stops it (and the system cluster, if ``up`` started that).
"""

from __future__ import annotations

import argparse
import configparser
import os
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vo_service.metadata import Table, catalog

TABLE = "archive.frames"
RD_ID = "vobench/q"
RD_PATH = Path("/var/gavo/inputs") / f"{RD_ID}.rd"
SETTINGS = Path("/etc/gavo.rc")
CLUSTER = ("15", "main")  # the cluster gavodachs2-server sets DaCHS up on (bookworm)
PG_PACKAGES = ["postgresql-15", "postgresql-15-pgsphere", "postgresql-15-q3c"]
# Marks a system cluster started here, so that ``down`` stops only what ``up`` started.
STARTED_MARK = Path("/var/gavo/state/vobench-started-cluster")
# pgsphere prints at most 15 digits, so an spoint does not survive text COPY bit for bit;
# it is rebuilt from ra/dec (copied exactly) with the expression the benchmark fills with.
DERIVED = {"pos": "spoint(radians(ra), radians(dec))"}


class PeerError(RuntimeError):
    """DaCHS could not be installed, loaded or started; the message says where."""


def run(args: list[str], user: str | None = None, stdin: str | None = None) -> str:
    """Run a command (as ``user`` when given); its output, or PeerError with its text."""
    cmd = ["runuser", "-u", user, "--", *args] if user else args
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        output = (done.stdout[-2000:] + done.stderr[-3000:]).strip()
        raise PeerError(f"{' '.join(cmd)} failed with status {done.returncode}:\n{output}")
    return done.stdout


def cluster_online() -> bool:
    if not shutil.which("pg_ctlcluster"):  # PostgreSQL not installed yet
        return False
    status = subprocess.run(["pg_ctlcluster", *CLUSTER, "status"], capture_output=True)
    return status.returncode == 0


def start_cluster() -> None:
    if not cluster_online():
        run(["pg_ctlcluster", *CLUSTER, "start"])


def installed() -> bool:
    """gavodachs2-server configured (``dachs`` alone comes with python3-gavo, no /var/gavo)."""
    query = ["dpkg-query", "-W", "-f=${Status}", "gavodachs2-server"]
    status = subprocess.run(query, capture_output=True, text=True).stdout
    return status == "install ok installed" and shutil.which("dachs") is not None


def ensure_installed() -> None:
    """Install DaCHS unless it is; the system cluster is started on the way."""
    if installed():
        return
    if os.geteuid() != 0:
        raise PeerError("DaCHS is not installed, and installing it needs root")
    print("installing gavodachs2-server with apt (PostgreSQL 15, pgsphere, q3c) ...")
    run(["apt-get", "update", "-q"])
    # --no-upgrade: an installed PostgreSQL stays as it is; vo-service's clusters use it too,
    # and with bookworm-security's 15.20 "CREATE EXTENSION pg_sphere" (pgsphere 1.1.1) fails:
    # "commutator operator @> is already the commutator of operator <@".
    install = ["apt-get", "install", "-y", "-q", "--no-upgrade"]
    run([*install, *PG_PACKAGES])
    start_cluster()  # the postinst below needs a running cluster
    run([*install, "gavodachs2-server"])
    if not installed():
        raise PeerError("apt-get install gavodachs2-server left it unconfigured")


def rd_xml(table: Table) -> str:
    """A DaCHS resource descriptor for the published columns of ``table``."""
    columns = table.published_columns
    names = {c.name for c in columns}
    resource = ET.Element("resource", schema=table.schema)
    ET.SubElement(resource, "meta", name="title").text = "vo-service benchmark peer"
    about = f"{table.qualified_name} as vo-service publishes it, for bench_tap.py"
    ET.SubElement(resource, "meta", name="description").text = about
    attrs = {"id": table.name, "onDisk": "True", "adql": "True"}
    if table.primary_key and set(table.primary_key) <= names:
        attrs["primary"] = ", ".join(table.primary_key)
    rd_table = ET.SubElement(resource, "table", attrs)
    ET.SubElement(rd_table, "meta", name="description").text = table.description
    indexed = [c.name for c in columns if c.indexed] + [i.columns[0] for i in table.indexes]
    for name in dict.fromkeys(n for n in indexed if n in names and n not in table.primary_key):
        index = ET.SubElement(rd_table, "index", columns=name)
        if table.column(name).sql_type.startswith("s"):  # pgsphere types want GiST
            index.set("method", "GIST")
    for col in columns:
        level = "10" if col.principal else "30"  # DaCHS: principal is verbLevel <= 20
        attrs = {"name": col.name, "type": col.sql_type, "verbLevel": level}
        for key in ("unit", "ucd", "utype", "description"):
            if getattr(col, key):
                attrs[key] = getattr(col, key)
        if not col.nullable:
            attrs["required"] = "True"
        ET.SubElement(rd_table, "column", attrs)
    data = ET.SubElement(resource, "data", id="import")
    ET.SubElement(data, "make", table=table.name)
    ET.indent(resource)
    return ET.tostring(resource, encoding="unicode") + "\n"


def import_table(table: Table) -> None:
    """Write the RD and let ``dachs imp`` (re)create the empty table and its metadata."""
    RD_PATH.parent.mkdir(parents=True, exist_ok=True)
    RD_PATH.write_text(rd_xml(table))
    shutil.chown(RD_PATH.parent, "dachsroot", "gavo")
    shutil.chown(RD_PATH, "dachsroot", "gavo")
    run(["dachs", "imp", RD_ID], user="dachsroot")


def load(source_url: str, table: Table) -> int:
    """Copy the published columns of every row of ``table`` at ``source_url`` into DaCHS.

    The rows go through one psql session of the ``postgres`` user (peer authentication,
    no password needed) into a staging table, then into the DaCHS table in key order, the
    order vo-service's rows were written in, so that ``TOP N`` picks the same rows.
    """
    names = [c.name for c in table.published_columns]
    copied = [n for n in names if n not in DERIVED]
    target = table.qualified_name
    select = ", ".join(DERIVED.get(n, n) for n in names)
    with psycopg.connect(source_url) as conn, conn.cursor() as cur:
        key = ", ".join(table.primary_key) or "1"
        query = f"COPY (SELECT {', '.join(copied)} FROM {target} ORDER BY {key}) TO STDOUT"
        with cur.copy(query) as copy:
            rows = b"".join(bytes(chunk) for chunk in copy).decode()
    script = (
        "\\set ON_ERROR_STOP on\nSET client_min_messages = warning;\nBEGIN;\n"
        f"CREATE TEMP TABLE stage (LIKE {target});\n"
        f"COPY stage ({', '.join(copied)}) FROM STDIN;\n{rows}\\.\n"
        f"INSERT INTO {target} ({', '.join(names)}) SELECT {select} FROM stage;\n"
        f"COMMIT;\nVACUUM ANALYZE {target};\nSELECT count(*) FROM {target};\n"
    )
    out = run(["psql", "-X", "-q", "-A", "-t", "-d", "gavo"], user="postgres", stdin=script)
    run(["dachs", "limits", RD_ID], user="dachsroot")
    return int(out.split()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_settings(port: int, maxrec: int, hard_maxrec: int, sync_timeout: int) -> None:
    """Set our keys in /etc/gavo.rc, keeping whatever else is configured there."""
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign]
    config.read(SETTINGS)
    wanted = {
        "web": {"serverPort": str(port), "serverURL": f"http://127.0.0.1:{port}",
                "bindAddress": "127.0.0.1"},
        "async": {"defaultMAXREC": str(maxrec), "hardMAXREC": str(hard_maxrec),
                  "defaultExecTimeSync": str(sync_timeout)},
    }  # fmt: skip
    for section, values in wanted.items():
        if not config.has_section(section):
            config.add_section(section)
        for key, value in values.items():
            config.set(section, key, value)
    with SETTINGS.open("w") as out:
        out.write("# [web] and [async] keys maintained by tests/benchmarks/dachs_peer.py\n")
        config.write(out)


def server_pid() -> int | None:
    try:
        pid = int(Path("/var/gavo/state/web.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def start_server(port: int) -> str:
    """``dachs serve start`` (it drops to the gavo user) and wait until TAP answers."""
    run(["dachs", "serve", "start"])
    tap = f"http://127.0.0.1:{port}/tap"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{tap}/availability", timeout=5).status_code == 200:
                return tap
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    log = Path("/var/gavo/logs/server.stderr")
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise PeerError(f"DaCHS did not answer at {tap}/availability within 120 s\n{tail}")


def stop_server() -> None:
    pid = server_pid()
    if pid is None:
        return
    run(["dachs", "serve", "stop"])
    deadline = time.monotonic() + 30
    while server_pid() == pid and time.monotonic() < deadline:
        time.sleep(0.2)


@dataclass
class Peer:
    """A running DaCHS; ``stop`` takes down what ``up`` started."""

    tap: str
    started_cluster: bool

    def stop(self) -> None:
        stop_server()
        if self.started_cluster and cluster_online():
            run(["pg_ctlcluster", *CLUSTER, "stop"])
        if self.started_cluster:
            STARTED_MARK.unlink(missing_ok=True)


def up(source_url: str | None, maxrec: int, hard_maxrec: int, sync_timeout: int = 7200) -> Peer:
    """Install if need be, (re)load from ``source_url`` when given, start; the TAP URL."""
    ours = not cluster_online() or STARTED_MARK.exists()  # the cluster is ours to stop
    try:
        ensure_installed()
        start_cluster()
        if ours:
            STARTED_MARK.touch()
        stop_server()  # a server left running would not see new settings or a new table
        port = free_port()
        write_settings(port, maxrec, hard_maxrec, sync_timeout)
        if source_url:
            table = catalog().table(TABLE)
            import_table(table)
            print(f"DaCHS: {load(source_url, table)} rows copied into {TABLE}")
        return Peer(start_server(port), ours)
    except BaseException:
        Peer("", ours).stop()
        raise


def down() -> None:
    Peer("", STARTED_MARK.exists()).stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start DaCHS, loading rows when --source is given")
    start.add_argument("--source", help="vo-service database URL to copy archive.frames from")
    start.add_argument("--maxrec", type=int, default=100_000)
    commands.add_parser("down", help="stop DaCHS and a system cluster that up started")
    args = parser.parse_args()
    try:
        if args.command == "up":
            hard = max(args.maxrec, 20_000_000)
            print(up(args.source, args.maxrec, hard).tap)
        else:
            down()
    except PeerError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
