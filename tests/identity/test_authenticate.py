"""Request authentication without any transport: (method, URL, headers, client address) ->
caller. The same function the HTTP middleware and WebSocket handshakes call; here it is called
directly, as an in-memory MCP test or another transport would, with a real store, real keys,
real tokens and real DPoP proofs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.domain.access import CallerKind
from corral.identity import DPoPKey, SigningKeyring, issue_access_token
from corral.identity.authenticate import RequestAuthenticator, RequestHeaders, is_exempt
from corral.identity.directory import Directory
from corral.identity.errors import (
    InvalidDPoPProofError,
    InvalidTokenError,
    MissingCredentialsError,
)
from corral.identity.evaluation import AccessEvaluator
from corral.store import Store

ISSUER = "https://corral.example"


class World:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(f"sqlite:///{tmp}/corral.db", key_file=tmp / "secrets.key")
        self.store.migrate()
        Directory(self.store).create_user("root", roles=["admin"])
        self.user_id = Directory(self.store).get_user("root").id
        self.ring = SigningKeyring.generate()
        self.key = DPoPKey.generate()
        self.auth = RequestAuthenticator(
            keyring=self.ring, issuer=ISSUER, access=AccessEvaluator(self.store)
        )

    def token(self, audience: str = ISSUER) -> str:
        return issue_access_token(
            self.ring,
            issuer=ISSUER,
            subject=self.user_id,
            audience=audience,
            client_id=self.user_id,
            jkt=self.key.thumbprint,
        ).access_token

    def signed(self, method: str, url: str, token: str) -> dict[str, str]:
        proof = self.key.proof(method, url, access_token=token)
        return {"Authorization": f"DPoP {token}", "DPoP": proof}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def test_a_signed_request_is_its_caller_from_its_address(world: World) -> None:
    token = world.token()
    headers = world.signed("GET", f"{ISSUER}/v1/pools", token)
    caller = world.auth.authenticate("GET", "/v1/pools?active=1", headers, "10.0.0.7")
    assert caller.kind is CallerKind.USER and caller.id == world.user_id
    assert caller.address == "10.0.0.7" and caller.jkt == world.key.thumbprint


def test_absolute_urls_and_header_lists_work_alike(world: World) -> None:
    token = world.token()
    headers = world.signed("POST", f"{ISSUER}/mcp", token)
    pairs = RequestHeaders([(name.upper(), value) for name, value in headers.items()])
    caller = world.auth.authenticate("POST", "http://127.0.0.1:8420/mcp", pairs)
    assert caller.id == world.user_id and caller.address is None


def test_a_websocket_url_is_authenticated_as_the_get_of_its_handshake(world: World) -> None:
    token = world.token()
    get = world.signed("GET", f"{ISSUER}/console/live", token)
    assert world.auth.authenticate("GET", "ws://h/console/live", get).id == world.user_id
    post = world.signed("POST", f"{ISSUER}/console/live", token)
    with pytest.raises(InvalidDPoPProofError):
        world.auth.authenticate("POST", "wss://h/console/live", post)


def test_refusals(world: World) -> None:
    token = world.token()
    with pytest.raises(MissingCredentialsError):
        world.auth.authenticate("GET", "/v1/pools", {})
    other = world.signed("GET", f"{ISSUER}/v1/sessions", token)  # proof for another URL
    with pytest.raises(InvalidDPoPProofError):
        world.auth.authenticate("GET", "/v1/pools", other)
    # two DPoP headers are never one proof
    twice = world.signed("GET", f"{ISSUER}/v1/pools", token)
    doubled = RequestHeaders([*twice.items(), ("dpop", twice["DPoP"])])
    with pytest.raises(InvalidDPoPProofError):
        world.auth.authenticate("GET", "/v1/pools", doubled)
    # a session token opens its own session's URLs only
    session_token = world.token(audience=f"{ISSUER}/sessions/s-1")
    elsewhere = world.signed("GET", f"{ISSUER}/sessions/s-2/mcp", session_token)
    with pytest.raises(InvalidTokenError):
        world.auth.authenticate("GET", "/sessions/s-2/mcp", elsewhere)
    with pytest.raises(InvalidTokenError):
        world.auth.authenticate("GET", "not a url", twice)


def test_the_challenge_names_the_resource_metadata(world: World) -> None:
    with pytest.raises(MissingCredentialsError) as info:
        world.auth.authenticate("POST", "/sessions/s-9/mcp", {})
    headers = world.auth.challenge(info.value, "/sessions/s-9/mcp")
    assert headers["WWW-Authenticate"] == (
        'DPoP algs="EdDSA ES256 Ed25519", resource_metadata='
        f'"{ISSUER}/.well-known/oauth-protected-resource/sessions/s-9/mcp"'
    )
    assert headers["Cache-Control"] == "no-store"


def test_exempt_paths() -> None:
    for path in ("/healthz", "/v1/token", "/.well-known/oauth-protected-resource/mcp"):
        assert is_exempt(path), path
    for path in ("/v1/pools", "/mcp", "/.well-known/oauth-protected-resourcex"):
        assert not is_exempt(path), path
