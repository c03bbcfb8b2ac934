"""POST /v1/token and /.well-known/jwks.json in process: a FastAPI app with only the auth
router, a real directory on SQLite, real proofs and assertions."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI
from starlette.testclient import TestClient

from corral.api.auth_routes import include_auth
from corral.identity import (
    CLIENT_ASSERTION_TYPE,
    DPoPKey,
    NonceSource,
    ReplayCache,
    SigningKeyring,
    client_assertion,
    verify_access_token,
    verify_request,
)
from corral.identity.directory import Credential, Directory
from corral.identity.token_endpoint import AuthService, RateLimit
from corral.store import Store

BASE = "http://testserver"
TOKEN_URL = f"{BASE}/v1/token"


class Env:
    """One server (store, keyring, app) and one agent with its credential."""

    def __init__(self, tmp: Path, **service: Any) -> None:
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        self.directory = Directory(self.store)
        self.directory.create_user("alice", roles=["sponsor"])
        self.cred: Credential = self.directory.create_agent(
            "bot", sponsors=["alice"], token_endpoint=TOKEN_URL
        )
        self.agent_id: str = self.cred["agent_id"]
        self.keyring = SigningKeyring.generate()
        self.auth = AuthService(self.store, self.keyring, BASE, TOKEN_URL, **service)
        app = FastAPI()
        include_auth(app, self.auth)
        self.client = TestClient(app, base_url=BASE)
        self.dpop = DPoPKey.generate()

    def form(self, **overrides: str | None) -> dict[str, str]:
        fields: dict[str, str | None] = {
            "grant_type": "client_credentials",
            "client_id": self.agent_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(self.agent_id, TOKEN_URL, self.cred["key"]),
            **overrides,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def post(
        self,
        form: dict[str, str] | None = None,
        proof: str | None = "fresh",
        **kw: Any,
    ) -> Any:
        headers = kw.pop("headers", {})
        if proof == "fresh":
            proof = self.dpop.proof("POST", TOKEN_URL)
        if proof is not None:
            headers["DPoP"] = proof
        return self.client.post("/v1/token", data=form or self.form(), headers=headers, **kw)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.client.close()
    e.store.close()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verified_with_jwks(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Check the signature with the published key alone (no Corral code), return the claims."""
    header_b64, claims_b64, signature = token.split(".")
    header = json.loads(_unb64(header_b64))
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and header["alg"] == "EdDSA"
    public = Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"]))
    public.verify(_unb64(signature), f"{header_b64}.{claims_b64}".encode())  # raises if forged
    claims: dict[str, Any] = json.loads(_unb64(claims_b64))
    return {k: claims[k] for k in ("iss", "sub", "aud", "jti", "iat", "exp", "cnf")}


def refused(response: Any, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert response.headers["cache-control"] == "no-store"
    return str(body["error_description"])


def test_token_is_issued_bound_and_verifies_against_the_jwks(env: Env) -> None:
    r = env.post()
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "DPoP"  # noqa: S105
    assert body["expires_in"] == 300
    assert set(body) == {"access_token", "token_type", "expires_in"}

    claims = verify_access_token(
        body["access_token"], keyring=env.keyring, issuer=BASE, audience=BASE
    )
    assert claims.subject == env.agent_id
    assert claims.client_id == env.agent_id
    assert claims.jkt == env.dpop.thumbprint
    assert claims.expires_at - claims.issued_at == 300

    jwks = env.client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert all("d" not in k for k in jwks.json()["keys"])
    assert verified_with_jwks(body["access_token"], jwks.json()) == {
        **{k: claims.raw[k] for k in ("iss", "sub", "aud", "jti", "iat", "exp")},
        "cnf": {"jkt": env.dpop.thumbprint},
    }

    # The token works on a request signed by the same DPoP key.
    url = f"{BASE}/v1/pools"
    principal = verify_request(
        "GET",
        url,
        f"DPoP {body['access_token']}",
        env.dpop.proof("GET", url, access_token=body["access_token"]),
        keyring=env.keyring,
        issuer=BASE,
        audience=BASE,
        replay=ReplayCache(),
        revocation=lambda c: True,
        now=time.time(),
    )
    assert principal.subject == env.agent_id


def test_client_id_may_be_left_to_the_assertion(env: Env) -> None:
    assert env.post(env.form(client_id=None)).status_code == 200


def test_wrong_grant_type(env: Env) -> None:
    refused(env.post(env.form(grant_type="password")), 400, "unsupported_grant_type")
    refused(env.post(env.form(grant_type=None)), 400, "invalid_request")


def test_wrong_assertion_type(env: Env) -> None:
    bad = env.form(client_assertion_type="urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
    refused(env.post(bad), 401, "invalid_client")


def test_missing_or_invalid_proof(env: Env) -> None:
    refused(env.post(proof=None), 400, "invalid_dpop_proof")
    refused(env.post(proof="not.a.proof"), 400, "invalid_dpop_proof")
    refused(env.post(proof=env.dpop.proof("GET", TOKEN_URL)), 400, "invalid_dpop_proof")
    stale = env.dpop.proof("POST", TOKEN_URL, now=time.time() - 600)
    refused(env.post(proof=stale), 400, "invalid_dpop_proof")


def test_proof_for_another_url(env: Env) -> None:
    other = env.dpop.proof("POST", f"{BASE}/v1/other")
    assert "htu" in refused(env.post(proof=other), 400, "invalid_dpop_proof")


def test_replayed_proof(env: Env) -> None:
    proof = env.dpop.proof("POST", TOKEN_URL)
    assert env.post(proof=proof).status_code == 200
    assert "replayed" in refused(env.post(proof=proof), 400, "invalid_dpop_proof")


def test_replayed_assertion(env: Env) -> None:
    form = env.form()
    assert env.post(form).status_code == 200
    assert "replayed" in refused(env.post(form), 401, "invalid_client")


def test_assertion_signed_by_an_unknown_key(env: Env) -> None:
    stranger = DPoPKey.generate().private_jwk()
    forged = client_assertion(env.agent_id, TOKEN_URL, stranger)
    refused(env.post(env.form(client_assertion=forged)), 401, "invalid_client")


def test_unknown_client_and_name_as_client_id(env: Env) -> None:
    for client_id in ("a-0000000000000000", "bot"):
        assertion = client_assertion(client_id, TOKEN_URL, env.cred["key"])
        form = env.form(client_id=client_id, client_assertion=assertion)
        refused(env.post(form), 401, "invalid_client")


def test_assertion_for_another_client_id(env: Env) -> None:
    env.directory.create_agent("other", sponsors=["alice"])
    other = env.directory.get_agent("other").id
    refused(env.post(env.form(client_id=other)), 401, "invalid_client")


def test_disabled_agent(env: Env) -> None:
    env.directory.disable_agent("bot", reason="test")
    assert "disabled" in refused(env.post(), 401, "invalid_client")


def test_agent_without_sponsor(env: Env) -> None:
    env.directory.remove_sponsor("bot", "alice")
    assert "no sponsor" in refused(env.post(), 401, "invalid_client")


def test_disabled_sponsor_disables_the_agent(env: Env) -> None:
    env.directory.disable_user("alice")
    refused(env.post(), 401, "invalid_client")


def test_high_risk_agent(env: Env) -> None:
    env.directory.set_risk("bot", "medium")
    assert env.post().status_code == 200
    env.directory.set_risk("bot", "high")
    assert "high risk" in refused(env.post(), 401, "invalid_client")


def test_revoked_key(env: Env) -> None:
    env.directory.revoke_agent_key("bot", env.cred["key"]["kid"])
    refused(env.post(), 401, "invalid_client")


def test_rotated_key_works_and_old_one_within_grace(env: Env) -> None:
    new = env.directory.rotate_agent_key("bot", token_endpoint=TOKEN_URL)
    assertion = client_assertion(env.agent_id, TOKEN_URL, new["key"])
    assert env.post(env.form(client_assertion=assertion)).status_code == 200
    assert env.post().status_code == 200  # the old key, in its grace period


def test_not_form_encoded_or_repeated(env: Env) -> None:
    r = env.client.post(
        "/v1/token", json=env.form(), headers={"DPoP": env.dpop.proof("POST", TOKEN_URL)}
    )
    refused(r, 400, "invalid_request")
    body = "grant_type=client_credentials&grant_type=client_credentials"
    r = env.client.post(
        "/v1/token",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "DPoP": env.dpop.proof("POST", TOKEN_URL),
        },
    )
    assert "repeated" in refused(r, 400, "invalid_request")


def test_several_dpop_headers(env: Env) -> None:
    proof = env.dpop.proof("POST", TOKEN_URL)
    r = env.client.post(
        "/v1/token",
        data=env.form(),
        headers=[("DPoP", proof), ("DPoP", env.dpop.proof("POST", TOKEN_URL))],
    )
    refused(r, 400, "invalid_dpop_proof")


def test_nonce_demanded(tmp_path: Path) -> None:
    env = Env(tmp_path, nonces=NonceSource())
    try:
        r = env.post()
        refused(r, 400, "use_dpop_nonce")
        nonce = r.headers["dpop-nonce"]
        r = env.post(proof=env.dpop.proof("POST", TOKEN_URL, nonce=nonce))
        assert r.status_code == 200, r.text
    finally:
        env.client.close()
        env.store.close()


def test_rate_limit_per_client(tmp_path: Path) -> None:
    env = Env(tmp_path, client_limit=RateLimit(rate=0.01, burst=2))
    try:
        assert env.post().status_code == 200
        assert env.post().status_code == 200
        r = env.post()
        refused(r, 429, "slow_down")
        assert int(r.headers["retry-after"]) >= 1
    finally:
        env.client.close()
        env.store.close()


def test_rate_limit_per_address_counts_refused_requests(tmp_path: Path) -> None:
    env = Env(tmp_path, address_limit=RateLimit(rate=0.01, burst=2))
    try:
        refused(env.post(proof=None), 400, "invalid_dpop_proof")
        refused(env.post(proof=None), 400, "invalid_dpop_proof")
        r = env.post()
        refused(r, 429, "slow_down")
        assert int(r.headers["retry-after"]) >= 1
    finally:
        env.client.close()
        env.store.close()
