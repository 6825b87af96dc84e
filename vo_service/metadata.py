"""Declarative table metadata: the single source for DDL, TAP_SCHEMA, VOSI and FIELDs.

Every table the service owns is described once, in a TOML file under
``schemas/tables/``. Column metadata (VOTable datatype, arraysize, xtype, unit, UCD,
utype, description, flags) is read from there and nowhere else: the DDL, the rows of
``TAP_SCHEMA``, VOSI ``/tables`` and the FIELD elements of every result derive from
these objects. TOML is in the standard library and reads well in review, which is why
it was preferred over YAML or XML resource descriptors.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import schemas

VOTABLE_DATATYPES = frozenset(
    {"boolean", "unsignedByte", "short", "int", "long", "float", "double", "char", "unicodeChar"}
)

_SCALAR_SQL = {
    "boolean": "boolean",
    "unsignedByte": "smallint",
    "short": "smallint",
    "int": "integer",
    "long": "bigint",
    "float": "real",
    "double": "double precision",
    "char": "text",
    "unicodeChar": "text",
}

_XTYPE_SQL = {
    "timestamp": "timestamp",
    "point": "spoint",
    "circle": "scircle",
    "polygon": "spoly",
    "moc": "smoc",
}


class MetadataError(ValueError):
    """A table declaration is inconsistent; raised at load time, never at query time."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column as VO clients see it; also used for result FIELDs."""

    name: str
    datatype: str
    arraysize: str | None = None
    xtype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    description: str = ""
    indexed: bool = False
    principal: bool = False
    std: bool = False
    nullable: bool = True
    published: bool = True
    sql_type_override: str | None = None
    default: str | None = None

    @property
    def sql_type(self) -> str:
        """PostgreSQL type derived from the VOTable datatype and xtype."""
        if self.sql_type_override:
            return self.sql_type_override
        if self.xtype in _XTYPE_SQL:
            return _XTYPE_SQL[self.xtype]
        base = _SCALAR_SQL[self.datatype]
        if self.datatype in ("char", "unicodeChar") or not self.arraysize:
            return base
        return base + "[]"

    def renamed(self, name: str) -> Column:
        return replace(self, name=name)


@dataclass(frozen=True, slots=True)
class ForeignKey:
    key_id: str
    columns: tuple[str, ...]
    target_table: str
    target_columns: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Index:
    columns: tuple[str, ...]
    method: str = "btree"
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    schema: str
    name: str
    description: str
    columns: tuple[Column, ...]
    utype: str | None = None
    table_type: str = "table"
    published: bool = True
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[Index, ...] = ()
    order: int = 0

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def published_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.published)

    @property
    def indexed_column_names(self) -> frozenset[str]:
        """Columns an index can serve: declared indexed, first of an index, first of the key."""
        names = {c.name for c in self.columns if c.indexed}
        names.update(i.columns[0] for i in self.indexes)
        names.update(self.primary_key[:1])
        return frozenset(names)

    def column(self, name: str) -> Column:
        lowered = name.lower()
        for col in self.columns:
            if col.name.lower() == lowered:
                return col
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    description: str
    utype: str | None = None
    order: int = 0


@dataclass(frozen=True)
class Catalog:
    """All declared schemas and tables; lookups are case-insensitive like ADQL's."""

    schemas: tuple[Schema, ...]
    tables: tuple[Table, ...]
    _by_name: dict[str, Table] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for table in self.tables:
            self._by_name[table.qualified_name.lower()] = table

    def table(self, qualified_name: str) -> Table:
        try:
            return self._by_name[qualified_name.lower()]
        except KeyError:
            raise KeyError(qualified_name) from None

    def find(self, qualified_name: str) -> Table | None:
        return self._by_name.get(qualified_name.lower())

    @property
    def published_tables(self) -> tuple[Table, ...]:
        return tuple(t for t in self.tables if t.published)

    @property
    def published_schemas(self) -> tuple[Schema, ...]:
        used = {t.schema for t in self.published_tables}
        return tuple(s for s in self.schemas if s.name in used)

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables)


def _column(raw: dict, where: str) -> Column:
    unknown = set(raw) - {
        "name",
        "datatype",
        "arraysize",
        "xtype",
        "unit",
        "ucd",
        "utype",
        "description",
        "indexed",
        "principal",
        "std",
        "nullable",
        "published",
        "sql_type",
        "default",
    }
    if unknown:
        raise MetadataError(f"{where}: unknown keys {sorted(unknown)}")
    if raw.get("datatype") not in VOTABLE_DATATYPES:
        raise MetadataError(f"{where}: datatype must be one of {sorted(VOTABLE_DATATYPES)}")
    arraysize = raw.get("arraysize")
    return Column(
        name=raw["name"],
        datatype=raw["datatype"],
        arraysize=str(arraysize) if arraysize is not None else None,
        xtype=raw.get("xtype"),
        unit=raw.get("unit"),
        ucd=raw.get("ucd"),
        utype=raw.get("utype"),
        description=raw.get("description", "").strip(),
        indexed=bool(raw.get("indexed", False)),
        principal=bool(raw.get("principal", False)),
        std=bool(raw.get("std", False)),
        nullable=bool(raw.get("nullable", True)),
        published=bool(raw.get("published", True)),
        sql_type_override=raw.get("sql_type"),
        default=raw.get("default"),
    )


def _table(raw: dict, where: str) -> Table:
    columns = tuple(_column(c, f"{where} column {c.get('name')!r}") for c in raw["columns"])
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise MetadataError(f"{where}: duplicate column names")
    indexed = {c.name for c in columns if c.indexed}
    indexes = [
        Index(tuple(i["columns"]), i.get("method", "btree"), i.get("unique", False))
        for i in raw.get("indexes", [])
    ]
    covered = {i.columns[0] for i in indexes} | set(raw.get("primary_key", [])[:1])
    for name in sorted(indexed - covered):
        col = next(c for c in columns if c.name == name)
        method = "gist" if col.xtype in ("point", "circle", "polygon") else "btree"
        indexes.append(Index((name,), method))
    for index in indexes:
        missing = set(index.columns) - set(names)
        if missing:
            raise MetadataError(f"{where}: index on unknown columns {sorted(missing)}")
    fks = tuple(
        ForeignKey(
            key_id=fk["key_id"],
            columns=tuple(fk["columns"]),
            target_table=fk["target_table"],
            target_columns=tuple(fk["target_columns"]),
            description=fk.get("description", ""),
        )
        for fk in raw.get("foreign_keys", [])
    )
    return Table(
        schema=raw["schema"],
        name=raw["name"],
        description=raw.get("description", "").strip(),
        columns=columns,
        utype=raw.get("utype"),
        table_type=raw.get("table_type", "table"),
        published=bool(raw.get("published", True)),
        primary_key=tuple(raw.get("primary_key", ())),
        foreign_keys=fks,
        indexes=tuple(indexes),
        order=int(raw.get("order", 100)),
    )


def load_catalog(directory: Path | None = None) -> Catalog:
    """Read every declaration; errors name the file so a bad edit fails loudly at start."""
    directory = directory or schemas.TABLES_DIR
    schema_file = directory / "_schemas.toml"
    raw_schemas = tomllib.loads(schema_file.read_text())
    declared = tuple(
        Schema(name, body.get("description", "").strip(), body.get("utype"), body.get("order", 100))
        for name, body in raw_schemas.items()
    )
    tables: list[Table] = []
    for path in sorted(directory.glob("*.toml")):
        if path.name.startswith("_"):
            continue
        try:
            tables.append(_table(tomllib.loads(path.read_text()), path.name))
        except (KeyError, tomllib.TOMLDecodeError) as exc:
            raise MetadataError(f"{path.name}: {exc}") from exc
    known = {s.name for s in declared}
    for table in tables:
        if table.schema not in known:
            raise MetadataError(f"{table.qualified_name}: schema not declared in _schemas.toml")
    by_name = {t.qualified_name.lower(): t for t in tables}
    for table in tables:
        for fk in table.foreign_keys:
            if fk.target_table.lower() not in by_name:
                raise MetadataError(f"{table.qualified_name}: FK target {fk.target_table} unknown")
    schema_order = {s.name: s.order for s in declared}
    tables.sort(key=lambda t: (schema_order[t.schema], t.order, t.name))
    return Catalog(tuple(sorted(declared, key=lambda s: s.order)), tuple(tables))


@cache
def catalog() -> Catalog:
    """The process-wide catalogue of declared tables."""
    return load_catalog()
