"""`/v1/users`, `/v1/agents` and `/v1/groups` on the real app, with real DPoP-signed requests.

Every answer the `Client` helper sees is checked for secrets (see conftest.secrets_in).
"""

from __future__ import annotations

from typing import Any

import pytest

from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Role
from corral.identity.directory import CREDENTIAL_FIELDS
from corral.identity.passwords import verify_password
from tests.api.conftest import BASE, PASSWORD, TOKEN_URL, Client, Env, secrets_in


def _error(response: Any, status: int, code: str, *words: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == code, error
    text = f"{error['detail']} {error.get('hint') or ''}"
    for word in words:
        assert word in text, text
    return text


# users


def test_admin_creates_reads_and_changes_users(env: Env, admin: Client) -> None:
    dora_in = {"name": "dora", "email": "dora@example.com", "roles": ["sponsor"]}
    made = admin("POST", "/v1/users", json={**dora_in, "password": PASSWORD})
    assert made.status_code == 201, made.text
    dora = made.json()
    assert dora["name"] == "dora" and dora["roles"] == ["sponsor"] and dora["enabled"]
    assert dora["email"] == "dora@example.com" and not dora["totp_enabled"]
    assert dora["id"].startswith("u-") and PASSWORD not in made.text
    # only the argon2id hash was kept, and it verifies the password sent
    stored = env.store.get_user_secrets("dora").password_hash
    assert stored is not None and stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD)

    names = [u["name"] for u in admin("GET", "/v1/users").json()]
    assert names == ["alice", "dora", "root", "sec"]
    assert admin("GET", f"/v1/users/{dora['id']}").json() == dora
    assert admin("GET", "/v1/users/dora").json() == dora

    roles = admin("PUT", "/v1/users/dora/roles", json={"roles": ["security_admin", "sponsor"]})
    assert roles.status_code == 200, roles.text
    assert roles.json()["roles"] == ["security_admin", "sponsor"]
    assert roles.json()["agents_disabled"] == []
    assert env.store.get_user("dora").roles == {Role.SECURITY_ADMIN, Role.SPONSOR}

    off = admin("POST", "/v1/users/dora/disable")
    assert off.status_code == 200 and not off.json()["enabled"]
    assert not env.store.get_user("dora").enabled
    on = admin("POST", "/v1/users/dora/enable")
    assert on.status_code == 200 and on.json()["enabled"]

    revoked = admin("POST", "/v1/users/dora/revoke")
    assert revoked.json() == {"id": dora["id"], "tokens_revoked": True}


def test_user_input_errors_say_what_to_change(admin: Client) -> None:
    _error(admin("POST", "/v1/users", json={"name": "alice"}), 409, "conflict", "already exists")
    _error(admin("POST", "/v1/users", json={"name": "Bad Name"}), 400, "invalid_input", "lowercase")
    bad_role = admin("POST", "/v1/users", json={"name": "eve", "roles": ["root"]})
    _error(bad_role, 400, "invalid_input", "roles", "admin", "security_admin", "sponsor")
    short = admin("POST", "/v1/users", json={"name": "eve", "password": "short"})
    _error(short, 400, "invalid_input", "at least 12 characters")
    assert "short" not in short.json()["detail"].replace("too short", "")
    email = admin("POST", "/v1/users", json={"name": "eve", "email": "nope"})
    _error(email, 400, "invalid_input", "email")
    extra = admin("POST", "/v1/users", json={"name": "eve", "password_hash": "x"})
    _error(extra, 400, "invalid_input", "password_hash", "Extra inputs")
    _error(admin("POST", "/v1/users", content=b"{"), 400, "invalid_input")
    _error(admin("GET", "/v1/users/nobody"), 404, "not_found", "nobody")
    _error(admin("POST", "/v1/users/nobody/disable"), 404, "not_found")
    _error(admin("POST", "/v1/users/bot/revoke"), 404, "not_found")  # an agent is no user


def test_the_last_admin_stays_admin_and_enabled(env: Env, admin: Client) -> None:
    _error(
        admin("PUT", "/v1/users/root/roles", json={"roles": ["sponsor"]}),
        409, "conflict", "last enabled admin", "another user",
    )  # fmt: skip
    _error(admin("POST", "/v1/users/root/disable"), 409, "conflict", "last enabled admin")
    assert env.store.get_user("root").enabled
    assert env.store.get_user("root").roles == {Role.ADMIN}


def test_dropping_the_sponsor_role_disables_agents_left_without_one(
    env: Env, admin: Client, bot: Client
) -> None:
    token = bot.tokens.get()
    changed = admin("PUT", "/v1/users/alice/roles", json={"roles": []})
    assert changed.status_code == 200, changed.text
    assert changed.json()["agents_disabled"] == [env.creds["bot"]["agent_id"]]
    assert bot.once("GET", "/v1/pools", token).status_code == 401


# agents


def test_agent_create_answers_the_credential_once_and_keeps_only_the_public_key(
    env: Env, admin: Client
) -> None:
    made = admin("POST", "/v1/agents", json={"name": "helper", "sponsors": ["alice"]})
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    body = made.json()
    cred, agent = body["credential"], body["agent"]
    assert set(CREDENTIAL_FIELDS) <= set(cred) and cred["agent_id"] == agent["id"]
    assert cred["client_id"] == agent["id"] and cred["token_endpoint"] == TOKEN_URL
    assert {"d", "x", "kid"} <= set(cred["key"]) and cred["key"]["alg"] == "EdDSA"
    assert agent["enabled"] and agent["risk"] == "none"
    assert agent["sponsors"] == [{"id": env.store.get_user("alice").id, "name": "alice"}]
    assert [k["kid"] for k in agent["keys"]] == [cred["key"]["kid"]]
    assert agent["keys"][0]["usable"] and agent["keys"][0]["kty"] == "OKP"
    # the server has the public half only; reading the agent never shows a private member
    (stored,) = env.store.list_agent_keys(agent["id"])
    assert "d" not in stored.public_jwk and stored.public_jwk["x"] == cred["key"]["x"]
    shown = admin("GET", f"/v1/agents/{agent['id']}")
    assert shown.status_code == 200 and cred["key"]["d"] not in shown.text
    assert cred["key"]["d"] not in admin("GET", "/v1/agents").text
    # the credential works: a token, then a request
    helper = env.client(cred)
    assert helper("GET", "/v1/pools").status_code == 200


def test_agent_state_changes_count_on_the_next_request(
    env: Env, admin: Client, bot: Client
) -> None:
    assert bot.once("GET", "/v1/pools").status_code == 200
    off = admin("POST", "/v1/agents/bot/disable", json={"reason": "investigating"})
    assert off.status_code == 200, off.text
    assert not off.json()["enabled"] and off.json()["disabled_reason"] == "investigating"
    refused = bot.once("GET", "/v1/pools")
    assert refused.status_code == 401 and "DPoP" in refused.headers["www-authenticate"]
    assert admin("POST", "/v1/agents/bot/enable").json()["enabled"]
    assert bot.once("GET", "/v1/pools").status_code == 200

    high = admin("PUT", "/v1/agents/bot/risk", json={"level": "high"})
    assert high.status_code == 200 and high.json()["risk"] == "high"
    assert bot.once("GET", "/v1/pools").status_code == 401
    admin("PUT", "/v1/agents/bot/risk", json={"level": "low"})
    assert bot.once("GET", "/v1/pools").status_code == 200

    token = bot.tokens.get()
    revoked = admin("POST", "/v1/agents/bot/revoke")
    assert revoked.json() == {"id": env.creds["bot"]["agent_id"], "tokens_revoked": True}
    assert bot.once("GET", "/v1/pools", token).status_code == 401


def test_sponsors_and_the_last_one(env: Env, admin: Client, bot: Client) -> None:
    token = bot.tokens.get()
    env.directory.create_user("bob", roles=["sponsor"])
    added = admin("POST", "/v1/agents/bot/sponsors", json={"user": "bob"})
    assert [s["name"] for s in added.json()["sponsors"]] == ["alice", "bob"]
    _error(admin("POST", "/v1/agents/bot/sponsors", json={"user": "bob"}), 409, "conflict")
    _error(
        admin("POST", "/v1/agents/bot/sponsors", json={"user": "sec"}),
        400, "invalid_input", "sponsor role",
    )  # fmt: skip
    one = admin("DELETE", "/v1/agents/bot/sponsors/alice")
    assert one.status_code == 200 and one.json()["enabled"]
    last = admin("DELETE", "/v1/agents/bot/sponsors/bob")
    assert last.status_code == 200, last.text
    assert not last.json()["enabled"] and last.json()["disabled_reason"] == "no sponsor"
    assert last.json()["sponsors"] == []
    assert bot.once("GET", "/v1/pools", token).status_code == 401
    _error(admin("POST", "/v1/agents/bot/enable"), 409, "conflict", "sponsor")
    _error(admin("DELETE", "/v1/agents/bot/sponsors/bob"), 400, "invalid_input", "does not sponsor")


def test_key_rotation_and_revocation(env: Env, admin: Client, bot: Client) -> None:
    old_kid = env.creds["bot"]["key"]["kid"]
    rotated = admin("POST", "/v1/agents/bot/keys/rotate", json={"grace_s": 0})
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    cred = rotated.json()["credential"]
    assert cred["key"]["kid"] != old_kid and "d" in cred["key"]
    keys = {k["kid"]: k for k in admin("GET", "/v1/agents/bot/keys").json()}
    assert set(keys) == {old_kid, cred["key"]["kid"]}
    assert not keys[old_kid]["usable"] and keys[cred["key"]["kid"]]["usable"]
    assert env.client(cred)("GET", "/v1/pools").status_code == 200

    revoked = admin("POST", f"/v1/agents/bot/keys/{cred['key']['kid']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert not revoked.json()["usable"]
    _error(admin("POST", "/v1/agents/bot/keys/nokey/revoke"), 404, "not_found")
    _error(
        admin("POST", "/v1/agents/bot/keys/rotate", json={"grace_s": -1}),
        400, "invalid_input", "grace_s",
    )  # fmt: skip


def test_agent_input_errors_say_what_to_change(admin: Client) -> None:
    _error(
        admin("POST", "/v1/agents", json={"name": "x1", "sponsors": []}),
        400, "invalid_input", "sponsors", "at least 1",
    )  # fmt: skip
    _error(admin("POST", "/v1/agents", json={"name": "x1"}), 400, "invalid_input", "sponsors")
    ghost = admin("POST", "/v1/agents", json={"name": "x1", "sponsors": ["ghost"]})
    _error(ghost, 404, "not_found", "ghost")
    _error(
        admin("POST", "/v1/agents", json={"name": "x1", "sponsors": ["sec"]}),
        400, "invalid_input", "sponsor role",
    )  # fmt: skip
    taken = admin("POST", "/v1/agents", json={"name": "bot", "sponsors": ["alice"]})
    _error(taken, 409, "conflict", "already exists")
    _error(
        admin("POST", "/v1/agents", json={"name": "x1", "sponsors": ["alice"], "key": {"d": "x"}}),
        400, "invalid_input", "key", "Extra inputs",
    )  # fmt: skip
    _error(
        admin("PUT", "/v1/agents/bot/risk", json={"level": "extreme"}),
        400, "invalid_input", "none", "high",
    )  # fmt: skip
    _error(admin("GET", "/v1/agents/ghost"), 404, "not_found", "ghost", "agent list")
    _error(admin("POST", "/v1/agents/alice/revoke"), 404, "not_found")  # a user is no agent


# groups


def test_groups_and_members(env: Env, admin: Client) -> None:
    made = admin("POST", "/v1/groups", json={"name": "ops", "description": "on call"})
    assert made.status_code == 201, made.text
    assert made.json()["users"] == [] and made.json()["description"] == "on call"
    _error(admin("POST", "/v1/groups", json={"name": "ops"}), 409, "conflict")
    alice = admin("POST", "/v1/groups/ops/members", json={"kind": "user", "member": "alice"})
    assert alice.status_code == 200, alice.text
    added = admin("POST", "/v1/groups/ops/members", json={"kind": "agent", "member": "bot"})
    assert added.json()["users"] == ["alice"] and added.json()["agents"] == ["bot"]
    assert admin("GET", "/v1/groups/ops/members").json() == {"users": ["alice"], "agents": ["bot"]}
    assert admin("GET", "/v1/agents/bot").json()["groups"] == ["ops"]
    assert admin("GET", "/v1/users/alice").json()["groups"] == ["ops"]
    assert [g["name"] for g in admin("GET", "/v1/groups").json()] == ["ops"]
    _error(
        admin("POST", "/v1/groups/ops/members", json={"kind": "robot", "member": "bot"}),
        400, "invalid_input", "kind", "user", "agent",
    )  # fmt: skip
    _error(
        admin("POST", "/v1/groups/ops/members", json={"kind": "user", "member": "ghost"}),
        404, "not_found",
    )  # fmt: skip
    removed = admin("DELETE", "/v1/groups/ops/members/agent/bot")
    assert removed.status_code == 200 and removed.json()["agents"] == []
    assert admin("DELETE", "/v1/groups/ops").status_code == 204
    _error(admin("GET", "/v1/groups/ops"), 404, "not_found")
    _error(admin("DELETE", "/v1/groups/ops"), 404, "not_found")
    assert env.store.get_user("alice").groups == ()


# who may do what


def test_agents_and_sponsors_are_refused_everything(sponsor: Client, bot: Client) -> None:
    for who in (bot, sponsor):
        for method, path, body in (
            ("GET", "/v1/users", None),
            ("GET", "/v1/users/alice", None),
            ("GET", "/v1/agents", None),
            ("GET", "/v1/agents/bot", None),
            ("GET", "/v1/groups", None),
            ("POST", "/v1/users", {"name": "mallory", "roles": ["admin"]}),
            ("POST", "/v1/agents", {"name": "mole", "sponsors": ["alice"]}),
            ("POST", "/v1/agents/bot/revoke", None),
            ("PUT", "/v1/agents/bot/risk", {"level": "none"}),
            ("PUT", "/v1/users/alice/roles", {"roles": ["admin"]}),
        ):
            _error(who(method, path, json=body), 403, "permission_denied")


def test_security_admins_read_and_contain_but_do_not_grant(
    env: Env, security: Client, bot: Client
) -> None:
    assert [u["name"] for u in security("GET", "/v1/users").json()] == ["alice", "root", "sec"]
    assert security("GET", "/v1/agents/bot").status_code == 200
    assert security("GET", "/v1/agents/bot/keys").status_code == 200
    assert security("GET", "/v1/groups").status_code == 200
    assert security("PUT", "/v1/agents/bot/risk", json={"level": "medium"}).status_code == 200
    assert security("POST", "/v1/agents/bot/disable").status_code == 200
    assert security("POST", "/v1/agents/bot/revoke").status_code == 200
    assert security("POST", "/v1/users/alice/revoke").status_code == 200
    kid = env.creds["bot"]["key"]["kid"]
    assert security("POST", f"/v1/agents/bot/keys/{kid}/revoke").status_code == 200
    for method, path, body in (
        ("POST", "/v1/agents/bot/enable", None),
        ("POST", "/v1/users", {"name": "mallory", "roles": ["admin"]}),
        ("PUT", "/v1/users/sec/roles", {"roles": ["admin"]}),
        ("POST", "/v1/agents", {"name": "mole", "sponsors": ["alice"]}),
        ("POST", "/v1/agents/bot/sponsors", {"user": "root"}),
        ("POST", "/v1/agents/bot/keys/rotate", None),
        ("POST", "/v1/groups", {"name": "ops"}),
    ):
        _error(security(method, path, json=body), 403, "permission_denied", "admin role")
    assert env.store.get_user("sec").roles == {Role.SECURITY_ADMIN}
    assert security("POST", "/v1/users/alice/disable").status_code == 200
    assert not env.store.get_agent("bot").enabled


def test_a_session_token_opens_no_directory_route(env: Env, admin: Client) -> None:
    # A session token's audience is its session: on any other URL it is refused outright.
    root = Caller(
        CallerKind.USER,
        env.store.get_user("root").id,
        frozenset({Role.ADMIN}),
        jkt=admin.tokens.key.thumbprint,
    )
    issued = env.auth.session_token(root, "s-0000")
    proof = admin.tokens.key.proof("GET", f"{BASE}/v1/users", access_token=issued.access_token)
    assert env.http is not None
    refused = env.http.get(
        "/v1/users", headers={"Authorization": f"DPoP {issued.access_token}", "DPoP": proof}
    )
    assert refused.status_code == 401


def test_unauthenticated_requests_are_refused(env: Env) -> None:
    assert env.http is not None
    for path in ("/v1/users", "/v1/agents", "/v1/groups"):
        assert env.http.get(path).status_code == 401


def test_openapi_lists_the_directory_with_tags(admin: Client) -> None:
    spec = admin("GET", "/openapi.json", check_secrets=False).json()  # names fields, holds none
    paths = spec["paths"]
    for path, method, tag in (
        ("/v1/users", "post", "users"),
        ("/v1/users/{ref}/roles", "put", "users"),
        ("/v1/agents", "post", "agents"),
        ("/v1/agents/{ref}/revoke", "post", "agents"),
        ("/v1/agents/{ref}/keys/rotate", "post", "agents"),
        ("/v1/groups/{ref}/members", "post", "groups"),
    ):
        assert paths[path][method]["tags"] == [tag], (path, method)
    schemas = spec["components"]["schemas"]
    assert schemas["UserCreate"]["additionalProperties"] is False
    assert set(schemas["UserOut"]["properties"]).isdisjoint({"password", "password_hash"})
    assert "totp_secret" not in str(spec)


def test_secrets_in_finds_what_it_must() -> None:
    assert secrets_in({"credential": {"key": {"d": "x"}}}) == []
    assert secrets_in({"agent": {"keys": [{"d": "x"}]}}) == ["agent.keys.d"]
    assert secrets_in([{"password_hash": "h"}, {"totp_secret": "s"}]) == [
        "password_hash",
        "totp_secret",
    ]


@pytest.mark.parametrize("grace", [None, {"grace_s": 3600}])
def test_rotation_with_grace_keeps_the_old_key_working(
    env: Env, admin: Client, bot: Client, grace: dict[str, int] | None
) -> None:
    assert admin("POST", "/v1/agents/bot/keys/rotate", json=grace).status_code == 200
    keys = admin("GET", "/v1/agents/bot/keys").json()
    assert [k["usable"] for k in keys] == [True, True]
    assert keys[0]["expires_at"] is not None
    bot.tokens.invalidate(bot.tokens.get())  # the old key still gets a token in the grace
    assert bot("GET", "/v1/pools").status_code == 200


def test_security_admins_raise_an_agents_risk_but_never_lower_it(
    env: Env, security: Client, admin: Client
) -> None:
    """Issue 9, section 7: lowering a risk gives access back, which only admins may do. A
    security admin who tries gets 403 and the risk (and the high-risk forbid) stays."""
    for level in ("low", "high", "high"):  # raising, and setting the same level, are allowed
        raised = security("PUT", "/v1/agents/bot/risk", json={"level": level})
        assert raised.status_code == 200 and raised.json()["risk"] == level, raised.text
    for level in ("medium", "low", "none"):
        _error(
            security("PUT", "/v1/agents/bot/risk", json={"level": level}),
            403,
            "permission_denied",
            "from high to",
            "never lower",
            "admin",
        )
    assert admin("GET", "/v1/agents/bot").json()["risk"] == "high"
    lowered = admin("PUT", "/v1/agents/bot/risk", json={"level": "none"})
    assert lowered.status_code == 200 and lowered.json()["risk"] == "none", lowered.text
