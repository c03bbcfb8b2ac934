"""Test fakes that implement Corral's real interfaces, shared by every test that needs one.

- `FakeDriver`: a `corral.runtime.driver.PCDriver` without root or containers, so the pool
  manager's ordering, cancellation, on-demand boots and shutdown can be driven precisely.
- `FakeClient`: a stand-in for `PcdClient` itself, for tests that override single actions
  (hold one until the test lets it go, say); it runs commands as `FakeDriver.answer` does.
- `FakePcd`: a `corral.runtime.client.PcdTransport` whose channel answers the pcd protocol
  in memory. The driver hands out the real `PcdClient` over it, so the client's framing and
  bounds run for real; `run` treats `name:seconds` as "sleep that long, answer `name`".

The real driver and transport are covered by tests/runtime and tests/e2e.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.runtime.client import Channel, CommandResult, PcdClient
from corral.runtime.driver import Health, PCInfo

__all__ = ["FakeChannel", "FakeClient", "FakeDriver", "FakeImage", "FakePcd"]


@dataclass(frozen=True)
class FakeImage:
    name: str
    digest: str = "sha256:" + "0" * 64


class _FakeImages:
    def get(self, name: str) -> FakeImage:
        return FakeImage(name)


class FakeChannel:
    """One connection to a fake pcd: each request line gets its answer line at once."""

    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver
        self._out = bytearray()

    def settimeout(self, value: float | None, /) -> None:
        pass

    def sendall(self, data: bytes, /) -> None:
        line, _, _blob = data.partition(b"\n")
        request = json.loads(line)
        result = self.driver.answer(request["op"], request.get("args") or {})
        self._out += json.dumps({"ok": True, "result": result}).encode() + b"\n"

    def recv(self, bufsize: int, /) -> bytes:
        chunk = bytes(self._out[:bufsize])
        del self._out[:bufsize]
        return chunk

    def recv_into(self, buffer: memoryview, nbytes: int, /) -> int:
        chunk = self.recv(nbytes)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        pass


class FakePcd:
    """The transport to one fake PC."""

    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver

    def connect(self, deadline: float) -> Channel:
        return FakeChannel(self.driver)


class FakeDriver:
    """PCs that boot in `boot_s` and run commands as `FakeChannel` says; it counts how many
    commands run at once (`in_flight`, `max_in_flight`) and records their names (`ran`)."""

    def __init__(self, boot_s: float = 0.0) -> None:
        self.boot_s = boot_s
        self.alive: set[str] = set()
        self.ran: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self._ids = itertools.count()
        self._images = _FakeImages()

    @property
    def images(self) -> _FakeImages:
        return self._images

    def _info(self, pc_id: str) -> PCInfo:
        image = FakeImage("minimal")
        return PCInfo(pc_id, image.name, image.digest, "small", "running", None, 0.0, Path("/"))

    def boot(self, image: str, size: str = "small", screen: str = "1280x800x24") -> PCInfo:
        time.sleep(self.boot_s)
        pc_id = f"pc-{next(self._ids):04d}"
        with self.lock:
            self.alive.add(pc_id)
        return self._info(pc_id)

    def reset(self, pc_id: str) -> PCInfo:
        return self._info(pc_id)

    def destroy(self, pc_id: str) -> None:
        with self.lock:
            self.alive.discard(pc_id)

    def info(self, pc_id: str) -> PCInfo:
        return self._info(pc_id)

    def list_pcs(self) -> list[PCInfo]:
        return [self._info(i) for i in sorted(self.alive)]

    def health(self, pc_id: str) -> Health:
        return Health(True, True, True, "healthy")

    def reconcile(self, boot_grace_s: float = 60.0) -> list[str]:
        return []

    def client(self, pc_id: str, timeout: float = 30.0) -> PcdClient:
        return PcdClient(FakePcd(self), timeout=timeout)

    def answer(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """What the fake pcd answers `op` with (on the caller's thread)."""
        if op != "run":
            return {}
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            line = args.get("shell") or " ".join(args.get("argv") or [])
            name, _, delay = line.partition(":")
            time.sleep(float(delay or 0))
            self.ran.append(name)
        finally:
            with self.lock:
                self.in_flight -= 1
        return {"exit_code": 0, "stdout": name, "stderr": "", "duration_ms": 0.0}


class FakeClient:
    """The one `PcdClient` action the manager's tests drive, `run`, without the protocol."""

    def __init__(self, runtime: FakeDriver) -> None:
        self.runtime = runtime

    def run(
        self,
        argv: list[str] | None = None,
        *,
        shell: str | None = None,
        timeout_s: float = 30,
        **_: Any,
    ) -> CommandResult:
        args: dict[str, Any] = {"argv": argv} if shell is None else {"shell": shell}
        answer = self.runtime.answer("run", args)
        return CommandResult(0, answer["stdout"], "", False, False, False, 0.0)

    def close(self) -> None:
        pass
