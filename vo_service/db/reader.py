"""The one way any access path reads published data on a user's behalf.

Inside the caller's transaction: name the user for the row-level-security policies, drop
to the query role (no BYPASSRLS, SELECT on published columns only), make the transaction
read-only and bound its time. TAP, downloads, previews and job results all come through
here, so they all get the same answer.
"""

from __future__ import annotations

from psycopg import AsyncConnection, sql


async def enter_reader(
    conn: AsyncConnection, role: str, user_id: int | None, timeout_s: float
) -> None:
    await conn.execute(
        sql.SQL(
            "SELECT set_config('vo.user_id', {}, true); SET LOCAL ROLE {}; "
            "SET LOCAL transaction_read_only = on; SET LOCAL statement_timeout = {}"
        ).format(
            sql.Literal("" if user_id is None else str(user_id)),
            sql.Identifier(role),
            sql.Literal(int(timeout_s * 1000)),
        )
    )
