"""Against a real `corral up`: a listener an agent plants in its PC where pcd's socket used to
be (sending garbage, a huge size, or trickling a byte a second) never reaches the server, and
the PC's pool and another pool keep acquiring, acting and resetting (issue 9, section 1)."""

from __future__ import annotations

import shlex

from tests.runtime.test_pcd_socket import LISTENER

from .conftest import Server


def _run(server: Server, sid: str, command: str) -> str:
    r = server.act(sid, "run_command", command=command)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["exit_code"] == 0, data
    return str(data["stdout"])


def test_a_listener_planted_in_a_pc_never_reaches_the_server(server: Server) -> None:
    server.create_pool("plant", warm=1, max=1)
    server.create_pool("bystander", warm=1, max=1)
    server.wait_ready("plant", 1)
    server.wait_ready("bystander", 1)
    sid = server.acquire("plant", wait_s=30).json()["session_id"]
    for mode in ("garbage", "huge", "trickle"):
        # 1. The agent plants its listener (detached, so it outlives the command).
        planted = _run(
            server,
            sid,
            f"setsid -f python3 -c {shlex.quote(LISTENER)} {mode} {mode} >/dev/null 2>&1; "
            f"while [ ! -s /tmp/hijack-{mode}.pid ]; do sleep 0.05; done; "
            "test -S /run/corral/pcd.sock && echo planted",
        )
        assert planted.strip() == "planted"
        # 2. Fresh connections from the server (an observer's screenshot opens one per call)
        #    and the session's own actions reach the real pcd.
        peek = server.http.get(f"/v1/sessions/{sid}/screenshot")
        assert peek.status_code == 200, peek.text
        assert peek.content.startswith(b"\x89PNG")
        shot = server.act(sid, "screenshot")
        assert shot.status_code == 200, shot.text
        # 3. Another pool keeps acquiring, acting and resetting meanwhile.
        other = server.acquire("bystander", wait_s=30)
        assert other.status_code == 201, other.text
        other_sid = other.json()["session_id"]
        assert _run(server, other_sid, "echo fine").strip() == "fine"
        assert server.http.delete(f"/v1/sessions/{other_sid}").status_code == 200
        server.wait_ready("bystander", 1)
        # 4. The planted listener never got a connection.
        assert _run(server, sid, f"cat /tmp/hijack-{mode} 2>/dev/null; echo end") == "end\n"
    counts = server.http.get("/v1/pools/plant").json()["counts"]
    assert counts["in_use"] == 1 and counts["quarantined"] == 0
    server.http.delete(f"/v1/sessions/{sid}")
