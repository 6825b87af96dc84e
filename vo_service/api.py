"""The JSON API for people managing their proposals, collaborators, settings and tokens.

Small by design: each endpoint checks who asks (the identity set by the authentication
middleware) and calls ``vo_service.auth.accounts``, where the rules live. A proposal the
caller is not a member of answers 404, like one that does not exist. The OpenAPI document
at ``/api/openapi.json`` describes every endpoint.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.reduce.settings import ReductionSettings, settings_from
from vo_service import __version__
from vo_service.auth import accounts
from vo_service.auth.identity import SESSION_COOKIE, Identity, identity_from_password, identity_of
from vo_service.auth.tokens import new_secret

SESSION_HOURS = 12
_SESSIONLESS = frozenset({"/api/login", "/api/invitations/accept"})


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _user(request: Request) -> Identity:
    identity = identity_of(request.scope)
    if identity is None:
        raise APIError(401, "log in first (HTTP Basic, a Bearer token or a session)")
    return identity


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


Handler = Callable[[Request, AsyncConnection], Awaitable[Response]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """One transaction per call; refusals become JSON errors, never stack traces."""

    async def run(request: Request) -> Response:
        # Logging in and accepting an invitation do not act on a session's behalf.
        if request.scope.get("vo.csrf") is not None and request.url.path not in _SESSIONLESS:
            return _error(403, "session-authenticated changes need the X-CSRF-Token header")
        try:
            async with request.app.state.vo.pool.connection() as conn, conn.transaction():
                return await handler(request, conn)
        except APIError as exc:
            return _error(exc.status, exc.message)
        except accounts.AccountError as exc:
            return _error(400, str(exc))

    return run


async def _membership(conn: AsyncConnection, code: str, who: Identity) -> str:
    """The caller's role in the proposal ('pi', 'collaborator', 'staff'); 404 otherwise."""
    cur = await conn.execute(
        "SELECT m.role FROM auth.proposals AS p LEFT JOIN auth.memberships AS m "
        "ON m.proposal_id = p.proposal_id AND m.user_id = %s WHERE p.proposal_id = %s",
        [who.user_id, code],
    )
    row = await cur.fetchone()
    if row is None or (row[0] is None and not who.is_staff):
        raise APIError(404, f"no proposal {code}")
    return row[0] or "staff"


async def _require_pi(conn: AsyncConnection, code: str, who: Identity) -> None:
    if await _membership(conn, code, who) == "collaborator":
        raise APIError(403, "only the PI (or staff) may change this proposal")


@endpoint
async def me(request: Request, conn: AsyncConnection) -> Response:
    who = _user(request)
    return JSONResponse({"user_id": who.user_id, "username": who.username, "staff": who.is_staff})


@endpoint
async def list_proposals(request: Request, conn: AsyncConnection) -> Response:
    who = _user(request)
    cur = await conn.cursor(row_factory=dict_row).execute(
        "SELECT p.proposal_id AS code, p.semester, p.title, p.proprietary_months, "
        "coalesce(m.role, 'staff') AS role FROM auth.proposals AS p "
        "LEFT JOIN auth.memberships AS m ON m.proposal_id = p.proposal_id AND m.user_id = %s "
        "WHERE m.user_id IS NOT NULL OR %s ORDER BY p.proposal_id",
        [who.user_id, who.is_staff],
    )
    return JSONResponse({"proposals": await cur.fetchall()})


@endpoint
async def show_proposal(request: Request, conn: AsyncConnection) -> Response:
    code = request.path_params["code"]
    role = await _membership(conn, code, _user(request))
    cur = await conn.cursor(row_factory=dict_row).execute(
        "SELECT p.proposal_id AS code, p.semester, p.title, p.abstract, p.proprietary_months, "
        "p.calibrations_public FROM auth.proposals AS p WHERE p.proposal_id = %s",
        [code],
    )
    proposal = await cur.fetchone()
    members = await conn.cursor(row_factory=dict_row).execute(
        "SELECT u.username, u.email, m.role FROM auth.memberships AS m "
        "JOIN auth.users AS u USING (user_id) WHERE m.proposal_id = %s ORDER BY m.role DESC, "
        "u.username",
        [code],
    )
    return JSONResponse(
        {**(proposal or {}), "your_role": role, "members": await members.fetchall()}
    )


@endpoint
async def add_member(request: Request, conn: AsyncConnection) -> Response:
    code = request.path_params["code"]
    await _require_pi(conn, code, _user(request))
    email = (await _body(request)).get("email")
    if not isinstance(email, str) or "@" not in email:
        raise APIError(400, 'give the new member as {"email": "..."}')
    member = await accounts.add_member(conn, code, email)
    body: dict[str, Any] = {"user_id": member.user_id, "invited": member.invitation is not None}
    if member.invitation:
        body["invitation_token"] = member.invitation  # shown once, for the PI to pass on
    return JSONResponse(body, status_code=201)


@endpoint
async def remove_member(request: Request, conn: AsyncConnection) -> Response:
    code = request.path_params["code"]
    await _require_pi(conn, code, _user(request))
    await accounts.remove_member(conn, code, request.path_params["username"])
    return Response(status_code=204)


@endpoint
async def reduction_settings(request: Request, conn: AsyncConnection) -> Response:
    code = request.path_params["code"]
    who = _user(request)
    await _membership(conn, code, who)
    cur = await conn.execute(
        "SELECT reduction_settings FROM auth.proposals WHERE proposal_id = %s", [code]
    )
    row = await cur.fetchone()
    overrides: dict[str, Any] = dict(row[0]) if row else {}
    if request.method == "PUT":
        await _require_pi(conn, code, who)
        overrides.update(await _body(request))
        try:
            settings_from(overrides)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        await conn.execute(
            "UPDATE auth.proposals SET reduction_settings = %s WHERE proposal_id = %s",
            [Jsonb(overrides), code],
        )
    return JSONResponse(
        {"settings": settings_from(overrides).as_dict(), "defaults": ReductionSettings().as_dict()}
    )


@endpoint
async def tokens(request: Request, conn: AsyncConnection) -> Response:
    who = _user(request)
    if request.method == "POST":
        name = (await _body(request)).get("name", "")
        if not isinstance(name, str) or len(name) > 100:
            raise APIError(400, "a token name is a string of at most 100 characters")
        token_id, token = await accounts.create_token(conn, who.username, name)
        return JSONResponse({"token_id": token_id, "token": token}, status_code=201)
    cur = await conn.cursor(row_factory=dict_row).execute(
        "SELECT token_id, name, prefix, created_at, last_used FROM auth.tokens "
        "WHERE user_id = %s AND revoked_at IS NULL ORDER BY token_id",
        [who.user_id],
    )
    rows = [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
        for r in await cur.fetchall()
    ]
    return JSONResponse({"tokens": rows})


@endpoint
async def revoke(request: Request, conn: AsyncConnection) -> Response:
    who = _user(request)
    try:
        token_id = int(request.path_params["token_id"])
        await accounts.revoke_token(conn, token_id, owner=who.user_id)
    except (ValueError, accounts.AccountError):
        raise APIError(404, "no such token") from None
    return Response(status_code=204)


@endpoint
async def login(request: Request, conn: AsyncConnection) -> Response:
    """Starts a browser session; the CSRF token must accompany later unsafe requests."""
    body = await _body(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise APIError(400, 'give {"username": "...", "password": "..."}')
    who = await identity_from_password(request.app.state.vo.pool, username, password)
    if who is None:
        raise APIError(401, "wrong username or password")
    cookie, cookie_hash = new_secret("ses_")
    csrf = secrets.token_urlsafe(24)
    await conn.execute(
        "INSERT INTO auth.sessions (session_hash, user_id, csrf_token, expires_at) "
        "VALUES (%s, %s, %s, %s)",
        [cookie_hash, who.user_id, csrf, datetime.now(UTC) + timedelta(hours=SESSION_HOURS)],
    )
    response = JSONResponse({"username": who.username, "csrf_token": csrf})
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@endpoint
async def accept_invitation(request: Request, conn: AsyncConnection) -> Response:
    body = await _body(request)
    token, password = body.get("invitation_token"), body.get("password")
    if not isinstance(token, str) or not isinstance(password, str):
        raise APIError(400, 'give {"invitation_token": "...", "password": "..."}')
    return JSONResponse({"username": await accounts.accept_invitation(conn, token, password)})


@endpoint
async def logout(request: Request, conn: AsyncConnection) -> Response:
    who = _user(request)
    await conn.execute("DELETE FROM auth.sessions WHERE user_id = %s", [who.user_id])
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _op(summary: str, *, body: dict | None = None, ok: str = "200") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "success"},
            "401": {"description": "not logged in"},
            "404": {"description": "unknown, or not yours"},
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "properties": body}}},
        }
    return operation


_CODE = {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "vo-service proposals API", "version": __version__},
    "components": {
        "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
        }
    },
    "security": [{"basic": []}, {"bearer": []}, {"session": []}],
    "paths": {
        "/api/me": {"get": _op("Who am I")},
        "/api/login": {
            "post": _op(
                "Start a browser session",
                body={"username": {"type": "string"}, "password": {"type": "string"}},
            )
        },
        "/api/logout": {"post": _op("End my sessions", ok="204")},
        "/api/invitations/accept": {
            "post": _op(
                "Set a password with an invitation token",
                body={"invitation_token": {"type": "string"}, "password": {"type": "string"}},
            )
        },
        "/api/proposals": {"get": _op("My proposals (all of them for staff)")},
        "/api/proposals/{code}": {"parameters": [_CODE], "get": _op("A proposal and members")},
        "/api/proposals/{code}/members": {
            "parameters": [_CODE],
            "post": _op(
                "Add a collaborator by e-mail (PI or staff); unknown addresses are invited",
                body={"email": {"type": "string"}},
                ok="201",
            ),
        },
        "/api/proposals/{code}/members/{username}": {
            "parameters": [
                _CODE,
                {"name": "username", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "delete": _op("Remove a collaborator (PI or staff)", ok="204"),
        },
        "/api/proposals/{code}/settings": {
            "parameters": [_CODE],
            "get": _op("Reduction settings with their defaults"),
            "put": _op(
                "Change reduction settings (PI or staff)",
                body={name: {} for name in ReductionSettings().as_dict()},
            ),
        },
        "/api/tokens": {
            "get": _op("My active API tokens"),
            "post": _op("Create a token (shown once)", body={"name": {"type": "string"}}, ok="201"),
        },
        "/api/tokens/{token_id}": {
            "parameters": [
                {"name": "token_id", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "delete": _op("Revoke a token at once", ok="204"),
        },
    },
}


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


routes = [
    Route("/api/openapi.json", openapi),
    Route("/api/me", me),
    Route("/api/login", login, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/invitations/accept", accept_invitation, methods=["POST"]),
    Route("/api/proposals", list_proposals),
    Route("/api/proposals/{code}", show_proposal),
    Route("/api/proposals/{code}/members", add_member, methods=["POST"]),
    Route("/api/proposals/{code}/members/{username}", remove_member, methods=["DELETE"]),
    Route("/api/proposals/{code}/settings", reduction_settings, methods=["GET", "PUT"]),
    Route("/api/tokens", tokens, methods=["GET", "POST"]),
    Route("/api/tokens/{token_id}", revoke, methods=["DELETE"]),
]
