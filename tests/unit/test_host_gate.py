"""The host CLI's writes walk the Gate as the host operator (corral.gate.host): every stage,
for every operation the host serves, decided by policy (a stored forbid narrows the operator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from corral.cli.events import app as events_app
from corral.cli.federation import app as federation_app
from corral.cli.identity import agent_app, user_app
from corral.domain.access import CallerKind
from corral.gate import GateCall
from corral.gate.host import HostGate
from corral.store import Store
from tests.gate.spy import Spy

ENV = {"COLUMNS": "250"}


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return url


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """One spy over every HostGate the commands build (each builds its own)."""
    seen = Spy.__new__(Spy)
    first: list[Spy] = []
    real_init = HostGate.__init__

    def init(self: HostGate, *args: Any, **kw: Any) -> None:
        real_init(self, *args, **kw)
        one = Spy(self.gate).install()
        if first:  # share the first spy's records
            one.walks, one.lock, one._open = first[0].walks, first[0].lock, first[0]._open
            one.decisions = first[0].decisions
        else:
            first.append(one)
            seen.__dict__ = one.__dict__

    monkeypatch.setattr(HostGate, "__init__", init)
    return seen


def run(app: Any, *args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env=ENV)
    assert result.exit_code == 0, result.output
    return result


def test_every_host_write_walks_every_stage(db: str, tmp_path: Path, spy: Spy) -> None:
    run(user_app, "create", "alice", "--role", "sponsor", "--key", "-o", "alice.json")
    run(user_app, "create", "bob", "--role", "sponsor")
    run(user_app, "roles", "bob", "--role", "sponsor", "--role", "admin")
    run(user_app, "disable", "bob")
    run(user_app, "enable", "bob")
    run(user_app, "revoke", "bob")
    run(agent_app, "create", "bot", "--sponsor", "alice", "-o", "bot.json")
    run(agent_app, "disable", "bot", "--reason", "test")
    run(agent_app, "enable", "bot")
    run(agent_app, "risk", "bot", "low")
    run(agent_app, "sponsor", "add", "bot", "bob")
    run(agent_app, "sponsor", "remove", "bot", "bob")
    rotated = run(agent_app, "key", "rotate", "bot", "-o", "bot.json", "--grace", "0")
    kid = rotated.output.split("new key ")[1].split()[0]
    run(agent_app, "key", "revoke", "bot", "--", kid)
    run(agent_app, "revoke", "bot")
    run(
        federation_app, "add", "corp", "--issuer", "https://idp.example", "--audience", "corral",
        "--jwks-uri", "https://idp.example/jwks", "--assertions",
    )  # fmt: skip
    run(federation_app, "link", "corp", "repo:acme/app", "--agent", "bot")
    run(federation_app, "unlink", "corp", "repo:acme/app")
    run(federation_app, "remove", "corp")
    run(
        events_app, "receivers", "add", "siem", "--endpoint", "https://siem.example/push",
        "--audience", "https://siem.example",
    )  # fmt: skip
    run(events_app, "receivers", "remove", "siem")
    served = set(spy.gate.routes)
    assert served - spy.complete() == set(), sorted(served - spy.complete())
    # each write was a policy decision for the operator, and the record stage saw it
    for name in served:
        decided = spy.decisions[name]
        assert decided and all(d.decision.allowed for d in decided), name
        assert {d.decision.policies for d in decided} == {("system-host-operator-administers",)}


def test_policy_sees_the_operator(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    callers: list[Any] = []
    real = HostGate.run

    def run_and_see(self: HostGate, name: str, target: Any = None, args: Any = None) -> Any:
        gate = self.gate
        inner = gate.recorder

        class Seen:
            async def admit(self, call: GateCall) -> None:
                await inner.admit(call)

            async def record(self, call: GateCall) -> None:
                callers.append((call.caller, call.operation.action))
                await inner.record(call)

        gate.recorder = Seen()
        return real(self, name, target, args)

    monkeypatch.setattr(HostGate, "run", run_and_see)
    run(user_app, "create", "alice", "--role", "sponsor")
    caller, action = callers[0]
    assert caller.kind is CallerKind.OPERATOR and action == "manage_directory"
    # A stored forbid narrows the operator: policy decides the host CLI's writes too.
    store = Store(db)
    try:
        forbid = (
            'forbid (principal == User::"host-operator", action == Action::"manage_directory", '
            "resource);"
        )
        store.add_policy("no-host-changes", forbid, actor="test")
    finally:
        store.close()
    refused = CliRunner().invoke(user_app, ["create", "carol"], env=ENV)
    assert refused.exit_code != 0 and "not allowed" in refused.output, refused.output
    assert CliRunner().invoke(user_app, ["disable", "alice"], env=ENV).exit_code == 0


def test_host_writes_are_in_the_audit_log_under_a_checkpoint(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write of the host CLI is a record (the operator, via cli), refused ones too, and
    the command ends with a signed checkpoint covering it."""
    import json

    from corral.audit.checkpoints import LogKeys
    from corral.audit.tlog.note import open_note

    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path / "data"))
    run(user_app, "create", "alice", "--role", "sponsor")
    run(agent_app, "create", "bot", "--sponsor", "alice", "-o", "bot.json")
    store = Store(db)
    try:
        with store.transaction(write=False) as uow:
            size, _ = uow.audit.state()
            records = [json.loads(e) for e in uow.audit.entries(0, size)]
            latest = uow.audit.latest_checkpoint()
    finally:
        store.close()
    ops = [r["unmapped"]["corral"]["operation"] for r in records]
    assert ops == ["create_user", "create_agent"], ops
    for r in records:
        assert r["unmapped"]["corral"]["actor"]["kind"] == "operator"
        assert r["unmapped"]["corral"]["via"] == "cli"
        assert r["unmapped"]["corral"]["outcome"] == "success"
    assert latest is not None and latest.size == size
    keys = LogKeys.load(tmp_path / "data", create=False)
    open_note(latest.note, [keys.verifier])  # signed by the log's key
