"""VOSI ``/availability`` from a real health check, not a static file."""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from vo_service.xml import VOSI_AVAIL, serialize, sub


def availability(available: bool, up_since: datetime | None, notes: list[str]) -> bytes:
    root = etree.Element(f"{{{VOSI_AVAIL}}}availability", nsmap={"vosi": VOSI_AVAIL})
    sub(root, f"{{{VOSI_AVAIL}}}available", "true" if available else "false")
    if up_since is not None:
        sub(root, f"{{{VOSI_AVAIL}}}upSince", up_since.strftime("%Y-%m-%dT%H:%M:%SZ"))
    for note in notes:
        sub(root, f"{{{VOSI_AVAIL}}}note", note)
    return serialize(root)
