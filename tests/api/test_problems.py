"""Answers a client can act on without reading prose, through the real app: problem bodies
(RFC 9457) for validation and store outages, and RFC 9728 discovery of how to authenticate,
named by every 401's DPoP challenge (RFC 9449 section 7.1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from corral.problem import Problem
from tests.api.conftest import BASE, Client, Env

METADATA = "/.well-known/oauth-protected-resource"


def test_validation_answers_400_naming_the_field(admin: Client) -> None:
    r = admin("POST", "/v1/pools", json={"name": "p", "image": "minimal", "warm": -1})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = Problem.model_validate(r.json()).model_dump(exclude_none=True)
    assert body["type"] == "urn:corral:error:invalid_input" and body["title"] == "Invalid input"
    assert body["status"] == 400 and body["code"] == "invalid_input"
    assert body["errors"] == [
        {"field": "body.warm", "detail": "Input should be greater than or equal to 0"}
    ]
    assert "body.warm" in body["detail"]
    assert body["error"]["code"] == "invalid_input"  # the deprecated alias, for one release


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/v1/pools", ""),
        ("/mcp", "/mcp"),
        ("/sessions/s-1/mcp", "/sessions/s-1/mcp"),
    ],
)
def test_a_401_points_to_the_resource_metadata(env: Env, path: str, resource: str) -> None:
    assert env.http is not None
    refused = env.http.get(path)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    challenge = refused.headers["www-authenticate"]
    url = f"{BASE}{METADATA}{resource}"
    assert challenge == f'DPoP algs="EdDSA ES256 Ed25519", resource_metadata="{url}"'
    # The metadata is readable without a token, and names the resource the client asked for
    # (RFC 9728 section 3.3: a client checks `resource` against the URL it used).
    metadata = env.http.get(url.removeprefix(BASE))
    assert metadata.status_code == 200, metadata.text
    assert metadata.json() == {
        "resource": BASE + resource,
        "authorization_servers": [BASE],
        "jwks_uri": f"{BASE}/.well-known/jwks.json",
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256", "Ed25519"],
        "dpop_bound_access_tokens_required": True,
        "resource_name": metadata.json()["resource_name"],
    }


def test_an_invalid_token_challenge_carries_its_error_and_the_metadata(
    env: Env, admin: Client
) -> None:
    r = admin.once("GET", "/v1/pools", token="not.a.token")  # noqa: S106
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('DPoP error="invalid_token", error_description="')
    assert challenge.endswith(f'resource_metadata="{BASE}{METADATA}"')
    assert r.json()["code"] == "invalid_token" and r.headers["cache-control"] == "no-store"


def test_the_authorization_server_names_its_token_endpoint(env: Env) -> None:
    assert env.http is not None
    server = env.http.get("/.well-known/oauth-authorization-server").json()
    assert server["issuer"] == BASE and server["token_endpoint"] == f"{BASE}/v1/token"
    assert server["grant_types_supported"] == ["client_credentials"]
    assert server["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert server["dpop_signing_alg_values_supported"] == ["EdDSA", "ES256", "Ed25519"]


def test_metadata_of_no_resource_is_not_found(env: Env) -> None:
    assert env.http is not None
    for path in ("/v1/pools", "/sessions/a/b/mcp", "/console"):
        r = env.http.get(METADATA + path)
        assert r.status_code == 404, path
        assert r.json()["code"] == "not_found"


def test_a_store_outage_answers_503_with_retry_after(
    env: Env, admin: Client, tmp_path: Path
) -> None:
    assert admin("GET", "/v1/pools").status_code == 200  # token fetched, all well
    # The database file goes away under the server: no connection can open it.
    env.store.close()
    shutil.move(tmp_path / "corral.db", tmp_path / "moved.db")
    (tmp_path / "corral.db").mkdir()
    try:
        r = admin.once("GET", "/v1/pools")
    finally:  # back, so the app's shutdown finds its store
        (tmp_path / "corral.db").rmdir()
        shutil.move(tmp_path / "moved.db", tmp_path / "corral.db")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "2"
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "store_unavailable" and body["retry_after_s"] == 2
    assert body["type"] == "urn:corral:error:store_unavailable"
