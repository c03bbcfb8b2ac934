"""The Gate's record stage: every call becomes one OCSF record in the Merkle log.

`AuditRecorder.record` runs for every call, allowed, denied or failed, and returns only once
the record is committed (`AuditWriter`), so an answer a caller got always has its record; a
record that cannot be written fails the call (`audit_unavailable`), and while the log cannot be
written `admit` refuses calls before they run. What a record keeps of the call:

- the actor (caller kind and id, its sponsor for an agent, whom the server acted for, the
  client's address and DPoP key), the session, PC and pool, the trace;
- every policy decision the call caused, with the policies that determined it;
- the arguments, bounded: typed text, clipboard text and file content as a keyed hash, size
  and a short preview (`reduce_content`), fields named like secrets the same way, long
  strings and lists cut; the result as a summary (ids, counts, sizes and hashes), never a
  session token or a screenshot;
- outcome, Corral's error code and HTTP status, duration.

Trace: the caller's (HTTP `traceparent` or MCP `_meta`); when none came, a call on a session
continues the trace its acquire started (kept in memory per session, per process), and any
other call starts one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from corral import __version__
from corral.audit.event import Actor, AuditEvent, Category, DecisionNote, Outcome, TraceIds
from corral.audit.ocsf import encode, reduce_content, to_ocsf
from corral.domain.trace import current_trace
from corral.errors import AuditUnavailableError, CorralError, PermissionDeniedError
from corral.store import EntryKeys

if TYPE_CHECKING:
    from corral.audit.writer import AuditWriter
    from corral.gate import GateCall
    from corral.identity.caep import CorralEvent
    from corral.identity.event_receiver import Outcome as SetOutcome
    from corral.identity.token_endpoint import TokenOutcome

__all__ = ["AuditRecorder"]

#: argument fields whose content is the agent's data: kept as a keyed hash, size and preview
_CONTENT_FIELDS: Final = frozenset({"text", "content"})
#: argument names that hold secrets, whatever the operation
_SECRET_NAME: Final = re.compile(
    r"secret|token|password|passphrase|credential|private|auth|cookie|assertion|bearer"
    r"|api[_-]?key|^key$|header",
    re.I,
)
_MAX_STRING: Final = 512
_MAX_ITEMS: Final = 32
_MAX_DEPTH: Final = 4
#: how many sessions' traces are remembered (the oldest forgotten first)
_MAX_SESSIONS: Final = 10_000
_SPONSOR_TTL_S: Final = 30.0
_REFUSALS_PER_S: Final = 20.0
_REFUSAL_BURST: Final = 100


def _sealed(value: Any, key: bytes, preview: int = 0) -> dict[str, Any]:
    """Content as a keyed hash and its size, and a preview only when one is configured."""
    data = value if isinstance(value, str | bytes) else repr(value)
    reduced = reduce_content(data, key, preview=preview)
    if preview <= 0:
        reduced.pop("preview", None)
    return reduced


def _bounded(value: Any, key: bytes, depth: int = 0) -> Any:
    """A JSON-safe, bounded copy of an argument value (strings cut, lists and maps capped)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING else _sealed(value, key)
    if isinstance(value, bytes):
        return _sealed(value, key)
    if depth >= _MAX_DEPTH:
        return {"omitted": type(value).__name__}
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= _MAX_ITEMS:
                out["omitted_keys"] = len(value) - _MAX_ITEMS
                break
            name = str(k)[:64]
            if _SECRET_NAME.search(name) and v is not None and not isinstance(v, bool | int):
                out[name] = _sealed(v, key)  # never a preview of a secret
            else:
                out[name] = _bounded(v, key, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        kept = [_bounded(v, key, depth + 1) for v in items[:_MAX_ITEMS]]
        if len(items) > _MAX_ITEMS:
            kept.append({"omitted_items": len(items) - _MAX_ITEMS})
        return kept
    return {"type": type(value).__name__}


def _tool_args(args: Any, key: bytes, preview: int) -> dict[str, Any]:
    if not isinstance(args, Mapping):
        return {}
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name in _CONTENT_FIELDS and isinstance(value, str | bytes):
            out[name] = _sealed(value, key, preview)
        else:
            out[name] = value
    return dict(_bounded(out, key))


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _result_summary(result: Any) -> dict[str, Any]:
    """What a record keeps of an answer: ids, states, counts, sizes and hashes. Never the
    session token of a grant, the text a command printed or the pixels of a screenshot."""
    if result is None:
        return {}
    if isinstance(result, bytes):  # an observer's screenshot
        return {"image": _digest(result)}
    if isinstance(result, list | tuple):
        return {"count": len(result)}
    session = getattr(result, "session", None)  # a grant: the session, never its token
    if session is not None and hasattr(session, "pc_id"):
        return {"session_id": session.id, "pc_id": session.pc_id, "pool": session.pool}
    if hasattr(result, "image_png") and hasattr(result, "text"):  # a computer tool's answer
        out: dict[str, Any] = {"text": _digest(result.text.encode("utf-8", "replace"))}
        if result.image_png is not None:
            out["image"] = _digest(result.image_png)
        data = getattr(result, "data", None)
        if isinstance(data, Mapping):
            scalars = list(data.items())[:_MAX_ITEMS]
            out["data"] = {k: v for k, v in scalars if isinstance(v, bool | int | float)}
        return out
    summary: dict[str, Any] = {"type": type(result).__name__}
    for name in ("id", "name", "state", "pool", "pc_id", "release_reason"):
        value = getattr(result, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            summary[name] = str(value)[:_MAX_STRING]
    return summary


def _outcome(call: GateCall) -> tuple[Outcome, str | None, str | None, int]:
    error = call.error
    if error is None:
        return Outcome.SUCCESS, None, None, 200
    if isinstance(error, CorralError):
        denied = isinstance(error, PermissionDeniedError) or any(
            not d.decision.allowed for d in call.decisions
        )
        outcome = Outcome.DENIED if denied else Outcome.FAILURE
        return outcome, error.code, error.message[:_MAX_STRING], error.status
    if isinstance(error, asyncio.CancelledError):
        return Outcome.FAILURE, "cancelled", "the caller went away", 499
    return Outcome.FAILURE, "internal", type(error).__name__, 500


def _category(call: GateCall) -> Category:
    op = call.operation
    kind = op.kind.value
    if kind == "tool":
        return Category.TOOL
    if op.name in ("acquire", "release"):
        return Category.SESSION
    if kind == "directory" and not op.action.startswith("read"):
        return Category.ACCOUNT
    return Category.API


def _entry(event: AuditEvent) -> tuple[bytes, EntryKeys]:
    """The log entry of `event` (its OCSF record, with a new record id) and what finds it."""
    record_id = secrets.token_hex(16)
    entry = encode(to_ocsf(event, record_id=record_id, product_version=__version__))
    trace_id = event.trace.trace_id if event.trace is not None else None
    return entry, EntryKeys(record_id, trace_id, event.session_id)


class AuditRecorder:
    """The record stage over an `AuditWriter`. `content_key` keys the hashes of content (so a
    record does not confirm a guess of a short secret to whoever reads the log);
    `sponsor_of(agent_id)` names an agent's sponsor (cached here)."""

    def __init__(
        self,
        writer: AuditWriter,
        *,
        content_key: bytes,
        sponsor_of: Callable[[str], str | None] | None = None,
        via: str = "server",
        preview: int = 0,
    ) -> None:
        self.writer = writer
        self.content_key = content_key
        self.sponsor_of = sponsor_of
        self.via = via
        #: characters of typed text, clipboard text and file content a record shows beside
        #: their keyed hash (CORRAL_AUDIT_PREVIEW; default none: typed text is often a password)
        self.preview = max(0, min(preview, 64))
        #: agent id -> (its sponsors, when read): sponsorship changes, so kept 30 s at most
        self._sponsors: dict[str, tuple[str | None, float]] = {}
        #: session id -> (its trace, pc, pool, its holder), from its acquire
        self._sessions: dict[str, tuple[TraceIds, str | None, str | None, str]] = {}
        self._probed = 0.0
        #: refused token requests recorded: at most _REFUSALS_PER_S a second overall (a flood
        #: from many addresses must not fill the log); the rest counted into the next record
        self._refusal_budget = float(_REFUSAL_BURST)
        self._refusal_at = time.monotonic()
        self._refusals_skipped = 0

    async def admit(self, call: GateCall) -> None:
        """Refuse calls while appends fail. At most once a second, try to append a record of
        the outage (since when, how many records failed); once that commits, calls run
        again, and the log itself says where its gap in time was."""
        writer = self.writer
        if writer.healthy:
            return
        now = time.monotonic()
        if now - max(writer.failed_at, self._probed) < 1.0:
            raise AuditUnavailableError()
        self._probed = now
        outage = AuditEvent(
            time_ms=time.time_ns() // 1_000_000,
            category=Category.LIFECYCLE,
            operation="audit_resumed",
            action="record",
            actor=Actor(kind="system", id="corral"),
            outcome=Outcome.SUCCESS,
            duration_ms=round((now - writer.failed_at) * 1000, 3),
            error_message=(writer.failure or "")[:_MAX_STRING],
            result={"failed_records": writer.failed},
            via=self.via,
        )
        await writer.append(*_entry(outage))

    async def record(self, call: GateCall) -> None:
        event = self.event(call)
        await self.writer.append(*_entry(event))
        released = call.operation.name == "release" and event.outcome is Outcome.SUCCESS
        if released and event.session_id is not None:
            self._sessions.pop(event.session_id, None)
            # Release finalizes the session: a checkpoint signed now covers all its records,
            # and the answer names it (size, root), so the caller can ask for proofs later.
            sealed = await self.writer.seal()
            call.receipt = {
                "checkpoint_size": sealed.size,
                "root": base64.b64encode(sealed.root).decode(),
                "checkpoint": sealed.checkpoint,
            }

    async def record_token(self, outcome: TokenOutcome) -> None:
        """A token request's outcome (the token endpoint is a door before any caller: not a
        Gate operation). Raises when the record cannot be written: no token is issued then."""
        issued = outcome.error_code is None
        skipped = 0
        if not issued:
            now = time.monotonic()
            budget = self._refusal_budget + (now - self._refusal_at) * _REFUSALS_PER_S
            self._refusal_budget, self._refusal_at = min(float(_REFUSAL_BURST), budget), now
            if self._refusal_budget < 1:
                self._refusals_skipped += 1
                return
            self._refusal_budget -= 1
            skipped, self._refusals_skipped = self._refusals_skipped, 0
        incoming = current_trace()
        span = secrets.token_hex(8)
        trace = (
            TraceIds(incoming.trace_id, span, incoming.parent_id)
            if incoming is not None
            else TraceIds(secrets.token_hex(16), span)
        )
        # Who asked is known only once its assertion verified: a refusal names the client id
        # it claimed, never as its actor (anyone may claim any id).
        who = outcome.subject if issued else None
        event = AuditEvent(
            time_ms=time.time_ns() // 1_000_000,
            category=Category.AUTHENTICATION,
            operation="token",
            action="token",
            actor=Actor(
                kind=outcome.kind or "unknown",
                id=who[:_MAX_STRING] if who else None,
                sponsor=self._sponsor(who) if issued and outcome.kind == "agent" and who else None,
                address=outcome.address,
                key_thumbprint=outcome.jkt,
            ),
            outcome=Outcome.SUCCESS if issued else Outcome.DENIED,
            error_code=outcome.error_code,
            error_message=(outcome.error_message or "")[:_MAX_STRING] or None,
            status=200 if issued else 401,
            trace=trace,
            args={
                "client_id" if issued else "claimed_client_id": (outcome.client_id or "")[
                    :_MAX_STRING
                ]
                or None,
                "federated": outcome.federated,
                "dpop_bound": outcome.jkt is not None,
            },
            result={"refusals_not_recorded_before": skipped} if skipped else {},
            via=self.via,
        )
        await self.writer.append(*_entry(event))

    def note_lifecycle(self, what: str, fields: Mapping[str, str | None]) -> None:
        """What the pool manager did on its own (boot, reset, quarantine, destroy, a session
        it ended): queued, not waited for (nobody waits for an answer); a failure to write
        shows as the writer's, and the gap in the log's outage record."""
        event = AuditEvent(
            time_ms=time.time_ns() // 1_000_000,
            category=Category.LIFECYCLE,
            operation=what[:64],
            action=what[:64],
            actor=Actor(kind="system", id="corral"),
            outcome=Outcome.FAILURE if what.endswith("_failed") else Outcome.SUCCESS,
            session_id=fields.get("session"),
            pc_id=fields.get("pc"),
            pool=fields.get("pool"),
            trace=TraceIds(secrets.token_hex(16), secrets.token_hex(8)),
            result={"reason": (fields.get("reason") or "")[:_MAX_STRING] or None},
            via=self.via,
        )
        self._queue(event)

    def note_security_out(self, event: CorralEvent, receivers: int) -> None:
        """A CAEP event Corral emitted (queued as SETs for `receivers` receivers)."""
        self._security(
            "ssf_out",
            event.type,
            event.principal,
            event.session_id,
            {"receivers": receivers, "event": event.type.rsplit("/", 1)[-1]},
        )

    def note_security_in(self, outcome: SetOutcome) -> None:
        """A verified SET Corral received, and what it did about it."""
        self._security(
            "ssf_in",
            outcome.event_type,
            outcome.principal,
            None,
            {
                "issuer": outcome.issuer[:_MAX_STRING],
                "jti": outcome.jti[:_MAX_STRING],
                "event": outcome.event_type.rsplit("/", 1)[-1][:64],
                "done": outcome.action[:_MAX_STRING],
            },
        )

    def _security(
        self,
        operation: str,
        event_type: str,
        principal: str | None,
        session_id: str | None,
        result: dict[str, Any],
    ) -> None:
        event = AuditEvent(
            time_ms=time.time_ns() // 1_000_000,
            category=Category.SECURITY,
            operation=operation,
            action=event_type[:_MAX_STRING],
            actor=Actor(kind="system", id="corral"),
            outcome=Outcome.SUCCESS,
            session_id=session_id,
            target=principal,
            trace=TraceIds(secrets.token_hex(16), secrets.token_hex(8)),
            result=result,
            via=self.via,
        )
        self._queue(event)

    def _queue(self, event: AuditEvent) -> None:
        """Queue a record nobody waits for (its failure is the writer's to report)."""
        with contextlib.suppress(AuditUnavailableError):  # the writer is not running
            self.writer.submit(*_entry(event))

    def _sponsor(self, caller_id: str) -> str | None:
        if self.sponsor_of is None:
            return None
        now = time.monotonic()
        known = self._sponsors.get(caller_id)
        if known is not None and now - known[1] < _SPONSOR_TTL_S:
            return known[0]
        if len(self._sponsors) >= _MAX_SESSIONS:
            self._sponsors.clear()
        try:
            sponsor = self.sponsor_of(caller_id)
        except CorralError:
            return None
        self._sponsors[caller_id] = (sponsor, now)
        return sponsor

    def event(self, call: GateCall) -> AuditEvent:
        """The record of `call` (pure but for the sponsor and session caches)."""
        caller = call.caller
        category = _category(call)
        outcome, code, message, status = _outcome(call)
        key = self.content_key
        session_id: str | None = None
        pc_id: str | None = None
        pool: str | None = None
        target_kind = call.operation.target
        if target_kind == "session":
            session_id = call.target
        elif target_kind == "pool":
            pool = call.target
        result = _result_summary(call.result) if call.error is None else {}
        if call.operation.name == "acquire" and "session_id" in result:
            session_id, pc_id, pool = result["session_id"], result["pc_id"], result["pool"]
        known = self._sessions.get(session_id) if session_id is not None else None
        if known is not None:
            pc_id, pool = pc_id or known[1], pool or known[2]
        # A session's trace is continued only for its holder (or the server acting for it):
        # another caller's calls on it do not join the holder's trace.
        holder = (
            known is not None
            and caller is not None
            and (
                caller.id == known[3]
                or caller.kind.value == "system"
                or (call.on_behalf_of is not None and call.on_behalf_of.id == known[3])
            )
        )
        span = secrets.token_hex(8)
        if call.trace is not None:
            trace = TraceIds(call.trace.trace_id, span, call.trace.parent_id)
        elif known is not None and holder:
            trace = TraceIds(known[0].trace_id, span, known[0].span_id)
        else:
            trace = TraceIds(secrets.token_hex(16), span)
        acquired = call.operation.name == "acquire" and outcome is Outcome.SUCCESS
        if acquired and session_id is not None:
            if len(self._sessions) >= _MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session_id] = (trace, pc_id, pool, caller.id if caller else "")
        actor = Actor(
            kind=caller.kind.value if caller is not None else "anonymous",
            id=caller.id if caller is not None else None,
            sponsor=self._sponsor(caller.id) if caller is not None and caller.is_agent else None,
            on_behalf_of=call.on_behalf_of.id if call.on_behalf_of is not None else None,
            address=caller.address if caller is not None else None,
            key_thumbprint=caller.jkt if caller is not None else None,
            session_id=caller.session_id if caller is not None else None,
        )
        if category is Category.TOOL:
            args = _tool_args(call.args, key, self.preview)
        else:
            args = _bounded(call.args, key) if call.args is not None else {}
            args = args if isinstance(args, dict) else {"value": args}
        decisions = tuple(
            DecisionNote(
                d.action,
                d.resource[:_MAX_STRING],
                d.decision.allowed,
                d.decision.policies[:_MAX_ITEMS],
                d.decision.reason[:_MAX_STRING],
            )
            for d in call.decisions  # every one: to_ocsf keeps the first and last 50
        )
        return AuditEvent(
            time_ms=time.time_ns() // 1_000_000,
            category=category,
            operation=call.operation.name,
            action=call.operation.action,
            actor=actor,
            outcome=outcome,
            duration_ms=round((time.monotonic() - call.started) * 1000, 3),
            error_code=code,
            error_message=message,
            status=status,
            session_id=session_id,
            pc_id=pc_id,
            pool=pool,
            target=call.target if target_kind not in ("session", "pool") else None,
            trace=trace,
            decisions=decisions,
            args=args,
            result=result,
            via=self.via,
        )
