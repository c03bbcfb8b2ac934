"""Fixtures: the MCP endpoints on a real uvicorn (free port) over a fake ControlPlane."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import uvicorn
from starlette.applications import Starlette

from corral.gate import GateCall, lifecycle_gate
from corral.identity.handles import SessionHandles
from corral.lifecycle.control import ControlPlane
from corral.mcp import mount_mcp
from corral.mcp.gateway import GatewayMCP
from tests.support.fakes import FakeControl


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Served:
    url: str
    control: FakeControl
    server: uvicorn.Server
    task: asyncio.Task[None] = field(repr=False)
    app: Starlette = field(repr=False)

    @property
    def gateway(self) -> GatewayMCP:
        route = next(r for r in self.app.routes if getattr(r, "name", "") == "mcp_gateway")
        endpoint = route.endpoint  # type: ignore[attr-defined]
        assert isinstance(endpoint, GatewayMCP)
        return endpoint

    def open_mcp_sessions(self) -> list[str]:
        """The ids of the handshake-era MCP sessions the gateway holds (its SDK manager's)."""
        return list(self.gateway.manager._server_instances)

    def session_url(self, session_id: str) -> str:
        return f"{self.url}/sessions/{session_id}/mcp"

    @property
    def gateway_url(self) -> str:
        return f"{self.url}/mcp"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


class _Unauthenticated:
    """The adapter's unit tests run without authentication (the fake control plane decides
    nothing): this authorize stage lets a call without a caller through, where the real one
    refuses it (tests/api/test_enforcement.py)."""

    async def authorize(self, call: GateCall) -> None:
        return None


@asynccontextmanager
async def serve(**mount_options: Any) -> AsyncIterator[Served]:
    control = FakeControl()
    app = Starlette()
    # FakeControl has the ControlPlane methods the MCP layer calls, not its type
    gate = lifecycle_gate(cast(ControlPlane, control))
    gate.authorizer = _Unauthenticated()
    mount_options.setdefault("handles", SessionHandles.ephemeral())
    mcp_lifespan = mount_mcp(app, gate, **mount_options)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with mcp_lifespan:
            yield

    app.router.lifespan_context = lifespan
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    control.base_url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    # Connections queue on the listening socket until uvicorn (after its lifespan startup)
    # accepts them, so the tests need not wait for it to come up.
    task = asyncio.create_task(server.serve(sockets=[sock]))
    served = Served(f"http://127.0.0.1:{port}", control, server, task, app)
    try:
        yield served
    finally:
        await served.stop()
        sock.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve() as s:
        yield s
