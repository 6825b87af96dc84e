"""UWS jobs as the engine and the documents see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PENDING, QUEUED, EXECUTING = "PENDING", "QUEUED", "EXECUTING"
COMPLETED, ERROR, ABORTED = "COMPLETED", "ERROR", "ABORTED"
HELD, SUSPENDED, UNKNOWN, ARCHIVED = "HELD", "SUSPENDED", "UNKNOWN", "ARCHIVED"
PHASES = (PENDING, QUEUED, EXECUTING, COMPLETED, ERROR, ABORTED, UNKNOWN, HELD, SUSPENDED, ARCHIVED)
ACTIVE = frozenset({PENDING, QUEUED, EXECUTING})
FINAL = frozenset({COMPLETED, ERROR, ABORTED, ARCHIVED})


def isoformat(moment: datetime | None) -> str:
    """UWS 1.1 instants: UTC with a trailing Z and milliseconds (UWS-M7)."""
    if moment is None:
        return ""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> datetime:
    """ISO 8601 as clients send it (with Z, an offset, or naive meaning UTC)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Result:
    id: str
    file: str
    mime_type: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file, "mime-type": self.mime_type, "size": self.size}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Result:
        return cls(raw["id"], raw["file"], raw["mime-type"], int(raw["size"]))


@dataclass(frozen=True)
class Parameter:
    name: str
    value: str
    by_reference: bool = False


@dataclass(frozen=True)
class Job:
    job_id: str
    job_type: str
    owner: str | None
    run_id: str | None
    phase: str
    creation_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    execution_duration: int
    destruction: datetime | None
    parameters: tuple[Parameter, ...] = ()
    error_summary: str | None = None
    error_type: str | None = None
    results: tuple[Result, ...] = field(default=())
    attempts: int = 0

    def parameter(self, name: str) -> str | None:
        """Last value of a parameter, names compared case-insensitively."""
        found = [p.value for p in self.parameters if p.name.upper() == name.upper()]
        return found[-1] if found else None

    def parameter_values(self, name: str) -> list[str]:
        return [p.value for p in self.parameters if p.name.upper() == name.upper()]
