"""Run a translated ADQL query and stream its result; shared by sync and async TAP.

The query runs in a read-only transaction, under the query role (which can read the
published columns and nothing else), with a statement timeout, from a server-side cursor
fetched in batches, so memory stays flat whatever the row count. MAXREC+1 rows are asked
for, so overflow is detected without counting.

The first batch is fetched before anything is sent: errors that PostgreSQL raises while
planning or starting the query (the common case) become a proper error document with an
HTTP status; errors later in the stream close the table and append an ERROR INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import psycopg
from psycopg import errors
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from vo_service.dali import DALIError, QueryTimeout
from vo_service.db.reader import enter_reader
from vo_service.metadata import Column
from vo_service.tap.binary_rows import RowPlan
from vo_service.tap.query import PreparedQuery, QueryLimits
from vo_service.tap.uploads import create_temp_tables
from vo_service.votable.binary import BinaryWriter

BATCH_ROWS = 10_000
THREAD_ROWS = 2_000

# PostgreSQL result type → (VOTable datatype, arraysize, xtype) for columns whose type the
# ADQL translation could not infer (expressions) or where PostgreSQL knows better.
_PG_TYPES: dict[str, tuple[str, str | None, str | None]] = {
    "bool": ("boolean", None, None),
    "int2": ("short", None, None),
    "int4": ("int", None, None),
    "int8": ("long", None, None),
    "float4": ("float", None, None),
    "float8": ("double", None, None),
    "numeric": ("double", None, None),
    "text": ("char", "*", None),
    "varchar": ("char", "*", None),
    "bpchar": ("char", "*", None),
    "name": ("char", "*", None),
    "timestamp": ("char", "*", "timestamp"),
    "timestamptz": ("char", "*", "timestamp"),
    "date": ("char", "*", "timestamp"),
    "_float8": ("double", "*", None),
    "_float4": ("float", "*", None),
    "_int4": ("int", "*", None),
    "_int8": ("long", "*", None),
    "_int2": ("short", "*", None),
}
_CHAR = frozenset({"char", "unicodeChar"})


def type_names(description: Sequence[psycopg.Column], conn: psycopg.BaseConnection) -> list[str]:
    """PostgreSQL type names of result columns; arrays as ``_element`` (as in pg_type)."""
    names = []
    for desc in description:
        info = conn.adapters.types.get(desc.type_code)
        if info is None:
            names.append("")
        else:
            names.append(f"_{info.name}" if desc.type_code == info.array_oid else info.name)
    return names


def resolve_fields(
    fields: Sequence[Column],
    description: Sequence[psycopg.Column] | None,
    conn: psycopg.BaseConnection,
) -> list[Column]:
    """Keep the declared metadata, but let the actual result type decide the encoding."""
    if not description:
        return list(fields)
    resolved = []
    for field, name in zip(fields, type_names(description, conn), strict=True):
        pg = _PG_TYPES.get(name, ("char", "*", None))
        datatype, arraysize, xtype = pg
        if (
            field.datatype == datatype
            or (field.datatype in _CHAR and datatype == "char")
            or (field.datatype == "unsignedByte" and datatype == "short")
        ):
            resolved.append(field)
            continue
        # Array-valued geometry keeps its declared shape and xtype; otherwise PostgreSQL's
        # type is the truth for what the values are.
        keep_shape = arraysize is not None and field.arraysize is not None
        resolved.append(
            dataclasses.replace(
                field,
                datatype=datatype,
                arraysize=field.arraysize if keep_shape else arraysize,
                xtype=field.xtype if keep_shape else xtype,
            )
        )
    return resolved


def _translate_db_error(exc: psycopg.Error, limits: QueryLimits) -> DALIError:
    if isinstance(exc, errors.QueryCanceled):
        return QueryTimeout(f"query timed out after {limits.timeout_s:g} s (execution limit)")
    if isinstance(exc, errors.InsufficientPrivilege):
        return DALIError("the query reads data that is not published")
    message = (exc.diag.message_primary or str(exc)).strip()
    if isinstance(exc, errors.DataError | errors.SyntaxErrorOrAccessRuleViolation):
        return DALIError(f"query failed: {message}")
    return DALIError(f"query failed: {message}", status=500)


async def _off_loop(work: Callable[[], bytes], rows: int) -> bytes:
    """Big batches are encoded in a thread: numpy releases the GIL, the event loop stays
    free to fetch the next batch."""
    if rows < THREAD_ROWS:
        return work()
    return await asyncio.to_thread(work)


async def _open_cursor(
    conn: psycopg.AsyncConnection, query: PreparedQuery, small: bool
) -> tuple[psycopg.AsyncCursor, list[Column], Callable[[list[tuple]], Awaitable[bytes]]]:
    """Run the query; return its cursor, FIELDs, and how a fetched batch becomes bytes.

    A large BINARY2/BINARY result is read as binary records (see ``binary_rows``): the
    query's result types are learnt first from a ``LIMIT 0`` run, then the wrapped query
    returns one record per row. Everything else goes through the Python writers.
    """
    writer = query.writer
    sql = query.translation.sql
    if not small and isinstance(writer, BinaryWriter):
        probe = conn.cursor(row_factory=tuple_row)
        await probe.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
        fields = resolve_fields(query.translation.fields, probe.description, conn)
        types = type_names(probe.description or (), conn)
        await probe.close()
        rows = RowPlan.build(fields, types, binary2=writer.binary2)
        if rows is not None:
            cursor = conn.cursor(name="tap_result", row_factory=tuple_row, binary=True)
            await cursor.execute(rows.sql(sql))

            async def records(batch: list[tuple]) -> bytes:
                return await _off_loop(lambda: writer.encoded(rows.encode(batch)), len(batch))

            return cursor, fields, records
    if small:
        cursor = conn.cursor(row_factory=tuple_row)
    else:
        cursor = conn.cursor(name="tap_result", row_factory=tuple_row)
    await cursor.execute(sql)
    fields = resolve_fields(query.translation.fields, cursor.description, conn)

    async def python(batch: list[tuple]) -> bytes:
        return await _off_loop(lambda: writer.rows(batch) if batch else b"", len(batch))

    return cursor, fields, python


async def stream_query(pool: AsyncConnectionPool, query: PreparedQuery) -> AsyncIterator[bytes]:
    """Yield the encoded result; the first chunk arrives only after the first batch ran."""
    limits = query.limits
    writer = query.writer
    top = query.translation.top
    # A result known to be small is read in one round trip; anything else is streamed
    # from a server-side cursor.
    small = limits.maxrec < BATCH_ROWS or (top is not None and top < BATCH_ROWS)
    async with pool.connection() as conn, conn.transaction():
        try:
            # Uploads are written by the service's own role; then the transaction drops to
            # the query role and becomes read-only before any user SQL runs.
            await create_temp_tables(conn, query.uploads, limits.role)
            await enter_reader(conn, limits.role, query.user_id, limits.timeout_s)
            cursor, fields, encode = await _open_cursor(conn, query, small)
            first = await cursor.fetchmany(min(BATCH_ROWS, limits.maxrec + 1))
        except psycopg.Error as exc:
            raise _translate_db_error(exc, limits) from None
        sent = 0
        batch = first
        head = writer.head(fields, infos=query.infos)
        # The next batch is fetched while this one is encoded and sent, so PostgreSQL and
        # Python work at the same time.
        ahead: asyncio.Future[list[tuple]] | None = None
        try:
            while True:
                room = limits.maxrec - sent
                chunk = batch[:room]
                sent += len(chunk)
                overflow = len(batch) > room
                done = overflow or len(batch) == 0 or (small and len(batch) < BATCH_ROWS)
                if not done:
                    ahead = asyncio.ensure_future(cursor.fetchmany(BATCH_ROWS))
                body = await encode(chunk)
                if head:
                    body, head = head + body, b""
                if body:
                    yield body
                if done:
                    yield writer.tail(overflow=overflow)
                    break
                assert ahead is not None
                batch, ahead = await ahead, None
        except psycopg.Error as exc:
            error = _translate_db_error(exc, limits)
            if not writer.in_band_status:
                raise error from None  # CSV/TSV: a cut connection, never a truncated "success"
            yield writer.tail(error=error.message)
        finally:
            if ahead is not None:  # the client went away: let the fetch finish, then close
                with contextlib.suppress(Exception):
                    await ahead
            await cursor.close()
