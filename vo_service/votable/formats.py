"""RESPONSEFORMAT/FORMAT values → result writers, and the format list for TAPRegExt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from vo_service.metadata import Column
from vo_service.votable.binary import BinaryWriter
from vo_service.votable.parquet import ParquetResultWriter
from vo_service.votable.tabledata import TableDataWriter
from vo_service.votable.text import DelimitedWriter

VOTABLE = "application/x-votable+xml"
CSV = "text/csv"
TSV = "text/tab-separated-values"
PARQUET = "application/vnd.apache.parquet"
_TAPREGEXT = "ivo://ivoa.net/std/TAPRegExt#output-votable-"


class UnsupportedFormat(ValueError):
    """RESPONSEFORMAT names nothing we produce; DALI-S1 wants an error, not a default."""


class ResultWriter(Protocol):
    """One result, written as head, any number of row batches, then tail.

    Writers are single-use and keep per-result state (e.g. base64 carry bytes), so get
    a fresh one from ``writer_for`` for every response.
    """

    media_type: str
    in_band_status: bool  # False: overflow/error cannot be written (CSV, TSV)

    def head(
        self,
        fields: Sequence[Column],
        *,
        infos: Sequence[tuple[str, str]] = (),
        description: str | None = None,
    ) -> bytes: ...

    def rows(self, batch: Sequence[Sequence[object]]) -> bytes: ...

    def tail(self, *, overflow: bool = False, error: str | None = None) -> bytes: ...


class OutputFormat(NamedTuple):
    """One TAPRegExt ``outputFormat``: the MIME type, its short aliases, a description."""

    mime: str
    aliases: tuple[str, ...]
    description: str

    @property
    def ivo_id(self) -> str | None:
        """Standard TAPRegExt key for the VOTable serialisations, None for the others."""
        _, _, serialization = self.mime.partition(";serialization=")
        return _TAPREGEXT + _KEYS[serialization] if serialization else None


_KEYS = {"TABLEDATA": "td", "BINARY": "binary", "BINARY2": "binary2"}

FORMATS: list[OutputFormat] = [
    OutputFormat(VOTABLE, ("votable",), "VOTable 1.4, BINARY2 serialization (the default)"),
    OutputFormat(
        f"{VOTABLE};serialization=BINARY2",
        ("votable/b2",),
        "VOTable 1.4, BINARY2 serialization (NULL flags per row)",
    ),
    OutputFormat(
        f"{VOTABLE};serialization=BINARY",
        ("votable/bin",),
        "VOTable 1.4, BINARY serialization (NULL integers as VALUES null)",
    ),
    OutputFormat(
        f"{VOTABLE};serialization=TABLEDATA",
        ("votable/td",),
        "VOTable 1.4, TABLEDATA serialization (XML text; slowest, largest)",
    ),
    OutputFormat(
        f"{CSV};header=present",
        ("csv",),
        "Comma-separated values (RFC 4180) with a header line; no overflow flag",
    ),
    OutputFormat(TSV, ("tsv",), "Tab-separated values with a header line; no overflow flag"),
    OutputFormat(
        PARQUET,
        ("parquet",),
        "VOParquet 1.0: Apache Parquet with the VOTable metadata in its footer",
    ),
]

_Factory = Callable[[str], ResultWriter]


def _votable(serialization: str) -> _Factory:
    match serialization:
        case "BINARY2":
            return lambda media: BinaryWriter(media, binary2=True)
        case "BINARY":
            return lambda media: BinaryWriter(media, binary2=False)
        case _:
            return TableDataWriter


_SHORT: dict[str, tuple[_Factory, str]] = {
    "votable": (_votable("BINARY2"), f"{VOTABLE};serialization=BINARY2"),
    "votable/b2": (_votable("BINARY2"), f"{VOTABLE};serialization=BINARY2"),
    "votable/bin": (_votable("BINARY"), f"{VOTABLE};serialization=BINARY"),
    "votable/td": (_votable("TABLEDATA"), f"{VOTABLE};serialization=TABLEDATA"),
    "csv": (lambda media: DelimitedWriter(media), f"{CSV};header=present"),
    "tsv": (lambda media: DelimitedWriter(media, tab=True), TSV),
    "parquet": (ParquetResultWriter, PARQUET),
}


def _parse(value: str) -> tuple[str, dict[str, str], str]:
    """Base type (lower case), parameters (lower-case names), and the value without blanks."""
    base, *raw_params = (part.strip() for part in value.split(";"))
    params: dict[str, str] = {}
    spelled = [base]
    for raw in raw_params:
        name, sep, val = (p.strip() for p in raw.partition("="))
        if not sep or not name:
            raise UnsupportedFormat(f"malformed media type parameter {raw!r} in {value!r}")
        params[name.lower()] = val.strip('"')
        spelled.append(f"{name}={val}")
    return base.lower(), params, ";".join(spelled)


def writer_for(format: str) -> ResultWriter:
    """A fresh writer for a RESPONSEFORMAT value; raises UnsupportedFormat for unknown ones.

    Short forms get the canonical media type; a MIME type is answered with exactly that
    type (DALI-M6), completed with our parameters only when the client gave none.
    """
    short = _SHORT.get(format.strip().lower())
    if short:
        factory, media = short
        return factory(media)
    base, params, spelled = _parse(format)
    given = bool(params)
    if params.pop("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise UnsupportedFormat(f"{format!r}: results are UTF-8 only")
    writer: ResultWriter | None = None
    if base in (VOTABLE, "text/xml", "application/xml"):
        serialization = params.pop("serialization", "BINARY2").upper()
        if serialization in _KEYS and not params:
            suffix = f";serialization={serialization}" if base == VOTABLE else ""
            writer = _votable(serialization)(spelled if given else base + suffix)
    elif base in (CSV, TSV):
        header = params.pop("header", "present").lower()
        if header in ("present", "absent") and not params:
            media = spelled if given else f"{base};header=present" if base == CSV else base
            writer = DelimitedWriter(media, tab=base == TSV, header=header == "present")
    elif base == PARQUET and not params:
        writer = ParquetResultWriter(spelled)
    if writer is None:
        raise UnsupportedFormat(
            f"unsupported RESPONSEFORMAT {format!r}; supported: "
            + ", ".join(alias for f in FORMATS for alias in f.aliases)
        )
    return writer
