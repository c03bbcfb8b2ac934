"""The audit log through the whole app: every Gate call recorded, traced, provable; public
checkpoint, key and hash tiles; records for `read_audit` only; refusing what cannot be
recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest

from corral.audit.tlog.note import NoteVerifier, open_note
from corral.domain.models import PCState, PoolSpec

from .conftest import Client, Env

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
SECRET = "correct horse battery staple, the whole of it"  # noqa: S105


def _pool(env: Env, n: int = 2) -> None:
    env.store.create_pool(PoolSpec(name="aud", image="minimal", warm=0, max=n))
    for i in range(n):
        env.store.add_pc("aud", f"pc-aud-{i}", PCState.READY)
    env.store.assign_pool("aud", "agent", "bot", actor="test")


def _records(security: Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = 0
    while True:
        page = security("GET", f"/v1/audit/entries?start={start}&limit=1000")
        assert page.status_code == 200, page.text
        out += page.json()["records"]
        if page.json()["next"] is None:
            return out
        start = page.json()["next"]


def _corral(record: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = record["record"]["unmapped"]["corral"]
    return found


def _flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("children", []):
        out += _flatten(child)
    return out


def test_a_session_is_recorded_and_traced_from_the_request(
    env: Env, bot: Client, security: Client
) -> None:
    _pool(env)
    h = {"traceparent": TRACEPARENT}
    acquired = bot("POST", "/v1/pools/aud/sessions", json={}, headers=h)
    assert acquired.status_code == 201, acquired.text
    sid = acquired.json()["session_id"]
    token = acquired.json().get("session_token")
    act = f"/v1/sessions/{sid}/actions"
    assert bot("POST", f"{act}/click", json={"x": 3, "y": 4}).status_code == 200  # no header
    typed = bot("POST", f"{act}/type_text", json={"text": SECRET}, headers=h)
    assert typed.status_code == 200, typed.text
    released = bot("DELETE", f"/v1/sessions/{sid}", headers=h)
    assert released.status_code == 200, released.text

    records = _records(security)
    mine = [r for r in records if _corral(r).get("session") == sid]
    ops = [_corral(r)["operation"] for r in mine]
    assert ops == ["acquire", "click", "type_text", "release"], ops
    for r in mine:
        c = _corral(r)
        assert c["actor"]["kind"] == "agent"
        assert r["record"]["actor"]["user"]["uid"] == env.creds["bot"]["agent_id"]
        assert c["actor"]["sponsor"] == env.store.get_user("alice").id
        assert c["pool"] == "aud" and c["pc"].startswith("pc-aud-")
        assert c["outcome"] == "success"
        # the call without a traceparent continued the trace its session's acquire was in
        assert r["record"]["metadata"]["correlation_uid"] == TRACE
        assert any(d["allowed"] for d in c.get("decisions", [])), c
    # what the agent typed is a keyed hash, its size and a short preview; never whole
    everything = json.dumps(records)
    assert SECRET not in everything
    text = _corral(mine[2])["args"]["text"]
    assert text["size"] == len(SECRET.encode()) and len(text["hmac_sha256"]) == 64
    assert "preview" not in text  # none by default: typed text is often a password
    # nor the session token the acquire answered
    if token:
        assert token not in everything

    # release sealed the session: its answer names a signed checkpoint covering every record
    seal = released.json()["audit"]
    assert seal["checkpoint_size"] > max(r["index"] for r in mine)
    assert env.http is not None
    verifier = NoteVerifier.from_vkey(env.http.get("/audit/key").text.strip())
    body, _ = open_note(seal["checkpoint"], [verifier])
    assert body.splitlines()[1:3] == [str(seal["checkpoint_size"]), seal["root"]]
    # and each of its records is provable against it
    proved = security("GET", f"/v1/audit/records/{mine[1]['record']['metadata']['uid']}")
    assert proved.status_code == 200 and proved.json()["index"] == mine[1]["index"]

    tree = security("GET", f"/v1/audit/traces/{TRACE}")
    assert tree.status_code == 200, tree.text
    body = tree.json()
    assert body["request_spans"] == [PARENT]
    acquire = next(n for n in body["children"] if n["operation"] == "acquire")
    under = [n["operation"] for n in _flatten(acquire)[1:]]
    assert under == ["click", "type_text", "release"], body


def test_refusals_are_recorded_with_the_decision(env: Env, bot: Client, security: Client) -> None:
    refused = bot("GET", "/v1/users")
    assert refused.status_code == 403
    records = _records(security)
    denied = [r for r in records if _corral(r).get("operation") == "list_users"]
    assert denied, [_corral(r).get("operation") for r in records]
    c = _corral(denied[-1])
    assert c["outcome"] == "denied"
    assert denied[-1]["record"]["status_code"] == "permission_denied"
    assert [d["allowed"] for d in c["decisions"]] == [False]


def test_records_need_read_audit(bot: Client, sponsor: Client, security: Client) -> None:
    for who in (bot, sponsor):
        assert who("GET", "/v1/audit/entries").status_code == 403
        assert who("GET", "/audit/tile/entries/000.p/1").status_code == 403
    assert security("GET", "/v1/audit/entries").status_code == 200


def test_checkpoint_key_and_tiles_are_public_and_agree(env: Env, security: Client) -> None:
    assert env.http is not None
    security("GET", "/v1/pools")  # a few records
    security("GET", "/v1/sessions")
    anonymous = env.http
    key = anonymous.get("/audit/key")
    assert key.status_code == 200
    verifier = NoteVerifier.from_vkey(key.text.strip())
    appended = time.monotonic()
    while True:  # a checkpoint covers the two calls within the writer's interval (0.5 s)
        note = anonymous.get("/audit/checkpoint")
        assert note.status_code == 200, note.text
        text, names = open_note(note.text, [verifier])
        assert names == [verifier.name]
        origin, size_line, root_line = text.splitlines()[:3]
        size, root = int(size_line), base64.b64decode(root_line)
        if size >= 2 or time.monotonic() - appended > 5:
            break
        time.sleep(0.05)
    assert origin == verifier.name and size >= 2
    # the entries need read_audit; the hash tile is public and holds their leaf hashes
    path = f"000.p/{size}" if size < 256 else "000"
    assert anonymous.get(f"/audit/tile/entries/{path}").status_code == 401
    hashes = anonymous.get(f"/audit/tile/0/{path}")
    assert hashes.status_code == 200, hashes.text
    bundle = security("GET", f"/audit/tile/entries/{path}").content
    entries, at = [], 0
    while at < len(bundle):
        n = int.from_bytes(bundle[at : at + 2], "big")
        entries.append(bundle[at + 2 : at + 2 + n])
        at += 2 + n
    leaves = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
    assert b"".join(leaves[: len(hashes.content) // 32]) == hashes.content
    assert root  # the root's own check is the independent verifier's (tests/audit)


def test_a_log_that_cannot_be_written_refuses_actions(
    env: Env, bot: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pool(env)
    sid = bot("POST", "/v1/pools/aud/sessions", json={}).json()["session_id"]
    act = f"/v1/sessions/{sid}/actions/run_command"
    assert bot("POST", act, json={"command": "echo before"}).status_code == 200
    writer = env.audit.writer

    def full(**kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.store, "transaction", full)
    ran_before = len(env.driver.ran)
    first = bot("POST", act, json={"command": "echo during"})
    assert first.status_code == 503 and first.json()["code"] == "audit_unavailable"
    ran_after_first = len(env.driver.ran)
    # the log is known broken: the next calls are refused before they act
    for _ in range(3):
        again = bot("POST", act, json={"command": "echo refused"})
        assert again.status_code == 503, again.text
    assert len(env.driver.ran) == ran_after_first <= ran_before + 1
    monkeypatch.undo()  # the disk has room again (before the app shuts down)
    time.sleep(1.05)  # a probe is tried at most once a second
    after = bot("POST", act, json={"command": "echo after"})
    assert after.status_code == 200, after.text
    assert len(env.driver.ran) == ran_after_first + 1
    # the log itself says where its gap was: a record of the outage, then the call
    found = [_corral(r) for r in _records(env.client(env.creds["sec"]))]
    tail = [c for c in found if c["operation"] != "token"][-2:]  # (the reader's own token)
    assert tail[0]["operation"] == "audit_resumed" and tail[0]["result"]["failed_records"] >= 4
    assert tail[1]["operation"] == "run_command"


def test_token_issue_and_refusal_are_recorded(env: Env, bot: Client, security: Client) -> None:
    bot("GET", "/v1/pools")  # the bot's first token
    assert env.http is not None
    refused = env.http.post(
        "/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": "not.a.jwt",
            "client_id": "who-\x1b[31m-knows",
        },
    )
    assert refused.status_code in (400, 401), refused.text
    tokens = [r for r in _records(security) if _corral(r).get("operation") == "token"]
    issued = [r for r in tokens if _corral(r)["outcome"] == "success"]
    bot_id = env.creds["bot"]["agent_id"]
    mine = [r for r in issued if r["record"]["actor"]["user"].get("uid") == bot_id]
    assert mine and mine[0]["record"]["class_uid"] == 3002  # OCSF Authentication
    assert _corral(mine[0])["actor"]["sponsor"] == env.store.get_user("alice").id
    assert mine[0]["record"]["actor"]["user"].get("credential_uid")  # the DPoP key it binds
    denied = [r for r in tokens if _corral(r)["outcome"] == "denied"]
    assert denied, tokens
    last = denied[-1]["record"]
    assert last["status_code"] in ("invalid_client", "invalid_request")
    assert "\x1b" not in json.dumps(last)
