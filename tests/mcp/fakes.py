"""A fake ControlPlane for the MCP adapter's unit tests: the contract's methods and errors,
with the real argument validation (`corral.lifecycle.tools.parse_args`) and coordinate checks."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from corral.lifecycle.control import SessionGrant
from corral.lifecycle.tools import ScreenSpace, ToolResult, parse_args


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
