"""The tiled log: what appends write into tiles matches C2SP tlog-tiles, and heads and proofs
computed from the tiles alone equal those of the whole tree, for every size reached."""

from __future__ import annotations

import pytest

from corral.audit.tlog.merkle import (
    MemoryTree,
    ProofError,
    consistency_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from corral.audit.tlog.tiled import TiledLog
from corral.audit.tlog.tiles import TILE_WIDTH, TileError, tiles_for


class DictTiles:
    """Tiles in a dict: the storage stand-in for this unit test of the code above it."""

    def __init__(self) -> None:
        self.tiles: dict[tuple[int, int], bytes] = {}
        self.reads = 0

    def read_tile(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.tiles.get((level, index), b"")

    def write_tile(self, level: int, index: int, hashes: bytes) -> None:
        old = self.tiles.get((level, index), b"")
        assert hashes.startswith(old), "a tile only grows"
        self.tiles[(level, index)] = hashes


def test_tiles_hold_what_the_spec_says_after_uneven_appends() -> None:
    store = DictTiles()
    log = TiledLog(store)
    entries = [f"record {i}".encode() for i in range(70_000)]
    tree = MemoryTree(leaf_hash(e) for e in entries)
    at = 0
    for batch in (1, 255, 1, 300, 65_000, 4_443):
        assert log.append(entries[at : at + batch]) == at
        at += batch
        assert log.root() == tree.root(at) == log.root_at(at)
    assert at == 70_000
    for tile in tiles_for(70_000):
        stored = store.tiles[(tile.level, tile.index)]
        assert len(stored) == 32 * tile.width, tile
        for i in range(tile.width):
            span = TILE_WIDTH**tile.level
            first = (tile.index * TILE_WIDTH + i) * span
            assert stored[32 * i : 32 * i + 32] == tree.subtree(first, first + span), (tile, i)


def test_proofs_from_tiles_equal_the_whole_trees_and_verify() -> None:
    store = DictTiles()
    log = TiledLog(store)
    entries = [f"e{i}".encode() for i in range(1_000)]
    tree = MemoryTree(leaf_hash(e) for e in entries)
    log.append(entries)
    for size in (1, 2, 255, 256, 257, 511, 512, 700, 1_000):
        root = log.root_at(size)
        assert root == tree.root(size)
        for index in {0, size // 3, size - 1}:
            path = log.inclusion(index, size)
            assert (path == MemoryTree(tree.leaves[:size]).leaves and False) or path == (
                __import__("corral.audit.tlog.merkle", fromlist=["x"]).inclusion_proof(
                    tree, index, size
                )
            )
            verify_inclusion(leaf_hash(entries[index]), index, size, path, root)
        for old in {1, size // 2, size - 1} - {0}:
            if old < size:
                proof = log.consistency(old, size)
                assert proof == consistency_proof(tree, old, size)
                verify_consistency(old, size, log.root_at(old), root, proof)
    store.reads = 0
    log.inclusion(517, 1_000)
    assert store.reads <= 3 * 10  # a few tile reads per proof level


def test_a_writer_resumed_from_its_edge_goes_on_where_it_stopped() -> None:
    store = DictTiles()
    first = TiledLog(store)
    first.append([b"a"] * 300)
    resumed = TiledLog(store, first.size, first.edge.hashes)
    resumed.append([b"b"] * 20)
    whole = MemoryTree([leaf_hash(b"a")] * 300 + [leaf_hash(b"b")] * 20)
    assert resumed.root() == whole.root() == resumed.root_at(320)


def test_bad_appends_and_reads_are_refused() -> None:
    log = TiledLog(DictTiles())
    with pytest.raises(TileError):
        log.append([b"x" * 65_536])
    assert log.size == 0  # nothing of a refused batch went in
    log.append([b"x"])
    with pytest.raises(ProofError):
        log.subtree(0, 2)
    with pytest.raises(TileError):  # a writer whose edge disagrees with its tiles
        TiledLog(log.store, 0, ()).append([b"y"])
