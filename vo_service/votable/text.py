"""CSV (RFC 4180) and TSV results: a header line of column names, DALI literals in cells.

Arrays are space-separated numbers and timestamps ISO 8601, as DALI serialises them in
text; NULL is an empty cell (so NULL and the empty string look alike). CSV quotes a
field (doubling its quotes) when it holds a comma, quote, CR or LF, and ends lines with
CRLF. TSV cannot quote, so tab, newline, carriage return and backslash inside values are
written as ``\\t``, ``\\n``, ``\\r``, ``\\\\``. Neither format can say "overflow" or
"error" in band (TAP-M12): ``tail`` writes nothing, and ``in_band_status`` is False so
the caller knows to signal a mid-stream error another way (e.g. abort the response).
"""

from __future__ import annotations

from collections.abc import Sequence

from vo_service.metadata import Column
from vo_service.votable._cells import Cell, gc_paused, plan
from vo_service.votable._text import Dialect, encode_batch


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _tsv_field(value: str) -> str:
    for old, new in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        value = value.replace(old, new)
    return value


class DelimitedWriter:
    in_band_status = False

    def __init__(self, media_type: str, *, tab: bool = False, header: bool = True) -> None:
        self.media_type = media_type
        self._dialect = Dialect.TSV if tab else Dialect.CSV
        self._header = header
        self._cells: list[Cell] = []

    def head(
        self,
        fields: Sequence[Column],
        *,
        infos: Sequence[tuple[str, str]] = (),
        description: str | None = None,
    ) -> bytes:
        self._cells = [plan(f) for f in fields]
        if not self._header:
            return b""
        if self._dialect is Dialect.TSV:
            return ("\t".join(_tsv_field(f.name) for f in fields) + "\n").encode()
        return (",".join(_csv_field(f.name) for f in fields) + "\r\n").encode()

    @gc_paused()
    def rows(self, batch: Sequence[Sequence[object]]) -> bytes:
        return encode_batch(batch, self._cells, self._dialect)

    def tail(self, *, overflow: bool = False, error: str | None = None) -> bytes:
        return b""
