"""Throughput and peak memory of the result writers on a frames-like table.

Run as ``python tests/benchmarks/bench_votable.py [rows]`` (default 1,000,000). Each
format runs in a fresh subprocess so that peak RSS (``ru_maxrss``) belongs to it alone;
rows arrive in 10,000-row batches of psycopg-like tuples, as from the server-side cursor,
and the output is counted and dropped, as a streaming response would. Peak RSS growth is
measured after a 10-row warm-up, so one-time initialisation (Arrow's compute kernels,
about 45 MB per process) is not counted against every result. astropy's VOTable writer
runs on 100,000 rows for comparison (it needs the whole table in memory).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vo_service.metadata import Column  # noqa: E402
from vo_service.votable import writer_for  # noqa: E402

BATCH = 10_000
DISTINCT_BATCHES = 5  # cycled, so that generating rows does not dominate the run
FORMATS = ["votable/b2", "votable/bin", "votable/td", "csv", "tsv", "parquet"]

FIELDS = [
    Column("frame_id", "long", ucd="meta.id;meta.main"),
    Column("obs_id", "char", "*", ucd="meta.id"),
    Column("file_size", "long", unit="byte"),
    Column("frame_type", "char", "*"),
    Column("object", "char", "*", ucd="meta.id;src"),
    Column("instrument", "char", "*"),
    Column("binning_x", "int", unit="pix"),
    Column("binning_y", "int", unit="pix"),
    Column("naxis1", "int", unit="pix"),
    Column("naxis2", "int", unit="pix"),
    Column("exptime", "double", unit="s", ucd="time.duration;obs.exposure"),
    Column("mjd_obs", "double", unit="d", ucd="time.epoch"),
    Column("ra", "double", unit="deg", ucd="pos.eq.ra"),
    Column("dec", "double", unit="deg", ucd="pos.eq.dec"),
    Column("airmass", "float", ucd="obs.airMass"),
    Column("date_obs", "char", "*", xtype="timestamp", ucd="time.start"),
    Column("pos", "double", "2", xtype="point", unit="deg", ucd="pos.eq"),
    Column("ingested_at", "char", "*", xtype="timestamp"),
]


def make_batch(seed: int) -> list[tuple[object, ...]]:
    """Rows shaped like psycopg's: Python scalars, datetimes, lists; ~10 % NULLs in some."""
    rng = random.Random(seed)
    start = dt.datetime(2024, 3, 1, 18, 0, 0)
    kinds = ["BIAS", "FLAT", "ARC", "SCIENCE", "DARK"]
    objects = ["NGC 1275", "M 31", "Vega", "HD 12345", "twilight", None]
    rows = []
    for i in range(BATCH):
        fid = seed * BATCH + i
        ra, dec = rng.uniform(0, 360), rng.uniform(-90, 90)
        missing = rng.random() < 0.1
        rows.append((
            fid, f"r{fid:08d}", rng.randrange(10**6, 10**8), rng.choice(kinds),
            rng.choice(objects), "SPECTRO", 1, rng.choice((1, 2)), 2048, 4096,
            rng.uniform(0, 1800), 60000 + fid / 1e4, None if missing else ra,
            None if missing else dec, None if missing else rng.uniform(1, 3),
            start + dt.timedelta(seconds=fid * 37.123),
            None if missing else [ra, dec],
            start + dt.timedelta(days=1, microseconds=fid * 1001),
        ))  # fmt: skip
    return rows


def _rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() // 1024


def run_format(fmt: str, nrows: int) -> dict[str, object]:
    batches = [make_batch(s) for s in range(DISTINCT_BATCHES)]
    warm = writer_for(fmt)  # one-time costs (Arrow's compute registry: ~45 MB) not counted
    warm.head(FIELDS)
    warm.rows(batches[0][:10])
    warm.tail()
    before = _rss_kib()
    writer = writer_for(fmt)
    size = 0
    t0 = time.perf_counter()
    size += len(writer.head(FIELDS, infos=[("QUERY", "SELECT * FROM archive.frames")]))
    for i in range(nrows // BATCH):
        size += len(writer.rows(batches[i % DISTINCT_BATCHES]))
    size += len(writer.tail(overflow=True))
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"format": fmt, "rows": nrows, "seconds": elapsed, "rows_per_s": nrows / elapsed,
            "mb_out": size / 1e6, "peak_rss_growth_mb": max(0, peak - before) / 1024}  # fmt: skip


def run_astropy(nrows: int) -> dict[str, object]:
    import numpy as np
    from astropy.io.votable import from_table
    from astropy.table import MaskedColumn, Table

    batches = [make_batch(s) for s in range(DISTINCT_BATCHES)]
    rows = [r for i in range(nrows // BATCH) for r in batches[i % DISTINCT_BATCHES]]
    before = _rss_kib()
    t0 = time.perf_counter()
    table = Table()
    for j, field in enumerate(FIELDS):
        values = [r[j] for r in rows]
        if field.xtype == "timestamp":
            values = [v.isoformat("T", "milliseconds") for v in values]
        if field.xtype == "point":
            mask = np.array([v is None for v in values])
            data = np.array([(np.nan, np.nan) if v is None else v for v in values])
            table[field.name] = MaskedColumn(data, mask=np.repeat(mask[:, None], 2, axis=1))
            continue
        mask = np.array([v is None for v in values])
        filled = [("" if field.datatype == "char" else 0) if v is None else v for v in values]
        table[field.name] = MaskedColumn(filled, mask=mask, unit=field.unit)
    vot = from_table(table)
    vot.resources[0].tables[0].format = "binary2"
    out = io.BytesIO()
    vot.to_xml(out)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"format": "astropy votable binary2", "rows": nrows, "seconds": elapsed,
            "rows_per_s": nrows / elapsed, "mb_out": len(out.getvalue()) / 1e6,
            "peak_rss_growth_mb": max(0, peak - before) / 1024}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        fmt, nrows = sys.argv[2], int(sys.argv[3])
        result = run_astropy(nrows) if fmt == "astropy" else run_format(fmt, nrows)
        print(json.dumps(result))
        return
    nrows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    jobs = [(fmt, nrows) for fmt in FORMATS] + [("astropy", min(nrows, 100_000))]
    print(
        f"{'format':<26}{'rows':>10}{'seconds':>9}{'rows/s':>11}{'MB out':>9}{'peak RSS +MB':>14}"
    )
    for fmt, n in jobs:
        proc = subprocess.run([sys.executable, __file__, "--one", fmt, str(n)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{r['format']:<26}{r['rows']:>10,}{r['seconds']:>9.2f}{r['rows_per_s']:>11,.0f}"
            f"{r['mb_out']:>9.1f}{r['peak_rss_growth_mb']:>14.1f}"
        )


if __name__ == "__main__":
    main()
