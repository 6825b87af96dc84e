"""ADQL text → syntax tree, with the checks that need no catalogue.

The tree is built by lark callbacks while the LALR parser reduces (no intermediate parse
tree), which is what keeps parsing well under a millisecond for typical queries.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from vo_service.adql import ast as a
from vo_service.adql.errors import ADQLSyntaxError
from vo_service.adql.functions import (
    ADQL_FUNCTIONS,
    AGGREGATES,
    GEOMETRY_VALUED,
    UDF_NAME,
    UDFS,
)
from vo_service.adql.grammar import DISPLAY, GRAMMAR, RANK
from vo_service.adql.reserved import RESERVED_WORDS

MAX_QUERY_LENGTH = 1_000_000
_NUMBER = re.compile(r"([0-9]*)(?:(\.)([0-9]*))?(?:[eE]([+-]?)([0-9]+))?\Z")
_CAST_TYPES = {
    "SMALLINT": False,
    "INTEGER": False,
    "INT": False,
    "BIGINT": False,
    "REAL": False,
    "DOUBLE PRECISION": False,
    "CHAR": True,
    "CHARACTER": True,
    "VARCHAR": True,
    "CHAR VARYING": True,
    "CHARACTER VARYING": True,
    "TIMESTAMP": False,
    "POINT": False,
    "CIRCLE": False,
    "POLYGON": False,
}
RESERVED = RESERVED_WORDS | frozenset(ADQL_FUNCTIONS)


def _pos(tok: Token) -> a.Pos:
    return (tok.line or 0, tok.column or 0)


def _fail(message: str, pos: a.Pos, expected: list[str] | None = None) -> ADQLSyntaxError:
    return ADQLSyntaxError(message, pos[0], pos[1], expected)


def _value(node: Any, what: str) -> Any:
    """Reject a condition where ADQL wants a value (ADQL has no boolean values)."""
    if isinstance(node, a.CONDITIONS):
        raise _fail(f"a condition cannot be used as {what}", node.pos)
    return node


def _condition(node: Any, clause: str) -> Any:
    if isinstance(node, a.CONDITIONS):
        return node
    hint = ""
    if isinstance(node, a.Call) and node.name in ("CONTAINS", "INTERSECTS"):
        hint = f"; {node.name} returns 0 or 1, so write {node.name}(…) = 1"
    raise _fail(f"{clause} needs a condition such as a comparison{hint}", node.pos)


def _is_numeric_constant(node: Any) -> bool:
    if isinstance(node, a.Literal):
        return node.kind in ("int", "float")
    if isinstance(node, a.Unary):
        return _is_numeric_constant(node.operand)
    if isinstance(node, a.Binary):
        return _is_numeric_constant(node.left) and _is_numeric_constant(node.right)
    return False


def is_coordsys(node: Any) -> bool:
    """Whether a geometry constructor's first argument is the (deprecated) frame string."""
    return isinstance(node, a.Literal) and node.kind in ("string", "null")


def _check_polygon(args: tuple[Any, ...], pos: a.Pos) -> None:
    rest = args[1:] if is_coordsys(args[0]) else args
    if any(isinstance(x, a.Call) and x.name in ("POINT", "CENTROID") for x in rest):
        if len(rest) < 3:
            raise _fail("POLYGON needs at least three vertices", pos)
        return
    if (len(rest) % 2 or len(rest) < 6) and all(_is_numeric_constant(x) for x in rest):
        raise _fail("POLYGON needs at least three vertices given as coordinate pairs", pos)


class _Builder(Transformer):  # type: ignore[type-arg]
    """Lark callbacks building :mod:`ast` nodes; stateless, so one instance serves all."""

    # --- identifiers and names --------------------------------------------------------------

    def ident(self, c: list[Token]) -> a.Ident:
        tok = c[0]
        if tok.type == "DELIMITED":
            if "\x00" in tok:
                raise _fail("identifiers cannot contain NUL characters", _pos(tok))
            return a.Ident(tok[1:-1].replace('""', '"'), True, _pos(tok))
        if tok.upper() in RESERVED:
            raise _fail(
                f"'{tok}' is a reserved word in ADQL; to use it as a name, write it as a "
                f'delimited identifier: "{tok}"',
                _pos(tok),
                ["identifier"],
            )
        return a.Ident(str(tok), False, _pos(tok))

    def qual_prefix(self, c: list[Any]) -> list[a.Ident]:
        return [c[0]] if len(c) == 1 else [*c[0], c[1]]

    def table_name(self, c: list[Any]) -> tuple[a.Ident, ...]:
        parts = (*c[0], c[1]) if len(c) == 2 else (c[0],)
        if len(parts) > 3:
            raise _fail("a table name has at most three parts (catalog.schema.table)", parts[0].pos)
        return parts

    def alias(self, c: list[a.Ident]) -> tuple[str, a.Ident]:
        return ("alias", c[0])

    # --- statement and queries --------------------------------------------------------------

    def start(self, c: list[Any]) -> a.Query:
        return c[0]

    def statement(self, c: list[Any]) -> a.Query:
        if len(c) == 2:
            return a.Query(tuple(c[0]), _unparen(c[1]))
        return a.Query((), _unparen(c[0]))

    def with_clause(self, c: list[a.CTE]) -> list[a.CTE]:
        return c

    def cte(self, c: list[Any]) -> a.CTE:
        if len(c) == 3:
            return a.CTE(c[0], tuple(c[1]), _unparen(c[2]))
        return a.CTE(c[0], None, _unparen(c[1]))

    def column_names(self, c: list[a.Ident]) -> list[a.Ident]:
        return c

    def query(self, c: list[Any]) -> Any:
        body = c[0]
        order: tuple[a.SortItem, ...] = ()
        offset = None
        for tag, val in c[1:]:
            if tag == "order":
                order = val
            else:
                offset = val
        if not order and offset is None:
            return body
        inner = body.query if isinstance(body, _Paren) else body
        if isinstance(body, _Paren) and (
            inner.order_by
            or inner.offset is not None
            or (isinstance(inner, a.Select) and inner.top is not None)
        ):
            raise _fail(
                "ORDER BY/OFFSET cannot follow a parenthesised query that has its own TOP, "
                "ORDER BY or OFFSET; make it a subquery in FROM instead",
                inner.pos,
            )
        if isinstance(inner, a.Select):
            return _replace_select(inner, order, offset)
        return a.SetOp(inner.op, inner.all, inner.left, inner.right, order, offset, inner.pos)

    def _setop(self, op: str, c: list[Any]) -> a.SetOp:
        left, right = _unparen(c[0]), _unparen(c[-1])
        return a.SetOp(op, len(c) == 3, left, right, (), None, left.pos)  # type: ignore[arg-type]

    def union(self, c: list[Any]) -> a.SetOp:
        return self._setop("UNION", c)

    def except_(self, c: list[Any]) -> a.SetOp:
        return self._setop("EXCEPT", c)

    def intersect(self, c: list[Any]) -> a.SetOp:
        return self._setop("INTERSECT", c)

    def paren_query(self, c: list[Any]) -> _Paren:
        return _Paren(_unparen(c[0]))

    def select_core(self, c: list[Any]) -> a.Select:
        pos = _pos(c[0])
        parts: dict[str, Any] = {}
        for item in c[1:]:
            if isinstance(item, list):
                parts["items"] = tuple(item)
            else:
                parts[item[0]] = item[1]
        return a.Select(
            parts.get("quantifier"),
            parts.get("top"),
            parts["items"],
            parts["from"],
            parts.get("where"),
            parts.get("group", ()),
            parts.get("having"),
            (),
            None,
            pos,
        )

    def quantifier(self, c: list[Token]) -> tuple[str, str]:
        return ("quantifier", c[0].upper())

    def top(self, c: list[Token]) -> tuple[str, int]:
        return ("top", _unsigned_int(c[0], "TOP"))

    def offset(self, c: list[Token]) -> tuple[str, int]:
        return ("offset", _unsigned_int(c[0], "OFFSET"))

    def select_list(self, c: list[Any]) -> list[Any]:
        return c

    def star(self, c: list[Token]) -> a.Star:
        return a.Star((), _pos(c[0]))

    def qualified_star(self, c: list[Any]) -> a.Star:
        return a.Star(tuple(c[0]), c[0][0].pos)

    def select_expr(self, c: list[Any]) -> a.SelectItem:
        expr = _value(c[0], "a selected value")
        return a.SelectItem(expr, c[1][1] if len(c) == 2 else None, expr.pos)

    def from_clause(self, c: list[Any]) -> tuple[str, tuple[Any, ...]]:
        return ("from", tuple(c))

    def where_clause(self, c: list[Any]) -> tuple[str, Any]:
        return ("where", _condition(c[0], "WHERE"))

    def group_by(self, c: list[Any]) -> tuple[str, tuple[Any, ...]]:
        return ("group", tuple(_value(x, "a grouping value") for x in c))

    def having(self, c: list[Any]) -> tuple[str, Any]:
        return ("having", _condition(c[0], "HAVING"))

    def order_by(self, c: list[a.SortItem]) -> tuple[str, tuple[a.SortItem, ...]]:
        return ("order", tuple(c))

    def sort_item(self, c: list[Any]) -> a.SortItem:
        expr = _value(c[0], "a sort key")
        return a.SortItem(expr, len(c) == 2 and c[1].upper() == "DESC")

    # --- FROM -------------------------------------------------------------------------------

    def table(self, c: list[Any]) -> a.TableRef:
        return a.TableRef(c[0], c[1][1] if len(c) == 2 else None, c[0][0].pos)

    def derived(self, c: list[Any]) -> a.DerivedTable:
        query = _unparen(c[0])
        return a.DerivedTable(query, c[1][1], query.pos)

    def inner(self, c: list[Any]) -> str:
        return "INNER"

    def left(self, c: list[Any]) -> str:
        return "LEFT"

    def right(self, c: list[Any]) -> str:
        return "RIGHT"

    def full(self, c: list[Any]) -> str:
        return "FULL"

    def natural_kind(self, c: list[str]) -> str:
        return c[0]

    def on_spec(self, c: list[Any]) -> tuple[str, Any]:
        return ("on", _condition(c[0], "ON"))

    def using_spec(self, c: list[a.Ident]) -> tuple[str, tuple[a.Ident, ...]]:
        return ("using", tuple(c))

    def join(self, c: list[Any]) -> a.Join:
        left, kind, right = c[0], c[1], c[2]
        on = using = None
        if len(c) == 4:
            if c[3][0] == "on":
                on = c[3][1]
            else:
                using = c[3][1]
        return a.Join(kind, False, left, right, on, using, _from_pos(left))

    def natural_join(self, c: list[Any]) -> a.Join:
        return a.Join(c[1], True, c[0], c[2], None, None, _from_pos(c[0]))

    def cross_join(self, c: list[Any]) -> a.Join:
        return a.Join("CROSS", False, c[0], c[1], None, None, _from_pos(c[0]))

    # --- conditions -------------------------------------------------------------------------

    def or_(self, c: list[Any]) -> a.BoolOp:
        return _boolop("OR", c)

    def and_(self, c: list[Any]) -> a.BoolOp:
        return _boolop("AND", c)

    def not_(self, c: list[Any]) -> a.Not:
        return a.Not(_condition(c[0], "NOT"), c[0].pos)

    def compare(self, c: list[Any]) -> a.Compare:
        op = "<>" if c[1] == "!=" else str(c[1])
        left, right = _value(c[0], "an operand"), _value(c[2], "an operand")
        return a.Compare(op, left, right, left.pos)  # type: ignore[arg-type]

    def _between(self, c: list[Any], negated: bool) -> a.Between:
        x, lo, hi = (_value(v, "a BETWEEN operand") for v in c)
        return a.Between(x, lo, hi, negated, x.pos)

    def between(self, c: list[Any]) -> a.Between:
        return self._between(c, False)

    def not_between(self, c: list[Any]) -> a.Between:
        return self._between(c, True)

    def _like(self, c: list[Any], negated: bool, ilike: bool) -> a.Like:
        x, pattern = _value(c[0], "a LIKE operand"), _value(c[1], "a LIKE pattern")
        return a.Like(x, pattern, negated, ilike, x.pos)

    def like(self, c: list[Any]) -> a.Like:
        return self._like(c, False, False)

    def not_like(self, c: list[Any]) -> a.Like:
        return self._like(c, True, False)

    def ilike(self, c: list[Any]) -> a.Like:
        return self._like(c, False, True)

    def not_ilike(self, c: list[Any]) -> a.Like:
        return self._like(c, True, True)

    def in_query(self, c: list[Any]) -> a.InQuery:
        x = _value(c[0], "an IN operand")
        return a.InQuery(x, _unparen(c[1]), False, x.pos)

    def not_in_query(self, c: list[Any]) -> a.InQuery:
        x = _value(c[0], "an IN operand")
        return a.InQuery(x, _unparen(c[1]), True, x.pos)

    def in_list(self, c: list[Any]) -> a.InList:
        x, *items = (_value(v, "an IN operand") for v in c)
        return a.InList(x, tuple(items), False, x.pos)

    def not_in_list(self, c: list[Any]) -> a.InList:
        x, *items = (_value(v, "an IN operand") for v in c)
        return a.InList(x, tuple(items), True, x.pos)

    def is_null(self, c: list[Any]) -> a.IsNull:
        x = _value(c[0], "an IS NULL operand")
        return a.IsNull(x, False, x.pos)

    def is_not_null(self, c: list[Any]) -> a.IsNull:
        x = _value(c[0], "an IS NULL operand")
        return a.IsNull(x, True, x.pos)

    def exists(self, c: list[Any]) -> a.Exists:
        return a.Exists(_unparen(c[1]), _pos(c[0]))

    # --- values -----------------------------------------------------------------------------

    def _binary(self, op: str, left: Any, right: Any) -> a.Binary:
        for side in (left, right):
            _value(side, f"an operand of {op}")
            if isinstance(side, a.Call) and side.name in GEOMETRY_VALUED:
                raise _fail(f"a geometry ({side.name}) cannot be an operand of {op}", side.pos)
        return a.Binary(op, left, right, left.pos)  # type: ignore[arg-type]

    def concat(self, c: list[Any]) -> a.Binary:
        return self._binary("||", c[0], c[1])

    def bitor(self, c: list[Any]) -> a.Binary:
        return self._binary("|", c[0], c[1])

    def bitxor(self, c: list[Any]) -> a.Binary:
        return self._binary("^", c[0], c[1])

    def bitand(self, c: list[Any]) -> a.Binary:
        return self._binary("&", c[0], c[1])

    def add(self, c: list[Any]) -> a.Binary:
        return self._binary("+", c[0], c[1])

    def sub(self, c: list[Any]) -> a.Binary:
        return self._binary("-", c[0], c[1])

    def mul(self, c: list[Any]) -> a.Binary:
        return self._binary("*", c[0], c[2])

    def div(self, c: list[Any]) -> a.Binary:
        return self._binary("/", c[0], c[1])

    def _unary(self, op: str, operand: Any) -> a.Unary:
        self._binary(op, operand, a.Literal("int", "0", operand.pos))
        return a.Unary(op, operand, operand.pos)  # type: ignore[arg-type]

    def neg(self, c: list[Any]) -> a.Unary:
        return self._unary("-", c[0])

    def pos(self, c: list[Any]) -> a.Unary:
        return self._unary("+", c[0])

    def bitnot(self, c: list[Any]) -> a.Unary:
        return self._unary("~", c[0])

    def number(self, c: list[Token]) -> a.Literal:
        m = _NUMBER.match(c[0])
        assert m is not None  # the lexer only produces matching tokens
        whole, dot, frac, esign, exp = m.groups()
        whole = whole.lstrip("0") or "0"
        if not dot and exp is None:
            return a.Literal("int", whole, _pos(c[0]))
        text = whole + "." + (frac or "0") if dot else whole
        if exp is not None:
            text += "E" + ("-" if esign == "-" else "") + (exp.lstrip("0") or "0")
        return a.Literal("float", text, _pos(c[0]))

    def hex(self, c: list[Token]) -> a.Literal:
        return a.Literal("int", str(int(c[0][2:], 16)), _pos(c[0]))

    def string(self, c: list[Token]) -> a.Literal:
        value = "".join(tok[1:-1].replace("''", "'") for tok in c)
        if "\x00" in value:
            raise _fail("string literals cannot contain NUL characters", _pos(c[0]))
        return a.Literal("string", value, _pos(c[0]))

    def null(self, c: list[Token]) -> a.Literal:
        return a.Literal("null", "NULL", _pos(c[0]))

    def column_ref(self, c: list[Any]) -> a.ColumnRef:
        parts = (*c[0], c[1]) if len(c) == 2 else (c[0],)
        if len(parts) > 4:
            raise _fail(
                "a column name has at most four parts (catalog.schema.table.column)", parts[0].pos
            )
        return a.ColumnRef(parts, parts[0].pos)

    def call(self, c: list[Any]) -> a.Call:
        tok, rest = c[0], c[1:]
        quantifier = None
        if rest and isinstance(rest[0], tuple):
            quantifier = rest.pop(0)[1]
        args = tuple(_value(x, "a function argument") for x in rest)
        return _check_call(str(tok), args, _pos(tok), quantifier)

    def call_star(self, c: list[Token]) -> a.Call:
        if c[0].upper() != "COUNT":
            raise _fail(f"only COUNT accepts *, not {c[0]}", _pos(c[0]))
        return a.Call("COUNT", (), _pos(c[0]), star=True)

    def scalar_subquery(self, c: list[Any]) -> a.ScalarSubquery:
        query = _unparen(c[0])
        return a.ScalarSubquery(query, query.pos)

    def when_clause(self, c: list[Any]) -> tuple[str, Any, Any]:
        return ("when", c[0], _value(c[1], "a CASE result"))

    def else_clause(self, c: list[Any]) -> tuple[str, Any]:
        return ("else", _value(c[0], "a CASE result"))

    def case(self, c: list[Any]) -> a.Case:
        pos = _pos(c[0])
        operand = None
        whens: list[tuple[Any, Any]] = []
        else_ = None
        for item in c[1:]:
            if not isinstance(item, tuple):
                operand = _value(item, "a CASE operand")
            elif item[0] == "when":
                test = item[1]
                if operand is None:
                    _condition(test, "WHEN")
                else:
                    _value(test, "a WHEN value")
                whens.append((test, item[2]))
            else:
                else_ = item[1]
        return a.Case(operand, tuple(whens), else_, pos)

    def cast(self, c: list[Any]) -> a.Cast:
        return a.Cast(_value(c[1], "a CAST operand"), c[2], _pos(c[0]))

    def cast_type(self, c: list[Token]) -> a.CastType:
        words = [t for t in c if t.type == "REGULAR"]
        name = " ".join(w.upper() for w in words)
        length = None
        if c[-1].type == "UNSIGNED":
            length = _unsigned_int(c[-1], "a length")
        if name not in _CAST_TYPES or (length is not None and not _CAST_TYPES[name]):
            raise _fail(
                f"cannot CAST to {name}{'' if length is None else f'({length})'}",
                _pos(words[0]),
                sorted(_CAST_TYPES),
            )
        if length == 0:
            raise _fail("a CHAR/VARCHAR length must be positive", _pos(c[-1]))
        canonical = {
            "INT": "INTEGER",
            "CHARACTER": "CHAR",
            "CHAR VARYING": "VARCHAR",
            "CHARACTER VARYING": "VARCHAR",
        }.get(name, name)
        return a.CastType(canonical, length)


class _Paren:
    """A parenthesised query; kept only until ORDER BY/OFFSET placement is decided."""

    __slots__ = ("query",)

    def __init__(self, query: a.QueryNode) -> None:
        self.query = query


def _unparen(node: Any) -> Any:
    while isinstance(node, _Paren):
        node = node.query
    return node


def _replace_select(s: a.Select, order: tuple[a.SortItem, ...], offset: int | None) -> a.Select:
    return a.Select(
        s.quantifier, s.top, s.items, s.from_, s.where, s.group_by, s.having, order, offset, s.pos
    )


def _from_pos(item: Any) -> a.Pos:
    return item.pos


def _boolop(op: str, c: list[Any]) -> a.BoolOp:
    items: list[Any] = []
    for x in c:
        _condition(x, op)
        if isinstance(x, a.BoolOp) and x.op == op:
            items.extend(x.items)
        else:
            items.append(x)
    return a.BoolOp(op, tuple(items), c[0].pos)  # type: ignore[arg-type]


def _unsigned_int(tok: Token, what: str) -> int:
    if not tok.isdigit():
        raise _fail(f"{what} must be a non-negative integer, not {tok}", _pos(tok))
    if len(tok.lstrip("0")) > 18:
        raise _fail(f"{what} is too large", _pos(tok))
    return int(tok)


def _check_call(name: str, args: tuple[Any, ...], pos: a.Pos, quantifier: str | None) -> a.Call:
    upper = name.upper()
    if upper in ADQL_FUNCTIONS:
        lo, hi = ADQL_FUNCTIONS[upper]
        n = len(args)
        if n < lo or (hi is not None and n > hi) or (upper == "DISTANCE" and n == 3):
            want = {"DISTANCE": "2 or 4"}.get(upper) or (
                str(lo) if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            )
            raise _fail(f"{upper} takes {want} argument{'s' if want != '1' else ''}, not {n}", pos)
        if quantifier and upper not in AGGREGATES:
            raise _fail(f"{quantifier} is only allowed in aggregate functions", pos)
        if upper == "POLYGON":
            _check_polygon(args, pos)
        return a.Call(upper, args, pos, quantifier)
    lower = name.lower()
    udf = UDFS.get(lower)
    if udf is not None:
        if len(args) != udf.nargs:
            raise _fail(f"{lower} takes {udf.nargs} arguments, not {len(args)}", pos)
    elif not UDF_NAME.match(name):
        close = difflib.get_close_matches(upper, ADQL_FUNCTIONS, 1, 0.7)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise _fail(f"unknown function {name}{hint}", pos)
    if quantifier and not (udf and udf.aggregate):
        raise _fail(f"{quantifier} is only allowed in aggregate functions", pos)
    return a.Call(lower, args, pos, quantifier)


@functools.cache
def lark_parser() -> Lark:
    """The LALR parser, built on first use: building its tables takes a fifth of a second,
    which commands that never parse ADQL (ingest, reduce) should not pay."""
    return Lark(
        GRAMMAR, parser="lalr", lexer="basic", transformer=_Builder(), maybe_placeholders=False
    )


def _expected(names: set[str] | frozenset[str] | None) -> list[str]:
    shown = {DISPLAY.get(n, n) for n in names or ()}
    return sorted(shown, key=lambda s: (RANK.get(s, len(RANK)), s))


def _describe(expected: list[str]) -> str:
    if not expected:
        return ""
    if len(expected) == 1:
        return f", expected {expected[0]}"
    more = ", …" if len(expected) > 10 else ""
    return ", expected one of: " + ", ".join(expected[:10]) + more


def _accepted(tokens: list[Token]) -> set[str]:
    """Terminals the parser accepts after ``tokens``: exact, unlike LALR's merged sets.

    Runs the same parse tables without the tree-building callbacks, which are only needed
    for real parses (and whose checks must not interfere with explaining an error).
    """
    interactive = lark_parser().parse_interactive("")
    conf = copy.copy(interactive.parser_state.parse_conf)
    conf.callbacks = {}
    interactive.parser_state.parse_conf = conf
    for tok in tokens:
        interactive.feed_token(tok)
    return set(interactive.accepts())


def _explain(text: str, err: UnexpectedToken) -> ADQLSyntaxError:
    tok = err.token
    try:
        end = len(text) if tok.type == "$END" else tok.start_pos or 0
        before = list(lark_parser().lex(text[:end]))
        accepted = _accepted(before)
    except (UnexpectedInput, ValueError):  # not expected: fall back to LALR's own set
        before, accepted = [], set(err.expected)
    prev = before[-1] if before else None
    if (
        prev is not None
        and prev.type == "REGULAR"
        and (len(before) < 2 or before[-2].type not in ("_AS", "_DOT"))
    ):  # an implicit alias: maybe a misspelt keyword (SELECT a FORM t)
        try:
            here = _accepted(before[:-1])
        except UnexpectedInput:
            here = set()
        keywords = {DISPLAY[n] for n in here if n in DISPLAY and DISPLAY[n].isupper()}
        if difflib.get_close_matches(prev.upper(), keywords, 1, 0.75):
            expected = _expected(here)
            return ADQLSyntaxError(
                f"unexpected '{prev}'{_describe(expected)}",
                prev.line or 0,
                prev.column or 0,
                expected,
            )
    expected = _expected(accepted)
    if tok.type == "$END":
        line, column = _end_position(text)
        return ADQLSyntaxError(
            f"unexpected end of query{_describe(expected)}", line, column, expected
        )
    shown = tok if len(tok) <= 40 else tok[:37] + "..."
    quote = '"' if "'" in shown else "'"
    message = f"unexpected {quote}{shown}{quote}{_describe(expected)}"
    if prev is not None and prev.type == "_SEMI":
        message += " (only one statement is allowed)"
    elif prev is not None and prev.upper() in ("LIMIT", "FETCH"):
        message += " (use SELECT TOP n to limit the number of rows)"
    elif tok == "*" and (tok.start_pos or 0) > 0 and text[(tok.start_pos or 0) - 1] == "/":
        message += " (ADQL has no /* */ comments; use --)"
    return ADQLSyntaxError(message, tok.line or 0, tok.column or 0, expected)


def parse(text: str) -> a.Query:
    """Parse one ADQL statement; raise ADQLSyntaxError naming the position on failure."""
    if len(text) > MAX_QUERY_LENGTH:
        raise ADQLSyntaxError(f"the query is longer than {MAX_QUERY_LENGTH} characters", 1, 1)
    try:
        return lark_parser().parse(text)  # type: ignore[return-value]
    except UnexpectedToken as err:
        raise _explain(text, err) from None
    except UnexpectedCharacters as err:
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        what = {
            "'": "unterminated string literal",
            '"': "unterminated delimited identifier",
        }.get(char, f"unexpected character {char!r}")
        raise ADQLSyntaxError(what, err.line, err.column) from None


def _end_position(text: str) -> tuple[int, int]:
    stripped = re.sub(r"(?:--[^\n]*|\s)+\Z", "", text)
    line = stripped.count("\n") + 1
    return line, len(stripped) - (stripped.rfind("\n") + 1) + 1
