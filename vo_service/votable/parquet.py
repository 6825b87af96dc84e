"""VOParquet results: Parquet row groups streamed as completed, VOTable metadata in the footer.

Follows the IVOA VOParquet 1.0 Note: the footer's key/value metadata holds
``IVOA.VOTable-Parquet.version`` = ``1.0`` and ``IVOA.VOTable-Parquet.content``, a
DATA-less VOTable whose first TABLE has one FIELD per Parquet column, in order. TOPCAT,
STILTS and astropy (``format="parquet.votable"``) read units, UCDs and descriptions from
it. The footer is written last, so that VOTable can carry the trailing OVERFLOW/ERROR
``QUERY_STATUS`` exactly as the XML serialisations do.

Parquet needs a seekable-free sink only: pyarrow writes each finished row group straight
into ``_Sink``, and ``rows()`` hands over whatever has arrived. Batches are gathered up
to ``row_group_rows`` so row groups stay large enough to be useful to readers.

Column types follow the FIELDs (as the Note asks): timestamps are ISO strings because
their FIELD is ``char``/``timestamp``, fixed arrays are fixed-size lists, variable arrays
lists, and NULLs (including NaN floats, which VOTable treats as NULL) are Parquet nulls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vo_service.metadata import Column
from vo_service.votable import document
from vo_service.votable._cells import (
    Cell,
    Kind,
    arrays,
    columns_of,
    gc_paused,
    iso_matrix,
    numbers,
    plan,
    texts,
)
from vo_service.votable._text import iso_array

VOPARQUET_VERSION = "1.0"
_ARROW = {
    "boolean": pa.bool_(),
    "unsignedByte": pa.uint8(),
    "short": pa.int16(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
}


class _Sink:
    """Write-only file object for pyarrow; ``take`` hands over the bytes written so far."""

    closed = False

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks = []
        return out


def _type(cell: Cell) -> pa.DataType:
    if cell.kind is Kind.STRING:
        return pa.string()
    element = _ARROW[cell.column.datatype]
    if cell.kind is Kind.SCALAR:
        return element
    return pa.list_(element, cell.count) if cell.count is not None else pa.list_(element)


def _array(cell: Cell, values: Sequence[object], type_: pa.DataType) -> pa.Array:
    if cell.kind is Kind.STRING:
        fast = iso_matrix(values) if cell.iso_fast else None
        if fast is not None:
            return iso_array(*fast)
        strs, _ = texts(values, cell)
        return pa.array(strs, type=type_)
    if cell.kind is Kind.SCALAR:
        data, nulls = numbers(values, cell)
        return pa.array(data, type=type_, mask=nulls)
    flat, lengths, nulls = arrays(values, cell)
    elements = pa.array(flat, type=type_.value_type)
    mask = pa.array(nulls) if nulls is not None else None
    if cell.count is not None:
        return pa.FixedSizeListArray.from_arrays(elements, cell.count, mask=mask)
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), elements, mask=mask)


class ParquetResultWriter:
    in_band_status = True

    def __init__(
        self,
        media_type: str = "application/vnd.apache.parquet",
        *,
        row_group_rows: int = 100_000,
        compression: str = "snappy",
    ) -> None:
        self.media_type = media_type
        self._row_group_rows = row_group_rows
        self._compression = compression
        self._cells: list[Cell] = []
        self._sink = _Sink()
        self._writer: pq.ParquetWriter | None = None
        self._schema = pa.schema([])
        self._votable_head = ""
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def head(
        self,
        fields: Sequence[Column],
        *,
        infos: Sequence[tuple[str, str]] = (),
        description: str | None = None,
    ) -> bytes:
        self._cells = [plan(f) for f in fields]
        self._schema = pa.schema([pa.field(c.name, _type(c)) for c in self._cells])
        self._votable_head = document.head(fields, infos, description)
        self._writer = pq.ParquetWriter(self._sink, self._schema, compression=self._compression)
        return self._sink.take()

    @gc_paused()
    def rows(self, batch: Sequence[Sequence[object]]) -> bytes:
        if not batch:
            return b""
        columns = columns_of(batch, len(self._cells))
        arrays_ = [
            _array(cell, values, field.type)
            for cell, values, field in zip(self._cells, columns, self._schema, strict=True)
        ]
        self._pending.append(pa.RecordBatch.from_arrays(arrays_, schema=self._schema))
        self._pending_rows += len(batch)
        if self._pending_rows >= self._row_group_rows:
            self._flush()
        return self._sink.take()

    def _flush(self) -> None:
        if self._pending and self._writer is not None:
            self._writer.write_table(
                pa.Table.from_batches(self._pending, self._schema),
                row_group_size=self._pending_rows,
            )
        self._pending, self._pending_rows = [], 0

    def tail(self, *, overflow: bool = False, error: str | None = None) -> bytes:
        assert self._writer is not None, "head() must come first"
        self._flush()
        content = self._votable_head + document.tail(overflow=overflow, error=error)
        self._writer.add_key_value_metadata(
            {
                "IVOA.VOTable-Parquet.version": VOPARQUET_VERSION,
                "IVOA.VOTable-Parquet.content": content,
            }
        )
        self._writer.close()
        return self._sink.take()
