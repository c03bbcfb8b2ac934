"""A stdlib-only X11 round trip with a hard timeout, for `health`.

It opens its own short connection, so it answers even while another thread is busy (or stuck)
on the shared Xlib connection, and it never waits longer than its timeout.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

_GET_INPUT_FOCUS = 43


@dataclass(frozen=True)
class ScreenInfo:
    width: int
    height: int


def display_number(display: str) -> int:
    """ ":0" or ":0.0" -> 0."""
    return int(display.rpartition(":")[2].partition(".")[0])


def _connect(number: int, timeout: float) -> socket.socket:
    last: OSError | None = None
    for address in (f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    assert last is not None
    raise last


def _read(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("X server closed the connection")
        data += chunk
    return data


def ping(display: str, timeout: float = 1.0) -> ScreenInfo | None:
    """Connect, read screen 0's size, do a GetInputFocus round trip; None if X does not answer."""
    deadline = time.monotonic() + timeout
    try:
        sock = _connect(display_number(display), timeout)
    except (OSError, ValueError):
        return None
    with sock:
        try:
            # Connection setup: little-endian, protocol 11.0, no authorization.
            sock.sendall(struct.pack("<BxHHHHxx", ord("l"), 11, 0, 0, 0))
            status, _, _, _, extra = struct.unpack("<BBHHH", _read(sock, 8, deadline))
            setup = _read(sock, extra * 4, deadline)
            if status != 1:
                return None
            vendor_len, _, _, nformats = struct.unpack_from("<HHBB", setup, 16)
            screen = 32 + (vendor_len + 3) // 4 * 4 + 8 * nformats
            width, height = struct.unpack_from("<HH", setup, screen + 20)
            sock.sendall(struct.pack("<BxH", _GET_INPUT_FOCUS, 1))
            reply = _read(sock, 32, deadline)
            if reply[0] != 1:
                return None
        except (OSError, ConnectionError, struct.error):
            return None
    return ScreenInfo(width, height)
