"""The Gate: the one entry point every adapter hands its operations to.

`Gate.handle(caller, operation, target, args)` runs five named stages, in order:

1. authorize: may this caller do this operation on this target? (`Authorizer`)
2. inspect_in: the arguments, before anything acts on them (`InputInspector`, DLP's seam)
3. act: the pillar service that does the operation (`Actor`, dispatching on the catalogue)
4. inspect_out: the result, before the caller sees it (`OutputInspector`, DLP's seam)
5. record: every call, denied and failed ones included (`Recorder`, audit's and detection's seam)

A stage that raises ends the call (the error reaches the adapter, which renders it); `record`
runs whatever happened, with `call.error` set. Before anything else the recorder may refuse the
call (`Recorder.admit`): a log that cannot be written refuses actions rather than let them
happen unrecorded (fail closed). Stages are plain objects with one async method,
so the coming pillars replace the no-op ones (`corral.dlp.PassInput`/`PassOutput`,
`corral.audit.NoRecord`) without touching an adapter, and a test can wrap any of them.

Cost: one small `GateCall` (slots) per call and four awaits of coroutines that do not suspend;
no store round trip of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from corral.access.decisions import Decided, collect_decisions
from corral.audit import NoRecord
from corral.dlp import PassInput, PassOutput
from corral.domain.access import Caller
from corral.domain.trace import TraceContext
from corral.errors import InvalidInputError, PermissionDeniedError
from corral.gate.incoming import current_trace
from corral.gate.operations import Kind, Operation

__all__ = [
    "STAGES",
    "Actor",
    "Authorizer",
    "Gate",
    "GateCall",
    "Handler",
    "InputInspector",
    "OutputInspector",
    "PolicyAuthorizer",
    "Recorder",
    "Route",
]

#: the stages' names, in the order every call walks them
STAGES: Final = ("authorize", "inspect_in", "act", "inspect_out", "record")


class GateCall:
    """One operation on its way through the Gate; stages read it and may change `args` (an
    input inspector redacting) or `result` (an output inspector redacting)."""

    __slots__ = (
        "args",
        "caller",
        "decisions",
        "error",
        "on_behalf_of",
        "operation",
        "reason",
        "receipt",
        "result",
        "route",
        "started",
        "target",
        "trace",
        "wait_s",
    )

    def __init__(
        self,
        caller: Caller | None,
        operation: Operation,
        target: str | None,
        args: Any,
        route: Route,
        *,
        on_behalf_of: Caller | None = None,
        wait_s: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.caller = caller
        self.operation = operation
        self.target = target
        #: the arguments: a pydantic model of `operation.args`, or a mapping the act stage
        #: validates (the computer tools: `corral.lifecycle.tools.parse_args`)
        self.args = args
        self.route = route
        #: the caller the server acts for (an MCP session's teardown releases as its agent)
        self.on_behalf_of = on_behalf_of
        #: how long a call held for a sponsor's approval may wait (REST `Prefer: wait=N`)
        self.wait_s = wait_s
        #: why the server itself ends a session (eviction, teardown); never a caller's input
        self.reason = reason
        self.result: Any = None
        #: what the record stage tells the caller besides the result (release: the signed
        #: checkpoint that seals the session's records), None if nothing
        self.receipt: Any = None
        self.error: BaseException | None = None
        #: every policy decision the call caused, in order, whichever stage or service took
        #: it (`corral.access.decisions`): what the record stage keeps
        self.decisions: list[Decided] = []
        #: the caller's trace as the adapter received it (None: none came, the record stage
        #: continues the session's trace or starts one)
        self.trace: TraceContext | None = current_trace()
        #: when the call entered the Gate (time.monotonic), for its duration
        self.started = time.monotonic()


Handler = Callable[[GateCall], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """How the act stage does one operation. `decides`: the service it calls asks
    `PolicyService` itself, at the point it holds the object the decision is about (a session
    under its lock, a pool's spec, an approval); else the authorize stage asks Cedar."""

    run: Handler
    decides: bool = True


class Authorizer(Protocol):
    async def authorize(self, call: GateCall) -> None:
        """Return to allow; raise (PermissionDeniedError, SessionGoneError...) to refuse."""


class InputInspector(Protocol):
    async def inspect_in(self, call: GateCall) -> None:
        """Look at (and maybe rewrite) `call.args` before the operation acts; raise to block."""


class Actor(Protocol):
    async def act(self, call: GateCall) -> Any:
        """Do the operation; its answer becomes `call.result`."""


class OutputInspector(Protocol):
    async def inspect_out(self, call: GateCall) -> None:
        """Look at (and maybe rewrite) `call.result` before the caller sees it; raise to block."""


class Recorder(Protocol):
    async def admit(self, call: GateCall) -> None:
        """Raise to refuse the call before it runs (the log cannot take its record)."""

    async def record(self, call: GateCall) -> None:
        """Keep the call (allowed, denied or failed: `call.error`)."""


class Dispatch:
    """The act stage: the operation's route."""

    __slots__ = ()

    async def act(self, call: GateCall) -> Any:
        return await call.route.run(call)


class _Decider(Protocol):
    def require(self, caller: Caller | None, action: str, target: Any) -> Any: ...

    @staticmethod
    def collection(kind: Any, name: str) -> Any: ...


class PolicyAuthorizer:
    """The authorize stage over `PolicyService` (Cedar, the one enforcement point).

    1. No caller, no call (fail closed).
    2. An operation whose service decides (`Route.decides`) is decided there, with the object
       in hand: a tool call under its session's lock after the session is read (so calls keep
       their order and a queued one is checked again), an acquire with the pool's spec, whose
       permits also fix the session's controls. Those services ask `PolicyService.authorize`
       with the operation's catalogue action; tests/api/test_enforcement.py proves each does.
    3. Any other operation (the host CLI's, over the policy-free directory and store) is
       decided here: its catalogue action on the collection it belongs to.
    """

    __slots__ = ("policy",)

    _COLLECTIONS: Final = {
        Kind.DIRECTORY: ("Directory", "directory"),
        Kind.POLICY: ("Policy", "policies"),
        Kind.AUDIT: ("AuditLog", "audit"),
    }

    def __init__(self, policy: _Decider | None) -> None:
        self.policy = policy

    async def authorize(self, call: GateCall) -> None:
        if call.caller is None:
            raise PermissionDeniedError("no authenticated principal for this request")
        if call.route.decides:
            return
        if self.policy is None:
            raise PermissionDeniedError(f"{call.operation.name}: no policy to decide it (refused)")
        kind, name = self._COLLECTIONS.get(call.operation.kind, ("Directory", "directory"))
        target = self.policy.collection(kind, name)
        await asyncio.to_thread(self.policy.require, call.caller, call.operation.action, target)


class Gate:
    """The stages, and the routes the act stage serves (`routes` by operation name; `tools`
    for every computer tool). Swap a stage by assigning the attribute: `gate.recorder = ...`."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        tools: Route | None = None,
        authorizer: Authorizer,
        inspect_in: InputInspector | None = None,
        inspect_out: OutputInspector | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.tools = tools
        self.authorizer: Authorizer = authorizer
        self.input: InputInspector = inspect_in or PassInput()
        self.actor: Actor = Dispatch()
        self.output: OutputInspector = inspect_out or PassOutput()
        self.recorder: Recorder = recorder or NoRecord()

    def serves(self, operation: Operation) -> bool:
        if operation.kind is Kind.TOOL:
            return self.tools is not None
        return operation.name in self.routes

    def _route(self, operation: Operation) -> Route:
        route = self.tools if operation.kind is Kind.TOOL else self.routes.get(operation.name)
        if route is None:
            raise InvalidInputError(f"operation {operation.name!r} is not served here")
        return route

    async def handle(
        self,
        caller: Caller | None,
        operation: Operation,
        target: str | None = None,
        args: Any = None,
        *,
        on_behalf_of: Caller | None = None,
        wait_s: float | None = None,
        reason: str | None = None,
    ) -> Any:
        """Run `operation` for `caller` on `target` with `args` through every stage; its
        result (`call` instead gives the whole call, with the record stage's receipt)."""
        done = await self.call(
            caller,
            operation,
            target,
            args,
            on_behalf_of=on_behalf_of,
            wait_s=wait_s,
            reason=reason,
        )
        return done.result

    async def call(
        self,
        caller: Caller | None,
        operation: Operation,
        target: str | None = None,
        args: Any = None,
        *,
        on_behalf_of: Caller | None = None,
        wait_s: float | None = None,
        reason: str | None = None,
    ) -> GateCall:
        """`handle`, answering the finished call: its result and `receipt` (what the record
        stage tells the caller, such as the checkpoint that sealed a released session)."""
        call = GateCall(
            caller,
            operation,
            target,
            args,
            self._route(operation),
            on_behalf_of=on_behalf_of,
            wait_s=wait_s,
            reason=reason,
        )
        with collect_decisions(call.decisions):
            try:
                await self.recorder.admit(call)
                await self.authorizer.authorize(call)
                await self.input.inspect_in(call)
                call.result = await self.actor.act(call)
                await self.output.inspect_out(call)
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                await self.recorder.record(call)
        return call
