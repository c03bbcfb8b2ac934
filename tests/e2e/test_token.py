"""The token endpoint of the real `corral up`: an agent made with the CLI gets a DPoP-bound token
over HTTP, verifiable with the published JWKS alone; the signing key survives a restart."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from corral.identity import CLIENT_ASSERTION_TYPE, DPoPKey, client_assertion
from corral.identity.directory import read_credential

from .conftest import Server


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _claims_verified_by_jwks(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verify with the published key only (no Corral code) and return the claims."""
    header_b64, claims_b64, signature = token.split(".")
    header = json.loads(_unb64(header_b64))
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert "d" not in jwk and jwk["crv"] == "Ed25519" and header["typ"] == "at+jwt"
    public = Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"]))
    public.verify(_unb64(signature), f"{header_b64}.{claims_b64}".encode())
    claims: dict[str, Any] = json.loads(_unb64(claims_b64))
    return claims


def _request_token(
    server: Server, cred: dict[str, Any], dpop: DPoPKey, htu: str | None = None
) -> httpx.Response:
    token_url = str(cred["token_endpoint"])
    form = {
        "grant_type": "client_credentials",
        "client_id": cred["client_id"],
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(cred["client_id"], token_url, cred["key"]),
    }
    proof = dpop.proof("POST", htu or token_url)
    return server.anon.post("/v1/token", data=form, headers={"DPoP": proof})


def test_agent_from_the_cli_gets_a_token(server: Server, tmp_path: Path) -> None:
    made = server.corral("user", "create", "tokensponsor", "--role", "sponsor")
    assert made.returncode == 0, made.stderr
    path = tmp_path / "agent.json"
    made = server.corral(
        "agent", "create", "tokenbot", "--sponsor", "tokensponsor", "-o", str(path)
    )
    assert made.returncode == 0, made.stderr
    cred = read_credential(path)
    assert cred["token_endpoint"] == f"{server.url}/v1/token"
    dpop = DPoPKey.generate()

    r = _request_token(server, cred, dpop)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "DPoP" and body["expires_in"] == 300  # noqa: S105

    jwks = server.anon.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    claims = _claims_verified_by_jwks(body["access_token"], jwks.json())
    assert claims["iss"] == server.url and claims["aud"] == server.url
    assert claims["sub"] == cred["agent_id"] and claims["client_id"] == cred["client_id"]
    assert claims["cnf"] == {"jkt": dpop.thumbprint}
    assert claims["exp"] - claims["iat"] == 300

    # Refusals over real HTTP: a proof for another URL, then the agent disabled by the CLI.
    other = _request_token(server, cred, dpop, htu=f"{server.url}/v1/pools")
    assert other.status_code == 400 and other.json()["error"] == "invalid_dpop_proof"
    assert server.corral("agent", "disable", "tokenbot").returncode == 0
    disabled = _request_token(server, cred, dpop)
    assert disabled.status_code == 401 and disabled.json()["error"] == "invalid_client"
    assert server.corral("agent", "enable", "tokenbot").returncode == 0

    # Other routes need a token: without one, 401 with a DPoP challenge.
    refused = server.anon.get("/v1/pools")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("DPoP")

    # The signing key is kept private on disk and survives a restart.
    keys = Path(server.env["CORRAL_DATA_DIR"]) / "signing-keys.json"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    server.stop()
    server.start()
    assert _claims_verified_by_jwks(
        body["access_token"], server.anon.get("/.well-known/jwks.json").json()
    )
    assert _request_token(server, cred, dpop).status_code == 200
