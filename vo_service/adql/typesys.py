"""Types of ADQL expressions, expressed as the VOTable triple the result FIELDs need."""

from __future__ import annotations

from dataclasses import dataclass

from vo_service.metadata import Column

_INTEGERS = ("unsignedByte", "short", "int", "long")
_REALS = ("float", "double")
GEOMETRIES = ("point", "circle", "polygon")


@dataclass(frozen=True, slots=True)
class Typ:
    """VOTable datatype/arraysize/xtype; datatype ``""`` means unknown."""

    datatype: str
    arraysize: str | None = None
    xtype: str | None = None

    @property
    def geometry(self) -> str | None:
        return self.xtype if self.xtype in GEOMETRIES else None

    @property
    def is_integer(self) -> bool:
        return self.datatype in _INTEGERS and not self.arraysize

    @property
    def is_real(self) -> bool:
        return self.datatype in _REALS and not self.arraysize and not self.xtype

    @property
    def is_numeric(self) -> bool:
        return self.is_integer or self.is_real

    @property
    def is_string(self) -> bool:
        return self.datatype in ("char", "unicodeChar") and self.xtype is None

    @property
    def is_timestamp(self) -> bool:
        return self.xtype == "timestamp"

    @property
    def known(self) -> bool:
        return bool(self.datatype)


UNKNOWN = Typ("")
BOOLEAN = Typ("boolean")
SHORT = Typ("short")
INT = Typ("int")
LONG = Typ("long")
FLOAT = Typ("float")
DOUBLE = Typ("double")
CHAR = Typ("char", "*")
TIMESTAMP = Typ("char", "*", "timestamp")
POINT = Typ("double", "2", "point")
CIRCLE = Typ("double", "3", "circle")
POLYGON = Typ("double", "*", "polygon")


def of_column(col: Column) -> Typ:
    return Typ(col.datatype, col.arraysize, col.xtype)


def common(values: list[X]) -> Typ:
    """Type of COALESCE/CASE/UNION results: numeric types promote as PostgreSQL does."""
    known = [v for v in values if v.typ.known]
    if not known:
        return UNKNOWN
    if all(v.typ.is_numeric for v in known):
        typ = known[0].typ
        for v in known[1:]:
            typ = arithmetic(typ, v.typ)
        if typ.is_integer and any(v.numeric for v in values):
            return DOUBLE
        return typ
    return known[0].typ


def arithmetic(a: Typ, b: Typ) -> Typ:
    """Result of + - * / following PostgreSQL's promotion (int op int stays integral)."""
    if a.is_integer and b.is_integer:
        return LONG if "long" in (a.datatype, b.datatype) else INT
    if a.datatype == "float" and b.datatype in ("float", *_INTEGERS):
        return FLOAT
    if b.datatype == "float" and a.datatype in _INTEGERS:
        return FLOAT
    if not a.known and b.is_numeric:
        return b
    if not b.known and a.is_numeric:
        return a
    return DOUBLE


@dataclass(slots=True)
class X:
    """A translated expression: SQL text plus what the translator knows about it.

    ``source`` is the catalogue column when the expression is a plain column reference (its
    metadata then describes the result); ``const`` the value of numeric constants (radii and
    vertices are checked at translation time); ``numeric`` marks expressions PostgreSQL may
    type as numeric although we declare double; ``circle``/``point``/``vertices`` keep the
    parts of geometries built in the query, which the geometry rules need.
    """

    sql: str
    typ: Typ
    source: Column | None = None
    name: str | None = None
    key: str | None = None  # the database name of a referenced column
    const: float | None = None
    agg: bool = False
    numeric: bool = False
    unit: str | None = None
    text: str | None = None  # value of a string literal
    pred: str | None = None  # CONTAINS/INTERSECTS: the bare boolean form
    point: tuple[float, float] | None = None
    circle: tuple[X, X] | None = None
    vertices: tuple[tuple[float, float], ...] | None = None

    @property
    def big_circle(self) -> bool:
        """A circle wider than pgsphere's 90° limit: only usable in some predicates."""
        return self.circle is not None and not self.sql
