"""`corral pool ...` and `corral session ...` against the running server."""

from __future__ import annotations

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
