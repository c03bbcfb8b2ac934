"""The audit log against a real `corral up` killed with SIGKILL while 50 callers act on PCs:
every call that got its answer has its record after the restart, and the log still verifies."""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time

import httpx

from tests.e2e.conftest import Server

CALLERS = 50


def test_no_acknowledged_record_is_lost_to_kill_9(server: Server) -> None:
    server.create_pool("crash", warm=2, max=2, max_sessions_per_agent=2)
    server.wait_ready("crash", 2)
    sessions = []
    for _ in range(2):
        acquired = server.acquire("crash")
        assert acquired.status_code == 201, acquired.text
        sessions.append(acquired.json()["session_id"])

    acknowledged: list[str] = []  # the trace id of every call that got its 200
    lock = threading.Lock()
    stop = threading.Event()

    def caller(k: int) -> None:
        sid = sessions[k % len(sessions)]
        while not stop.is_set():
            trace = secrets.token_hex(16)
            headers = {"traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"}
            try:
                answer = server.agent.post(
                    f"/v1/sessions/{sid}/actions/mouse_move",
                    json={"x": k, "y": k},
                    headers=headers,
                    timeout=10,
                )
            except httpx.HTTPError:
                return  # the server is gone
            if answer.status_code == 200:
                with lock:
                    acknowledged.append(trace)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.stop(signal.SIGKILL)  # in the middle of the calls
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acknowledged) >= 200, f"only {len(acknowledged)} calls answered in 30 s"

    server.start()  # recovery; the log must hold every acknowledged call
    export = server.corral("audit", "export", "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    traces = set()
    boots = []
    for line in export.stdout.splitlines():
        record = json.loads(line)["record"]
        corral = record.get("unmapped", {}).get("corral", {}) if record else {}
        if corral.get("operation") == "mouse_move":
            traces.add(record["metadata"].get("correlation_uid"))
        if corral.get("operation") == "boot" and corral.get("pool") == "crash":
            boots.append(corral)  # what the pool manager did on its own is recorded too
    assert len(boots) >= 2 and all(b["actor"]["kind"] == "system" for b in boots), boots
    lost = [t for t in acknowledged if t not in traces]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged calls have no record"
    verified = server.corral("audit", "verify", "--output", "json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
