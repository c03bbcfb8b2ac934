"""Verify the audit log as stored, offline: recompute every leaf hash from the entries and every
tile from the level below, and compare them, and the head, with what the store holds. A record
changed, deleted, reordered or inserted, a tile changed, or a row the log's size does not
account for, shows as the first bad index: the lowest entry whose proof no longer holds
(`corral audit verify` prints it).

This proves the store consistent with itself. Someone who rewrites the records and recomputes
every hash, or cuts the newest records off together with the head, is caught only against a
head signed and kept elsewhere (a checkpoint a witness or an auditor holds): checking the log
against such checkpoints comes with checkpoint signing (issue 11).

Reads the entries in bundles of 256 and keeps one tile per level in memory, so a log of a
million records verifies in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.audit.tlog.merkle import CompactRange, leaf_hash, node_hash
from corral.audit.tlog.tiles import TILE_WIDTH, tiles_for

if TYPE_CHECKING:
    from corral.store import UnitOfWork

__all__ = ["Verdict", "verify_log"]


@dataclass
class Verdict:
    size: int
    root: bytes
    #: the lowest entry index whose record or hashes do not match (None: the log is intact)
    first_bad: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.problems

    def bad(self, index: int, problem: str) -> None:
        if self.first_bad is None or index < self.first_bad:
            self.first_bad = index
        if len(self.problems) < 20:
            self.problems.append(problem)


def _tile_head(hashes: bytes) -> bytes:
    level = [hashes[i : i + 32] for i in range(0, len(hashes), 32)]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def verify_log(uow: UnitOfWork) -> Verdict:
    """Check the stored log against its own entries; see the module's docstring."""
    uow.audit.snapshot()
    size, edge = uow.audit.state()
    stored_root = CompactRange(size, edge).root() if len(edge) == size.bit_count() else b""
    verdict = Verdict(size, stored_root)
    if len(edge) != size.bit_count():
        verdict.bad(0, f"the log's state holds {len(edge)} edge hashes for size {size}")
    recomputed = CompactRange()
    # hashes[level]: the recomputed hashes of the current tile at that level
    hashes: list[bytearray] = [bytearray()]

    def check_tile(level: int, index: int, mine: bytes) -> None:
        stored = uow.audit.read_tile(level, index)
        if stored != mine:
            span = TILE_WIDTH**level
            for i in range(0, max(len(mine), len(stored)), 32):
                if stored[i : i + 32] != mine[i : i + 32]:
                    first = (index * TILE_WIDTH + i // 32) * span
                    known = verdict.first_bad
                    if level and known is not None and first <= known < first + span:
                        return  # the consequence of a bad leaf already found below it
                    verdict.bad(first, f"tile {level}/{index}: hash {i // 32} does not match")
                    return

    def push(level: int, h: bytes, position: int) -> None:
        while len(hashes) <= level:
            hashes.append(bytearray())
        hashes[level] += h
        if len(hashes[level]) == TILE_WIDTH * 32:
            index = position // TILE_WIDTH
            check_tile(level, index, bytes(hashes[level]))
            full = bytes(hashes[level])
            hashes[level] = bytearray()
            push(level + 1, _tile_head(full), index)

    expected = 0  # the next index a row should have
    while True:
        rows = uow.audit.entry_rows(expected, TILE_WIDTH)
        if not rows:
            break
        for index, entry in rows:
            if index != expected:
                verdict.bad(expected, f"entry {expected} is missing (next stored: {index})")
                break
            if index >= size:
                verdict.bad(size, f"entries from {size} on are beyond the log's size {size}")
                break
            h = leaf_hash(entry)
            recomputed.append(h)
            push(0, h, index)
            expected = index + 1
        else:
            continue
        break
    if expected < size and verdict.first_bad is None:
        verdict.bad(expected, f"entries {expected} to {size - 1} are missing")
    strays = uow.audit.entry_rows(-(1 << 62), 1)
    if strays and strays[0][0] < 0:
        verdict.bad(0, f"an entry with index {strays[0][0]}")
    expected_tiles = {(t.level, t.index) for t in tiles_for(size)}
    for level, index in uow.audit.tile_keys():
        if (level, index) not in expected_tiles:
            first = min(size, index * TILE_WIDTH ** (level + 1))
            verdict.bad(first, f"tile {level}/{index} is beyond the log's size {size}")
    # the partial tiles of the current size
    position = size
    for level, partial in enumerate(hashes):
        if partial:
            check_tile(level, position // TILE_WIDTH ** (level + 1), bytes(partial))
    if verdict.first_bad is None and recomputed.root() != stored_root:
        verdict.bad(0, "the recomputed head differs from the stored one")
    verdict.root = recomputed.root()
    return verdict
