"""The wire format and the daemon's robustness: framing, errors, concurrency, the socket."""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest
from pcd_harness import Client, Daemon


def test_health_round_trips_to_x(client: Client, pcd: Daemon) -> None:
    health = client.call("health")
    assert health["x"] is True
    assert health["display"] == pcd.display and health["display"].startswith(":")
    assert (health["width"], health["height"]) == (1280, 800)
    assert health["pid"] == pcd.proc.pid
    assert health["uptime_s"] >= 0
    assert health["wm"] is True


def test_many_requests_on_one_connection_answered_in_order(client: Client) -> None:
    payload = b"".join(
        json.dumps({"op": "run", "args": {"argv": ["echo", str(i)]}, "id": i}).encode() + b"\n"
        for i in range(20)
    )
    client.send_raw(payload)  # pipelined: all requests before any answer
    for i in range(20):
        header, _ = client.read_answer()
        assert header["ok"] and header["id"] == i
        assert header["result"]["stdout"] == f"{i}\n"


def test_unknown_op_and_bad_args_keep_the_connection(client: Client) -> None:
    err = client.error("no_such_op")
    assert err.code == "bad_request" and "no_such_op" in err.message
    err = client.error("click", x=1, y=1, buton="left")
    assert err.code == "bad_request" and "buton" in err.message
    header, _ = client.request("health", args=None, blob=b"")
    assert header["ok"]
    client.send_raw(b'{"op": "health", "args": [1, 2]}\n')
    header, _ = client.read_answer()
    assert header["error"]["code"] == "bad_request"
    client.send_raw(b'{"op": 42}\n')
    header, _ = client.read_answer()
    assert header["error"]["code"] == "bad_request"
    assert client.call("health")["x"] is True


@pytest.mark.parametrize(
    "line",
    [
        b"this is not json\n",
        b"[1, 2]\n",
        b"\xff\xfe\n",
        b'{"op": "health", "blob": -1}\n',
        b'{"op": "health", "blob": "3"}\n',
    ],
)
def test_malformed_framing_answers_then_closes(pcd: Daemon, line: bytes) -> None:
    with pcd.client() as c:
        c.send_raw(line)
        header, _ = c.read_answer()
        assert header["ok"] is False and header["error"]["code"] == "bad_request"
        with pytest.raises(ConnectionError):
            c.read_answer()
    with pcd.client() as c:  # the daemon is fine
        assert c.call("health")["x"] is True


def test_oversized_header_and_blob_are_too_large(pcd: Daemon) -> None:
    with pcd.client() as c:
        c.send_raw(b"{" + b" " * (1 << 20) + b"\n")
        header, _ = c.read_answer()
        assert header["error"]["code"] == "too_large"
    with pcd.client() as c:
        c.send_raw(
            json.dumps({"op": "write_file", "args": {"path": "x"}, "blob": (64 << 20) + 1}).encode()
            + b"\n"
        )
        header, _ = c.read_answer()
        assert header["error"]["code"] == "too_large"
    with pcd.client() as c:
        assert c.call("health")["x"] is True


def test_connection_cut_mid_request_does_not_hurt(pcd: Daemon) -> None:
    with pcd.client() as c:
        c.send_raw(b'{"op": "write_file", "args": {"path": "cut.txt"}, "blob": 100}\nabc')
    with pcd.client() as c:
        c.send_raw(b'{"op": "hea')
    with pcd.client() as c:
        assert c.call("health")["x"] is True
        assert c.error("read_file", path="cut.txt").code == "not_found"


def test_null_args_mean_absent(client: Client) -> None:
    result = client.call("screenshot", max_width=None, max_height=None)
    assert result["scale"] == 1.0


def test_connections_are_served_concurrently(pcd: Daemon) -> None:
    results: list[float] = []

    def slow() -> None:
        with pcd.client() as c:
            results.append(c.call("run", argv=["sleep", "0.5"])["duration_ms"])

    started = time.monotonic()
    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert time.monotonic() - started < 1.5  # not 4 x 0.5 s


def test_socket_is_private_and_not_inherited(client: Client, pcd: Daemon) -> None:
    mode = os.stat(pcd.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not [p for p in os.listdir(pcd.socket.parent) if p.endswith(".tmp")]
    fds = client.sh("ls /proc/$$/fd")["stdout"].split()
    assert sorted(fds) == ["0", "1", "2"]
