"""VOTable TABLEDATA: XML text cells for clients that cannot read the binary forms.

Cells and rows are formatted by Arrow kernels (see ``_text``); strings are XML-escaped
only when the column's text needs it. NULL is an empty TD, which VOTable 1.3+ reads as
NULL for every datatype, except for fixed-size arrays, where validators want the element
count: those get NaN, ``?`` or, for integers, the value declared in ``VALUES null`` (as
in BINARY).
"""

from __future__ import annotations

from collections.abc import Sequence

from vo_service.metadata import Column
from vo_service.votable import document
from vo_service.votable._cells import INT_NULLS, Cell, Kind, gc_paused, plan
from vo_service.votable._text import Dialect, encode_batch


class TableDataWriter:
    in_band_status = True

    def __init__(self, media_type: str) -> None:
        self.media_type = media_type
        self._cells: list[Cell] = []

    def head(
        self,
        fields: Sequence[Column],
        *,
        infos: Sequence[tuple[str, str]] = (),
        description: str | None = None,
    ) -> bytes:
        self._cells = [plan(f) for f in fields]
        nulls = {
            i: str(INT_NULLS[c.column.datatype])
            for i, c in enumerate(self._cells)
            if c.kind is Kind.ARRAY and c.count is not None and c.column.datatype in INT_NULLS
        }
        xml = document.head(fields, infos, description, nulls)
        return (xml + "<DATA><TABLEDATA>\n").encode()

    @gc_paused()
    def rows(self, batch: Sequence[Sequence[object]]) -> bytes:
        return encode_batch(batch, self._cells, Dialect.TABLEDATA)

    def tail(self, *, overflow: bool = False, error: str | None = None) -> bytes:
        return ("</TABLEDATA></DATA>\n" + document.tail(overflow=overflow, error=error)).encode()
