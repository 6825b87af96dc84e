"""The function allowlist: ADQL 2.1 functions and the user-defined functions we declare.

Nothing else may be called. The SQL for every function is written here or in the
translator from fixed templates; a name the user typed never reaches the SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from vo_service.adql import typesys as ty

_ONE = (1, 1)
# name -> (minimum, maximum) argument count; maximum None means unbounded.
ADQL_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    **dict.fromkeys(
        [
            "ABS",
            "CEILING",
            "DEGREES",
            "EXP",
            "FLOOR",
            "LOG",
            "LOG10",
            "RADIANS",
            "SQRT",
            "ACOS",
            "ASIN",
            "ATAN",
            "COS",
            "COT",
            "SIN",
            "TAN",
        ],
        _ONE,
    ),
    "ATAN2": (2, 2),
    "MOD": (2, 2),
    "POWER": (2, 2),
    "PI": (0, 0),
    "RAND": (0, 1),
    "ROUND": (1, 2),
    "TRUNCATE": (1, 2),
    **dict.fromkeys(["COUNT", "SUM", "AVG", "MIN", "MAX"], _ONE),
    "LOWER": _ONE,
    "UPPER": _ONE,
    "COALESCE": (1, None),
    "IN_UNIT": (2, 2),
    "POINT": (2, 3),
    "CIRCLE": (2, 4),
    "POLYGON": (3, None),
    "BOX": (3, 5),
    "CONTAINS": (2, 2),
    "INTERSECTS": (2, 2),
    "DISTANCE": (2, 4),
    **dict.fromkeys(["AREA", "CENTROID", "COORD1", "COORD2", "COORDSYS", "REGION"], _ONE),
}
AGGREGATES = frozenset({"COUNT", "SUM", "AVG", "MIN", "MAX"})
GEOMETRY_VALUED = frozenset({"POINT", "CIRCLE", "POLYGON", "BOX", "REGION", "CENTROID"})
PREDICATES = frozenset({"CONTAINS", "INTERSECTS"})

# Plain numeric functions: ADQL name -> PostgreSQL name (argument count checked above).
SIMPLE_MATH = {
    "ABS": "abs",
    "CEILING": "ceil",
    "DEGREES": "degrees",
    "EXP": "exp",
    "FLOOR": "floor",
    "LOG": "ln",
    "LOG10": "log",
    "RADIANS": "radians",
    "SQRT": "sqrt",
    "ACOS": "acos",
    "ASIN": "asin",
    "ATAN": "atan",
    "COS": "cos",
    "COT": "cot",
    "SIN": "sin",
    "TAN": "tan",
    "ATAN2": "atan2",
    "POWER": "power",
    "PI": "pi",
}
# Functions PostgreSQL also defines for numeric, so a numeric argument gives a numeric result.
NUMERIC_PRESERVING = frozenset({"ABS", "CEILING", "EXP", "FLOOR", "LOG", "LOG10", "SQRT", "POWER"})

# ADQL 2.1 §4.1: UDF names carry a prefix; in parse-only mode any such name is a UDF call.
UDF_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\Z")


@dataclass(frozen=True)
class UDF:
    """A user-defined function this service implements; ``form`` goes to TAPRegExt."""

    name: str
    form: str
    description: str
    nargs: int
    result: ty.Typ
    render: Callable[[list[str]], str]
    aggregate: bool = False


def _bool_int(sql: str) -> str:
    return f"CAST(({sql}) AS integer)"


UDFS: dict[str, UDF] = {
    udf.name: udf
    for udf in (
        UDF(
            "ivo_nocasematch",
            "ivo_nocasematch(value VARCHAR(*), pattern VARCHAR(*)) -> INTEGER",
            "1 if value matches the LIKE pattern ignoring case, else 0.",
            2,
            ty.INT,
            lambda a: _bool_int(f"{a[0]} ILIKE {a[1]} ESCAPE ''"),
        ),
        UDF(
            "ivo_hasword",
            "ivo_hasword(haystack TEXT, needle TEXT) -> INTEGER",
            "1 if needle occurs in haystack as a word or phrase, ignoring case, else 0.",
            2,
            ty.INT,
            lambda a: _bool_int(
                f"to_tsvector('simple', {a[0]}) @@ phraseto_tsquery('simple', {a[1]})"
            ),
        ),
        UDF(
            "ivo_hashlist_has",
            "ivo_hashlist_has(hashlist TEXT, item TEXT) -> INTEGER",
            "1 if item is one of the #-separated items of hashlist, ignoring case, else 0.",
            2,
            ty.INT,
            lambda a: _bool_int(f"lower({a[1]}) = ANY (string_to_array(lower({a[0]}), '#'))"),
        ),
        UDF(
            "ivo_interval_overlaps",
            "ivo_interval_overlaps(l1 NUMERIC, h1 NUMERIC, l2 NUMERIC, h2 NUMERIC) -> INTEGER",
            "1 if the closed intervals [l1, h1] and [l2, h2] overlap, else 0.",
            4,
            ty.INT,
            lambda a: _bool_int(f"{a[1]} >= {a[2]} AND {a[3]} >= {a[0]}"),
        ),
        UDF(
            "ivo_string_agg",
            "ivo_string_agg(expr VARCHAR(*), delimiter VARCHAR(*)) -> VARCHAR(*)",
            "Aggregate: the values of expr joined with delimiter.",
            2,
            ty.CHAR,
            lambda a: f"string_agg(CAST({a[0]} AS text), {a[1]})",
            aggregate=True,
        ),
    )
}
