"""The pcd client against hostile peers on a real unix socket (issue 9, section 1).

Whatever answers on a PC's socket is treated as hostile: a peer that declares a huge blob, one
that trickles a byte at a time, one that sends garbage or the wrong types. Each must end in a
clear PCMisbehavingError within the call's one deadline, with the host's memory bounded by the
operation, never by what the peer declares.
"""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import ActionTimeoutError, PCMisbehavingError, PCUnavailableError
from corral.runtime.client import PcdClient, answer_bounds

Behaviour = Callable[[socket.socket, threading.Event], None]


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Callable[[Behaviour], Path]]:
    """Start a peer that reads one request line, then does `behaviour`; stopped at teardown."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    servers: list[socket.socket] = []

    def start(behaviour: Behaviour) -> Path:
        path = tmp_path / f"pcd{len(servers)}.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)
        servers.append(server)

        def run() -> None:
            conn, _ = server.accept()
            with conn:
                buf = b""
                while b"\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                try:
                    behaviour(conn, stop)
                except OSError:
                    return  # the client hung up on us: what it should do

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    stop.set()
    for thread in threads:
        thread.join(10)
    for server in servers:
        server.close()


def _send(data: bytes) -> Behaviour:
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(data)
        stop.wait(30)  # hold the connection open: the client must not wait for us to close

    return behaviour


def _flood_after(header: dict[str, Any], total: int) -> Behaviour:
    """The header, then `total` bytes of blob in 1 MiB pieces (far more than any bound)."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(json.dumps(header).encode() + b"\n")
        piece = b"\0" * (1 << 20)
        for _ in range(total >> 20):
            if stop.is_set():
                return
            conn.sendall(piece)
        stop.wait(30)

    return behaviour


def _trickle(prefix: bytes) -> Behaviour:
    """One byte of `prefix` (then spaces) per tick, forever: every recv gets data in time."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        data = iter(prefix)
        while not stop.wait(0.05):
            conn.sendall(bytes([next(data, 0x20)]))

    return behaviour


def test_a_huge_declared_blob_is_refused_before_any_byte_is_read(
    hostile: Callable[[Behaviour], Path],
) -> None:
    path = hostile(_flood_after({"ok": True, "result": {}, "blob": 1 << 40}, 256 << 20))
    tracemalloc.start()
    try:
        with PcdClient(path, timeout=10) as client, pytest.raises(PCMisbehavingError) as info:
            client.click(1, 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "blob" in str(info.value) and "at most 0" in str(info.value)
    assert peak < 4 << 20


def test_a_screenshot_blob_is_bounded_by_the_screen_size(
    hostile: Callable[[Behaviour], Path],
) -> None:
    _, bound = answer_bounds("screenshot", {}, (1280, 800))
    meta = {"width": 1280, "height": 800, "screen_width": 1280, "screen_height": 800, "scale": 1}
    path = hostile(_flood_after({"ok": True, "result": meta, "blob": bound + 1}, 64 << 20))
    tracemalloc.start()
    try:
        with (
            PcdClient(path, timeout=10, screen="1280x800x24") as client,
            pytest.raises(PCMisbehavingError),
        ):
            client.screenshot()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert bound < 1280 * 800 * 4 + (1 << 20)


def test_a_read_file_blob_is_bounded_by_the_size_asked_for(
    hostile: Callable[[Behaviour], Path],
) -> None:
    path = hostile(_flood_after({"ok": True, "result": {}, "blob": 4097}, 8 << 20))
    with PcdClient(path, timeout=10) as client, pytest.raises(PCMisbehavingError):
        client.read_file("/etc/passwd", max_bytes=4096)


def test_answers_up_to_the_bound_still_arrive_whole(
    hostile: Callable[[Behaviour], Path],
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    header = {"ok": True, "result": {"size": len(data)}, "blob": len(data)}
    path = hostile(_send(json.dumps(header).encode() + b"\n" + data))
    with PcdClient(path, timeout=10) as client:
        assert client.read_file("/f", max_bytes=len(data)) == data


def test_a_peer_trickling_one_byte_at_a_time_meets_one_overall_deadline(
    hostile: Callable[[Behaviour], Path],
) -> None:
    """Each byte arrives well within any per-recv timeout; only one deadline for the whole
    call ends it."""
    path = hostile(_trickle(b'{"ok": true, "result": {}, "blob": 0'))
    with PcdClient(path, timeout=0.6) as client, pytest.raises(PCMisbehavingError) as info:
        client.health(timeout=0.6)
    assert "bytes of the answer arrived" in str(info.value)


def test_a_trickled_blob_meets_the_deadline_too(hostile: Callable[[Behaviour], Path]) -> None:
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b'{"ok": true, "result": {"size": 100}, "blob": 100}\n')
        while not stop.wait(0.05):
            conn.sendall(b"x")

    path = hostile(behaviour)
    with PcdClient(path, timeout=0.6) as client, pytest.raises(PCMisbehavingError):
        client.read_file("/f")


def test_a_silent_peer_is_a_timeout_not_a_violation(
    hostile: Callable[[Behaviour], Path],
) -> None:
    path = hostile(_send(b""))
    with PcdClient(path, timeout=0.3) as client, pytest.raises(ActionTimeoutError):
        client.health(timeout=0.3)


@pytest.mark.parametrize(
    "answer",
    [
        b"\x00\xff\xfe not json at all\n",
        b"[1, 2, 3]\n",
        b'"ok"\n',
        b"[" * 200_000 + b"\n",
        b'{"ok": "yes", "result": {}}\n',
        b'{"result": {}}\n',
        b'{"ok": true, "result": [1, 2]}\n',
        b'{"ok": true, "result": {}, "blob": -1}\n',
        b'{"ok": true, "result": {}, "blob": "5"}\n',
        b'{"ok": true, "result": {}, "blob": true}\n',
        b'{"ok": false, "error": "boom"}\n',
        b'{"ok": false, "error": {"code": 7, "message": "boom"}}\n',
        b'{"ok": false, "error": {"code": "x", "message": "m"}, "blob": 3}\nabc',
        b'{"ok": true, "result": {}}\nunasked bytes',
        b"a" * (2 << 20),
    ],
    ids=[
        "binary",
        "array",
        "string",
        "deep-nesting",
        "ok-not-bool",
        "ok-missing",
        "result-not-object",
        "negative-blob",
        "string-blob",
        "bool-blob",
        "error-not-object",
        "error-code-not-string",
        "error-with-blob",
        "trailing-bytes",
        "oversized-header",
    ],
)
def test_garbage_is_a_clear_violation(hostile: Callable[[Behaviour], Path], answer: bytes) -> None:
    path = hostile(_send(answer))
    with PcdClient(path, timeout=5) as client, pytest.raises(PCMisbehavingError) as info:
        client.click(1, 2)
    assert isinstance(info.value, PCUnavailableError)  # callers that handle "unavailable" still do
    assert "broke the protocol answering 'click'" in str(info.value)


@pytest.mark.parametrize(
    ("call", "result"),
    [
        (lambda c: c.screenshot(), {"width": "wide", "height": 1, "screen_width": 1}),
        (
            lambda c: c.screenshot(),
            {"width": 9000, "height": 800, "screen_width": 9000, "screen_height": 800, "scale": 1},
        ),
        (lambda c: c.run(["true"]), {"exit_code": "0", "stdout": "", "stderr": ""}),
        (lambda c: c.run(["true"]), {"exit_code": 0, "stdout": 5, "stderr": ""}),
        (lambda c: c.list_dir("/"), {"entries": "all of them"}),
        (lambda c: c.list_windows(), {"windows": [1, 2]}),
        (lambda c: c.launch(["xterm"]), {"pid": True}),
        (lambda c: c.clipboard_get(), {"text": ["a"]}),
    ],
    ids=[
        "screenshot-types",
        "screenshot-bigger-than-the-screen",
        "run-exit-code",
        "run-stdout",
        "list-dir",
        "list-windows",
        "launch-pid",
        "clipboard",
    ],
)
def test_wrong_types_in_a_result_are_a_clear_violation(
    hostile: Callable[[Behaviour], Path],
    call: Callable[[PcdClient], object],
    result: dict[str, Any],
) -> None:
    path = hostile(_send(json.dumps({"ok": True, "result": result}).encode() + b"\n"))
    with (
        PcdClient(path, timeout=5, screen="1280x800x24") as client,
        pytest.raises(PCMisbehavingError),
    ):
        call(client)
