"""Running the real pcd (on /usr/bin/python3, as in a PC) against a real Xvfb, and talking to it.

pcd is started exactly as images start it, with the package directory on sys.path so that
`pcd` is a top-level package; each daemon gets its own socket, HOME and a free display (Xvfb
picks one through -displayfd).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

PKG_PARENT = Path(__file__).resolve().parents[2] / "src" / "corral"
SYSTEM_PYTHON = "/usr/bin/python3"
BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from pcd.main import main; main()"
RECORDER = Path(__file__).with_name("xrecorder.py")


class PcdError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    """A minimal client of the wire format: a JSON line plus optional raw bytes each way."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_answer(self) -> tuple[dict[str, Any], bytes]:
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("pcd closed the connection")
        header = json.loads(line)
        size = int(header.get("blob") or 0)
        blob = self.rfile.read(size) if size else b""
        assert len(blob) == size
        return header, blob

    def request(
        self, op: str, args: dict[str, Any] | None = None, blob: bytes = b"", **extra: Any
    ) -> tuple[dict[str, Any], bytes]:
        header: dict[str, Any] = {"op": op, "args": args or {}, **extra}
        if blob:
            header["blob"] = len(blob)
        self.send_raw(json.dumps(header).encode() + b"\n" + blob)
        return self.read_answer()

    def call(self, op: str, blob: bytes = b"", **args: Any) -> dict[str, Any]:
        return self.call_blob(op, blob, **args)[0]

    def call_blob(self, op: str, blob: bytes = b"", **args: Any) -> tuple[dict[str, Any], bytes]:
        header, data = self.request(op, args, blob)
        if not header["ok"]:
            raise PcdError(header["error"]["code"], header["error"]["message"])
        return header["result"], data

    def sh(self, command: str, **args: Any) -> dict[str, Any]:
        """`run` with a shell command line."""
        return self.call("run", **{"shell": command, **args})

    def error(self, op: str, blob: bytes = b"", **args: Any) -> PcdError:
        header, _ = self.request(op, args, blob)
        assert header["ok"] is False, f"{op} {args} unexpectedly succeeded: {header}"
        assert set(header["error"]) == {"code", "message"}
        assert header["error"]["message"]
        return PcdError(header["error"]["code"], header["error"]["message"])


class Daemon:
    """One running pcd."""

    def __init__(self, root: Path, *extra_args: str) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket = root / "run" / "pcd.sock"
        self.log_path = root / "pcd.log"
        env = {
            "HOME": str(self.home),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "USER": "user",
            "TMPDIR": str(root),
        }
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    SYSTEM_PYTHON,
                    "-I",
                    "-c",
                    BOOT,
                    str(PKG_PARENT),
                    "--socket",
                    str(self.socket),
                    "--display",
                    "auto",
                    "--geometry",
                    "1280x800x24",
                    *extra_args,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"pcd exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() - started > 15:
                self.stop()
                raise RuntimeError(f"pcd did not publish its socket: {self.log()}")
            time.sleep(0.002)
        self.boot_s = time.monotonic() - started
        with self.client() as c:
            health = c.call("health")
        self.display: str = health["display"]
        self.pid: int = health["pid"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def client(self) -> Client:
        return Client(self.socket)

    def x_env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        time.sleep(interval)


def find_window(
    client: Client, title: str, timeout: float = 10.0, with_pid: bool = False
) -> dict[str, Any]:
    """Wait until a window titled `title` is on screen (mapped, and with its _NET_WM_PID when
    `with_pid`: xterm sets that once it is set up)."""

    def look() -> dict[str, Any] | None:
        for window in client.call("list_windows")["windows"]:
            if (
                window["title"] == title
                and window["visible"]
                and (window["pid"] is not None or not with_pid)
            ):
                return dict(window)
        return None

    return dict(wait_for(look, timeout))


class Recorder:
    """xrecorder.py running on a daemon's display; `expect` reads its event lines."""

    def __init__(self, daemon: Daemon, title: str, width: int = 600, height: int = 400) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RECORDER), title, str(width), str(height)],
            env=daemon.x_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.expect("ready")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def next(self, timeout: float = 5.0) -> str:
        return self.lines.get(timeout=timeout)

    def expect(self, prefix: str, timeout: float = 5.0) -> str:
        """Skip lines until one starts with `prefix`; return it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
