"""The audit log as the server serves it: tiles, checkpoint and key (public), records and
proofs (`read_audit`, through the Gate), and the writer and record stage it runs.

Reads are synchronous store reads (callers run them in a thread); each takes one read-only
unit of work, so a proof and the head it is against come from one snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.audit import log as audit_log
from corral.audit.checkpoints import LogKeys, prove, sign_checkpoint
from corral.audit.recorder import AuditRecorder
from corral.audit.tlog.tiles import TILE_WIDTH, Tile, TileError, bundle, parse_tile_path
from corral.audit.trace_tree import entry_record, trace_tree
from corral.audit.writer import AuditWriter
from corral.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from corral.store import Store, UnitOfWork

__all__ = ["AuditService"]

_HASH = 32
#: the most records a trace tree shows (a caller decides how many calls share its trace)
MAX_TRACE_RECORDS = 2000


@dataclass
class AuditService:
    store: Store
    keys: LogKeys
    writer: AuditWriter
    recorder: AuditRecorder

    @classmethod
    def open(
        cls,
        store: Store,
        keys: LogKeys,
        *,
        sponsor_of: Callable[[str], str | None] | None = None,
        checkpoint_interval_s: float = 0.5,
        preview: int = 0,
    ) -> AuditService:
        """The log's service over `store`, signing with `keys`; `sponsor_of(agent_id)` names
        an agent's sponsors in its records (default: from the store's directory)."""

        def signer(uow: UnitOfWork) -> str:
            return sign_checkpoint(uow, keys)

        def sponsors(agent_id: str) -> str | None:
            found = store.get_agent(agent_id).sponsors
            return ",".join(found) if found else None

        writer = AuditWriter(store, signer=signer, checkpoint_interval_s=checkpoint_interval_s)
        recorder = AuditRecorder(
            writer, content_key=keys.content_key, sponsor_of=sponsor_of or sponsors, preview=preview
        )
        return cls(store, keys, writer, recorder)

    def start(self) -> None:
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()

    # -- public: what a witness or an auditor follows the log with --------------------------
    def vkey(self) -> str:
        return self.keys.vkey

    def checkpoint(self) -> str:
        """The latest signed checkpoint (signed now if none is stored yet)."""
        with self.store.transaction(write=False) as uow:
            latest = uow.audit.latest_checkpoint()
        if latest is not None:
            return latest.note
        with self.store.transaction() as uow:
            return sign_checkpoint(uow, self.keys)

    def hash_tile(self, path: str) -> bytes:
        """A hash tile (`tile/<L>/<N>[.p/<W>]`), as the tlog-tiles spec serves it."""
        tile = self._tile(path)
        if tile.level < 0:
            raise InvalidInputError("entry bundles need the read_audit permission")
        with self.store.transaction(write=False) as uow:
            stored = uow.audit.read_tile(tile.level, tile.index)
        if len(stored) < tile.width * _HASH:
            raise NotFoundError(f"{path}: the log has no such tile yet")
        return stored[: tile.width * _HASH]

    def entry_bundle(self, path: str) -> bytes:
        """An entry bundle (`tile/entries/<N>[.p/<W>]`): the records themselves."""
        tile = self._tile(path)
        if tile.level >= 0:
            raise InvalidInputError(f"{path} is a hash tile, not an entry bundle")
        start = tile.index * TILE_WIDTH
        with self.store.transaction(write=False) as uow:
            size, _ = uow.audit.state()
            if start + tile.width > size:
                raise NotFoundError(f"{path}: the log has {size} entries")
            return bundle(uow.audit.entries(start, start + tile.width))

    @staticmethod
    def _tile(path: str) -> Tile:
        try:
            return parse_tile_path(path)
        except TileError as exc:
            raise NotFoundError(str(exc), hint="see C2SP tlog-tiles for the paths") from None

    # -- read_audit ------------------------------------------------------------------------
    def entries(self, start: int, limit: int, session: str | None = None) -> dict[str, Any]:
        with self.store.transaction(write=False) as uow:
            size, _ = uow.audit.state()
            if session is not None:
                rows = uow.audit.session_entries(session, start, limit)
            else:
                rows = uow.audit.entry_rows(start, limit)
        records = [entry_record(i, e) for i, e in rows]
        following = rows[-1][0] + 1 if len(rows) == limit else None
        return {"size": size, "records": records, "next": following}

    def record(self, record_id: str) -> dict[str, Any]:
        """The record, its index, and a C2SP tlog-proof of it (a checkpoint is signed now if
        the latest one does not cover it yet)."""
        with self.store.transaction(write=False) as uow:
            index = uow.audit.index_of_record(record_id)
            latest = uow.audit.latest_checkpoint()
        if index is None:
            raise NotFoundError(f"no audit record {record_id!r}")
        if latest is None or latest.size <= index:
            with self.store.transaction() as uow:
                sign_checkpoint(uow, self.keys)
        with self.store.transaction(write=False) as uow:
            entry = uow.audit.entries(index, index + 1)[0]
            out = entry_record(index, entry)
            out["proof"] = prove(uow, index, with_entry=False)
        return out

    def inclusion(self, index: int, size: int | None) -> dict[str, Any]:
        with self.store.transaction(write=False) as uow:
            size = size if size is not None else self._checkpointed(uow)
            if index >= size:
                raise InvalidInputError(f"index {index} is not below the tree size {size}")
            try:
                path = audit_log.inclusion(uow, index, size)
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from None
        return {"index": index, "size": size, "hashes": [h.hex() for h in path]}

    def consistency(self, first: int, second: int | None) -> dict[str, Any]:
        with self.store.transaction(write=False) as uow:
            second = second if second is not None else self._checkpointed(uow)
            if first > second:
                raise InvalidInputError(f"the first size {first} is larger than {second}")
            try:
                path = audit_log.consistency(uow, first, second)
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from None
        return {"first": first, "second": second, "hashes": [h.hex() for h in path]}

    def trace(self, trace_id: str) -> dict[str, Any]:
        """The trace's first MAX_TRACE_RECORDS records as a tree (`truncated` if more)."""
        with self.store.transaction(write=False) as uow:
            rows = uow.audit.trace_entries(trace_id, limit=MAX_TRACE_RECORDS + 1)
        if not rows:
            raise NotFoundError(f"no audit record in trace {trace_id!r}")
        tree = trace_tree(trace_id, [entry_record(i, e) for i, e in rows[:MAX_TRACE_RECORDS]])
        tree["truncated"] = len(rows) > MAX_TRACE_RECORDS
        return tree

    @staticmethod
    def _checkpointed(uow: UnitOfWork) -> int:
        latest = uow.audit.latest_checkpoint()
        if latest is None:
            raise NotFoundError("the log has no checkpoint yet", hint="retry in a second")
        return int(latest.size)
