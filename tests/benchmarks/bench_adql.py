"""Time the ADQL front end: parse and translate over the corpus and our own queries.

Run ``python tests/benchmarks/bench_adql.py``; targets: median ≤ 1 ms, p95 ≤ 5 ms per
query. The corpus names tables we do not have, so its queries are timed with ``parse``
and with ``translate`` (which then stops at name resolution); EXECUTABLE_QUERIES from
``tests/test_adql.py`` are translated completely against the real catalogue.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path[:0] = [str(HERE.parents[2]), str(HERE.parents[1])]

from test_adql import EXECUTABLE_QUERIES, UPLOADS  # noqa: E402
from test_adql_corpus import corpus_path  # noqa: E402

from vo_service.adql import ADQLError, parse, translate  # noqa: E402
from vo_service.metadata import catalog  # noqa: E402

REPEAT = 20


def per_query_ms(queries: list[str], run: Callable[[str], object]) -> list[float]:
    """Best of REPEAT runs per query, in milliseconds (the best damps scheduler noise)."""
    times = []
    for query in queries:
        best = float("inf")
        for _ in range(REPEAT):
            start = time.perf_counter()
            with contextlib.suppress(ADQLError):
                run(query)
            best = min(best, time.perf_counter() - start)
        times.append(best * 1000)
    return times


def report(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"{label:<44} n={len(times):<4} median {statistics.median(times):6.3f} ms   "
          f"p95 {p95:6.3f} ms   max {max(times):6.3f} ms")  # fmt: skip


def main() -> None:
    cat = catalog()
    translate("SELECT * FROM archive.frames", cat)  # build the parser before timing
    path = corpus_path()
    if path.is_file():
        corpus = [case["adql"] for case in json.loads(path.read_text())]
        report("corpus: parse", per_query_ms(corpus, parse))
        report("corpus: translate (imaginary tables)", per_query_ms(
            corpus, lambda q: translate(q, cat, max_rows=1001)))  # fmt: skip
    else:
        print(f"(corpus not found at {path})")
    own = per_query_ms(
        EXECUTABLE_QUERIES, lambda q: translate(q, cat, uploads=UPLOADS, max_rows=1001)
    )
    report("own queries: translate", own)


if __name__ == "__main__":
    main()
