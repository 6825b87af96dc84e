"""Load raw frames into ``archive.frames``: checked, hashed, classified, COPYed in batches.

Guarantees the rest of the service relies on:
- idempotent: a file already ingested with the same content is skipped; a changed file
  (new checksum at a known path) replaces its row; the same bytes under a second path are
  reported as a duplicate and not ingested twice;
- all or nothing per file: a file is inspected completely (structure, every HDU's data
  present, a usable header) before anything is written, and each batch is one
  transaction, so no half-ingested frame is ever visible;
- rejected files land in ``internal.quarantine`` with the reason, never in the archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from astropy.io import fits
from psycopg import sql
from tqdm import tqdm

from ingest.classify import Classification, ClassificationError, classify, header_to_json, now_utc
from vo_service.metadata import catalog

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
BATCH_SIZE = 200


class RejectedFile(Exception):
    """A file that cannot become a frame; the message is the recorded reason."""


@dataclass(frozen=True)
class Inspected:
    path: Path
    size: int
    sha256: str
    classification: Classification | None = None
    header: dict | None = None
    reason: str | None = None


@dataclass
class IngestReport:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.new)} new, {len(self.changed)} changed, {len(self.unchanged)} "
            f"unchanged, {len(self.duplicates)} duplicate, "
            f"{len(self.quarantined)} quarantined"
        )


def discover(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line are taken as they are; directories give FITS files."""
    found: list[Path] = []
    for path in paths:
        path = Path(path).resolve()
        if path.is_dir():
            for root, _dirs, files in os.walk(path):
                found.extend(Path(root, f) for f in files if f.lower().endswith(FITS_SUFFIXES))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return sorted(set(found))


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _check_structure(path: Path, size: int) -> fits.Header:
    """Open every HDU and check its data is all there; returns the primary header."""
    if path.name.lower().endswith(".gz"):
        size = -1  # compressed: sizes on disk say nothing about the HDUs
    with warnings.catch_warnings():
        warnings.simplefilter("error", fits.verify.VerifyWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                if len(hdul) == 0:
                    raise RejectedFile("not a FITS file: no HDU found")
                for index in range(len(hdul)):
                    info = hdul.fileinfo(index)
                    # The padded span, as the standard requires: a file still being
                    # written or cut short in transfer fails here, not in a reduction.
                    if size >= 0 and info["datLoc"] + info["datSpan"] > size:
                        raise RejectedFile(
                            f"truncated: HDU {index} needs {info['datSpan']} data bytes at "
                            f"offset {info['datLoc']}, the file has {size} bytes"
                        )
                return hdul[0].header.copy()
        except RejectedFile:
            raise
        except (
            OSError,
            ValueError,
            TypeError,
            IndexError,
            KeyError,
            fits.verify.VerifyError,
            fits.verify.VerifyWarning,
        ) as exc:
            text = str(exc).strip()
            message = text.splitlines()[0] if text else type(exc).__name__
            raise RejectedFile(f"not a readable FITS file: {message}") from None


def inspect(path: Path) -> Inspected:
    """Everything about one file, decided before anything is written."""
    size, sha = _sha256(path)
    try:
        if size == 0:
            raise RejectedFile("empty file")
        header = _check_structure(path, size)
        try:
            classification = classify(header)
        except ClassificationError as exc:
            raise RejectedFile(f"unusable header: {exc}") from None
        return Inspected(path, size, sha, classification, header_to_json(header))
    except RejectedFile as exc:
        return Inspected(path, size, sha, reason=str(exc))


# Columns the loader fills from the file; the database derives the rest (id, release).
_DERIVED = frozenset({"frame_id", "release_date", "release_fixed"})
_FRAME_COLUMNS = [
    c.name for c in catalog().table("archive.frames").columns if c.name not in _DERIVED
]


def _frame_row(item: Inspected) -> tuple:
    assert item.classification is not None and item.header is not None
    values = asdict(item.classification)
    pos = None
    if values["ra"] is not None and values["dec"] is not None:
        pos = f"({values['ra']!r}d,{values['dec']!r}d)"
    values.update(
        obs_id=item.path.name.split(".")[0],
        file_name=item.path.name,
        path=str(item.path),
        file_size=item.size,
        sha256=item.sha256,
        pos=pos,
        ingested_at=now_utc(),
        header=json.dumps(item.header, allow_nan=False),
    )
    return tuple(values[name] for name in _FRAME_COLUMNS)


def _write_batch(
    conn: psycopg.Connection, batch: Sequence[Inspected], report: IngestReport
) -> None:
    paths = [str(i.path) for i in batch]
    shas = [i.sha256 for i in batch]
    with conn.transaction():
        known = conn.execute(
            "SELECT path, sha256 FROM archive.frames WHERE path = ANY(%s) OR sha256 = ANY(%s)",
            [paths, shas],
        ).fetchall()
        sha_at_path = {p: s for p, s in known}
        path_of_sha = {s: p for p, s in known}
        rows: list[tuple] = []
        seen: dict[str, str] = {}
        outcome: list[tuple[list, object]] = []
        for item in batch:
            path = str(item.path)
            if item.reason is not None:
                conn.execute(
                    "INSERT INTO internal.quarantine (path, sha256, file_size, reason, "
                    "quarantined_at) VALUES (%s, %s, %s, %s, now()) ON CONFLICT (path, sha256) "
                    "DO UPDATE SET reason = excluded.reason, quarantined_at = now()",
                    [path, item.sha256, item.size, item.reason],
                )
                # The file at this path no longer holds the frame that was ingested.
                conn.execute("DELETE FROM archive.frames WHERE path = %s", [path])
                outcome.append((report.quarantined, (path, item.reason)))
                continue
            if sha_at_path.get(path) == item.sha256:
                outcome.append((report.unchanged, path))
                continue
            other = path_of_sha.get(item.sha256) or seen.get(item.sha256)
            if other is not None and other != path:
                outcome.append((report.duplicates, (path, other)))
                continue
            seen[item.sha256] = path
            rows.append(_frame_row(item))
            outcome.append((report.changed if path in sha_at_path else report.new, path))
        if rows:
            _copy_frames(conn, rows)
        clean = [str(i.path) for i in batch if i.reason is None]
        if clean:
            conn.execute("DELETE FROM internal.quarantine WHERE path = ANY(%s)", [clean])
    for bucket, value in outcome:
        bucket.append(value)


def _copy_frames(conn: psycopg.Connection, rows: list[tuple]) -> None:
    """COPY into a staging table, then one upsert: fast, and a changed file keeps its id."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in _FRAME_COLUMNS)
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS frames_stage ON COMMIT DELETE ROWS AS "
            "SELECT {} FROM archive.frames WITH NO DATA"
        ).format(columns)
    )
    with conn.cursor().copy(sql.SQL("COPY frames_stage ({}) FROM STDIN").format(columns)) as copy:
        for row in rows:
            copy.write_row(row)
    updates = sql.SQL(", ").join(
        sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in _FRAME_COLUMNS
        if c != "path"
    )
    release = sql.SQL("auth.release_date_for(frame_type, date_obs, proposal_id)")
    conn.execute(
        sql.SQL(
            "INSERT INTO archive.frames ({cols}, release_date) SELECT {cols}, {release} "
            "FROM frames_stage ON CONFLICT (path) DO UPDATE SET {updates}, release_date = "
            "CASE WHEN frames.release_fixed THEN frames.release_date "
            "ELSE excluded.release_date END"
        ).format(cols=columns, updates=updates, release=release)
    )


def _batches(items: Iterator[Inspected], size: int) -> Iterator[list[Inspected]]:
    batch: list[Inspected] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ingest(
    conn: psycopg.Connection,
    paths: Iterable[Path],
    *,
    progress: bool | None = None,
    workers: int = 2,
) -> IngestReport:
    """Ingest files and directories; ``progress=None`` shows a bar only on a terminal."""
    # tqdm's disable=None means: draw only when stderr is a terminal.
    files = discover(paths)
    report = IngestReport()
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(
            total=len(files),
            unit="file",
            desc="ingest",
            disable=None if progress is None else not progress,
        ) as bar,
    ):
        for batch in _batches(pool.map(inspect, files), BATCH_SIZE):
            _write_batch(conn, batch, report)
            bar.update(len(batch))
    return report
