"""Python values of one result column → numpy arrays and byte buffers.

Every serialisation needs the same few shapes, so conversion is written once here:
numeric scalars become one typed array plus a NULL mask (a single numpy call when the
column has no NULLs), arrays become flat elements plus per-row lengths, strings become one
buffer plus lengths (one ``encode`` for the whole column), timestamps an ASCII matrix
computed field-wise by numpy. What remains per value is a C-level call (``len``, an
iterator step, a datetime's pickle state), never Python-level formatting.
"""

from __future__ import annotations

import gc
import operator
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from itertools import chain

import numpy as np

from vo_service.metadata import Column

_DTYPES = {
    "boolean": np.dtype(np.bool_),
    "unsignedByte": np.dtype(np.uint8),
    "short": np.dtype(np.int16),
    "int": np.dtype(np.int32),
    "long": np.dtype(np.int64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
}
# In-band NULLs for integers where VOTable has no flag (BINARY; TABLEDATA fixed arrays),
# declared in <VALUES null=…>: the most negative value of the type, 255 for unsignedByte.
INT_NULLS = {"unsignedByte": 255, "short": -(2**15), "int": -(2**31), "long": -(2**63)}
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a batch is encoded.

    The transposed columns are large young tuples; every young-generation collection,
    set off by per-row temporaries, would walk all their items again (measured: ~15 % of
    BINARY2 time). Encoding creates no reference cycles, so nothing is lost by waiting.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Kind(Enum):
    SCALAR = "scalar"  # one number or boolean
    ARRAY = "array"  # numeric/boolean array, fixed or variable
    STRING = "string"  # char / unicodeChar array (incl. timestamps)


@dataclass(frozen=True, slots=True)
class Cell:
    """How one FIELD is encoded; derived once per result from its Column."""

    column: Column
    kind: Kind
    dtype: np.dtype | None  # element type of scalars and arrays
    count: int | None  # fixed elements (code units for strings) per cell; None: variable
    unicode: bool = False  # unicodeChar: UTF-16 code units instead of UTF-8 bytes
    timestamp: bool = False
    limit: int | None = None  # strings: most characters allowed ("n" and "n*")

    @property
    def name(self) -> str:
        return self.column.name

    @property
    def iso_fast(self) -> bool:
        """Timestamps that ``iso_matrix`` may write: 23 ASCII bytes, nothing to cut."""
        free = self.count is None and (self.limit is None or self.limit >= _ISO_WIDTH)
        return self.timestamp and not self.unicode and free


def columns_of(batch: Sequence[Sequence[object]], width: int) -> list[tuple[object, ...]]:
    """A batch of rows as columns, checked against the number of FIELDs."""
    columns = list(zip(*batch, strict=True)) if width else []
    if len(columns) != width:
        raise ValueError(f"rows have {len(columns)} values for {width} fields")
    return columns


def _arraysize(arraysize: str, name: str) -> tuple[int | None, int | None, bool]:
    """Fixed element count (None if variable), upper bound, and whether it is multi-dim."""
    dims = arraysize.replace(" ", "").split("x")
    try:
        size = int(np.prod([int(d) for d in dims[:-1]], dtype=np.int64))
        last = dims[-1]
        if last.endswith("*"):
            bound = size * int(last[:-1]) if last[:-1] else None
            return None, bound, len(dims) > 1
        return size * int(last), size * int(last), len(dims) > 1
    except ValueError:
        raise ValueError(f"column {name!r}: bad arraysize {arraysize!r}") from None


def plan(column: Column) -> Cell:
    """Classify a column; unsupported declarations fail here, before any byte is sent."""
    if column.datatype in ("char", "unicodeChar"):
        count, limit, multi = _arraysize(column.arraysize or "1", column.name)
        if multi:
            raise ValueError(f"column {column.name!r}: arrays of strings are not supported")
        unicode = column.datatype == "unicodeChar"
        timestamp = column.xtype == "timestamp"
        return Cell(column, Kind.STRING, None, count, unicode, timestamp, limit)
    dtype = _DTYPES.get(column.datatype)
    if dtype is None:
        raise ValueError(f"column {column.name!r}: unsupported datatype {column.datatype!r}")
    if column.arraysize in (None, "1"):  # "1" is written as a scalar (see document.field)
        return Cell(column, Kind.SCALAR, dtype, 1)
    count, _, _ = _arraysize(column.arraysize, column.name)
    return Cell(column, Kind.ARRAY, dtype, count)


# --- numbers -----------------------------------------------------------------------------


def numbers(values: Sequence[object], cell: Cell) -> tuple[np.ndarray, np.ndarray | None]:
    """Scalars as one native-order array; NULLs are NaN (floats) or 0, flagged in the mask."""
    dtype = cell.dtype
    assert dtype is not None
    n = len(values)
    if dtype.kind == "f":
        try:
            data = np.fromiter(values, dtype, n)  # type: ignore[arg-type]
        except TypeError:  # NULLs: np.array makes them NaN
            data = np.array(values, dtype=dtype)
        nulls = np.isnan(data)
        return data, (nulls if nulls.any() else None)
    if None not in values:
        return np.fromiter(values, dtype, n), None  # type: ignore[arg-type]
    nulls = np.fromiter((v is None for v in values), bool, n)
    return np.array([0 if v is None else v for v in values], dtype=dtype), nulls


def arrays(
    values: Sequence[object], cell: Cell
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Array cells as flat elements plus per-row element counts.

    A NULL cell has no elements when the arraysize is variable and is filled with NaN/0
    when it is fixed, so the flat array always lines up with the lengths. NULL elements
    inside an array become NaN (floats) or 0 (integers: VOTable cannot flag them).
    """
    dtype = cell.dtype
    assert dtype is not None
    n = len(values)
    nulls: np.ndarray | None = np.fromiter((v is None for v in values), bool, n)
    assert nulls is not None
    rows: Sequence[object] = values
    if nulls.any():
        blank = () if cell.count is None else (_fill(dtype),) * cell.count
        rows = [blank if v is None else v for v in values]
    else:
        nulls = None
    if isinstance(next((v for v in values if v is not None), None), str | bytes):
        raise ValueError(
            f"column {cell.name!r}: array values must be sequences of numbers, "
            "not text (is the geometry type adapted to lists?)"
        )
    try:
        lengths = np.fromiter(map(len, rows), np.int64, n)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"column {cell.name!r}: array values must be sequences") from None
    if cell.count is not None and n and (lengths != cell.count).any():
        raise ValueError(f"column {cell.name!r}: every value needs {cell.count} elements")
    total = int(lengths.sum())
    try:
        flat = np.fromiter(chain.from_iterable(rows), dtype, total)  # type: ignore[arg-type]
    except TypeError:
        fill = _fill(dtype)
        elements = chain.from_iterable(rows)  # type: ignore[arg-type]
        flat = np.fromiter((fill if x is None else x for x in elements), dtype, total)
    return flat, lengths, nulls


def _fill(dtype: np.dtype) -> object:
    return float("nan") if dtype.kind == "f" else False if dtype.kind == "b" else 0


# --- strings -----------------------------------------------------------------------------


def _iso(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat("T", "milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ISO_WIDTH = 23  # YYYY-MM-DDThh:mm:ss.sss


def iso_matrix(values: Sequence[object]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Datetimes as an (n, 23) ASCII matrix ``YYYY-MM-DDThh:mm:ss.sss`` (UTC), NULL mask.

    ``isoformat`` costs about 1 µs a value, most of a row's budget. Instead the calendar
    fields are taken in bulk, then turned into digits by numpy: naive datetimes through
    their pickle state (ten bytes: year, month, day, h, m, s, µs; one C call a value),
    aware ones as UTC epoch milliseconds split by civil-from-days. Returns None unless the
    column holds only datetimes, all naive or all aware (as a PostgreSQL column does);
    the caller then formats value by value.
    """
    first = next((v for v in values if v is not None), None)
    if type(first) is not datetime:
        return None
    nulls = None
    present: Sequence[datetime] = values  # type: ignore[assignment]
    if None in values:
        nulls = np.fromiter((v is None for v in values), bool, len(values))
        present = [v for v in values if v is not None]  # type: ignore[misc]
    try:
        fields = _naive_fields(present) if first.tzinfo is None else _aware_fields(present)
    except (TypeError, AttributeError):  # a date, a string, naive and aware mixed
        return None
    if fields is None:
        return None
    rows = _digits(*fields)
    if nulls is None:
        return rows, None
    out = np.zeros((len(values), _ISO_WIDTH), np.uint8)
    out[~nulls] = rows
    return out, nulls


def _digits(
    year: np.ndarray,
    month: np.ndarray,
    day: np.ndarray,
    hour: np.ndarray,
    minute: np.ndarray,
    second: np.ndarray,
    millis: np.ndarray,
) -> np.ndarray:
    """ASCII digits, filled field-major (contiguous rows) and transposed once at the end."""
    t = np.empty((_ISO_WIDTH, len(year)), np.uint8)
    high, low = np.divmod(year, 100)
    t[0], t[1] = np.divmod(high, 10)
    t[2], t[3] = np.divmod(low, 10)
    for start, field in ((5, month), (8, day), (11, hour), (14, minute), (17, second)):
        t[start], t[start + 1] = np.divmod(field, 10)
    t[20], rest = np.divmod(millis, 100)
    t[21], t[22] = np.divmod(rest, 10)
    t += ord("0")
    t[4] = t[7] = ord("-")
    t[10] = ord("T")
    t[13] = t[16] = ord(":")
    t[19] = ord(".")
    return np.ascontiguousarray(t.T)


_STATE_ARGS = operator.itemgetter(1)
_STATE_BYTES = operator.itemgetter(0)


def _naive_fields(present: Sequence[datetime]) -> list[np.ndarray] | None:
    # datetime.__reduce__() is (datetime, (state,)) with a 10-byte big-endian state
    raw = b"".join(map(_STATE_BYTES, map(_STATE_ARGS, map(datetime.__reduce__, present))))
    if len(raw) != 10 * len(present):
        return None
    state = np.frombuffer(raw, np.uint8).reshape(-1, 10).T
    micro = (state[7].astype(np.uint32) << 16) | (state[8].astype(np.uint32) << 8) | state[9]
    return [(state[0].astype(np.uint16) << 8) | state[1], *state[2:7], micro // 1000]


def _aware_fields(present: Sequence[datetime]) -> list[np.ndarray] | None:
    ms = np.array([(v - _EPOCH_UTC) // _MS for v in present], np.int64)
    return epoch_ms_fields(ms)


def epoch_ms_fields(ms: np.ndarray) -> list[np.ndarray] | None:
    """Calendar fields of UTC milliseconds since 1970; None outside years 0001–9999."""
    days, ms_of_day = np.divmod(ms, 86_400_000)
    # Howard Hinnant's civil_from_days, vectorised
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    if year.size and (year.min() < 1 or year.max() > 9999):
        return None
    seconds, millis = np.divmod(ms_of_day, 1000)
    hour, rest = np.divmod(seconds, 3600)
    minute, second = np.divmod(rest, 60)
    return [year, month, day, hour, minute, second, millis]


def iso_digits(fields: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 23) ASCII ``YYYY-MM-DDThh:mm:ss.sss`` from calendar fields."""
    return _digits(*fields)


def iso_strings(matrix: np.ndarray, nulls: np.ndarray | None) -> list[str | None]:
    strs: list[str | None] = matrix.view(f"S{_ISO_WIDTH}").ravel().astype(f"U{_ISO_WIDTH}").tolist()
    if nulls is not None:
        for i in np.flatnonzero(nulls).tolist():
            strs[i] = None
    return strs


def texts(
    values: Sequence[object], cell: Cell, *, votable: bool = False
) -> tuple[Sequence[str | None], str]:
    """Values of a char column as ``str``/None, plus their concatenation (for fast checks).

    Timestamps become DALI ``YYYY-MM-DDThh:mm:ss.sss`` in UTC without offset; dates stay
    date-only (DALI allows it); anything not a ``str`` is passed through ``str()``. For
    ``votable``, ``char`` becomes ASCII (each other character a ``?``) and ``unicodeChar``
    BMP-only (others U+FFFD), as VOTable 1.4 defines them (astropy refuses anything else),
    and values longer than a declared ``n`` or ``n*`` are cut to it: one character is
    then one storage unit, so the cut is at a character boundary.
    """
    if cell.timestamp:
        fast = iso_matrix(values) if cell.iso_fast else None
        strs: Sequence[str | None] = iso_strings(*fast) if fast else list(map(_iso, values))
    else:
        strs = values  # type: ignore[assignment]
    try:
        joined = "".join(filter(None, strs))  # type: ignore[arg-type]
    except TypeError:
        strs = [None if v is None else str(v) for v in strs]
        joined = "".join(filter(None, strs))  # type: ignore[arg-type]
    if not votable:
        return strs, joined
    if not joined.isascii():
        if not cell.unicode:
            strs = [None if s is None else s.encode("ascii", "replace").decode() for s in strs]
        elif max(joined) > "\uffff":
            strs = [None if s is None else _NON_BMP.sub("\ufffd", s) for s in strs]
        joined = "".join(filter(None, strs))  # type: ignore[arg-type]
    limit = cell.limit
    if limit is not None and len(joined) > limit and max(map(len, filter(None, strs))) > limit:
        strs = [None if s is None else s[:limit] for s in strs]
        joined = "".join(filter(None, strs))  # type: ignore[arg-type]
    return strs, joined


def encode(
    strs: Sequence[str | None], joined: str, cell: Cell
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """UTF-8 (char) or UTF-16BE (unicodeChar) payload, per-row code-unit counts, NULL mask."""
    n = len(strs)
    nulls = None
    filled: Sequence[str] = strs  # type: ignore[assignment]
    if None in strs:
        nulls = np.fromiter((s is None for s in strs), bool, n)
        filled = ["" if s is None else s for s in strs]
    if cell.unicode:
        payload = np.frombuffer(joined.encode("utf-16-be"), np.uint8)
        lengths = np.fromiter(map(len, filled), np.int64, n)
    elif joined.isascii():
        payload = np.frombuffer(joined.encode("ascii"), np.uint8)
        lengths = np.fromiter(map(len, filled), np.int64, n)
    else:
        encoded = [s.encode() for s in filled]
        payload = np.frombuffer(b"".join(encoded), np.uint8)
        lengths = np.fromiter(map(len, encoded), np.int64, n)
    return payload, lengths, nulls


def fixed_strings(payload: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Scatter variable strings into an (n, width) NUL-padded byte matrix."""
    n = len(lengths)
    out = np.zeros((n, width), np.uint8)
    if payload.size:
        starts = np.cumsum(lengths) - lengths
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(payload.size) - np.repeat(starts, lengths)
        out[rows, cols] = payload
    return out
