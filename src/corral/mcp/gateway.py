"""The gateway MCP server, `/mcp`: the whole lifecycle from one plain MCP client configuration.

`list_pools`, `acquire_pc`, `release_pc`, and the computer tools acting on an acquired PC. It
serves both eras of the protocol on the one endpoint (docs/mcp.md, "Protocol eras"):

- Stateless (2026-07-28: no `initialize`, no `Mcp-Session-Id`, `server/discover`, per-request
  `_meta`): `acquire_pc` answers a session handle (`session`, made by
  `corral.identity.handles`), bound to the calling agent and its DPoP key, which later calls
  pass back as their `session` argument. The handle names a session of the store, so any
  control-plane process answers any call, and a client that reconnects keeps its PC by
  handle. Nothing ends with a connection: `release_pc`, the session's idle eviction or its
  lifetime do.
- Handshake (2024-11-05 .. 2025-11-25): as before, `acquire_pc` also binds the PC to *this MCP
  session* (the streamable-HTTP `Mcp-Session-Id`), so the computer tools need no `session`
  argument; one MCP session holds at most one bound PC. The handle works here too: a client
  whose MCP session broke passes it on a new MCP session, which takes the binding over.

Nothing leaks when a handshake-era client goes away: the binding lives in the MCP connection's
own state, and releasing the PC is pushed on the connection's teardown stack, which the SDK
unwinds however the MCP session ends (the client's DELETE on close, the idle timeout (30
minutes by default) for a client that vanished, a crash, server shutdown). The control plane's
own idle eviction is the backstop under all of it, and the only end of a stateless PC but its
release.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final, Protocol

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    Tool,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from corral import __version__
from corral.domain.access import SYSTEM, Caller
from corral.errors import ConflictError, CorralError, InvalidInputError, NotFoundError
from corral.gate.incoming import traced
from corral.gate.operations import Acquire, AcquirePc, operation
from corral.mcp._http import check_routing_headers, principal_of, trace_of
from corral.mcp._tools import (
    computer_tools,
    error_result,
    guarded,
    mcp_tool,
    parse_model,
    run_computer_tool,
    text_result,
)

if TYPE_CHECKING:
    from corral.gate import Gate
    from corral.lifecycle.control import SessionGrant

__all__ = ["HANDLE_ARG", "GatewayMCP", "SessionHandleCodec"]


class SessionHandleCodec(Protocol):
    """Mints and opens session handles (`corral.identity.handles.SessionHandles`)."""

    def mint(self, session_id: str, caller: Caller | None) -> str: ...

    def open(self, handle: object, caller: Caller | None) -> str: ...


log = logging.getLogger("corral.mcp")

BOUND: Final = "corral.session_id"  # Connection.state key: the session this MCP session holds
RELEASE_ON_CLOSE: Final = "corral.release_on_close"  # Connection.state key: teardown pushed
ACQUIRER: Final = "corral.acquirer"  # Connection.state key: the caller that bound the PC
CLOSED_REASON: Final = "mcp_connection_closed"  # release reason when the connection ends
LOCK: Final = "corral.lock"  # Connection.state key: serialises acquire_pc and release_pc
#: The argument naming the PC on the computer tools and release_pc: the handle acquire_pc
#: answered. Mirrored into the `Mcp-Param-Session` header by 2026-07-28 clients, so a proxy
#: (or the Gate) sees which session a call is for before the body is parsed.
HANDLE_ARG: Final = "session"
HANDLE_HEADER: Final = "Session"

INSTRUCTIONS = (
    "Corral lends you an isolated Linux desktop PC. Call `list_pools`, then `acquire_pc`: it "
    "answers a `session` handle; pass it as the `session` argument of the computer tools "
    "(start with `screenshot`; coordinates are pixels of the latest screenshot) and of "
    "`release_pc` when done. The PC is reset on release. Over an MCP session (the initialize "
    "handshake) acquire_pc also binds the PC to it, `session` may then be left out, and "
    "closing the MCP session releases the PC."
)
HANDLE_DESCRIPTION = (
    "the session handle acquire_pc answered (`session`); optional over an MCP session that "
    "acquire_pc bound a PC to"
)


class _ListPoolsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ReleaseArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # published with the computer tools' handle schema (`_with_handle`): a plain string, as
    # x-mcp-header requires (pydantic would say anyOf string/null, and clients drop the tool)
    session: str | None = Field(None, min_length=1, max_length=100)


LIFECYCLE_TOOLS: tuple[Tool, ...] = (
    mcp_tool(
        "list_pools",
        "List the pools of PCs you may acquire from: name, image, region, size, and how many "
        "PCs are ready / in use / booting.",
        _ListPoolsArgs,
    ),
    mcp_tool(
        "acquire_pc",
        "Acquire a PC from a pool. Answers `session`, the handle the computer tools and "
        "release_pc take as their `session` argument (it works only for you, with your current "
        "key). Over an MCP session it also binds the PC to it (one PC per MCP session: "
        "release_pc first to get another). Waits for a free PC up to wait_s; retrying with the "
        "same idempotency_key returns the same PC and a fresh handle.",
        AcquirePc,
    ),
    mcp_tool(
        "release_pc",
        "Release the PC named by `session` (or bound to this MCP session); it is reset, and "
        "everything on it is lost. Safe to call twice.",
        _ReleaseArgs,
    ),
)


def _with_handle(tool: Tool) -> Tool:
    """A computer tool as the gateway lists it: its catalogue schema plus the handle."""
    schema = dict(tool.input_schema)
    schema["properties"] = {
        **schema.get("properties", {}),
        HANDLE_ARG: {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": HANDLE_DESCRIPTION,
            "x-mcp-header": HANDLE_HEADER,
        },
    }
    return tool.model_copy(update={"input_schema": schema})


LIFECYCLE_TOOLS = tuple(_with_handle(t) if t.name == "release_pc" else t for t in LIFECYCLE_TOOLS)
GATEWAY_COMPUTER_TOOLS = tuple(_with_handle(t) for t in computer_tools())
_SCHEMAS = {t.name: t.input_schema for t in (*LIFECYCLE_TOOLS, *GATEWAY_COMPUTER_TOOLS)}


def _connection(ctx: ServerRequestContext[Any]) -> Connection | None:
    """The MCP connection (one per MCP session) that carried this request.

    `Connection.state` and `Connection.exit_stack` are the SDK's documented per-connection
    scratch space and teardown, but mcp 2.3.0 hands lowlevel handlers a ServerRequestContext
    whose session proxies the Connection only privately; this is the one place that reaches
    it (tests/mcp cover it, so an SDK change shows up there).
    """
    conn = getattr(ctx.session, "_connection", None)
    return conn if isinstance(conn, Connection) else None


_LIST_POOLS = operation("list_pools")
_ACQUIRE = operation("acquire")
_SESSION_GRANT = operation("session_grant")
_RELEASE = operation("release")


class GatewayMCP:
    """ASGI app for `/mcp`; run `manager.run()` during the app lifespan."""

    def __init__(
        self,
        gate: Gate,
        security: TransportSecuritySettings,
        *,
        idle_timeout_s: float,
        max_request_bytes: int,
        handles: SessionHandleCodec,
    ) -> None:
        self.gate = gate
        self.handles = handles
        self.max_request_bytes = max_request_bytes
        #: which MCP connection of this process holds each bound session: a handshake-era
        #: client that comes back on a new MCP session with its handle takes the binding over,
        #: so the old session's teardown must not release the PC under it
        self._holders: dict[str, Connection] = {}
        self.server: Server[Any] = Server(
            "corral",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            get_tool_input_schema=self._input_schema,
        )
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            security_settings=security,
            session_idle_timeout=idle_timeout_s,
            max_request_body_size=max_request_bytes,
            # One JSON answer per request: the gateway sends no notifications mid-call, and an
            # SSE stream per tool call cost about a tenth of the server's CPU per call.
            json_response=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Both eras: the SDK's manager routes a request by its `MCP-Protocol-Version` (a
        2026-07-28 one is served statelessly, anything else over the handshake's MCP session);
        the routing headers are checked against the body first (`check_routing_headers`)."""
        checked = await check_routing_headers(scope, receive, send, self.max_request_bytes)
        if checked is None:
            return
        await self.manager.handle_request(scope, checked, send)

    @staticmethod
    def _input_schema(name: str) -> dict[str, Any] | None:
        return _SCHEMAS.get(name)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        # The same list for every caller and connection (2026-07-28: lists do not vary).
        return ListToolsResult(tools=[*LIFECYCLE_TOOLS, *GATEWAY_COMPUTER_TOOLS])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        with traced(trace_of(ctx)):  # the caller's W3C trace, for every record of the call
            return await self._call_tool_traced(ctx, params)

    async def _call_tool_traced(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        name, args = params.name, params.arguments
        conn = _connection(ctx)
        if conn is not None and conn.session_id is None:
            conn = None  # a stateless (2026-07-28) request: no MCP session to bind to
        who = principal_of(ctx.request)
        if name == "list_pools":
            return await guarded(name, lambda: self._list_pools(args, who))
        if name == "acquire_pc":
            return await guarded(name, lambda: self._acquire(conn, args, who))
        if name == "release_pc":
            return await guarded(name, lambda: self._release(conn, args, who))
        rest = dict(args or {})
        handle = rest.pop(HANDLE_ARG, None)
        try:
            session_id = self._target(conn, handle, who)
        except CorralError as exc:
            return error_result(exc)
        result = await run_computer_tool(self.gate, session_id, name, rest, who)
        bound = conn is not None and conn.state.get(BOUND) == session_id
        if bound and result.is_error and _gone(result):  # released elsewhere or evicted:
            assert conn is not None
            self._unbind(conn)  # acquire_pc may bind another
        return result

    def _target(self, conn: Connection | None, handle: object, who: Caller | None) -> str:
        """The session a computer tool acts on: the handle's (checked for this caller and
        key), else the one bound to this MCP session."""
        if handle is not None:
            session_id = self.handles.open(handle, who)
            if conn is not None and conn.state.get(BOUND) is None:
                self._bind(conn, session_id, who)  # a client back on a new MCP session
            return session_id
        if conn is None:
            raise InvalidInputError(
                f"no PC named: pass `{HANDLE_ARG}`, the handle acquire_pc answered",
                hint="without an MCP session (stateless MCP, 2026-07-28) every computer tool "
                "takes the handle as its `session` argument; call acquire_pc first if you have "
                "none",
            )
        bound = conn.state.get(BOUND)
        if not isinstance(bound, str):
            raise InvalidInputError(
                "no PC is bound to this MCP session",
                hint="call acquire_pc first (see list_pools), or pass the `session` handle it "
                "answered",
            )
        return bound

    def _bind(self, conn: Connection, session_id: str, who: Caller | None) -> None:
        """Bind `session_id` to this MCP session: its teardown releases the PC. A connection of
        this process that held it before lets go (its teardown then leaves the PC alone)."""
        previous = self._holders.get(session_id)
        if previous is not None and previous is not conn:
            self._unbind(previous)
        self._holders[session_id] = conn
        conn.state[BOUND] = session_id
        conn.state[ACQUIRER] = who
        if not conn.state.get(RELEASE_ON_CLOSE):
            conn.state[RELEASE_ON_CLOSE] = True
            conn.exit_stack.push_async_callback(self._release_on_close, conn)

    def _unbind(self, conn: Connection) -> str | None:
        session_id = conn.state.pop(BOUND, None)
        conn.state.pop(ACQUIRER, None)
        if session_id is not None and self._holders.get(session_id) is conn:
            del self._holders[session_id]
        return session_id if isinstance(session_id, str) else None

    async def _list_pools(self, args: dict[str, Any] | None, who: Caller | None) -> CallToolResult:
        parse_model("list_pools", _ListPoolsArgs, args)
        pools = [
            {
                "name": p.name,
                "image": p.image,
                "region": p.region,
                "size": p.size,
                "warm": p.warm,
                "max": p.max,
                "counts": dict(p.counts),
            }
            for p in await self.gate.handle(who, _LIST_POOLS)
        ]
        lines = [
            f"{p['name']}: image {p['image']}, region {p['region']}, size {p['size']}; "
            + ", ".join(f"{n} {state}" for state, n in sorted(p["counts"].items()))
            for p in pools
        ]
        return text_result("\n".join(lines) or "no pools", {"pools": pools})

    @staticmethod
    def _lock(conn: Connection) -> asyncio.Lock:
        """One acquire or release at a time per MCP session: two racing acquire_pc calls
        must not both take a PC (the first would leak until idle eviction)."""
        lock = conn.state.get(LOCK)
        if lock is None:
            lock = conn.state[LOCK] = asyncio.Lock()
        assert isinstance(lock, asyncio.Lock)
        return lock

    async def _acquire(
        self,
        conn: Connection | None,
        args: dict[str, Any] | None,
        who: Caller | None,
    ) -> CallToolResult:
        if conn is None:  # stateless: nothing to bind, the handle is the binding
            return await self._acquire_locked(None, args, who)
        async with self._lock(conn):
            return await self._acquire_locked(conn, args, who)

    async def _acquire_locked(
        self,
        conn: Connection | None,
        args: dict[str, Any] | None,
        who: Caller | None,
    ) -> CallToolResult:
        a = parse_model("acquire_pc", AcquirePc, args)
        held = conn.state.get(BOUND) if conn is not None else None
        if conn is not None and held is not None:
            try:
                held_grant: SessionGrant = await self.gate.handle(who, _SESSION_GRANT, held)
            except NotFoundError:
                self._unbind(conn)
            else:
                current = held_grant.session
                if current.pool != a.pool:
                    raise ConflictError(
                        f"this MCP session already holds PC {current.pc_id} from pool "
                        f"{current.pool!r}",
                        hint="call release_pc first, or open another MCP session",
                    )
                return text_result(
                    f"already holding PC {current.pc_id} (session {current.id}); the computer "
                    "tools act on it",
                    self._answer(held_grant, who),
                )
        request = Acquire.model_construct(
            wait_s=a.wait_s, controls=a.controls, idempotency_key=a.idempotency_key
        )
        grant: SessionGrant = await self.gate.handle(who, _ACQUIRE, a.pool, request)
        session = grant.session
        if conn is not None:
            self._bind(conn, session.id, who)
        return text_result(
            f"acquired PC {session.pc_id} from pool {session.pool} (session {session.id}, "
            f"expires {session.expires_at.isoformat()}); pass `session` from this answer to "
            "the computer tools. Call release_pc when done.",
            self._answer(grant, who),
        )

    def _answer(self, grant: SessionGrant, who: Caller | None) -> dict[str, Any]:
        """The session as JSON (with its controls, if any), its handle (`session`), and a token
        for its per-session URL: another MCP client holding the same DPoP key can drive this
        PC there (`mcp_url`), until release. The grant comes whole from the service."""
        s = grant.session
        answer: dict[str, Any] = {
            "session_id": s.id,
            "pool": s.pool,
            "pc_id": s.pc_id,
            "expires_at": s.expires_at.isoformat(),
            "mcp_url": grant.mcp_url,
            HANDLE_ARG: self.handles.mint(s.id, who),
        }
        if grant.controls.any:
            answer["controls"] = grant.controls.to_json()
        answer.update(grant.token)
        return answer

    async def _release(
        self, conn: Connection | None, args: dict[str, Any] | None, who: Caller | None
    ) -> CallToolResult:
        a = parse_model("release_pc", _ReleaseArgs, args)
        named = self.handles.open(a.session, who) if a.session is not None else None
        if conn is None:
            if named is None:
                raise InvalidInputError(
                    f"no PC named: pass `{HANDLE_ARG}`, the handle acquire_pc answered",
                    hint="without an MCP session (stateless MCP, 2026-07-28) release_pc takes "
                    "the handle as its `session` argument",
                )
            return await self._release_session(named, who)
        async with self._lock(conn):
            if named is not None and conn.state.get(BOUND) != named:
                return await self._release_session(named, who)  # not this MCP session's PC
            session_id = self._unbind(conn)
            if session_id is None:
                return text_result("no PC is bound to this MCP session; nothing to release")
            return await self._release_session(session_id, who)

    async def _release_session(self, session_id: str, who: Caller | None) -> CallToolResult:
        done = await self.gate.call(who, _RELEASE, session_id)
        session = done.result
        answer: dict[str, Any] = {"session_id": session.id, "pc_id": session.pc_id}
        answer["released"] = True
        sealed = ""
        if done.receipt is not None:  # the checkpoint that seals the session's records
            answer["audit"] = done.receipt
            sealed = f"; its records are sealed by checkpoint {done.receipt['checkpoint_size']}"
        return text_result(
            f"released PC {session.pc_id} (session {session.id}); it is being reset{sealed}",
            answer,
        )

    async def _release_on_close(self, conn: Connection) -> None:
        acquirer = conn.state.get(ACQUIRER)
        session_id = self._unbind(conn)
        if session_id is None:
            return
        try:
            # The MCP session is gone, and with it its caller: the server releases what it held,
            # recorded as released by the agent whose connection it was, with the reason.
            await self.gate.handle(
                SYSTEM,
                _RELEASE,
                session_id,
                reason=CLOSED_REASON,
                on_behalf_of=acquirer if isinstance(acquirer, Caller) else None,
            )
            log.info("MCP session %s closed: released %s", conn.session_id, session_id)
        except CorralError as exc:
            log.warning("MCP session closed; releasing %s failed: %s", session_id, exc)


def _gone(result: CallToolResult) -> bool:
    problem = result.structured_content or {}
    return bool(result.is_error) and problem.get("code") == "session_gone"
