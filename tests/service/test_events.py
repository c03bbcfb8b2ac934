"""CAEP events out (emitter, outbox, push delivery to a real loopback receiver) and in (the
receiver's effects on the directory and sessions), on a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc.jwk import OKPKey

from corral.api.ssf_routes import include_ssf
from corral.domain.access import SYSTEM, Caller, CallerKind
from corral.domain.events import (
    CAEP_EVENT_TYPES,
    CREDENTIAL_CHANGE,
    RISK_LEVEL_CHANGE,
    SESSION_REVOKED,
)
from corral.domain.federation import OidcProvider
from corral.domain.identity import Risk, Role
from corral.domain.models import PCState, PoolSpec, SessionState
from corral.identity import caep
from corral.identity.directory import Directory
from corral.identity.errors import SetRefusedError
from corral.identity.event_emitter import EventDelivery, EventEmitter, release_event
from corral.identity.event_receiver import EventReceiver, subject_key
from corral.identity.keys import SigningKeyring
from corral.lifecycle.control import ControlPlane
from corral.store import Store
from tests.identity.helpers import parts
from tests.identity.test_caep import _ANY_ALG, public
from tests.service.loopback_receiver import LoopbackReceiver
from tests.support.fakes import FakeDriver

pytestmark = pytest.mark.anyio
CORRAL = "http://127.0.0.1:8420"
IDP = "https://idp.example"
ADMIN = Caller(CallerKind.USER, "u-admin", frozenset({Role.ADMIN}))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/corral.db")
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def ring() -> SigningKeyring:
    return SigningKeyring.generate()


def _agent(store: Store, name: str = "bot") -> str:
    if not any(u.name == "sam" for u in store.list_users()):
        store.create_user("sam", roles=[Role.SPONSOR])
    return store.create_agent(name, sponsors=["sam"]).id


class Recorder:
    """An EventSink that keeps what it is told (for the tests of its callers)."""

    def __init__(self) -> None:
        self.events: list[caep.CorralEvent] = []

    def emit(self, event: caep.CorralEvent) -> None:
        self.events.append(event)


def _verify_corral_set(token: str, ring: SigningKeyring, audience: str) -> caep.ReceivedEvent:
    """What a receiver does with Corral's SET: verify it against Corral's JWKS."""
    provider = OidcProvider(
        name="corral", issuer=CORRAL, audience="-", jwks=ring.jwks(), allow_events=True
    )
    return caep.verify_set(
        token,
        audience=audience,
        provider_for=lambda iss: provider,
        remember=lambda i, j: True,
        now=datetime.now(UTC).timestamp(),
    )


# -- emitting ----------------------------------------------------------------------------------


def test_emitter_queues_one_set_per_subscribed_receiver(store: Store, ring: SigningKeyring) -> None:
    a = store.create_ssf_receiver("a", endpoint="https://a.example/p", audience="aud-a")
    store.create_ssf_receiver(
        "b", endpoint="https://b.example/p", audience="aud-b", events=["risk-level-change"]
    )
    woken: list[int] = []
    emitter = EventEmitter(
        store, issuer=CORRAL, keyring=lambda: ring, on_queued=lambda: woken.append(1)
    )
    event = caep.session_revoked("a-1", at=1.0, reason="test")
    assert emitter.queue(event) == 1  # b does not want session-revoked
    (entry,) = store.list_ssf_outbox()
    assert entry.receiver_id == a.id and woken == [1]
    got = _verify_corral_set(entry.token, ring, "aud-a")
    assert got.type == SESSION_REVOKED and got.jti == entry.jti
    assert got.subject == {"format": "iss_sub", "iss": CORRAL, "sub": "a-1"}
    risk = caep.risk_level_change("a-1", at=1.0, current=Risk.HIGH, previous=Risk.LOW)
    assert emitter.queue(risk) == 2
    tokens = [e.token for e in store.list_ssf_outbox()[:2]]
    assert {parts(t)[1]["aud"] for t in tokens} == {"aud-a", "aud-b"}
    assert len({parts(t)[1]["jti"] for t in tokens}) == 2  # one jti per SET


def test_emitter_without_receivers_never_touches_the_keys(store: Store) -> None:
    def no_keys() -> SigningKeyring:
        raise AssertionError("keys loaded without a receiver")

    emitter = EventEmitter(store, issuer=CORRAL, keyring=no_keys)
    assert emitter.queue(caep.session_revoked("a-1", at=1.0)) == 0
    store.create_ssf_receiver("a", endpoint="https://a.example/p", audience="a")
    keyless = EventEmitter(store, issuer=CORRAL, keyring=lambda: None)
    assert keyless.queue(caep.session_revoked("a-1", at=1.0)) == 0
    assert store.list_ssf_outbox() == []


def test_emit_never_raises(store: Store, ring: SigningKeyring) -> None:
    store.create_ssf_receiver("a", endpoint="https://a.example/p", audience="a")
    store.close()  # the store is gone: queueing fails, the caller's change stands
    emitter = EventEmitter(store, issuer=CORRAL, keyring=lambda: ring)
    emitter.emit(caep.session_revoked("a-1", at=1.0))


def test_directory_reports_its_changes(store: Store) -> None:
    recorder = Recorder()
    directory = Directory(store, events=recorder)
    agent = _agent(store)
    user = store.create_user("una").id
    directory.revoke_tokens("bot")
    directory.set_risk("bot", "high")
    directory.set_risk("bot", "high")  # unchanged: nothing to report
    kid = directory.rotate_agent_key("bot")["key"]["kid"]
    directory.revoke_agent_key("bot", kid)
    directory.set_password("una", "a long enough password")
    directory.enroll_totp("una")  # not in effect yet: nothing to report
    seen = [(e.type, e.principal) for e in recorder.events]
    assert seen == [
        (SESSION_REVOKED, agent),
        (RISK_LEVEL_CHANGE, agent),
        (CREDENTIAL_CHANGE, agent),
        (CREDENTIAL_CHANGE, agent),
        (CREDENTIAL_CHANGE, user),
    ]
    risk, rotated, revoked, password = (e.payload for e in recorder.events[1:])
    assert risk["current_level"] == "HIGH" and risk["previous_level"] == "LOW"
    assert (rotated["credential_type"], rotated["change_type"]) == ("private-key-jwt", "update")
    assert (revoked["change_type"], revoked["friendly_name"]) == ("revoke", f"key {kid}")
    assert (password["credential_type"], password["change_type"]) == ("password", "update")


def test_release_event_rules(store: Store) -> None:
    session = _session(store, owner="a-1")
    assert release_event(session, Caller(CallerKind.AGENT, "a-1"), "released") is None
    assert release_event(session, None, "released") is None
    by_admin = release_event(session, ADMIN, "released")
    assert by_admin is not None and by_admin.payload["initiating_entity"] == "admin"
    assert by_admin.principal == "a-1" and by_admin.session_id == session.id
    evicted = release_event(session, SYSTEM, "idle")
    assert evicted is not None and evicted.payload["initiating_entity"] == "policy"


async def test_control_plane_reports_admin_release_and_eviction(store: Store) -> None:
    recorder = Recorder()
    control = ControlPlane(store, FakeDriver(), events=recorder)
    control.policy.start()  # the shipped policies decide who may release (issue 5)
    agent = _agent(store)
    own = _session(store, owner=agent, n=1)
    await control.release(own.id, principal=Caller(CallerKind.AGENT, agent))
    assert recorder.events == []  # the owner's own release revokes nothing
    other = _session(store, owner=agent, n=2)
    await control.release(other.id, principal=ADMIN)
    evicted = _session(store, owner=agent, n=3)
    await control.release(evicted.id, "idle_timeout", principal=SYSTEM)
    assert [(e.type, e.session_id) for e in recorder.events] == [
        (SESSION_REVOKED, other.id),
        (SESSION_REVOKED, evicted.id),
    ]
    assert [e.payload["initiating_entity"] for e in recorder.events] == ["admin", "policy"]


def _session(store: Store, owner: str, n: int = 1) -> Any:
    if not any(p.name == "p" for p in store.list_pools()):
        store.create_pool(PoolSpec(name="p", image="minimal", max=20))
    store.add_pc("p", f"pc-{n}", PCState.READY)
    now = datetime.now(UTC)
    got = store.acquire(
        "p",
        session_id=f"ses-{n}",
        expires_at=now + timedelta(hours=1),
        idempotency_key=None,
        request_hash="h",
        now=now,
        owner=owner,
    )
    assert got is not None
    return got[0]


# -- delivering --------------------------------------------------------------------------------


async def test_delivery_pushes_per_rfc8935(store: Store, ring: SigningKeyring) -> None:
    with LoopbackReceiver() as rcv:
        store.create_ssf_receiver(
            "loop", endpoint=rcv.url, audience="loop-aud", auth_header="Bearer r3ceiver"
        )
        EventEmitter(store, issuer=CORRAL, keyring=lambda: ring).queue(
            caep.session_revoked("a-1", at=1.0)
        )
        delivery = EventDelivery(store)
        async with httpx.AsyncClient() as client:
            assert await delivery.deliver_due(client) == 1
        (push,) = rcv.pushes
        assert push.headers["content-type"] == "application/secevent+jwt"
        assert push.headers["accept"] == "application/json"
        assert push.headers["authorization"] == "Bearer r3ceiver"
        got = _verify_corral_set(push.body.decode(), ring, "loop-aud")
        assert got.type == SESSION_REVOKED
        (entry,) = store.list_ssf_outbox()
        assert entry.status == "delivered" and entry.attempts == 1


async def test_delivery_retries_with_backoff_and_keeps_why(
    store: Store, ring: SigningKeyring
) -> None:
    clock = [datetime.now(UTC) + timedelta(seconds=1)]
    with LoopbackReceiver() as rcv:
        store.create_ssf_receiver("loop", endpoint=rcv.url, audience="aud")
        EventEmitter(store, issuer=CORRAL, keyring=lambda: ring).queue(
            caep.session_revoked("a-1", at=1.0)
        )
        delivery = EventDelivery(store, clock=lambda: clock[0])
        rcv.status = 400
        rcv.answer = {"err": "invalid_audience", "description": "not for us"}
        async with httpx.AsyncClient() as client:
            assert await delivery.deliver_due(client) == 0
            (entry,) = store.list_ssf_outbox()
            assert entry.status == "pending" and entry.attempts == 1
            assert entry.last_error == "HTTP 400 invalid_audience: not for us"
            assert entry.next_attempt_at == clock[0] + timedelta(seconds=1)
            assert entry.token not in (entry.last_error or "")
            rcv.status, rcv.answer = 200, None  # not 202: not a delivery
            clock[0] += timedelta(seconds=1)
            assert await delivery.deliver_due(client) == 0
            (entry,) = store.list_ssf_outbox()
            assert entry.attempts == 2 and "HTTP 200" in (entry.last_error or "")
            assert entry.next_attempt_at == clock[0] + timedelta(seconds=2)  # doubled
            clock[0] += timedelta(seconds=1)
            assert await delivery.deliver_due(client) == 0  # not due yet: nothing pushed
            assert len(rcv.pushes) == 2
            rcv.status = 202
            clock[0] += timedelta(seconds=1)
            assert await delivery.deliver_due(client) == 1
    (entry,) = store.list_ssf_outbox()
    assert entry.status == "delivered" and entry.attempts == 3


async def test_delivery_to_nobody_listening(store: Store, ring: SigningKeyring) -> None:
    with LoopbackReceiver() as rcv:
        url = rcv.url
    store.create_ssf_receiver("gone", endpoint=url, audience="aud")
    EventEmitter(store, issuer=CORRAL, keyring=lambda: ring).queue(
        caep.session_revoked("a-1", at=1.0)
    )
    async with httpx.AsyncClient() as client:
        assert await EventDelivery(store).deliver_due(client) == 0
    (entry,) = store.list_ssf_outbox()
    assert entry.last_error == "ConnectError: the push did not complete"


async def test_run_loop_delivers_as_soon_as_woken(store: Store, ring: SigningKeyring) -> None:
    with LoopbackReceiver() as rcv:
        store.create_ssf_receiver("loop", endpoint=rcv.url, audience="aud")
        delivery = EventDelivery(store, tick_s=30)  # only the wake can make it look soon
        emitter = EventEmitter(store, issuer=CORRAL, keyring=lambda: ring, on_queued=delivery.wake)
        task = asyncio.create_task(delivery.run())
        try:
            await asyncio.sleep(0.2)  # let the first (empty) pass go by
            await asyncio.to_thread(emitter.emit, caep.session_revoked("a-1", at=1.0))
            await asyncio.to_thread(rcv.wait_for, 1, 5.0)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


# -- receiving ---------------------------------------------------------------------------------


class Idp:
    def __init__(self, store: Store) -> None:
        self.key = OKPKey.generate_key("Ed25519")
        store.create_oidc_provider(
            OidcProvider(
                name="idp",
                issuer=IDP,
                audience="corral",
                jwks={"keys": [public(self.key, "k1")]},
                allow_events=True,
            )
        )
        self.n = 0

    def push(self, event_type: str, sub: str, **payload: Any) -> str:
        from joserfc.jws import serialize_compact

        self.n += 1
        claims = {
            "iss": IDP,
            "aud": CORRAL,
            "iat": int(datetime.now(UTC).timestamp()),
            "jti": f"idp-{self.n}",
            "sub_id": {"format": "iss_sub", "iss": IDP, "sub": sub},
            "events": {event_type: payload},
        }
        header = {"typ": "secevent+jwt", "alg": "EdDSA", "kid": "k1"}
        return serialize_compact(header, json.dumps(claims), self.key, registry=_ANY_ALG)


@pytest.fixture
def idp(store: Store) -> Idp:
    return Idp(store)


def _receiver(store: Store, recorder: Recorder | None = None) -> EventReceiver:
    return EventReceiver(store, Directory(store, events=recorder), None, audience=CORRAL)


async def test_risk_is_raised_never_lowered(store: Store, idp: Idp) -> None:
    agent = _agent(store)
    store.link_subject("idp", "ext-bot", "agent", agent)
    recorder = Recorder()
    receiver = _receiver(store, recorder)
    medium = await receiver.receive(idp.push(RISK_LEVEL_CHANGE, "ext-bot", current_level="MEDIUM"))
    assert medium.principal == agent and medium.action == "risk raised to medium"
    low = await receiver.receive(idp.push(RISK_LEVEL_CHANGE, "ext-bot", current_level="low"))
    assert low.action == "risk stays medium"
    await receiver.receive(idp.push(RISK_LEVEL_CHANGE, "ext-bot", current_level="HIGH"))
    assert store.get_agent(agent).risk is Risk.HIGH
    # Corral's own receivers hear about it as a Corral event
    assert [e.payload["current_level"] for e in recorder.events] == ["MEDIUM", "HIGH"]


async def test_session_revoked_revokes_tokens_and_releases_sessions(store: Store, idp: Idp) -> None:
    agent = _agent(store)
    store.link_subject("idp", "ext-bot", "agent", agent)
    session = _session(store, owner=agent)
    before = datetime.now(UTC) - timedelta(seconds=1)
    done = await _receiver(store).receive(idp.push(SESSION_REVOKED, "ext-bot"))
    assert done.action == "tokens revoked, 1 session(s) released"
    status = store.principal_status(agent)
    assert status is not None and status.tokens_revoked_before is not None
    assert status.tokens_revoked_before > before
    released = store.get_session(session.id)
    assert released.state is SessionState.RELEASED
    assert released.release_reason == "caep_session_revoked"


async def test_credential_change(store: Store, idp: Idp) -> None:
    user = store.create_user("una").id
    store.link_subject("idp", "una@idp", "user", user)
    receiver = _receiver(store)
    update = idp.push(
        CREDENTIAL_CHANGE, "una@idp", credential_type="password", change_type="update"
    )
    assert (await receiver.receive(update)).action == "no effect"
    status = store.principal_status(user)
    assert status is not None and status.tokens_revoked_before is None
    revoke = idp.push(CREDENTIAL_CHANGE, "una@idp", credential_type="x509", change_type="revoke")
    assert (await receiver.receive(revoke)).action == "tokens revoked"
    status = store.principal_status(user)
    assert status is not None and status.tokens_revoked_before is not None
    risk = await receiver.receive(idp.push(RISK_LEVEL_CHANGE, "una@idp", current_level="HIGH"))
    assert risk.action.startswith("no effect")  # users carry no risk level


async def test_unmapped_subject_is_accepted_and_ignored(store: Store, idp: Idp) -> None:
    agent = _agent(store)
    done = await _receiver(store).receive(idp.push(SESSION_REVOKED, "stranger"))
    assert done.principal is None and done.action == "ignored"
    status = store.principal_status(agent)
    assert status is not None and status.tokens_revoked_before is None


async def test_a_failed_effect_does_not_use_up_the_jti(
    store: Store, idp: Idp, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _agent(store)
    store.link_subject("idp", "ext-bot", "agent", agent)
    receiver = _receiver(store)
    token = idp.push(SESSION_REVOKED, "ext-bot")

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("store down")

    monkeypatch.setattr(receiver.directory, "revoke_tokens", broken)
    with pytest.raises(RuntimeError):
        await receiver.receive(token)
    monkeypatch.undo()
    assert (await receiver.receive(token)).principal == agent  # the retry is no replay
    with pytest.raises(SetRefusedError, match="already received"):
        await receiver.receive(token)


def test_subject_keys() -> None:
    provider = OidcProvider(name="idp", issuer=IDP, audience="a", jwks={"keys": []})
    assert subject_key({"format": "iss_sub", "iss": IDP, "sub": "s"}, provider) == "s"
    other_issuer = {"format": "iss_sub", "iss": "https://other.example", "sub": "s"}
    assert subject_key(other_issuer, provider) is None
    assert subject_key({"format": "email", "email": "a@b.c"}, provider) == "a@b.c"
    assert subject_key({"format": "opaque", "id": "x"}, provider) == "x"
    user = {"format": "opaque", "id": "x"}
    assert subject_key({"format": "complex", "user": user}, provider) == "x"


# -- the HTTP adapter --------------------------------------------------------------------------


def test_push_endpoint_answers_per_rfc8935(store: Store, idp: Idp) -> None:
    agent = _agent(store)
    store.link_subject("idp", "ext-bot", "agent", agent)
    app = FastAPI()
    include_ssf(app, _receiver(store), CORRAL)
    client = TestClient(app)
    head = {"Content-Type": "application/secevent+jwt"}
    token = idp.push(RISK_LEVEL_CHANGE, "ext-bot", current_level="HIGH")
    ok = client.post("/ssf/events", content=token, headers=head)
    assert ok.status_code == 202 and ok.content == b""
    replay = client.post("/ssf/events", content=token, headers=head)
    assert replay.status_code == 400 and replay.json()["err"] == "invalid_request"
    assert set(replay.json()) == {"err", "description"}
    wrong_type = client.post("/ssf/events", content=token, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 400 and wrong_type.json()["err"] == "invalid_request"
    huge = client.post("/ssf/events", content="x" * 20000, headers=head)
    assert huge.status_code == 400
    meta = client.get("/.well-known/ssf-configuration").json()
    assert meta["issuer"] == CORRAL and meta["jwks_uri"] == f"{CORRAL}/.well-known/jwks.json"
    assert meta["delivery_methods_supported"] == ["urn:ietf:rfc:8935"]
    assert meta["events_supported"] == list(CAEP_EVENT_TYPES)
