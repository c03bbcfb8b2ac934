"""The record stage over a real store: an answer waits for its record's commit; refusals and
failures are recorded with their decisions; what a record must never hold, it does not."""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import contextmanager
from typing import Any

import pytest

from corral.access.decisions import note_decision
from corral.access.engine import Decision
from corral.audit.recorder import AuditRecorder
from corral.audit.writer import AuditWriter
from corral.domain.access import Caller, CallerKind
from corral.errors import PermissionDeniedError
from corral.gate import Gate, GateCall, Route, operation, tool_operation
from corral.store import Store

KEY = b"k" * 32
AGENT = Caller(CallerKind.AGENT, "a-1", address="10.0.0.9", jkt="thumb")


class _Allow:
    async def authorize(self, call: GateCall) -> None:
        return None


def _records(store: Store) -> list[dict[str, Any]]:
    with store.transaction(write=False) as uow:
        size, _ = uow.audit.state()
        return [json.loads(e) for e in uow.audit.entries(0, size)]


def _gate(store: Store, route: Route) -> tuple[Gate, AuditWriter]:
    writer = AuditWriter(store).start()
    gate = Gate({}, tools=route, authorizer=_Allow())
    gate.recorder = AuditRecorder(writer, content_key=KEY)
    return gate, writer


def test_the_answer_waits_for_its_records_commit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the log's commit is held, the call does not return; once it commits, it does:
    no caller ever holds an answer whose record could still be lost."""

    async def act(call: GateCall) -> Any:
        return {"done": True}

    gate, writer = _gate(store, Route(act))
    held = threading.Event()
    release = threading.Event()
    real = store.transaction

    @contextmanager
    def slow(**kw: Any) -> Any:
        with real(**kw) as uow:
            yield uow
            held.set()
            release.wait(10)  # the commit happens when this block ends

    monkeypatch.setattr(store, "transaction", slow)

    async def go() -> None:
        task = asyncio.create_task(gate.handle(AGENT, tool_operation("click"), "s-1", {"x": 1}))
        await asyncio.to_thread(held.wait, 10)
        await asyncio.sleep(0.2)
        assert not task.done(), "answered before its record committed"
        release.set()
        assert await asyncio.wait_for(task, 10) == {"done": True}

    try:
        asyncio.run(go())
    finally:
        release.set()
        writer.stop()
    monkeypatch.setattr(store, "transaction", real)
    [record] = [r for r in _records(store) if r["unmapped"]["corral"]["operation"] == "click"]
    assert record["unmapped"]["corral"]["outcome"] == "success"


def test_a_refusal_is_recorded_with_its_decision_and_content_is_reduced(store: Store) -> None:
    secret = "hunter2 hunter2 hunter2 hunter2"  # noqa: S105

    async def refuse(call: GateCall) -> Any:
        note_decision(
            "type_text", 'Session::"s-1"', Decision(False, forbidden=True, policies=("no-typing",))
        )
        raise PermissionDeniedError("type_text refused by policy no-typing")

    gate, writer = _gate(store, Route(refuse))
    try:
        with pytest.raises(PermissionDeniedError):
            asyncio.run(gate.handle(AGENT, tool_operation("type_text"), "s-1", {"text": secret}))
    finally:
        writer.stop()
    [record] = _records(store)
    corral = record["unmapped"]["corral"]
    assert corral["outcome"] == "denied" and record["status_code"] == "permission_denied"
    assert corral["decisions"][0]["allowed"] is False
    assert corral["decisions"][0]["policies"] == ["no-typing"]
    assert record["policy"]["uid"] == "no-typing"
    assert secret not in json.dumps(record)
    assert corral["args"]["text"]["size"] == len(secret)
    assert record["actor"]["user"]["uid"] == "a-1"
    assert record["src_endpoint"]["ip"] == "10.0.0.9"


def test_a_grant_is_summarized_without_its_token(store: Store) -> None:
    class Session:
        id, pc_id, pool = "s-9", "pc-9", "p"

    class Grant:
        session = Session()
        token = {"session_token": "eyJ.secret.token"}

    async def acquire(call: GateCall) -> Any:
        return Grant()

    writer = AuditWriter(store).start()
    gate = Gate({"acquire": Route(acquire)}, authorizer=_Allow())
    gate.recorder = AuditRecorder(writer, content_key=KEY)
    try:
        asyncio.run(gate.handle(AGENT, operation("acquire"), "p", {}))
    finally:
        writer.stop()
    [record] = _records(store)
    assert "eyJ.secret.token" not in json.dumps(record)
    assert record["unmapped"]["corral"]["session"] == "s-9"
    assert record["unmapped"]["corral"]["pc"] == "pc-9"
    assert record["class_uid"] == 3003  # OCSF Authorize Session


def test_security_events_in_and_out_and_lifecycle_are_recorded(store: Store) -> None:
    from corral.domain.events import SESSION_REVOKED
    from corral.identity.caep import CorralEvent
    from corral.identity.event_emitter import EventEmitter
    from corral.identity.event_receiver import Outcome
    from corral.lifecycle.manager import PoolManager
    from tests.support.fakes import FakeDriver

    writer = AuditWriter(store).start()
    recorder = AuditRecorder(writer, content_key=KEY)
    emitter = EventEmitter(store, issuer="https://corral.test", keyring=lambda: None)
    emitter.on_emitted = recorder.note_security_out
    manager = PoolManager(store, FakeDriver())
    manager.on_lifecycle = recorder.note_lifecycle
    try:
        emitter.emit(CorralEvent(SESSION_REVOKED, "a-7", 1.0, {}, session_id="s-7"))
        recorder.note_security_in(
            Outcome(SESSION_REVOKED, "https://idp.test", "jti-1", "a-8", "tokens revoked")
        )
        manager._tell("quarantine", pc="pc-3", pool="p", reason="not running")
    finally:
        writer.stop()
    records = _records(store)
    ops = [r["unmapped"]["corral"]["operation"] for r in records]
    assert ops == ["ssf_out", "ssf_in", "quarantine"], ops
    out, received, quarantine = records
    assert out["class_uid"] == received["class_uid"] == 2004  # OCSF Detection Finding
    assert out["unmapped"]["corral"]["session"] == "s-7"
    assert received["unmapped"]["corral"]["result"]["done"] == "tokens revoked"
    assert quarantine["unmapped"]["corral"]["pc"] == "pc-3"
    assert quarantine["unmapped"]["corral"]["actor"]["kind"] == "system"


def test_a_call_cancelled_while_its_record_commits_leaves_the_writer_working(
    store: Store,
) -> None:
    """A client gone mid-call (the MCP SDK cancels the call's scope) must neither kill the
    writer nor lose the record: later calls are recorded and answered."""
    import anyio

    acted: list[int] = []

    async def act(call: GateCall) -> Any:
        acted.append(call.args["x"])
        await asyncio.sleep(0.05)
        return {"ok": True}

    gate, writer = _gate(store, Route(act))

    async def go() -> None:
        with anyio.move_on_after(0.01):
            await gate.handle(AGENT, tool_operation("click"), "s-1", {"x": 1})
        await anyio.sleep(0.3)
        with anyio.fail_after(5):
            assert await gate.handle(AGENT, tool_operation("click"), "s-1", {"x": 2}) == {
                "ok": True
            }

    try:
        anyio.run(go)
        assert writer.healthy
    finally:
        writer.stop()
    assert acted == [1, 2]
    assert len(_records(store)) == 2  # the cancelled call's record too


def test_secrets_never_reach_a_record_not_even_a_preview() -> None:
    from corral.audit.recorder import _bounded

    args = {
        "password": "hunter2hunter2",
        "client_secret": "CLIENTSECRET",
        "auth_header": "Bearer SUPERSECRET-RECEIVER-TOKEN",
        "context": {"api_key": "K-123456", "Authorization": "Basic xyz"},
        "allow_assertions": True,
        "name": "kept",
    }
    out = json.dumps(_bounded(args, KEY))
    for secret in ("hunter2", "CLIENTSECRET", "SUPERSECRET", "K-123456", "Basic xyz"):
        assert secret not in out
    assert json.loads(out)["name"] == "kept" and json.loads(out)["allow_assertions"] is True


def test_the_refusing_decision_is_kept_among_many(store: Store) -> None:
    async def refuse(call: GateCall) -> Any:
        for i in range(40):
            note_decision("read_session", f'Session::"s-{i}"', Decision(True, policies=("p",)))
        note_decision("click", 'Session::"s-1"', Decision(False, policies=("the-forbid",)))
        raise PermissionDeniedError("refused")

    gate, writer = _gate(store, Route(refuse))
    try:
        with pytest.raises(PermissionDeniedError):
            asyncio.run(gate.handle(AGENT, tool_operation("click"), "s-1", {"x": 1}))
    finally:
        writer.stop()
    [record] = _records(store)
    assert record["policy"]["uid"] == "the-forbid"


def test_token_refusals_name_no_actor_and_cannot_flood_the_log(store: Store) -> None:
    from corral.identity.token_endpoint import TokenOutcome

    writer = AuditWriter(store).start()
    recorder = AuditRecorder(writer, content_key=KEY)

    async def flood() -> None:
        for i in range(300):
            await recorder.record_token(
                TokenOutcome(
                    "203.0.113.7", client_id=f"victim-{i % 3}", error_code="invalid_client"
                )
            )

    try:
        asyncio.run(flood())
    finally:
        writer.stop()
    records = _records(store)
    assert 100 <= len(records) < 300  # a burst, then about 20 a second
    for r in records:
        assert "uid" not in r["actor"]["user"]  # a claimed id is not an identity
        assert r["unmapped"]["corral"]["args"]["claimed_client_id"].startswith("victim-")


def test_only_a_sessions_holder_continues_its_trace(store: Store) -> None:
    class Session:
        id, pc_id, pool = "s-A", "pc-A", "p"

    class Grant:
        session = Session()

    async def acquire(call: GateCall) -> Any:
        return Grant()

    async def act(call: GateCall) -> Any:
        return {"ok": True}

    writer = AuditWriter(store).start()
    gate = Gate({"acquire": Route(acquire)}, tools=Route(act), authorizer=_Allow())
    gate.recorder = AuditRecorder(writer, content_key=KEY)
    other = Caller(CallerKind.AGENT, "a-other")
    try:
        asyncio.run(gate.handle(AGENT, operation("acquire"), "p", {}))
        asyncio.run(gate.handle(AGENT, tool_operation("click"), "s-A", {"x": 1}))
        asyncio.run(gate.handle(other, tool_operation("click"), "s-A", {"x": 1}))
    finally:
        writer.stop()
    acquire_r, mine, theirs = _records(store)
    trace = acquire_r["metadata"]["correlation_uid"]
    assert mine["metadata"]["correlation_uid"] == trace
    assert theirs["metadata"]["correlation_uid"] != trace
