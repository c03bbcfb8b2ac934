"""Pool administration the Gate calls: create, read, inspect and delete pools. The pool manager
(`manager.py`) does the work each change asks for (boots, drains) in the background."""

from __future__ import annotations

import asyncio

from corral.access.service import PolicyService
from corral.domain.access import Caller
from corral.domain.models import PC, PoolSpec, validate_pool_spec
from corral.lifecycle._common import require_caller
from corral.lifecycle.manager import PoolManager, PoolStatus
from corral.store import Store

__all__ = ["PoolService"]


class PoolService:
    def __init__(self, store: Store, manager: PoolManager, policy: PolicyService) -> None:
        self.store = store
        self.manager = manager
        self.policy = policy

    async def create_pool(self, spec: PoolSpec, *, principal: Caller | None) -> PoolStatus:
        caller = require_caller(principal)
        await asyncio.to_thread(
            self.policy.require, caller, "create_pool", self.policy.pool(spec.name)
        )
        validate_pool_spec(spec)
        await self.manager.on_runtime_threads(self.manager.runtime.images.get, spec.image)
        pool = await asyncio.to_thread(self.store.create_pool, spec)
        self.manager.wake()
        return self.manager.status(pool)

    def list_pools(self, *, principal: Caller | None) -> list[PoolStatus]:
        """The pools `principal` may read (`read_pool`)."""
        caller = require_caller(principal)
        return [
            self.manager.status(p)
            for p in self.store.list_pools()
            if self.policy.authorize(caller, "read_pool", self.policy.pool(p.name)).allowed
        ]

    def get_pool(self, name: str, *, principal: Caller | None) -> PoolStatus:
        self.policy.require(require_caller(principal), "read_pool", self.policy.pool(name))
        return self.manager.status(self.store.get_pool(name))

    def list_pool_pcs(self, name: str, *, principal: Caller | None) -> list[PC]:
        """The PCs of pool `name` and their states (quarantined ones included, for inspection)."""
        self.policy.require(require_caller(principal), "inspect_pool", self.policy.pool(name))
        self.store.get_pool(name)
        return self.store.list_pcs(name)

    async def delete_pool(self, name: str, *, principal: Caller | None) -> PoolStatus:
        """Drain: active sessions end first, then PCs are destroyed and the pool removed."""
        caller = require_caller(principal)
        await asyncio.to_thread(self.policy.require, caller, "delete_pool", self.policy.pool(name))
        pool = await asyncio.to_thread(self.store.set_pool_deleting, name)
        self.manager.wake()
        return self.manager.status(pool)
