"""`corral audit trace` and `corral audit export` on a data folder: the records the record
stage wrote (OCSF), read back as a tree and as streams a SIEM takes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.audit import log
from corral.audit.event import Actor, AuditEvent, Category, DecisionNote, Outcome, TraceIds
from corral.audit.ocsf import encode, to_ocsf
from corral.cli.main import app
from corral.store import EntryKeys, Store

TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER = "1" * 32


def _event(op: str, span: str, parent: str | None, *, trace: str = TRACE, at: int) -> bytes:
    event = AuditEvent(
        time_ms=at,
        category=Category.SESSION if op in ("acquire", "release") else Category.TOOL,
        operation=op,
        action=op,
        actor=Actor("agent", "a-1", sponsor="u-1"),
        outcome=Outcome.SUCCESS,
        session_id="s-1",
        pc_id="pc-1",
        pool="p",
        trace=TraceIds(trace, span, parent),
        decisions=(DecisionNote(op, 'Session::"s-1"', True, ("agents-use-their-sessions",)),),
        args={"text": "\x1b[31mred\x1b[0m"},  # hostile text: shown escaped
    )
    return encode(to_ocsf(event, record_id=f"r-{span}", product_version="test"))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    store = Store(url)
    store.migrate()
    calls = [
        ("acquire", "a" * 16, "f" * 16, TRACE, 1_000),
        ("click", "b" * 16, "a" * 16, TRACE, 2_000),
        ("screenshot", "9" * 16, None, OTHER, 2_500),
        ("type_text", "c" * 16, "a" * 16, TRACE, 3_000),
        ("release", "d" * 16, "f" * 16, TRACE, 4_000),
    ]
    with store.transaction() as uow:
        log.append(
            uow,
            [_event(op, span, parent, trace=t, at=at) for op, span, parent, t, at in calls],
            [EntryKeys(f"r-{span}", t, "s-1") for _, span, _, t, _ in calls],
        )
    store.close()
    return tmp_path


def test_trace_prints_the_chain_as_a_tree(env: Path) -> None:
    done = CliRunner().invoke(app, ["audit", "trace", TRACE, "--output", "json"])
    assert done.exit_code == 0, done.output
    tree = json.loads(done.output)
    assert tree["records"] == 4 and tree["request_spans"] == ["f" * 16]
    [acquire] = tree["children"]  # request -> acquire -> the session's actions, release
    assert acquire["operation"] == "acquire"
    assert [c["operation"] for c in acquire["children"]] == ["click", "type_text", "release"]
    assert acquire["actor"] == {"id": "a-1", "kind": "agent", "sponsor": "u-1"}
    text = CliRunner().invoke(app, ["audit", "trace", TRACE])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].startswith(f"trace {TRACE}: 4 records")
    assert any("click success by agent a-1" in line for line in lines)
    assert any("allow click by agents-use-their-sessions" in line for line in lines)
    assert "\x1b" not in text.output


def test_trace_refuses_what_is_not_a_trace_id(env: Path) -> None:
    bad = CliRunner().invoke(app, ["audit", "trace", "not-a-trace"])
    assert bad.exit_code != 0 and "32 lowercase hex" in bad.output
    none = CliRunner().invoke(app, ["audit", "trace", "2" * 32])
    assert none.exit_code != 0 and "no audit record" in none.output


def test_export_streams_records_that_rehash_to_the_log(env: Path, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/corral.db")
    with store.transaction(write=False) as uow:
        stored = uow.audit.entries(0, 5)
    store.close()
    ocsf = CliRunner().invoke(app, ["audit", "export", "--format", "ocsf"])
    assert ocsf.exit_code == 0, ocsf.output
    lines = ocsf.output.splitlines()
    assert [line.encode() for line in lines] == stored  # the entries' exact bytes
    out = tmp_path / "export.jsonl"
    done = CliRunner().invoke(
        app, ["audit", "export", "--format", "jsonl", "--since", "2500", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [2, 3, 4]  # at or after 2.5 s
    for r in rows:
        assert r["leaf_hash"] == hashlib.sha256(b"\x00" + stored[r["index"]]).hexdigest()
    iso = CliRunner().invoke(
        app, ["audit", "export", "--since", "1970-01-01T00:00:03Z", "--session", "s-1"]
    )
    assert iso.exit_code == 0 and len(iso.output.splitlines()) == 2
    bad = CliRunner().invoke(app, ["audit", "export", "--since", "yesterday"])
    assert bad.exit_code != 0 and "ISO 8601" in bad.output
