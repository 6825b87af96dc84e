"""Users, proposals, memberships and tokens: every change to them goes through here.

One async implementation serves the command line (via ``asyncio.run``) and the web API,
so the rules (password policy, who may add members, release dates following a proposal's
proprietary period) live in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import AsyncConnection, errors

from vo_service.auth.passwords import hash_password, password_problems
from vo_service.auth.tokens import digest, new_secret

_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{1,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PROPOSAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")


class AccountError(ValueError):
    """A refused change; the message says why, for the person who asked."""


@dataclass(frozen=True)
class NewMember:
    user_id: int
    invitation: str | None  # set when the member was invited as a new user


async def add_user(
    conn: AsyncConnection, username: str, email: str, password: str | None, *, staff: bool = False
) -> int:
    """A new account; without a password it can only be reached by an invitation."""
    if not _USERNAME.match(username):
        raise AccountError("a username starts with a letter and has 2-64 letters, digits, . _ -")
    if not _EMAIL.match(email):
        raise AccountError(f"{email!r} is not an e-mail address")
    hashed = None
    if password is not None:
        problems = password_problems(password, username=username, email=email)
        if problems:
            raise AccountError("password refused: " + "; ".join(problems))
        hashed = hash_password(password)
    try:
        cur = await conn.execute(
            "INSERT INTO auth.users (username, email, password_hash, is_staff) "
            "VALUES (%s, lower(%s), %s, %s) RETURNING user_id",
            [username, email, hashed, staff],
        )
    except errors.UniqueViolation:
        raise AccountError("that username or e-mail address is taken") from None
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def user_id(conn: AsyncConnection, name_or_email: str) -> int:
    cur = await conn.execute(
        "SELECT user_id FROM auth.users WHERE username = %s OR email = lower(%s)",
        [name_or_email, name_or_email],
    )
    row = await cur.fetchone()
    if row is None:
        raise AccountError(f"no user {name_or_email!r}")
    return int(row[0])


async def add_proposal(
    conn: AsyncConnection,
    code: str,
    pi: str,
    *,
    title: str = "",
    semester: str | None = None,
    abstract: str = "",
    proprietary_months: int = 12,
) -> None:
    if not _PROPOSAL.match(code):
        raise AccountError(f"{code!r} is not a proposal code like SOAR2020B-008")
    if not 0 <= proprietary_months <= 120:
        raise AccountError("the proprietary period is 0 to 120 months")
    pi_id = await user_id(conn, pi)
    try:
        await conn.execute(
            "INSERT INTO auth.proposals (proposal_id, semester, title, abstract, pi_user_id, "
            "proprietary_months) VALUES (%s, %s, %s, %s, %s, %s)",
            [code, semester, title, abstract, pi_id, proprietary_months],
        )
    except errors.UniqueViolation:
        raise AccountError(f"proposal {code} exists already") from None
    await conn.execute(
        "INSERT INTO auth.memberships (proposal_id, user_id, role) VALUES (%s, %s, 'pi')",
        [code, pi_id],
    )
    # Frames ingested before the proposal was registered follow its period from now on.
    await conn.execute("SELECT auth.refresh_release_dates(%s)", [code])


async def set_proprietary_period(conn: AsyncConnection, code: str, months: int) -> int:
    await conn.execute(
        "UPDATE auth.proposals SET proprietary_months = %s WHERE proposal_id = %s",
        [months, code],
    )
    cur = await conn.execute("SELECT auth.refresh_release_dates(%s)", [code])
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def add_member(conn: AsyncConnection, code: str, who: str) -> NewMember:
    """Add a collaborator by username or e-mail; an unknown e-mail is invited."""
    cur = await conn.execute("SELECT 1 FROM auth.proposals WHERE proposal_id = %s", [code])
    if await cur.fetchone() is None:
        raise AccountError(f"no proposal {code}")
    invitation = None
    try:
        member = await user_id(conn, who)
    except AccountError:
        if not _EMAIL.match(who):
            raise
        invitation, invitation_hash = new_secret("inv_")
        local = re.sub(r"[^A-Za-z0-9_.-]", "", who.split("@")[0]) or "user"
        username = local if local[0].isalpha() else f"u{local}"
        cur = await conn.execute(
            "SELECT count(*) FROM auth.users WHERE username LIKE %s", [f"{username}%"]
        )
        taken = (await cur.fetchone() or [0])[0]
        member = await add_user(conn, f"{username}{taken or ''}", who, None)
        await conn.execute(
            "UPDATE auth.users SET invitation_hash = %s WHERE user_id = %s",
            [invitation_hash, member],
        )
    await conn.execute(
        "INSERT INTO auth.memberships (proposal_id, user_id, role) VALUES (%s, %s, "
        "'collaborator') ON CONFLICT (proposal_id, user_id) DO NOTHING",
        [code, member],
    )
    return NewMember(member, invitation)


async def remove_member(conn: AsyncConnection, code: str, who: str) -> None:
    member = await user_id(conn, who)
    cur = await conn.execute(
        "DELETE FROM auth.memberships WHERE proposal_id = %s AND user_id = %s "
        "AND role = 'collaborator' RETURNING 1",
        [code, member],
    )
    if await cur.fetchone() is None:
        raise AccountError(f"{who} is not a collaborator of {code}")


async def create_token(conn: AsyncConnection, owner: str, name: str = "") -> tuple[int, str]:
    """A new API token: returned once, stored only as a hash."""
    owner_id = await user_id(conn, owner)
    token, token_hash = new_secret()
    cur = await conn.execute(
        "INSERT INTO auth.tokens (user_id, token_hash, prefix, name) VALUES (%s, %s, %s, %s) "
        "RETURNING token_id",
        [owner_id, token_hash, token[:10], name],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), token


async def revoke_token(conn: AsyncConnection, token_id: int, owner: int | None = None) -> None:
    """Revoked at once; ``owner`` restricts the change to that user's tokens."""
    cur = await conn.execute(
        "UPDATE auth.tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL "
        "AND (%s::bigint IS NULL OR user_id = %s) RETURNING 1",
        [token_id, owner, owner],
    )
    if await cur.fetchone() is None:
        raise AccountError(f"no active token {token_id}")


async def accept_invitation(conn: AsyncConnection, invitation: str, password: str) -> str:
    """An invited user chooses a password; the invitation then stops working."""
    cur = await conn.execute(
        "SELECT user_id, username, email FROM auth.users WHERE invitation_hash = %s",
        [digest(invitation)],
    )
    row = await cur.fetchone()
    if row is None:
        raise AccountError("unknown or used invitation")
    problems = password_problems(password, username=row[1], email=row[2])
    if problems:
        raise AccountError("password refused: " + "; ".join(problems))
    await conn.execute(
        "UPDATE auth.users SET password_hash = %s, invitation_hash = NULL WHERE user_id = %s",
        [hash_password(password), row[0]],
    )
    return str(row[1])
