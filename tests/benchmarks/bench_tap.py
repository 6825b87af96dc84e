"""TAP benchmark: latency, throughput, dumps per format, async round trip, raw read rate.

Run: ``.venv/bin/python tests/benchmarks/bench_tap.py [--rows N] [--dachs auto|URL]``. It
starts its own PostgreSQL cluster and server in a temporary VO_SERVICE_HOME, fills
``archive.frames`` with N synthetic rows, and prints measured figures.

``--dachs auto`` measures GAVO DaCHS live, side by side: ``dachs_peer.py`` installs Debian's
``gavodachs2-server`` when ``dachs`` is missing (needs root), generates a DaCHS table
``archive.frames`` from our column metadata, copies the very rows vo-service was filled
with into it, raises DaCHS's MAXREC to N and starts it on a free port; the same queries
then run against both, each dump's row count is checked on both sides, and DaCHS is
stopped again (``--keep-dachs`` leaves it running). ``--dachs URL`` measures a DaCHS
already serving the same table. Only when DaCHS cannot be set up are figures measured
earlier for DaCHS 2.7 printed instead, marked as not measured in this run.
Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

HOME = Path(tempfile.mkdtemp(prefix="vo-bench-"))
HOME.chmod(0o755)
os.environ["VO_SERVICE_HOME"] = str(HOME)
os.environ.pop("DATABASE_URL", None)

import dachs_peer  # noqa: E402
import httpx  # noqa: E402
import psycopg  # noqa: E402
import pyarrow.parquet  # noqa: E402
import pyvo  # noqa: E402
from astropy.io import votable  # noqa: E402

from tests.support import ServerProcess  # noqa: E402
from vo_service.config import settings  # noqa: E402
from vo_service.db import EmbeddedCluster, upgrade  # noqa: E402
from vo_service.metadata import catalog  # noqa: E402

# Measured earlier for DaCHS 2.7 on an unknown table; printed only when --dachs auto
# cannot set DaCHS up.
DACHS_REFERENCE = {
    "tiny query latency (ms)": "43-61",
    "requests/s at concurrency 4": "22.7",
    "100k rows BINARY2 (s)": "1.1-1.4",
    "async round trip (s)": "2.9-3.2",
}
FORMATS = ["votable", "votable/b2", "votable/bin", "votable/td", "csv", "tsv", "parquet"]
TINY = "SELECT TOP 10 * FROM archive.frames"


def fill(url: str, rows: int, start: int = 0) -> None:
    """Synthetic frames spread over the sky; headers empty (they are not published)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """
            INSERT INTO archive.frames (obs_id, file_name, path, file_size, sha256, frame_type,
                object, proposal_id, instrument, camera, binning_x, binning_y, gain, rdnoise,
                date_obs, mjd_obs, night, exptime, ra, dec, pos, setup_key, ingested_at,
                header)
            SELECT 'b' || g, 'b' || g || '.fits', '/bench/b' || g || '.fits', 16000000,
                md5(g::text) || md5((-g)::text), (ARRAY['bias','flat','arc',
                'science_spectrum','science_image'])[1 + g %% 5], 'target ' || (g %% 500),
                'SOAR2024A-' || lpad((g %% 40)::text, 3, '0'), 'Goodman Spectrograph', 'Red',
                2, 2, 1.48, 3.89, timestamp '2024-01-01' + g * interval '37 seconds',
                60310 + g * 37.0 / 86400, '2024-01-01', (g %% 600)::float8,
                ra, dec, spoint(radians(ra), radians(dec)), 'Red|2x2', now(), '{}'::jsonb
            FROM (SELECT g, (g * 137.508) %% 360 AS ra,
                         degrees(asin(2 * ((g * 0.618034) %% 1) - 1)) AS dec
                  FROM generate_series(%s::bigint, %s::bigint) AS g) AS s
            """,
            [start + 1, start + rows],
        )
        conn.execute("ANALYZE archive.frames")


def timed(fn, repeat: int = 1) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def throughput(url: str, concurrency: int, total: int) -> float:
    """Requests per second in a steady state. A first, untimed round at the same
    concurrency lets each server open what it keeps open (HTTP connections, database
    connections in its pool), as it has long done when serving real clients."""
    params = {"LANG": "ADQL", "QUERY": TINY}
    async with httpx.AsyncClient(timeout=60) as client:

        async def run(requests: int) -> float:
            queue = iter(range(requests))

            async def worker() -> None:
                for _ in queue:
                    response = await client.get(f"{url}/sync", params=params)
                    response.raise_for_status()

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return requests / (time.perf_counter() - start)

        await run(max(total // 4, 2 * concurrency))
        return await run(total)


def error_text(body: bytes) -> str:
    """The message of a DALI error document (DaCHS answers unknown formats with one)."""
    found = re.search(rb'name="QUERY_STATUS" value="ERROR"[^>]*>([^<]*)', body[:200_000])
    text = found[1] if found else body[:200]
    return text.decode(errors="replace").strip()


def count_rows(fmt: str, body: bytes) -> tuple[int, str]:
    """Rows in one dump and how they were serialized; ValueError for an error document.

    Counted from the bytes after the timing, so the counting costs nothing measured.
    """
    if fmt == "parquet":
        if not body.startswith(b"PAR1"):
            raise ValueError(error_text(body))
        return pyarrow.parquet.ParquetFile(io.BytesIO(body)).metadata.num_rows, "Parquet"
    if fmt in ("csv", "tsv"):
        if body.lstrip().startswith(b"<"):
            raise ValueError(error_text(body))
        lines = body.rstrip(b"\n").count(b"\n") + 1 if body.strip() else 0
        header = body.startswith(b"frame_id")  # DaCHS writes TSV without a header line
        return lines - header, fmt.upper() + (" with header" if header else "")
    head = body[:200_000]
    if b'name="QUERY_STATUS" value="ERROR"' in head:
        raise ValueError(error_text(body))
    kinds = ("BINARY2", "BINARY", "TABLEDATA")
    kind = next((k for k in kinds if f"<{k}>".encode() in head), "without rows")
    table = votable.parse_single_table(io.BytesIO(body), verify="ignore")
    return len(table.array), f"VOTable {kind}"


def number(key: str, value: float) -> str:
    return f"{value:12.0f}" if key.endswith("(rows)") else f"{value:12.3f}"


def bench_service(tap: str, rows: int, label: str,
                  headers: dict[str, str] | None = None) -> dict[str, float]:  # fmt: skip
    figures: dict[str, float] = {}
    notes: dict[str, str] = {}
    client = httpx.Client(timeout=600, headers=headers or {})
    params = {"LANG": "ADQL", "QUERY": TINY}
    client.get(f"{tap}/sync", params=params)  # warm-up
    latencies = timed(lambda: client.get(f"{tap}/sync", params=params).raise_for_status(), 50)
    figures["tiny query latency (ms)"] = statistics.median(latencies) * 1000
    for concurrency in (1, 4, 16):
        rate = asyncio.run(throughput(tap, concurrency, 400))
        figures[f"requests/s at concurrency {concurrency}"] = rate
    cone = ("SELECT obs_id, ra, dec FROM archive.frames WHERE "
            "CONTAINS(pos, CIRCLE('ICRS', 180.0, 10.0, 0.1)) = 1")  # fmt: skip
    cone_times = timed(lambda: client.get(f"{tap}/sync", params={
        "LANG": "ADQL", "QUERY": cone}).raise_for_status(), 20)  # fmt: skip
    figures["cone r=0.1 deg latency (ms)"] = statistics.median(cone_times) * 1000
    dump = f"SELECT TOP {rows} * FROM archive.frames"
    bodies: dict[str, list[bytes]] = {}  # the last response per format, counted afterwards
    for fmt in FORMATS:

        def fetch(fmt: str = fmt) -> None:
            with client.stream(
                "GET",
                f"{tap}/sync",
                params={"LANG": "ADQL", "QUERY": dump, "MAXREC": str(rows), "FORMAT": fmt},
            ) as r:
                r.raise_for_status()
                bodies[fmt] = list(r.iter_bytes())

        best = min(timed(fetch, 3))
        key = f"{rows // 1000}k rows {fmt}"
        try:
            count, kind = count_rows(fmt, b"".join(bodies[fmt]))
        except ValueError as error:
            notes[key] = f"not offered: {error}"
            continue
        figures[f"{key} (s)"] = best
        figures[f"{key} (MB)"] = sum(len(c) for c in bodies.pop(fmt)) / 1e6
        figures[f"{key} (rows)"] = count
        notes[f"{key} served as"] = kind
    service = pyvo.dal.TAPService(tap)
    rounds = timed(lambda: service.run_async("SELECT TOP 100 obs_id FROM archive.frames"), 5)
    figures["async round trip (s)"] = statistics.median(rounds)
    print(f"\n== {label} ==")
    for key, value in figures.items():
        print(f"{key:42s} {number(key, value)}")
    for key, note in notes.items():
        print(f"{key:42s} {note}")
    return figures


def compare(ours: dict[str, float], theirs: dict[str, float], rows: int) -> None:
    """Both services' figures side by side; x = how many times faster vo-service is."""
    print("\n== vo-service vs DaCHS, measured in this run on the same rows ==")
    print(f"{'':42s} {'vo-service':>12s} {'DaCHS':>12s} {'x faster':>9s}")
    for key, mine in ours.items():
        other = theirs.get(key)
        if other is None:
            print(f"{key:42s} {number(key, mine)} {'—':>12s}")
            continue
        if key.endswith("(rows)"):
            note = "same" if mine == other else "DIFFERENT"
        elif key.endswith("(MB)"):
            note = f"size {mine / other:.2f}"
        elif "/s" in key:
            note = f"{mine / other:.2f}"
        else:
            note = f"{other / mine:.2f}"
        print(f"{key:42s} {number(key, mine)} {number(key, other)} {note:>9s}")
    b2 = f"{rows // 1000}k rows votable/b2 (s)"
    if b2 in theirs:
        print(f"{'BINARY2 dump: DaCHS time / vo-service time':42s} {theirs[b2] / ours[b2]:12.2f}"
              "   (required at 100k rows: at least 5)")  # fmt: skip


def interleaved(tap: str, token: str, params: dict, rounds: int) -> tuple[float, float]:
    """Median time of one query, anonymous and with a token, requests alternating so that
    the machine's drift hits both alike."""
    member = {"Authorization": f"Bearer {token}"}
    times: dict[bool, list[float]] = {False: [], True: []}
    with httpx.Client(timeout=600) as client:
        for i in range(rounds * 2):
            logged_in = bool(i % 2)
            start = time.perf_counter()
            with client.stream(
                "GET", f"{tap}/sync", params=params, headers=member if logged_in else {}
            ) as response:
                for _ in response.iter_bytes():
                    pass
            times[logged_in].append(time.perf_counter() - start)
    return statistics.median(times[False]), statistics.median(times[True])


def make_member_token(url: str) -> str:
    """A user in one of the synthetic proposals, so the policy has memberships to check."""
    import asyncio

    from vo_service.auth import accounts

    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            await accounts.add_user(conn, "bench", "bench@example.org", None)
            await accounts.add_proposal(conn, "SOAR2024A-007", "bench")
            return (await accounts.create_token(conn, "bench"))[1]

    return asyncio.run(run())


def peak_rss_mb(pid: int) -> float:
    """High-water mark of a process's resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def big_stream(url: str, rows: int) -> None:
    """Stream ``rows`` rows as BINARY2 from a fresh server and report its peak memory.

    A server of its own, so that nothing measured before raised its high-water mark. The
    rows come from a cross join of the table with itself, so no 10M-row table has to be
    written first.
    """
    server = ServerProcess(name="stream")
    try:
        before = peak_rss_mb(server.proc.pid)
        start = time.perf_counter()
        size = 0
        query = f"SELECT TOP {rows} a.* FROM archive.frames AS a CROSS JOIN archive.frames AS b"
        params = {"LANG": "ADQL", "QUERY": query, "MAXREC": str(rows)}
        with httpx.stream("GET", f"{server.base}/tap/sync", params=params, timeout=7200) as r:
            for chunk in r.iter_bytes():
                size += len(chunk)
        elapsed = time.perf_counter() - start
        after = peak_rss_mb(server.proc.pid)
    finally:
        server.stop()
    print(f"\n== {rows:,} rows streamed as BINARY2 (fresh server process) ==")
    print(f"{'time (s)':42s} {elapsed:12.1f}")
    print(f"{'rows/s':42s} {rows / elapsed:12.0f}")
    print(f"{'bytes (MB)':42s} {size / 1e6:12.1f}")
    print(f"{'server peak RSS after start-up (MB)':42s} {before:12.1f}")
    print(f"{'server peak RSS after the stream (MB)':42s} {after:12.1f}")


def raw_read_rate(url: str, rows: int) -> float:
    columns = ", ".join(c.name for c in catalog().table("archive.frames").published_columns
                        if c.name != "pos")  # fmt: skip
    with psycopg.connect(url) as conn, conn.cursor(name="raw", binary=True) as cur:
        start = time.perf_counter()
        cur.execute(f"SELECT {columns}, long(pos), lat(pos) FROM archive.frames LIMIT {rows}")
        count = 0
        while batch := cur.fetchmany(10_000):
            count += len(batch)
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--workers", type=int, default=1, help="server worker processes (serve --workers)"
    )
    parser.add_argument(
        "--dachs",
        help="'auto': install (if need be), load and start a local DaCHS via dachs_peer.py; "
        "or the TAP URL of a DaCHS serving the same archive.frames",
    )
    parser.add_argument(
        "--keep-dachs", action="store_true", help="leave the DaCHS of --dachs auto running"
    )
    parser.add_argument(
        "--stream-rows",
        type=int,
        default=0,
        help="also stream this many rows (e.g. 10000000) and report memory",
    )
    parser.add_argument(
        "--stream-only", action="store_true", help="only the --stream-rows measurement"
    )
    args = parser.parse_args()
    cfg = settings()
    cluster = EmbeddedCluster(cfg.home)
    cluster.start()
    server = None
    peer: dachs_peer.Peer | None = None
    try:
        url = cluster.url()
        with psycopg.connect(url) as conn:
            upgrade(conn, catalog(), cfg.query_role)
        fill(url, args.rows)
        os.environ["VO_SERVICE_MAXREC"] = str(args.rows)
        os.environ["VO_SERVICE_HARD_MAXREC"] = str(max(args.rows, args.stream_rows))
        os.environ["VO_SERVICE_SYNC_TIMEOUT"] = "7200"
        if args.stream_only:
            big_stream(url, args.stream_rows)
            return
        server = ServerProcess(name="bench", workers=args.workers)
        ours = bench_service(f"{server.base}/tap", args.rows, "vo-service (anonymous)")
        token = make_member_token(url)
        member = bench_service(
            f"{server.base}/tap",
            args.rows,
            "vo-service (token of a proposal member)",
            {"Authorization": f"Bearer {token}"},
        )
        print("\n== row-level security: logged-in member vs anonymous ==")
        for key in ("tiny query latency (ms)", f"{args.rows // 1000}k rows votable (s)"):
            print(f"{key:42s} {member[key] / ours[key] - 1:+12.1%}")
        dump = {"LANG": "ADQL", "QUERY": f"SELECT TOP {args.rows} * FROM archive.frames",
                "MAXREC": str(args.rows)}  # fmt: skip
        for label, params, rounds in (
            ("tiny query", {"LANG": "ADQL", "QUERY": TINY}, 300),
            (f"{args.rows // 1000}k-row dump", dump, 5),
        ):
            anonymous, logged_in = interleaved(f"{server.base}/tap", token, params, rounds)
            print(f"{label + ', interleaved, anonymous (s)':42s} {anonymous:12.4f}")
            print(f"{label + ', interleaved, member (s)':42s} {logged_in:12.4f}")
            print(f"{label + ', member overhead':42s} {logged_in / anonymous - 1:+12.1%}")
        raw = max(raw_read_rate(url, args.rows) for _ in range(3))
        b2 = min(ours[f"{args.rows // 1000}k rows {fmt} (s)"] for fmt in ("votable", "votable/b2"))
        print(f"{'raw psycopg binary read, best of 3 (rows/s)':42s} {raw:12.0f}")
        print(f"{'BINARY2 stream rate vs raw read':42s} {(args.rows / b2) / raw:12.2%}")
        if args.stream_rows:
            big_stream(url, args.stream_rows)
        if args.dachs == "auto":
            try:
                hard = max(args.rows, args.stream_rows)
                peer = dachs_peer.up(url, maxrec=args.rows, hard_maxrec=hard)
            except dachs_peer.PeerError as error:
                print(f"\nDaCHS could not be set up, so it was not measured:\n{error}")
                print("\n== DaCHS 2.7 figures measured earlier elsewhere, NOT in this run ==")
                for key, value in DACHS_REFERENCE.items():
                    print(f"{key:42s} {value:>12s}")
        if peer is not None or args.dachs not in (None, "auto"):
            tap = peer.tap if peer is not None else args.dachs
            theirs = bench_service(tap, args.rows, f"DaCHS at {tap}")
            compare(ours, theirs, args.rows)
        elif args.dachs is None:
            print("\n(DaCHS not measured; --dachs auto runs the same queries against it.)")
    finally:
        if peer is not None and args.keep_dachs:
            print(f"\nDaCHS keeps running at {peer.tap}; stop it with "
                  "tests/benchmarks/dachs_peer.py down")  # fmt: skip
        elif peer is not None:
            peer.stop()
        if server is not None:
            server.stop()
        cluster.stop()
        shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
