"""Exceptions of the ADQL front end; their ``str()`` is shown to users as is."""

from __future__ import annotations


class ADQLError(Exception):
    """Base class: the query cannot be run; the message says why, in the user's terms."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        self.message = message
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)


class ADQLSyntaxError(ADQLError):
    """The text is not ADQL; carries the position and what the grammar would have accepted."""

    line: int
    column: int

    def __init__(
        self, message: str, line: int, column: int, expected: list[str] | None = None
    ) -> None:
        self.expected = list(expected or [])
        super().__init__(message, line, column)


class ADQLSemanticError(ADQLError):
    """Well-formed ADQL that names unknown things or combines them in a way ADQL forbids."""
