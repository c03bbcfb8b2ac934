"""A real RFC 8935 push receiver on loopback for tests: records every push, answers as told."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Push:
    path: str
    headers: dict[str, str]
    body: bytes


class LoopbackReceiver:
    """`with LoopbackReceiver() as rcv:` serves on 127.0.0.1; `rcv.url` is its push URL."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []
        self.status = 202
        self.answer: dict[str, Any] | None = None
        self._arrived = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with owner._arrived:
                    owner.pushes.append(
                        Push(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    owner._arrived.notify_all()
                payload = json.dumps(owner.answer).encode() if owner.answer else b""
                self.send_response(owner.status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/ssf/push"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Push]:
        """Block until `count` pushes arrived (an event, not a sleep); returns them all."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.pushes) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.pushes)} of {count} pushes in {timeout} s"
                self._arrived.wait(left)
            return list(self.pushes)
