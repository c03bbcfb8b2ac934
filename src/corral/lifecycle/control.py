"""The lifecycle pillar, composed: pool administration (`pools.py`), the session operations
the Gate calls (`sessions.py`) and the pool manager that reconciles the store with the runtime
(`manager.py`).

`ControlPlane` only wires the three together and starts and stops them; it holds no state and
makes no decision of its own. Its operation names (`acquire`, `act`, `create_pool`...) are the
services' own methods, bound here so the Gate's routes and the tests have one object to call.
"""

from __future__ import annotations

import asyncio

from corral.access.service import PolicyService
from corral.domain.access import SYSTEM
from corral.domain.models import PoolSpec
from corral.identity.caep import EventSink
from corral.lifecycle._common import utcnow
from corral.lifecycle.manager import PoolManager, PoolStatus
from corral.lifecycle.pools import PoolService
from corral.lifecycle.sessions import (
    GrantIssuer,
    SessionGrant,
    SessionInfo,
    SessionService,
    visible_to,
)
from corral.runtime.driver import PCDriver
from corral.store import Store

__all__ = [
    "ControlPlane",
    "GrantIssuer",
    "PoolStatus",
    "SessionGrant",
    "SessionInfo",
    "utcnow",
    "visible_to",
]


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
        self.events = events
        self.policy = PolicyService(store)
        self.manager = PoolManager(store, runtime, events=events)
        self.pools = PoolService(store, self.manager, self.policy)
        self.sessions = SessionService(
            store, self.manager, self.policy, events=events, approval_wait_s=approval_wait_s
        )
        # pools
        self.create_pool = self.pools.create_pool
        self.list_pools = self.pools.list_pools
        self.get_pool = self.pools.get_pool
        self.list_pool_pcs = self.pools.list_pool_pcs
        self.delete_pool = self.pools.delete_pool
        # sessions and actions
        self.configure_grants = self.sessions.configure_grants
        self.acquire = self.sessions.acquire
        self.acquire_grant = self.sessions.acquire_grant
        self.grant = self.sessions.grant
        self.describe = self.sessions.describe
        self.get_session = self.sessions.get_session
        self.list_sessions = self.sessions.list_sessions
        self.release = self.sessions.release
        self.act = self.sessions.act
        self.peek_screenshot = self.sessions.peek_screenshot
        # the background reconciler
        self.run = self.manager.run

    @property
    def runtime(self) -> PCDriver:
        return self.manager.runtime

    async def start(self, default_pools: list[PoolSpec] | None = None) -> None:
        """Migrate the store, reconcile it with the runtime (after a crash or kill -9), and
        create the default pools that do not exist yet."""
        await asyncio.to_thread(self.store.migrate)
        await asyncio.to_thread(self.policy.start)  # the shipped policies, on first start
        await asyncio.to_thread(self.manager.recover)
        existing = {p.name for p in await asyncio.to_thread(self.store.list_pools)}
        for spec in default_pools or []:
            if spec.name not in existing:
                await self.pools.create_pool(spec, principal=SYSTEM)

    async def stop(self, destroy_pcs: bool = True) -> None:
        """Stop background work; with `destroy_pcs`, leave no PC running (Ctrl-C of `up`)."""
        try:
            await self.manager.stop(destroy_pcs)
        finally:
            self.sessions.close()
