"""IN_UNIT: unit inference over the syntax tree and conversion factors, via astropy.

ADQL 2.1 requires an error for unknown units, incompatible dimensions and expressions
without a unit (literals included), so the unit of the argument is inferred from column
metadata through arithmetic and the unit-preserving functions; when it cannot be inferred
the query is refused rather than converted on a guess. astropy is imported only here, on
first use, because it takes a noticeable time to load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vo_service.adql import ast as a
from vo_service.adql.errors import ADQLSemanticError

_SAME_UNIT = {
    "ABS",
    "CEILING",
    "FLOOR",
    "ROUND",
    "TRUNCATE",
    "MIN",
    "MAX",
    "AVG",
    "SUM",
    "COALESCE",
}


def _parse(text: str, pos: a.Pos) -> Any:
    import astropy.units as u

    try:
        return u.Unit(text, format="vounit")
    except ValueError:
        try:  # VOUnit is strict about e.g. "deg**2"; accept astropy's generic spelling too
            return u.Unit(text)
        except ValueError:
            raise ADQLSemanticError(f"invalid unit {text!r}", *pos) from None


def _constant(e: a.Expr) -> float | None:
    if isinstance(e, a.Literal) and e.kind in ("int", "float"):
        return float(e.text)
    if isinstance(e, a.Unary) and e.op == "-":
        v = _constant(e.operand)
        return None if v is None else -v
    return None


def infer(e: a.Expr, column_unit: Callable[[a.ColumnRef], str | None], pos: a.Pos) -> Any:
    """The astropy unit of ``e``, or None when it has none or cannot be inferred."""
    import astropy.units as u

    def unit(node: a.Expr) -> Any:
        if isinstance(node, a.ColumnRef):
            text = column_unit(node)
            return _parse(text, pos) if text else None
        if isinstance(node, a.Unary):
            return unit(node.operand)
        if isinstance(node, a.Binary):
            left, right = unit(node.left), unit(node.right)
            if node.op in ("+", "-"):
                if left is not None and right is not None and not left.is_equivalent(right):
                    return None
                return left if left is not None else right
            if node.op in ("*", "/"):
                if left is None and right is None:
                    return None
                left = left if left is not None else u.dimensionless_unscaled
                right = right if right is not None else u.dimensionless_unscaled
                return left * right if node.op == "*" else left / right
            return None
        if isinstance(node, a.Call):
            if node.name in _SAME_UNIT and node.args:
                return unit(node.args[0])
            if node.name == "SQRT":
                inner = unit(node.args[0])
                return None if inner is None else inner**0.5
            if node.name == "POWER":
                inner, n = unit(node.args[0]), _constant(node.args[1])
                return None if inner is None or n is None else inner**n
            if node.name in ("DEGREES", "DISTANCE", "COORD1", "COORD2"):
                return u.deg
            if node.name == "RADIANS":
                return u.rad
            if node.name == "AREA":
                return u.deg**2
            if node.name == "IN_UNIT" and isinstance(node.args[1], a.Literal):
                return _parse(node.args[1].text, pos)
            return None
        if isinstance(node, a.Cast):
            return unit(node.expr)
        return None

    return unit(e)


def conversion_factor(
    e: a.Expr, target: str, column_unit: Callable[[a.ColumnRef], str | None], pos: a.Pos
) -> str:
    """SQL literal of the factor converting ``e`` to ``target``; errors as ADQL 2.1 asks."""
    from astropy.units import UnitConversionError

    goal = _parse(target, pos)
    source = infer(e, column_unit, pos)
    if source is None:
        raise ADQLSemanticError(
            "IN_UNIT needs a value with a known unit (a column with a unit, or arithmetic on "
            "such columns); literals and expressions without a unit cannot be converted",
            *pos,
        )
    try:
        factor = float(source.to(goal))
    except UnitConversionError:
        raise ADQLSemanticError(
            f"cannot convert {source.to_string('vounit')} to {target!r}: the dimensions differ",
            *pos,
        ) from None
    if not math.isfinite(factor):
        raise ADQLSemanticError(f"cannot convert to {target!r}", *pos)
    return repr(factor)
