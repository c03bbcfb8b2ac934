"""The control plane's one service layer (the Gate): pools, sessions and actions.

Every adapter (REST, MCP, CLI) calls this and nothing below it, so identity, policy, DLP and
audit can later plug in at one place. The truth lives in the store and the runtime; this object
holds only caches (per-session locks and coordinate spaces) that a restart may lose.

Lifecycle: the pool manager (`run`) keeps each pool's `warm` PCs booted and healthy, never more
than `max`; an acquire binds one READY PC to a new session atomically in the store; a release
answers at once and the manager resets the PC (or replaces it if it is unhealthy) in the
background; idle and over-age sessions are evicted the same way; a PC failing its health check
is quarantined (kept for inspection, never lent) and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from corral.access import Compliance, Controls, Decision
from corral.access.service import PolicyService, Target
from corral.domain.access import SYSTEM, Caller, CallerKind
from corral.domain.models import (
    PC,
    PCState,
    Pool,
    PoolSpec,
    Session,
    SessionState,
    validate_pool_spec,
)
from corral.domain.policy import ApprovalState
from corral.errors import (
    ApprovalPendingError,
    ConflictError,
    CorralError,
    NotFoundError,
    PCMisbehavingError,
    PCUnavailableError,
    PermissionDeniedError,
    SessionGoneError,
    UnavailableError,
)
from corral.identity.caep import EventSink
from corral.identity.evaluation import AccessEvaluator
from corral.identity.event_emitter import release_event
from corral.lifecycle.tools import ScreenSpace, ToolResult, parse_args
from corral.runtime.client import PcdClient
from corral.runtime.driver import Health, PCDriver
from corral.store import Store

__all__ = ["ControlPlane", "GrantIssuer", "PoolStatus", "SessionGrant", "SessionInfo", "visible_to"]

log = logging.getLogger("corral.control")

SessionInfo = Session
DEFAULT_WAIT_S = 10.0
MAX_WAIT_S = 120.0
MAX_APPROVAL_WAIT_S = 300.0  # the longest a tool call waits for a sponsor
IMAGE_DIGEST_TTL_S = 5.0  # how stale the "image current" compliance fact may be
HEALTH_EVERY_S = 5.0
TICK_S = 0.25
#: how stale a session's stored last activity may get before an action writes it again: the
#: manager's tick, which bounds how exactly idle eviction can happen in any case
ACTIVITY_GRANULARITY = timedelta(seconds=TICK_S)
ACTION_THREADS = 512  # actions in flight at once, across all sessions
RUNTIME_THREADS = 8  # boots, resets and destroys in flight at once
HEALTH_THREADS = 4  # health checks in flight at once, on their own threads (see __init__)
PC_LANE = 4  # actions and peeks of one PC in flight at once on the action threads
QUARANTINE_KEEP = 1  # quarantined PCs kept per pool for inspection; older ones are destroyed
FAILS_TO_QUARANTINE = 2  # failed health checks in a row before a live PC is quarantined


def utcnow() -> datetime:
    return datetime.now(UTC)


def _caller(principal: Caller | None) -> Caller:
    """Fail closed: an adapter that forgot to pass who is calling gets a refusal, not a pass."""
    if principal is None:
        raise PermissionDeniedError("no authenticated principal for this request")
    return principal


def visible_to(session: Session, principal: Caller | None) -> bool:
    """The rule before policies (issue 5), kept for callers outside the ControlPlane: a session
    token only its own session; an admin every session; anyone else only the sessions it
    acquired. The ControlPlane itself asks `PolicyService.authorize` (`read_session`)."""
    if principal is None:
        return False
    if principal.session_id is not None and principal.session_id != session.id:
        return False
    if principal.is_admin and principal.session_id is None:
        return True
    return session.owner is not None and session.owner == principal.id


def _gone(session_id: str) -> SessionGoneError:
    # The same answer for "unknown" and "someone else's": existence is not revealed.
    return SessionGoneError(f"no session {session_id!r}")


@dataclass(frozen=True)
class PoolStatus:
    spec: PoolSpec
    counts: dict[str, int]
    deleting: bool

    def __getattr__(self, name: str) -> Any:  # .name, .image, .warm ... from the spec
        return getattr(self.spec, name)

    def to_json(self) -> dict[str, Any]:
        return {**self.spec.__dict__, "counts": self.counts, "deleting": self.deleting}


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
    """What the control plane keeps in memory for one active session."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    space: ScreenSpace = field(default_factory=ScreenSpace)
    client: PcdClient | None = None


class ControlPlane:
    def __init__(
        self,
        store: Store,
        runtime: PCDriver,
        *,
        events: EventSink | None = None,
        approval_wait_s: float = 0.0,
    ) -> None:
        self.store = store
        self.runtime = runtime
        #: how long a tool call held for a sponsor's approval waits for the answer before it
        #: answers "pending" (0: at once); REST callers may ask for their own (Prefer: wait=N)
        self.approval_wait_s = approval_wait_s
        self.events = events  # CAEP session-revoked when an admin or eviction ends a session
        self.policy = PolicyService(store)  # authorize(): the one enforcement point (issue 5)
        #: a call that waited is checked again against the directory and revocations
        self.access = AccessEvaluator(store)
        self._live: dict[str, _Live] = {}
        self._booting: dict[str, int] = {}  # pool -> PCs being booted by this process
        # A booted PC's store row and the end of its `_booting` count change together, so a
        # pool's status never counts one PC twice (as READY and still booting).
        self._boot_count_lock = threading.Lock()
        self._changed = asyncio.Event()  # a PC became ready / a release happened
        self._wake = asyncio.Event()  # the manager should look again now
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # PCs a reset or destroy is working on
        # PCs with a health check queued or running. Apart from _busy: a check waiting for a
        # health thread (all held by slow PCs, say) never delays this PC's reset; a check that
        # a reset or destroy overtook (its era moved on) is ignored.
        self._checking: set[str] = set()
        self._era: dict[str, int] = {}  # PC -> resets and destroys begun
        self._waiting: dict[str, int] = {}  # pool -> acquires waiting for a PC
        self._failures: dict[str, int] = {}  # PC -> health checks failed in a row
        self._pc_images: dict[str, tuple[str, str]] = {}  # PC -> (image, digest it booted)
        self._image_digests: dict[str, tuple[str, float]] = {}  # image -> (digest, read at)
        self._stopping = False
        # Own thread pools: a 10-minute run_command must never starve acquires, releases or
        # the pool manager of threads (asyncio's default pool has only a handful).
        self._act_pool = ThreadPoolExecutor(ACTION_THREADS, thread_name_prefix="corral-act")
        self._rt_pool = ThreadPoolExecutor(RUNTIME_THREADS, thread_name_prefix="corral-rt")
        # Health checks never queue behind boots and resets, nor those behind them: a PC that
        # holds its check to the deadline delays only other checks, never a boot or reset.
        self._health_pool = ThreadPoolExecutor(HEALTH_THREADS, thread_name_prefix="corral-hc")
        # One PC gets at most PC_LANE of the action threads (an observer's peeks included),
        # however slowly it answers.
        self._lanes: dict[str, asyncio.Semaphore] = {}
        self._last_health = 0.0
        self.base_url = "http://127.0.0.1:8420"
        self._issue_grant: GrantIssuer | None = None

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

    async def _runtime(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking runtime call on the runtime's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._rt_pool, functools.partial(fn, *args))

    def _lane(self, pc_id: str) -> asyncio.Semaphore:
        lane = self._lanes.get(pc_id)
        if lane is None:
            lane = self._lanes[pc_id] = asyncio.Semaphore(PC_LANE)
        return lane

    async def _quarantine_misbehaving(self, pc_id: str, err: PCMisbehavingError) -> None:
        """A PC whose daemon broke the protocol is trusted no more: quarantined at once (kept
        for inspection, never lent again), the session it serves ended with reason
        `pc_misbehaving` (its owner gets a session-revoked event) and the event logged.

        The state moves by compare-and-set from what the row says now, so a PC acquired or
        released meanwhile is caught with the session it serves at that moment."""
        log.warning("PC %s misbehaved (%s): quarantined", pc_id, err.message)
        self._failures.pop(pc_id, None)
        for _ in range(3):
            try:
                pc = await asyncio.to_thread(self.store.get_pc, pc_id)
            except NotFoundError:
                return
            if pc.state in (PCState.QUARANTINED, PCState.DESTROYING):
                return
            if await asyncio.to_thread(
                self.store.set_pc_state,
                pc_id,
                PCState.QUARANTINED,
                expect=pc.state,
                detail=f"misbehaving: {err.message}",
            ):
                break
        else:
            return
        if pc.session_id is not None:
            released = await asyncio.to_thread(
                self.store.release_session, pc.session_id, reason="pc_misbehaving", now=utcnow()
            )
            self._forget(pc.session_id)
            if released is not None and self.events is not None:
                event = release_event(released, SYSTEM, "pc_misbehaving")
                if event is not None:
                    await asyncio.to_thread(self.events.emit, event)
        self._wake.set()

    # -- authorization: every check below is PolicyService.authorize (issue 5) ----------------
    def _require(self, principal: Caller | None, action: str, target: Target, **kw: Any) -> Any:
        """Policy says yes, or this raises (403 with the reason; 404 via `deny`)."""
        return self.policy.require(_caller(principal), action, target, **kw)

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
            raise _gone(session.id)
        self._require(
            principal,
            tool,
            self.policy.session(session, pc=True),
            args=args,
            compliance=self._compliance(session.pc_id),
        )

    def _compliance(self, pc_id: str) -> Compliance:
        """What is known about a PC's state: health checks passing; booted from the image's
        current build (`image_current`: an image rebuilt since shows as not current until the
        PC is replaced); no sensor yet (issue 7)."""
        return Compliance(
            healthy=self._failures.get(pc_id, 0) == 0,
            sensor_running=False,
            image_current=self._image_current(pc_id),
        )

    def _image_current(self, pc_id: str) -> bool:
        """The PC's image digest (fixed for its life, cached) against the image's current one
        (re-read at most every few seconds). Unknown either way: not current (fail closed)."""
        now = time.monotonic()
        try:
            booted = self._pc_images.get(pc_id)
            if booted is None:
                info = self.runtime.info(pc_id)
                booted = self._pc_images[pc_id] = (info.image, info.image_digest)
            image, digest = booted
            known = self._image_digests.get(image)
            if known is None or now - known[1] > IMAGE_DIGEST_TTL_S:
                known = self._image_digests[image] = (self.runtime.images.get(image).digest, now)
        except Exception:  # no record, no image, a fake runtime: not known to be current
            return False
        return digest == known[0]

    # -- startup -----------------------------------------------------------------------------
    async def start(self, default_pools: list[PoolSpec] | None = None) -> None:
        """Migrate the store, reconcile it with the runtime (after a crash or kill -9), and
        create the default pools that do not exist yet."""
        await asyncio.to_thread(self.store.migrate)
        await asyncio.to_thread(self.policy.start)  # the shipped policies, on first start
        await asyncio.to_thread(self._recover)
        existing = {p.name for p in await asyncio.to_thread(self.store.list_pools)}
        for spec in default_pools or []:
            if spec.name not in existing:
                await self.create_pool(spec, principal=SYSTEM)

    def _recover(self) -> None:
        self.runtime.reconcile(boot_grace_s=0)
        alive = {pc.id: pc for pc in self.runtime.list_pcs()}
        known = set()
        for pc in self.store.list_pcs():
            known.add(pc.id)
            runtime_pc = alive.get(pc.id)
            if (
                runtime_pc is None
                or runtime_pc.status != "ready"
                or pc.state in (PCState.BOOTING, PCState.DESTROYING)
            ):
                log.warning("recovery: PC %s is gone or half-made; removing it", pc.id)
                if pc.session_id:
                    self.store.release_session(
                        pc.session_id, reason="pc_lost", now=utcnow(), by=SYSTEM.id
                    )
                with contextlib.suppress(CorralError):
                    self.runtime.destroy(pc.id)
                self.store.delete_pc(pc.id)
        for pc_id in set(alive) - known:  # booted by a process that died before recording it
            log.warning("recovery: destroying orphan PC %s", pc_id)
            with contextlib.suppress(CorralError):
                self.runtime.destroy(pc_id)
        for session in self.store.list_sessions(active_only=True):
            try:
                pc = self.store.get_pc(session.pc_id)
            except NotFoundError:
                self.store.release_session(session.id, reason="pc_lost", now=utcnow(), by=SYSTEM.id)
                continue
            if pc.state != PCState.IN_USE or pc.session_id != session.id:
                self.store.release_session(session.id, reason="pc_lost", now=utcnow(), by=SYSTEM.id)

    # -- pools -------------------------------------------------------------------------------
    async def create_pool(self, spec: PoolSpec, *, principal: Caller | None) -> PoolStatus:
        await asyncio.to_thread(
            self._require, principal, "create_pool", self.policy.pool(spec.name)
        )
        validate_pool_spec(spec)
        await self._runtime(self.runtime.images.get, spec.image)
        pool = await asyncio.to_thread(self.store.create_pool, spec)
        self._wake.set()
        return self._status(pool)

    def _status(self, pool: Pool) -> PoolStatus:
        with self._boot_count_lock:
            counts = {str(k): v for k, v in self.store.pc_counts(pool.name).items()}
            booting = self._booting.get(pool.name, 0)
        counts[PCState.BOOTING.value] = counts.get(PCState.BOOTING.value, 0) + booting
        return PoolStatus(pool.spec, counts, pool.deleting)

    def list_pools(self, *, principal: Caller | None) -> list[PoolStatus]:
        """The pools `principal` may read (`read_pool`)."""
        caller = _caller(principal)
        return [
            self._status(p)
            for p in self.store.list_pools()
            if self.policy.authorize(caller, "read_pool", self.policy.pool(p.name)).allowed
        ]

    def get_pool(self, name: str, *, principal: Caller | None) -> PoolStatus:
        self._require(principal, "read_pool", self.policy.pool(name))
        return self._status(self.store.get_pool(name))

    def list_pool_pcs(self, name: str, *, principal: Caller | None) -> list[PC]:
        """The PCs of pool `name` and their states (quarantined ones included, for inspection)."""
        self._require(principal, "inspect_pool", self.policy.pool(name))
        self.store.get_pool(name)
        return self.store.list_pcs(name)

    async def delete_pool(self, name: str, *, principal: Caller | None) -> PoolStatus:
        """Drain: active sessions end first, then PCs are destroyed and the pool removed."""
        await asyncio.to_thread(self._require, principal, "delete_pool", self.policy.pool(name))
        pool = await asyncio.to_thread(self.store.set_pool_deleting, name)
        self._wake.set()
        return self._status(pool)

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
        caller = _caller(principal)
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
        self._waiting[pool] = self._waiting.get(pool, 0) + 1
        try:
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
        finally:
            self._waiting[pool] -= 1
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
            self._changed.clear()
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
                    self._wake.set()  # replenish the pool
                return session
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UnavailableError(
                    f"no PC of pool {pool!r} became free within {wait:g} s",
                    hint="retry later, or raise the pool's warm/max",
                    retry_after_s=5,
                )
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))

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
            raise _gone(session_id)
        return session

    def _active_session(self, session_id: str, principal: Caller | None) -> SessionInfo:
        """The session if it is active. A released one says why only to whoever may read it
        (`read_session`); anyone else learns no more than of an unknown id."""
        try:
            session = self.store.get_session(session_id)
        except NotFoundError:
            raise _gone(session_id) from None
        if session.state != SessionState.ACTIVE:
            if not self._sees(session, principal):
                raise _gone(session_id)
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
        caller = _caller(principal)
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
            raise _gone(session_id) from None
        await asyncio.to_thread(
            lambda: self._require(
                principal, "release", self.policy.session(known), deny=lambda _: _gone(session_id)
            )
        )
        by = on_behalf_of or _caller(principal)
        released = await asyncio.to_thread(
            self.store.release_session, session_id, reason=reason, now=utcnow(), by=by.id
        )
        self._forget(session_id)
        self._wake.set()
        if released is not None:
            event = release_event(released, by, reason)
            if event is not None and self.events is not None:
                await asyncio.to_thread(self.events.emit, event)
            return released
        return await asyncio.to_thread(self.store.get_session, session_id)

    # -- actions -----------------------------------------------------------------------------
    def _forget(self, session_id: str) -> None:
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
        caller = _caller(principal)
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
            # One thread hop decides and records; a second runs the action.
            session = await asyncio.to_thread(admit)
            if live.client is None:
                live.client = self.runtime.client(session.pc_id, timeout=60)
            client = live.client
            loop = asyncio.get_running_loop()
            lane = self._lane(session.pc_id)
            try:
                async with lane:
                    job = loop.run_in_executor(self._act_pool, run, client)
                    try:
                        result: ToolResult = await asyncio.shield(job)
                    except asyncio.CancelledError:
                        # The caller gave up, but the PC is still doing the action on this
                        # session's connection: hold the lock (and the lane) until it is done,
                        # so nothing overlaps it.
                        await asyncio.wait([job])
                        raise
            except PCMisbehavingError as err:
                await self._quarantine_misbehaving(session.pc_id, err)
                raise
            except PCUnavailableError:
                self._wake.set()  # the manager's health check will deal with the PC
                raise
        return result

    async def peek_screenshot(self, session_id: str, *, principal: Caller | None) -> bytes:
        """A screenshot for a human observer: it neither changes the agent's coordinate space
        nor counts as activity, and it does not queue behind the agent's actions."""
        session = await asyncio.to_thread(self._active_session, session_id, principal)
        await asyncio.to_thread(
            lambda: self._require(
                principal, "observe", self.policy.session(session), deny=lambda _: _gone(session_id)
            )
        )

        def grab() -> bytes:
            with self.runtime.client(session.pc_id, timeout=10) as client:
                return client.screenshot().png

        loop = asyncio.get_running_loop()
        try:
            async with self._lane(session.pc_id):
                return await loop.run_in_executor(self._act_pool, grab)
        except PCMisbehavingError as err:
            await self._quarantine_misbehaving(session.pc_id, err)
            raise

    # -- the pool manager --------------------------------------------------------------------
    async def run(self) -> None:
        """Keep pools warm, reset released PCs, check health, evict; until cancelled."""
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep managing pools whatever one pass hit
                log.exception("pool manager pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=TICK_S)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        now = utcnow()
        for session, reason in await asyncio.to_thread(self.store.sessions_to_evict, now):
            await self.release(session.id, reason=reason, principal=SYSTEM)
        loop = asyncio.get_running_loop()
        check_health = loop.time() - self._last_health >= HEALTH_EVERY_S
        if check_health:
            self._last_health = loop.time()
        for pool in await asyncio.to_thread(self.store.list_pools):
            await self._manage(pool, check_health)

    async def _manage(self, pool: Pool, check_health: bool) -> None:
        pcs = await asyncio.to_thread(self.store.list_pcs, pool.name)
        for pc in pcs:
            if pc.state == PCState.RESETTING and pc.id not in self._busy:
                self._busy.add(pc.id)
                self._spawn(self._reset(pc))
        for pc in pcs:  # a destroy that failed earlier: try again
            if pc.state == PCState.DESTROYING and pc.id not in self._busy:
                self._busy.add(pc.id)
                self._spawn(self._destroy(pc))
        if pool.deleting:
            await self._drain(pool, pcs)
            return
        if check_health:
            for pc in pcs:
                if (
                    pc.state in (PCState.READY, PCState.IN_USE)
                    and pc.id not in self._busy
                    and pc.id not in self._checking
                ):
                    self._checking.add(pc.id)
                    self._spawn(self._check(pc, self._era.get(pc.id, 0)))
        quarantined = sorted(
            (pc for pc in pcs if pc.state == PCState.QUARANTINED), key=lambda pc: pc.created_at
        )
        for pc in quarantined[:-QUARANTINE_KEEP] if QUARANTINE_KEEP else quarantined:
            if pc.id not in self._busy and await asyncio.to_thread(
                self.store.set_pc_state, pc.id, PCState.DESTROYING, expect=PCState.QUARANTINED
            ):
                self._busy.add(pc.id)
                self._spawn(self._destroy(pc))
        if self._stopping:
            return
        counts = await asyncio.to_thread(self.store.pc_counts, pool.name)
        booting = self._booting.get(pool.name, 0)
        ready_soon = counts[PCState.READY] + counts[PCState.RESETTING] + booting
        total = sum(n for s, n in counts.items() if s != PCState.QUARANTINED) + booting
        wanted = pool.spec.warm + self._waiting.get(pool.name, 0)
        missing = min(wanted - ready_soon, pool.spec.max - total)
        for _ in range(max(0, missing)):
            with self._boot_count_lock:
                self._booting[pool.name] = self._booting.get(pool.name, 0) + 1
            self._spawn(self._boot(pool))

    async def _boot(self, pool: Pool) -> None:
        counted = True  # this boot is in `_booting` until its row is recorded or it fails
        try:
            info = await self._runtime(self.runtime.boot, pool.spec.image, pool.spec.size)
            if self._stopping:  # shutting down: do not leave it running unrecorded
                await self._runtime(self.runtime.destroy, info.id)
            else:
                await asyncio.to_thread(self._record_booted, pool.name, info.id)
                counted = False
        except CorralError as exc:
            log.error("pool %s: boot failed: %s", pool.name, exc)
            await asyncio.sleep(1.0)  # do not spin on a broken image
        finally:
            if counted:
                with self._boot_count_lock:
                    self._booting[pool.name] -= 1
        self._changed.set()

    def _record_booted(self, pool: str, pc_id: str) -> None:
        with self._boot_count_lock:
            self.store.add_pc(pool, pc_id, PCState.READY)
            self._booting[pool] -= 1

    async def _reset(self, pc: PC) -> None:
        """Back to the image baseline, then lendable again; replaced if that fails."""
        self._era[pc.id] = self._era.get(pc.id, 0) + 1
        try:
            await self._runtime(self.runtime.reset, pc.id)
            health = await self._runtime(self.runtime.health, pc.id)
            if not health.ok:
                raise PCUnavailableError(health.detail)
            await asyncio.to_thread(
                self.store.set_pc_state, pc.id, PCState.READY, expect=PCState.RESETTING
            )
        except Exception as exc:
            log.warning("PC %s failed to reset (%s): destroying and replacing it", pc.id, exc)
            await asyncio.to_thread(self.store.set_pc_state, pc.id, PCState.DESTROYING)
            await self._destroy(pc)
        finally:
            self._busy.discard(pc.id)
        self._changed.set()
        self._wake.set()

    def _overtaken(self, pc_id: str, era: int) -> bool:
        """A reset or destroy began since this check did: its result says nothing of now."""
        return pc_id in self._busy or self._era.get(pc_id, 0) != era

    async def _check(self, pc: PC, era: int) -> None:
        """Quarantine a PC that fails its health check: at once if its processes are gone or
        its daemon broke the protocol, after FAILS_TO_QUARANTINE failures in a row if it only
        stops answering (load). Runs on the health threads, never the runtime's."""
        try:
            try:
                loop = asyncio.get_running_loop()
                health = await loop.run_in_executor(self._health_pool, self.runtime.health, pc.id)
            except NotFoundError:  # destroyed behind our back (e.g. by an operator)
                if self._overtaken(pc.id, era):
                    return
                log.warning("PC %s vanished from the runtime", pc.id)
                if pc.session_id:
                    await asyncio.to_thread(
                        self.store.release_session,
                        pc.session_id,
                        reason="pc_lost",
                        now=utcnow(),
                        by=SYSTEM.id,
                    )
                    self._forget(pc.session_id)
                with contextlib.suppress(NotFoundError):
                    await asyncio.to_thread(self.store.delete_pc, pc.id)
                return
            except Exception as exc:  # a check that cannot run is a failed check
                health = Health(False, False, False, f"health check failed: {exc}")
        finally:
            self._checking.discard(pc.id)
        if self._overtaken(pc.id, era):
            return
        if health.ok:
            self._failures.pop(pc.id, None)
            return
        if health.misbehaving:
            await self._quarantine_misbehaving(pc.id, PCMisbehavingError(health.detail))
            return
        fails = self._failures.get(pc.id, 0) + 1
        self._failures[pc.id] = fails
        dead = "not running" in health.detail
        if not dead and fails < FAILS_TO_QUARANTINE:
            return
        self._failures.pop(pc.id, None)
        log.warning("PC %s failed its health check (%s): quarantined", pc.id, health.detail)
        if (
            await asyncio.to_thread(
                self.store.set_pc_state,
                pc.id,
                PCState.QUARANTINED,
                expect=pc.state,
                detail=health.detail,
            )
            and pc.session_id
        ):
            await asyncio.to_thread(
                self.store.release_session,
                pc.session_id,
                reason="pc_unhealthy",
                now=utcnow(),
                by=SYSTEM.id,
            )
            self._forget(pc.session_id)
        self._wake.set()

    async def _destroy(self, pc: PC) -> None:
        """Destroy the PC, then forget it; on failure keep its row (DESTROYING, with the
        reason) so the manager tries again instead of leaking a running PC."""
        self._pc_images.pop(pc.id, None)
        self._lanes.pop(pc.id, None)
        self._era[pc.id] = self._era.get(pc.id, 0) + 1
        try:
            await self._runtime(self.runtime.destroy, pc.id)
        except NotFoundError:
            pass
        except Exception as exc:
            log.error("PC %s could not be destroyed (%s); will retry", pc.id, exc)
            with contextlib.suppress(NotFoundError):
                await asyncio.to_thread(
                    self.store.set_pc_state,
                    pc.id,
                    PCState.DESTROYING,
                    detail=f"destroy failed: {exc}",
                )
            return
        finally:
            self._busy.discard(pc.id)
        with contextlib.suppress(NotFoundError):
            await asyncio.to_thread(self.store.delete_pc, pc.id)

    async def _drain(self, pool: Pool, pcs: list[PC]) -> None:
        active = await asyncio.to_thread(self.store.list_sessions, active_only=True, pool=pool.name)
        if active:
            return  # active sessions end first (release or eviction)
        for pc in pcs:
            if (
                pc.state in (PCState.READY, PCState.QUARANTINED)
                and pc.id not in self._busy
                and await asyncio.to_thread(
                    self.store.set_pc_state, pc.id, PCState.DESTROYING, expect=pc.state
                )
            ):
                self._busy.add(pc.id)
                self._spawn(self._destroy(pc))
        if not pcs and not self._booting.get(pool.name):
            with contextlib.suppress(ConflictError, NotFoundError):
                await asyncio.to_thread(self.store.delete_pool, pool.name)

    async def stop(self, destroy_pcs: bool = True) -> None:
        """Stop background work; with `destroy_pcs`, leave no PC running (Ctrl-C of `up`).

        Boots and resets in flight are waited for, not abandoned: their threads would
        otherwise finish after the clean-up and leave a PC running that nobody recorded.
        """
        self._stopping = True
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=120)
            for task in pending:
                task.cancel()
        for live in self._live.values():
            if live.client is not None:
                live.client.close()
        self._live.clear()
        if destroy_pcs:
            for session in await asyncio.to_thread(self.store.list_sessions, active_only=True):
                await asyncio.to_thread(
                    self.store.release_session,
                    session.id,
                    reason="shutdown",
                    now=utcnow(),
                    by=SYSTEM.id,
                )
            for pc in await asyncio.to_thread(self.store.list_pcs):
                await self._destroy(pc)
        self._act_pool.shutdown(wait=False, cancel_futures=True)
        self._health_pool.shutdown(wait=False, cancel_futures=True)
        self._rt_pool.shutdown(wait=True)
