"""Downloads of archive files, allowed by the same row-level security as every query.

``visible_file`` is the one rights check for files: it asks PostgreSQL, as the query
role with the caller's identity, whether the row (a raw frame or a product) is visible,
and only then looks up where the file lives. A forbidden and a missing item both answer
404, so a download URL does not reveal that a proprietary frame or product exists.
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from vo_service.auth.identity import Identity, identity_of
from vo_service.dali import error_response
from vo_service.db.reader import enter_reader

# What can be downloaded: table → the published column that names an item.
_DOWNLOADABLE = {"archive.frames": "obs_id", "archive.products": "product_id"}


async def visible_file(
    pool: AsyncConnectionPool, role: str, identity: Identity | None, table: str, key: object
) -> Path | None:
    """The file of one row, if the caller's rights let them see that row."""
    schema, name = table.split(".")
    ident = sql.Identifier(schema, name)
    column = sql.Identifier(_DOWNLOADABLE[table])
    async with pool.connection() as conn, conn.transaction():
        await enter_reader(conn, role, identity.user_id if identity else None, 10.0)
        cur = await conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE {} = %s").format(ident, column), [key]
        )
        if await cur.fetchone() is None:
            return None
        await conn.execute("RESET ROLE")  # the file location is not published
        cur = await conn.execute(
            sql.SQL("SELECT path FROM {} WHERE {} = %s").format(ident, column), [key]
        )
        found = await cur.fetchone()
    path = Path(found[0]) if found else None
    return path if path is not None and path.is_file() else None


async def _download(request: Request, table: str, key: object, label: str) -> Response:
    state = request.app.state.vo
    path = await visible_file(
        state.pool, state.settings.query_role, identity_of(request.scope), table, key
    )
    if path is None:
        return error_response(f"no {label} {key!r}", 404)
    return FileResponse(path, media_type="application/fits", filename=path.name)


async def raw_frame(request: Request) -> Response:
    return await _download(request, "archive.frames", request.path_params["obs_id"], "frame")


async def product(request: Request) -> Response:
    return await _download(
        request, "archive.products", request.path_params["product_id"], "product"
    )


routes = [
    Route("/data/raw/{obs_id}", raw_frame),
    Route("/data/products/{product_id:int}", product),
]
