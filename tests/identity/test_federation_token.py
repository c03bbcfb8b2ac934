"""POST /v1/token with a workload identity token of a trusted provider, in process: the real
token endpoint and directory on SQLite, a provider with pinned RSA keys."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from joserfc.jwk import RSAKey
from joserfc.jws import serialize_compact
from starlette.testclient import TestClient

from corral.api.auth_routes import include_auth
from corral.domain.federation import OidcProvider
from corral.domain.models import PoolSpec
from corral.identity import CLIENT_ASSERTION_TYPE, DPoPKey, SigningKeyring, verify_access_token
from corral.identity import federation as fed
from corral.identity.directory import Directory
from corral.identity.token_endpoint import AuthService
from corral.store import Store

BASE = "http://testserver"
TOKEN_URL = f"{BASE}/v1/token"
ISSUER = "https://ci.example"
AUDIENCE = "https://corral.example"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        directory = Directory(self.store)
        directory.create_user("alice", roles=["sponsor", "admin"])
        self.user_id = directory.get_user("alice").id
        self.agent_id = directory.create_agent("ci-bot", sponsors=["alice"])["agent_id"]
        self.key = RSAKey.generate_key(2048)
        jwks = {"keys": [{**self.key.as_dict(private=False), "kid": "k1"}]}
        self.store.create_oidc_provider(
            OidcProvider(
                name="ci", issuer=ISSUER, audience=AUDIENCE, jwks=jwks, allow_assertions=True
            )
        )
        self.store.link_subject("ci", "repo:acme/app", "agent", "ci-bot")
        self.store.link_subject("ci", "alice@ci", "user", "alice")
        self.keyring = SigningKeyring.generate()
        self.auth = AuthService(self.store, self.keyring, BASE, TOKEN_URL)
        app = FastAPI()
        include_auth(app, self.auth)
        self.client = TestClient(app, base_url=BASE)
        self.dpop = DPoPKey.generate()
        self.n = 0

    def workload_token(self, **changes: Any) -> str:
        self.n += 1
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "repo:acme/app",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "jti": f"run-{self.n}",
            **changes,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
        return serialize_compact(header, json.dumps(claims), self.key, registry=fed._REGISTRY)

    def post(self, assertion: str, proof: bool = True, **form: str) -> Any:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            **form,
        }
        headers = {"DPoP": self.dpop.proof("POST", TOKEN_URL)} if proof else {}
        return self.client.post("/v1/token", data=data, headers=headers)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def test_workload_token_gets_a_dpop_bound_token_for_the_linked_agent(env: Env) -> None:
    r = env.post(env.workload_token())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "DPoP"  # noqa: S105
    claims = verify_access_token(
        body["access_token"], keyring=env.keyring, issuer=BASE, audience=BASE
    )
    assert claims.subject == env.agent_id and claims.client_id == env.agent_id
    assert claims.jkt == env.dpop.thumbprint
    # the form may name the client, as the linked identity
    assert env.post(env.workload_token(), client_id=env.agent_id).status_code == 200


def test_a_subject_linked_to_a_user_gets_a_user_token(env: Env) -> None:
    r = env.post(env.workload_token(sub="alice@ci"))
    assert r.status_code == 200, r.text
    claims = verify_access_token(
        r.json()["access_token"], keyring=env.keyring, issuer=BASE, audience=BASE
    )
    assert claims.subject == env.user_id


def test_each_workload_token_is_used_once(env: Env) -> None:
    token = env.workload_token()
    assert env.post(token).status_code == 200
    again = env.post(token)
    assert again.status_code == 401 and "already used" in again.json()["error_description"]
    no_jti = env.workload_token(jti=None)
    assert env.post(no_jti).status_code == 200
    assert env.post(no_jti).status_code == 401  # remembered by its hash until it expires


def test_refusals(env: Env) -> None:
    def error(r: Any) -> tuple[int, str]:
        return r.status_code, r.json()["error"]

    # a DPoP proof is still required
    assert error(env.post(env.workload_token(), proof=False)) == (400, "invalid_dpop_proof")
    # unmapped subject, wrong audience, expired
    r = env.post(env.workload_token(sub="repo:acme/other"))
    assert error(r) == (401, "invalid_client") and "not linked" in r.json()["error_description"]
    assert error(env.post(env.workload_token(aud="https://other.example"))) == (
        401,
        "invalid_client",
    )
    past = int(time.time()) - 900
    assert error(env.post(env.workload_token(iat=past, exp=past + 300))) == (401, "invalid_client")
    # client_id naming someone else
    r = env.post(env.workload_token(), client_id="a-0000000000000000")
    assert error(r) == (401, "invalid_client")
    # a token from an issuer that is no provider is an ordinary (failing) client assertion
    assert error(env.post(env.workload_token(iss="https://stranger.example"))) == (
        401,
        "invalid_client",
    )
    # a disabled agent
    Directory(env.store).disable_agent("ci-bot")
    r = env.post(env.workload_token())
    assert error(r) == (401, "invalid_client") and "disabled" in r.json()["error_description"]


def test_a_provider_not_trusted_for_assertions(env: Env) -> None:
    env.store.delete_oidc_provider("ci")
    jwks = {"keys": [{**env.key.as_dict(private=False), "kid": "k1"}]}
    env.store.create_oidc_provider(
        OidcProvider(name="ci", issuer=ISSUER, audience=AUDIENCE, jwks=jwks, allow_events=True)
    )
    env.store.link_subject("ci", "repo:acme/app", "agent", "ci-bot")
    r = env.post(env.workload_token())
    assert r.status_code == 401 and "not trusted" in r.json()["error_description"]


def test_no_bearer_token_for_a_workload_token(env: Env) -> None:
    """Even while a pool accepts bearer tokens, a workload token buys only a bound token."""
    env.store.create_pool(PoolSpec(name="open", image="minimal", warm=0, allow_bearer=True))
    r = env.post(env.workload_token(), proof=False)
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof", r.text
    assert env.post(env.workload_token()).status_code == 200
