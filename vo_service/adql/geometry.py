"""ADQL geometry (degrees) on pgsphere (radians).

Decisions, each checked against pgsphere 1.1/1.2 on PostgreSQL 15:

* Coordinate systems: ADQL 2.1 deprecates the frame argument. We accept ``''``, NULL and
  ``ICRS`` (optionally with a reference position such as ``GEOCENTER``); any other frame is
  an error rather than silently ignored, because the service's positions are ICRS and a
  ``'GALACTIC'`` query would otherwise return wrong rows without a hint.
* Polygons: pgsphere ignores the winding and always means the smaller of the two regions
  the edges bound. ADQL/DALI polygons are counter-clockwise and in practice (and in every
  example) smaller than a hemisphere, so the vertices are passed in their given order and
  a clockwise polygon still means the region users almost always intend. Vertices built
  from constants become an ``spoly`` literal (degrees, fixed-point, no user text);
  computed vertices are assembled the same way from ``numeric`` renderings in SQL.
* BOX is the ADQL 2.0 box (arms along the great circles through the centre, sides
  perpendicular to them), emitted as the equivalent 4-vertex polygon; pgsphere's ``sbox``
  is a lat/long rectangle and not the same region. Only constant arguments are supported.
* Circles: pgsphere stops at 90° of radius, ADQL allows 180°. Constant radii in (90, 180]
  are supported in CONTAINS/INTERSECTS (through the complementary circle around the
  antipode; exact up to points exactly on the rim), AREA, CENTROID, COORDSYS and output;
  other uses (comparisons, COALESCE, subquery columns) are rejected with a message. A
  radius computed from columns is passed to pgsphere, which refuses values above 90°.
* CONTAINS/INTERSECTS become the pgsphere operators ``<@`` and ``&&`` (GiST-indexable);
  INTERSECTS with a point is CONTAINS of that point (ADQL 2.1); a region never lies inside
  a point. DISTANCE is ``degrees(p <-> q)``; AREA converts steradians to square degrees;
  CENTROID of a polygon is the true spherical centroid (area-weighted), not the vertex mean.
* Output: geometry values in the final select list become DALI double arrays in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from vo_service.adql import typesys as ty
from vo_service.adql.errors import ADQLSemanticError
from vo_service.adql.typesys import X

_REFPOS = {"GEOCENTER", "BARYCENTER", "HELIOCENTER", "TOPOCENTER", "UNKNOWNREFPOS"}
_SR_TO_DEG2 = (180.0 / math.pi) ** 2


def _error(message: str, pos: tuple[int, int] | None = None) -> ADQLSemanticError:
    return ADQLSemanticError(message, *(pos or (None, None)))


def check_frame(value: str | None, pos: tuple[int, int]) -> None:
    """Accept the frames that denote our ICRS positions; refuse others with a reason."""
    if value is None:
        return
    words = value.upper().split()
    if not words or (words[0] == "ICRS" and all(w in _REFPOS for w in words[1:])):
        return
    raise _error(
        f"coordinate system '{value}' is not supported: positions in this service are ICRS; "
        "use 'ICRS' or leave the coordinate system out",
        pos,
    )


def number(value: float, what: str = "coordinate") -> str:
    """A float as fixed-point digits (pgsphere literals accept no exponent)."""
    if not math.isfinite(value):
        raise _error(f"the {what} {value} is not a finite number")
    text = format(Decimal(repr(value + 0.0)), "f")  # + 0.0 turns -0.0 into 0.0
    return text[:-2] if text.endswith(".0") else text


def _numeric_text(sql: str) -> str:
    return f"CAST(CAST(CAST({sql} AS double precision) AS numeric) AS text)"


def _need_number(x: X, what: str, pos: tuple[int, int]) -> None:
    if x.typ.geometry or x.typ.is_timestamp or x.typ.is_string:
        raise _error(f"{what} must be a number", pos)


def need_geometry(x: X, what: str, pos: tuple[int, int]) -> str:
    g = x.typ.geometry
    if g is None:
        raise _error(f"{what} must be a geometry (POINT, CIRCLE or POLYGON)", pos)
    return g


def plain(x: X, what: str, pos: tuple[int, int]) -> str:
    """The pgsphere value of ``x``; fails for circles beyond pgsphere's 90° radius."""
    if x.big_circle:
        raise _error(
            f"circles with a radius above 90° cannot be used in {what}; "
            "they are supported in CONTAINS, INTERSECTS, AREA, CENTROID and the "
            "select list",
            pos,
        )
    return x.sql


# --- constructors ------------------------------------------------------------------------------


def point(lon: X, lat: X, pos: tuple[int, int]) -> X:
    _need_number(lon, "a POINT coordinate", pos)
    _need_number(lat, "a POINT coordinate", pos)
    const = None
    if lon.const is not None and lat.const is not None:
        if not -90 <= lat.const <= 90:
            raise _error(f"latitude {lat.const} is outside [-90, 90]", pos)
        const = (lon.const, lat.const)
    return X(
        f"spoint(radians({lon.sql}), radians({lat.sql}))",
        ty.POINT,
        name="point",
        agg=lon.agg or lat.agg,
        unit="deg",
        point=const,
    )


def circle(center: X, radius: X, pos: tuple[int, int]) -> X:
    if center.typ.geometry != "point":
        raise _error("the centre of a CIRCLE must be a point", pos)
    _need_number(radius, "a CIRCLE radius", pos)
    r = radius.const
    if r is not None and not 0 <= r <= 180:
        raise _error(f"a circle radius must be within [0, 180] degrees, not {r}", pos)
    sql = "" if r is not None and r > 90 else f"scircle({center.sql}, radians({radius.sql}))"
    return X(
        sql,
        ty.CIRCLE,
        name="circle",
        agg=center.agg or radius.agg,
        unit="deg",
        circle=(center, radius),
    )


def polygon_from_pairs(coords: Sequence[X], pos: tuple[int, int]) -> X:
    if len(coords) % 2 or len(coords) < 6:
        raise _error("POLYGON needs at least three vertices as coordinate pairs", pos)
    for c in coords:
        _need_number(c, "a POLYGON coordinate", pos)
    pairs = list(zip(coords[::2], coords[1::2], strict=True))
    if all(lon.const is not None and lat.const is not None for lon, lat in pairs):
        return polygon_const([(lon.const, lat.const) for lon, lat in pairs], pos)  # type: ignore[misc]
    parts = [(_numeric_text(lon.sql), _numeric_text(lat.sql)) for lon, lat in pairs]
    return _polygon_sql(parts, any(c.agg for c in coords))


def polygon_from_points(points: Sequence[X], pos: tuple[int, int]) -> X:
    if len(points) < 3:
        raise _error("POLYGON needs at least three vertices", pos)
    if any(p.typ.geometry != "point" for p in points):
        raise _error("POLYGON vertices must be all points or all numbers", pos)
    if all(p.point is not None for p in points):
        return polygon_const([p.point for p in points], pos)  # type: ignore[misc]
    parts = [
        (_numeric_text(f"degrees(long({p.sql}))"), _numeric_text(f"degrees(lat({p.sql}))"))
        for p in points
    ]
    return _polygon_sql(parts, any(p.agg for p in points))


def _polygon_sql(parts: list[tuple[str, str]], agg: bool) -> X:
    pieces = " || '),(' || ".join(f"{lon} || 'd,' || {lat} || 'd'" for lon, lat in parts)
    return X(
        f"CAST('{{(' || {pieces} || ')}}' AS spoly)",
        ty.POLYGON,
        name="polygon",
        agg=agg,
        unit="deg",
    )


def polygon_const(vertices: Sequence[tuple[float, float]], pos: tuple[int, int]) -> X:
    for _, lat in vertices:
        if not -90 <= lat <= 90:
            raise _error(f"latitude {lat} is outside [-90, 90]", pos)
    body = ",".join(f"({number(lon)}d,{number(lat)}d)" for lon, lat in vertices)
    return X(
        f"spoly '{{{body}}}'", ty.POLYGON, name="polygon", unit="deg", vertices=tuple(vertices)
    )


def box(center: X, width: X, height: X, pos: tuple[int, int]) -> X:
    if center.point is None or width.const is None or height.const is None:
        raise _error("BOX is only supported with constant arguments; use POLYGON", pos)
    w, h = width.const, height.const
    if not (0 < w < 180 and 0 < h < 180):
        raise _error("BOX width and height must be within (0, 180) degrees", pos)
    return polygon_const(box_corners(*center.point, w, h), pos)


def box_corners(lon: float, lat: float, w: float, h: float) -> list[tuple[float, float]]:
    """Corners NE, SE, SW, NW (counter-clockwise seen from inside) of an ADQL BOX."""
    half_w = math.radians(w / 2)
    corner_lat = math.atan(math.tan(math.radians(h / 2)) * math.cos(half_w))
    d, ra = math.radians(lat), math.radians(lon)
    out = []
    for lo, la in (
        (half_w, corner_lat),
        (half_w, -corner_lat),
        (-half_w, -corner_lat),
        (-half_w, corner_lat),
    ):
        x, y, z = math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)
        x, z = math.cos(d) * x - math.sin(d) * z, math.sin(d) * x + math.cos(d) * z
        out.append(
            (
                (math.degrees(ra + math.atan2(y, x))) % 360.0,
                math.degrees(math.asin(max(-1.0, min(1.0, z)))),
            )
        )
    return out


def region(stcs: str, pos: tuple[int, int]) -> X:
    """The simple STC-S forms (Position, Circle, Box, Polygon) with constant numbers."""
    words = stcs.split()
    if not words:
        raise _error("REGION needs an STC-S string such as 'Circle ICRS 10 20 1'", pos)
    shape, rest = words[0].upper(), words[1:]
    frame = []
    while rest and not _is_float(rest[0]):
        frame.append(rest.pop(0))
    check_frame(" ".join(frame), pos)
    try:
        nums = [float(w) for w in rest]
    except ValueError:
        raise _error(
            f"cannot read the STC-S region {stcs!r}; only Position, Circle, Box and "
            "Polygon with numbers are supported",
            pos,
        ) from None
    consts = [X(number(v), ty.DOUBLE, const=v) for v in nums]
    if shape == "POSITION" and len(nums) == 2:
        return point(consts[0], consts[1], pos)
    if shape == "CIRCLE" and len(nums) == 3:
        return circle(point(consts[0], consts[1], pos), consts[2], pos)
    if shape == "BOX" and len(nums) == 4:
        return box(point(consts[0], consts[1], pos), consts[2], consts[3], pos)
    if shape == "POLYGON":
        return polygon_from_pairs(consts, pos)
    raise _error(
        f"unsupported STC-S region {stcs!r}: only Position, Circle, Box and Polygon are supported",
        pos,
    )


def _is_float(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def cast_from_text(text: str, target: str, pos: tuple[int, int]) -> X:
    """CAST('lon lat …' AS POINT/CIRCLE/POLYGON): DALI serialisations of literals."""
    try:
        nums = [float(w) for w in text.split()]
    except ValueError:
        raise _error(f"{text!r} is not a DALI {target.lower()}", pos) from None
    consts = [X(number(v), ty.DOUBLE, const=v) for v in nums]
    if target == "POINT" and len(nums) == 2:
        return point(consts[0], consts[1], pos)
    if target == "CIRCLE" and len(nums) == 3:
        return circle(point(consts[0], consts[1], pos), consts[2], pos)
    if target == "POLYGON":
        return polygon_from_pairs(consts, pos)
    raise _error(f"{text!r} is not a DALI {target.lower()}", pos)


# --- predicates and functions ---------------------------------------------------------------


def _complement(big: X) -> str:
    """The scircle whose interior is the complement of a circle wider than 90°."""
    center, radius = big.circle  # type: ignore[misc]
    if center.point is not None:
        lon, lat = center.point
        anti = f"spoint(radians({number((lon + 180) % 360)}), radians({number(-lat)}))"
    else:
        anti = f"spoint(long({center.sql}) + pi(), -lat({center.sql}))"
    return f"scircle({anti}, radians(180 - {radius.sql}))"


def contains(a: X, b: X, pos: tuple[int, int]) -> str:
    """Boolean SQL for ADQL CONTAINS(a, b): a lies inside or on b.

    Circles wider than 90° are handled through their complement C' (a circle around the
    antipode): a point is inside by distance, a region lies inside iff it misses C', a
    wide circle lies inside another iff the complements nest the other way round, and
    nothing narrower than a hemisphere (every pgsphere region) contains a wide circle.
    """
    ga = need_geometry(a, "the first argument of CONTAINS", pos)
    gb = need_geometry(b, "the second argument of CONTAINS", pos)
    if gb == "point":
        return f"({plain(a, 'CONTAINS', pos)} = {b.sql})" if ga == "point" else "FALSE"
    if b.big_circle:
        center, radius = b.circle  # type: ignore[misc]
        if ga == "point":
            return f"(({a.sql} <-> {center.sql}) <= radians({radius.sql}))"
        if a.big_circle:
            return f"({_complement(b)} <@ {_complement(a)})"
        return f"(NOT ({a.sql} && {_complement(b)}))"
    if a.big_circle:
        return "FALSE"
    return f"({a.sql} <@ {b.sql})"


def intersects(a: X, b: X, pos: tuple[int, int]) -> str:
    """ADQL INTERSECTS; with a point it is CONTAINS of that point (ADQL 2.1 §4.2.11)."""
    ga = need_geometry(a, "the first argument of INTERSECTS", pos)
    gb = need_geometry(b, "the second argument of INTERSECTS", pos)
    if ga == "point":
        return contains(a, b, pos)
    if gb == "point":
        return contains(b, a, pos)
    if a.big_circle and b.big_circle:  # two regions larger than a hemisphere always meet
        return "TRUE"
    if a.big_circle or b.big_circle:
        big, other = (a, b) if a.big_circle else (b, a)
        return f"(NOT ({other.sql} <@ {_complement(big)}))"
    return f"({a.sql} && {b.sql})"


def need_point(x: X, what: str, pos: tuple[int, int]) -> str:
    if x.typ.geometry != "point":
        raise _error(f"{what} must be a point", pos)
    return x.sql


def distance(p: X, q: X, pos: tuple[int, int]) -> X:
    sql = (
        f"degrees({need_point(p, 'a DISTANCE argument', pos)} <-> "
        f"{need_point(q, 'a DISTANCE argument', pos)})"
    )
    return X(sql, ty.DOUBLE, name="distance", agg=p.agg or q.agg, unit="deg")


def area(g: X, pos: tuple[int, int]) -> X:
    kind = need_geometry(g, "the argument of AREA", pos)
    if kind == "point":
        sql = f"CASE WHEN {g.sql} IS NULL THEN NULL ELSE CAST(0 AS double precision) END"
    elif g.big_circle:
        r = math.radians(g.circle[1].const)  # type: ignore[index, arg-type]
        sql = f"CAST({number(2 * math.pi * (1 - math.cos(r)) * _SR_TO_DEG2)} AS double precision)"
    else:
        sql = f"degrees(degrees(area({g.sql})))"
    return X(sql, ty.DOUBLE, name="area", agg=g.agg, unit="deg**2")


def centroid(g: X, pos: tuple[int, int]) -> X:
    kind = need_geometry(g, "the argument of CENTROID", pos)
    if kind == "point":
        return X(g.sql, ty.POINT, name="centroid", agg=g.agg, unit="deg", point=g.point)
    if kind == "circle":
        if g.circle is not None:
            c = g.circle[0]
            return X(c.sql, ty.POINT, name="centroid", agg=g.agg, unit="deg", point=c.point)
        return X(f"center({g.sql})", ty.POINT, name="centroid", agg=g.agg, unit="deg")
    if g.vertices is not None:
        lon, lat = polygon_centroid(g.vertices)
        c = point(X(number(lon), ty.DOUBLE, const=lon), X(number(lat), ty.DOUBLE, const=lat), pos)
        return X(c.sql, ty.POINT, name="centroid", unit="deg", point=c.point)
    return X(_centroid_sql(g.sql), ty.POINT, name="centroid", agg=g.agg, unit="deg")


def _edge_moment(a: tuple[float, float, float], b: tuple[float, float, float]) -> list[float]:
    cx, cy, cz = a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]
    norm = math.sqrt(cx * cx + cy * cy + cz * cz)
    if norm == 0:
        return [0.0, 0.0, 0.0]
    k = math.atan2(norm, a[0] * b[0] + a[1] * b[1] + a[2] * b[2]) / norm
    return [cx * k, cy * k, cz * k]


def polygon_centroid(vertices: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Centroid of the smaller region: direction of the first moment ½Σ θ·n̂ over the edges."""
    vec = [
        (
            math.cos(math.radians(la)) * math.cos(math.radians(lo)),
            math.cos(math.radians(la)) * math.sin(math.radians(lo)),
            math.sin(math.radians(la)),
        )
        for lo, la in vertices
    ]
    m = [0.0, 0.0, 0.0]
    for i, v in enumerate(vec):
        for j, c in enumerate(_edge_moment(v, vec[(i + 1) % len(vec)])):
            m[j] += c
    mean = [sum(v[j] for v in vec) for j in range(3)]
    if sum(m[j] * mean[j] for j in range(3)) < 0:  # clockwise: moment of the complement
        m = [-c for c in m]
    lon = math.degrees(math.atan2(m[1], m[0])) % 360.0
    return lon, math.degrees(math.atan2(m[2], math.hypot(m[0], m[1])))


def _centroid_sql(poly: str) -> str:
    """The same first-moment computation in SQL, vertices read through pgsphere's spath.

    Every level ends in OFFSET 0, which keeps PostgreSQL from flattening the subqueries:
    flattened, each column reference would be replaced by its whole defining expression
    and the polygon expression would be copied hundreds of times.
    """
    path = f"SELECT CAST(CAST({poly} AS text) AS spath) AS s OFFSET 0"
    pairs = (
        "SELECT spoint(q.s, i) AS a, spoint(q.s, i % npoints(q.s) + 1) AS b "
        f"FROM ({path}) AS q, generate_series(1, npoints(q.s)) AS i OFFSET 0"
    )
    cross = (
        "SELECT x(v.a) AS ax, y(v.a) AS ay, z(v.a) AS az, "
        "y(v.a) * z(v.b) - z(v.a) * y(v.b) AS cx, z(v.a) * x(v.b) - x(v.a) * z(v.b) AS cy, "
        "x(v.a) * y(v.b) - y(v.a) * x(v.b) AS cz, "
        "x(v.a) * x(v.b) + y(v.a) * y(v.b) + z(v.a) * z(v.b) AS d "
        f"FROM ({pairs}) AS v OFFSET 0"
    )
    norm = (
        "SELECT w.*, sqrt(w.cx * w.cx + w.cy * w.cy + w.cz * w.cz) AS n "
        f"FROM ({cross}) AS w OFFSET 0"
    )
    weight = (
        "SELECT e.*, CASE WHEN e.n > 0 THEN atan2(e.n, e.d) / e.n ELSE 0 END AS k "
        f"FROM ({norm}) AS e OFFSET 0"
    )
    sums = (
        "SELECT sum(f.cx * f.k) AS x, sum(f.cy * f.k) AS y, sum(f.cz * f.k) AS z, "
        f"sum(f.ax) AS mx, sum(f.ay) AS my, sum(f.az) AS mz FROM ({weight}) AS f"
    )
    return (
        "(SELECT CASE WHEN m.x * m.mx + m.y * m.my + m.z * m.mz >= 0 "
        "THEN spoint(atan2(m.y, m.x), atan2(m.z, sqrt(m.x * m.x + m.y * m.y))) "
        "ELSE spoint(atan2(-m.y, -m.x), atan2(-m.z, sqrt(m.x * m.x + m.y * m.y))) END "
        f"FROM ({sums} OFFSET 0) AS m WHERE m.x IS NOT NULL)"
    )


def coord(p: X, which: int, pos: tuple[int, int]) -> X:
    fn = "long" if which == 1 else "lat"
    sql = f"degrees({fn}({need_point(p, f'the argument of COORD{which}', pos)}))"
    return X(sql, ty.DOUBLE, name=f"coord{which}", agg=p.agg, unit="deg")


def coordsys(g: X, pos: tuple[int, int]) -> X:
    need_geometry(g, "the argument of COORDSYS", pos)
    ref = g.circle[0].sql if g.big_circle else g.sql  # type: ignore[index]
    return X(
        f"CASE WHEN {ref} IS NULL THEN NULL ELSE 'ICRS' END", ty.CHAR, name="coordsys", agg=g.agg
    )


# --- output as DALI arrays ----------------------------------------------------------------------


def output(x: X) -> str:
    """The select-list form of a geometry: a double precision[] in degrees (DALI).

    The value is referred to several times; anything beyond a column or a constructor is
    computed once in a fenced subquery rather than copied.
    """
    kind = x.typ.geometry
    if kind == "circle" and x.big_circle:
        c, r = x.circle  # type: ignore[misc]
        return (
            f"CASE WHEN {c.sql} IS NULL THEN NULL ELSE ARRAY[degrees(long({c.sql})), "
            f"degrees(lat({c.sql})), CAST({r.sql} AS double precision)] END"
        )
    if kind == "polygon" and x.vertices is not None:
        flat = ", ".join(f"{number(lo % 360.0)}, {number(la)}" for lo, la in x.vertices)
        return f"CAST(ARRAY[{flat}] AS double precision[])"
    if kind == "polygon":
        return (
            "(SELECT array_agg(CASE WHEN k.j = 1 THEN degrees(long(spoint(q.s, i))) "
            "ELSE degrees(lat(spoint(q.s, i))) END ORDER BY i, k.j) "
            f"FROM (SELECT CAST(CAST({x.sql} AS text) AS spath) AS s OFFSET 0) AS q, "
            "generate_series(1, npoints(q.s)) AS i, (VALUES (1), (2)) AS k(j))"
        )
    simple = "SELECT" not in x.sql
    g = x.sql if simple else "g.v"
    if kind == "point":
        array = f"ARRAY[degrees(long({g})), degrees(lat({g}))]"
    else:
        array = (
            f"ARRAY[degrees(long(center({g}))), degrees(lat(center({g}))), degrees(radius({g}))]"
        )
    value = f"CASE WHEN {g} IS NULL THEN NULL ELSE {array} END"
    return value if simple else f"(SELECT {value} FROM (SELECT {x.sql} AS v OFFSET 0) AS g)"
