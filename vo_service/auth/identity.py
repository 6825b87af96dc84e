"""Who is asking: one middleware resolves every request's identity, on every URL.

VO clients authenticate in the ways they know, all on the same URLs (TAP-M2):
``Authorization: Bearer <token>`` (pyvo, scripts), HTTP Basic (TOPCAT, STILTS), and the
``vo_session`` cookie of the web pages, whose state-changing requests must also carry the
session's CSRF token. No credentials means anonymous; wrong credentials are refused with
401 rather than silently downgraded to anonymous. The identity only *names* the user: what
the user may read is decided by PostgreSQL's row-level security (``schemas/sql``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie

from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Receive, Scope, Send

from vo_service.auth.passwords import verify_password
from vo_service.auth.tokens import digest
from vo_service.dali import error_response

SESSION_COOKIE = "vo_session"
CSRF_HEADER = "x-csrf-token"
REALM = 'Basic realm="vo-service", charset="UTF-8"'
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BASIC_CACHE_S = 300.0
_TOKEN_CACHE_S = 60.0  # also how often a token's last-use time is written
AUTH_CHANNEL = "vo_auth"  # announced by auth.tokens and auth.users (schemas/sql)


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    is_staff: bool


class AuthenticationFailed(Exception):
    pass


class _BasicCache:
    """scrypt is slow on purpose; TOPCAT sends Basic with every request. Cache successes,
    keyed by the stored hash too, so a changed password invalidates at once."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Identity]] = {}

    def get(self, key: str) -> Identity | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: str, identity: Identity) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + _BASIC_CACHE_S, identity)


_basic_cache = _BasicCache()


class _TokenCache:
    """Token identities kept in memory, so a token request costs no extra round trip.

    Only while this process listens to ``vo_auth``: every change to tokens or users is
    announced there and empties the cache, so a revoked token fails at once. When the
    listening connection is lost, nothing is kept until it is back.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Identity]] = {}
        self.live = False
        self.generation = 0  # a lookup that overlapped a change must not be kept

    def get(self, key: str) -> Identity | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, identity: Identity, generation: int) -> None:
        if not self.live or generation != self.generation:
            return
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + _TOKEN_CACHE_S, identity)

    def changed(self, payload: str | None) -> None:
        """A notification (payload) or a lost listening connection (None)."""
        self._entries.clear()
        self.generation += 1
        self.live = payload is not None


token_cache = _TokenCache()


async def identity_from_token(pool: AsyncConnectionPool, token: str) -> Identity | None:
    """Looked up once a minute at most (see ``_TokenCache``), and the last-use time is
    written then, keeping requests read-only."""
    key = digest(token)
    cached = token_cache.get(key)
    if cached is not None:
        return cached
    generation = token_cache.generation
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT u.user_id, u.username, u.is_staff, t.token_id, "
            "t.last_used IS NULL OR t.last_used < now() - interval '1 minute' "
            "FROM auth.tokens AS t JOIN auth.users AS u USING (user_id) "
            "WHERE t.token_hash = %s AND t.revoked_at IS NULL AND u.is_active",
            [key],
        )
        row = await cur.fetchone()
        if row is not None and row[4]:
            await conn.execute(
                "UPDATE auth.tokens SET last_used = now() WHERE token_id = %s", [row[3]]
            )
    if row is None:
        return None
    identity = Identity(row[0], row[1], row[2])
    token_cache.put(key, identity, generation)
    return identity


async def identity_from_password(
    pool: AsyncConnectionPool, username: str, password: str
) -> Identity | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, username, is_staff, password_hash FROM auth.users "
            "WHERE (username = %s OR email = lower(%s)) AND is_active",
            [username, username],
        )
        row = await cur.fetchone()
    if row is None or row[3] is None:
        return None
    key = digest(f"{row[3]}\0{password}")
    cached = _basic_cache.get(key)
    if cached is not None:
        return cached
    if not await asyncio.to_thread(verify_password, password, row[3]):
        return None
    identity = Identity(row[0], row[1], row[2])
    _basic_cache.put(key, identity)
    return identity


async def identity_from_session(
    pool: AsyncConnectionPool, cookie: str
) -> tuple[Identity, str] | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT u.user_id, u.username, u.is_staff, s.csrf_token FROM auth.sessions AS s "
            "JOIN auth.users AS u USING (user_id) WHERE s.session_hash = %s "
            "AND s.expires_at > now() AND u.is_active",
            [digest(cookie)],
        )
        row = await cur.fetchone()
    return (Identity(row[0], row[1], row[2]), row[3]) if row else None


async def authenticate(pool: AsyncConnectionPool, scope: Scope) -> Identity | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    authorization = headers.get("authorization", "").strip()
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer":
            identity = await identity_from_token(pool, credentials)
        elif scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthenticationFailed("malformed Basic credentials") from None
            username, _, password = decoded.partition(":")
            identity = await identity_from_password(pool, username, password)
        else:
            raise AuthenticationFailed(f"unsupported authorization scheme {scheme!r}")
        if identity is None:
            raise AuthenticationFailed("invalid credentials")
        return identity
    cookies = SimpleCookie(headers.get("cookie", ""))
    if SESSION_COOKIE in cookies:
        found = await identity_from_session(pool, cookies[SESSION_COOKIE].value)
        if found is None:
            return None  # an expired session is simply anonymous
        identity, csrf = found
        if scope["method"] not in _SAFE_METHODS:
            # Checked here for header-bearing clients, by read_params for form posts.
            scope["vo.csrf"] = None if headers.get(CSRF_HEADER) == csrf else csrf
        return identity
    return None


class Authentication:
    """Puts ``scope["vo.identity"]`` (an Identity or None) on every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pool = scope["app"].state.vo.pool
        try:
            scope["vo.identity"] = await authenticate(pool, scope)
        except AuthenticationFailed as exc:
            response = error_response(f"authentication failed: {exc}", 401)
            response.headers["WWW-Authenticate"] = REALM
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def identity_of(scope: Scope) -> Identity | None:
    return scope.get("vo.identity")


def owner_name(request: object) -> str | None:
    """The UWS owner id of a request: the username, None when anonymous."""
    identity = identity_of(request.scope)  # type: ignore[attr-defined]
    return identity.username if identity else None


async def user_id_of(pool: AsyncConnectionPool, username: str | None) -> int | None:
    """For work done later on a user's behalf (async jobs): the id, if still active."""
    if username is None:
        return None
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id FROM auth.users WHERE username = %s AND is_active", [username]
        )
        row = await cur.fetchone()
    return row[0] if row else None
