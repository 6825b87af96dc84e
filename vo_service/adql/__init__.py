"""ADQL 2.1 front end: ADQL text → syntax tree → one PostgreSQL + pgsphere SELECT.

Why our own: the translator we used before was measured unsafe (it evaluated geometry
arguments, pasted POLYGON strings into SQL and passed any function name through) and
incomplete. Here the SQL is built by construction: literals are re-emitted from decoded
values, identifiers are checked against the catalogue and double-quoted, functions must be
on an allowlist (ADQL's own plus the declared UDFs in :data:`UDFS`), tables must be
published or uploaded in the same request, and the grammar admits exactly one SELECT
(WITH and set operations included), so a second statement is a syntax error.

Why lark with LALR(1): ADQL is an SQL subset that fits LALR with the usual expression
layering; LALR parses in linear time with no backtracking, and lark builds the tree in
callbacks during reduction, so typical queries parse in well under a millisecond and a
hostile input cannot trigger exponential work (Earley would be 10 to 50 times slower; a
hand-written parser would be more code to get right). The grammar lives in
:mod:`.grammar`, the tree in :mod:`.ast`, the checks that need no catalogue in
:mod:`.parser`, name resolution and SQL generation in :mod:`.translator`, and the pgsphere
mapping with its decisions in :mod:`.geometry`.

``parse`` is the grammar-and-structure check (``vo-service adql --parse-only``); in that
mode any prefixed name (``ivo_foo``) passes as a UDF call, while ``translate`` accepts only
the UDFs this service implements.

Semantics chosen where ADQL leaves room (details in the modules): reserved words are the
SQL-92 and ADQL lists of :mod:`.reserved` (``"size"`` must be delimited, ``dec`` need not);
regular identifiers match case-insensitively, delimited ones exactly; LIKE has no escape
character (``ESCAPE ''``); ``CONTAINS(…) = 1``/``= 0`` become bare pgsphere predicates,
other uses the integer ``CAST(predicate AS integer)`` (NULL stays NULL); integer division
stays integral as in PostgreSQL; the coordinate-system argument must denote ICRS.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vo_service.adql.errors import ADQLError, ADQLSemanticError, ADQLSyntaxError
from vo_service.adql.functions import UDF, UDFS
from vo_service.metadata import Catalog, Column, Table

if TYPE_CHECKING:
    from vo_service.adql.ast import Query
    from vo_service.adql.parser import parse
    from vo_service.adql.translator import upload_table_sql

# The parser (lark) and the translator cost a tenth of a second to import; commands that
# only need the reserved words or the feature list (the schema upgrade, every CLI command)
# do not pay it.
_LAZY = {
    "Query": "vo_service.adql.ast",
    "parse": "vo_service.adql.parser",
    "upload_table_sql": "vo_service.adql.translator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LANGUAGE_FEATURES",
    "UDF",
    "UDFS",
    "ADQLError",
    "ADQLSemanticError",
    "ADQLSyntaxError",
    "Query",
    "Translation",
    "parse",
    "translate",
    "upload_table_sql",
]

# TAPRegExt languageFeatures this translator implements, for the capabilities document.
# IVOIDs compare case-insensitively. Keys are spelled as TAPRegExt 1.0 writes them, which
# is what deployed validators (STILTS taplint 3.4) recognise as standard; the one key they
# do not know yet (adql-conditional, new in ADQL 2.1) keeps ADQL 2.1's lower case, so it is
# reported as a custom feature rather than as a misspelt standard one.
LANGUAGE_FEATURES: dict[str, tuple[str, ...]] = {
    "ivo://ivoa.net/std/TAPRegExt#features-adqlgeo": (
        "POINT",
        "CIRCLE",
        "POLYGON",
        "BOX",
        "REGION",
        "CONTAINS",
        "INTERSECTS",
        "DISTANCE",
        "AREA",
        "CENTROID",
        "COORD1",
        "COORD2",
        "COORDSYS",
    ),
    "ivo://ivoa.net/std/TAPRegExt#features-udf": tuple(u.form for u in UDFS.values()),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-string": ("LOWER", "UPPER", "ILIKE"),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-common-table": ("WITH",),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-sets": ("UNION", "EXCEPT", "INTERSECT"),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-type": ("CAST",),
    "ivo://ivoa.net/std/tapregext#features-adql-conditional": ("COALESCE",),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-unit": ("IN_UNIT",),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-offset": ("OFFSET",),
}


@dataclass(frozen=True)
class Translation:
    """What the executor needs: the SQL, the result FIELDs, TOP and the tables read."""

    sql: str
    fields: tuple[Column, ...]
    top: int | None
    tables: tuple[str, ...]


def translate(
    text: str,
    catalog: Catalog,
    *,
    uploads: Mapping[str, Table] | None = None,
    max_rows: int | None = None,
) -> Translation:
    """Translate one ADQL query; raise ADQLError (syntax or semantic) if it cannot run.

    ``max_rows`` (the executor passes MAXREC+1) caps the outermost query with
    ``LIMIT min(TOP, max_rows)``; ``uploads`` maps TAP_UPLOAD names to their tables, which
    the executor provides as :func:`upload_table_sql` temporary tables.
    """
    if max_rows is not None and max_rows < 0:
        raise ValueError("max_rows must not be negative")
    from vo_service.adql.parser import parse
    from vo_service.adql.translator import Translator

    query = parse(text)
    translator = Translator(catalog, uploads or {})
    try:
        sql, fields, top = translator.statement(query, max_rows)
    except RecursionError:
        raise ADQLSemanticError("the query is nested too deeply") from None
    return Translation(sql, tuple(fields), top, tuple(translator.tables))
