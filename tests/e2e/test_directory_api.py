"""The directory over REST against the real `corral up` (SQLite and PostgreSQL): an admin makes
a sponsor and an agent, the agent's one-time credential works, and the admin's changes count on
the agent's very next request. No answer carries a user secret or a private key member, except
the one-time credential itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from corral.client.http import DPoPAuth
from corral.identity.directory import write_credential

from .conftest import Server

_SECRET_FIELDS = frozenset({"password", "password_hash", "totp_secret"})
_PRIVATE_JWK = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


def _secrets(body: Any, path: tuple[str, ...] = ()) -> list[str]:
    found: list[str] = []
    if isinstance(body, Mapping):
        for name, value in body.items():
            where = (*path, str(name))
            if name in _SECRET_FIELDS or (name in _PRIVATE_JWK and path != ("credential", "key")):
                found.append(".".join(where))
            found += _secrets(value, where)
    elif isinstance(body, list):
        for item in body:
            found += _secrets(item, path)
    return found


def call(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request whose answer is checked for secrets before the test looks at it."""
    response = client.request(method, path, **kw)
    if response.headers.get("content-type", "").startswith(
        ("application/json", "application/problem+json")
    ):
        assert _secrets(response.json()) == [], response.text
        assert "$argon2" not in response.text
    return response


def _once(server: Server, auth: DPoPAuth, method: str, path: str, token: str) -> httpx.Response:
    """One request with `token` and a fresh proof, no retry: a refusal shows as it is."""
    proof = auth.tokens.key.proof(method, server.url + path, access_token=token)
    return server.anon.request(
        method, path, headers={"Authorization": f"DPoP {token}", "DPoP": proof}
    )


def _clear_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()
    text = f"{error['detail']} {error.get('hint') or ''}"
    for word in words:
        assert word in text, text


@pytest.fixture(scope="module")
def made(server: Server) -> dict[str, Any]:
    """A sponsor `dir-sponsor` and an agent `dir-agent` sponsored by it, both made over REST."""
    user = call(
        server.http,
        "POST",
        "/v1/users",
        json={"name": "dir-sponsor", "roles": ["sponsor"], "password": "a long enough password"},
    )
    assert user.status_code == 201, user.text
    agent = call(
        server.http, "POST", "/v1/agents", json={"name": "dir-agent", "sponsors": ["dir-sponsor"]}
    )
    assert agent.status_code == 201, agent.text
    assert agent.headers["cache-control"] == "no-store"
    body = agent.json()
    assert body["credential"]["token_endpoint"] == f"{server.url}/v1/token"
    path = write_credential(server.tmp / "dir-agent.json", body["credential"])
    return {
        "user": user.json(),
        "agent": body["agent"],
        "credential": body["credential"],
        "path": path,
    }


def test_the_returned_credential_gets_a_token_and_lists_pools(
    server: Server, made: dict[str, Any]
) -> None:
    assert made["agent"]["sponsors"] == [{"id": made["user"]["id"], "name": "dir-sponsor"}]
    assert "d" in made["credential"]["key"]
    with server.client(made["path"]) as agent:
        listed = call(agent, "GET", "/v1/pools")
        assert listed.status_code == 200, listed.text
        assert isinstance(listed.json(), list)
        # an agent is no admin of the directory
        for path in ("/v1/users", "/v1/agents", "/v1/groups"):
            _clear_error(call(agent, "GET", path), 403, "admin")
        denied = call(agent, "POST", "/v1/users", json={"name": "mallory", "roles": ["admin"]})
        _clear_error(denied, 403, "admin role")
    # the server shows the agent's public key bookkeeping, never its private half
    shown = call(server.http, "GET", f"/v1/agents/{made['agent']['id']}")
    assert shown.status_code == 200 and made["credential"]["key"]["d"] not in shown.text
    assert [k["kid"] for k in shown.json()["keys"]] == [made["credential"]["key"]["kid"]]
    assert made["credential"]["key"]["d"] not in call(server.http, "GET", "/v1/agents").text


def test_disabling_over_rest_refuses_the_next_request(server: Server, made: dict[str, Any]) -> None:
    auth = DPoPAuth.from_credential(made["path"])
    token = auth.tokens.get()
    assert _once(server, auth, "GET", "/v1/pools", token).status_code == 200
    off = call(server.http, "POST", "/v1/agents/dir-agent/disable", json={"reason": "e2e"})
    assert off.status_code == 200 and not off.json()["enabled"]
    refused = _once(server, auth, "GET", "/v1/pools", token)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("DPoP")
    on = call(server.http, "POST", "/v1/agents/dir-agent/enable")
    assert on.status_code == 200 and on.json()["enabled"]
    assert _once(server, auth, "GET", "/v1/pools", token).status_code == 200


def test_removing_the_last_sponsor_disables_the_agent(server: Server, made: dict[str, Any]) -> None:
    auth = DPoPAuth.from_credential(made["path"])
    token = auth.tokens.get()
    removed = call(server.http, "DELETE", "/v1/agents/dir-agent/sponsors/dir-sponsor")
    assert removed.status_code == 200, removed.text
    assert not removed.json()["enabled"] and removed.json()["disabled_reason"] == "no sponsor"
    assert _once(server, auth, "GET", "/v1/pools", token).status_code == 401
    _clear_error(call(server.http, "POST", "/v1/agents/dir-agent/enable"), 409, "sponsor")
    added = call(server.http, "POST", "/v1/agents/dir-agent/sponsors", json={"user": "dir-sponsor"})
    assert added.status_code == 200
    assert call(server.http, "POST", "/v1/agents/dir-agent/enable").json()["enabled"]


def test_bad_input_gets_a_clear_4xx(server: Server, made: dict[str, Any]) -> None:
    http = server.http
    _clear_error(
        call(http, "POST", "/v1/agents", json={"name": "x1", "sponsors": []}), 400, "sponsors"
    )
    _clear_error(
        call(http, "POST", "/v1/agents", json={"name": "x1", "sponsors": ["ghost"]}), 404, "ghost"
    )
    _clear_error(
        call(http, "POST", "/v1/agents", json={"name": "dir-agent", "sponsors": ["dir-sponsor"]}),
        409,
        "already exists",
    )
    _clear_error(call(http, "POST", "/v1/users", json={"name": "Bad Name"}), 400, "lowercase")
    _clear_error(
        call(http, "POST", "/v1/users", json={"name": "eve", "password": "short"}),
        400,
        "at least 12 characters",
    )
    _clear_error(
        call(http, "POST", "/v1/users", json={"name": "eve", "password_hash": "$argon2id$x"}),
        400,
        "password_hash",
    )
    _clear_error(call(http, "PUT", "/v1/agents/dir-agent/risk", json={"level": "x"}), 400, "high")
    _clear_error(call(http, "GET", "/v1/agents/a-0000000000000000"), 404, "no agent")
    _clear_error(call(http, "GET", "/v1/users/nobody"), 404, "no user")
    _clear_error(call(http, "DELETE", "/v1/groups/nogroup"), 404, "no group")


def test_the_admin_sees_no_user_secret(server: Server, made: dict[str, Any]) -> None:
    users = call(server.http, "GET", "/v1/users")
    assert users.status_code == 200
    assert "dir-sponsor" in [u["name"] for u in users.json()]
    shown = call(server.http, "GET", "/v1/users/dir-sponsor")
    assert shown.status_code == 200 and "password" not in shown.text
    # the bootstrap admin is there, and is the last admin: it cannot be demoted over the API
    admin = next(u for u in users.json() if "admin" in u["roles"])
    _clear_error(
        call(server.http, "PUT", f"/v1/users/{admin['id']}/roles", json={"roles": []}),
        409,
        "last enabled admin",
    )
    rotated = call(server.http, "POST", "/v1/agents/dir-agent/keys/rotate", json={"grace_s": 60})
    assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
    assert "d" in rotated.json()["credential"]["key"]
    assert (
        rotated.json()["credential"]["key"]["d"]
        not in call(server.http, "GET", "/v1/agents/dir-agent").text
    )
