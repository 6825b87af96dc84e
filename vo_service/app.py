"""The ASGI application: one Starlette app mounting each protocol's routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vo_service import __version__
from vo_service.adql.parser import lark_parser
from vo_service.api import routes as api_routes
from vo_service.auth.identity import AUTH_CHANNEL, Authentication, owner_name, token_cache
from vo_service.config import Settings
from vo_service.dali import DALIError, error_response
from vo_service.files import routes as file_routes
from vo_service.state import AppState
from vo_service.tap.async_jobs import TapQueryJob
from vo_service.tap.routes import routes as tap_routes
from vo_service.uws.engine import Engine
from vo_service.uws.events import JobEvents
from vo_service.uws.routes import UWSService
from vo_service.uws.store import JobStore

log = logging.getLogger("vo_service")
SERVER = f"vo-service/{__version__} (IVOA TAP 1.1)".encode()


class ServerHeader:
    """Names the software in every response, as taplint and operators expect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"server", SERVER)]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def home(request: Request) -> Response:
    return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>vo-service</title></head><body><h1>vo-service {__version__}</h1>
<ul><li><a href="{request.url_for("tap:root")}">TAP service</a> (ADQL queries)</li></ul>
</body></html>""")


async def dali_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DALIError)
    return error_response(exc.message, exc.status)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response("internal error; the incident was logged", 500)


def create_app(settings: Settings, database_url: str) -> Starlette:
    # Created here, opened in the lifespan: routes need the objects, not the connections.
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=20, open=False)
    engine = Engine(
        JobStore(pool),
        JobEvents(database_url, also={AUTH_CHANNEL: token_cache.changed}),
        settings.home,
        [TapQueryJob(pool, settings)],
    )
    tap_async = UWSService(
        engine,
        "tap",
        "/tap/async",
        default_duration=int(settings.async_timeout_s),
        retention=timedelta(days=settings.async_retention_days),
        owner_of=owner_name,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        lark_parser()  # built now, not on the first query
        app.state.vo = AppState(settings, pool, engine)
        await engine.events.start()
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            await engine.events.stop()
            await pool.close()

    app = Starlette(
        routes=[
            Route("/", home),
            *api_routes,
            *file_routes,
            *tap_async.routes(),
            Mount("/tap", routes=tap_routes, name="tap"),
        ],
        exception_handlers={DALIError: dali_error, Exception: unexpected_error},
        lifespan=lifespan,
    )
    app.add_middleware(Authentication)
    app.add_middleware(ServerHeader)
    return app


def app_from_environment() -> Starlette:
    """Factory for worker processes: each builds its own app from the same settings."""
    from vo_service.config import settings
    from vo_service.db import database_url

    cfg = settings()
    return create_app(cfg, database_url(cfg))
