"""From TAP parameters to a runnable query: one place for sync and async alike.

Parameters are checked when the query runs (TAP-M4), so an async job can be created
empty and filled later, and both modes give the same errors for the same input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vo_service import adql, votable
from vo_service.config import Settings
from vo_service.dali import DALIError, Params
from vo_service.metadata import catalog
from vo_service.tap.capabilities import LANGUAGES
from vo_service.tap.uploads import Upload, parse_upload, parse_upload_param, read_sources


@dataclass(frozen=True)
class QueryLimits:
    maxrec: int
    timeout_s: float
    role: str


@dataclass(frozen=True)
class PreparedQuery:
    translation: adql.Translation
    writer: votable.ResultWriter
    limits: QueryLimits
    infos: tuple[tuple[str, str], ...]
    media_type: str
    uploads: tuple[Upload, ...] = ()
    user_id: int | None = None


async def prepare(
    params: Params,
    settings: Settings,
    *,
    timeout_s: float,
    inline: Mapping[str, bytes | Path] | None = None,
    user_id: int | None = None,
) -> PreparedQuery:
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
    requested = params.get("RESPONSEFORMAT") or params.get("FORMAT") or "votable"
    try:
        writer = votable.writer_for(requested)
    except votable.UnsupportedFormat as exc:
        raise DALIError(str(exc)) from None
    maxrec = params.get_int("MAXREC")
    effective = settings.sync_maxrec if maxrec is None else min(maxrec, settings.hard_maxrec)
    pairs = parse_upload_param(params.getlist("UPLOAD"))
    sources = await read_sources(pairs, inline or {}, settings.upload_limit_bytes)
    uploads = tuple(parse_upload(name, sources[name]) for name, _ in pairs)
    try:
        translation = adql.translate(
            query, catalog(), max_rows=effective + 1, uploads={u.name: u.table for u in uploads}
        )
    except adql.ADQLError as exc:
        raise DALIError(str(exc)) from None
    # DALI-M6: a client that named a MIME type gets exactly that type back.
    media_type = requested if "/" in requested else writer.media_type
    return PreparedQuery(
        translation=translation,
        writer=writer,
        limits=QueryLimits(effective, timeout_s, settings.query_role),
        infos=(("QUERY", query), ("LANG", lang)),
        media_type=media_type,
        uploads=uploads,
        user_id=user_id,
    )
