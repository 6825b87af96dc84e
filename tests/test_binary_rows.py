"""Rows encoded by PostgreSQL are byte for byte what the Python BINARY2/BINARY writer makes."""

from __future__ import annotations

import psycopg
import pytest

from vo_service.metadata import Column
from vo_service.tap.binary_rows import RowPlan
from vo_service.tap.execute import type_names
from vo_service.votable.binary import BinaryWriter

TABLE = """
CREATE TEMP TABLE sample (
    b boolean, s smallint, u smallint, i integer, l bigint, f real, d double precision,
    n numeric, t text, lim text, fix text, ts timestamp, tz timestamptz, dt date,
    p double precision[], v double precision[], iv integer[], ia integer[]
) ON COMMIT DROP
"""
ROWS = """
INSERT INTO sample VALUES
 (true, 1, 7, 42, 9000000000, 1.5, 2.25, 3.5, 'plain', 'abc', 'xy',
  '2024-03-15 01:02:03.456789', '2024-03-15 01:02:03.4567+02', '2024-03-15',
  ARRAY[10.5, -20.25], ARRAY[1, 2, 3, 4, 5], ARRAY[1, 2], ARRAY[7, NULL, 9]),
 (false, -5, 255, -1, -2, 'NaN', 'NaN', 'NaN', 'Crème brûlée ☃', 'abcdefghijk', 'toolong',
  '1999-12-31 23:59:59.999999', '2000-01-01 00:00:00+00', '1999-12-31',
  ARRAY[0, 0], ARRAY[]::float8[], ARRAY[-3, 3], ARRAY[]::int[]),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (true, 32767, 0, 2147483647, 9223372036854775807, -0.0, 1e300, 123456789.125, '', '', '',
  '0001-01-01 00:00:00', '2024-03-15 23:59:59.9999+00', '2024-02-29',
  ARRAY[NULL, 1]::float8[], ARRAY[NULL, 2]::float8[], NULL, ARRAY[NULL]::int[])
"""


def col(name: str, datatype: str, arraysize: str | None = None, xtype: str | None = None):
    return Column(name=name, datatype=datatype, arraysize=arraysize, xtype=xtype)


FIELDS = [
    col("b", "boolean"),
    col("s", "short"),
    col("u", "unsignedByte"),
    col("i", "int"),
    col("l", "long"),
    col("f", "float"),
    col("d", "double"),
    col("n", "double"),
    col("t", "char", "*"),
    col("lim", "char", "5*"),
    col("fix", "char", "4"),
    col("ts", "char", "*", "timestamp"),
    col("tz", "char", "*", "timestamp"),
    col("dt", "char", "*", "timestamp"),
    col("p", "double", "2", "point"),
    col("v", "double", "*"),
    col("iv", "int", "2"),
    col("ia", "int", "*"),
]


def _fetch(conn: psycopg.Connection, fields: list[Column], binary2: bool):
    """The sample as Python rows and as records, and the plan that reads the records."""
    names = ", ".join(f.name for f in fields)
    query = f"SELECT {names} FROM sample"
    with conn.transaction():
        conn.execute(TABLE)
        conn.execute(ROWS)
        rows = conn.execute(query).fetchall()
        types = type_names(conn.execute(query).description or (), conn)
        plan = RowPlan.build(fields, types, binary2=binary2)
        assert plan is not None
        with conn.cursor(binary=True) as cur:
            records = cur.execute(plan.sql(query)).fetchall()
    writer = BinaryWriter("application/x-votable+xml", binary2=binary2)
    writer.head(fields)
    assert len(rows) == len(records) == 4
    return rows, records, plan, writer


BATCHES = [[0, 1, 2, 3], [0], [1], [2], [3], [0, 2, 3], [3, 2]]


@pytest.mark.parametrize("binary2", [True, False], ids=["BINARY2", "BINARY"])
def test_records_encode_as_the_python_writer_does(conn: psycopg.Connection, binary2: bool) -> None:
    rows, records, plan, writer = _fetch(conn, FIELDS, binary2)
    for batch in BATCHES:
        got = plan.encode([records[i] for i in batch])
        assert got == writer.encode([rows[i] for i in batch]).tobytes(), batch


@pytest.mark.parametrize("binary2", [True, False], ids=["BINARY2", "BINARY"])
def test_clean_batches_are_rewritten_in_place(
    conn: psycopg.Connection, binary2: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = [f for f in FIELDS if f.name != "fix"]  # fixed-size text needs padding
    rows, records, plan, writer = _fetch(conn, fields, binary2)
    gathered = []
    original = RowPlan._gather

    def spy(self, buf, slot_at, lengths):
        gathered.append(slot_at.shape[1])
        return original(self, buf, slot_at, lengths)

    monkeypatch.setattr(RowPlan, "_gather", spy)
    for batch in BATCHES:
        gathered.clear()
        got = plan.encode([records[i] for i in batch])
        assert got == writer.encode([rows[i] for i in batch]).tobytes(), batch
        # row 1 has non-ASCII text and text beyond its declared size: field by field
        assert bool(gathered) == (1 in batch), batch


def test_duplicate_output_names_are_fine(conn: psycopg.Connection) -> None:
    fields = [col("a", "int"), col("a", "int")]
    plan = RowPlan.build(fields, ["int4", "int4"], binary2=True)
    assert plan is not None
    with conn.cursor(binary=True) as cur:
        records = cur.execute(plan.sql("SELECT 1 AS a, 2 AS a")).fetchall()
    assert plan.encode(records) == b"\x00" + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")


def test_unsupported_types_are_left_to_the_python_writer() -> None:
    assert RowPlan.build([col("t", "unicodeChar", "*")], ["text"], binary2=True) is None
    assert RowPlan.build([col("g", "char", "*")], [""], binary2=True) is None
    assert RowPlan.build([col("f", "boolean", "*")], ["_bool"], binary2=True) is None
    assert RowPlan.build([col("j", "char", "*")], ["jsonb"], binary2=True) is None
