"""The XML around the data: VOTable head (INFOs, FIELDs), tail and DALI error documents.

Placement follows DALI 1.1: the results RESOURCE opens with ``QUERY_STATUS=OK`` before
the TABLE; overflow and errors met while streaming are trailing ``QUERY_STATUS`` INFOs
after the TABLE (DALI-M12–M14), because the head has long been sent when they are known.
Documents declare VOTable 1.4, whose namespace is still the 1.3 one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from vo_service.metadata import Column

NAMESPACE = "http://www.ivoa.net/xml/VOTable/v1.3"
VERSION = "1.4"
_STATUSES = frozenset({"OK", "ERROR", "OVERFLOW"})

# XML 1.0 cannot carry these at all, not even as character references.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\r": "&#13;",
        "\n": "&#10;",
        "\t": "&#9;",
    }
)
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.\-]")


def needs_escape(value: str) -> bool:
    return _TEXT_SPECIAL.search(value) is not None


def xml_text(value: str) -> str:
    """Element content; CR is a reference so XML end-of-line handling keeps it."""
    if not _TEXT_SPECIAL.search(value):
        return value
    return _ILLEGAL.sub("\ufffd", value).translate(_TEXT_ESCAPES)


def xml_attr(value: str) -> str:
    """Attribute value; whitespace is referenced so attribute normalisation keeps it."""
    return _ILLEGAL.sub("\ufffd", value).translate(_ATTR_ESCAPES)


def xml_ids(names: Sequence[str]) -> list[str]:
    """Unique NCName IDs from column names, so FIELDs can be referenced (e.g. by DataLink)."""
    ids: list[str] = []
    seen: set[str] = set()
    for name in names:
        base = _NOT_NAME.sub("_", name) or "col"
        if not (base[0].isalpha() or base[0] == "_"):
            base = "_" + base
        candidate, suffix = base, 1
        while candidate in seen:
            suffix += 1
            candidate = f"{base}_{suffix}"
        seen.add(candidate)
        ids.append(candidate)
    return ids


def _opt(name: str, value: str | None) -> str:
    return f' {name}="{xml_attr(value)}"' if value else ""


def field(column: Column, xml_id: str, null: str | None = None) -> str:
    """One FIELD; empty attributes are left out, as the VOTable schema wants no blanks.

    ``arraysize="1"`` is left out too: VOTable 1.3 Erratum 3 deprecates it (readers
    disagree on it; taplint warns) and its encoding is the scalar's in every serialisation.
    """
    arraysize = None if column.arraysize == "1" else column.arraysize
    out = (
        f'<FIELD name="{xml_attr(column.name)}" ID="{xml_id}"'
        f' datatype="{xml_attr(column.datatype)}"'
        + _opt("arraysize", arraysize)
        + _opt("xtype", column.xtype)
        + _opt("unit", column.unit)
        + _opt("ucd", column.ucd)
        + _opt("utype", column.utype)
    )
    body = ""
    if column.description:
        body += f"<DESCRIPTION>{xml_text(column.description)}</DESCRIPTION>"
    if null is not None:
        body += f'<VALUES null="{null}"/>'
    return f"{out}>{body}</FIELD>\n" if body else f"{out}/>\n"


def info(name: str, value: str, content: str | None = None) -> str:
    start = f'<INFO name="{xml_attr(name)}" value="{xml_attr(value)}"'
    return f"{start}>{xml_text(content)}</INFO>\n" if content else f"{start}/>\n"


def _infos(infos: Sequence[tuple[str, str]]) -> list[str]:
    if any(name.upper() == "QUERY_STATUS" for name, _ in infos):
        raise ValueError("QUERY_STATUS is written by the writer, not passed in infos")
    return [info(name, value) for name, value in infos]


def head(
    fields: Sequence[Column],
    infos: Sequence[tuple[str, str]] = (),
    description: str | None = None,
    nulls: Mapping[int, str] | None = None,
) -> str:
    """Everything up to the last FIELD: the caller appends DATA (or nothing)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<VOTABLE version="{VERSION}" xmlns="{NAMESPACE}">\n',
        '<RESOURCE type="results">\n',
        info("QUERY_STATUS", "OK"),
    ]
    parts.extend(_infos(infos))
    parts.append("<TABLE>\n")
    if description:
        parts.append(f"<DESCRIPTION>{xml_text(description)}</DESCRIPTION>\n")
    nulls = nulls or {}
    for i, (column, xml_id) in enumerate(
        zip(fields, xml_ids([f.name for f in fields]), strict=True)
    ):
        parts.append(field(column, xml_id, nulls.get(i)))
    return "".join(parts)


def tail(*, overflow: bool = False, error: str | None = None) -> str:
    """Close the TABLE; a streaming error or an overflow becomes a trailing QUERY_STATUS."""
    out = "</TABLE>\n"
    if error is not None:
        out += info("QUERY_STATUS", "ERROR", error or "unspecified error")
    elif overflow:
        out += info("QUERY_STATUS", "OVERFLOW")
    return out + "</RESOURCE>\n</VOTABLE>\n"


def error_document(
    message: str, *, status: str = "ERROR", infos: Sequence[tuple[str, str]] = ()
) -> bytes:
    """DALI error VOTable; pyvo turns its QUERY_STATUS text into ``DALQueryError``."""
    if status not in _STATUSES:
        raise ValueError(f"QUERY_STATUS must be one of {sorted(_STATUSES)}, not {status!r}")
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<VOTABLE version="{VERSION}" xmlns="{NAMESPACE}">\n',
        '<RESOURCE type="results">\n',
        info("QUERY_STATUS", status, message or "unspecified error"),
    ]
    parts.extend(_infos(infos))
    parts.append("</RESOURCE>\n</VOTABLE>\n")
    return "".join(parts).encode()
