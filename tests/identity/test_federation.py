"""verify_external_jwt against a real loopback JWKS server (and pinned keys), a real store.

Each refusal is shown next to the token that passes, so a check that stopped working would
let its bad token through and fail the test.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_lib
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from joserfc.jws import serialize_compact

from corral.domain.federation import OidcProvider
from corral.errors import InvalidInputError
from corral.identity import federation as fed
from corral.identity.directory import Directory
from corral.identity.errors import InvalidClientError
from corral.identity.federation import (
    ExternalIdentity,
    FederationSettings,
    JwksSource,
    ProviderUnavailableError,
    check_public_jwks,
    fetch_metadata,
    verify_external_jwt,
)
from corral.store import Store
from tests.identity.helpers import b64json, craft, hmac_craft

NOW = 1_800_000_000.0
SUB = "repo:acme/app:ref:refs/heads/main"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class JwksServer:
    """A loopback HTTP server publishing a JWK Set the test can change or break."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"keys": []}
        self.status = 200
        self.hits = 0
        self.metadata: dict[str, Any] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                doc = outer.metadata if self.path.endswith("openid-configuration") else outer.doc
                body = json.dumps(doc).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, *keys: tuple[Key, str]) -> None:
        self.doc = {"keys": [{**k.as_dict(private=False), "kid": kid} for k, kid in keys]}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="module")
def rsa() -> RSAKey:
    return RSAKey.generate_key(2048)


class World:
    """A store with one provider (keys fetched from the loopback server), an agent linked to
    SUB and a user linked to `alice@idp`."""

    def __init__(self, tmp: Path, server: JwksServer, http: httpx.Client, rsa: RSAKey) -> None:
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        directory = Directory(self.store)
        directory.create_user("alice", roles=["sponsor"])
        self.agent_id = directory.create_agent("ci-bot", sponsors=["alice"])["agent_id"]
        self.user_id = directory.get_user("alice").id
        self.issuer = server.url
        self.provider = self.store.create_oidc_provider(
            OidcProvider(
                name="ci",
                issuer=self.issuer,
                audience="https://corral.example",
                jwks_uri=f"{server.url}/jwks",
                client_id="corral-console",
                allow_assertions=True,
                allow_console=True,
            )
        )
        self.store.link_subject("ci", SUB, "agent", "ci-bot")
        self.store.link_subject("ci", "alice@idp", "user", "alice")
        self.server = server
        self.rsa = rsa
        server.publish((rsa, "k1"))
        self.clock = Clock()
        self.settings = FederationSettings(refetch_interval=30, jwks_ttl=300)
        self.keys = JwksSource(
            jwks_uri=self.provider.jwks_uri, http=http, settings=self.settings, clock=self.clock
        )

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims = {
            "iss": self.issuer,
            "sub": SUB,
            "aud": "https://corral.example",
            "iat": int(NOW) - 10,
            "exp": int(NOW) + 290,
            "jti": "j-1",
            **changes,
        }
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, key: Key | None = None, alg: str = "RS256", kid: str | None = "k1", **changes: Any
    ) -> str:
        header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
        header.update(changes.pop("header", {}))
        payload = json.dumps(self.claims(**changes))
        return serialize_compact(header, payload, key or self.rsa, registry=fed._REGISTRY)

    def verify(self, token: str, **kw: Any) -> ExternalIdentity:
        kw.setdefault("purpose", "assertion")
        return verify_external_jwt(
            kw.pop("provider", self.provider),
            token,
            keys=kw.pop("keys", self.keys),
            store=self.store,
            now=NOW,
            settings=self.settings,
            **kw,
        )


@pytest.fixture
def world(
    tmp_path: Path, jwks_server: JwksServer, http: httpx.Client, rsa: RSAKey
) -> Iterator[World]:
    w = World(tmp_path, jwks_server, http, rsa)
    yield w
    w.store.close()


def refused(world: World, token: str, match: str, **kw: Any) -> None:
    with pytest.raises(InvalidClientError, match=match):
        world.verify(token, **kw)


def test_a_linked_subject_is_its_agent(world: World) -> None:
    identity = world.verify(world.token())
    assert (identity.kind, identity.principal_id) == ("agent", world.agent_id)
    assert identity.subject == SUB and identity.token_id == "j-1"  # noqa: S105
    assert identity.expires_at == NOW + 290
    assert world.server.hits == 1  # fetched once ...
    world.verify(world.token(jti="j-2"))
    assert world.server.hits == 1  # ... then cached


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_every_allowed_algorithm_with_pinned_keys(world: World, alg: str) -> None:
    key: Key
    if alg in ("RS256", "PS256"):
        key = world.rsa
    elif alg == "ES256":
        key = ECKey.generate_key("P-256")
    else:
        key = OKPKey.generate_key("Ed25519")
    pinned = JwksSource(pinned={"keys": [{**key.as_dict(private=False), "kid": "p"}]})
    assert world.verify(world.token(key, alg, kid="p"), keys=pinned).principal_id == world.agent_id
    # a key published for one algorithm is not used with another
    if alg == "RS256":
        jwk = {**key.as_dict(private=False), "kid": "p", "alg": "RS256"}
        only_rs = JwksSource(pinned={"keys": [jwk]})
        refused(world, world.token(key, "PS256", kid="p"), "does not publish", keys=only_rs)


def test_alg_none_and_hmac_with_the_public_key_are_refused(world: World) -> None:
    claims = world.claims()
    none = f"{b64json({'alg': 'none', 'kid': 'k1'})}.{b64json(claims)}."
    refused(world, none, "not a compact JWS|not allowed")
    public_pem = world.rsa.as_pem(private=False)
    forged = hmac_craft({"alg": "HS256", "kid": "k1", "typ": "JWT"}, claims, public_pem)
    refused(world, forged, "not allowed")
    jwk_json = json.dumps(world.rsa.as_dict(private=False)).encode()
    refused(world, hmac_craft({"alg": "HS256", "kid": "k1"}, claims, jwk_json), "not allowed")


def test_claims_are_checked(world: World) -> None:
    refused(world, world.token(iss="https://evil.example"), "iss")
    refused(world, world.token(iss=world.issuer + "/"), "iss")
    refused(world, world.token(aud="https://other.example"), "aud")
    refused(world, world.token(aud=["a", "b"]), "aud")
    assert world.verify(world.token(aud=["a", "https://corral.example"])).subject == SUB
    refused(world, world.token(exp=int(NOW) - 31), "expired")
    assert world.verify(world.token(exp=int(NOW) - 29, jti="leeway")).subject == SUB
    refused(world, world.token(nbf=int(NOW) + 60), "not valid yet")
    refused(world, world.token(iat=int(NOW) + 60, exp=int(NOW) + 120), "not valid yet")
    refused(world, world.token(iat=int(NOW) - 10, exp=int(NOW) + 3600), "lives longer")
    refused(world, world.token(sub=None), "sub")
    refused(world, world.token(sub=""), "sub")
    refused(world, world.token(iat=None), "iat")
    refused(world, world.token(exp=None), "exp")
    refused(world, world.token(jti=7), "jti")


def test_other_kinds_of_jwt_are_not_identities(world: World) -> None:
    refused(world, world.token(header={"typ": "dpop+jwt"}), "typ")
    refused(world, world.token(header={"typ": "secevent+jwt"}), "typ")
    refused(world, world.token(events={"https://schemas.openid.net/x": {}}), "security event")
    crit = craft({"alg": "RS256", "kid": "k1", "crit": ["exp"]}, world.claims(), b"sig")
    refused(world, crit, "crit|compact JWS")
    refused(world, "not.a.jwt", "compact JWS")
    refused(world, "x" * 20_000, "compact JWS")


def test_forged_signature_and_foreign_key(world: World) -> None:
    good = world.token()
    head, _, sig = good.split(".")
    tampered = f"{head}.{b64json({**world.claims(), 'sub': 'alice@idp'})}.{sig}"
    refused(world, tampered, "signature")
    stranger = RSAKey.generate_key(2048)
    refused(world, world.token(stranger), "signature")


def test_unknown_kid_picks_up_a_rotation_once_per_interval(world: World) -> None:
    world.verify(world.token())
    assert world.server.hits == 1
    new = RSAKey.generate_key(2048)
    # Within the refetch interval of the first fetch, an unknown kid does not fetch again.
    world.clock.t += 5
    refused(world, world.token(new, kid="k2"), "does not publish")
    assert world.server.hits == 1
    # The provider rotates; after the interval the unknown kid triggers one fetch.
    world.server.publish((new, "k2"), (world.rsa, "k1"))
    world.clock.t += 30
    assert world.verify(world.token(new, kid="k2")).principal_id == world.agent_id
    assert world.server.hits == 2
    # Garbage kids right after cannot make us hammer the provider.
    for i in range(5):
        refused(world, world.token(new, kid=f"nope-{i}"), "does not publish")
    assert world.server.hits == 2
    # Keys are fetched again once the cache is stale; the retired key is gone then.
    world.server.publish((new, "k2"))
    world.clock.t += 301
    refused(world, world.token(jti="old-key"), "does not publish")
    assert world.server.hits == 3


def test_an_unreachable_provider_fails_closed(world: World) -> None:
    world.verify(world.token())
    world.server.status = 500
    world.clock.t += 301  # the cached keys are stale: they are not used any longer
    with pytest.raises(ProviderUnavailableError, match="HTTP 500"):
        world.verify(world.token(jti="j-2"))
    hits = world.server.hits
    with pytest.raises(ProviderUnavailableError):  # no retry storm: refused without fetching
        world.verify(world.token(jti="j-3"))
    assert world.server.hits == hits
    world.server.status = 200
    world.clock.t += 31
    assert world.verify(world.token(jti="j-4")).principal_id == world.agent_id


def test_provider_down_entirely(world: World, http: httpx.Client) -> None:
    world.server.close()
    keys = JwksSource(jwks_uri=f"{world.issuer}/jwks", http=http)
    with pytest.raises(ProviderUnavailableError, match="unreachable"):
        world.verify(world.token(), keys=keys)


def test_weak_and_unfit_keys_are_not_used(world: World) -> None:
    with pytest.warns(SecurityWarning):  # joserfc warns too; Corral refuses to use it
        small = RSAKey.import_key(rsa_lib.generate_private_key(65537, 1024))  # noqa: S505
    world.server.publish((small, "k1"))
    refused(world, world.token(small), "does not publish")
    enc = {**world.rsa.as_dict(private=False), "kid": "k1", "use": "enc"}
    private = {**world.rsa.as_dict(private=True), "kid": "k1"}
    pinned = JwksSource(pinned={"keys": [enc, private]})
    refused(world, world.token(), "does not publish", keys=pinned)


def test_unmapped_disabled_and_risky_identities_are_refused(world: World) -> None:
    refused(world, world.token(sub="repo:acme/other"), "not linked")
    directory = Directory(world.store)
    directory.set_risk("ci-bot", "high")
    refused(world, world.token(), "high risk")
    directory.set_risk("ci-bot", "low")
    directory.disable_agent("ci-bot", "test")
    refused(world, world.token(), "disabled")
    directory.enable_agent("ci-bot")
    assert world.verify(world.token()).principal_id == world.agent_id
    world.store.unlink_subject("ci", SUB)
    refused(world, world.token(), "not linked")


def test_purposes_the_provider_is_not_trusted_for(world: World) -> None:
    no_assertions = replace(world.provider, allow_assertions=False)
    refused(world, world.token(), "not trusted for client assertions", provider=no_assertions)
    no_console = replace(world.provider, allow_console=False)
    id_token = world.token(sub="alice@idp", aud="corral-console", nonce="n")
    refused(world, id_token, "not trusted for console", provider=no_console, purpose="console")


def test_console_id_tokens(world: World) -> None:
    def id_token(**changes: Any) -> str:
        claims = {"sub": "alice@idp", "aud": "corral-console", "nonce": "n-1", **changes}
        return world.token(**claims)

    def console_refused(token: str, match: str, nonce: str = "n-1") -> None:
        refused(world, token, match, purpose="console", nonce=nonce)

    identity = world.verify(id_token(), purpose="console", nonce="n-1")
    assert (identity.kind, identity.principal_id) == ("user", world.user_id)
    console_refused(id_token(), "nonce does not match", nonce="n-2")
    console_refused(id_token(nonce=None), "nonce is missing")
    # aud is the client id, not the workload audience, and azp names us with several
    console_refused(id_token(aud="https://corral.example"), "client id")
    console_refused(id_token(aud=["corral-console", "x"]), "client id")
    ok = id_token(aud=["corral-console", "x"], azp="corral-console")
    assert world.verify(ok, purpose="console", nonce="n-1").principal_id == world.user_id
    # a subject linked to an agent never signs in to the console
    console_refused(id_token(sub=SUB), "for users")
    Directory(world.store).disable_user("alice")
    console_refused(id_token(), "disabled")


def test_discovery_checks_the_issuer(world: World, http: httpx.Client) -> None:
    world.server.metadata = {
        "issuer": world.issuer,
        "authorization_endpoint": f"{world.issuer}/authorize",
        "token_endpoint": f"{world.issuer}/token",
        "jwks_uri": f"{world.issuer}/jwks",
    }
    meta = fetch_metadata(http, world.issuer)
    assert meta.token_endpoint == f"{world.issuer}/token"
    world.server.metadata = {**world.server.metadata, "issuer": "https://elsewhere.example"}
    with pytest.raises(ProviderUnavailableError, match="another issuer"):
        fetch_metadata(http, world.issuer)
    world.server.metadata = {
        **world.server.metadata,
        "issuer": world.issuer,
        "token_endpoint": "http://evil.example/token",
    }
    with pytest.raises(ProviderUnavailableError, match="https"):
        fetch_metadata(http, world.issuer)


def test_pinned_jwks_must_be_public() -> None:
    rsa = RSAKey.generate_key(2048)
    assert check_public_jwks({"keys": [rsa.as_dict(private=False)]})
    with pytest.raises(InvalidInputError, match="private"):
        check_public_jwks({"keys": [rsa.as_dict(private=True)]})
    with pytest.raises(InvalidInputError, match="private"):
        check_public_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
    with pytest.raises(InvalidInputError, match="JWK Set"):
        check_public_jwks({"keys": []})


def test_real_clock_default(world: World) -> None:
    """Without `now`, the wall clock decides (a token made for NOW, far ahead, is not yet valid)."""
    token = world.token()
    with pytest.raises(InvalidClientError, match="not valid yet"):
        verify_external_jwt(
            world.provider, token, purpose="assertion", keys=world.keys, store=world.store
        )
    assert time.time() < NOW


def test_pushed_events_are_verified_with_the_federations_fetched_keys(
    tmp_path: Path, jwks_server: JwksServer, http: httpx.Client, rsa: RSAKey
) -> None:
    """`corral up` verifies inbound SETs of a provider with a `jwks_uri` through the same
    cached keys as its workload tokens; an unreachable provider fails closed (invalid_key)."""
    from corral.identity.errors import SetRefusedError
    from corral.identity.event_receiver import federation_keys
    from corral.identity.federation_service import FederationService

    w = World(tmp_path, jwks_server, http, rsa)
    keys_for = federation_keys(FederationService(w.store, http=http))
    assert [k["kid"] for k in keys_for(w.provider)["keys"]] == ["k1"]
    dead = replace(w.provider, name="dead", jwks_uri="http://127.0.0.1:9/jwks")
    with pytest.raises(SetRefusedError) as refused:
        keys_for(dead)
    assert refused.value.err == "invalid_key"
    w.store.close()
