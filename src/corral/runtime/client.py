"""The host-side client of pcd, the in-PC daemon: the one way the host acts inside a PC.

Wire format (docs/pcd-protocol.md): a JSON request line, optionally followed by raw bytes; a
JSON answer line, optionally followed by raw bytes. One request at a time per connection.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import (
    ActionError,
    ActionTimeoutError,
    CorralError,
    DiskFullError,
    InvalidInputError,
    PCUnavailableError,
)

__all__ = ["CommandResult", "PcdClient", "Screenshot"]

_INPUT_ERRORS = {"bad_request", "path_not_allowed", "is_directory", "not_directory", "too_large"}
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class Screenshot:
    png: bytes
    width: int
    height: int
    screen_width: int
    screen_height: int
    scale: float  # png pixels per screen pixel (<= 1)

    def to_screen(self, x: float, y: float) -> tuple[int, int]:
        """Map a point in this (possibly scaled) screenshot back to screen coordinates."""
        sx = min(self.screen_width - 1, max(0, round(x / self.scale)))
        sy = min(self.screen_height - 1, max(0, round(y / self.scale)))
        return sx, sy


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_ms: float


def _error_from(code: str, message: str) -> CorralError:
    if code == "timeout":
        return ActionTimeoutError(message)
    if code == "disk_full":
        return DiskFullError(message, hint="free space in the PC or reset it")
    if code in _INPUT_ERRORS:
        err = InvalidInputError(message)
        err.code = code
        return err
    return ActionError(message, code=code)


class PcdClient:
    """A connection to one PC's pcd. Not thread-safe: one caller at a time (the lifecycle
    layer serialises actions per session)."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        if self._sock is None:
            # The socket's folder belongs to the PC: connect only to a real socket there,
            # never through a symlink the PC planted (the io mount is also nosymfollow).
            try:
                mode = os.lstat(self.socket_path).st_mode
            except OSError:
                mode = 0
            if not stat.S_ISSOCK(mode):
                raise PCUnavailableError(
                    "the PC's daemon socket is missing or is not a socket",
                    hint="the PC may have died or been tampered with; reset or destroy it",
                )
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.socket_path))
            except OSError as exc:
                sock.close()
                raise PCUnavailableError(
                    f"the PC's daemon does not answer ({exc.strerror or exc})",
                    hint="the PC may have died; `corral pc reset ID` or destroy it",
                ) from None
            self._sock = sock
            self._buf = b""
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> PcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_exact(self, sock: socket.socket, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("pcd closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buf:
            if len(self._buf) > _MAX_HEADER:
                raise ConnectionError("pcd sent an oversized answer header")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("pcd closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        blob: bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request; return (result, blob) or raise the mapped CorralError."""
        request: dict[str, Any] = {"op": op, "args": args or {}}
        if blob:
            request["blob"] = len(blob)
        payload = json.dumps(request).encode() + b"\n" + (blob or b"")
        sock = self._connect()
        sock.settimeout(timeout or self.timeout)
        try:
            sock.sendall(payload)
            header = json.loads(self._read_line(sock))
            data = self._read_exact(sock, int(header.get("blob") or 0))
        except TimeoutError:
            self.close()
            raise ActionTimeoutError(f"the PC did not answer {op!r} in time") from None
        except (OSError, ConnectionError, ValueError) as exc:
            self.close()
            raise PCUnavailableError(
                f"lost the connection to the PC's daemon during {op!r}: {exc}",
                hint="the PC may have died; check `corral pc list`",
            ) from None
        if not header.get("ok"):
            error = header.get("error") or {}
            raise _error_from(
                str(error.get("code", "internal")), str(error.get("message", "unknown error"))
            )
        return dict(header.get("result") or {}), data

    # -- actions ----------------------------------------------------------------------------
    def health(self, timeout: float = 3.0) -> dict[str, Any]:
        return self.call("health", timeout=timeout)[0]

    def screenshot(self, max_width: int | None = None, max_height: int | None = None) -> Screenshot:
        args: dict[str, Any] = {}
        if max_width:
            args["max_width"] = max_width
        if max_height:
            args["max_height"] = max_height
        meta, png = self.call("screenshot", args)
        return Screenshot(
            png,
            int(meta["width"]),
            int(meta["height"]),
            int(meta["screen_width"]),
            int(meta["screen_height"]),
            float(meta["scale"]),
        )

    def mouse_move(self, x: int, y: int) -> None:
        self.call("mouse_move", {"x": x, "y": y})

    def click(
        self, x: int | None = None, y: int | None = None, button: str = "left", count: int = 1
    ) -> None:
        args: dict[str, Any] = {"button": button, "count": count}
        if x is not None and y is not None:
            args.update(x=x, y=y)
        self.call("click", args)

    def drag(self, path: list[tuple[int, int]], button: str = "left") -> None:
        self.call("drag", {"path": [list(p) for p in path], "button": button})

    def scroll(self, dx: int = 0, dy: int = 0, x: int | None = None, y: int | None = None) -> None:
        args: dict[str, Any] = {"dx": dx, "dy": dy}
        if x is not None and y is not None:
            args.update(x=x, y=y)
        self.call("scroll", args)

    def type_text(self, text: str) -> None:
        self.call("type_text", {"text": text}, timeout=max(self.timeout, len(text) / 50))

    def press_keys(self, keys: str | list[str]) -> None:
        self.call("press_keys", {"keys": keys})

    def run(
        self,
        argv: list[str] | None = None,
        *,
        shell: str | None = None,
        timeout_s: float = 30.0,
        max_output: int | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        args: dict[str, Any] = {"timeout_s": timeout_s}
        if argv is not None:
            args["argv"] = argv
        if shell is not None:
            args["shell"] = shell
        for key, value in (
            ("max_output", max_output),
            ("cwd", cwd),
            ("env", env),
            ("stdin", stdin),
        ):
            if value is not None:
                args[key] = value
        res, _ = self.call("run", args, timeout=timeout_s + 10)
        return CommandResult(
            exit_code=res.get("exit_code"),
            stdout=res.get("stdout", ""),
            stderr=res.get("stderr", ""),
            stdout_truncated=bool(res.get("stdout_truncated")),
            stderr_truncated=bool(res.get("stderr_truncated")),
            timed_out=bool(res.get("timed_out")),
            duration_ms=float(res.get("duration_ms", 0)),
        )

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes:
        args: dict[str, Any] = {"path": path}
        if max_bytes is not None:
            args["max_bytes"] = max_bytes
        return self.call("read_file", args)[1]

    def write_file(
        self, path: str, data: bytes, mode: int = 0o644, append: bool = False, mkdirs: bool = False
    ) -> dict[str, Any]:
        return self.call(
            "write_file",
            {"path": path, "mode": mode, "append": append, "mkdirs": mkdirs},
            blob=data or None,
        )[0]

    def list_dir(self, path: str) -> list[dict[str, Any]]:
        return list(self.call("list_dir", {"path": path})[0]["entries"])

    def clipboard_get(self) -> str:
        return str(self.call("clipboard_get")[0].get("text", ""))

    def clipboard_set(self, text: str) -> None:
        self.call("clipboard_set", {"text": text})

    def list_windows(self) -> list[dict[str, Any]]:
        return list(self.call("list_windows")[0]["windows"])

    def focus_window(self, window_id: str) -> None:
        self.call("focus_window", {"id": window_id})

    def launch(self, argv: list[str]) -> int:
        return int(self.call("launch", {"argv": argv})[0]["pid"])

    def open_url(self, url: str) -> None:
        self.call("open_url", {"url": url})

    def processes(self) -> list[dict[str, Any]]:
        return list(self.call("processes")[0]["processes"])
