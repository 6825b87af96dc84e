"""DALI conventions shared by every protocol: parameters and error documents.

Parameter names are case-insensitive and single-valued parameters may appear once
(DALI-M2, DALI-M3); every error a client sees is a VOTable error document with a
human-readable message, never an HTML page or a stack trace.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from vo_service.votable import error_document

VOTABLE_MEDIA_TYPE = "application/x-votable+xml"


class DALIError(Exception):
    """A request the service answers with an error document; ``status`` is the HTTP code."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class QueryTimeout(DALIError):
    """The statement timeout fired; 504 so clients can tell it from a bad query."""

    status = 504


class Params:
    """Request parameters keyed case-insensitively, with the uploaded files beside them."""

    def __init__(
        self, items: Iterable[tuple[str, str]], files: dict[str, UploadFile] | None = None
    ) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in items:
            self._values.setdefault(key.upper(), []).append(value)
        self.files = files or {}

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._values.get(name.upper())
        if not values:
            return default
        if len(values) > 1 and len(set(values)) > 1:
            raise DALIError(f"parameter {name.upper()} given more than once")
        return values[0]

    def getlist(self, name: str) -> list[str]:
        return list(self._values.get(name.upper(), []))

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, values in self._values.items() for v in values]

    def get_int(self, name: str) -> int | None:
        raw = self.get(name)
        if raw is None or raw.strip() == "":
            return None
        try:
            value = int(raw.strip())
        except ValueError:
            raise DALIError(f"{name.upper()} must be a non-negative integer, not {raw!r}") from None
        if value < 0:
            raise DALIError(f"{name.upper()} must be a non-negative integer, not {raw!r}")
        return value


async def read_params(request: Request) -> Params:
    """Query string plus, for POST, the urlencoded or multipart body.

    A form posted with a session cookie must carry that session's CSRF token, unless the
    authentication middleware already saw it in the X-CSRF-Token header.
    """
    items = list(request.query_params.multi_items())
    files: dict[str, UploadFile] = {}
    if request.method == "POST":
        try:
            form: FormData = await request.form()
        except Exception as exc:  # a malformed body is the client's error
            raise DALIError(f"cannot read the request body: {exc}") from None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[key] = value
            else:
                items.append((key, value))
    expected = request.scope.get("vo.csrf")
    if expected is not None:
        given = [v for k, v in items if k.lower() == "csrf_token"]
        if given != [expected]:
            raise DALIError("missing or wrong CSRF token for a session-authenticated post", 403)
        items = [(k, v) for k, v in items if k.lower() != "csrf_token"]
    return Params(items, files)


def error_response(message: str, status: int = 400) -> Response:
    return Response(error_document(message), status_code=status, media_type=VOTABLE_MEDIA_TYPE)
