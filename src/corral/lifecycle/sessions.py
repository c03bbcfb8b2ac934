"""The session operations the Gate calls: acquire (answered with its grant), release, the
computer tools, a human's peek, and reading sessions.

Per-session ordering: one action at a time per session, in arrival order (the session's lock is
taken before any await). The truth lives in the store; this object holds only caches (per-session
locks, PC connections and coordinate spaces) that a restart may lose. PCs come from the pool
manager (`manager.py`), which this service wakes when demand changes.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from corral.access import Controls, Decision
from corral.access.service import PolicyService, Target
from corral.aio import wait_event
from corral.domain.access import Caller, CallerKind
from corral.domain.models import Pool, Session, SessionState
from corral.domain.policy import ApprovalState
from corral.errors import (
    ApprovalPendingError,
    ConflictError,
    NotFoundError,
    PCMisbehavingError,
    PCUnavailableError,
    SessionGoneError,
    UnavailableError,
)
from corral.identity.caep import EventSink
from corral.identity.evaluation import AccessEvaluator
from corral.identity.event_emitter import release_event
from corral.lifecycle._common import gone, require_caller, utcnow
from corral.lifecycle.manager import TICK_S, PoolManager
from corral.lifecycle.tools import ScreenSpace, ToolResult, parse_args
from corral.runtime.client import PcdClient
from corral.runtime.driver import PCDriver
from corral.store import Store

__all__ = ["GrantIssuer", "SessionGrant", "SessionInfo", "SessionService", "visible_to"]

SessionInfo = Session
DEFAULT_WAIT_S = 10.0
MAX_WAIT_S = 120.0
MAX_APPROVAL_WAIT_S = 300.0  # the longest a tool call waits for a sponsor
#: how stale a session's stored last activity may get before an action writes it again: the
#: manager's tick, which bounds how exactly idle eviction can happen in any case
ACTIVITY_GRANULARITY = timedelta(seconds=TICK_S)
ACTION_THREADS = 512  # actions in flight at once, across all sessions


def visible_to(session: Session, principal: Caller | None) -> bool:
    """The rule before policies (issue 5), kept for callers outside the lifecycle: a session
    token only its own session; an admin every session; anyone else only the sessions it
    acquired. The session service itself asks `PolicyService.authorize` (`read_session`)."""
    if principal is None:
        return False
    if principal.session_id is not None and principal.session_id != session.id:
        return False
    if principal.is_admin and principal.session_id is None:
        return True
    return session.owner is not None and session.owner == principal.id


#: Issues the session-token fields for (caller, session id): `AuthService.session_grant`.
GrantIssuer = Callable[[Caller, str], dict[str, Any]]


@dataclass(frozen=True)
class SessionGrant:
    """A session as its holder gets it: the session, its controls in force, its per-session
    MCP URL and (with authentication) a token for that URL only, bound to the caller's key.
    Acquire answers it whole, so no adapter composes acquire and token minting."""

    session: Session
    controls: Controls
    mcp_url: str
    #: `session_token`, `session_token_type`, `session_token_expires_in`; empty without auth
    #: or when only describing the session
    token: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Live:
    """What the service keeps in memory for one active session."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    space: ScreenSpace = field(default_factory=ScreenSpace)
    client: PcdClient | None = None
    #: the session's PC, known after its first action (a session never changes PC): later
    #: actions take the PC's lane first and then decide and act in one thread hop
    pc_id: str | None = None


class SessionService:
    def __init__(
        self,
        store: Store,
        manager: PoolManager,
        policy: PolicyService,
        *,
        events: EventSink | None = None,
        approval_wait_s: float = 0.0,
    ) -> None:
        self.store = store
        self.manager = manager
        self.policy = policy  # authorize(): the one enforcement point (issue 5)
        #: a call that waited is checked again against the directory and revocations
        self.access = AccessEvaluator(store)
        self.events = events  # CAEP session-revoked when an admin ends a session
        #: how long a tool call held for a sponsor's approval waits for the answer before it
        #: answers "pending" (0: at once); REST callers may ask for their own (Prefer: wait=N)
        self.approval_wait_s = approval_wait_s
        self._live: dict[str, _Live] = {}
        # Own threads: a 10-minute run_command must never starve acquires, releases or the
        # pool manager of threads (asyncio's default pool has only a handful).
        self._act_pool = ThreadPoolExecutor(ACTION_THREADS, thread_name_prefix="corral-act")
        self.base_url = "http://127.0.0.1:8420"
        self._issue_grant: GrantIssuer | None = None
        manager.forget_session = self.forget

    @property
    def runtime(self) -> PCDriver:
        return self.manager.runtime

    def configure_grants(self, base_url: str, issue: GrantIssuer | None) -> None:
        """Where sessions' MCP URLs live, and who mints their tokens (the app wires this)."""
        self.base_url = base_url.rstrip("/")
        self._issue_grant = issue

    def _grant(self, session: Session, caller: Caller | None, *, token: bool) -> SessionGrant:
        minted: dict[str, Any] = {}
        if token and self._issue_grant is not None and caller is not None:
            minted = self._issue_grant(caller, session.id)
        return SessionGrant(
            session,
            self.policy.controls(session.id),
            f"{self.base_url}/sessions/{session.id}/mcp",
            minted,
        )

    # -- authorization: every check below is PolicyService.authorize (issue 5) ----------------
    def _require(self, principal: Caller | None, action: str, target: Target, **kw: Any) -> Any:
        """Policy says yes, or this raises (403 with the reason; 404 via `deny`)."""
        return self.policy.require(require_caller(principal), action, target, **kw)

    def _sees(self, session: Session, principal: Caller | None) -> bool:
        """May `principal` read `session`? Others' sessions answer as if they did not exist."""
        if principal is None:
            return False
        return self.policy.authorize(
            principal, "read_session", self.policy.session(session)
        ).allowed

    def _may_act(
        self, session: Session, principal: Caller | None, tool: str, args: dict[str, Any] | None
    ) -> None:
        if not self._sees(session, principal):
            raise gone(session.id)
        self._require(
            principal,
            tool,
            self.policy.session(session, pc=True),
            args=args,
            compliance=self.manager.compliance(session.pc_id),
        )

    # -- sessions ----------------------------------------------------------------------------
    async def acquire(
        self,
        pool: str,
        *,
        idempotency_key: str | None = None,
        request: dict[str, Any] | None = None,
        wait_s: float | None = None,
        principal: Caller | None,
    ) -> SessionInfo:
        """Bind a READY PC of `pool` to a new session owned by `principal`, waiting up to
        `wait_s` for one. The session's controls are fixed here: those of the policies that
        allowed it plus any the request asks for (`request["controls"]`)."""
        caller = require_caller(principal)
        owner = caller.id
        requested = Controls.from_json((request or {}).get("controls"))

        def read_and_decide() -> tuple[Pool, Decision]:
            spec = self.store.get_pool(pool)  # unknown pool: 404 (a typo reads as one)
            return spec, self._require(principal, "acquire", self.policy.pool(pool, spec))

        spec, allowed = await asyncio.to_thread(read_and_decide)
        controls = self.policy.acquire_controls(allowed, requested)
        if spec.deleting:
            raise ConflictError(f"pool {pool!r} is being deleted", hint="use another pool")
        wait = DEFAULT_WAIT_S if wait_s is None else max(0.0, min(wait_s, MAX_WAIT_S))
        # The owner is part of the request: another caller's retry key never returns our PC.
        body = json.dumps({"pool": pool, "request": request or {}, "owner": owner}, sort_keys=True)
        request_hash = hashlib.sha256(body.encode()).hexdigest()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self.manager.demand(pool):
            session = await self._acquire_loop(
                pool,
                spec,
                idempotency_key,
                request_hash,
                wait,
                deadline,
                owner,
                controls,
                limit_owner=caller.kind is CallerKind.AGENT,
            )
        # Recorded with the session already (one transaction); this reads back the controls in
        # force (a replayed acquire keeps its first) into the policy service's cache.
        await asyncio.to_thread(self.policy.controls, session.id)
        return session

    async def _acquire_loop(
        self,
        pool: str,
        spec: Pool,
        idempotency_key: str | None,
        request_hash: str,
        wait: float,
        deadline: float,
        owner: str,
        controls: Controls,
        *,
        limit_owner: bool,
    ) -> SessionInfo:
        """Claim a PC until the deadline. `limit_owner`: an agent is held to the pool's
        `max_sessions_per_agent`, checked in the store's claim transaction (SessionLimitError,
        at once: waiting would not free one of its own sessions)."""
        loop = asyncio.get_running_loop()
        while True:
            self.manager.changed.clear()
            now = utcnow()
            got = await asyncio.to_thread(
                self.store.acquire,
                pool,
                session_id="ses-" + secrets.token_hex(8),
                expires_at=now + timedelta(seconds=spec.spec.max_lifetime_s),
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                now=now,
                owner=owner,
                controls=controls.to_json() if controls.any else None,
                limit_owner=limit_owner,
            )
            if got is not None:
                session, created = got
                if created:
                    self.manager.wake()  # replenish the pool
                return session
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UnavailableError(
                    f"no PC of pool {pool!r} became free within {wait:g} s",
                    hint="retry later, or raise the pool's warm/max",
                    retry_after_s=5,
                )
            self.manager.wake()
            await wait_event(self.manager.changed, min(remaining, 0.5))

    async def acquire_grant(
        self,
        pool: str,
        *,
        idempotency_key: str | None = None,
        request: dict[str, Any] | None = None,
        wait_s: float | None = None,
        principal: Caller | None,
    ) -> SessionGrant:
        """`acquire`, answered with the session's grant: its controls, its MCP URL and a token
        for that URL bound to the caller's own key (a bearer caller, admitted only on a pool
        that allows bearer tokens, gets a bearer one)."""
        session = await self.acquire(
            pool,
            idempotency_key=idempotency_key,
            request=request,
            wait_s=wait_s,
            principal=principal,
        )
        # On the loop, as the adapters did: the controls were just read into the policy
        # service's cache, and signing a token is CPU only.
        return self._grant(session, principal, token=True)

    def grant(self, session_id: str, *, principal: Caller | None) -> SessionGrant:
        """A fresh grant (a new token) for an active session `principal` may read."""
        return self._grant(self.get_session(session_id, principal=principal), principal, token=True)

    def describe(self, session_id: str, *, principal: Caller | None) -> SessionGrant:
        """The active session with its controls and MCP URL, no token."""
        return self._grant(
            self.get_session(session_id, principal=principal), principal, token=False
        )

    def get_session(self, session_id: str, *, principal: Caller | None) -> SessionInfo:
        """The active session `session_id` if `principal` may see it; SessionGoneError once
        it is released, and for someone else's session (existence is not revealed)."""
        session = self._active_session(session_id, principal)
        if not self._sees(session, principal):
            raise gone(session_id)
        return session

    def _active_session(self, session_id: str, principal: Caller | None) -> SessionInfo:
        """The session if it is active. A released one says why only to whoever may read it
        (`read_session`); anyone else learns no more than of an unknown id."""
        try:
            session = self.store.get_session(session_id)
        except NotFoundError:
            raise gone(session_id) from None
        if session.state != SessionState.ACTIVE:
            if not self._sees(session, principal):
                raise gone(session_id)
            raise SessionGoneError(
                f"session {session_id} was released ({session.release_reason})",
                hint="acquire a new PC",
            )
        return session

    def list_sessions(
        self, active_only: bool = True, *, principal: Caller | None
    ) -> list[SessionInfo]:
        """The sessions `principal` may read (`read_session`): its own, its agents' for a
        sponsor, every one for an admin, under the shipped policies."""
        caller = require_caller(principal)
        found = self.store.list_sessions(active_only=active_only)
        return [s for s in found if self._sees(s, caller)]

    async def release(
        self,
        session_id: str,
        reason: str = "released",
        *,
        principal: Caller | None,
        on_behalf_of: Caller | None = None,
    ) -> SessionInfo:
        """End the session now; the PC is reset (or replaced) in the background.

        The record says who ended it: `principal`, or `on_behalf_of` when the server acts for
        a caller who is gone (the gateway, when the MCP connection that acquired the session
        closes: authorized as the server, recorded as released by that agent)."""
        try:
            known = await asyncio.to_thread(self.store.get_session, session_id)
        except NotFoundError:
            raise gone(session_id) from None
        await asyncio.to_thread(
            lambda: self._require(
                principal, "release", self.policy.session(known), deny=lambda _: gone(session_id)
            )
        )
        by = on_behalf_of or require_caller(principal)
        released = await asyncio.to_thread(
            self.store.release_session, session_id, reason=reason, now=utcnow(), by=by.id
        )
        self.forget(session_id)
        self.manager.wake()
        if released is not None:
            event = release_event(released, by, reason)
            if event is not None and self.events is not None:
                await asyncio.to_thread(self.events.emit, event)
            return released
        return await asyncio.to_thread(self.store.get_session, session_id)

    # -- actions -----------------------------------------------------------------------------
    def forget(self, session_id: str) -> None:
        """Drop what memory holds for a session that ended (by any path)."""
        live = self._live.pop(session_id, None)
        if live is not None and live.client is not None and not live.lock.locked():
            live.client.close()

    async def act(
        self,
        session_id: str,
        tool: str,
        args: dict[str, Any] | None,
        *,
        principal: Caller | None,
        approval_wait_s: float | None = None,
    ) -> ToolResult:
        """Run one computer tool on the session's PC; one at a time per session, in order.

        A call a policy holds for a sponsor's approval waits up to `approval_wait_s` (default
        the server's) for the answer, outside the session's lock, then runs once approved or
        is refused; still unanswered, it raises ApprovalPendingError with the approval's id.
        A call that waited (for the answer, or for the session's lock) is checked again
        against the directory and revocations first: an identity disabled, revoked or raised
        to high risk meanwhile does not get to run it."""
        wait = self.approval_wait_s if approval_wait_s is None else approval_wait_s
        wait = max(0.0, min(wait, MAX_APPROVAL_WAIT_S))
        try:
            return await self._act(session_id, tool, args, principal=principal)
        except ApprovalPendingError as pending:
            if wait <= 0 or not pending.approval_id:
                raise
            answer = await self.policy.wait_for_approval(pending.approval_id, wait)
            if answer.state is ApprovalState.PENDING:
                raise
        return await self._act(session_id, tool, args, principal=principal, waited=True)

    async def _act(
        self,
        session_id: str,
        tool: str,
        args: dict[str, Any] | None,
        *,
        principal: Caller | None,
        waited: bool = False,
    ) -> ToolResult:
        caller = require_caller(principal)
        spec, parsed = parse_args(tool, args)
        live = self._live.setdefault(session_id, _Live())
        waited = waited or live.lock.locked()  # queued behind another action of the session

        def admit() -> SessionInfo:
            # 1. A call that waited is checked again, as authentication checked it when it
            #    arrived: disabled, revoked or at high risk meanwhile, it does not run.
            if waited:
                self.access.recheck(caller)
            try:
                session = self._active_session(session_id, principal)
            except SessionGoneError:
                self._live.pop(session_id, None)
                raise
            # 2. Who may act, and this action with these arguments: policy. Someone who may
            #    not even read the session gets "gone" (its existence is not revealed); anyone
            #    else a refusal with the reason (a read-only session, a forbidden program...).
            self._may_act(session, principal, tool, args)
            # 3. Activity, written only when the stored mark is older than the manager's tick
            #    (eviction cannot be more exact than that anyway): a burst of actions writes
            #    about four times a second, not twice per action.
            now = utcnow()
            if now - session.last_activity >= ACTIVITY_GRANULARITY:
                self.store.touch_session(session_id, now)
            return session

        def run(client: PcdClient) -> ToolResult:
            """The action, then (on the same thread) activity again if it took long enough
            for the mark written before it to be stale: the idle clock starts when it ends."""
            start = time.monotonic()
            try:
                return spec.run(client, live.space, parsed)
            finally:
                if time.monotonic() - start >= ACTIVITY_GRANULARITY.total_seconds():
                    self.store.touch_session(session_id, utcnow())

        async with live.lock:  # taken before any await: requests keep their arrival order
            admitted = False
            if live.pc_id is None:  # the first action: decide alone to learn the PC
                live.pc_id = (await asyncio.to_thread(admit)).pc_id
                admitted = True
            pc_id = live.pc_id

            def admit_and_run() -> ToolResult:
                """One thread hop: decide and record (unless just done), then act."""
                if not admitted and admit().pc_id != pc_id:
                    raise ConflictError(f"session {session_id} changed PC", hint="try again")
                if live.client is None:
                    live.client = self.runtime.client(pc_id, timeout=60)
                return run(live.client)

            loop = asyncio.get_running_loop()
            try:
                async with self.manager.lane(pc_id):
                    # in this context (as asyncio.to_thread would): the decisions taken in
                    # admit() belong to the Gate call being served (corral.access.decisions)
                    context = contextvars.copy_context()
                    job = loop.run_in_executor(self._act_pool, context.run, admit_and_run)
                    try:
                        result: ToolResult = await asyncio.shield(job)
                    except asyncio.CancelledError:
                        # The caller gave up, but the PC is still doing the action on this
                        # session's connection: hold the lock (and the lane) until it is done,
                        # so nothing overlaps it.
                        await asyncio.wait([job])
                        raise
            except PCMisbehavingError as err:
                await self.manager.quarantine_misbehaving(pc_id, err)
                raise
            except PCUnavailableError:
                self.manager.wake()  # the manager's health check will deal with the PC
                raise
        return result

    async def peek_screenshot(self, session_id: str, *, principal: Caller | None) -> bytes:
        """A screenshot for a human observer: it neither changes the agent's coordinate space
        nor counts as activity, and it does not queue behind the agent's actions."""
        session = await asyncio.to_thread(self._active_session, session_id, principal)
        await asyncio.to_thread(
            lambda: self._require(
                principal, "observe", self.policy.session(session), deny=lambda _: gone(session_id)
            )
        )

        def grab() -> bytes:
            with self.runtime.client(session.pc_id, timeout=10) as client:
                return client.screenshot().png

        loop = asyncio.get_running_loop()
        try:
            async with self.manager.lane(session.pc_id):
                return await loop.run_in_executor(self._act_pool, grab)
        except PCMisbehavingError as err:
            await self.manager.quarantine_misbehaving(session.pc_id, err)
            raise

    def close(self) -> None:
        """Close every PC connection and stop taking actions (shutdown)."""
        for live in self._live.values():
            if live.client is not None:
                live.client.close()
        self._live.clear()
        self._act_pool.shutdown(wait=False, cancel_futures=True)
