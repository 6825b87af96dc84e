"""VOTable BINARY2 and BINARY: each batch is encoded by numpy, then base64-streamed.

A batch is turned into per-field big-endian byte matrices (one vectorised conversion per
column), which are interleaved into row order by numpy rather than packed row by row:
fixed-width fields are column slices of an (n, width) matrix, variable-length strings
and arrays are padded into it and the padding squeezed out with one boolean mask (see
``interleave``). The base64 encoder only ever encodes whole 3-byte groups and carries
the remaining bytes to the next batch, so the chunks concatenate into one valid STREAM.

BINARY has no NULL flags: floats use NaN, booleans ``?``, strings and variable arrays
length 0, and integers the most negative value of their type (255 for unsignedByte),
declared in ``<VALUES null=…>``; a real value equal to it reads back as NULL.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence

import numpy as np

from vo_service.metadata import Column
from vo_service.votable import document
from vo_service.votable._cells import (
    INT_NULLS,
    Cell,
    Kind,
    arrays,
    columns_of,
    encode,
    fixed_strings,
    gc_paused,
    iso_matrix,
    numbers,
    plan,
    texts,
)

_TRUE, _FALSE, _NULL_BOOL = ord("T"), ord("F"), ord("?")
_BE_INT32 = np.dtype(">i4")

# A piece of a row: a fixed-width (n, w) byte matrix, or variable bytes with per-row lengths
# (the bytes either concatenated, 1-d, or as an (n, w) matrix padded after each length).
_Piece = np.ndarray | tuple[np.ndarray, np.ndarray]


class Base64Stream:
    """Incremental base64; concatenated outputs form one stream.

    Each output is one line: whitespace inside a STREAM is insignificant, and breaking
    every 76 characters (MIME's habit) cost as much as the encoding itself.
    """

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes | np.ndarray) -> bytes:
        raw = data.tobytes() if isinstance(data, np.ndarray) else data
        if self._carry:
            raw = self._carry + raw
        cut = len(raw) - len(raw) % 3
        self._carry = raw[cut:]
        return binascii.b2a_base64(raw[:cut]) if cut else b""

    def finish(self) -> bytes:
        out = binascii.b2a_base64(self._carry) if self._carry else b""
        self._carry = b""
        return out


def _bytes(data: np.ndarray, n: int) -> np.ndarray:
    """Big-endian (n, width) byte matrix of n rows' worth of elements."""
    big = data.astype(data.dtype.newbyteorder(">"), copy=False)
    return np.ascontiguousarray(big).view(np.uint8).reshape(n, -1)


def _bool_codes(data: np.ndarray, nulls: np.ndarray | None) -> np.ndarray:
    codes = np.where(data, np.uint8(_TRUE), np.uint8(_FALSE))
    if nulls is not None:
        codes[nulls] = _NULL_BOOL
    return codes


def _iso_payload(
    matrix: np.ndarray, nulls: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Timestamp strings as a padded (n, 23) payload and lengths; NULL is an empty string."""
    lengths = np.full(len(matrix), matrix.shape[1], np.int64)
    if nulls is not None:
        lengths[nulls] = 0
    return matrix, lengths, nulls


def interleave(pieces: Sequence[_Piece], n: int) -> np.ndarray:
    """Row-major bytes from per-field pieces, all vectorised over the rows.

    Usually every piece is written at a fixed column of an (n, width) matrix in which
    variable pieces are padded to their longest value, and a boolean mask then squeezes
    the padding out in one pass. When one long value would make that padding costly
    (say a FITS header among short strings), bytes are scattered to their offsets instead.
    """
    widths = [p.shape[1] if isinstance(p, np.ndarray) else _var_width(p) for p in pieces]
    total = sum(widths)
    mat = np.empty((n, total), np.uint8)
    if all(isinstance(p, np.ndarray) for p in pieces):
        offset = 0
        for piece, width in zip(pieces, widths, strict=True):
            mat[:, offset : offset + width] = piece  # type: ignore[index]
            offset += width
        return mat.reshape(-1)
    exact = sum(p.size if isinstance(p, np.ndarray) else int(p[1].sum()) for p in pieces)
    if n * total > 2 * exact + (1 << 20):
        del mat
        return _scatter(pieces, n)
    keep = np.ones((n, total), bool)
    offset = 0
    for piece, width in zip(pieces, widths, strict=True):
        if isinstance(piece, np.ndarray):
            mat[:, offset : offset + width] = piece
        else:
            payload, lengths = piece
            if payload.ndim == 2:
                mat[:, offset : offset + width] = payload
            elif payload.size:
                starts = np.cumsum(lengths) - lengths
                rows = np.arange(n, dtype=np.int64) * total + offset - starts
                mat.reshape(-1)[np.repeat(rows, lengths) + np.arange(payload.size)] = payload
            keep[:, offset : offset + width] = np.arange(width) < lengths[:, None]
        offset += width
    return mat.reshape(-1)[keep.reshape(-1)]


def _var_width(piece: tuple[np.ndarray, np.ndarray]) -> int:
    payload, lengths = piece
    if payload.ndim == 2:
        return payload.shape[1]
    return int(lengths.max()) if lengths.size else 0


def _scatter(pieces: Sequence[_Piece], n: int) -> np.ndarray:
    """Interleave by computing every byte's destination; memory ∝ the real row sizes."""
    row_len = np.zeros(n, np.int64)
    for piece in pieces:
        row_len += piece.shape[1] if isinstance(piece, np.ndarray) else piece[1]
    ends = np.cumsum(row_len)
    pos = ends - row_len
    out = np.empty(int(ends[-1]) if n else 0, np.uint8)
    for piece in pieces:
        if isinstance(piece, np.ndarray):
            width = piece.shape[1]
            if width:
                out[(pos[:, None] + np.arange(width)).reshape(-1)] = piece.reshape(-1)
            pos = pos + width
            continue
        payload, lengths = piece
        if payload.ndim == 2:
            payload = payload[np.arange(payload.shape[1]) < lengths[:, None]]
        if payload.size:
            src = np.cumsum(lengths) - lengths
            out[np.repeat(pos - src, lengths) + np.arange(payload.size)] = payload
        pos = pos + lengths
    return out


class BinaryWriter:
    """BINARY2 (default; NULL bitmask per row) or BINARY (in-band NULL values)."""

    in_band_status = True

    def __init__(self, media_type: str, *, binary2: bool = True) -> None:
        self.media_type = media_type
        self._binary2 = binary2
        self._tag = "BINARY2" if binary2 else "BINARY"
        self._cells: list[Cell] = []
        self._b64 = Base64Stream()

    def head(
        self,
        fields: Sequence[Column],
        *,
        infos: Sequence[tuple[str, str]] = (),
        description: str | None = None,
    ) -> bytes:
        self._cells = [plan(f) for f in fields]
        nulls = (
            {}
            if self._binary2
            else {
                i: str(INT_NULLS[c.column.datatype])
                for i, c in enumerate(self._cells)
                if c.column.datatype in INT_NULLS
            }
        )
        xml = document.head(fields, infos, description, nulls)
        return (xml + f'<DATA><{self._tag}>\n<STREAM encoding="base64">\n').encode()

    @property
    def binary2(self) -> bool:
        return self._binary2

    def encoded(self, data: bytes) -> bytes:
        """Rows already encoded elsewhere (by PostgreSQL), only to be base64-streamed."""
        return self._b64.feed(data)

    @gc_paused()
    def rows(self, batch: Sequence[Sequence[object]]) -> bytes:
        if not batch:
            return b""
        return self._b64.feed(self.encode(batch))

    def tail(self, *, overflow: bool = False, error: str | None = None) -> bytes:
        end = f"</STREAM>\n</{self._tag}></DATA>\n" + document.tail(overflow=overflow, error=error)
        return self._b64.finish() + end.encode()

    def encode(self, batch: Sequence[Sequence[object]]) -> np.ndarray:
        """The raw (not base64) bytes of a batch of rows."""
        n = len(batch)
        if not n:
            return np.empty(0, np.uint8)
        columns = columns_of(batch, len(self._cells))
        pieces: list[_Piece] = []
        flags = np.zeros((n, len(self._cells)), bool) if self._binary2 else None
        for i, (cell, values) in enumerate(zip(self._cells, columns, strict=True)):
            nulls = self._cell(cell, values, n, pieces)
            if flags is not None and nulls is not None:
                flags[:, i] = nulls
        if flags is not None:
            pieces.insert(0, np.packbits(flags, axis=1))
        return interleave(pieces, n)

    def _cell(
        self, cell: Cell, values: Sequence[object], n: int, pieces: list[_Piece]
    ) -> np.ndarray | None:
        """Append the field's pieces; return its NULL mask."""
        sentinel = None if self._binary2 else INT_NULLS.get(cell.column.datatype)
        if cell.kind is Kind.SCALAR:
            data, nulls = numbers(values, cell)
            if data.dtype.kind == "b":
                data = _bool_codes(data, nulls)
            elif nulls is not None and sentinel is not None:
                data[nulls] = sentinel
            pieces.append(_bytes(data, n))
            return nulls
        if cell.kind is Kind.ARRAY:
            flat, lengths, nulls = arrays(values, cell)
            if flat.dtype.kind == "b":
                flat = _bool_codes(flat, None)
            if cell.count is not None:
                if nulls is not None:
                    if sentinel is not None:
                        flat.reshape(n, cell.count)[nulls] = sentinel
                    elif flat.dtype == np.uint8 and cell.column.datatype == "boolean":
                        flat.reshape(n, cell.count)[nulls] = _NULL_BOOL
                pieces.append(_bytes(flat, n))
            else:
                pieces.append(_bytes(lengths.astype(_BE_INT32), n))
                pieces.append((_bytes(flat, 1).reshape(-1), lengths * flat.dtype.itemsize))
            return nulls
        fast = iso_matrix(values) if cell.iso_fast else None
        if fast is not None:
            payload, lengths, nulls = _iso_payload(*fast)
        else:
            strs, joined = texts(values, cell, votable=True)
            payload, lengths, nulls = encode(strs, joined, cell)
        unit = 2 if cell.unicode else 1
        if cell.count is not None:
            pieces.append(fixed_strings(payload, lengths * unit, cell.count * unit))
        else:
            pieces.append(_bytes(lengths.astype(_BE_INT32), n))
            pieces.append((payload, lengths * unit))
        return nulls
