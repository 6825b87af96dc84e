"""TAP HTTP resources: /sync, /capabilities, /availability, /tables and the landing page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from vo_service import adql, votable
from vo_service.dali import DALIError, error_response, read_params
from vo_service.metadata import catalog
from vo_service.state import AppState
from vo_service.tap.capabilities import LANGUAGES, tap_capability
from vo_service.tap.execute import QueryLimits, stream_query
from vo_service.vosi.capabilities import capabilities as capabilities_document
from vo_service.vosi.tables import single_table, tableset

XML = "text/xml"


def base_url(request: Request) -> str:
    state: AppState = request.app.state.vo
    root = state.settings.public_url or str(request.base_url).rstrip("/")
    return f"{root.rstrip('/')}/tap"


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def sync(request: Request) -> Response:
    state: AppState = request.app.state.vo
    params = await read_params(request)
    lang = params.get("LANG")
    if not lang:
        raise DALIError("LANG is required (LANG=ADQL)")
    if lang.upper() not in LANGUAGES:
        raise DALIError(
            f"unknown query language {lang!r}; this service speaks {', '.join(sorted(LANGUAGES))}"
        )
    query = params.get("QUERY")
    if not query or not query.strip():
        raise DALIError("QUERY is required")
    requested_format = params.get("RESPONSEFORMAT") or params.get("FORMAT") or "votable"
    try:
        writer = votable.writer_for(requested_format)
    except votable.UnsupportedFormat as exc:
        raise DALIError(str(exc)) from None
    maxrec = params.get_int("MAXREC")
    settings = state.settings
    effective = settings.sync_maxrec if maxrec is None else min(maxrec, settings.hard_maxrec)
    try:
        translation = adql.translate(query, catalog(), max_rows=effective + 1)
    except adql.ADQLError as exc:
        raise DALIError(str(exc)) from None
    limits = QueryLimits(effective, settings.sync_timeout_s, settings.query_role)
    infos = [("QUERY", query), ("LANG", lang), ("SERVICE_PROTOCOL", "TAP 1.1")]
    stream = stream_query(state.pool, translation, writer, limits, infos)
    first = await anext(stream)
    media_type = requested_format if "/" in requested_format else writer.media_type
    return StreamingResponse(_prepend(first, stream), media_type=media_type)


async def tap_capabilities(request: Request) -> Response:
    state: AppState = request.app.state.vo
    base = base_url(request)
    body = capabilities_document(base, [tap_capability(base, state.settings)])
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
· <a href="{base}/tables">tables</a></p></body></html>""")


routes = [
    Route("/", landing, name="root"),
    Route("/sync", sync, methods=["GET", "POST"]),
    Route("/capabilities", tap_capabilities),
    Route("/availability", availability),
    Route("/tables", tables),
    Route("/tables/{name}", table),
]
