"""The ADQL syntax tree.

Nodes keep the user's values already decoded (numbers as validated digit strings, string
literals unquoted) so the SQL writer re-emits every literal from these parts and never from
the query text. Positions are ``(line, column)`` of the node's first token, for messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as Lit

Pos = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Ident:
    """A regular (case-insensitive) or delimited (case-sensitive) identifier."""

    name: str
    delimited: bool
    pos: Pos

    @property
    def key(self) -> str:
        """The name as the database knows it: regular identifiers fold to lower case."""
        return self.name if self.delimited else self.name.lower()

    def __str__(self) -> str:
        return '"' + self.name.replace('"', '""') + '"' if self.delimited else self.name


# --- value expressions and predicates ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """``kind`` int/float carry canonical digits in ``text``; string carries the decoded value."""

    kind: Lit["int", "float", "string", "null"]
    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class ColumnRef:
    parts: tuple[Ident, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; ``name`` is upper-cased, ``star`` marks COUNT(*)."""

    name: str
    args: tuple[Expr, ...]
    pos: Pos
    quantifier: str | None = None
    star: bool = False


@dataclass(frozen=True, slots=True)
class Unary:
    op: Lit["-", "+", "~"]
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Binary:
    op: Lit["+", "-", "*", "/", "||", "&", "|", "^"]
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class CastType:
    name: str  # SMALLINT, INTEGER, BIGINT, REAL, DOUBLE PRECISION, CHAR, VARCHAR, TIMESTAMP, …
    length: int | None = None


@dataclass(frozen=True, slots=True)
class Cast:
    expr: Expr
    target: CastType
    pos: Pos


@dataclass(frozen=True, slots=True)
class Case:
    operand: Expr | None
    whens: tuple[tuple[Expr, Expr], ...]
    else_: Expr | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class ScalarSubquery:
    query: QueryNode
    pos: Pos


@dataclass(frozen=True, slots=True)
class Compare:
    op: Lit["=", "<>", "<", ">", "<=", ">="]
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Between:
    expr: Expr
    low: Expr
    high: Expr
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Like:
    expr: Expr
    pattern: Expr
    negated: bool
    ilike: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class InList:
    expr: Expr
    items: tuple[Expr, ...]
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class InQuery:
    expr: Expr
    query: QueryNode
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class IsNull:
    expr: Expr
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Exists:
    query: QueryNode
    pos: Pos


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: Lit["AND", "OR"]
    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    pos: Pos


Expr = (
    Literal
    | ColumnRef
    | Call
    | Unary
    | Binary
    | Cast
    | Case
    | ScalarSubquery
    | Compare
    | Between
    | Like
    | InList
    | InQuery
    | IsNull
    | Exists
    | BoolOp
    | Not
)
CONDITIONS = (Compare, Between, Like, InList, InQuery, IsNull, Exists, BoolOp, Not)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Star:
    """``*`` or ``qualifier.*`` in a select list."""

    qualifier: tuple[Ident, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class SelectItem:
    expr: Expr
    alias: Ident | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class SortItem:
    expr: Expr
    descending: bool


@dataclass(frozen=True, slots=True)
class TableRef:
    parts: tuple[Ident, ...]
    alias: Ident | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class DerivedTable:
    query: QueryNode
    alias: Ident
    pos: Pos


@dataclass(frozen=True, slots=True)
class Join:
    kind: Lit["INNER", "LEFT", "RIGHT", "FULL", "CROSS"]
    natural: bool
    left: FromItem
    right: FromItem
    on: Expr | None
    using: tuple[Ident, ...] | None
    pos: Pos


FromItem = TableRef | DerivedTable | Join


@dataclass(frozen=True, slots=True)
class Select:
    quantifier: str | None  # "DISTINCT", "ALL" or None
    top: int | None
    items: tuple[SelectItem | Star, ...]
    from_: tuple[FromItem, ...]
    where: Expr | None
    group_by: tuple[Expr, ...]
    having: Expr | None
    order_by: tuple[SortItem, ...]
    offset: int | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class SetOp:
    """UNION/EXCEPT/INTERSECT; ORDER BY and OFFSET here apply to the combined result."""

    op: Lit["UNION", "EXCEPT", "INTERSECT"]
    all: bool
    left: QueryNode
    right: QueryNode
    order_by: tuple[SortItem, ...]
    offset: int | None
    pos: Pos


QueryNode = Select | SetOp


@dataclass(frozen=True, slots=True)
class CTE:
    name: Ident
    columns: tuple[Ident, ...] | None
    query: QueryNode


@dataclass(frozen=True, slots=True)
class Query:
    """One ADQL statement: optional common table expressions and the query proper."""

    ctes: tuple[CTE, ...]
    body: QueryNode
