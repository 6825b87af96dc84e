"""The declarations drive the database: DDL, grants, TAP_SCHEMA, migrations."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from vo_service.db.schema import tap_schema_rows, upgrade
from vo_service.metadata import MetadataError, catalog, load_catalog


def test_database_columns_match_declarations(conn: psycopg.Connection) -> None:
    for table in catalog():
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s ORDER BY ordinal_position",
            [table.schema, table.name],
        ).fetchall()
        assert [r[0] for r in rows] == [c.name for c in table.columns], table.qualified_name


def test_tap_schema_rows_equal_the_derived_rows(conn: psycopg.Connection) -> None:
    expected = tap_schema_rows(catalog())
    stored = conn.execute(
        "SELECT table_name, column_name, unit, ucd, datatype, xtype FROM tap_schema.columns"
    ).fetchall()
    assert sorted(stored, key=str) == sorted(
        [(r[0], r[1], r[4], r[3], r[6], r[8]) for r in expected["columns"]], key=str
    )
    assert (
        conn.execute("SELECT count(*) FROM tap_schema.keys").fetchone()[0]
        == len(expected["keys"])
        > 0
    )


def test_query_role_reads_published_columns_only(conn: psycopg.Connection, cfg) -> None:
    conn.execute(f'SET ROLE "{cfg.query_role}"')
    conn.execute("SELECT obs_id, pos FROM archive.frames LIMIT 1")
    for forbidden in (
        "SELECT header FROM archive.frames",
        "SELECT path FROM archive.frames",
        "SELECT * FROM internal.quarantine",
        "SELECT * FROM internal.migrations",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(forbidden)
        conn.rollback()
        conn.execute(f'SET ROLE "{cfg.query_role}"')


def test_upgrade_is_repeatable_and_keeps_data(conn: psycopg.Connection, cfg) -> None:
    conn.execute("INSERT INTO internal.quarantine VALUES ('/x', 'abc', 1, 'test', now())")
    conn.commit()
    assert upgrade(conn, catalog(), cfg.query_role) == []
    assert conn.execute("SELECT reason FROM internal.quarantine WHERE path = '/x'").fetchone()
    conn.execute("DELETE FROM internal.quarantine WHERE path = '/x'")
    conn.commit()


def test_bad_declarations_fail_loudly(tmp_path: Path) -> None:
    (tmp_path / "_schemas.toml").write_text('[demo]\ndescription = "x"\n')
    (tmp_path / "demo.t.toml").write_text(
        'schema = "demo"\nname = "t"\n[[columns]]\nname = "a"\ndatatype = "integer"\n'
    )
    with pytest.raises(MetadataError, match="datatype"):
        load_catalog(tmp_path)
    (tmp_path / "demo.t.toml").write_text(
        'schema = "nope"\nname = "t"\n[[columns]]\nname = "a"\ndatatype = "int"\n'
    )
    with pytest.raises(MetadataError, match="schema"):
        load_catalog(tmp_path)
