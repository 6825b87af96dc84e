"""VOSI ``/tables``: the tableset, derived from the same declarations as TAP_SCHEMA."""

from __future__ import annotations

from lxml import etree

from vo_service.adql.reserved import published_name
from vo_service.metadata import Catalog, Column, Table
from vo_service.xml import NSMAP, VOSI_TABLES, serialize, sub, xsi_type


def _column(parent: etree._Element, table: Table, col: Column) -> None:
    el = sub(parent, "column", std="true" if col.std else None)
    sub(el, "name", published_name(col.name))
    if col.description:
        sub(el, "description", col.description)
    for tag in ("unit", "ucd", "utype"):
        value = getattr(col, tag)
        if value:
            sub(el, tag, value)
    dtype = sub(el, "dataType", col.datatype, arraysize=col.arraysize, extendedType=col.xtype)
    xsi_type(dtype, "vs:VOTableType")
    if col.name in table.indexed_column_names:
        sub(el, "flag", "indexed")
    if col.name in table.primary_key:
        sub(el, "flag", "primary")
    if col.nullable:
        sub(el, "flag", "nullable")


def _table(parent: etree._Element, table: Table, detail: bool, index: int) -> None:
    el = sub(parent, "table", type=table.table_type)
    sub(el, "name", table.qualified_name)
    if table.description:
        sub(el, "description", table.description)
    if table.utype:
        sub(el, "utype", table.utype)
    if not detail:
        return
    for col in table.published_columns:
        _column(el, table, col)
    for fk in table.foreign_keys:
        key = sub(el, "foreignKey")
        sub(key, "targetTable", fk.target_table.lower())
        for src, dst in zip(fk.columns, fk.target_columns, strict=True):
            pair = sub(key, "fkColumn")
            sub(pair, "fromColumn", src)
            sub(pair, "targetColumn", dst)
        if fk.description:
            sub(key, "description", fk.description)


def tableset(catalog: Catalog, *, detail: bool = True) -> bytes:
    root = etree.Element(f"{{{VOSI_TABLES}}}tableset", nsmap={"vosi": VOSI_TABLES, **NSMAP})
    for schema in catalog.published_schemas:
        el = sub(root, "schema")
        sub(el, "name", schema.name)
        if schema.description:
            sub(el, "description", schema.description)
        for index, table in enumerate(
            t for t in catalog.published_tables if t.schema == schema.name
        ):
            _table(el, table, detail, index)
    return serialize(root)


def single_table(table: Table) -> bytes:
    root = etree.Element(f"{{{VOSI_TABLES}}}table", nsmap={"vosi": VOSI_TABLES, **NSMAP})
    holder = etree.Element("holder")
    _table(holder, table, True, 0)
    inner = holder[0]
    root.set("type", inner.get("type", "table"))
    for child in inner:
        root.append(child)
    return serialize(root)
