"""Streaming result writers: VOTable (BINARY2, BINARY, TABLEDATA), CSV, TSV, VOParquet.

Hand-written on purpose: astropy's VOTable writer managed about 8k rows/s and grew by
436 MB for a million rows, while a numpy-vectorised BINARY2 encoder wrote the same million
rows in 2.7 s. Results come from a PostgreSQL server-side cursor in batches (lists of
tuples from psycopg 3), and every writer turns one batch at a time into bytes, so memory
stays flat however many rows are sent: ``head()`` once, ``rows()`` per batch, ``tail()``
once (with the DALI overflow/error status, which can only be known at the end).

Decisions worth knowing:

- VOTable ``char`` is ASCII (VOTable ≤ 1.5), and astropy, hence pyvo, rejects the whole
  table on a non-ASCII byte in BINARY ``char``: in every VOTable serialisation each
  non-ASCII character of a ``char`` value is written as ``?``. A column that must carry
  such text is declared ``unicodeChar`` in its table TOML (so TAP_SCHEMA says the same);
  it is written as UTF-16 code units, BMP only (others become U+FFFD). CSV, TSV and
  Parquet keep full UTF-8 whatever the datatype.
- ``char``/``unicodeChar`` values longer than a declared ``n`` or ``n*`` arraysize are
  cut to it in VOTable output (astropy would cut them anyway, with a warning).
- Floating-point NaN and NULL are one thing, as in VOTable: both are NULL.
- CSV and TSV cannot carry QUERY_STATUS: their ``in_band_status`` is False, so a caller
  should abort the response on a mid-stream error rather than end it normally.
"""

from vo_service.votable.document import error_document
from vo_service.votable.formats import (
    FORMATS,
    OutputFormat,
    ResultWriter,
    UnsupportedFormat,
    writer_for,
)

__all__ = [
    "FORMATS",
    "OutputFormat",
    "ResultWriter",
    "UnsupportedFormat",
    "error_document",
    "writer_for",
]
