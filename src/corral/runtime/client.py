"""The host-side client of pcd, the in-PC daemon: the one way the host acts inside a PC.

Wire format (docs/pcd-protocol.md): a JSON request line, optionally followed by raw bytes; a
JSON answer line, optionally followed by raw bytes. One request at a time per connection.

Everything from inside a PC is hostile, pcd's answers included (its process runs as the same
user as everything the agent starts). So every call has one overall deadline (connect to last
byte, however slowly bytes trickle in), every answer is bounded by what its operation can
legitimately produce (header size; blob size from the screen size or the file limit asked for),
and an answer that is not the shape the protocol promises is a PCMisbehavingError, which the
lifecycle turns into quarantine. Nothing is allocated beyond those bounds.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from corral.errors import (
    ActionError,
    ActionTimeoutError,
    CorralError,
    DiskFullError,
    InvalidInputError,
    PCMisbehavingError,
    PCUnavailableError,
)

__all__ = [
    "Channel",
    "CommandResult",
    "PcdClient",
    "PcdTransport",
    "Screenshot",
    "UnixSocketTransport",
    "answer_bounds",
]

_INPUT_ERRORS = {"bad_request", "path_not_allowed", "is_directory", "not_directory", "too_large"}

# pcd's own limits (src/corral/pcd; the runtime does not import pcd), from which the answer
# bounds below derive. pcd writes JSON with ensure_ascii: at most 6 bytes per byte it read.
_ESCAPE = 6
_MAX_HEADER = 1 << 20  # an answer header of any op with no bigger promise
_PCD_DEFAULT_READ, _PCD_MAX_READ = 16 << 20, 64 << 20  # read_file max_bytes
_PCD_DEFAULT_OUTPUT, _PCD_MAX_OUTPUT = 1 << 20, 16 << 20  # run max_output, per stream
_PCD_MAX_CLIPBOARD = 16 << 20
_PCD_MAX_ENTRIES, _NAME_MAX = 10_000, 255  # list_dir (a hostile header costs ~20x its size parsed)
_LIST_HEADER = 64 << 20  # processes, list_windows: lists pcd does not cap itself
_MAX_SCREEN = (7680, 4320)  # the largest screen a PC can have (pcs._SCREEN_LIMITS)


def _png_bound(width: int, height: int) -> int:
    """The largest PNG of a width x height screen: raw RGBA rows plus a filter byte each,
    deflate's stored-block overhead (5 bytes per 16 KiB at worst) and the chunk framing."""
    raw = height * (4 * width + 1)
    return raw + 5 * (raw // 16384 + 1) + (1 << 16)


def answer_bounds(
    op: str, args: dict[str, Any], screen: tuple[int, int] = _MAX_SCREEN
) -> tuple[int, int]:
    """(header bytes, blob bytes): the most a correct pcd can answer `op` with `args`."""
    if op == "screenshot":
        return _MAX_HEADER, _png_bound(*screen)
    if op == "read_file":
        asked = args.get("max_bytes", _PCD_DEFAULT_READ)
        return _MAX_HEADER, min(int(asked), _PCD_MAX_READ)
    if op == "run":
        cap = min(int(args.get("max_output", _PCD_DEFAULT_OUTPUT)), _PCD_MAX_OUTPUT)
        return _MAX_HEADER + 2 * _ESCAPE * cap, 0
    if op == "clipboard_get":
        return _MAX_HEADER + _ESCAPE * _PCD_MAX_CLIPBOARD, 0
    if op == "list_dir":
        return _MAX_HEADER + _PCD_MAX_ENTRIES * (_ESCAPE * _NAME_MAX + 256), 0
    if op in ("processes", "list_windows"):
        return _LIST_HEADER, 0
    return _MAX_HEADER, 0


def _parse_screen(screen: str | tuple[int, int] | None) -> tuple[int, int]:
    if screen is None:
        return _MAX_SCREEN
    if isinstance(screen, tuple):
        return screen
    w, h, *_ = (int(v) for v in screen.lower().split("x"))
    return w, h


class _Violation(Exception):
    """pcd broke the protocol; becomes PCMisbehavingError."""


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


def _misbehaving(op: str, what: str) -> PCMisbehavingError:
    return PCMisbehavingError(
        f"the PC's daemon broke the protocol answering {op!r}: {what}",
        hint="the PC is quarantined and its session ended; acquire a new PC",
    )


def _parse_header(line: bytes) -> tuple[dict[str, Any], int]:
    """The answer header as the protocol promises it, and its blob size; else _Violation."""
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise _Violation("the answer line is not JSON") from None
    if not isinstance(header, dict):
        raise _Violation(f"the answer is a JSON {type(header).__name__}, not an object")
    ok = header.get("ok")
    size = header.get("blob", 0)
    if size is None:
        size = 0
    if not isinstance(ok, bool):
        raise _Violation('"ok" is not true or false')
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _Violation('"blob" is not a byte count')
    if ok:
        if header.get("result") is None:
            header["result"] = {}
        if not isinstance(header["result"], dict):
            raise _Violation('"result" is not an object')
    else:
        error = header.get("error")
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), str)
            or not isinstance(error.get("message"), str)
        ):
            raise _Violation('"error" is not an object with a code and a message')
        if size:
            raise _Violation("an error answer carries a blob")
    return header, size


def _get(op: str, result: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """result[key] if it has the type the protocol promises (bool is never an int here)."""
    value = result.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise _misbehaving(op, f"{key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _records(op: str, result: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """result[key] as the list of objects the protocol promises."""
    items = _get(op, result, key, list)
    if not all(isinstance(item, dict) for item in items):
        raise _misbehaving(op, f"{key!r} holds something other than objects")
    return list(items)


class Channel(Protocol):
    """One open byte stream to a pcd: the part of a socket the client uses."""

    def settimeout(self, value: float | None, /) -> None: ...
    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def recv_into(self, buffer: memoryview, nbytes: int, /) -> int: ...
    def close(self) -> None: ...


@runtime_checkable
class PcdTransport(Protocol):
    """How the host reaches one PC's pcd. The client speaks the protocol (framing, bounds,
    one deadline) over whatever channel this opens: a unix socket today; a vsock or a TCP
    tunnel for another PC driver later. `connect` raises TimeoutError when the deadline
    passes and PCUnavailableError when the daemon is not there."""

    def connect(self, deadline: float) -> Channel: ...


class UnixSocketTransport:
    """pcd's listening unix socket, which the host made in a folder only it can reach."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self, deadline: float) -> Channel:
        # A non-socket there means the host's own state was tampered with: never follow it.
        try:
            mode = os.lstat(self.path).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISSOCK(mode):
            raise PCUnavailableError(
                "the PC's daemon socket is missing or is not a socket",
                hint="the PC may have died or been tampered with; reset or destroy it",
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect(str(self.path))
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise PCUnavailableError(
                f"the PC's daemon does not answer ({exc.strerror or exc})",
                hint="the PC may have died; `corral pc reset ID` or destroy it",
            ) from None
        return sock


class PcdClient:
    """A connection to one PC's pcd. Not thread-safe: one caller at a time (the lifecycle
    layer serialises actions per session).

    `target`: a transport, or the path of a unix socket (`UnixSocketTransport`)."""

    def __init__(
        self,
        target: PcdTransport | Path,
        timeout: float = 30.0,
        screen: str | tuple[int, int] | None = None,
    ) -> None:
        self.transport: PcdTransport = (
            target if isinstance(target, PcdTransport) else UnixSocketTransport(Path(target))
        )
        self.timeout = timeout
        self.screen = _parse_screen(screen)  # bounds screenshots; unknown: the largest screen
        self._sock: Channel | None = None
        self._buf = bytearray()
        self._received = 0  # answer bytes of the current call, to tell a trickle from silence

    # -- connection -------------------------------------------------------------------------
    def _connect(self, deadline: float) -> Channel:
        if self._sock is None:
            self._sock = self.transport.connect(deadline)
            self._buf = bytearray()
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> PcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _arm(sock: Channel, deadline: float) -> None:
        """The next blocking step may take only what is left of the call's one deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)

    def _read_line(self, sock: Channel, deadline: float, limit: int) -> bytes:
        buf = self._buf
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                if end > limit:
                    raise _Violation(f"the answer header is over {limit} bytes")
                line = bytes(buf[:end])
                del buf[: end + 1]
                return line
            if len(buf) > limit:
                raise _Violation(f"the answer header is over {limit} bytes")
            start = len(buf)
            self._arm(sock, deadline)
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("pcd closed the connection")
            self._received += len(chunk)
            buf += chunk

    def _read_exact(self, sock: Channel, n: int, deadline: float) -> bytes:
        """n bytes (n already checked against the op's bound), straight into one buffer."""
        buf = self._buf
        if len(buf) >= n:
            data = bytes(buf[:n])
            del buf[:n]
            return data
        out = bytearray(n)
        have = len(buf)
        out[:have] = buf
        buf.clear()
        view = memoryview(out)
        while have < n:
            self._arm(sock, deadline)
            got = sock.recv_into(view[have:], n - have)
            if not got:
                raise ConnectionError("pcd closed the connection")
            self._received += got
            have += got
        return bytes(out)

    def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        blob: bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request; return (result, blob) or raise the mapped CorralError.

        1. One deadline for the whole call: connect, send and every receive take only what is
           left of it, so a peer trickling a byte at a time cannot hold the caller longer.
        2. The answer header is read up to the op's header bound, then parsed and checked
           against the protocol's shape; the blob size it declares against the op's blob bound,
           before any byte of the blob is read or any buffer allocated.
        3. Bytes beyond the declared answer are a violation too (pcd never sends unasked).
        A violation closes the connection and raises PCMisbehavingError.
        """
        args = args or {}
        request: dict[str, Any] = {"op": op, "args": args}
        if blob:
            request["blob"] = len(blob)
        payload = json.dumps(request).encode() + b"\n" + (blob or b"")
        header_limit, blob_limit = answer_bounds(op, args, self.screen)
        budget = timeout or self.timeout
        deadline = time.monotonic() + budget
        self._received = 0
        try:
            sock = self._connect(deadline)
            self._arm(sock, deadline)
            sock.sendall(payload)
            header, size = _parse_header(self._read_line(sock, deadline, header_limit))
            if size > blob_limit:
                raise _Violation(f"it declares a {size} byte blob; {op!r} has at most {blob_limit}")
            data = self._read_exact(sock, size, deadline) if size else b""
            if self._buf:
                raise _Violation("it sent bytes beyond its answer")
        except _Violation as exc:
            self.close()
            raise _misbehaving(op, str(exc)) from None
        except TimeoutError:
            self.close()
            if self._received:
                raise _misbehaving(
                    op, f"only {self._received} bytes of the answer arrived in {budget:g} s"
                ) from None
            raise ActionTimeoutError(f"the PC did not answer {op!r} in time") from None
        except (OSError, ConnectionError) as exc:
            self.close()
            raise PCUnavailableError(
                f"lost the connection to the PC's daemon during {op!r}: {exc}",
                hint="the PC may have died; check `corral pc list`",
            ) from None
        if not header["ok"]:
            error = header["error"]
            raise _error_from(error["code"], error["message"])
        return header["result"], data

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
        op = "screenshot"
        shot = Screenshot(
            png,
            _get(op, meta, "width", int),
            _get(op, meta, "height", int),
            _get(op, meta, "screen_width", int),
            _get(op, meta, "screen_height", int),
            float(_get(op, meta, "scale", (int, float))),
        )
        sw, sh = self.screen
        if not (
            0 < shot.width <= shot.screen_width <= sw
            and 0 < shot.height <= shot.screen_height <= sh
            and 0 < shot.scale <= 1
        ):
            raise _misbehaving(op, "the sizes it reports do not fit the PC's screen")
        return shot

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
        exit_code = res.get("exit_code")
        if exit_code is not None:
            exit_code = _get("run", res, "exit_code", int)
        return CommandResult(
            exit_code=exit_code,
            stdout=_get("run", res, "stdout", str),
            stderr=_get("run", res, "stderr", str),
            stdout_truncated=bool(res.get("stdout_truncated")),
            stderr_truncated=bool(res.get("stderr_truncated")),
            timed_out=bool(res.get("timed_out")),
            duration_ms=float(_get("run", res, "duration_ms", (int, float))),
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
        return _records("list_dir", self.call("list_dir", {"path": path})[0], "entries")

    def clipboard_get(self) -> str:
        return str(_get("clipboard_get", self.call("clipboard_get")[0], "text", str))

    def clipboard_set(self, text: str) -> None:
        self.call("clipboard_set", {"text": text})

    def list_windows(self) -> list[dict[str, Any]]:
        return _records("list_windows", self.call("list_windows")[0], "windows")

    def focus_window(self, window_id: str) -> None:
        self.call("focus_window", {"id": window_id})

    def launch(self, argv: list[str]) -> int:
        return int(_get("launch", self.call("launch", {"argv": argv})[0], "pid", int))

    def open_url(self, url: str) -> None:
        self.call("open_url", {"url": url})

    def processes(self) -> list[dict[str, Any]]:
        return _records("processes", self.call("processes")[0], "processes")
