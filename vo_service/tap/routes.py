"""TAP HTTP resources: /sync, /capabilities, /availability, /tables and the landing page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from vo_service.auth.identity import identity_of
from vo_service.dali import error_response, read_params
from vo_service.metadata import catalog
from vo_service.state import AppState
from vo_service.tap.capabilities import tap_capability
from vo_service.tap.examples import examples_document
from vo_service.tap.execute import stream_query
from vo_service.tap.query import prepare
from vo_service.urls import site_root
from vo_service.vosi.capabilities import capabilities as capabilities_document
from vo_service.vosi.tables import single_table, tableset

XML = "text/xml"


def base_url(request: Request) -> str:
    return f"{site_root(request)}/tap"


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def sync(request: Request) -> Response:
    state: AppState = request.app.state.vo
    params = await read_params(request)
    inline = {name: await upload.read() for name, upload in params.files.items()}
    identity = identity_of(request.scope)
    prepared = await prepare(
        params,
        state.settings,
        timeout_s=state.settings.sync_timeout_s,
        inline=inline,
        user_id=identity.user_id if identity else None,
    )
    stream = stream_query(state.pool, prepared)
    first = await anext(stream)
    return StreamingResponse(_prepend(first, stream), media_type=prepared.media_type)


async def tap_capabilities(request: Request) -> Response:
    state: AppState = request.app.state.vo
    base = base_url(request)
    body = capabilities_document(base, [tap_capability(base, state.settings)], examples=True)
    return Response(body, media_type=XML, headers={"Last-Modified": state.last_modified})


async def availability(request: Request) -> Response:
    state: AppState = request.app.state.vo
    return Response(await state.availability(), media_type=XML)


async def tables(request: Request) -> Response:
    detail = (request.query_params.get("detail") or "max").lower()
    return Response(tableset(catalog(), detail=detail != "min"), media_type=XML)


async def table(request: Request) -> Response:
    found = catalog().find(request.path_params["name"])
    if found is None or not found.published:
        return error_response(f"no table {request.path_params['name']!r}", 404)
    return Response(single_table(found), media_type=XML)


async def examples(request: Request) -> Response:
    return Response(examples_document(), media_type="application/xhtml+xml")


async def landing(request: Request) -> Response:
    base = escape(base_url(request))
    rows = "".join(
        f"<tr><td><a href='{base}/tables/{escape(t.qualified_name)}'>{escape(t.qualified_name)}"
        f"</a></td><td>{escape(t.description)}</td></tr>"
        for t in catalog().published_tables
    )
    example = "SELECT TOP 10 obs_id, frame_type, object, date_obs FROM archive.frames"
    return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>vo-service TAP</title></head><body>
<h1>Table Access Protocol service</h1>
<p>Base URL for TOPCAT, pyvo and STILTS: <code>{base}</code></p>
<form action="{base}/sync" method="post">
<input type="hidden" name="LANG" value="ADQL">
<textarea name="QUERY" rows="5" cols="80">{escape(example)}</textarea><br>
<select name="FORMAT"><option>votable</option><option>csv</option><option>tsv</option></select>
<input type="number" name="MAXREC" value="1000" min="0"> rows at most
<button type="submit">Run query</button></form>
<h2>Tables</h2><table>{rows}</table>
<p><a href="{base}/capabilities">capabilities</a> · <a href="{base}/availability">availability</a>
· <a href="{base}/tables">tables</a> · <a href="{base}/examples">examples</a></p></body></html>""")


routes: list[BaseRoute] = [
    Route("/", landing, name="root"),
    Route("/sync", sync, methods=["GET", "POST"]),
    Route("/capabilities", tap_capabilities),
    Route("/availability", availability),
    Route("/tables", tables),
    Route("/tables/{name}", table),
    Route("/examples", examples),
]
