"""Framing: one JSON line per request or answer, each optionally followed by raw bytes."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import BAD_REQUEST, TOO_LARGE, PcdError

MAX_HEADER = 1 << 20  # bytes in one request line, newline included
MAX_BLOB = 64 << 20  # raw bytes after a request line
_INLINE_BLOB = 1 << 16  # below this, header and blob go out in one send


class Reader(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Request:
    """A framed request; `op` and `args` are still unchecked (the dispatcher checks them)."""

    header: dict[str, Any]
    blob: bytes


def read_request(rfile: Reader) -> Request | None:
    """Read one request; None on a clean end of stream.

    Raises a fatal PcdError when the stream cannot be parsed further: an oversized or
    non-JSON header line, a bad blob length, or a stream cut inside a request.
    """
    line = rfile.readline(MAX_HEADER + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) > MAX_HEADER:
            raise PcdError(
                TOO_LARGE,
                f"request line is over {MAX_HEADER} bytes; send big data as a blob after the line",
                fatal=True,
            )
        raise PcdError(BAD_REQUEST, "stream ended inside a request line", fatal=True)
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise PcdError(
            BAD_REQUEST,
            f"request line is not valid UTF-8 JSON ({exc}); send "
            '{"op": ..., "args": {...}} on one line',
            fatal=True,
        ) from None
    if not isinstance(header, dict):
        raise PcdError(BAD_REQUEST, "request line must be a JSON object", fatal=True)
    size = header.get("blob", 0)
    if size is None:
        size = 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PcdError(BAD_REQUEST, '"blob" must be a non-negative integer byte count', fatal=True)
    if size > MAX_BLOB:
        raise PcdError(
            TOO_LARGE, f"blob of {size} bytes is over the {MAX_BLOB} byte limit", fatal=True
        )
    blob = rfile.read(size) if size else b""
    if len(blob) != size:
        raise PcdError(BAD_REQUEST, "stream ended inside a blob", fatal=True)
    return Request(header, blob)


def ok_header(result: dict[str, Any], blob: bytes, req_id: object = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": True, "result": result, "blob": len(blob)}
    if req_id is not None:
        out["id"] = req_id
    return out


def error_header(err: PcdError, req_id: object = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ok": False,
        "error": {"code": err.code, "message": err.message},
        "blob": 0,
    }
    if req_id is not None:
        out["id"] = req_id
    return out


def send(sock: socket.socket, header: dict[str, Any], blob: bytes = b"") -> None:
    """Send one answer: the JSON line, then the blob (if any)."""
    line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
    if len(blob) < _INLINE_BLOB:
        sock.sendall(line + blob)
    else:
        sock.sendall(line)
        sock.sendall(blob)
