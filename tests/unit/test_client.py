"""The pcd client against a scripted peer on a real unix socket: framing and error mapping."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import (
    ActionError,
    ActionTimeoutError,
    DiskFullError,
    InvalidInputError,
    PCUnavailableError,
)
from corral.runtime.client import PcdClient, Screenshot, UnixSocketTransport
from tests.support.fakes import FakeDriver, FakePcd


def _serve(
    path: Path,
    answers: list[tuple[dict[str, object], bytes]],
    seen: list[tuple[dict[str, object], bytes]],
) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        buf = b""
        with conn:
            for header, blob in answers:
                while b"\n" not in buf:
                    buf += conn.recv(65536)
                line, _, buf = buf.partition(b"\n")
                request = json.loads(line)
                size = int(request.get("blob", 0))
                while len(buf) < size:
                    buf += conn.recv(65536)
                seen.append((request, buf[:size]))
                buf = buf[size:]
                conn.sendall(json.dumps(header).encode() + b"\n" + blob)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "pcd.sock"


def test_blobs_cross_in_both_directions(sock_path: Path) -> None:
    seen: list[tuple[dict[str, object], bytes]] = []
    _serve(
        sock_path,
        [
            ({"ok": True, "result": {"size": 3, "path": "/tmp/a"}}, b""),
            ({"ok": True, "result": {"size": 5}, "blob": 5}, b"hello"),
        ],
        seen,
    )
    with PcdClient(sock_path, timeout=5) as client:
        client.write_file("/tmp/a", b"abc")
        assert client.read_file("/tmp/a") == b"hello"
    assert seen[0][0]["op"] == "write_file" and seen[0][1] == b"abc"
    assert seen[1][0] == {"op": "read_file", "args": {"path": "/tmp/a"}}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("bad_request", InvalidInputError),
        ("path_not_allowed", InvalidInputError),
        ("timeout", ActionTimeoutError),
        ("disk_full", DiskFullError),
        ("x_error", ActionError),
    ],
)
def test_error_codes_map_to_the_error_tree(
    sock_path: Path, code: str, error: type[Exception]
) -> None:
    _serve(sock_path, [({"ok": False, "error": {"code": code, "message": "nope"}}, b"")], [])
    with PcdClient(sock_path, timeout=5) as client, pytest.raises(error) as info:
        client.click(1, 2)
    assert "nope" in str(info.value)


def test_missing_socket_is_an_unavailable_pc(tmp_path: Path) -> None:
    with pytest.raises(PCUnavailableError):
        PcdClient(tmp_path / "absent.sock").health()


def test_screenshot_coordinates_map_back_to_the_screen() -> None:
    shot = Screenshot(b"", 1024, 640, 1280, 800, 0.8)
    assert shot.to_screen(512, 320) == (640, 400)
    assert shot.to_screen(1023, 639) == (1279, 799)
    assert shot.to_screen(-5, 5000) == (0, 799)


def test_the_client_speaks_over_any_transport() -> None:
    """The protocol (framing, bounds, deadline) is the client's; reaching pcd is the
    transport's: the shared fake's in-memory channel serves the real client."""
    driver = FakeDriver()
    client = driver.client("pc-x")
    assert isinstance(client.transport, FakePcd)
    assert client.run(["hello"]).stdout == "hello"
    assert driver.ran == ["hello"]


def test_a_path_is_a_unix_socket_transport(tmp_path: Path) -> None:
    client = PcdClient(tmp_path / "pcd.sock")
    assert isinstance(client.transport, UnixSocketTransport)
    assert client.transport.path == tmp_path / "pcd.sock"
