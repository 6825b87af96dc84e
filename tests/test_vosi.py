"""VOSI capabilities, availability and tables of the TAP service."""

from __future__ import annotations

import httpx
import pyvo
from lxml import etree

from vo_service.metadata import catalog

NS = {
    "vosi": "http://www.ivoa.net/xml/VOSICapabilities/v1.0",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}


def test_VOSI_M3_capabilities_list_tap_and_vosi(tap_url: str) -> None:
    response = httpx.get(f"{tap_url}/capabilities")
    assert response.status_code == 200 and "Last-Modified" in response.headers
    root = etree.fromstring(response.content)
    ids = [c.get("standardID") for c in root.findall("capability")]
    assert ids.count("ivo://ivoa.net/std/TAP") == 1
    assert "ivo://ivoa.net/std/VOSI#tables-1.1" in ids
    tap = root.find("capability[@standardID='ivo://ivoa.net/std/TAP']")
    interface = tap.find("interface")
    assert interface.get("version") == "1.1" and interface.get("role") == "std"
    assert interface.findtext("accessURL") == tap_url
    assert tap.find("language/name").text == "ADQL"


def test_pyvo_reads_capabilities_and_tables(tap_url: str) -> None:
    service = pyvo.dal.TAPService(tap_url)
    assert service.maxrec > 0 and service.hardlimit >= service.maxrec
    names = {t.name for t in service.tables}
    assert names == {t.qualified_name for t in catalog().published_tables}
    frames = service.tables["archive.frames"]
    columns = {c.name: c for c in frames.columns}
    assert "header" not in columns  # unpublished columns stay unpublished
    assert columns["exptime"].unit == "s"


def test_VOSI_M7_detail_min_has_no_columns(tap_url: str) -> None:
    root = etree.fromstring(httpx.get(f"{tap_url}/tables", params={"detail": "min"}).content)
    assert root.findall("schema/table") and not root.findall("schema/table/column")


def test_VOSI_M8_single_table_resource(tap_url: str) -> None:
    response = httpx.get(f"{tap_url}/tables/ARCHIVE.FRAMES")
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    assert root.findtext("name") == "archive.frames"
    assert httpx.get(f"{tap_url}/tables/archive.nothing").status_code == 404


def test_VOSI_M5_availability(tap_url: str) -> None:
    root = etree.fromstring(httpx.get(f"{tap_url}/availability").content)
    ns = "{http://www.ivoa.net/xml/VOSIAvailability/v1.0}"
    assert root.findtext(f"{ns}available") == "true"


def test_html_landing_page(tap_url: str) -> None:
    response = httpx.get(tap_url + "/")
    assert response.status_code == 200 and "archive.frames" in response.text
