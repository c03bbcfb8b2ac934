"""`--output json` on every list and show, tables that are never cut when piped, and progress
on stderr only (issue 10, "A CLI that feels native").

Local commands run on a temporary SQLite store; the commands that talk to a server get their
answers from a stand-in for `corral.cli._http.call` (the REST side is tested for real in
tests/e2e/test_cli.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from corral.cli import _common, pool, session
from corral.cli import policy as policy_cli
from corral.cli.events import app as events_app
from corral.cli.federation import app as federation_app
from corral.cli.identity import agent_app, user_app
from corral.cli.main import CorralGroup
from corral.cli.main import app as main_app

#: a terminal as narrow as can be: piped output must still hold every value on one line
NARROW = {"COLUMNS": "40"}
LONG = "a-very-long-value-" + "x" * 150


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    made = CliRunner().invoke(
        user_app, ["create", "alice", "--role", "sponsor", "--email", f"{LONG}@example.com"]
    )
    assert made.exit_code == 0, made.output
    made = CliRunner().invoke(agent_app, ["create", "bot", "--sponsor", "alice"])
    assert made.exit_code == 0, made.output
    return url


def run(app: typer.Typer, *args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env=NARROW)
    assert result.exit_code == 0, result.output
    return result


def as_json(app: typer.Typer, *args: str) -> Any:
    """The command's stdout, which must be one JSON document and nothing else."""
    return json.loads(run(app, *args, "--output", "json").stdout)


def test_users_and_agents_as_json(db: str) -> None:
    users = as_json(user_app, "list")
    assert [u["name"] for u in users] == ["alice"]
    alice = users[0]
    assert set(alice) == {
        "id", "name", "email", "roles", "enabled", "totp_enabled", "groups", "created_at",
    }  # fmt: skip
    assert alice["roles"] == ["sponsor"] and alice["email"] == f"{LONG}@example.com"
    assert as_json(user_app, "show", "alice") == alice

    agents = as_json(agent_app, "list")
    assert [a["name"] for a in agents] == ["bot"]
    assert agents[0]["sponsors"] == [{"id": alice["id"], "name": "alice"}]
    assert agents[0]["risk"] == "none" and agents[0]["enabled"] is True
    shown = as_json(agent_app, "show", "bot")
    assert {k: v for k, v in shown.items() if k != "keys"} == agents[0]
    assert len(shown["keys"]) == 1 and shown["keys"][0]["usable"] is True
    assert as_json(agent_app, "key", "list", "bot") == shown["keys"]
    assert "d" not in shown["keys"][0] and "private" not in json.dumps(shown)


def test_events_and_federation_as_json(db: str, tmp_path: Path) -> None:
    header = tmp_path / "auth"
    header.write_text("Bearer secret-header-value\n")
    header.chmod(0o600)
    run(
        events_app, "receivers", "add", "siem", "--endpoint", "https://siem.example/push",
        "--audience", "siem", "--auth-header-file", str(header),
    )  # fmt: skip
    receivers = as_json(events_app, "receivers", "list")
    assert receivers[0]["name"] == "siem" and receivers[0]["auth_header_set"] is True
    assert "secret-header-value" not in json.dumps(receivers)
    assert isinstance(as_json(events_app, "outbox"), list)

    secret = tmp_path / "secret"
    secret.write_text("client-secret-value\n")
    secret.chmod(0o600)
    run(
        federation_app, "add", "corp", "--issuer", "https://idp.example", "--audience", "corral",
        "--jwks-uri", "https://idp.example/jwks", "--client-id", "app",
        "--client-secret-file", str(secret), "--assertions",
    )  # fmt: skip
    run(federation_app, "link", "corp", "sub-1", "--agent", "bot")
    providers = as_json(federation_app, "list")
    assert providers[0]["name"] == "corp" and providers[0]["client_secret_set"] is True
    shown = as_json(federation_app, "show", "corp")
    assert {k: v for k, v in shown.items() if k != "subjects"} == providers[0]
    assert [s["subject"] for s in shown["subjects"]] == ["sub-1"]
    assert as_json(federation_app, "subjects", "corp") == shown["subjects"]
    assert "client-secret-value" not in json.dumps(shown)


POOL = {
    "name": "web",
    "image": "desktop",
    "region": "local",
    "size": "small",
    "warm": 2,
    "max": 4,
    "max_sessions_per_agent": 2,
    "counts": {"ready": 0, "booting": 2},
}
SESSION = {
    "session_id": "s-" + "1" * 40,
    "pool": "web",
    "pc_id": "pc-" + "2" * 40,
    "state": "active",
    "created_at": "2026-01-01T00:00:00+00:00",
    "expires_at": "2026-01-01T08:00:00+00:00",
    "mcp_url": "http://127.0.0.1:8420/sessions/s-1/mcp",
    "viewer_url": "http://127.0.0.1:8420/console/sessions/s-1",
}
POLICIES = {
    "version": 3,
    "policies": [
        {
            "name": "p1",
            "enabled": True,
            "created_by": "admin",
            "updated_at": "2026-01-01T00:00:00",
            "text": "permit(principal, action, resource);",
        }
    ],
    "system": [{"name": "sys", "text": "forbid(principal, action, resource);"}],
}
CHANGE = {"version": 3, "kind": "policy_added", "subject": "p1", "actor": "admin", "at": "2026"}
APPROVAL = {
    "id": "ap-1",
    "state": "pending",
    "agent_id": "a-1",
    "action": "run_command",
    "resource": "PC::pc-1",
    "detail": {"command": "ls"},
    "expires_at": "2026-01-01T00:00:00",
    "decided_by": None,
}
ASSIGNMENT = {"pool": "web", "agent": "bot", "group": None, "created_by": "admin", "at": "x"}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Canned answers of the REST API, by method and path; the requests made, in order."""
    answers: dict[tuple[str, str], Any] = {
        ("GET", "/v1/pools"): [POOL],
        ("GET", "/v1/pools/web"): POOL,
        ("GET", "/v1/pools/web/assignments"): [{**ASSIGNMENT, "created_at": "2026-01-01"}],
        ("GET", "/v1/sessions?active=true"): [SESSION],
        ("GET", f"/v1/sessions/{SESSION['session_id']}"): SESSION,
        ("GET", "/v1/policies"): POLICIES,
        ("GET", "/v1/policies/p1"): POLICIES["policies"][0],  # type: ignore[index]
        ("GET", "/v1/policies/changes?since=0"): [CHANGE],
        ("GET", "/v1/approvals?state=pending"): [APPROVAL],
    }
    asked: list[tuple[str, str]] = []

    def call(method: str, path: str, **_: Any) -> Any:
        asked.append((method, path))
        return answers[(method, path)]

    for module in (pool, session, policy_cli):
        monkeypatch.setattr(module, "call", call)
    yield asked


@pytest.mark.parametrize(
    ("app", "args", "expected"),
    [
        (pool.app, ["list"], [POOL]),
        (pool.app, ["show", "web"], POOL),
        (pool.app, ["assignments", "web"], [{**ASSIGNMENT, "created_at": "2026-01-01"}]),
        (session.app, ["list"], [SESSION]),
        (session.app, ["show", SESSION["session_id"]], SESSION),
        (policy_cli.app, ["list"], {**POLICIES, "system": []}),
        (policy_cli.app, ["list", "--system"], POLICIES),
        (policy_cli.app, ["show", "p1"], POLICIES["policies"][0]),  # type: ignore[index]
        (policy_cli.app, ["history"], [CHANGE]),
        (policy_cli.approvals_app, ["list"], [APPROVAL]),
    ],
)
def test_server_lists_and_shows_as_json(
    server: list[tuple[str, str]], app: typer.Typer, args: list[str], expected: object
) -> None:
    """The server's answer, unchanged: the REST API's documented keys are the JSON's."""
    assert as_json(app, *args) == expected


def test_piped_tables_are_never_cut_or_folded(db: str, server: list[tuple[str, str]]) -> None:
    email = f"{LONG}@example.com"
    listed = run(user_app, "list").stdout
    assert any(email in line for line in listed.splitlines()), listed
    sessions = run(session.app, "list").stdout
    row = next(line for line in sessions.splitlines() if SESSION["session_id"] in line)
    assert SESSION["pc_id"] in row and "…" not in sessions


def test_piped_output_is_as_wide_as_it_needs() -> None:
    assert not _common.out_console.is_terminal  # pytest captures stdout
    assert _common.out_console.width == _common.UNBOUNDED_WIDTH


def test_every_list_and_show_takes_output_json() -> None:
    """No list or show command without --output (a new one must take it too)."""
    root = typer.main.get_command(main_app)
    assert isinstance(root, CorralGroup)
    missing = []
    for name in root.list_commands(None):
        group = root.get_command(None, name)
        stack: list[tuple[str, Any]] = [(name, group)]
        while stack:
            path, command = stack.pop()
            subs = getattr(command, "commands", None)
            if subs:
                stack.extend((f"{path} {n}", c) for n, c in subs.items())
                continue
            last = path.split()[-1]
            is_listing = last in {"list", "show", "assignments", "history", "outbox", "subjects"}
            if is_listing and not any("--output" in p.opts for p in command.params):
                missing.append(path)
    assert missing == []


def _pool_after(readies: list[int]) -> Callable[..., Any]:
    """A server whose pool has one more ready PC at each look."""
    looks = iter(readies)

    def call(method: str, path: str, **_: Any) -> Any:
        ready = next(looks)
        return {**POOL, "counts": {"ready": ready, "booting": POOL["warm"] - ready}}  # type: ignore[operator]

    return call


def test_pool_create_wait_shows_progress_on_stderr_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "call", _pool_after([0, 1, 1, 2]))
    monkeypatch.setattr(pool, "_POLL_S", 0)
    result = CliRunner().invoke(pool.app, ["create", "web", "--wait", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["ready"] == 2  # stdout: the JSON, nothing else
    lines = result.stderr.splitlines()
    assert lines == [
        "pool web: warming 2 PC(s)",
        "pool web: warming 2 PC(s): 0/2 ready, 2 booting",
        "pool web: warming 2 PC(s): 1/2 ready, 1 booting",  # said once, seen twice
        "pool web: warming 2 PC(s): 2/2 ready, 0 booting",
    ]


def test_pool_create_wait_gives_up_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "call", _pool_after([0] * 1000))
    monkeypatch.setattr(pool, "_POLL_S", 0.01)
    result = CliRunner().invoke(pool.app, ["create", "web", "--wait", "--timeout", "1"])
    assert result.exit_code == 9, result.output
    assert "0 of 2 warm PCs ready after 1 s" in result.stderr and result.stdout == ""


def test_progress_makes_untrusted_text_visible(capsys: pytest.CaptureFixture[str]) -> None:
    with _common.progress("building x") as shown:
        shown.log("[1/3] \x1b[2Jpackages")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["building x", "[1/3] \\x1b[2Jpackages"]
