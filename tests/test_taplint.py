"""STILTS taplint, the reference TAP validator, against the live test server."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from ingest.simulate import NightSummary

_CODE = re.compile(r"^([EWF])-([A-Z]{3})-(\w{4})-\d+\s+(.*)$")


@pytest.fixture(scope="module")
def taplint_report(tap_url: str, night: NightSummary) -> dict[str, list[str]]:
    stilts = shutil.which("stilts")
    assert stilts, "stilts is installed by deploy/bootstrap.sh"
    proc = subprocess.run(
        [stilts, "taplint", f"tapurl={tap_url}", "report=EWF", "maxtable=20"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    found: dict[str, list[str]] = {"E": [], "W": [], "F": []}
    for line in proc.stdout.splitlines():
        match = _CODE.match(line)
        if match:
            found[match.group(1)].append(line)
    print("\n".join(found["E"] + found["F"] + found["W"]))
    print(
        f"taplint: {len(found['E'])} errors, {len(found['W'])} warnings, {len(found['F'])} failures"
    )
    return found


def test_taplint_reports_no_errors(taplint_report: dict[str, list[str]]) -> None:
    assert taplint_report["E"] == []


def test_taplint_reports_no_failed_stages(taplint_report: dict[str, list[str]]) -> None:
    # F_NOUP (no upload declared) is the one stage we may skip until uploads exist.
    assert [f for f in taplint_report["F"] if "NOUP" not in f] == []
