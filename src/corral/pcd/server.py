"""The unix socket: atomic publication (the socket file appearing means "ready"), one thread
per connection, requests answered in order."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import traceback
from typing import Any

from .args import Args
from .context import Context
from .errors import INTERNAL, PcdError, bad_request
from .ops import OPS
from .wire import Request, error_header, ok_header, read_request, send


def bind(path: str) -> tuple[socket.socket, str]:
    """Bind and listen at a temporary name next to `path`, mode 0600 from the start; return
    the socket and that temporary name. Python sockets are O_CLOEXEC, so children never
    inherit it."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(temp)
    finally:
        os.umask(old)
    os.chmod(temp, 0o600)
    sock.listen(128)
    return sock, temp


def adopt(fd: int) -> socket.socket:
    """The listening unix stream socket the host bound and handed down as `fd`; anything else
    (a closed fd, a file, a datagram socket) is refused."""
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError(f"fd {fd} is not a unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise OSError(f"fd {fd} is not listening")
    return sock


def publish(temp: str, path: str) -> None:
    os.rename(temp, path)


def dispatch(ctx: Context, req: Request) -> tuple[dict[str, Any], bytes]:
    """Run one request; always returns an answer header (and blob), never raises."""
    req_id = req.header.get("id")
    op_name = req.header.get("op")
    try:
        if not isinstance(op_name, str) or op_name not in OPS:
            raise bad_request(f"unknown op {op_name!r}; known ops: {', '.join(sorted(OPS))}")
        op = OPS[op_name]
        raw = req.header.get("args")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise bad_request(f"{op_name}: 'args' must be a JSON object")
        unknown = sorted(set(raw) - op.args)
        if unknown:
            accepted = ", ".join(sorted(op.args)) or "none"
            raise bad_request(
                f"{op_name}: unknown arg(s) {', '.join(unknown)}; accepted: {accepted}"
            )
        result, blob = op.handler(ctx, Args(op_name, raw), req.blob)
        return ok_header(result, blob, req_id), blob
    except PcdError as err:
        return error_header(err, req_id), b""
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        crash = PcdError(INTERNAL, f"{op_name}: unexpected {type(exc).__name__}: {exc}")
        return error_header(crash, req_id), b""


def serve_connection(ctx: Context, conn: socket.socket) -> None:
    with conn, conn.makefile("rb", buffering=1 << 16) as rfile:
        while True:
            try:
                req = read_request(rfile)
            except PcdError as err:
                with contextlib.suppress(OSError):
                    send(conn, error_header(err))
                return
            except OSError:
                return
            if req is None:
                return
            header, blob = dispatch(ctx, req)
            try:
                send(conn, header, blob)
            except OSError:
                return
            ctx.answered.set()


def serve_forever(ctx: Context, listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # listener closed at shutdown
        threading.Thread(
            target=serve_connection, args=(ctx, conn), name="conn", daemon=True
        ).start()
