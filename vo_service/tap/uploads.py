"""TAP table uploads: VOTables read with astropy into per-query temporary tables.

``UPLOAD=name,param:part`` takes a multipart file of the same request (or, for async, the
file stored with the job); ``UPLOAD=name,http(s)://…`` is fetched with size and time
limits. The table is created in ``pg_temp`` inside the query's own transaction, so it
vanishes with it, is invisible to other requests, and is never in TAP_SCHEMA (TAP-M13).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
from astropy.io.votable import parse as parse_votable
from psycopg import AsyncConnection, sql

from vo_service.dali import DALIError
from vo_service.metadata import VOTABLE_DATATYPES, Column, Table

MAX_UPLOADS = 10
FETCH_TIMEOUT_S = 30.0
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Upload:
    name: str
    table: Table
    rows: list[tuple]

    @property
    def sql_name(self) -> str:
        return f"tap_upload_{self.name.lower()}"


def parse_upload_param(values: Sequence[str]) -> list[tuple[str, str]]:
    """``name,uri`` pairs; several per value separated by ';', several values accumulate."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(";"))):
            name, sep, uri = item.partition(",")
            if not sep or not uri.strip():
                raise DALIError(f"UPLOAD must be name,URI — not {item!r}")
            if not _NAME.match(name.strip()):
                raise DALIError(f"upload table name {name!r} is not an ADQL identifier")
            pairs.append((name.strip(), uri.strip()))
    if len(pairs) > MAX_UPLOADS:
        raise DALIError(f"at most {MAX_UPLOADS} uploads per query")
    if len({n.lower() for n, _ in pairs}) != len(pairs):
        raise DALIError("two uploads with the same table name")
    return pairs


async def _fetch(uri: str, limit: int) -> bytes:
    try:
        client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True)
        async with client, client.stream("GET", uri) as response:
            if response.status_code != 200:
                raise DALIError(f"upload {uri} answered HTTP {response.status_code}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise DALIError(f"upload {uri} exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise DALIError(f"cannot fetch upload {uri}: {exc}") from None


async def read_sources(
    pairs: Sequence[tuple[str, str]], inline: Mapping[str, bytes | Path], limit: int
) -> dict[str, bytes]:
    """The bytes of each upload, from the request's parts or from http(s)."""
    found: dict[str, bytes] = {}
    for name, uri in pairs:
        if uri.startswith("param:"):
            part = uri[len("param:") :]
            source = inline.get(part)
            if source is None:
                raise DALIError(f"UPLOAD {name} names part {part!r}, which the request lacks")
            data = source.read_bytes() if isinstance(source, Path) else source
        elif uri.startswith(("http://", "https://")):
            data = await _fetch(uri, limit)
        else:
            raise DALIError(f"UPLOAD {name}: only param: and http(s): URIs are supported")
        if len(data) > limit:
            raise DALIError(f"upload {name} exceeds the limit of {limit} bytes")
        found[name] = data
    return found


def _column(field: object) -> Column:
    datatype = getattr(field, "datatype", None)
    arraysize = getattr(field, "arraysize", None)
    if datatype == "bit" and arraysize in (None, "1"):
        datatype = "boolean"  # a single bit is a flag; astropy writes bools this way
    if datatype not in VOTABLE_DATATYPES:
        raise DALIError(f"upload column {field.name!r}: datatype {datatype} is not supported")
    if arraysize and "x" in str(arraysize):
        raise DALIError(f"upload column {field.name!r}: multi-dimensional arrays unsupported")
    xtype = getattr(field, "xtype", None)
    xtype = "timestamp" if xtype in ("adql:TIMESTAMP", "timestamp") else xtype
    if xtype not in (None, "timestamp", "point", "circle", "polygon"):
        xtype = None  # unknown xtypes travel as their plain datatype
    return Column(
        name=field.name,
        datatype=datatype,
        # arraysize="1" is deprecated (VOTable 1.3 erratum 3): a scalar has none.
        arraysize=None if arraysize in (None, "1") else str(arraysize),
        xtype=xtype,
        unit=str(field.unit) if getattr(field, "unit", None) else None,
        ucd=getattr(field, "ucd", None),
        utype=getattr(field, "utype", None),
        description=(getattr(field, "description", None) or "").strip(),
    )


def _cell(value: object, column: Column) -> object:
    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, np.ma.MaskedArray):
        if value.mask is not np.ma.nomask and np.all(value.mask):
            return None
        value = value.filled(np.nan)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        numbers = [float(v) for v in value.ravel()]
        if column.xtype == "point":
            return f"({numbers[0]!r}d,{numbers[1]!r}d)"
        if column.xtype == "circle":
            return f"<({numbers[0]!r}d,{numbers[1]!r}d),{numbers[2]!r}d>"
        if column.xtype == "polygon":
            pairs = zip(numbers[0::2], numbers[1::2], strict=True)
            return "{" + ",".join(f"({a!r}d,{b!r}d)" for a, b in pairs) + "}"
        return [None if isinstance(v, float) and math.isnan(v) else v for v in numbers]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and column.xtype == "timestamp" and not value.strip():
        return None
    return value


def parse_upload(name: str, data: bytes) -> Upload:
    try:
        votable = parse_votable(BytesIO(data), verify="ignore")
        source = votable.get_first_table()
    except Exception as exc:  # astropy raises many types for malformed input
        raise DALIError(f"upload {name} is not a readable VOTable: {exc}") from None
    if not source.fields:
        raise DALIError(f"upload {name} has no columns")
    columns = tuple(_column(f) for f in source.fields)
    if len({c.name.lower() for c in columns}) != len(columns):
        raise DALIError(f"upload {name} has two columns with the same name")
    array = source.array
    rows = [tuple(_cell(record[j], c) for j, c in enumerate(columns)) for record in array]
    table = Table(
        schema="tap_upload", name=name, description=f"Uploaded table {name}", columns=columns
    )
    return Upload(name, table, rows)


async def create_temp_tables(conn: AsyncConnection, uploads: Sequence[Upload], role: str) -> None:
    """Inside the query's transaction, before SET ROLE; readable by the query role."""
    for upload in uploads:
        ident = sql.Identifier("pg_temp", upload.sql_name)
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type))
            for c in upload.table.columns
        )
        await conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(ident, columns)
        )
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in upload.table.columns)
        async with conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(ident, names)
        ) as copy:
            for row in upload.rows:
                await copy.write_row(row)
        await conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(ident, sql.Identifier(role)))
        if any(c.xtype in ("point", "circle", "polygon") for c in upload.table.columns):
            await conn.execute(sql.SQL("ANALYZE {}").format(ident))
