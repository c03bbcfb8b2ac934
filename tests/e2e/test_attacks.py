"""The attack suite against the real `corral up`: each attack is refused with the right error
(RFC 6750/9449 challenge), while the legitimate flow keeps working."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

import httpx
import pytest

from corral.client.http import DPoPAuth
from corral.identity import DPoPKey
from corral.identity.keys import SigningKeyring
from corral.identity.tokens import issue_access_token

from .conftest import Server

POOL = "atk"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _error(response: httpx.Response) -> str | None:
    match = re.search(r'error="([a-z_]+)"', response.headers.get("WWW-Authenticate", ""))
    return match.group(1) if match else None


def _refused(response: httpx.Response, error: str | None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("DPoP")
    assert _error(response) == error, response.headers["WWW-Authenticate"]


def _agent(server: Server) -> tuple[str, DPoPKey]:
    auth = server.agent.auth
    assert isinstance(auth, DPoPAuth)
    return auth.tokens.get(), auth.tokens.key


def _send(
    server: Server,
    method: str,
    path: str,
    token: str | None,
    key: DPoPKey | None,
    *,
    proof: str | None = None,
    scheme: str = "DPoP",
) -> httpx.Response:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    if proof is None and key is not None:
        proof = key.proof(method, server.url + path, access_token=token)
    if proof is not None:
        headers["DPoP"] = proof
    return server.anon.request(method, path, headers=headers)


def _keyring(server: Server) -> SigningKeyring:
    return SigningKeyring.load(server.tmp / "signing-keys.json")


def _issue(server: Server, key: DPoPKey, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "issuer": server.url,
        "subject": server.agent_id,
        "audience": server.url,
        "client_id": server.agent_id,
        "jkt": key.thumbprint,
    }
    fields.update(overrides)
    return issue_access_token(_keyring(server), **fields).access_token


@pytest.fixture(scope="module")
def ready(server: Server) -> Server:
    server.create_pool(POOL, warm=2, max=3, max_sessions_per_agent=3)
    server.wait_ready(POOL, 2)
    return server


def test_unauthenticated_requests_are_refused_but_exempt_paths_answer(server: Server) -> None:
    for path in ("/v1/pools", "/v1/sessions", "/openapi.json", "/sessions/x/viewer"):
        refused = server.anon.get(path)
        _refused(refused, None)
    assert server.anon.post("/mcp", json={}).status_code == 401
    assert server.anon.get("/healthz").status_code == 200
    assert server.anon.get("/.well-known/jwks.json").status_code == 200
    assert server.agent.get("/v1/pools").status_code == 200  # the legitimate flow


def test_proof_attacks(server: Server) -> None:
    token, key = _agent(server)
    url = server.url + "/v1/pools"
    # a stolen token with a proof from another key
    _refused(_send(server, "GET", "/v1/pools", token, DPoPKey.generate()), "invalid_token")
    # a replayed proof (same jti)
    proof = key.proof("GET", url, access_token=token)
    assert _send(server, "GET", "/v1/pools", token, None, proof=proof).status_code == 200
    _refused(_send(server, "GET", "/v1/pools", token, None, proof=proof), "invalid_dpop_proof")
    # a proof for another URL, for another method, with a stale iat, for another token
    other_url = key.proof("GET", server.url + "/v1/sessions", access_token=token)
    _refused(_send(server, "GET", "/v1/pools", token, None, proof=other_url), "invalid_dpop_proof")
    other_method = key.proof("POST", url, access_token=token)
    _refused(
        _send(server, "GET", "/v1/pools", token, None, proof=other_method), "invalid_dpop_proof"
    )
    stale = key.proof("GET", url, access_token=token, now=time.time() - 600)
    _refused(_send(server, "GET", "/v1/pools", token, None, proof=stale), "invalid_dpop_proof")
    # a token without a proof; a DPoP-bound token as Bearer
    _refused(_send(server, "GET", "/v1/pools", token, None), "invalid_dpop_proof")
    _refused(_send(server, "GET", "/v1/pools", token, key, scheme="Bearer"), None)
    assert _send(server, "GET", "/v1/pools", token, key).status_code == 200  # still fine


def test_token_attacks(server: Server) -> None:
    token, key = _agent(server)
    header, claims, signature = token.split(".")
    # alg none
    none_header = _b64(json.dumps({"typ": "at+jwt", "alg": "none"}).encode())
    _refused(_send(server, "GET", "/v1/pools", f"{none_header}.{claims}.", key), "invalid_token")
    # HMAC "signed" with the server's public key
    kid = json.loads(_unb64(header))["kid"]
    jwks = server.anon.get("/.well-known/jwks.json").json()
    public = json.dumps(next(k for k in jwks["keys"] if k["kid"] == kid)).encode()
    hs_header = _b64(json.dumps({"typ": "at+jwt", "alg": "HS256", "kid": kid}).encode())
    mac = hmac.new(public, f"{hs_header}.{claims}".encode(), hashlib.sha256).digest()
    hs = f"{hs_header}.{claims}.{_b64(mac)}"
    _refused(_send(server, "GET", "/v1/pools", hs, key), "invalid_token")
    # a forged signature
    flipped = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    _refused(
        _send(server, "GET", "/v1/pools", f"{header}.{claims}.{flipped}", key), "invalid_token"
    )
    # tampered claims (a longer lifetime), the signature kept
    raw = json.loads(_unb64(claims))
    raw["exp"] += 3600
    tampered = f"{header}.{_b64(json.dumps(raw).encode())}.{signature}"
    _refused(_send(server, "GET", "/v1/pools", tampered, key), "invalid_token")
    # expired, and for another audience (signed with the server's real key)
    expired = _issue(server, key, now=time.time() - 3600)
    _refused(_send(server, "GET", "/v1/pools", expired, key), "invalid_token")
    elsewhere = _issue(server, key, audience="https://elsewhere.example")
    _refused(_send(server, "GET", "/v1/pools", elsewhere, key), "invalid_token")
    assert _send(server, "GET", "/v1/pools", _issue(server, key), key).status_code == 200


def test_session_tokens(ready: Server) -> None:
    server = ready
    _, key = _agent(server)
    one = server.acquire(POOL).json()
    two = server.acquire(POOL).json()
    sid, other = one["session_id"], two["session_id"]
    token = one["session_token"]
    assert one["session_token_expires_in"] > 0
    claims = json.loads(_unb64(token.split(".")[1]))
    assert claims["aud"] == f"{server.url}/sessions/{sid}" and claims["sid"] == sid
    # it opens its own session, bound to the caller's key ...
    assert _send(server, "GET", f"/v1/sessions/{sid}", token, key).status_code == 200
    _refused(
        _send(server, "GET", f"/v1/sessions/{sid}", token, DPoPKey.generate()), "invalid_token"
    )
    # ... and nothing else: not another session, not the gateway's routes
    _refused(_send(server, "GET", f"/v1/sessions/{other}", token, key), "invalid_token")
    _refused(_send(server, "GET", "/v1/pools", token, key), "invalid_token")
    # dead once the session is released
    assert server.agent.delete(f"/v1/sessions/{sid}").status_code == 200
    _refused(_send(server, "GET", f"/v1/sessions/{sid}", token, key), "invalid_token")
    server.agent.delete(f"/v1/sessions/{other}")


def test_authorization(ready: Server) -> None:
    server = ready
    # admin routes with an agent token
    denied = server.agent.post("/v1/pools", json={"name": "mine", "image": "minimal"})
    assert denied.status_code == 403, denied.text
    assert server.agent.get(f"/v1/pools/{POOL}/pcs").status_code == 403
    assert server.agent.post(f"/v1/agents/{server.agent_id}/revoke").status_code == 403
    # another agent's session: not found, as if it did not exist
    s = server.acquire(POOL).json()
    other_file = server.tmp / "agent-other.json"
    server.make_agent("agent-other", other_file)
    with server.client(other_file) as other:
        assert other.get(f"/v1/sessions/{s['session_id']}").status_code == 404
        acted = other.post(f"/v1/sessions/{s['session_id']}/actions/screenshot", json={})
        assert acted.status_code == 404
        assert other.delete(f"/v1/sessions/{s['session_id']}").status_code == 404
        assert other.get("/v1/sessions").json() == []
    assert server.agent.get(f"/v1/sessions/{s['session_id']}").status_code == 200
    assert server.agent.delete(f"/v1/sessions/{s['session_id']}").status_code == 200


def test_disabled_agent_and_admin_revoke_count_on_the_next_request(server: Server) -> None:
    path = server.tmp / "agent-doomed.json"
    agent_id = server.make_agent("agent-doomed", path)
    auth = DPoPAuth.from_credential(path)
    token, key = auth.tokens.get(), auth.tokens.key
    assert _send(server, "GET", "/v1/pools", token, key).status_code == 200
    assert server.corral("agent", "disable", "agent-doomed").returncode == 0
    _refused(_send(server, "GET", "/v1/pools", token, key), "invalid_token")
    assert server.corral("agent", "enable", "agent-doomed").returncode == 0
    assert _send(server, "GET", "/v1/pools", token, key).status_code == 200
    # an admin's revoke: tokens issued so far die at once
    assert server.http.post(f"/v1/agents/{agent_id}/revoke").status_code == 200
    _refused(_send(server, "GET", "/v1/pools", token, key), "invalid_token")
    time.sleep(1.1)  # a token from the same second as the revoke is refused too
    auth.tokens.invalidate(token)
    fresh = auth.tokens.get()
    assert _send(server, "GET", "/v1/pools", fresh, key).status_code == 200


def test_no_secret_reaches_the_server_log(server: Server) -> None:
    """After the whole suite (tokens issued, refused, revoked): the log holds no token, proof
    or private key. Runs last in this module, over everything the server has logged so far."""
    token, key = _agent(server)
    assert _send(server, "GET", "/v1/pools", token, key).status_code == 200
    refused = _send(server, "GET", "/v1/pools", token + "x", key)
    assert refused.status_code == 401
    log = server.log.read_text(errors="replace")
    assert "Corral on http" in log  # the server's own log (banner, warnings, errors)
    secrets_seen = [token, token.split(".")[2], key.private_jwk()["d"]]
    for credential in (server.admin_file, server.agent_file):
        secrets_seen.append(json.loads(credential.read_text())["key"]["d"])
    leaked = [s[:12] + "..." for s in secrets_seen if s in log]
    assert leaked == []
    assert not re.search(r"eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.", log), "a JWT is in the server log"
