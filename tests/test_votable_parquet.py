"""VOParquet writer: read back with pyarrow, the embedded VOTable with astropy."""

from __future__ import annotations

import io
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io.votable import parse
from astropy.table import Table

from vo_service.metadata import Column
from vo_service.votable.parquet import ParquetResultWriter

from .test_votable import FIELDS, ROWS, TRIANGLE, render


def open_parquet(data: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(data))


def embedded(data: bytes):
    meta = open_parquet(data).metadata.metadata
    assert meta[b"IVOA.VOTable-Parquet.version"] == b"1.0"
    return meta[b"IVOA.VOTable-Parquet.content"].decode(), parse(
        io.BytesIO(meta[b"IVOA.VOTable-Parquet.content"])
    )


def test_values_types_and_nulls():
    data = render("parquet", batches=[ROWS[:2], ROWS[2:]])
    table = open_parquet(data).read()
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    assert types["id"] == pa.int64() and types["flag"] == pa.bool_()
    assert types["ub"] == pa.uint8() and types["s"] == pa.int16() and types["i"] == pa.int32()
    assert types["f"] == pa.float32() and types["d"] == pa.float64()
    assert types["name"] == pa.string() and types["t"] == pa.string()
    assert types["pos"] == pa.list_(pa.float64(), 2) and types["poly"] == pa.list_(pa.float64())
    assert types["bins"] == pa.list_(pa.int32(), 3) and types["hist"] == pa.list_(pa.int16())
    rows = table.to_pylist()
    assert all(v is None for v in rows[1].values())  # the all-NULL row
    first = rows[0]
    assert first["id"] == 1 and first["flag"] is True and first["ub"] == 0
    assert first["f"] == 1.5 and first["d"] == 0.1 and first["dec_num"] == 2.5
    assert first["name"] == "plain" and first["label"] == "ünïcödé"
    assert first["t"] == "2024-01-02T03:04:05.678"
    assert first["pos"] == [10.0, 20.0] and first["poly"] == TRIANGLE and first["bins"] == [1, 2, 3]
    third = rows[2]
    assert third["f"] is None  # NaN is NULL, as in VOTable
    assert third["d"] == math.inf and rows[3]["d"] == -math.inf
    assert third["name"] == "Λ-CDM <&> ok"  # Parquet strings are UTF-8: no ASCII folding
    assert third["label"] == "€ and 😀" and third["code"] == "ΛΛΛΛ"
    assert third["t"] == "2020-05-06" and rows[3]["t"] == "2024-01-01T23:00:00.000"
    assert third["poly"] == [] and third["hist"] == []
    assert rows[3]["pos"] is None and rows[3]["poly"] is None


def test_embedded_votable_describes_columns_in_order():
    data = render("parquet", overflow=True)
    text, vot = embedded(data)
    (resource,) = vot.resources
    assert resource.type == "results"
    table = resource.tables[0]
    assert "<DATA" not in text  # a DATA-less TABLE, as VOParquet asks
    assert [f.name for f in table.fields] == open_parquet(data).schema_arrow.names
    by_name = {f.name: f for f in table.fields}
    assert str(by_name["d"].unit) == "deg" and by_name["d"].ucd == "pos.eq.ra"
    assert by_name["pos"].xtype == "point" and by_name["pos"].arraysize == "2"
    assert by_name["id"].description == 'Row <id> & "key"'
    statuses = [i.value for i in resource.infos if i.name == "QUERY_STATUS"]
    assert statuses == ["OK", "OVERFLOW"]
    assert text.index("</TABLE>") < text.index('value="OVERFLOW"')
    assert {i.name: i.value for i in resource.infos}["QUERY"] == "SELECT *\nFROM t"


def test_error_goes_into_the_footer():
    data = render("parquet", batches=[ROWS[:3]], error="cancelled by statement timeout")
    _, vot = embedded(data)
    infos = [(i.value, i.content) for i in vot.resources[0].infos if i.name == "QUERY_STATUS"]
    assert infos == [("OK", None), ("ERROR", "cancelled by statement timeout")]
    assert open_parquet(data).metadata.num_rows == 3  # what was sent stays readable


def test_row_groups_stream_as_they_complete():
    writer = ParquetResultWriter(row_group_rows=4)
    head = writer.head(FIELDS)
    assert head == b"PAR1"
    pieces = [writer.rows(ROWS[:3]), writer.rows(ROWS[3:]), writer.rows(ROWS[:3])]
    assert pieces[0] == b""  # 3 rows wait for the row group to fill
    assert len(pieces[1]) > 0  # 5 rows ≥ 4: a row group went out
    assert pieces[2] == b""
    tail = writer.tail()
    assert tail.endswith(b"PAR1")
    parquet = open_parquet(head + b"".join(pieces) + tail)
    assert parquet.metadata.num_row_groups == 2
    assert parquet.metadata.num_rows == 8


def test_empty_result():
    data = render("parquet", batches=[])
    parquet = open_parquet(data)
    assert parquet.metadata.num_rows == 0
    assert parquet.schema_arrow.names == [f.name for f in FIELDS]
    _, vot = embedded(data)
    assert len(vot.get_first_table().fields) == len(FIELDS)


def test_astropy_reads_units_and_ucds():
    pytest.importorskip("pandas")  # astropy's Parquet reader needs it
    # astropy's reader stitches the embedded VOTable to the data with vstack, which fails
    # for variable-length char columns (object vs str) and NULL strings: numeric columns
    fields = [
        Column("id", "long", ucd="meta.id"),
        Column("ra", "double", unit="deg", ucd="pos.eq.ra", description="Right ascension"),
        Column("mag", "float", unit="mag"),
        Column("pos", "double", "2", xtype="point", unit="deg"),
    ]
    rows = [(1, 10.5, 12.25, (10.5, -5.0)), (2, 11.5, 13.5, (11.5, -6.0))]
    table = Table.read(io.BytesIO(render("parquet", fields, [rows])), format="parquet.votable")
    assert list(table["id"]) == [1, 2]
    assert str(table["ra"].unit) == "deg" and table["ra"].meta["ucd"] == "pos.eq.ra"
    assert table["ra"].description == "Right ascension"
    assert str(table["mag"].unit) == "mag"
    assert table["pos"][1].tolist() == [11.5, -6.0] and table["pos"].meta["xtype"] == "point"
