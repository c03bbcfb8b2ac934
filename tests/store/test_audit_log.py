"""The audit log's rows on SQLite and PostgreSQL: appends commit with the caller's change or not
at all, concurrent appends take turns into one consistent tree, and heads and proofs read
from the stored tiles verify against the whole tree."""

from __future__ import annotations

import threading

import pytest

from corral.audit import log
from corral.audit.tlog.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from corral.domain.models import PoolSpec
from corral.store import Store


def test_appends_build_the_tree_across_transactions(store: Store) -> None:
    entries = [f"record {i}".encode() for i in range(600)]
    for lo, hi in ((0, 1), (1, 256), (256, 257), (257, 600)):
        with store.transaction() as uow:
            assert log.append(uow, entries[lo:hi]) == lo
    tree = MemoryTree(leaf_hash(e) for e in entries)
    with store.transaction(write=False) as uow:
        assert log.head(uow) == (600, tree.root())
        assert uow.audit.entries(250, 260) == entries[250:260]
        for index, size in ((0, 600), (255, 256), (599, 600), (300, 512)):
            path = log.inclusion(uow, index, size)
            verify_inclusion(leaf_hash(entries[index]), index, size, path, tree.root(size))
        proof = log.consistency(uow, 257, 600)
        verify_consistency(257, 600, tree.root(257), tree.root(600), proof)
        with pytest.raises(ValueError):
            log.inclusion(uow, 0, 601)


def test_a_record_commits_with_its_change_or_not_at_all(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as uow:
        uow.pools.create(PoolSpec("p", "minimal"))
        log.append(uow, [b"pool p created"])
        raise RuntimeError("the change failed after its record was written")
    with store.transaction(write=False) as uow:
        assert log.head(uow)[0] == 0 and uow.audit.entries(0, 10) == []
        assert uow.pools.list() == []
    with store.transaction() as uow:
        uow.pools.create(PoolSpec("p", "minimal"))
        assert log.append(uow, [b"pool p created"]) == 0
    with store.transaction(write=False) as uow:
        assert log.head(uow) == (1, leaf_hash(b"pool p created"))


def test_concurrent_appends_take_turns(store: Store) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(25):
                with store.transaction() as uow:
                    log.append(uow, [f"{name}-{i}-a".encode(), f"{name}-{i}-b".encode()])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.transaction(write=False) as uow:
        size, root = log.head(uow)
        stored = uow.audit.entries(0, size)
    assert size == 200 and len(set(stored)) == 200
    assert root == MemoryTree(leaf_hash(e) for e in stored).root()
    for n in range(4):  # each writer's pair stayed together, in its own order
        mine = [e for e in stored if e.startswith(f"w{n}-".encode())]
        assert mine == [f"w{n}-{i}-{x}".encode() for i in range(25) for x in "ab"]
