"""Shared Signals against the real `corral up`: Corral pushes CAEP events to a loopback
receiver, and a (test) identity provider pushes events that take effect on the next request."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from joserfc.jwk import OKPKey
from joserfc.jws import serialize_compact

from corral.client.http import DPoPAuth
from corral.domain.events import RISK_LEVEL_CHANGE, SESSION_REVOKED
from corral.domain.federation import OidcProvider
from corral.identity.caep import verify_set
from corral.store import Store
from tests.identity.test_caep import _ANY_ALG, public
from tests.service.loopback_receiver import LoopbackReceiver

from .conftest import Server
from .test_attacks import _refused, _send

IDP = "https://idp.example"
SET_TYPE = {"Content-Type": "application/secevent+jwt"}


def _corral_set(server: Server, token: str, audience: str) -> dict[str, Any]:
    """Verify a pushed SET the way a receiver would: against Corral's published JWKS."""
    jwks = server.anon.get("/.well-known/jwks.json").json()
    corral = OidcProvider(
        name="corral", issuer=server.url, audience="-", jwks=jwks, allow_events=True
    )
    got = verify_set(
        token,
        audience=audience,
        provider_for=lambda iss: corral if iss == server.url else None,
        remember=lambda i, j: True,
        now=time.time(),
    )
    return {"type": got.type, "subject": got.subject, "payload": dict(got.payload)}


def test_corral_pushes_its_events(server: Server) -> None:
    meta = server.anon.get("/.well-known/ssf-configuration")
    assert meta.status_code == 200 and meta.json()["issuer"] == server.url
    with LoopbackReceiver() as rcv:
        added = server.corral(
            "events", "receivers", "add", "loop", "--endpoint", rcv.url, "--audience", "loop"
        )
        assert added.returncode == 0, added.stderr
        agent_id = server.make_agent("ssf-out", server.tmp / "ssf-out.json")
        try:
            # a CLI revoke (written to the store by another process) is pushed by the server
            assert server.corral("agent", "revoke", "ssf-out").returncode == 0
            (push,) = rcv.wait_for(1, timeout=30)
            assert push.headers["content-type"] == "application/secevent+jwt"
            got = _corral_set(server, push.body.decode(), "loop")
            assert got["type"] == SESSION_REVOKED
            assert got["subject"] == {"format": "iss_sub", "iss": server.url, "sub": agent_id}
            # a risk change from the CLI
            assert server.corral("agent", "risk", "ssf-out", "high").returncode == 0
            got = _corral_set(server, rcv.wait_for(2)[1].body.decode(), "loop")
            assert got["type"] == RISK_LEVEL_CHANGE
            assert got["payload"]["current_level"] == "HIGH"
            # an admin's revoke over REST, raised inside the server
            assert server.http.post(f"/v1/agents/{agent_id}/revoke").status_code == 200
            got = _corral_set(server, rcv.wait_for(3)[2].body.decode(), "loop")
            assert got["type"] == SESSION_REVOKED and got["subject"]["sub"] == agent_id
            outbox = server.corral("events", "outbox")
            assert outbox.returncode == 0 and outbox.stdout.count(" delivered ") == 3
            # no SET in any log
            assert all(p.body.decode() not in server.log.read_text() for p in rcv.pushes)
        finally:
            assert server.corral("events", "receivers", "remove", "loop").returncode == 0


class Idp:
    """A test identity provider whose key Corral pins, trusted to push events."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.key = OKPKey.generate_key("Ed25519")
        self.n = 0
        store = Store(server.env["CORRAL_DATABASE_URL"])
        try:
            store.create_oidc_provider(
                OidcProvider(
                    name="test-idp",
                    issuer=IDP,
                    audience=server.url,
                    jwks={"keys": [public(self.key, "idp-1")]},
                    allow_events=True,
                )
            )
        finally:
            store.close()

    def link(self, subject: str, agent_id: str) -> None:
        store = Store(self.server.env["CORRAL_DATABASE_URL"])
        try:
            store.link_subject("test-idp", subject, "agent", agent_id)
        finally:
            store.close()

    def set(self, event_type: str, subject: str, key: OKPKey | None = None, **claims: Any) -> str:
        self.n += 1
        body = {
            "iss": IDP,
            "aud": self.server.url,
            "iat": int(time.time()),
            "jti": f"idp-{self.n}-{time.monotonic_ns()}",
            "sub_id": {"format": "iss_sub", "iss": IDP, "sub": subject},
            "events": {event_type: {"event_timestamp": int(time.time())}},
            **claims,
        }
        if event_type == RISK_LEVEL_CHANGE:
            body["events"][event_type].update(principal="USER", current_level="HIGH")
        header = {"typ": "secevent+jwt", "alg": "EdDSA", "kid": "idp-1"}
        return serialize_compact(header, json.dumps(body), key or self.key, registry=_ANY_ALG)

    def push(self, token: str) -> httpx.Response:
        return self.server.anon.post("/ssf/events", content=token, headers=SET_TYPE)


@pytest.fixture(scope="module")
def idp(server: Server) -> Idp:
    return Idp(server)


def _agent(server: Server, idp: Idp, name: str) -> tuple[str, DPoPAuth]:
    path = server.tmp / f"{name}.json"
    agent_id = server.make_agent(name, path)
    idp.link(f"ext-{name}", agent_id)
    return agent_id, DPoPAuth.from_credential(path)


def test_idp_raises_an_agents_risk(server: Server, idp: Idp) -> None:
    _, auth = _agent(server, idp, "ssf-risky")
    token, key = auth.tokens.get(), auth.tokens.key
    assert _send(server, "GET", "/v1/pools", token, key).status_code == 200
    pushed = idp.push(idp.set(RISK_LEVEL_CHANGE, "ext-ssf-risky"))
    assert pushed.status_code == 202 and pushed.content == b""
    _refused(_send(server, "GET", "/v1/pools", token, key), "invalid_token")


def test_idp_revokes_a_session(server: Server, idp: Idp) -> None:
    server.create_pool("ssf", warm=1, max=1)
    server.wait_ready("ssf", 1)
    _, auth = _agent(server, idp, "ssf-sess")
    assigned = server.http.post("/v1/pools/ssf/assignments", json={"agent": "ssf-sess"})
    assert assigned.status_code == 200, assigned.text
    with httpx.Client(base_url=server.url, timeout=60, auth=auth) as agent:
        acquired = agent.post("/v1/pools/ssf/sessions", json={"wait_s": 60})
        assert acquired.status_code == 201, acquired.text
    session = acquired.json()
    sid, session_token = session["session_id"], session["session_token"]
    token, key = auth.tokens.get(), auth.tokens.key
    assert _send(server, "GET", f"/v1/sessions/{sid}", session_token, key).status_code == 200
    revoke = idp.set(SESSION_REVOKED, "ext-ssf-sess")
    assert idp.push(revoke).status_code == 202
    # its token and its session token are refused on the next request; the session is gone
    _refused(_send(server, "GET", "/v1/pools", token, key), "invalid_token")
    _refused(_send(server, "GET", f"/v1/sessions/{sid}", session_token, key), "invalid_token")
    ended = [
        s for s in server.http.get("/v1/sessions?active=false").json() if s["session_id"] == sid
    ]
    assert ended and ended[0]["state"] == "released"
    assert ended[0]["release_reason"] == "caep_session_revoked"
    # a replayed SET is refused
    replay = idp.push(revoke)
    assert replay.status_code == 400 and replay.json()["err"] == "invalid_request"


def test_refused_pushes(server: Server, idp: Idp) -> None:
    def err(response: httpx.Response) -> str:
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"err", "description"}
        return str(response.json()["err"])

    forged = idp.set(SESSION_REVOKED, "ext-x", key=OKPKey.generate_key("Ed25519"))
    assert err(idp.push(forged)) in ("invalid_key", "authentication_failed")
    assert err(idp.push(idp.set(SESSION_REVOKED, "ext-x", aud="https://else"))) == (
        "invalid_audience"
    )
    assert err(idp.push(idp.set(SESSION_REVOKED, "x", iss="https://evil.example"))) == (
        "invalid_issuer"
    )
    not_a_set = server.anon.post("/ssf/events", content="hello", headers=SET_TYPE)
    assert err(not_a_set) == "invalid_request"
    # an event about a subject nobody linked: accepted, and nothing happens
    assert idp.push(idp.set(SESSION_REVOKED, "ext-nobody")).status_code == 202
