"""The TAPRegExt capability: what the ADQL front end, writers and limits really offer."""

from __future__ import annotations

from lxml import etree

from vo_service import adql, votable
from vo_service.config import Settings
from vo_service.vosi.capabilities import CapabilityBuilder
from vo_service.xml import sub, xsi_type

ADQL_VERSIONS = (("2.0", "ivo://ivoa.net/std/ADQL#v2.0"), ("2.1", "ivo://ivoa.net/std/ADQL#v2.1"))
SECURITY_METHODS = (
    "ivo://ivoa.net/sso#BasicAA",
    "ivo://ivoa.net/sso#token",
    "ivo://ivoa.net/sso#cookie",
)
LANGUAGES = frozenset({"ADQL", *(f"ADQL-{v}" for v, _ in ADQL_VERSIONS)})


def tap_capability(base_url: str, settings: Settings) -> CapabilityBuilder:
    def build(root: etree._Element) -> None:
        cap = sub(root, "capability", standardID="ivo://ivoa.net/std/TAP")
        xsi_type(cap, "tr:TableAccess")
        interface = sub(cap, "interface", role="std", version="1.1")
        xsi_type(interface, "vs:ParamHTTP")
        sub(interface, "accessURL", base_url, use="base")
        # TAP-M2: every method works on the same URLs; no credentials means anonymous.
        sub(interface, "securityMethod")
        for method in SECURITY_METHODS:
            sub(interface, "securityMethod", standardID=method)
        language = sub(cap, "language")
        sub(language, "name", "ADQL")
        for version, ivo_id in ADQL_VERSIONS:
            sub(language, "version", version, **{"ivo-id": ivo_id})
        sub(language, "description", "ADQL 2.1 translated to PostgreSQL with pgsphere.")
        for feature_type, forms in adql.LANGUAGE_FEATURES.items():
            features = sub(language, "languageFeatures", type=feature_type)
            for form in forms:
                feature = sub(features, "feature")
                sub(feature, "form", form)
        for fmt in votable.FORMATS:
            output = sub(cap, "outputFormat", **({"ivo-id": fmt.ivo_id} if fmt.ivo_id else {}))
            sub(output, "mime", fmt.mime)
            for alias in fmt.aliases:
                sub(output, "alias", alias)
        for method in ("inline", "http", "https"):
            sub(cap, "uploadMethod", **{"ivo-id": f"ivo://ivoa.net/std/TAPRegExt#upload-{method}"})
        retention = str(int(settings.async_retention_days * 86400))
        period = sub(cap, "retentionPeriod")
        sub(period, "default", retention)
        sub(period, "hard", retention)
        execution = sub(cap, "executionDuration")
        sub(execution, "default", str(int(settings.async_timeout_s)))
        sub(execution, "hard", str(int(settings.async_timeout_s)))
        limit = sub(cap, "outputLimit")
        sub(limit, "default", str(settings.sync_maxrec), unit="row")
        sub(limit, "hard", str(settings.hard_maxrec), unit="row")
        upload_limit = sub(cap, "uploadLimit")
        sub(upload_limit, "default", str(settings.upload_limit_bytes), unit="byte")
        sub(upload_limit, "hard", str(settings.upload_limit_bytes), unit="byte")

    return build
