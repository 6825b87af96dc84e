"""DALI ``/examples``: realistic queries over our tables, as XHTML with RDFa.

Each example is executed by the test suite, so the page never advertises a query the
service cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

XHTML = "http://www.w3.org/1999/xhtml"
VOCAB = "http://www.ivoa.net/rdf/examples#"


@dataclass(frozen=True)
class Example:
    id: str
    name: str
    description: str
    query: str
    tables: tuple[str, ...]


EXAMPLES = (
    Example(
        "night-summary",
        "What was observed in a night",
        "Frames per type and setup for one observing night.",
        "SELECT night, frame_type, setup_key, COUNT(*) AS n_frames, SUM(exptime) AS exposure\n"
        "FROM archive.frames\nGROUP BY night, frame_type, setup_key\n"
        "ORDER BY night, frame_type",
        ("archive.frames",),
    ),
    Example(
        "cone-search",
        "Science frames near a position",
        "Science frames pointed within 0.5 degrees of a position, nearest first.",
        "SELECT obs_id, object, frame_type, date_obs,\n"
        "  DISTANCE(pos, POINT('ICRS', 155.92, -28.75)) AS dist\n"
        "FROM archive.frames\n"
        "WHERE CONTAINS(pos, CIRCLE('ICRS', 155.92, -28.75, 0.5)) = 1\n"
        "  AND frame_type LIKE 'science%'\nORDER BY dist",
        ("archive.frames",),
    ),
    Example(
        "calibrations-for-setup",
        "Calibrations matching a science frame",
        "Biases, flats and arcs taken with the same setup as each science spectrum.",
        "SELECT s.obs_id AS science, c.obs_id AS calibration, c.frame_type AS cal_type\n"
        "FROM archive.frames AS s JOIN archive.frames AS c ON c.setup_key = s.setup_key\n"
        "WHERE s.frame_type = 'science_spectrum' AND c.frame_type IN ('flat', 'arc')\n"
        "ORDER BY science, cal_type",
        ("archive.frames",),
    ),
    Example(
        "table-columns",
        "Columns of a table",
        "The published columns of archive.frames with units and UCDs.",
        "SELECT column_name, datatype, unit, ucd, description\nFROM TAP_SCHEMA.columns\n"
        "WHERE table_name = 'archive.frames'\nORDER BY column_index",
        ("tap_schema.columns",),
    ),
)


def examples_document() -> bytes:
    html = etree.Element(f"{{{XHTML}}}html", nsmap={None: XHTML})
    head = etree.SubElement(html, f"{{{XHTML}}}head")
    etree.SubElement(head, f"{{{XHTML}}}title").text = "TAP examples"
    body = etree.SubElement(html, f"{{{XHTML}}}body", vocab=VOCAB)
    etree.SubElement(body, f"{{{XHTML}}}h1").text = "Example queries"
    for example in EXAMPLES:
        div = etree.SubElement(
            body, f"{{{XHTML}}}div", id=example.id, resource=f"#{example.id}", typeof="example"
        )
        etree.SubElement(div, f"{{{XHTML}}}h2", property="name").text = example.name
        etree.SubElement(div, f"{{{XHTML}}}p").text = example.description
        etree.SubElement(div, f"{{{XHTML}}}pre", property="query").text = example.query
        para = etree.SubElement(div, f"{{{XHTML}}}p")
        para.text = "Tables: "
        for table in example.tables:
            etree.SubElement(para, f"{{{XHTML}}}span", property="table").text = table
    return etree.tostring(html, xml_declaration=True, encoding="UTF-8", pretty_print=True)
