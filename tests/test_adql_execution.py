"""Every representative ADQL query runs on PostgreSQL + pgsphere as the query role."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from ingest.simulate import NightSummary
from tests.test_adql import EXECUTABLE_QUERIES, UPLOADS
from vo_service.adql import translate, upload_table_sql
from vo_service.metadata import catalog


def _as_reader(conn: psycopg.Connection, role: str) -> None:
    for name, table in UPLOADS.items():
        ident = sql.SQL(upload_table_sql(name))
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type))
            for c in table.columns
        )
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(ident, columns))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES (1, 150.0, -30.0, 0.5, spoint(radians(150), radians(-30)), "
                "'a'), (2, 10.0, 5.0, 2.0, spoint(radians(10), radians(5)), 'b')"
            ).format(ident)
        )
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(ident, sql.Identifier(role)))
    conn.execute(
        sql.SQL(
            "SET LOCAL ROLE {}; SET LOCAL transaction_read_only = on; "
            "SET LOCAL statement_timeout = 20000"
        ).format(sql.Identifier(role))
    )


@pytest.mark.parametrize("query", EXECUTABLE_QUERIES)
def test_query_runs_as_the_query_role(db_url: str, cfg, night: NightSummary, query: str) -> None:
    translation = translate(query, catalog(), uploads=UPLOADS, max_rows=1001)
    with psycopg.connect(db_url) as conn, conn.transaction():
        _as_reader(conn, cfg.query_role)
        cur = conn.execute(translation.sql)
        assert len(cur.description) == len(translation.fields)
        cur.fetchall()


def test_cone_search_uses_the_gist_index(db_url: str, cfg, night: NightSummary) -> None:
    """ADQL-style cone conditions must reach the spatial index, not a sequential scan."""
    cones = [
        "SELECT obs_id FROM archive.frames "
        "WHERE CONTAINS(pos, CIRCLE('ICRS', 150.0, -30.0, 0.1)) = 1",
        "SELECT obs_id FROM archive.frames "
        "WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.0, -30.0, 0.1)) "
        "AND CONTAINS(pos, CIRCLE('ICRS', 150.0, -30.0, 0.1)) = 1",
        "SELECT obs_id FROM archive.frames WHERE DISTANCE(pos, POINT('ICRS', 150.0, -30.0)) < 0.1",
    ]
    for query in cones:
        translation = translate(query, catalog())
        with psycopg.connect(db_url) as conn, conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")  # tiny table: ask what is usable
            # As users run it: anonymous, under the query role and row-level security.
            conn.execute(
                sql.SQL("SELECT set_config('vo.user_id', '', true); SET LOCAL ROLE {}").format(
                    sql.Identifier(cfg.query_role)
                )
            )
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + translation.sql))
        assert "frames_pos_idx" in plan, (query, plan)
