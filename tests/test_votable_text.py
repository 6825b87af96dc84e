"""CSV and TSV result writers: read back with the csv module and astropy."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math

import pytest
from astropy.table import Table

from vo_service.metadata import Column
from vo_service.votable import writer_for
from vo_service.votable.text import DelimitedWriter

from .test_votable import FIELDS, ROWS, TRIANGLE, render

EXPECTED = [
    [
        "1",
        "true",
        "0",
        "-32767",
        "2147483647",
        "1.5",
        "0.1",
        "plain",
        "ABCDEF",
        "ünïcödé",
        "2024-01-02T03:04:05.678",
        "10.0 20.0",
        "10.0 20.0 0.5",
        "10.0 20.0 11.0 20.0 10.5 21.0",
        "1 2 3",
        "1 2",
        "2.5",
        "0.25",
    ],
    [""] * len(FIELDS),
    [
        "-3",
        "false",
        "254",
        "7",
        "-5",
        "",
        "+Inf",
        "Λ-CDM <&> ok",
        "ΛΛΛΛ",
        "€ and 😀",
        "2020-05-06",
        "1.0 2.0",
        "0.0 0.0 1.0",
        "",
        "-1 0 1",
        "",
        "",
        "-0.00001",
    ],
    [
        "1099511627776",
        "",
        "",
        "",
        "",
        "",
        "-Inf",
        "",
        "",
        "",
        "2024-01-01T23:00:00.000",
        "",
        "",
        "",
        "",
        "",
        "1e+300",
        "",
    ],
    [
        "5",
        "false",
        "3",
        "1",
        "2",
        "3.25",
        "-0.5",
        'quote " comma , tab \t end',
        "x",
        "x",
        "2021-03-04T05:06:07.800",
        "359.5 -89.5",
        "1.0 2.0 3.0",
        "10.0 20.0 11.0 20.0 10.5 21.0 10.0 21.0",
        "0 0 0",
        "7",
        "0.0",
        "1.0",
    ],
]


def test_csv_round_trip_with_csv_module():
    data = render("csv", batches=[ROWS[:1], ROWS[1:3], ROWS[3:]], overflow=True)
    assert data.endswith(b"\r\n") and data.split(b"\n", 1)[0].endswith(b"\r")  # RFC 4180
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert rows[0] == [f.name for f in FIELDS]
    assert rows[1:] == EXPECTED  # no overflow marker can exist in CSV (TAP-M12)


def test_csv_quotes_only_where_needed():
    lines = render("csv").decode().split("\r\n")
    assert lines[1].startswith("1,true,0,-32767,")
    assert '"quote "" comma , tab \t end"' in lines[5]
    assert lines[2] == "," * (len(FIELDS) - 1)


def test_csv_with_astropy():
    fields = [
        Column("id", "long"),
        Column("ra", "double", unit="deg"),
        Column("name", "char", "*"),
        Column("t", "char", "*", xtype="timestamp"),
    ]
    rows = [
        (1, 10.5, "a, b", dt.datetime(2024, 1, 1, 12)),
        (2, None, None, None),
        (3, 11.0, 'say "hi"', dt.datetime(2024, 1, 2)),
    ]
    table = Table.read(io.BytesIO(render("csv", fields, [rows])), format="ascii.csv")
    assert table.colnames == ["id", "ra", "name", "t"]
    assert list(table["id"]) == [1, 2, 3]
    assert table["ra"][0] == 10.5 and table["ra"].mask[1]
    assert list(table["name"].filled("")) == ["a, b", "", 'say "hi"']
    assert table["t"][0] == "2024-01-01T12:00:00.000"


def test_single_column_null_is_not_a_blank_line():
    data = render("csv", [Column("x", "int")], [[(1,), (None,), (3,)]])
    assert data == b'x\r\n1\r\n""\r\n3\r\n'


def test_csv_header_absent_and_quoted_names():
    writer = writer_for("text/csv;header=absent")
    assert writer.media_type == "text/csv;header=absent"
    assert writer.head([Column("a", "int")]) == b""
    assert render("csv", [Column('a,"b"', "int")], [[(1,)]]) == b'"a,""b"""\r\n1\r\n'


def test_tsv_round_trip_and_escapes():
    data = render("tsv", batches=[ROWS[:2], ROWS[2:]], error="ignored: TSV has no status")
    lines = data.decode().split("\n")
    assert lines[-1] == ""
    rows = [line.split("\t") for line in lines[:-1]]
    assert rows[0] == [f.name for f in FIELDS]
    assert all(len(r) == len(FIELDS) for r in rows)

    def unescape(value: str) -> str:
        out, i = [], 0
        while i < len(value):
            if value[i] == "\\":
                out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[value[i + 1]])
                i += 2
            else:
                out.append(value[i])
                i += 1
        return "".join(out)

    assert [[unescape(v) for v in r] for r in rows[1:]] == EXPECTED
    assert 'quote " comma , tab \\t end' in lines[5]


def test_tsv_escapes_backslash_and_newlines():
    data = render("tsv", [Column("s", "char", "*")], [[("a\\b\nc\rd\te",)]])
    assert data == b"s\na\\\\b\\nc\\rd\\te\n"


def test_text_formats_never_write_status():
    for fmt in ("csv", "tsv"):
        writer = writer_for(fmt)
        assert isinstance(writer, DelimitedWriter) and writer.in_band_status is False
        writer.head(FIELDS)
        assert writer.tail(overflow=True) == b"" and writer.tail(error="x") == b""


def test_empty_csv_is_just_the_header():
    assert render("csv", batches=[]) == (",".join(f.name for f in FIELDS) + "\r\n").encode()


@pytest.mark.parametrize("value", [0.1, 1.0, -0.0, 1e-7, 123456789.0, 1e16, 5e-324, 1.7e308])
def test_floats_round_trip_exactly(value):
    data = render("csv", [Column("d", "double")], [[(value,)]])
    text = data.decode().split("\r\n")[1]
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)
    assert any(c in text for c in ".e")  # a double never looks like an integer


def test_float32_uses_float32_digits():
    data = render("csv", [Column("f", "float")], [[(0.1,), (16777217.0,)]])
    assert data.decode().split("\r\n")[1:3] == ["0.1", "16777216.0"]


def test_arrays_in_text_are_space_separated():
    data = render("tsv", [Column("p", "double", "*", xtype="polygon")], [[(TRIANGLE,), ([],)]])
    assert data.decode().split("\n")[1:3] == ["10.0 20.0 11.0 20.0 10.5 21.0", ""]
