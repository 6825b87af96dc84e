"""ADQL syntax tree → one PostgreSQL/pgsphere SELECT, resolved against the catalogue.

Safety comes from construction: the SQL is assembled from fixed templates, identifiers the
catalogue declares (always double-quoted), aliases generated here, numbers re-formatted by
the parser and string literals re-quoted by :func:`quote_string`. Every table must be a
published catalogue table or one of this request's uploads; every column a published
column of a table in scope; every function on the allowlist.

Names are resolved the way PostgreSQL would resolve the emitted SQL, and then emitted fully
qualified with a statement-wide unique alias, so no reference can be captured by a
same-named table in an inner query or by an unpublished column of the same name.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from vo_service.adql import ast as a
from vo_service.adql import geometry as geo
from vo_service.adql import typesys as ty
from vo_service.adql.errors import ADQLSemanticError
from vo_service.adql.functions import AGGREGATES, NUMERIC_PRESERVING, SIMPLE_MATH, UDFS
from vo_service.adql.parser import is_coordsys
from vo_service.adql.typesys import Typ, X
from vo_service.metadata import Catalog, Column, Table

_CAST_SQL = {
    "SMALLINT": ("smallint", ty.SHORT),
    "INTEGER": ("integer", ty.INT),
    "BIGINT": ("bigint", ty.LONG),
    "REAL": ("real", ty.FLOAT),
    "DOUBLE PRECISION": ("double precision", ty.DOUBLE),
    "TIMESTAMP": ("timestamp", ty.TIMESTAMP),
}
_JOIN_SQL = {"INNER": "JOIN", "LEFT": "LEFT JOIN", "RIGHT": "RIGHT JOIN", "FULL": "FULL JOIN"}
_BITWISE_SQL = {"&": "&", "|": "|", "^": "#"}
UPLOAD_SCHEMA = "tap_upload"
MAX_EXPRESSION_SQL = 200_000


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_string(value: str) -> str:
    """A PostgreSQL string literal for ``value`` that means the same under any
    ``standard_conforming_strings`` setting (E'' form when a backslash is present)."""
    body = value.replace("'", "''")
    if "\\" in value:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


def upload_table_sql(name: str) -> str:
    """Where the executor puts an upload: a temporary table per request."""
    return "pg_temp." + quote_ident("tap_upload_" + name.lower())


def _error(message: str, pos: a.Pos | None = None) -> ADQLSemanticError:
    return ADQLSemanticError(message, *(pos or (None, None)))


def _match(ident: a.Ident, key: str) -> bool:
    """ADQL identifier against a database name: regular ones case-insensitively."""
    return ident.name == key if ident.delimited else ident.name.lower() == key.lower()


def _qual_match(qualifier: tuple[a.Ident, ...], qual: tuple[str, ...]) -> bool:
    n = len(qualifier)
    return n <= len(qual) and all(_match(i, k) for i, k in zip(qualifier, qual[-n:], strict=True))


@dataclass(slots=True)
class _RCol:
    """A column visible in a FROM clause."""

    key: str  # its name in the database (derived tables: the name we gave it)
    name: str  # its ADQL name, used as output name
    sql: str  # qualified reference
    meta: Column | None
    typ: Typ
    unit: str | None


@dataclass(slots=True)
class _Rel:
    quals: tuple[tuple[str, ...], ...]  # names it can be qualified by
    label: str
    cols: list[_RCol]
    pos: a.Pos


@dataclass(slots=True)
class _Scope:
    rels: list[_Rel]
    visible: list[_RCol]  # unqualified names, in SELECT * order
    parent: _Scope | None


@dataclass(slots=True)
class _Out:
    name: str
    key: str | None  # referable name (alias or column), None for generated names
    sql_name: str
    x: X


@dataclass(slots=True)
class _Sub:
    sql: str
    outs: list[_Out]
    top: int | None


class Translator:
    """One translation; holds the statement-wide alias registry and the tables read."""

    def __init__(self, catalog: Catalog, uploads: Mapping[str, Table]) -> None:
        self.catalog = catalog
        self.uploads = {name.lower(): (name, table) for name, table in uploads.items()}
        self.aliases: set[str] = set()
        self.tables: dict[str, None] = {}
        self.ctes: dict[str, tuple[a.Ident, str, list[_Out]]] = {}

    def unique(self, base: str) -> str:
        base = _clip(base, 48) or "t"
        name, n = base, 1
        while name.lower() in self.aliases:
            n += 1
            name = f"{base}_{n}"
        self.aliases.add(name.lower())
        return name

    # --- statements and queries ----------------------------------------------------------------

    def statement(
        self, query: a.Query, max_rows: int | None
    ) -> tuple[str, list[Column], int | None]:
        prefix = ""
        if query.ctes:
            defs = []
            for cte in query.ctes:
                if any(_match(cte.name, other.name) for other, _, _ in self.ctes.values()):
                    raise _error(f"WITH defines {cte.name} twice", cte.name.pos)
                sub = self.query(cte.query, None, False, None)
                outs = sub.outs
                columns = ""
                if cte.columns is not None:
                    if len({c.key for c in cte.columns}) != len(cte.columns):
                        raise _error(f"WITH {cte.name} names a column twice", cte.name.pos)
                    if len(cte.columns) != len(outs):
                        raise _error(
                            f"WITH {cte.name} names {len(cte.columns)} columns but its "
                            f"query has {len(outs)}",
                            cte.name.pos,
                        )
                    outs = [
                        _Out(i.name, i.key, i.key, o.x)
                        for i, o in zip(cte.columns, outs, strict=True)
                    ]
                    columns = "(" + ", ".join(quote_ident(o.sql_name) for o in outs) + ")"
                sql_name = self.unique(cte.name.key)
                self.ctes[sql_name] = (cte.name, sql_name, outs)
                defs.append(f"{quote_ident(sql_name)}{columns} AS ({sub.sql})")
            prefix = "WITH " + ", ".join(defs) + " "
        body = self.query(query.body, None, True, max_rows)
        fields = [_field(o) for o in body.outs]
        return prefix + body.sql, fields, body.top

    def query(
        self, node: a.QueryNode, parent: _Scope | None, top: bool, max_rows: int | None
    ) -> _Sub:
        if isinstance(node, a.Select):
            return self.select(node, parent, top, max_rows)
        return self.setop(node, parent, top, max_rows)

    def setop(self, node: a.SetOp, parent: _Scope | None, top: bool, max_rows: int | None) -> _Sub:
        left = self.query(node.left, parent, top, None)
        right = self.query(node.right, parent, top, None)
        if len(left.outs) != len(right.outs):
            raise _error(
                f"the operands of {node.op} have {len(left.outs)} and {len(right.outs)} "
                "columns; they must have the same number",
                node.pos,
            )
        parts = [f"({left.sql}) {node.op}{' ALL' if node.all else ''} ({right.sql})"]
        if node.order_by:
            keys = []
            for item in node.order_by:
                index = _output_index(item.expr, left.outs)
                if index is None:
                    raise _error(
                        f"ORDER BY after {node.op} must name a result column or give its position",
                        _expr_pos(item.expr),
                    )
                keys.append(f"{index}{' DESC' if item.descending else ''}")
            parts.append("ORDER BY " + ", ".join(keys))
        if max_rows is not None:
            parts.append(f"LIMIT {max_rows}")
        if node.offset is not None:
            parts.append(f"OFFSET {node.offset}")
        return _Sub(
            " ".join(parts),
            [_unify(lo, ro) for lo, ro in zip(left.outs, right.outs, strict=True)],
            None,
        )

    def select(self, s: a.Select, parent: _Scope | None, top: bool, max_rows: int | None) -> _Sub:
        from_sql, scope = self.from_clause(s.from_, parent)
        items: list[tuple[X, a.Ident | None]] = []
        for item in s.items:
            if isinstance(item, a.Star):
                for rc in self.star(item, scope):
                    items.append(
                        (
                            X(
                                rc.sql,
                                rc.typ,
                                source=rc.meta,
                                name=rc.name,
                                unit=rc.unit,
                                key=rc.key,
                            ),
                            None,
                        )
                    )
            else:
                items.append((self.expr(item.expr, scope), item.alias))
        outs = self._outputs(items, top)
        parts = ["SELECT DISTINCT" if s.quantifier == "DISTINCT" else "SELECT"]
        parts.append(
            ", ".join(
                f"{_output_sql(o.x) if top else self._inner_sql(o.x)} AS {quote_ident(o.sql_name)}"
                for o in outs
            )
        )
        parts.append("FROM " + from_sql)
        if s.where is not None:
            where = self.expr(s.where, scope)
            if where.agg:
                raise _error(
                    "aggregate functions are not allowed in WHERE; use HAVING", s.where.pos
                )
            parts.append("WHERE " + where.sql)
        if s.group_by:
            parts.append(
                "GROUP BY " + ", ".join(self._group_key(g, scope, outs) for g in s.group_by)
            )
        if s.having is not None:
            parts.append("HAVING " + self.expr(s.having, scope).sql)
        if s.order_by:
            parts.append(
                "ORDER BY " + ", ".join(self._sort_key(item, scope, outs) for item in s.order_by)
            )
        limit = s.top
        if max_rows is not None:
            limit = max_rows if limit is None else min(limit, max_rows)
        if limit is not None:
            parts.append(f"LIMIT {limit}")
        if s.offset is not None:
            parts.append(f"OFFSET {s.offset}")
        return _Sub(" ".join(parts), outs, s.top)

    def _outputs(self, items: list[tuple[X, a.Ident | None]], top: bool) -> list[_Out]:
        outs: list[_Out] = []
        used: set[str] = set()
        for i, (x, alias) in enumerate(items, 1):
            if alias is not None:
                name, key = alias.name, alias.key
            elif x.key is not None:
                name, key = x.name or x.key, x.key
            else:
                name, key = x.name or f"col{i}", None
            base = _clip(name if top else (key or name.lower()), 56)
            sql_name, n = base, 1
            while sql_name.lower() in used:
                n += 1
                sql_name = f"{base}_{n}"
            used.add(sql_name.lower())
            outs.append(_Out(sql_name if top else name, key, sql_name, x))
        return outs

    def _inner_sql(self, x: X) -> str:
        return geo.plain(x, "a subquery's select list", None) if x.typ.geometry else x.sql

    def _group_key(self, g: a.Expr, scope: _Scope, outs: list[_Out]) -> str:
        if isinstance(g, a.Literal) and g.kind == "int":
            return str(_position(g, outs))
        if isinstance(g, a.ColumnRef) and len(g.parts) == 1 and not self._resolvable(g, scope):
            index = _output_index(g, outs)
            if index is not None:
                return str(index)
        x = self.expr(g, scope)
        if x.agg:
            raise _error("aggregate functions are not allowed in GROUP BY", _expr_pos(g))
        return self._inner_sql(x)

    def _sort_key(self, item: a.SortItem, scope: _Scope, outs: list[_Out]) -> str:
        direction = " DESC" if item.descending else ""
        e = item.expr
        if isinstance(e, a.Literal) and e.kind == "int":
            return f"{_position(e, outs)}{direction}"
        if isinstance(e, a.ColumnRef) and len(e.parts) == 1:
            index = _output_index(e, outs)
            if index is not None:
                return f"{index}{direction}"
        x = self.expr(e, scope)
        if x.typ.geometry:
            raise _error("cannot sort by a geometry", _expr_pos(e))
        return x.sql + direction

    def _resolvable(self, ref: a.ColumnRef, scope: _Scope) -> bool:
        try:
            self.column(ref, scope)
        except ADQLSemanticError:
            return False
        return True

    # --- FROM ----------------------------------------------------------------------------------

    def from_clause(
        self, items: tuple[a.FromItem, ...], parent: _Scope | None
    ) -> tuple[str, _Scope]:
        sqls, rels, visible = [], [], []
        for item in items:
            sql, irels, ivisible = self.from_item(item, parent)
            sqls.append(sql)
            rels.extend(irels)
            visible.extend(ivisible)
        seen: dict[tuple[str, ...], str] = {}
        for rel in rels:
            key = tuple(k.lower() for k in rel.quals[0])
            if key in seen:
                raise _error(
                    f"{rel.label} appears twice in FROM; give one of them an alias", rel.pos
                )
            seen[key] = rel.label
        return ", ".join(sqls), _Scope(rels, visible, parent)

    def from_item(
        self, item: a.FromItem, parent: _Scope | None
    ) -> tuple[str, list[_Rel], list[_RCol]]:
        if isinstance(item, a.TableRef):
            return self.table_ref(item)
        if isinstance(item, a.DerivedTable):
            sub = self.query(item.query, parent, False, None)
            alias = self.unique(item.alias.key)
            rel = self._derived_rel(item.alias, alias, sub.outs, item.pos)
            return f"({sub.sql}) AS {quote_ident(alias)}", [rel], list(rel.cols)
        return self.join(item, parent)

    def _derived_rel(self, name: a.Ident, alias: str, outs: list[_Out], pos: a.Pos) -> _Rel:
        qa = quote_ident(alias)
        cols = [
            _RCol(
                o.key or o.sql_name,
                o.name,
                f"{qa}.{quote_ident(o.sql_name)}",
                o.x.source,
                o.x.typ,
                o.x.unit,
            )
            for o in outs
        ]
        return _Rel(((name.key,),), str(name), cols, pos)

    def table_ref(self, t: a.TableRef) -> tuple[str, list[_Rel], list[_RCol]]:
        parts = t.parts
        if len(parts) == 1:
            for ident, sql_name, outs in self.ctes.values():
                if _match(parts[0], ident.key):
                    alias = self.unique(t.alias.key if t.alias else ident.key)
                    rel = self._derived_rel(t.alias or ident, alias, outs, t.pos)
                    sql = f"{quote_ident(sql_name)} AS {quote_ident(alias)}"
                    return sql, [rel], list(rel.cols)
        table, source, quals, label = self.lookup_table(parts, t.pos)
        alias = self.unique(t.alias.key if t.alias else table.name)
        qa = quote_ident(alias)
        cols = [
            _RCol(c.name, c.name, f"{qa}.{quote_ident(c.name)}", c, ty.of_column(c), c.unit)
            for c in table.published_columns
        ]
        rel = _Rel(((t.alias.key,),) if t.alias else quals, str(t.alias or label), cols, t.pos)
        return f"{source} AS {qa}", [rel], list(cols)

    def lookup_table(
        self, parts: tuple[a.Ident, ...], pos: a.Pos
    ) -> tuple[Table, str, tuple[tuple[str, ...], ...], str]:
        written = ".".join(str(p) for p in parts)
        if len(parts) == 3:
            raise _error(f"catalog names are not supported: write {parts[1]}.{parts[2]}", pos)
        if len(parts) == 2 and _match(parts[0], UPLOAD_SCHEMA):
            found = self.uploads.get(parts[1].name.lower())
            if found is None or not _match(parts[1], found[0]):
                known = ", ".join(f"TAP_UPLOAD.{n}" for n, _ in self.uploads.values()) or "none"
                raise _error(f"unknown upload {written} (uploaded tables: {known})", pos)
            name, table = found
            self.tables[f"TAP_UPLOAD.{name}"] = None
            return table, upload_table_sql(name), ((UPLOAD_SCHEMA, name),), f"TAP_UPLOAD.{name}"
        if len(parts) == 2:
            table = self.catalog.find(f"{parts[0].name}.{parts[1].name}")
            candidates = [table] if table is not None else []
        else:
            candidates = [t for t in self.catalog.published_tables if _match(parts[0], t.name)]
        candidates = [
            c
            for c in candidates
            if c.published
            and _match(parts[-1], c.name)
            and (len(parts) == 1 or _match(parts[0], c.schema))
        ]
        if len(candidates) > 1:
            names = ", ".join(c.qualified_name for c in candidates)
            raise _error(f"table name {written} is ambiguous: qualify it ({names})", pos)
        if not candidates:
            known = [t.qualified_name for t in self.catalog.published_tables]
            close = difflib.get_close_matches(written.lower(), known, 3, 0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise _error(
                f"unknown table {written}{hint} (TAP_SCHEMA.tables lists the tables "
                "that can be queried)",
                pos,
            )
        table = candidates[0]
        self.tables[table.qualified_name] = None
        source = f"{quote_ident(table.schema)}.{quote_ident(table.name)}"
        return table, source, ((table.schema, table.name),), table.qualified_name

    def join(self, j: a.Join, parent: _Scope | None) -> tuple[str, list[_Rel], list[_RCol]]:
        lsql, lrels, lvis = self.from_item(j.left, parent)
        rsql, rrels, rvis = self.from_item(j.right, parent)
        rels = lrels + rrels
        if j.kind == "CROSS":
            return f"({lsql} CROSS JOIN {rsql})", rels, lvis + rvis
        visible = lvis + rvis
        cond = "TRUE"
        using: list[a.Ident] | None = list(j.using) if j.using is not None else None
        if j.natural:
            rkeys = [c.key.lower() for c in rvis]
            common = dict.fromkeys(c.key for c in lvis if c.key.lower() in rkeys)
            using = [a.Ident(k, True, j.pos) for k in common]
        if using:
            conds, merged, taken = [], [], set()
            for ident in using:
                lc = _only(lvis, ident, "the left side of the join")
                rc = _only(rvis, ident, "the right side of the join")
                conds.append(f"{lc.sql} = {rc.sql}")
                sql = {
                    "INNER": lc.sql,
                    "LEFT": lc.sql,
                    "RIGHT": rc.sql,
                    "FULL": f"COALESCE({lc.sql}, {rc.sql})",
                }[j.kind]
                keep = rc if j.kind == "RIGHT" else lc
                merged.append(_RCol(lc.key, lc.name, sql, keep.meta, keep.typ, keep.unit))
                taken.update((id(lc), id(rc)))
            cond = " AND ".join(conds)
            visible = merged + [c for c in visible if id(c) not in taken]
        elif j.on is not None:
            on = self.expr(j.on, _Scope(rels, lvis + rvis, parent))
            if on.agg:
                raise _error("aggregate functions are not allowed in ON", j.on.pos)
            cond = on.sql
        return f"({lsql} {_JOIN_SQL[j.kind]} {rsql} ON {cond})", rels, visible

    def star(self, st: a.Star, scope: _Scope) -> list[_RCol]:
        if not st.qualifier:
            return list(scope.visible)
        rels = [r for r in scope.rels if any(_qual_match(st.qualifier, q) for q in r.quals)]
        written = ".".join(str(p) for p in st.qualifier)
        if not rels:
            raise _error(f"{written}.* names no table of the FROM clause", st.pos)
        if len(rels) > 1:
            raise _error(f"{written}.* is ambiguous; use the table's alias", st.pos)
        return list(rels[0].cols)

    def column(self, ref: a.ColumnRef, scope: _Scope) -> _RCol:
        *qualifier, last = ref.parts
        written = ".".join(str(p) for p in ref.parts)
        s: _Scope | None = scope
        while s is not None:
            if qualifier:
                rels = [r for r in s.rels if any(_qual_match(tuple(qualifier), q) for q in r.quals)]
                if len(rels) > 1:
                    raise _error(
                        f"{written} is ambiguous: several tables match "
                        f"{'.'.join(str(q) for q in qualifier)}",
                        ref.pos,
                    )
                found = [c for c in rels[0].cols if _match(last, c.key)] if rels else []
                if rels and not found:
                    raise _error(
                        f"table {rels[0].label} has no column {last}{_suggest(last, rels[0].cols)}",
                        ref.pos,
                    )
            else:
                found = [c for c in s.visible if _match(last, c.key)]
            if found:
                if len({c.sql for c in found}) > 1:
                    tables = ", ".join(sorted({c.sql.rsplit(".", 1)[0] for c in found}))
                    raise _error(
                        f"column {written} is ambiguous (it is in {tables}); qualify it "
                        "with a table name or alias",
                        ref.pos,
                    )
                return found[0]
            s = s.parent
        if qualifier:
            raise _error(
                f"{written}: {'.'.join(str(q) for q in qualifier)} is not a table or "
                "alias of the FROM clause",
                ref.pos,
            )
        everything = [c for s2 in _chain(scope) for c in s2.visible]
        raise _error(f"unknown column {written}{_suggest(last, everything)}", ref.pos)

    # --- expressions ---------------------------------------------------------------------------

    def expr(self, e: a.Expr, scope: _Scope) -> X:
        x: X = getattr(self, "x_" + type(e).__name__)(e, scope)
        if len(x.sql) > MAX_EXPRESSION_SQL:  # some geometry rules repeat their operands
            raise _error("the expression is too complex", _expr_pos(e))
        return x

    def values(self, es: tuple[a.Expr, ...], scope: _Scope) -> list[X]:
        return [self.expr(e, scope) for e in es]

    def x_Literal(self, e: a.Literal, scope: _Scope) -> X:
        if e.kind == "string":
            return X(quote_string(e.text), ty.CHAR, text=e.text)
        if e.kind == "null":
            return X("NULL", ty.UNKNOWN)
        value = float(e.text) if len(e.text) < 400 else math.inf
        if e.kind == "float":
            return X(e.text, ty.DOUBLE, const=value, numeric=True)
        n = int(e.text) if len(e.text) < 30 else 1 << 64
        if n < 2**31:
            return X(e.text, ty.INT, const=value)
        if n < 2**63:
            return X(e.text, ty.LONG, const=value)
        return X(e.text, ty.DOUBLE, const=value, numeric=True)

    def x_ColumnRef(self, e: a.ColumnRef, scope: _Scope) -> X:
        rc = self.column(e, scope)
        return X(rc.sql, rc.typ, source=rc.meta, name=rc.name, unit=rc.unit, key=rc.key)

    def x_Unary(self, e: a.Unary, scope: _Scope) -> X:
        x = self.expr(e.operand, scope)
        _no_geometry(x, e.op, e.pos)
        if e.op == "+":
            return X(x.sql, x.typ, const=x.const, agg=x.agg, numeric=x.numeric, unit=x.unit)
        _no_string(x, e.op, e.pos)
        if e.op == "~":
            _need_integer(x, "~", e.pos)
            return X(f"(~{x.sql})", x.typ, agg=x.agg)
        const = -x.const if x.const is not None else None
        return X(f"(-{x.sql})", x.typ, const=const, agg=x.agg, numeric=x.numeric, unit=x.unit)

    def x_Binary(self, e: a.Binary, scope: _Scope) -> X:
        left, right = self.expr(e.left, scope), self.expr(e.right, scope)
        _no_geometry(left, e.op, e.pos)
        _no_geometry(right, e.op, e.pos)
        agg = left.agg or right.agg
        if e.op == "||":
            return X(f"({_text(left)} || {_text(right)})", ty.CHAR, agg=agg)
        for side in (left, right):
            _no_string(side, e.op, e.pos)
        if e.op in _BITWISE_SQL:
            _need_integer(left, e.op, e.pos)
            _need_integer(right, e.op, e.pos)
            return X(
                f"({left.sql} {_BITWISE_SQL[e.op]} {right.sql})",
                ty.arithmetic(left.typ, right.typ),
                agg=agg,
            )
        const = _fold(e.op, left.const, right.const)
        # PostgreSQL computes in numeric unless a double operand pulls the result to double.
        exact = any(v.typ.is_real and not v.numeric for v in (left, right))
        numeric = (left.numeric or right.numeric) and not exact
        unit = left.unit if e.op in "+-" and left.unit == right.unit else None
        return X(
            f"({left.sql} {e.op} {right.sql})",
            ty.arithmetic(left.typ, right.typ),
            const=const,
            agg=agg,
            numeric=numeric,
            unit=unit,
        )

    def x_Compare(self, e: a.Compare, scope: _Scope) -> X:
        if e.op in ("=", "<>"):
            for call, other in ((e.left, e.right), (e.right, e.left)):
                if (
                    isinstance(call, a.Call)
                    and call.name in ("CONTAINS", "INTERSECTS")
                    and isinstance(other, a.Literal)
                    and other.kind == "int"
                    and other.text in ("0", "1")
                ):
                    x = self.expr(call, scope)
                    truth = (other.text == "1") == (e.op == "=")
                    return X(x.pred if truth else f"(NOT {x.pred})", ty.BOOLEAN, agg=x.agg)  # type: ignore[arg-type]
        cone = self._cone(e, scope)
        if cone is not None:
            return cone
        left, right = self.expr(e.left, scope), self.expr(e.right, scope)
        if left.typ.geometry or right.typ.geometry:
            if e.op not in ("=", "<>"):
                raise _error(f"geometries cannot be compared with {e.op}", e.pos)
            lsql = geo.plain(left, "comparisons", e.pos)
            rsql = geo.plain(right, "comparisons", e.pos)
        else:
            lsql, rsql = left.sql, right.sql
        return X(f"({lsql} {e.op} {rsql})", ty.BOOLEAN, agg=left.agg or right.agg)

    def _cone(self, e: a.Compare, scope: _Scope) -> X | None:
        """DISTANCE(p, q) < r with constant r ≤ 90° → p <@ scircle(q, r): the GiST form."""
        if isinstance(e.left, a.Call) and e.left.name == "DISTANCE" and e.op in ("<", "<="):
            dist, radius, op = e.left, e.right, e.op
        elif isinstance(e.right, a.Call) and e.right.name == "DISTANCE" and e.op in (">", ">="):
            dist, radius, op = e.right, e.left, {">": "<", ">=": "<="}[e.op]
        else:
            return None
        r = self.expr(radius, scope)
        if r.const is None or not 0 <= r.const <= 90:
            return None
        p, q = self._distance_points(dist, scope)
        if q.source is not None and p.source is None:
            p, q = q, p
        sql = f"({p.sql} <@ scircle({q.sql}, radians({r.sql})))"
        if op == "<":
            sql = f"({sql} AND ({p.sql} <-> {q.sql}) < radians({r.sql}))"
        return X(sql, ty.BOOLEAN, agg=p.agg or q.agg)

    def _distance_points(self, call: a.Call, scope: _Scope) -> tuple[X, X]:
        xs = self.values(call.args, scope)
        if len(xs) == 4:
            return geo.point(xs[0], xs[1], call.pos), geo.point(xs[2], xs[3], call.pos)
        geo.need_point(xs[0], "a DISTANCE argument", call.pos)
        geo.need_point(xs[1], "a DISTANCE argument", call.pos)
        return xs[0], xs[1]

    def x_Between(self, e: a.Between, scope: _Scope) -> X:
        x, lo, hi = self.expr(e.expr, scope), self.expr(e.low, scope), self.expr(e.high, scope)
        for v in (x, lo, hi):
            _no_geometry(v, "BETWEEN", e.pos)
        neg = "NOT " if e.negated else ""
        return X(
            f"({x.sql} {neg}BETWEEN {lo.sql} AND {hi.sql})",
            ty.BOOLEAN,
            agg=x.agg or lo.agg or hi.agg,
        )

    def x_Like(self, e: a.Like, scope: _Scope) -> X:
        x, p = self.expr(e.expr, scope), self.expr(e.pattern, scope)
        for v in (x, p):
            _no_geometry(v, "LIKE", e.pos)
        op = ("NOT " if e.negated else "") + ("ILIKE" if e.ilike else "LIKE")
        # ADQL has no escape character; PostgreSQL's default would be the backslash.
        return X(f"({x.sql} {op} {p.sql} ESCAPE '')", ty.BOOLEAN, agg=x.agg or p.agg)

    def x_InList(self, e: a.InList, scope: _Scope) -> X:
        x = self.expr(e.expr, scope)
        items = self.values(e.items, scope)
        for v in (x, *items):
            _no_geometry(v, "IN", e.pos)
        neg = "NOT " if e.negated else ""
        return X(
            f"({x.sql} {neg}IN ({', '.join(i.sql for i in items)}))",
            ty.BOOLEAN,
            agg=x.agg or any(i.agg for i in items),
        )

    def x_InQuery(self, e: a.InQuery, scope: _Scope) -> X:
        x = self.expr(e.expr, scope)
        sub = self.query(e.query, scope, False, None)
        if len(sub.outs) != 1:
            raise _error(f"the subquery of IN must select one column, not {len(sub.outs)}", e.pos)
        neg = "NOT " if e.negated else ""
        return X(f"({x.sql} {neg}IN ({sub.sql}))", ty.BOOLEAN, agg=x.agg)

    def x_IsNull(self, e: a.IsNull, scope: _Scope) -> X:
        x = self.expr(e.expr, scope)
        ref = x.circle[0].sql if x.big_circle else x.sql  # type: ignore[index]
        return X(f"({ref} IS {'NOT ' if e.negated else ''}NULL)", ty.BOOLEAN, agg=x.agg)

    def x_Exists(self, e: a.Exists, scope: _Scope) -> X:
        return X(f"(EXISTS ({self.query(e.query, scope, False, None).sql}))", ty.BOOLEAN)

    def x_BoolOp(self, e: a.BoolOp, scope: _Scope) -> X:
        xs = self.values(e.items, scope)
        return X(
            "(" + f" {e.op} ".join(x.sql for x in xs) + ")", ty.BOOLEAN, agg=any(x.agg for x in xs)
        )

    def x_Not(self, e: a.Not, scope: _Scope) -> X:
        x = self.expr(e.operand, scope)
        return X(f"(NOT {x.sql})", ty.BOOLEAN, agg=x.agg)

    def x_ScalarSubquery(self, e: a.ScalarSubquery, scope: _Scope) -> X:
        sub = self.query(e.query, scope, False, None)
        if len(sub.outs) != 1:
            raise _error(
                f"a subquery used as a value must select one column, not {len(sub.outs)}", e.pos
            )
        inner = sub.outs[0].x
        if inner.typ.geometry:
            raise _error("a subquery used as a value cannot return a geometry", e.pos)
        return X(f"({sub.sql})", inner.typ, numeric=inner.numeric, unit=inner.unit)

    def x_Case(self, e: a.Case, scope: _Scope) -> X:
        parts = ["CASE"]
        agg = False
        if e.operand is not None:
            op = self.expr(e.operand, scope)
            parts.append(op.sql)
            agg = op.agg
        results = []
        for test, result in e.whens:
            t, r = self.expr(test, scope), self.expr(result, scope)
            parts += ["WHEN", t.sql, "THEN", self._inner_sql(r)]
            results.append(r)
            agg = agg or t.agg or r.agg
        if e.else_ is not None:
            r = self.expr(e.else_, scope)
            parts += ["ELSE", self._inner_sql(r)]
            results.append(r)
            agg = agg or r.agg
        parts.append("END")
        return X(
            " ".join(parts), ty.common(results), agg=agg, numeric=any(r.numeric for r in results)
        )

    def x_Cast(self, e: a.Cast, scope: _Scope) -> X:
        target = e.target
        if target.name in ("POINT", "CIRCLE", "POLYGON"):
            if isinstance(e.expr, a.Literal) and e.expr.kind == "string":
                return geo.cast_from_text(e.expr.text, target.name, e.pos)
            raise _error(
                f"CAST to {target.name} needs a string literal (DALI serialisation)", e.pos
            )
        x = self.expr(e.expr, scope)
        if x.typ.geometry:
            raise _error(f"a geometry cannot be cast to {target.name}", e.pos)
        if target.name in ("CHAR", "VARCHAR"):
            n = target.length
            pg = target.name.lower() + (f"({n})" if n else "")
            size = (
                (str(n) if target.name == "CHAR" else f"{n}*")
                if n
                else ("1" if target.name == "CHAR" else "*")
            )
            typ = Typ("char", size)
        else:
            pg, typ = _CAST_SQL[target.name]
        return X(f"CAST({x.sql} AS {pg})", typ, agg=x.agg, name=x.name if x.key else None)

    def x_Call(self, e: a.Call, scope: _Scope) -> X:
        name = e.name
        if name in AGGREGATES:
            return self._aggregate(e, scope)
        handler = getattr(self, "f_" + name, None)
        if handler is not None:
            return handler(e, scope)  # type: ignore[no-any-return]
        if name in SIMPLE_MATH:
            xs = self.values(e.args, scope)
            for x in xs:
                _no_geometry(x, name, e.pos)
            typ = xs[0].typ if name == "ABS" and xs[0].typ.is_numeric else ty.DOUBLE
            numeric = name in NUMERIC_PRESERVING and any(x.numeric for x in xs)
            unit = xs[0].unit if name in ("ABS", "CEILING", "FLOOR") else None
            if name == "DEGREES" and xs[0].unit == "rad":
                unit = "deg"
            return X(
                f"{SIMPLE_MATH[name]}({', '.join(x.sql for x in xs)})",
                typ,
                name=name.lower(),
                agg=any(x.agg for x in xs),
                numeric=numeric,
                unit=unit,
            )
        udf = UDFS.get(name)
        if udf is None:
            available = ", ".join(sorted(UDFS))
            raise _error(
                f"function {name} is not available on this service (user-defined "
                f"functions offered: {available})",
                e.pos,
            )
        xs = self.values(e.args, scope)
        if udf.aggregate and any(x.agg for x in xs):
            raise _error(f"aggregate functions cannot be nested in {name}", e.pos)
        sqls = [self._inner_sql(x) for x in xs]
        return X(
            udf.render(sqls), udf.result, name=name, agg=udf.aggregate or any(x.agg for x in xs)
        )

    def _aggregate(self, e: a.Call, scope: _Scope) -> X:
        name = e.name
        if e.star:
            return X("count(*)", ty.LONG, name="count", agg=True)
        x = self.expr(e.args[0], scope)
        if x.agg:
            raise _error(f"aggregate functions cannot be nested in {name}", e.pos)
        if x.typ.geometry and name != "COUNT":
            raise _error(f"{name} cannot be applied to a geometry", e.pos)
        if name in ("SUM", "AVG"):
            _no_string(x, name, e.pos)
        arg = ("DISTINCT " if e.quantifier == "DISTINCT" else "") + self._inner_sql(x)
        if name == "COUNT":
            return X(f"count({arg})", ty.LONG, name="count", agg=True)
        if name == "AVG":
            return X(
                f"CAST(avg({arg}) AS double precision)",
                ty.DOUBLE,
                name="avg",
                agg=True,
                unit=x.unit,
            )
        if name == "SUM":
            if x.typ.is_integer:
                return X(f"CAST(sum({arg}) AS bigint)", ty.LONG, name="sum", agg=True, unit=x.unit)
            typ = x.typ if x.typ.is_real else ty.DOUBLE
            return X(
                f"sum({arg})", typ, name="sum", agg=True, unit=x.unit, numeric=not x.typ.is_real
            )
        return X(
            f"{name.lower()}({arg})",
            x.typ,
            name=name.lower(),
            agg=True,
            unit=x.unit,
            numeric=x.numeric,
        )

    # --- numeric functions with their own rules --------------------------------------------------

    def f_MOD(self, e: a.Call, scope: _Scope) -> X:
        x, y = self.values(e.args, scope)
        for v in (x, y):
            _no_geometry(v, "MOD", e.pos)
        agg = x.agg or y.agg
        if x.typ.is_integer and y.typ.is_integer:
            return X(f"mod({x.sql}, {y.sql})", ty.arithmetic(x.typ, y.typ), name="mod", agg=agg)
        return X(
            f"CAST(mod(CAST({x.sql} AS numeric), CAST({y.sql} AS numeric)) AS double precision)",
            ty.DOUBLE,
            name="mod",
            agg=agg,
        )

    def _rounding(self, e: a.Call, scope: _Scope, pg: str) -> X:
        xs = self.values(e.args, scope)
        for v in xs:
            _no_geometry(v, e.name, e.pos)
        agg = any(v.agg for v in xs)
        if len(xs) == 1:
            return X(
                f"{pg}({xs[0].sql})",
                ty.DOUBLE,
                name=e.name.lower(),
                agg=agg,
                numeric=xs[0].numeric,
                unit=xs[0].unit,
            )
        return X(
            f"CAST({pg}(CAST({xs[0].sql} AS numeric), CAST({xs[1].sql} AS integer)) AS "
            "double precision)",
            ty.DOUBLE,
            name=e.name.lower(),
            agg=agg,
            unit=xs[0].unit,
        )

    def f_ROUND(self, e: a.Call, scope: _Scope) -> X:
        return self._rounding(e, scope, "round")

    def f_TRUNCATE(self, e: a.Call, scope: _Scope) -> X:
        return self._rounding(e, scope, "trunc")

    def f_RAND(self, e: a.Call, scope: _Scope) -> X:
        if not e.args:
            return X("random()", ty.DOUBLE, name="rand")
        seed = self.expr(e.args[0], scope)
        _no_geometry(seed, "RAND", e.pos)
        # setseed() wants [-1, 1]; sin() maps any seed there deterministically.
        return X(
            f"(SELECT random() FROM (SELECT setseed(sin(CAST({seed.sql} AS double "
            "precision)))) AS seed)",
            ty.DOUBLE,
            name="rand",
            agg=seed.agg,
        )

    def f_LOWER(self, e: a.Call, scope: _Scope) -> X:
        x = self.expr(e.args[0], scope)
        _no_geometry(x, e.name, e.pos)
        return X(f"{e.name.lower()}({_text(x)})", ty.CHAR, name=e.name.lower(), agg=x.agg)

    f_UPPER = f_LOWER

    def f_COALESCE(self, e: a.Call, scope: _Scope) -> X:
        xs = self.values(e.args, scope)
        sqls = [geo.plain(x, "COALESCE", e.pos) if x.typ.geometry else x.sql for x in xs]
        return X(
            f"COALESCE({', '.join(sqls)})",
            ty.common(xs),
            name="coalesce",
            agg=any(x.agg for x in xs),
            numeric=any(x.numeric for x in xs),
        )

    def f_IN_UNIT(self, e: a.Call, scope: _Scope) -> X:
        from vo_service.adql.units import conversion_factor

        x = self.expr(e.args[0], scope)
        target = e.args[1]
        if not (isinstance(target, a.Literal) and target.kind == "string"):
            raise _error("the unit of IN_UNIT must be a string literal", e.pos)
        _no_geometry(x, "IN_UNIT", e.pos)
        factor = conversion_factor(
            e.args[0], target.text, lambda ref: self.column(ref, scope).unit, e.pos
        )
        return X(
            f"({x.sql} * {factor})",
            ty.DOUBLE,
            name="in_unit",
            agg=x.agg,
            numeric=True,
            unit=target.text,
        )

    # --- geometry ------------------------------------------------------------------------------

    def _geometry_args(self, e: a.Call, scope: _Scope) -> list[X]:
        """Translate the arguments, validating and dropping the coordinate-system string."""
        xs = self.values(e.args, scope)
        n, first = len(xs), e.args[0]
        name = e.name
        if name == "POINT":
            frame = n == 3
        elif name in ("CIRCLE", "BOX"):
            full = 4 if name == "CIRCLE" else 5
            frame = n == full or (
                n == full - 1 and is_coordsys(first) and xs[1].typ.geometry == "point"
            )
        else:
            frame = is_coordsys(first)
        if frame:
            if not is_coordsys(first):
                raise _error(
                    f"the coordinate system of {name} must be a string literal", _expr_pos(first)
                )
            geo.check_frame(xs[0].text, _expr_pos(first))
            return xs[1:]
        return xs

    def f_POINT(self, e: a.Call, scope: _Scope) -> X:
        xs = self._geometry_args(e, scope)
        if len(xs) != 2:
            raise _error("POINT takes a longitude and a latitude", e.pos)
        return geo.point(xs[0], xs[1], e.pos)

    def f_CIRCLE(self, e: a.Call, scope: _Scope) -> X:
        xs = self._geometry_args(e, scope)
        if len(xs) == 3:
            return geo.circle(geo.point(xs[0], xs[1], e.pos), xs[2], e.pos)
        if len(xs) == 2:
            return geo.circle(xs[0], xs[1], e.pos)
        raise _error(
            "CIRCLE takes a centre (a point, or longitude and latitude) and a radius", e.pos
        )

    def f_BOX(self, e: a.Call, scope: _Scope) -> X:
        xs = self._geometry_args(e, scope)
        if len(xs) == 4:
            return geo.box(geo.point(xs[0], xs[1], e.pos), xs[2], xs[3], e.pos)
        if len(xs) == 3:
            return geo.box(xs[0], xs[1], xs[2], e.pos)
        raise _error(
            "BOX takes a centre (a point, or longitude and latitude), a width and a height", e.pos
        )

    def f_POLYGON(self, e: a.Call, scope: _Scope) -> X:
        xs = self._geometry_args(e, scope)
        if any(x.typ.geometry for x in xs):
            return geo.polygon_from_points(xs, e.pos)
        return geo.polygon_from_pairs(xs, e.pos)

    def f_REGION(self, e: a.Call, scope: _Scope) -> X:
        arg = e.args[0]
        if not (isinstance(arg, a.Literal) and arg.kind == "string"):
            raise _error("REGION needs a string literal (an STC-S region)", e.pos)
        return geo.region(arg.text, e.pos)

    def _predicate(self, e: a.Call, scope: _Scope, pred: str, agg: bool) -> X:
        return X(f"CAST({pred} AS integer)", ty.INT, name=e.name.lower(), agg=agg, pred=pred)

    def f_CONTAINS(self, e: a.Call, scope: _Scope) -> X:
        x, y = self.values(e.args, scope)
        return self._predicate(e, scope, geo.contains(x, y, e.pos), x.agg or y.agg)

    def f_INTERSECTS(self, e: a.Call, scope: _Scope) -> X:
        x, y = self.values(e.args, scope)
        return self._predicate(e, scope, geo.intersects(x, y, e.pos), x.agg or y.agg)

    def f_DISTANCE(self, e: a.Call, scope: _Scope) -> X:
        p, q = self._distance_points(e, scope)
        return geo.distance(p, q, e.pos)

    def f_AREA(self, e: a.Call, scope: _Scope) -> X:
        return geo.area(self.expr(e.args[0], scope), e.pos)

    def f_CENTROID(self, e: a.Call, scope: _Scope) -> X:
        return geo.centroid(self.expr(e.args[0], scope), e.pos)

    def f_COORD1(self, e: a.Call, scope: _Scope) -> X:
        return geo.coord(self.expr(e.args[0], scope), 1, e.pos)

    def f_COORD2(self, e: a.Call, scope: _Scope) -> X:
        return geo.coord(self.expr(e.args[0], scope), 2, e.pos)

    def f_COORDSYS(self, e: a.Call, scope: _Scope) -> X:
        return geo.coordsys(self.expr(e.args[0], scope), e.pos)


# --- helpers -------------------------------------------------------------------------------------


def _clip(text: str, nbytes: int) -> str:
    """Shorten to what PostgreSQL keeps of an identifier (63 bytes), leaving room for _n."""
    return text.encode()[:nbytes].decode(errors="ignore")


def _chain(scope: _Scope | None) -> list[_Scope]:
    out = []
    while scope is not None:
        out.append(scope)
        scope = scope.parent
    return out


def _suggest(ident: a.Ident, cols: list[_RCol]) -> str:
    names = list(dict.fromkeys(c.key for c in cols))
    same = [n for n in names if n.lower() == ident.name.lower()]
    if same and ident.delimited:
        return f' (delimited identifiers are case-sensitive: did you mean "{same[0]}"?)'
    close = difflib.get_close_matches(ident.name.lower(), names, 3, 0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _only(cols: list[_RCol], ident: a.Ident, side: str) -> _RCol:
    found = [c for c in cols if _match(ident, c.key)]
    if len(found) != 1:
        problem = "is not a column of" if not found else "is ambiguous in"
        raise _error(f"join column {ident} {problem} {side}", ident.pos)
    return found[0]


def _expr_pos(e: a.Expr) -> a.Pos:
    return e.pos


def _position(lit: a.Literal, outs: list[_Out]) -> int:
    n = int(lit.text)
    if not 1 <= n <= len(outs):
        raise _error(f"there is no result column {n} (the query selects {len(outs)})", lit.pos)
    return n


def _output_index(e: a.Expr, outs: list[_Out]) -> int | None:
    """1-based position of the result column ``e`` names (a position or a name), if any."""
    if isinstance(e, a.Literal) and e.kind == "int":
        return _position(e, outs)
    if not (isinstance(e, a.ColumnRef) and len(e.parts) == 1):
        return None
    ident = e.parts[0]
    hits = [i for i, o in enumerate(outs, 1) if o.key is not None and _match(ident, o.key)]
    if len({outs[i - 1].x.sql for i in hits}) > 1:
        raise _error(f"{ident} names several result columns", e.pos)
    return hits[0] if hits else None


def _no_geometry(x: X, op: str, pos: a.Pos) -> None:
    if x.typ.geometry:
        raise _error(f"a geometry cannot be an operand of {op}", pos)


def _no_string(x: X, op: str, pos: a.Pos) -> None:
    """Text columns in arithmetic; string literals pass, PostgreSQL reads '30' as 30."""
    if (x.typ.is_string or x.typ.is_timestamp) and x.text is None:
        raise _error(f"a string or timestamp cannot be an operand of {op}", pos)


def _need_integer(x: X, op: str, pos: a.Pos) -> None:
    if x.typ.known and not x.typ.is_integer:
        raise _error(f"the operands of {op} must be integers", pos)


def _text(x: X) -> str:
    return x.sql if x.typ.is_string else f"CAST({x.sql} AS text)"


def _fold(op: str, left: float | None, right: float | None) -> float | None:
    if left is None or right is None:
        return None
    try:
        if op == "/":
            return left / right
        return {"+": left + right, "-": left - right, "*": left * right}[op]
    except (ZeroDivisionError, OverflowError):
        return None


def _unify(left: _Out, right: _Out) -> _Out:
    """A set operation's column: named and described by the left operand (ADQL 2.1 §4.6),
    typed as PostgreSQL combines both (an int column UNION a double one is double)."""
    typ = ty.common([left.x, right.x])
    if typ == left.x.typ or not left.x.typ.is_numeric:
        return left
    x = X(
        left.x.sql,
        typ,
        name=left.x.name,
        unit=left.x.unit,
        numeric=left.x.numeric or right.x.numeric,
    )
    return _Out(left.name, left.key, left.sql_name, x)


def _output_sql(x: X) -> str:
    """Final select-list form: geometries as DALI arrays, numeric results as double."""
    if x.typ.geometry:
        return geo.output(x)
    if x.numeric and x.typ.datatype in ("double", "float"):
        return f"CAST({x.sql} AS double precision)"
    return x.sql


def _field(o: _Out) -> Column:
    """The result FIELD: catalogue metadata for plain column references, else inferred."""
    if o.x.source is not None:
        return o.x.source.renamed(o.name)
    t = o.x.typ
    return Column(
        name=o.name,
        datatype=t.datatype if t.datatype != "boolean" else "",
        arraysize=t.arraysize,
        xtype=t.xtype,
        unit=o.x.unit,
    )
