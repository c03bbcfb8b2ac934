"""An append-only tiled Merkle log over a `TileStore`: appends keep every level's tiles (C2SP
tlog-tiles: level-0 tiles hold leaf hashes, a level-l hash is the head of a full tile below),
and tree heads and proofs for any size are computed from the stored tiles alone, reading at
most a few tiles per proof level. The store decides where tiles live (the database, files);
this module only decides what they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from corral.audit.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
)
from corral.audit.tlog.tiles import MAX_ENTRY, TILE_WIDTH, TileError

__all__ = ["TileStore", "TiledLog"]

_LEVEL_SPAN = 8  # one tile level is 2^8 = 256 leaves of the level below


class TileStore(Protocol):
    def read_tile(self, level: int, index: int) -> bytes:
        """The hashes of tile `index` at `level` as stored (full, or the widest partial);
        empty if there is none."""

    def write_tile(self, level: int, index: int, hashes: bytes) -> None:
        """Store tile `index` at `level` (replacing a narrower partial one)."""


def _perfect_hash(hashes: Sequence[bytes]) -> bytes:
    """The head of a perfect subtree given its 2^k hashes at some level."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class TiledLog:
    """The writer's view: its size, its right edge (a `CompactRange`), and its tiles."""

    def __init__(self, store: TileStore, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        self.store = store
        self.edge = CompactRange(size, edge)

    @property
    def size(self) -> int:
        return self.edge.size

    def root(self) -> bytes:
        return self.edge.root()

    def append(self, entries: Sequence[bytes]) -> int:
        """Add entries; their leaf hashes go into the level-0 tiles and every full tile's head
        into the level above. Returns the index of the first."""
        first = self.size
        for entry in entries:
            if len(entry) > MAX_ENTRY:
                raise TileError(f"an entry is at most {MAX_ENTRY} bytes, not {len(entry)}")
        pending: dict[tuple[int, int], bytearray] = {}

        def tile(level: int, index: int) -> bytearray:
            key = (level, index)
            if key not in pending:
                pending[key] = bytearray(self.store.read_tile(level, index))
            return pending[key]

        for entry in entries:
            h = leaf_hash(entry)
            position = self.size
            self.edge.append(h)
            level = 0
            while True:  # put the hash in its tile; a tile it fills sends its head up
                index, offset = divmod(position, TILE_WIDTH)
                t = tile(level, index)
                if len(t) != offset * HASH_SIZE:
                    raise TileError(f"tile {level}/{index} holds {len(t) // 32}, not {offset}")
                t += h
                if offset != TILE_WIDTH - 1:
                    break
                h = _perfect_hash([bytes(t[i : i + 32]) for i in range(0, len(t), 32)])
                position, level = index, level + 1
        for (level, index), hashes in sorted(pending.items()):
            self.store.write_tile(level, index, bytes(hashes))
        return first

    # -- reading, for any size the log has reached -------------------------------------------
    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) from the tiles."""
        n = end - start
        if n <= 0 or end > self.size:
            raise ProofError(f"no subtree [{start}, {end}) in a log of {self.size}")
        if n & (n - 1) == 0 and start % n == 0:
            return self._aligned(start, n.bit_length() - 1)
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def _aligned(self, start: int, height: int) -> bytes:
        """The head of the perfect subtree of 2^height leaves starting at `start`."""
        level, rest = divmod(height, _LEVEL_SPAN)
        first = start >> (_LEVEL_SPAN * level)  # its first hash at that tile level
        count = 1 << rest
        index, offset = divmod(first, TILE_WIDTH)
        hashes = self.store.read_tile(level, index)
        want = hashes[offset * HASH_SIZE : (offset + count) * HASH_SIZE]
        if len(want) != count * HASH_SIZE:
            raise ProofError(f"tile {level}/{index} lacks the hashes for [{start}, +2^{height})")
        return _perfect_hash([want[i : i + 32] for i in range(0, len(want), 32)])

    def root_at(self, size: int) -> bytes:
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(self, index, size)

    def consistency(self, first: int, second: int) -> list[bytes]:
        return consistency_proof(self, first, second)
