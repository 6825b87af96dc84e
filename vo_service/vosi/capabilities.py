"""VOSI ``/capabilities``: a service lists its protocol capability plus the VOSI ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lxml import etree

from vo_service.xml import NSMAP, TR, VOSI_CAP, serialize, sub, xsi_type

CapabilityBuilder = Callable[[etree._Element], None]


def vosi_capability(
    parent: etree._Element, standard_id: str, url: str, version: str | None = None
) -> None:
    cap = sub(parent, "capability", standardID=standard_id)
    interface = sub(cap, "interface", version=version)
    xsi_type(interface, "vs:ParamHTTP")
    sub(interface, "accessURL", url, use="full")


def capabilities(
    base_url: str, builders: Sequence[CapabilityBuilder], *, examples: bool = False
) -> bytes:
    """Protocol capabilities first, then capabilities, availability and tables."""
    root = etree.Element(f"{{{VOSI_CAP}}}capabilities", nsmap={"vosi": VOSI_CAP, "tr": TR, **NSMAP})
    for build in builders:
        build(root)
    vosi_capability(root, "ivo://ivoa.net/std/VOSI#capabilities", f"{base_url}/capabilities")
    vosi_capability(root, "ivo://ivoa.net/std/VOSI#availability", f"{base_url}/availability")
    vosi_capability(root, "ivo://ivoa.net/std/VOSI#tables-1.1", f"{base_url}/tables", "1.1")
    if examples:
        cap = sub(root, "capability", standardID="ivo://ivoa.net/std/DALI#examples")
        interface = sub(cap, "interface")
        xsi_type(interface, "vr:WebBrowser")
        sub(interface, "accessURL", f"{base_url}/examples", use="full")
    return serialize(root)
