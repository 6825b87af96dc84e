"""Parse-only agreement with the IVOA ADQL test corpus (lyonetia, public part).

The corpus names imaginary tables and UDFs, so only grammar and structure are checked; the
file lives beside the repository (``../shared``) or under ``$VO_SERVICE_SHARED``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vo_service.adql import ADQLError, parse

REQUIRED_AGREEMENT = 0.98


def corpus_path() -> Path:
    shared = os.environ.get("VO_SERVICE_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared"
    return base / "adql" / "lyonetia-public.json"


def test_corpus_agreement() -> None:
    path = corpus_path()
    if not path.is_file():
        pytest.skip(f"ADQL corpus not found at {path}")
    cases = json.loads(path.read_text())
    disagreements = []
    for case in cases:
        try:
            parse(case["adql"])
            accepted, why = True, "accepted"
        except ADQLError as exc:
            accepted, why = False, str(exc)
        if accepted != case["valid"]:
            disagreements.append((case, why))
    for case, why in disagreements:
        expected = "valid" if case["valid"] else "invalid"
        print(f"\n[{case['file']}] {case['description']} (corpus: {expected}; we: {why})")
        print("    " + case["adql"].replace("\n", "\n    "))
    agreement = 1 - len(disagreements) / len(cases)
    print(f"\nagreement {agreement:.1%} over {len(cases)} queries")
    assert agreement >= REQUIRED_AGREEMENT
