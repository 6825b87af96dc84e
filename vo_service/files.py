"""Downloads of archive files, allowed by the same row-level security as every query.

``visible_frame_path`` is the one rights check for files: it asks PostgreSQL, as the
query role with the caller's identity, whether the frame's row is visible, and only then
looks up where the file lives. A forbidden and a missing frame both answer 404, so a
download URL does not reveal that a proprietary frame exists.
"""

from __future__ import annotations

from pathlib import Path

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from vo_service.auth.identity import Identity, identity_of
from vo_service.dali import error_response
from vo_service.db.reader import enter_reader


async def visible_frame_path(
    pool: AsyncConnectionPool, role: str, identity: Identity | None, obs_id: str
) -> Path | None:
    async with pool.connection() as conn, conn.transaction():
        await enter_reader(conn, role, identity.user_id if identity else None, 10.0)
        cur = await conn.execute("SELECT frame_id FROM archive.frames WHERE obs_id = %s", [obs_id])
        row = await cur.fetchone()
        if row is None:
            return None
        await conn.execute("RESET ROLE")  # the file location is not published
        cur = await conn.execute("SELECT path FROM archive.frames WHERE frame_id = %s", [row[0]])
        found = await cur.fetchone()
    path = Path(found[0]) if found else None
    return path if path is not None and path.is_file() else None


async def raw_frame(request: Request) -> Response:
    state = request.app.state.vo
    obs_id = request.path_params["obs_id"]
    path = await visible_frame_path(
        state.pool, state.settings.query_role, identity_of(request.scope), obs_id
    )
    if path is None:
        return error_response(f"no frame {obs_id!r}", 404)
    return FileResponse(path, media_type="application/fits", filename=path.name)


routes = [Route("/data/raw/{obs_id}", raw_frame)]
