"""The ``vo-service`` command: one entry point for operators, demos and tests."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from vo_service import __version__
from vo_service.auth.accounts import AccountError
from vo_service.config import Settings, settings


def _print_report(report: object) -> None:
    from ingest.loader import IngestReport

    assert isinstance(report, IngestReport)
    for path, reason in report.quarantined:
        print(f"quarantined {path}: {reason}", file=sys.stderr)
    for path, other in report.duplicates:
        print(f"duplicate {path}: same content as {other}", file=sys.stderr)
    print(report.summary())


def cmd_init(args: argparse.Namespace, cfg: Settings) -> int:
    from vo_service.db import database

    cfg.home.mkdir(parents=True, exist_ok=True)
    with database(cfg):
        pass
    print(f"initialised {cfg.home}")
    return 0


def cmd_db(args: argparse.Namespace, cfg: Settings) -> int:
    import psycopg

    from vo_service.db import EmbeddedCluster, database_url, upgrade
    from vo_service.metadata import catalog

    if args.action == "upgrade":
        from vo_service.db import database

        with database(cfg, migrate=False) as url, psycopg.connect(url) as conn:
            applied = upgrade(conn, catalog(), cfg.query_role)
        print(f"database up to date ({len(applied)} migrations applied)")
        return 0
    if not cfg.embedded:
        if args.action == "status":
            with psycopg.connect(database_url(cfg), connect_timeout=5):
                print("external database (DATABASE_URL) reachable")
            return 0
        print("DATABASE_URL is set: the database is not managed by vo-service", file=sys.stderr)
        return 2
    cluster = EmbeddedCluster(cfg.home)
    if args.action == "start":
        started = cluster.start()
        print(f"{'started' if started else 'already running'} on port {cluster.port()}")
        with psycopg.connect(cluster.url()) as conn:
            upgrade(conn, catalog(), cfg.query_role)
    elif args.action == "stop":
        cluster.stop()
        print("stopped")
    else:
        port = cluster.port()
        print(f"running on 127.0.0.1:{port}, data in {cluster.datadir}" if port else "stopped")
        return 0 if port else 3
    return 0


def cmd_ingest(args: argparse.Namespace, cfg: Settings) -> int:
    import psycopg

    from ingest.loader import ingest
    from vo_service.db import database

    with database(cfg) as url, psycopg.connect(url) as conn:
        report = ingest(conn, [Path(p) for p in args.paths])
    _print_report(report)
    return 0


def cmd_simulate(args: argparse.Namespace, cfg: Settings) -> int:
    from ingest.simulate import simulate_night

    summary = simulate_night(Path(args.outdir), seed=args.seed, binning=args.binning, home=cfg.home)
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items())
    print(f"wrote {len(summary.files)} frames to {summary.outdir} ({counts})")
    return 0


def _serve(
    cfg: Settings,
    host: str,
    port: int,
    before: Callable[[str], None] | None,
    workers: int | None = None,
) -> int:
    import uvicorn

    from vo_service.app import create_app
    from vo_service.db import database
    from vo_service.http_protocol import NoDelayH11Protocol

    with database(cfg) as url:
        if before is not None:
            before(url)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(f"TAP service: http://{shown}:{port}/tap   (Ctrl-C stops it)", flush=True)
        workers = workers or cfg.workers
        common = {
            "host": host,
            "port": port,
            "server_header": False,
            "proxy_headers": True,
            "http": NoDelayH11Protocol,
            "log_level": "info",
        }
        if workers > 1:
            # Separate processes share nothing but the database (the job queue included).
            uvicorn.run(
                "vo_service.app:app_from_environment", factory=True, workers=workers, **common
            )
        else:
            uvicorn.run(create_app(cfg, url), **common)
    return 0


def cmd_serve(args: argparse.Namespace, cfg: Settings) -> int:
    return _serve(cfg, args.host, args.port, None, args.workers)


def cmd_demo(args: argparse.Namespace, cfg: Settings) -> int:
    import psycopg

    from ingest.loader import ingest
    from ingest.simulate import simulate_night

    night = cfg.home / "demo" / "night"

    def prepare(url: str) -> None:
        if not (night / "truth.json").exists():
            print(f"simulating a night of raw frames in {night} …", flush=True)
            simulate_night(night, seed=args.seed, binning=2, home=cfg.home)
        with psycopg.connect(url) as conn:
            _print_report(ingest(conn, [night]))

    return _serve(cfg, args.host, args.port, prepare, args.workers)


def _setting(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as JSON when it parses (numbers, true/false)."""
    import json

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected key=value, not {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def cmd_reduce(args: argparse.Namespace, cfg: Settings) -> int:
    # the engine runs each step with BLAS on one thread (ingest.reduce.graph); a pool
    # started with numpy would only spin, about 0.1 CPU-s per process, before sleeping
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import psycopg

    from ingest.reduce.pipeline import reduce_command
    from vo_service.db import database

    overrides = dict(args.set or [])
    with database(cfg) as url, psycopg.connect(url, autocommit=True) as conn:
        try:
            report = reduce_command(conn, args.targets, overrides or None, cfg.home)
        except ValueError as exc:
            print(f"vo-service: {exc}", file=sys.stderr)
            return 2
    print(report)
    failed = report.problems or report.by_status("failed")
    return 1 if failed else 0


def cmd_adql(args: argparse.Namespace, cfg: Settings) -> int:
    from vo_service import adql
    from vo_service.metadata import catalog

    try:
        if args.parse_only:
            adql.parse(args.query)
            print("OK")
        else:
            print(adql.translate(args.query, catalog()).sql)
    except adql.ADQLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _accounts(cfg: Settings, action: Callable[..., Awaitable[object]]) -> object:
    """Run one account change in its own transaction against the service database."""
    import psycopg

    from vo_service.db import database

    async def run(url: str) -> object:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await action(conn)

    with database(cfg) as url:
        return asyncio.run(run(url))


def _password(args: argparse.Namespace) -> str | None:
    if args.no_password:
        return None
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def cmd_user(args: argparse.Namespace, cfg: Settings) -> int:
    from vo_service.auth import accounts

    password = _password(args)
    user = _accounts(
        cfg, lambda c: accounts.add_user(c, args.username, args.email, password, staff=args.staff)
    )
    print(f"user {args.username} created (id {user})")
    return 0


def cmd_proposal(args: argparse.Namespace, cfg: Settings) -> int:
    from vo_service.auth import accounts

    _accounts(
        cfg,
        lambda c: accounts.add_proposal(
            c,
            args.code,
            args.pi,
            title=args.title,
            semester=args.semester,
            proprietary_months=args.months,
        ),
    )
    print(f"proposal {args.code} registered, PI {args.pi}")
    return 0


def cmd_member(args: argparse.Namespace, cfg: Settings) -> int:
    from vo_service.auth import accounts

    member = _accounts(cfg, lambda c: accounts.add_member(c, args.code, args.who))
    assert isinstance(member, accounts.NewMember)
    print(f"{args.who} is a collaborator of {args.code}")
    if member.invitation:
        print(f"invitation token (give it to the new user; shown once): {member.invitation}")
    return 0


def cmd_token(args: argparse.Namespace, cfg: Settings) -> int:
    from vo_service.auth import accounts

    if args.action == "create":
        token_id, token = _accounts(cfg, lambda c: accounts.create_token(c, args.user, args.name))
        print(f"token {token_id} for {args.user} (shown once, keep it secret):")
        print(token)
    else:
        _accounts(cfg, lambda c: accounts.revoke_token(c, int(args.token_id)))
        print(f"token {args.token_id} revoked")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vo-service",
        description="Observatory data service: ingest raw frames, publish them over IVOA "
        "protocols. State lives in VO_SERVICE_HOME (default ./var); DATABASE_URL points at "
        "an existing PostgreSQL instead of the embedded one.",
    )
    parser.add_argument("--version", action="version", version=f"vo-service {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create the state directory and the database")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("db", help="manage the embedded PostgreSQL and the schema")
    p.add_argument("action", choices=["start", "stop", "status", "upgrade"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("ingest", help="ingest raw FITS files or directories (recursive)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("simulate-night", help="write a simulated night of raw Goodman frames")
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--binning", type=int, choices=[1, 2], default=2, help="CCD binning")
    p.set_defaults(func=cmd_simulate)

    for name, func, text in (
        ("serve", cmd_serve, "serve the IVOA protocols over HTTP"),
        ("demo", cmd_demo, "simulate and ingest a demo night, then serve it"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--workers", type=int, help="server processes (default 1)")
        if name == "demo":
            p.add_argument("--seed", type=int, default=1, help="seed of the demo night")
        p.set_defaults(func=func)

    p = sub.add_parser("reduce", help="reduce nights or frames with the proposals' settings")
    p.add_argument(
        "targets",
        nargs="+",
        metavar="NIGHT_OR_FRAME",
        help="a night (YYYY-MM-DD), an obs_id, a file, or 'waiting'",
    )
    p.add_argument(
        "--set",
        action="append",
        type=_setting,
        metavar="KEY=VALUE",
        help="override a reduction setting, e.g. --set extraction_width=3",
    )
    p.set_defaults(func=cmd_reduce)

    p = sub.add_parser("user", help="manage user accounts (staff)")
    users = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = users.add_parser("add", help="create a user; asks for the password")
    q.add_argument("username")
    q.add_argument("--email", required=True)
    q.add_argument("--staff", action="store_true", help="staff see and manage everything")
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    q.add_argument("--no-password", action="store_true", help="token or invitation only")
    q.set_defaults(func=cmd_user)

    p = sub.add_parser("proposal", help="manage observing proposals (staff)")
    proposals = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = proposals.add_parser("add", help="register a proposal with its PI")
    q.add_argument("code", help="proposal code, e.g. SOAR2020B-008")
    q.add_argument("--pi", required=True, help="username or e-mail of the PI")
    q.add_argument("--title", default="")
    q.add_argument("--semester")
    q.add_argument("--months", type=int, default=12, help="proprietary period (default 12)")
    q.set_defaults(func=cmd_proposal)

    p = sub.add_parser("member", help="manage proposal members (staff)")
    members = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = members.add_parser("add", help="add a collaborator; unknown e-mails are invited")
    q.add_argument("code")
    q.add_argument("who", help="username or e-mail")
    q.set_defaults(func=cmd_member)

    p = sub.add_parser("token", help="create or revoke API tokens (staff)")
    tokens = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = tokens.add_parser("create", help="a new token for a user, printed once")
    q.add_argument("user")
    q.add_argument("--name", default="", help="a label for the token")
    q.set_defaults(func=cmd_token)
    q = tokens.add_parser("revoke", help="revoke a token at once")
    q.add_argument("token_id")
    q.set_defaults(func=cmd_token)

    p = sub.add_parser("adql", help="translate an ADQL query to SQL, or just check it")
    p.add_argument("--parse-only", action="store_true", help="only check the syntax")
    p.add_argument("query", metavar="QUERY")
    p.set_defaults(func=cmd_adql)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from vo_service.db.cluster import ClusterError

    try:
        return int(args.func(args, settings()))
    except (ClusterError, FileNotFoundError, AccountError) as exc:
        print(f"vo-service: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
