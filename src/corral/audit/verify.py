"""Verify the audit log as stored, offline: recompute every leaf hash from the entries and every
tile from the level below, and compare them, and the head, with what the store holds. A record
changed, deleted, reordered or inserted, a tile changed, or a row the log's size does not
account for, shows as the first bad index: the lowest entry whose proof no longer holds
(`corral audit verify` prints it).

That alone proves the store consistent with itself. Given the log's verifier key, every stored
signed checkpoint is checked too: its signature (and each required witness's cosignature), and
that its root is the root recomputed from the records at its size. A rewrite that recomputes
every hash then shows at the first checkpoint it contradicts: the first bad index is the size
of the last checkpoint before it that still matches (the records below are vouched for), and a
log cut short shows at its new size. A checkpoint whose signature does not verify vouches for
nothing and is reported on its own. Checkpoints kept elsewhere (by an auditor or a witness) are
what catch a rewrite that also re-signs with a stolen key.

Reads the entries in bundles of 256 and keeps one tile per level in memory, so a log of a
million records verifies in constant memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.audit.tlog.checkpoint import Checkpoint
from corral.audit.tlog.cosignature import CosignatureVerifier
from corral.audit.tlog.merkle import CompactRange, leaf_hash, node_hash
from corral.audit.tlog.note import NoteError, NoteVerifier, open_note
from corral.audit.tlog.tiles import TILE_WIDTH, tiles_for

if TYPE_CHECKING:
    from pathlib import Path

    from corral.store import CheckpointRow, UnitOfWork

__all__ = ["Verdict", "verify_log"]


@dataclass
class Verdict:
    size: int
    root: bytes
    #: the lowest entry index whose record or hashes do not match (None: the log is intact)
    first_bad: int | None = None
    problems: list[str] = field(default_factory=list)
    #: signed checkpoints checked, and the sizes of those that failed
    checkpoints: int = 0
    bad_checkpoints: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.problems

    def bad(self, index: int, problem: str) -> None:
        if self.first_bad is None or index < self.first_bad:
            self.first_bad = index
        if len(self.problems) < 20:
            self.problems.append(problem)

    def bad_checkpoint(self, size: int, problem: str, index: int | None = None) -> None:
        self.bad_checkpoints.append(size)
        if index is None:
            if len(self.problems) < 20:
                self.problems.append(problem)
        else:
            self.bad(index, problem)


def _tile_head(hashes: bytes) -> bytes:
    level = [hashes[i : i + 32] for i in range(0, len(hashes), 32)]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _stored_checkpoints(uow: UnitOfWork) -> Iterator[CheckpointRow]:
    start = 0
    while True:
        page = uow.audit.checkpoints(start, 500)
        yield from page
        if len(page) < 500:
            return
        start = page[-1].size + 1


def _distinct(rows: Iterator[CheckpointRow]) -> Iterator[CheckpointRow]:
    """`rows` (by size) without repeats: only rows of one size are remembered at a time."""
    size, notes = -1, set[str]()
    for row in rows:
        if row.size != size:
            size, notes = row.size, set()
        if row.note not in notes:
            notes.add(row.note)
            yield row


class _CheckpointCheck:
    """Checks each stored checkpoint as the recomputed tree reaches its size."""

    def __init__(
        self,
        uow: UnitOfWork,
        verdict: Verdict,
        log_key: NoteVerifier | None,
        witnesses: Sequence[CosignatureVerifier],
        outside: Sequence[CheckpointRow] = (),
    ) -> None:
        self.verdict, self.log_key, self.witnesses = verdict, log_key, witnesses
        # the stored checkpoints and those kept outside the database, by size; a copy of a
        # stored one (the same note) is checked once
        self.pending = _distinct(
            heapq.merge(
                _stored_checkpoints(uow),
                sorted(outside, key=lambda r: r.size),
                key=lambda r: r.size,
            )
        )
        self.next: CheckpointRow | None = next(self.pending, None)
        self.vouched = 0  # the size of the last checkpoint that matched the records
        if self.next is not None and log_key is None:
            verdict.problems.append("signed checkpoints are stored but no log key was given")

    def _signed(self, row: CheckpointRow) -> bool:
        verdict = self.verdict
        verdict.checkpoints += 1
        if self.log_key is None:
            return True  # roots are still compared
        try:
            text, _ = open_note(row.note, [self.log_key])
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            verdict.bad_checkpoint(row.size, f"checkpoint {row.size}: {exc}")
            return False
        if (checkpoint.origin, checkpoint.size, checkpoint.root) != (
            self.log_key.name,
            row.size,
            row.root,
        ):
            verdict.bad_checkpoint(
                row.size, f"checkpoint {row.size}: its note does not match its row or origin"
            )
            return False
        for witness in self.witnesses:
            try:
                witness.verify_note(row.note)
            except NoteError as exc:
                verdict.bad_checkpoint(row.size, f"checkpoint {row.size}: {exc}")
                return False
        return True

    def reached(self, tree: CompactRange) -> None:
        """The recomputed tree has `tree.size` leaves: check the checkpoints of that size."""
        while self.next is not None and self.next.size <= tree.size:
            row, self.next = self.next, next(self.pending, None)
            if not self._signed(row):
                continue
            if row.size < tree.size:
                continue  # a size passed without being reached: cannot happen when sorted
            if tree.root() != row.root:
                self.verdict.bad_checkpoint(
                    row.size,
                    f"checkpoint {row.size}: its root differs from the records' "
                    f"(records from {self.vouched} to {row.size - 1} differ from those signed)",
                    self.vouched,
                )
            else:
                self.vouched = row.size

    def beyond(self, size: int) -> None:
        """Checkpoints of more entries than the log holds: the newest records were cut off."""
        while self.next is not None:
            row, self.next = self.next, next(self.pending, None)
            if self._signed(row):
                self.verdict.bad_checkpoint(
                    row.size,
                    f"checkpoint {row.size} was signed but the records stop at {size}",
                    size,
                )


def verify_log(
    uow: UnitOfWork,
    *,
    log_key: NoteVerifier | None = None,
    witnesses: Sequence[CosignatureVerifier] = (),
    outside: Sequence[CheckpointRow] = (),
) -> Verdict:
    """Check the stored log against its own entries, and its stored signed checkpoints
    against `log_key` and `witnesses`; see the module's docstring. `outside`: checkpoints kept
    outside the database (the server's `latest.checkpoint`, an auditor's or a witness's copy),
    checked like the stored ones, so deleting checkpoint rows with a rewrite hides nothing."""
    uow.audit.snapshot()
    size, edge = uow.audit.state()
    stored_root = CompactRange(size, edge).root() if len(edge) == size.bit_count() else b""
    verdict = Verdict(size, stored_root)
    if len(edge) != size.bit_count():
        verdict.bad(0, f"the log's state holds {len(edge)} edge hashes for size {size}")
    recomputed = CompactRange()
    checks = _CheckpointCheck(uow, verdict, log_key, witnesses, outside)
    checks.reached(recomputed)
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
            checks.reached(recomputed)
            push(0, h, index)
            expected = index + 1
        else:
            continue
        break
    if expected < size and verdict.first_bad is None:
        verdict.bad(expected, f"entries {expected} to {size - 1} are missing")
    checks.beyond(recomputed.size)
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


def checkpoints_from_files(files: Sequence[Path]) -> list[CheckpointRow]:
    """Signed checkpoints kept in files, as `outside` rows for `verify_log` (which checks
    their signatures); InvalidInputError naming a file that holds no checkpoint."""
    from datetime import UTC, datetime

    from corral.audit.tlog.note import split_note
    from corral.errors import InvalidInputError
    from corral.store import CheckpointRow

    rows: list[CheckpointRow] = []
    for path in files:
        try:
            note = path.read_text(encoding="utf-8")
            checkpoint = Checkpoint.parse(split_note(note)[0])
        except (OSError, UnicodeDecodeError, NoteError, ValueError) as exc:
            raise InvalidInputError(
                f"{path}: not a signed checkpoint ({exc})",
                hint="give the text /audit/checkpoint served, or the data folder's "
                "audit/latest.checkpoint",
            ) from None
        rows.append(CheckpointRow(checkpoint.size, checkpoint.root, note, datetime.now(UTC)))
    return rows
