"""`corral pool ...` and `corral session ...` against the running server."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import IMAGE, Server


def test_pool_and_session_commands(server: Server) -> None:
    made = server.corral("pool", "create", "clipool", "--image", IMAGE, "--warm", "1", "--max", "1")
    assert made.returncode == 0, made.stderr
    assert "clipool" in server.corral("pool", "list").stdout
    again = server.corral("pool", "create", "clipool", "--image", IMAGE)
    assert again.returncode != 0 and "exists" in again.stderr
    bad = server.corral("pool", "create", "other", "--image", IMAGE, "--size", "huge")
    assert bad.returncode != 0 and "size" in bad.stderr
    server.wait_ready("clipool", 1)
    assert server.acquire("clipool").status_code == 403  # not assigned to the agent yet
    assigned = server.corral("pool", "assign", "clipool", "--agent", "agent-e2e")
    assert assigned.returncode == 0, assigned.stderr
    sid = server.acquire("clipool").json()["session_id"]
    assert sid in server.corral("session", "list").stdout
    shown = server.corral("session", "show", sid)
    assert shown.returncode == 0 and f"/sessions/{sid}/mcp" in shown.stdout
    assert server.corral("session", "release", sid).returncode == 0
    assert sid not in server.corral("session", "list").stdout
    assert sid in server.corral("session", "list", "--all").stdout
    missing = server.corral("pool", "show", "no-such-pool")
    assert missing.returncode != 0 and "no pool named" in missing.stderr
    assert server.corral("pool", "delete", "clipool").returncode == 0


def test_cli_without_a_server_says_how_to_start_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral", "pool", "list"],
        env={"CORRAL_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "corral up" in done.stderr


def test_json_output_and_waiting_for_warm_pcs(server: Server) -> None:
    """Issue 10: `--wait` returns once the warm PCs are ready, progress on stderr only; every
    list and show answers one JSON document on stdout; piped tables keep whole rows."""
    made = server.corral(
        "pool", "create", "jsonpool", "--image", IMAGE, "--warm", "1", "--max", "1",
        "--wait", "--output", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    pool = json.loads(made.stdout)
    assert pool["name"] == "jsonpool" and pool["counts"]["ready"] == 1
    assert "jsonpool: warming 1 PC(s)" in made.stderr and "1/1 ready" in made.stderr
    listed = json.loads(server.corral("pool", "list", "--output", "json").stdout)
    assert "jsonpool" in [p["name"] for p in listed]
    shown = json.loads(server.corral("pool", "show", "jsonpool", "--output", "json").stdout)
    assert shown["warm"] == 1 and shown["max"] == 1
    assert server.corral("pool", "assign", "jsonpool", "--agent", "agent-e2e").returncode == 0
    sid = server.acquire("jsonpool").json()["session_id"]
    try:
        sessions = json.loads(server.corral("session", "list", "--output", "json").stdout)
        assert sid in [s["session_id"] for s in sessions]
        one = json.loads(server.corral("session", "show", sid, "--output", "json").stdout)
        assert one["mcp_url"].endswith(f"/sessions/{sid}/mcp") and one["pool"] == "jsonpool"
        table = server.corral("session", "list").stdout  # piped: one whole row per session
        row = next(line for line in table.splitlines() if sid in line)
        assert one["pc_id"] in row
    finally:
        assert server.corral("session", "release", sid).returncode == 0
    users = json.loads(server.corral("user", "list", "--output", "json").stdout)
    assert "e2e-sponsor" in [u["name"] for u in users]
    agent = json.loads(server.corral("agent", "show", "agent-e2e", "--output", "json").stdout)
    assert agent["sponsors"][0]["name"] == "e2e-sponsor" and agent["keys"]
    policies = json.loads(server.corral("policy", "list", "--output", "json").stdout)
    assert isinstance(policies["version"], int) and policies["system"] == []
    assert server.corral("pool", "delete", "jsonpool").returncode == 0
