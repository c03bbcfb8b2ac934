"""Test fakes that implement Corral's real interfaces, shared by every test that needs one.

- `FakeDriver`: a `corral.runtime.driver.PCDriver` without root or containers, so the pool
  manager's ordering, cancellation, on-demand boots and shutdown can be driven precisely.
- `FakeClient`: a stand-in for `PcdClient` itself, for tests that override single actions
  (hold one until the test lets it go, say); it runs commands as `FakeDriver.answer` does.
- `FakePcd`: a `corral.runtime.client.PcdTransport` whose channel answers the pcd protocol
  in memory. The driver hands out the real `PcdClient` over it, so the client's framing and
  bounds run for real; `run` treats `name:seconds` as "sleep that long, answer `name`".
- `FakeControl`: the lifecycle operations the Gate's routes call (`ControlPlane`'s names),
  for the MCP adapter's unit tests, with the real argument validation
  (`corral.lifecycle.tools.parse_args`) and coordinate checks.

The real driver and transport are covered by tests/runtime and tests/e2e.
"""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from PIL import Image

from corral.access import Controls
from corral.errors import (
    ActionError,
    ConflictError,
    NotFoundError,
    SessionGoneError,
    UnavailableError,
)
from corral.lifecycle.sessions import SessionGrant
from corral.lifecycle.tools import ScreenSpace, ToolResult, parse_args
from corral.runtime.client import Channel, CommandResult, PcdClient
from corral.runtime.driver import Health, PCInfo

__all__ = [
    "FakeChannel",
    "FakeClient",
    "FakeControl",
    "FakeDriver",
    "FakeImage",
    "FakePcd",
    "tiny_png",
]


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


def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakePool:
    name: str
    image: str = "desktop"
    region: str = "local"
    size: str = "small"
    warm: int = 2
    max: int = 10
    counts: dict[str, int] = field(default_factory=lambda: {"ready": 2, "in_use": 0})


@dataclass
class FakeSession:
    id: str
    pool: str
    pc_id: str
    expires_at: datetime
    state: str = "active"


class FakePolicy:
    """The one PolicyService read the gateway makes: a session's controls (those it asked for)."""

    def __init__(self) -> None:
        self.fixed: dict[str, Controls] = {}

    def controls(self, session_id: str) -> Controls:
        return self.fixed.get(session_id, Controls())


class FakeControl:
    def __init__(self) -> None:
        self.policy = FakePolicy()
        self.pools = {"default": FakePool("default"), "busy": FakePool("busy")}
        self.sessions: dict[str, FakeSession] = {}
        self.keys: dict[str, str] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.released: list[str] = []
        self.reasons: list[str] = []  # the release reason of each entry of `released`
        self.release_event = anyio.Event()
        self.crash = False
        self._locks: dict[str, anyio.Lock] = {}
        self._running: dict[str, int] = {}
        self.max_parallel = 0
        self.base_url = "http://127.0.0.1:8420"  # the served URL, set by the fixture

    def _grant(self, session: FakeSession, token: bool) -> SessionGrant:
        minted = {"session_token": f"token-{session.id}"} if token else {}
        url = f"{self.base_url}/sessions/{session.id}/mcp"
        return SessionGrant(session, self.policy.controls(session.id), url, minted)  # type: ignore[arg-type]

    async def acquire_grant(self, pool: str, **kw: Any) -> SessionGrant:
        """As the real one: acquire, answered with the session's grant."""
        return self._grant(await self.acquire(pool, **kw), token=True)

    def grant(self, session_id: str, *, principal: object = None) -> SessionGrant:
        return self._grant(self.get_session(session_id), token=True)

    def describe(self, session_id: str, *, principal: object = None) -> SessionGrant:
        return self._grant(self.get_session(session_id), token=False)

    def list_pools(self, *, principal: object = None) -> list[FakePool]:
        return list(self.pools.values())

    async def acquire(
        self,
        pool: str,
        *,
        idempotency_key: str | None = None,
        request: dict[str, Any] | None = None,
        wait_s: float | None = None,
        principal: object = None,
    ) -> FakeSession:
        if pool not in self.pools:
            raise NotFoundError(f"no pool {pool!r}", hint="see list_pools")
        if pool == "busy":
            raise UnavailableError(f"no PC of pool {pool!r} became free", retry_after_s=7)
        if idempotency_key is not None and idempotency_key in self.keys:
            session = self.sessions[self.keys[idempotency_key]]
            if session.pool != pool:
                raise ConflictError("idempotency key reused with a different request")
            return session
        n = len(self.sessions) + 1
        session = FakeSession(
            f"ses-{n:04d}", pool, f"pc-{n:04d}", datetime.now(UTC) + timedelta(hours=8)
        )
        self.sessions[session.id] = session
        self.policy.fixed[session.id] = Controls.from_json((request or {}).get("controls"))
        if idempotency_key is not None:
            self.keys[idempotency_key] = session.id
        return session

    async def release(
        self,
        session_id: str,
        reason: str = "released",
        *,
        principal: object = None,
        on_behalf_of: object = None,
    ) -> FakeSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionGoneError(f"no session {session_id!r}")
        if session.state == "active":
            session.state = "released"
            self.released.append(session_id)
            self.reasons.append(reason)
            self.release_event.set()
        return session

    def get_session(self, session_id: str, *, principal: object = None) -> FakeSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionGoneError(f"no session {session_id!r}")
        if session.state != "active":
            raise SessionGoneError(f"session {session_id} was released", hint="acquire a new PC")
        return session

    async def act(
        self,
        session_id: str,
        tool: str,
        args: dict[str, Any],
        *,
        principal: object = None,
        approval_wait_s: float | None = None,
    ) -> ToolResult:
        _, parsed = parse_args(tool, args)
        self.get_session(session_id)
        x, y = getattr(parsed, "x", None), getattr(parsed, "y", None)
        if x is not None and y is not None:
            ScreenSpace().to_screen(x, y)
        lock = self._locks.setdefault(session_id, anyio.Lock())
        async with lock:  # what the real ControlPlane guarantees: one at a time, in order
            self._running[session_id] = self._running.get(session_id, 0) + 1
            self.max_parallel = max(self.max_parallel, self._running[session_id])
            try:
                self.calls.append((session_id, tool, args))
                return await self._perform(tool, args)
            finally:
                self._running[session_id] -= 1

    async def _perform(self, tool: str, args: dict[str, Any]) -> ToolResult:
        if self.crash:
            raise RuntimeError("boom")
        if tool == "screenshot":
            return ToolResult("screenshot 4x3", tiny_png(), {"width": 4, "height": 3})
        if tool == "press_keys" and "nosuchkey" in args["keys"]:
            raise ActionError(
                "unknown key 'nosuchkey'", hint="use X key names such as Return", code="bad_key"
            )
        if tool == "wait":
            await anyio.sleep(args["seconds"])
        if tool == "read_file":
            return ToolResult("hello from corral\n", data={"size": 18})
        return ToolResult(f"did {tool}")
