"""Proprietary data: who sees which rows, by every path and every way of logging in.

Users: anonymous, alice (PI of P1), bob (collaborator of P1, uses a token), carol (PI of
P2) and staff. Frames of P1 and P2 are copies of simulated frames with their proposal
changed; proposals get a ten-year proprietary period, so their science frames are
proprietary while their calibrations are public.
"""

from __future__ import annotations

import asyncio
import shutil
from io import BytesIO
from pathlib import Path

import httpx
import psycopg
import pytest
from astropy.io import fits
from astropy.io.votable import from_table, parse_single_table, writeto
from astropy.table import Table

from ingest.loader import ingest
from ingest.simulate import NightSummary
from vo_service.auth import accounts
from vo_service.auth.passwords import password_problems

PASSWORDS = {"alice": "Orion-Nebula-42", "carol": "Eta-Carinae-1843", "staffer": "Dome-Flat-77x"}
SCIENCE = (
    "SELECT obs_id FROM archive.frames WHERE proposal_id LIKE 'MATRIX-%' "
    "AND frame_type = 'science_spectrum' ORDER BY obs_id"
)


async def _setup(url: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await accounts.add_user(conn, "alice", "alice@example.org", PASSWORDS["alice"])
        await accounts.add_user(conn, "bob", "bob@example.org", None)
        await accounts.add_user(conn, "carol", "carol@example.org", PASSWORDS["carol"])
        await accounts.add_user(
            conn, "staffer", "staff@example.org", PASSWORDS["staffer"], staff=True
        )
        await accounts.add_proposal(conn, "MATRIX-P1", "alice", proprietary_months=120)
        await accounts.add_proposal(conn, "MATRIX-P2", "carol", proprietary_months=120)
        await accounts.add_member(conn, "MATRIX-P1", "bob")
        _, bob_token = await accounts.create_token(conn, "bob", "tests")
        revoked_id, revoked = await accounts.create_token(conn, "bob", "old")
        await accounts.revoke_token(conn, revoked_id)
    return {"bob": bob_token, "revoked": revoked}


@pytest.fixture(scope="module")
def matrix(db_url: str, night: NightSummary, tmp_path_factory: pytest.TempPathFactory):
    """Frames of two proposals, the users, and the expected science rows per user."""
    tokens = asyncio.run(_setup(db_url))
    folder = tmp_path_factory.mktemp("matrix")
    science = [f for f in night.files if "science_spectrum" in f.name][:2]
    bias = next(f for f in night.files if "_bias_" in f.name)
    expected: dict[str, list[str]] = {"MATRIX-P1": [], "MATRIX-P2": []}
    for proposal, sources in (("MATRIX-P1", [science[0], bias]), ("MATRIX-P2", [science[1]])):
        for source in sources:
            target = folder / f"{proposal}-{source.name}"
            shutil.copy(source, target)
            with fits.open(target, mode="update") as hdul:
                hdul[0].header["PROPID"] = proposal
            if source is not bias:
                expected[proposal].append(target.name.split(".")[0])
    with psycopg.connect(db_url) as conn:
        ingest(conn, [folder], progress=False)
        products = _add_products(conn, folder)
    p1, p2 = expected["MATRIX-P1"], expected["MATRIX-P2"]
    yield {
        "products": products,
        "tokens": tokens,
        "visible": {
            "anonymous": [],
            "alice": p1,
            "bob": p1,
            "carol": p2,
            "staffer": sorted(p1 + p2),
        },
    }
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM archive.products WHERE proposal_id LIKE 'MATRIX-%'")
        conn.execute("DELETE FROM archive.frames WHERE proposal_id LIKE 'MATRIX-%'")


def _add_products(conn: psycopg.Connection, folder: Path) -> dict[int, tuple[str, bytes]]:
    """A reduced product (and its provenance) per matrix frame, released as its frame is;
    returns product id → (science obs_id, file bytes)."""
    frames = conn.execute(
        "SELECT frame_id, obs_id, proposal_id, date_obs FROM archive.frames "
        "WHERE proposal_id LIKE 'MATRIX-%' AND frame_type = 'science_spectrum'"
    ).fetchall()
    products: dict[int, tuple[str, bytes]] = {}
    for frame_id, obs_id, proposal, observed in frames:
        path = folder / f"{obs_id}_2d.fits"
        content = f"product of {obs_id}".encode()
        path.write_bytes(content)
        (product_id,) = conn.execute(
            "INSERT INTO archive.products (kind, data_level, subject, version, frame_id, "
            "obs_id, file_name, path, file_size, sha256, proposal_id, date_obs, release_date, "
            "inputs_hash, settings_hash, software_version, created_at) VALUES "
            "('reduced_2d', 2, %s, 1, %s, %s, %s, %s, %s, 'x', %s, %s, "
            "auth.product_release_date('reduced_2d', %s, %s, %s), %s, 's', 'test', now()) "
            "RETURNING product_id",
            [
                *(obs_id, frame_id, obs_id, path.name, str(path), len(content), proposal),
                *(observed, observed, proposal, frame_id, obs_id),
            ],
        ).fetchone()
        conn.execute(
            "INSERT INTO archive.provenance (product_id, input_kind, input_id, role) "
            "VALUES (%s, 'frame', %s, 'progenitor')",
            [product_id, frame_id],
        )
        products[product_id] = (obs_id, content)
    return products


def _auth(user: str, matrix: dict) -> dict:
    if user == "anonymous":
        return {}
    if user == "bob":
        return {"headers": {"Authorization": f"Bearer {matrix['tokens']['bob']}"}}
    return {"auth": (user, PASSWORDS[user])}


def _rows(response: httpx.Response, column: str = "obs_id") -> list[str]:
    assert response.status_code == 200, response.text
    table = parse_single_table(BytesIO(response.content)).to_table()
    return sorted(str(v) for v in table[column])


USERS = ["anonymous", "alice", "bob", "carol", "staffer"]


@pytest.mark.parametrize("user", USERS)
def test_tap_rows_per_user(tap_url: str, matrix: dict, user: str) -> None:
    response = httpx.get(
        f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": SCIENCE}, **_auth(user, matrix)
    )
    assert _rows(response) == matrix["visible"][user]


@pytest.mark.parametrize("user", USERS)
def test_aggregates_union_and_subqueries_see_the_same(
    tap_url: str, matrix: dict, user: str
) -> None:
    expected = len(matrix["visible"][user])
    queries = {
        "count": "SELECT COUNT(*) AS n FROM archive.frames WHERE proposal_id LIKE 'MATRIX-%' "
        "AND frame_type = 'science_spectrum'",
        "group": "SELECT SUM(n) AS n FROM (SELECT proposal_id, COUNT(*) AS n FROM archive.frames"
        " WHERE frame_type = 'science_spectrum' AND proposal_id LIKE 'MATRIX-%' "
        "GROUP BY proposal_id) AS g",
        "union": "SELECT COUNT(*) AS n FROM (SELECT obs_id FROM archive.frames WHERE "
        "proposal_id = 'MATRIX-P1' AND frame_type = 'science_spectrum' UNION "
        "SELECT obs_id FROM archive.frames WHERE proposal_id = 'MATRIX-P2' AND "
        "frame_type = 'science_spectrum') AS u",
    }
    for name, query in queries.items():
        response = httpx.get(
            f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": query}, **_auth(user, matrix)
        )
        table = parse_single_table(BytesIO(_raw(response))).to_table()
        value = table["n"][0]
        assert (0 if value is None or str(value) == "--" else int(value)) == expected, name


def _raw(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.parametrize("user", USERS)
def test_upload_join_cannot_reach_protected_rows(tap_url: str, matrix: dict, user: str) -> None:
    names = Table({"wanted": matrix["visible"]["staffer"]})
    out = BytesIO()
    writeto(from_table(names), out)
    response = httpx.post(
        f"{tap_url}/sync",
        data={
            "LANG": "ADQL",
            "UPLOAD": "w,param:w",
            "QUERY": "SELECT f.obs_id FROM TAP_UPLOAD.w AS u JOIN archive.frames AS f "
            "ON f.obs_id = u.wanted",
        },
        files={"w": ("w.xml", out.getvalue())},
        **_auth(user, matrix),
    )
    assert _rows(response) == matrix["visible"][user]


def test_calibrations_of_a_proposal_are_public(tap_url: str, matrix: dict) -> None:
    query = (
        "SELECT COUNT(*) AS n FROM archive.frames WHERE proposal_id = 'MATRIX-P1' "
        "AND frame_type = 'bias'"
    )
    response = httpx.get(f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": query})
    assert int(parse_single_table(BytesIO(_raw(response))).array["n"][0]) == 1


def test_async_results_belong_to_their_owner(tap_url: str, matrix: dict) -> None:
    created = httpx.post(
        f"{tap_url}/async",
        data={"LANG": "ADQL", "QUERY": SCIENCE, "PHASE": "RUN"},
        **_auth("alice", matrix),
    )
    job = created.headers["location"]
    done = httpx.get(job, params={"WAIT": "30"}, **_auth("alice", matrix))
    assert b"COMPLETED" in done.content
    result = httpx.get(f"{job}/results/result", **_auth("alice", matrix))
    assert _rows(result) == matrix["visible"]["alice"]
    for other in ("anonymous", "carol", "bob"):
        assert httpx.get(job, **_auth(other, matrix)).status_code == 404
        assert httpx.get(f"{job}/results/result", **_auth(other, matrix)).status_code == 404
    listing = httpx.get(f"{tap_url}/async", **_auth("carol", matrix))
    assert job.rsplit("/", 1)[1].encode() not in listing.content
    mine = httpx.get(f"{tap_url}/async", **_auth("alice", matrix))
    assert job.rsplit("/", 1)[1].encode() in mine.content


def test_bad_credentials_are_refused_not_downgraded(tap_url: str, matrix: dict) -> None:
    params = {"LANG": "ADQL", "QUERY": SCIENCE}
    wrong = httpx.get(f"{tap_url}/sync", params=params, auth=("alice", "not-her-password"))
    assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers
    assert b'value="ERROR"' in wrong.content
    revoked = httpx.get(
        f"{tap_url}/sync",
        params=params,
        headers={"Authorization": f"Bearer {matrix['tokens']['revoked']}"},
    )
    assert revoked.status_code == 401


def test_revoking_a_token_takes_effect_at_once(tap_url: str, db_url: str, matrix: dict) -> None:
    async def make() -> tuple[int, str]:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            return await accounts.create_token(conn, "carol", "short-lived")

    async def revoke(token_id: int) -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            await accounts.revoke_token(conn, token_id)

    token_id, token = asyncio.run(make())
    headers = {"Authorization": f"Bearer {token}"}
    params = {"LANG": "ADQL", "QUERY": SCIENCE}
    assert (
        _rows(httpx.get(f"{tap_url}/sync", params=params, headers=headers))
        == matrix["visible"]["carol"]
    )
    asyncio.run(revoke(token_id))
    assert httpx.get(f"{tap_url}/sync", params=params, headers=headers).status_code == 401


def test_deactivating_a_user_stops_their_cached_token_at_once(
    tap_url: str, db_url: str, matrix: dict
) -> None:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            await accounts.add_user(conn, "erin", "erin@example.org", None)
            return (await accounts.create_token(conn, "erin", "cached"))[1]

    async def active(flag: bool) -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            await conn.execute(
                "UPDATE auth.users SET is_active = %s WHERE username = 'erin'", [flag]
            )

    headers = {"Authorization": f"Bearer {asyncio.run(make())}"}
    params = {"LANG": "ADQL", "QUERY": SCIENCE}
    for _ in range(3):  # the identity is now kept in the server's memory
        assert httpx.get(f"{tap_url}/sync", params=params, headers=headers).status_code == 200
    asyncio.run(active(False))
    try:
        assert httpx.get(f"{tap_url}/sync", params=params, headers=headers).status_code == 401
    finally:
        asyncio.run(active(True))
    assert httpx.get(f"{tap_url}/sync", params=params, headers=headers).status_code == 200


def test_released_rows_appear_without_restart(tap_url: str, db_url: str, matrix: dict) -> None:
    async def period(months: int) -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            await accounts.set_proprietary_period(conn, "MATRIX-P2", months)

    params = {"LANG": "ADQL", "QUERY": SCIENCE}
    assert _rows(httpx.get(f"{tap_url}/sync", params=params)) == []
    asyncio.run(period(0))
    try:
        assert _rows(httpx.get(f"{tap_url}/sync", params=params)) == matrix["visible"]["carol"]
    finally:
        asyncio.run(period(120))


def test_capabilities_declare_the_security_methods(tap_url: str) -> None:
    text = httpx.get(f"{tap_url}/capabilities").text
    assert "ivo://ivoa.net/sso#BasicAA" in text and "ivo://ivoa.net/sso#token" in text


@pytest.mark.parametrize(
    "password, reason",
    [
        ("short1", "at least 8"),
        ("1234567890", "digits only"),
        ("password1", "too common"),
        ("aaaaaaaaaa", "too common"),
        ("dgreenfield", "similar to the username"),
        ("greenfield-obs", "similar to the email"),
    ],
)
def test_password_policy(password: str, reason: str) -> None:
    problems = password_problems(
        password, username="dgreenfield", email="greenfield.obs@example.org"
    )
    assert any(reason in p for p in problems), problems


def test_password_policy_accepts_a_good_password() -> None:
    assert password_problems("Orion-Nebula-42", username="alice", email="a@example.org") == []


def test_invited_member_has_no_password(db_url: str, matrix: dict, tmp_path: Path) -> None:
    async def invite() -> accounts.NewMember:
        async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
            return await accounts.add_member(conn, "MATRIX-P2", "newcomer@example.org")

    member = asyncio.run(invite())
    assert member.invitation and member.invitation.startswith("inv_")
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT password_hash, invitation_hash FROM auth.users WHERE user_id = %s",
            [member.user_id],
        ).fetchone()
    assert row[0] is None and row[1] and member.invitation not in row[1]


@pytest.mark.parametrize("user", USERS)
def test_raw_downloads_follow_the_same_rights(server: str, matrix: dict, user: str) -> None:
    for proposal_rows in (matrix["visible"]["alice"], matrix["visible"]["carol"]):
        for obs_id in proposal_rows:
            response = httpx.get(f"{server}/data/raw/{obs_id}", **_auth(user, matrix))
            allowed = obs_id in matrix["visible"][user]
            assert response.status_code == (200 if allowed else 404), (user, obs_id)
            if allowed:
                assert response.content[:9] == b"SIMPLE  ="
    assert httpx.get(f"{server}/data/raw/no-such-frame").status_code == 404


@pytest.mark.parametrize("user", USERS)
def test_products_provenance_and_downloads_per_user(
    server: str, tap_url: str, matrix: dict, user: str
) -> None:
    visible = matrix["visible"][user]
    expected = sorted(obs for obs, _ in matrix["products"].values() if obs in visible)
    query = "SELECT p.obs_id FROM archive.products AS p WHERE p.proposal_id LIKE 'MATRIX-%'"
    rows = _rows(httpx.get(f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": query},
                           **_auth(user, matrix)))  # fmt: skip
    assert rows == expected
    joined = (
        "SELECT f.obs_id FROM archive.products AS p JOIN archive.provenance AS v "
        "ON v.product_id = p.product_id JOIN archive.frames AS f ON f.frame_id = v.input_id "
        "WHERE p.proposal_id LIKE 'MATRIX-%' AND v.role = 'progenitor'"
    )
    rows = _rows(httpx.get(f"{tap_url}/sync", params={"LANG": "ADQL", "QUERY": joined},
                           **_auth(user, matrix)))  # fmt: skip
    assert rows == expected
    for product_id, (obs_id, content) in matrix["products"].items():
        response = httpx.get(f"{server}/data/products/{product_id}", **_auth(user, matrix))
        if obs_id in visible:
            assert response.status_code == 200 and response.content == content
        else:
            assert response.status_code == 404, (user, product_id)
            assert "SIMPLE" not in response.text and obs_id not in response.text


def test_api_proposals_members_and_settings(server: str, matrix: dict) -> None:
    api = f"{server}/api"
    alice, bob, carol = (_auth(u, matrix) for u in ("alice", "bob", "carol"))
    mine = httpx.get(f"{api}/proposals", **alice).json()["proposals"]
    assert [(p["code"], p["role"]) for p in mine] == [("MATRIX-P1", "pi")]
    assert httpx.get(f"{api}/proposals/MATRIX-P1", **carol).status_code == 404
    assert httpx.get(f"{api}/proposals/MATRIX-P1").status_code == 401
    detail = httpx.get(f"{api}/proposals/MATRIX-P1", **bob).json()
    assert {m["username"] for m in detail["members"]} >= {"alice", "bob"}
    # Only the PI adds collaborators; an unknown address becomes an invitation.
    refused = httpx.post(
        f"{api}/proposals/MATRIX-P1/members", json={"email": "x@example.org"}, **bob
    )
    assert refused.status_code == 403
    added = httpx.post(
        f"{api}/proposals/MATRIX-P1/members", json={"email": "guest@example.org"}, **alice
    )
    assert added.status_code == 201 and added.json()["invitation_token"].startswith("inv_")
    members = httpx.get(f"{api}/proposals/MATRIX-P1", **alice).json()["members"]
    guest = next(m["username"] for m in members if m["email"] == "guest@example.org")
    assert httpx.delete(f"{api}/proposals/MATRIX-P1/members/{guest}", **alice).status_code == 204
    # Settings: defaults, validated changes by the PI, read-only for collaborators.
    settings = httpx.get(f"{api}/proposals/MATRIX-P1/settings", **bob).json()
    assert settings["settings"] == settings["defaults"]
    bad = httpx.put(
        f"{api}/proposals/MATRIX-P1/settings", json={"flat_normalisation": "x"}, **alice
    )
    assert bad.status_code == 400 and "flat_normalisation" in bad.json()["error"]
    changed = httpx.put(f"{api}/proposals/MATRIX-P1/settings", json={"min_flats": 5}, **alice)
    assert changed.json()["settings"]["min_flats"] == 5
    assert (
        httpx.put(f"{api}/proposals/MATRIX-P1/settings", json={"min_flats": 6}, **bob).status_code
        == 403
    )


def test_api_tokens_and_sessions(server: str, tap_url: str, matrix: dict) -> None:
    api = f"{server}/api"
    carol = _auth("carol", matrix)
    created = httpx.post(f"{api}/tokens", json={"name": "script"}, **carol).json()
    listed = httpx.get(f"{api}/tokens", **carol).json()["tokens"]
    assert created["token_id"] in [t["token_id"] for t in listed]
    assert all("token" not in t for t in listed)  # the secret is never shown again
    bearer = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(f"{api}/me", headers=bearer).json()["username"] == "carol"
    assert (
        httpx.delete(f"{api}/tokens/{created['token_id']}", **_auth("alice", matrix)).status_code
        == 404
    )
    assert httpx.delete(f"{api}/tokens/{created['token_id']}", **carol).status_code == 204
    assert httpx.get(f"{api}/me", headers=bearer).status_code == 401
    # A browser session: the cookie identifies, unsafe requests need the CSRF token.
    with httpx.Client(base_url=server) as browser:
        session = browser.post(
            "/api/login", json={"username": "carol", "password": PASSWORDS["carol"]}
        )
        assert session.status_code == 200
        csrf = session.json()["csrf_token"]
        assert browser.get("/api/me").json()["username"] == "carol"
        rows = browser.get("/tap/sync", params={"LANG": "ADQL", "QUERY": SCIENCE})
        assert _rows(rows) == matrix["visible"]["carol"]
        forged = browser.post("/tap/sync", data={"LANG": "ADQL", "QUERY": SCIENCE})
        assert forged.status_code == 403
        genuine = browser.post(
            "/tap/sync", data={"LANG": "ADQL", "QUERY": SCIENCE, "csrf_token": csrf}
        )
        assert _rows(genuine) == matrix["visible"]["carol"]
        assert browser.post("/api/tokens", json={}).status_code == 403
        assert (
            browser.post("/api/tokens", json={}, headers={"X-CSRF-Token": csrf}).status_code == 201
        )
    wrong = httpx.post(f"{api}/login", json={"username": "carol", "password": "nope-nope"})
    assert wrong.status_code == 401


def test_openapi_document(server: str) -> None:
    document = httpx.get(f"{server}/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/api/proposals/{code}/members" in document["paths"]


def test_invited_user_sets_a_password_and_logs_in(server: str, matrix: dict) -> None:
    added = httpx.post(
        f"{server}/api/proposals/MATRIX-P2/members",
        json={"email": "postdoc@example.org"},
        **_auth("carol", matrix),
    )
    invitation = added.json()["invitation_token"]
    weak = httpx.post(
        f"{server}/api/invitations/accept",
        json={"invitation_token": invitation, "password": "12345678"},
    )
    assert weak.status_code == 400 and "password refused" in weak.json()["error"]
    accepted = httpx.post(
        f"{server}/api/invitations/accept",
        json={"invitation_token": invitation, "password": "Magellanic-Cloud-7"},
    )
    username = accepted.json()["username"]
    rows = httpx.get(
        f"{server}/tap/sync",
        params={"LANG": "ADQL", "QUERY": SCIENCE},
        auth=(username, "Magellanic-Cloud-7"),
    )
    assert _rows(rows) == matrix["visible"]["carol"]
    again = httpx.post(
        f"{server}/api/invitations/accept",
        json={"invitation_token": invitation, "password": "Magellanic-Cloud-8"},
    )
    assert again.status_code == 400
