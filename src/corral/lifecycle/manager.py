"""The pool manager: a reconciler over the store and the runtime.

It keeps each pool's `warm` PCs booted and healthy, never more than `max`; resets released PCs
(or replaces them when a reset fails); checks health and quarantines PCs that fail it (kept for
inspection, never lent) or whose daemon broke the protocol; evicts idle and over-age sessions;
drains pools being deleted. It never answers a request: the session service asks it for a
pool's status, a PC's compliance and a PC's action lane, and wakes it when demand changes.

Its memory is only what this process has in flight (boots, resets, destroys, health checks)
and soft counters (failed checks in a row, image digests). Everything else is read from the
store on every pass, and `recover()` rebuilds a consistent picture from the store and the
runtime after a crash, so another control-plane process could take over by lease later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from corral.access import Compliance
from corral.aio import wait_event
from corral.domain.access import SYSTEM
from corral.domain.models import PC, PCState, Pool, PoolSpec
from corral.errors import (
    ConflictError,
    CorralError,
    NotFoundError,
    PCMisbehavingError,
    PCUnavailableError,
)
from corral.identity.caep import EventSink
from corral.identity.event_emitter import release_event
from corral.lifecycle._common import utcnow
from corral.runtime.driver import Health, PCDriver
from corral.store import Store

__all__ = ["PoolManager", "PoolStatus"]

log = logging.getLogger("corral.control")

IMAGE_DIGEST_TTL_S = 5.0  # how stale the "image current" compliance fact may be
HEALTH_EVERY_S = 5.0
TICK_S = 0.25
RUNTIME_THREADS = 8  # boots, resets and destroys in flight at once
HEALTH_THREADS = 4  # health checks in flight at once, on their own threads (see __init__)
PC_LANE = 4  # actions and peeks of one PC in flight at once on the action threads
QUARANTINE_KEEP = 1  # quarantined PCs kept per pool for inspection; older ones are destroyed
FAILS_TO_QUARANTINE = 2  # failed health checks in a row before a live PC is quarantined


@dataclass(frozen=True)
class PoolStatus:
    spec: PoolSpec
    counts: dict[str, int]
    deleting: bool

    def __getattr__(self, name: str) -> Any:  # .name, .image, .warm ... from the spec
        return getattr(self.spec, name)

    def to_json(self) -> dict[str, Any]:
        return {**self.spec.__dict__, "counts": self.counts, "deleting": self.deleting}


class PoolManager:
    def __init__(self, store: Store, runtime: PCDriver, *, events: EventSink | None = None):
        self.store = store
        self.runtime = runtime
        #: CAEP session-revoked when eviction or a misbehaving PC ends a session (a PC lost or
        #: failing its health check ends its session without one, as before)
        self.events = events
        #: what the session service drops when the manager ends a session (its PC connection)
        self.forget_session: Callable[[str], None] = lambda _session_id: None
        #: told what the manager did on its own (a PC booted, reset, quarantined, destroyed; a
        #: session ended): the audit log's lifecycle records. Must not block (it queues).
        self.on_lifecycle: Callable[[str, dict[str, str | None]], None] | None = None
        #: set when a PC became ready or a release happened: waiting acquires look again
        self.changed = asyncio.Event()
        self._wake = asyncio.Event()  # the manager should look again now
        self._booting: dict[str, int] = {}  # pool -> PCs being booted by this process
        # A booted PC's store row and the end of its `_booting` count change together, so a
        # pool's status never counts one PC twice (as READY and still booting).
        self._boot_count_lock = threading.Lock()
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
        # One PC gets at most PC_LANE of the action threads (an observer's peeks included),
        # however slowly it answers.
        self._lanes: dict[str, asyncio.Semaphore] = {}
        self._stopping = False
        self._last_health = 0.0
        self._rt_pool = ThreadPoolExecutor(RUNTIME_THREADS, thread_name_prefix="corral-rt")
        # Health checks never queue behind boots and resets, nor those behind them: a PC that
        # holds its check to the deadline delays only other checks, never a boot or reset.
        self._health_pool = ThreadPoolExecutor(HEALTH_THREADS, thread_name_prefix="corral-hc")

    # -- what the session service asks -----------------------------------------------------
    def wake(self) -> None:
        """Look again now (a release, a PC in trouble, a new pool)."""
        self._wake.set()

    @contextlib.contextmanager
    def demand(self, pool: str) -> Iterator[None]:
        """An acquire waits for a PC of `pool`: boot beyond `warm` for it (up to `max`)."""
        self._waiting[pool] = self._waiting.get(pool, 0) + 1
        try:
            yield
        finally:
            self._waiting[pool] -= 1

    async def on_runtime_threads(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking runtime call on the runtime's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._rt_pool, functools.partial(fn, *args))

    def lane(self, pc_id: str) -> asyncio.Semaphore:
        lane = self._lanes.get(pc_id)
        if lane is None:
            lane = self._lanes[pc_id] = asyncio.Semaphore(PC_LANE)
        return lane

    def status(self, pool: Pool) -> PoolStatus:
        with self._boot_count_lock:
            counts = {str(k): v for k, v in self.store.pc_counts(pool.name).items()}
            booting = self._booting.get(pool.name, 0)
        counts[PCState.BOOTING.value] = counts.get(PCState.BOOTING.value, 0) + booting
        return PoolStatus(pool.spec, counts, pool.deleting)

    def compliance(self, pc_id: str) -> Compliance:
        """What is known about a PC's state: health checks passing; booted from the image's
        current build (`image_current`: an image rebuilt since shows as not current until the
        PC is replaced); no sensor yet (issue 13)."""
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

    def _tell(self, what: str, **fields: str | None) -> None:
        if self.on_lifecycle is not None:
            try:
                self.on_lifecycle(what, fields)
            except Exception:  # the log's own failures are its to report
                log.exception("the lifecycle record of %s was not taken", what)

    async def quarantine_misbehaving(self, pc_id: str, err: PCMisbehavingError) -> None:
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
        self._tell("quarantine", pc=pc_id, pool=pc.pool, reason=f"misbehaving: {err.message}")
        if pc.session_id is not None:
            await self._end_session(pc.session_id, "pc_misbehaving", notify=True)
        self._wake.set()

    async def _end_session(self, session_id: str, reason: str, *, notify: bool) -> None:
        """End a session for the system (eviction, a lost or broken PC); with `notify`, its
        holder gets a CAEP session-revoked event."""
        released = await asyncio.to_thread(
            self.store.release_session, session_id, reason=reason, now=utcnow(), by=SYSTEM.id
        )
        self.forget_session(session_id)
        if released is not None:
            self._tell("end_session", session=session_id, pc=released.pc_id, reason=reason)
        if notify and released is not None and self.events is not None:
            event = release_event(released, SYSTEM, reason)
            if event is not None:
                await asyncio.to_thread(self.events.emit, event)

    # -- recovery ----------------------------------------------------------------------------
    def recover(self) -> None:
        """Make the store and the runtime agree after a crash or kill -9: PCs gone or half-made
        are removed (their sessions end with `pc_lost`), PCs nobody recorded are destroyed."""
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
                    self._lost(pc.session_id)
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
                self._lost(session.id)
                continue
            if pc.state != PCState.IN_USE or pc.session_id != session.id:
                self._lost(session.id)

    def _lost(self, session_id: str) -> None:
        self.store.release_session(session_id, reason="pc_lost", now=utcnow(), by=SYSTEM.id)
        self._tell("end_session", session=session_id, reason="pc_lost")

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep pools warm, reset released PCs, check health, evict; until cancelled."""
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep managing pools whatever one pass hit
                log.exception("pool manager pass failed")
            if self._stopping:
                return
            self._wake.clear()
            await wait_event(self._wake, TICK_S)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        now = utcnow()
        for session, reason in await asyncio.to_thread(self.store.sessions_to_evict, now):
            await self._end_session(session.id, reason, notify=True)
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
        counts, booting = await asyncio.to_thread(self._counts_and_booting, pool.name)
        ready_soon = counts[PCState.READY] + counts[PCState.RESETTING] + booting
        total = sum(n for s, n in counts.items() if s != PCState.QUARANTINED) + booting
        wanted = pool.spec.warm + self._waiting.get(pool.name, 0)
        missing = min(wanted - ready_soon, pool.spec.max - total)
        for _ in range(max(0, missing)):
            with self._boot_count_lock:
                self._booting[pool.name] = self._booting.get(pool.name, 0) + 1
            self._spawn(self._boot(pool))

    def _counts_and_booting(self, pool: str) -> tuple[dict[PCState, int], int]:
        """The pool's stored PCs and this process's boots in flight, read together: a boot
        that ends between two separate reads would be in neither (its row not yet read, its
        count already dropped) and the manager would boot one PC too many (CI saw a pool of
        max 3 with 4 PCs, and a pool of max 1 lend a second PC)."""
        with self._boot_count_lock:
            return self.store.pc_counts(pool), self._booting.get(pool, 0)

    async def _boot(self, pool: Pool) -> None:
        counted = True  # this boot is in `_booting` until its row is recorded or it fails
        try:
            info = await self.on_runtime_threads(self.runtime.boot, pool.spec.image, pool.spec.size)
            if self._stopping:  # shutting down: do not leave it running unrecorded
                await self.on_runtime_threads(self.runtime.destroy, info.id)
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
        self.changed.set()

    def _record_booted(self, pool: str, pc_id: str) -> None:
        with self._boot_count_lock:
            self.store.add_pc(pool, pc_id, PCState.READY)
            self._booting[pool] -= 1
        self._tell("boot", pc=pc_id, pool=pool)

    async def _reset(self, pc: PC) -> None:
        """Back to the image baseline, then lendable again; replaced if that fails."""
        self._era[pc.id] = self._era.get(pc.id, 0) + 1
        try:
            await self.on_runtime_threads(self.runtime.reset, pc.id)
            health = await self.on_runtime_threads(self.runtime.health, pc.id)
            if not health.ok:
                raise PCUnavailableError(health.detail)
            await asyncio.to_thread(
                self.store.set_pc_state, pc.id, PCState.READY, expect=PCState.RESETTING
            )
            self._tell("reset", pc=pc.id, pool=pc.pool)
        except Exception as exc:
            log.warning("PC %s failed to reset (%s): destroying and replacing it", pc.id, exc)
            self._tell("reset_failed", pc=pc.id, pool=pc.pool, reason=str(exc)[:200])
            await asyncio.to_thread(self.store.set_pc_state, pc.id, PCState.DESTROYING)
            await self._destroy(pc)
        finally:
            self._busy.discard(pc.id)
        self.changed.set()
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
                    await self._end_session(pc.session_id, "pc_lost", notify=False)
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
            await self.quarantine_misbehaving(pc.id, PCMisbehavingError(health.detail))
            return
        fails = self._failures.get(pc.id, 0) + 1
        self._failures[pc.id] = fails
        dead = "not running" in health.detail
        if not dead and fails < FAILS_TO_QUARANTINE:
            return
        self._failures.pop(pc.id, None)
        log.warning("PC %s failed its health check (%s): quarantined", pc.id, health.detail)
        quarantined = await asyncio.to_thread(
            self.store.set_pc_state,
            pc.id,
            PCState.QUARANTINED,
            expect=pc.state,
            detail=health.detail,
        )
        if quarantined:
            self._tell("quarantine", pc=pc.id, pool=pc.pool, reason=health.detail[:200])
        if quarantined and pc.session_id:
            await self._end_session(pc.session_id, "pc_unhealthy", notify=False)
        self._wake.set()

    async def _destroy(self, pc: PC) -> None:
        """Destroy the PC, then forget it; on failure keep its row (DESTROYING, with the
        reason) so the manager tries again instead of leaking a running PC."""
        self._pc_images.pop(pc.id, None)
        self._lanes.pop(pc.id, None)
        self._era[pc.id] = self._era.get(pc.id, 0) + 1
        try:
            await self.on_runtime_threads(self.runtime.destroy, pc.id)
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
        self._tell("destroy", pc=pc.id, pool=pc.pool)

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
        self._health_pool.shutdown(wait=False, cancel_futures=True)
        self._rt_pool.shutdown(wait=True)
