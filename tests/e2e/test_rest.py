"""The whole lifecycle over REST against the real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import Server


def test_acquire_act_release(server: Server) -> None:
    server.create_pool("life", warm=1, max=2)
    server.wait_ready("life", 1)
    r = server.acquire("life", key="k-life-1")
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["mcp_url"] == f"{server.url}/sessions/{s['session_id']}/mcp"
    assert s["viewer_url"].endswith(f"/sessions/{s['session_id']}/viewer")
    assert s["pc_id"].startswith("pc-") and s["expires_at"]
    sid = s["session_id"]

    ran = server.act(sid, "run_command", command="echo hello; id -un").json()
    assert ran["data"]["exit_code"] == 0 and ran["data"]["stdout"] == "hello\nuser\n"
    assert server.act(sid, "write_file", path="notes.txt", content="ünï").status_code == 200
    assert server.act(sid, "read_file", path="notes.txt").json()["text"] == "ünï"
    shot = server.act(sid, "screenshot", max_width=1024, max_height=768).json()
    png = base64.b64decode(shot["image"]["base64"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and shot["data"]["width"] == 1024
    # coordinates are in the scaled screenshot's space: 1023 is valid, 1024 is off-screen
    assert server.act(sid, "mouse_move", x=1023, y=639).status_code == 200
    off = server.act(sid, "mouse_move", x=1024, y=10)
    assert off.status_code == 400 and "off the screen" in off.json()["detail"]

    # What a browser renders, or could be tricked into rendering, is never sniffed or framed.
    viewer = server.http.get(s["viewer_url"])
    picture = server.http.get(f"/v1/sessions/{sid}/screenshot")
    assert viewer.status_code == 200 and picture.status_code == 200
    assert picture.headers["content-type"] == "image/png" and picture.content[:4] == b"\x89PNG"
    for answer in (viewer, picture):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    released = server.http.delete(f"/v1/sessions/{sid}")
    assert released.status_code == 200 and released.json()["state"] == "released"
    admin_id = json.loads(server.admin_file.read_text())["user_id"]
    assert released.json()["released_by"] == admin_id
    gone = server.act(sid, "run_command", command="true")
    assert gone.status_code == 404
    assert server.http.get(s["viewer_url"]).status_code == 404
    assert server.http.delete(f"/v1/sessions/{sid}").status_code == 200  # idempotent


def test_idempotency_key(server: Server) -> None:
    server.create_pool("idem", warm=2, max=2)
    server.wait_ready("idem", 2)
    first = server.acquire("idem", key="same-key").json()
    again = server.acquire("idem", key="same-key").json()
    assert again["session_id"] == first["session_id"] and again["pc_id"] == first["pc_id"]
    conflict = server.acquire("idem", key="same-key", wait_s=1)
    assert conflict.status_code == 409, conflict.text
    counts = server.http.get("/v1/pools/idem").json()["counts"]
    assert counts["in_use"] == 1  # the retry never took a second PC
    server.http.delete(f"/v1/sessions/{first['session_id']}")


def test_reset_between_sessions_and_no_pc_lent_twice(server: Server) -> None:
    server.create_pool("solo", warm=1, max=1)
    server.wait_ready("solo", 1)
    one = server.acquire("solo").json()
    server.act(one["session_id"], "write_file", path="secret.txt", content="session one")
    # the agent holds its limit (one: half of max 1, at least one): refused at once, by name
    limited = server.acquire("solo", wait_s=0.5)
    assert limited.status_code == 409 and limited.json()["code"] == "session_limit"
    # anyone else finds no free PC: 503, retry later
    busy = server.http.post("/v1/pools/solo/sessions", json={"wait_s": 0.5})
    assert busy.status_code == 503 and busy.headers["Retry-After"]
    server.http.delete(f"/v1/sessions/{one['session_id']}")
    two = server.acquire("solo", wait_s=30)
    assert two.status_code == 201, two.text
    two = two.json()
    assert two["pc_id"] == one["pc_id"]  # the same PC, reset to its image
    read = server.act(two["session_id"], "read_file", path="secret.txt")
    assert read.status_code == 422 and read.json()["code"] == "not_found"
    server.http.delete(f"/v1/sessions/{two['session_id']}")


def test_concurrent_acquires_never_share_a_pc(server: Server) -> None:
    server.create_pool("crowd", warm=10, max=10, max_sessions_per_agent=10)  # one agent, all
    server.wait_ready("crowd", 10, timeout=120)
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: server.acquire("crowd", wait_s=2), range(50)))
    won = [a.json() for a in answers if a.status_code == 201]
    lost = [a for a in answers if a.status_code != 201]
    assert len(won) == 10
    assert len({s["pc_id"] for s in won}) == 10
    # no PC free: 503 to retry later; or, once the agent holds all ten (its limit here), the
    # per-agent limit's 409 at once (waiting would not free one of its own sessions)
    for a in lost:
        if a.status_code == 409:
            assert a.json()["code"] == "session_limit", a.text
        else:
            assert a.status_code == 503 and a.headers.get("Retry-After"), a.text
    for s in won:
        server.http.delete(f"/v1/sessions/{s['session_id']}")
    server.http.delete("/v1/pools/crowd")


def test_idle_eviction(server: Server) -> None:
    server.create_pool("idle", warm=1, max=1, idle_timeout_s=2)
    server.wait_ready("idle", 1)
    sid = server.acquire("idle").json()["session_id"]
    deadline = time.monotonic() + 30
    while server.http.get(f"/v1/sessions/{sid}").status_code == 200:
        assert time.monotonic() < deadline, "idle session was never evicted"
        time.sleep(0.2)
    gone = server.act(sid, "run_command", command="true")
    assert gone.status_code == 404 and "idle" in gone.json()["detail"]
    server.wait_ready("idle", 1)  # the PC was reset and went back to the pool


def test_unhealthy_pc_is_quarantined_and_replaced(server: Server) -> None:
    from corral.runtime.pcs import PCRuntime

    server.create_pool("sick", warm=1, max=2)
    info = server.wait_ready("sick", 1)
    assert info["counts"]["quarantined"] == 0
    rt = PCRuntime(server.state)
    (listed,) = server.http.get("/v1/pools/sick/pcs").json()
    victim = rt.info(listed["id"])
    assert victim.pid and listed["state"] == "ready"
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        counts = server.http.get("/v1/pools/sick").json()["counts"]
        if counts["quarantined"] == 1 and counts["ready"] >= 1:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
    states = {pc["id"]: pc for pc in server.http.get("/v1/pools/sick/pcs").json()}
    assert states[victim.id]["state"] == "quarantined" and states[victim.id]["detail"]
    s = server.acquire("sick", wait_s=10).json()
    assert s["pc_id"] != victim.id  # a quarantined PC is never lent
    server.http.delete(f"/v1/sessions/{s['session_id']}")


def test_bad_input_gives_clear_4xx_never_500(server: Server) -> None:
    server.create_pool("bad", warm=1, max=1)
    server.wait_ready("bad", 1)
    sid = server.acquire("bad").json()["session_id"]
    cases = [
        server.http.post("/v1/pools/nope/sessions"),
        server.http.post("/v1/pools", json={"name": "Bad Name!", "image": "minimal"}),
        server.http.post("/v1/pools", json={"name": "x", "image": "no-such-image"}),
        server.http.post(
            "/v1/pools", content=b"{not json", headers={"content-type": "application/json"}
        ),
        server.http.post(f"/v1/sessions/{sid}/actions/no_such_tool", json={}),
        server.act(sid, "click", x=-5, y=10),
        server.act(sid, "press_keys", keys="ctrl+NoSuchKey"),
        server.act(sid, "run_command", command="true", bogus=1),
        server.act(sid, "read_file", path="/etc/shadow"),
        server.http.post(
            f"/v1/sessions/{sid}/actions/write_file",
            content=b"x" * (33 * 1024 * 1024),
            headers={"content-type": "application/json"},
        ),
        server.http.get("/v1/sessions/ses-unknown"),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert r.json()["detail"]
    assert [c.status_code for c in cases] == [404, 400, 404, 400, 400, 400, 400, 400, 400, 413, 404]
    ok = server.act(sid, "run_command", command="echo still fine")
    assert ok.status_code == 200 and ok.json()["data"]["stdout"] == "still fine\n"
    server.http.delete(f"/v1/sessions/{sid}")


def test_recovery_after_kill_9(server: Server) -> None:
    from corral.runtime.pcs import PCRuntime

    server.create_pool("crash", warm=2, max=3)
    server.wait_ready("crash", 2)
    s = server.acquire("crash").json()
    server.act(s["session_id"], "write_file", path="kept.txt", content="survives a restart")
    server.stop(signal.SIGKILL)
    server.start()
    rt = PCRuntime(server.state)
    runtime_ids = {pc.id for pc in rt.list_pcs()}
    session = server.http.get(f"/v1/sessions/{s['session_id']}").json()
    assert session["state"] == "active" and session["pc_id"] in runtime_ids
    read = server.act(s["session_id"], "read_file", path="kept.txt")
    assert read.json()["text"] == "survives a restart"
    info = server.wait_ready("crash", 2)
    assert sum(info["counts"].values()) <= 3
    # no orphan and no ghost: the PCs the runtime runs are exactly those the store knows
    deadline = time.monotonic() + 30
    while True:
        known = {
            pc["id"]
            for pool in server.http.get("/v1/pools").json()
            for pc in server.http.get(f"/v1/pools/{pool['name']}/pcs").json()
        }
        running = {pc.id for pc in rt.list_pcs()}
        if known == running:
            break
        assert time.monotonic() < deadline, known ^ running
        time.sleep(0.1)
    active = server.http.get("/v1/sessions").json()
    pcs_in_use = [a["pc_id"] for a in active]
    assert len(pcs_in_use) == len(set(pcs_in_use))  # no PC lent twice
    server.http.delete(f"/v1/sessions/{s['session_id']}")


def test_max_lifetime_releases_the_session(server: Server) -> None:
    server.create_pool("short", warm=1, max=1, max_lifetime_s=2)
    server.wait_ready("short", 1)
    sid = server.acquire("short").json()["session_id"]
    deadline = time.monotonic() + 30
    while server.act(sid, "run_command", command="true").status_code == 200:
        assert time.monotonic() < deadline, "session outlived its maximum lifetime"
        time.sleep(0.2)
    released = server.http.get("/v1/sessions", params={"active": False}).json()
    (mine,) = [s for s in released if s["session_id"] == sid]
    assert mine["release_reason"] == "max_lifetime" and mine["released_by"] == "system"


def test_delete_pool_drains_then_destroys(server: Server) -> None:
    from corral.runtime.pcs import PCRuntime

    server.create_pool("drain", warm=2, max=2)
    server.wait_ready("drain", 2)
    pc_ids = {pc["id"] for pc in server.http.get("/v1/pools/drain/pcs").json()}
    sid = server.acquire("drain").json()["session_id"]
    assert server.http.delete("/v1/pools/drain").status_code == 202
    assert server.http.get("/v1/pools/drain").json()["deleting"] is True
    refused = server.acquire("drain", wait_s=0)
    assert refused.status_code == 409
    assert server.act(sid, "run_command", command="true").status_code == 200  # still served
    server.http.delete(f"/v1/sessions/{sid}")
    deadline = time.monotonic() + 60
    while server.http.get("/v1/pools/drain").status_code != 404:
        assert time.monotonic() < deadline, server.http.get("/v1/pools/drain").json()
        time.sleep(0.1)
    running = {pc.id for pc in PCRuntime(server.state).list_pcs()}
    assert not pc_ids & running


def test_in_use_pc_dying_ends_its_session(server: Server) -> None:
    from corral.runtime.pcs import PCRuntime

    server.create_pool("dies", warm=1, max=2)
    server.wait_ready("dies", 1)
    s = server.acquire("dies").json()
    pid = PCRuntime(server.state).info(s["pc_id"]).pid
    assert pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while server.http.get(f"/v1/sessions/{s['session_id']}").status_code == 200:
        assert time.monotonic() < deadline, "the session outlived its PC"
        time.sleep(0.2)
    ended = [
        x
        for x in server.http.get("/v1/sessions", params={"active": False}).json()
        if x["session_id"] == s["session_id"]
    ]
    assert ended[0]["release_reason"] == "pc_unhealthy"
    states = {pc["id"]: pc["state"] for pc in server.http.get("/v1/pools/dies/pcs").json()}
    assert states[s["pc_id"]] == "quarantined"


def test_ctrl_c_leaves_no_pc_running(tmp_path_factory: pytest.TempPathFactory) -> None:
    from corral.runtime.pcs import PCRuntime

    srv = Server("sqlite", tmp_path_factory.mktemp("ctrl-c"))
    srv.start()
    try:
        srv.create_pool("bye", warm=2, max=3)
        srv.wait_ready("bye", 2)
        assert srv.acquire("bye").status_code == 201
        srv.stop(signal.SIGINT)
        assert PCRuntime(srv.state).list_pcs() == []
    finally:
        srv.close()
