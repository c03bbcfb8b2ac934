"""The audit log's writer on a real store (SQLite and PostgreSQL): group commit, order,
checkpoints on a clock, seals, and failing closed when the store fails."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from corral.audit import log as audit_log
from corral.audit.tlog.merkle import leaf_hash, tree_hash
from corral.audit.writer import AuditWriter
from corral.errors import AuditUnavailableError
from corral.store import Store, UnitOfWork


def _stored(store: Store) -> list[bytes]:
    with store.transaction(write=False) as uow:
        size, _ = uow.audit.state()
        return uow.audit.entries(0, size)


def test_concurrent_appends_share_commits_and_every_index_is_its_entry(store: Store) -> None:
    signed: list[int] = []

    def signer(uow: UnitOfWork) -> str:
        size, _ = audit_log.head(uow)
        signed.append(size)
        return f"checkpoint {size}"

    writer = AuditWriter(store, signer=signer, checkpoint_interval_s=0.05).start()

    async def agents() -> list[int]:
        async def one(n: int) -> list[int]:
            return [await writer.append(f"agent {n} call {i}".encode()) for i in range(20)]

        got = await asyncio.gather(*(one(n) for n in range(50)))
        return [i for calls in got for i in calls]

    try:
        indexes = asyncio.run(agents())
    finally:
        writer.stop()
    assert sorted(indexes) == list(range(1000))  # every record once, no gap
    stored = _stored(store)
    assert len(stored) == 1000
    # each caller's answer is the index of its own entry, and each agent's calls kept order
    for n in range(50):
        mine = [stored.index(f"agent {n} call {i}".encode()) for i in range(20)]
        assert mine == sorted(mine)
    with store.transaction(write=False) as uow:
        _, root = audit_log.head(uow)
    assert root == tree_hash([leaf_hash(e) for e in stored])
    assert signed and signed[-1] == 1000  # stop signs a last checkpoint covering everything


def test_a_checkpoint_follows_an_append_within_the_interval(store: Store) -> None:
    signed_at: list[float] = []

    def signer(uow: UnitOfWork) -> str:
        signed_at.append(time.monotonic())
        return "checkpoint"

    writer = AuditWriter(store, signer=signer, checkpoint_interval_s=0.2).start()
    try:
        writer.append_sync(b"first")  # the first batch signs at once
        time.sleep(0.05)
        appended = time.monotonic()
        writer.append_sync(b"second")
        deadline = time.monotonic() + 5
        while len(signed_at) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.stop()
    assert len(signed_at) >= 2
    assert signed_at[1] - appended < 1.0


def test_a_seal_covers_everything_appended_before_it(store: Store) -> None:
    writer = AuditWriter(store, signer=lambda uow: "note", checkpoint_interval_s=60).start()

    async def go() -> Any:
        for i in range(5):
            writer.submit(f"r{i}".encode())
        return await writer.seal()

    try:
        sealed = asyncio.run(go())
    finally:
        writer.stop()
    assert sealed.size == 5
    assert sealed.root == tree_hash([leaf_hash(f"r{i}".encode()) for i in range(5)])
    assert sealed.checkpoint == "note"


def test_a_failing_store_fails_each_caller_and_marks_the_writer_unhealthy(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AuditWriter(store).start()
    try:
        writer.append_sync(b"kept")
        real = store.transaction

        def broken(**kwargs: Any) -> Any:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store, "transaction", broken)
        with pytest.raises(AuditUnavailableError):
            writer.append_sync(b"lost?")
        assert not writer.healthy and "No space left" in (writer.failure or "")
        monkeypatch.setattr(store, "transaction", real)
        assert writer.append_sync(b"after") == 1  # nothing half-written in between
        assert writer.healthy
    finally:
        writer.stop()
    assert _stored(store) == [b"kept", b"after"]
