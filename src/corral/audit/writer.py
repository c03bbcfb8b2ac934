"""The audit log's single writer: appends in batches (group commit), checkpoints on a clock.

Every record goes through one thread, which takes whatever is queued (up to `max_batch`),
appends it to the Merkle log in one store transaction and only then answers each caller with
its index: an append that returned is committed (acknowledged records are never lost), and
concurrent callers share one commit, which is what makes tens of thousands of records a second
possible on one host. A checkpoint is signed at most `checkpoint_interval_s` after an append
(under load too: signing runs between batches), and at once when someone seals the log
(a session's release names the checkpoint that covers its records).

A batch that fails (the database down, the disk full) fails each of its callers with
`AuditUnavailableError` and marks the writer unhealthy: the Gate then refuses new actions
before they run (`AuditRecorder.admit`) until an append succeeds again; nothing is dropped
silently, and nothing is retried behind the caller's back (the caller's action already failed
closed and the caller may retry it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from corral.audit import log as audit_log
from corral.errors import AuditUnavailableError
from corral.store import EntryKeys

if TYPE_CHECKING:
    from corral.store import Store, UnitOfWork

__all__ = ["AuditWriter", "Sealed"]

logger = logging.getLogger(__name__)

#: signs a checkpoint of the log's current head in the unit of work and returns its note text
Signer = Callable[["UnitOfWork"], str]


@dataclass(frozen=True, slots=True)
class Sealed:
    """The checkpoint that covers everything appended before a seal."""

    size: int
    root: bytes
    #: the signed note (None when the log has no signing key configured)
    checkpoint: str | None


class _Seal:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: Future[Sealed] = Future()


_STOP = object()
_NO_KEYS = EntryKeys()
#: who waits for an entry: a thread (a concurrent Future) or a coroutine (its loop and an
#: asyncio Future, answered with one wake-up per loop and batch: no lock per record)
_Waiter = Union["Future[int]", tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]"]]
_Item = tuple[bytes, EntryKeys, _Waiter]


def _answer_all(answers: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    """On a waiting loop: answer its coroutines (those cancelled meanwhile stay cancelled)."""
    for future, answer in answers:
        if not future.done():
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)


def _answer(batch: list[_Item], answer: Callable[[int], int | BaseException]) -> None:
    """Answer every waiter of `batch`; `answer(offset)` is its index or its error."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], Any]]] = {}
    for offset, (_, _, waiter) in enumerate(batch):
        value = answer(offset)
        if isinstance(waiter, tuple):
            by_loop.setdefault(waiter[0], []).append((waiter[1], value))
        elif isinstance(value, BaseException):
            _settle(waiter, error=value)
        else:
            _settle(waiter, result=value)
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # its loop closed: nobody is waiting
            loop.call_soon_threadsafe(_answer_all, answers)


def _settle(
    future: Future[int], *, result: int | None = None, error: BaseException | None = None
) -> None:
    """Answer a caller, unless it stopped waiting (its record is written all the same)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result if result is not None else -1)
    except InvalidStateError:  # cancelled by its caller meanwhile
        pass


class AuditWriter:
    def __init__(
        self,
        store: Store,
        *,
        signer: Signer | None = None,
        checkpoint_interval_s: float = 0.5,
        max_batch: int = 4096,
    ) -> None:
        self.store = store
        self.signer = signer
        self.checkpoint_interval_s = checkpoint_interval_s
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: None while appends succeed; the last failure's description otherwise
        self.failure: str | None = None
        #: when appends began to fail (time.monotonic), and how many records failed since
        self.failed_at = 0.0
        self.failed = 0
        #: appended but not yet covered by a signed checkpoint
        self._unsigned = False
        self._last_signed = 0.0
        self.appended = 0
        self.checkpoints = 0

    @property
    def healthy(self) -> bool:
        """Appends succeed and the writer's thread runs (a writer that died is not healthy:
        the Gate then refuses calls instead of waiting forever for their records)."""
        return self.failure is None and self._thread is not None and self._thread.is_alive()

    def start(self) -> AuditWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="corral-audit", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, sign a last checkpoint, and end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    # -- appending -----------------------------------------------------------------------
    def submit(self, entry: bytes, keys: EntryKeys | None = None) -> Future[int]:
        """Queue `entry` (found later by `keys`); the future resolves to its index once
        committed."""
        if self._thread is None:
            raise AuditUnavailableError("the audit log's writer is not running")
        future: Future[int] = Future()
        self._queue.put((entry, keys or _NO_KEYS, future))
        return future

    async def append(self, entry: bytes, keys: EntryKeys | None = None) -> int:
        """Queue `entry` and wait for its commit. A caller cancelled meanwhile (a client gone
        mid-call) stops waiting, but the record is still written."""
        if self._thread is None:
            raise AuditUnavailableError("the audit log's writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put((entry, keys or _NO_KEYS, (loop, future)))
        # Not shielded: a caller cancelled meanwhile cancels only its own future; the entry
        # is queued and written all the same, and its answer is then skipped.
        return await future

    def append_sync(self, entry: bytes, keys: EntryKeys | None = None, timeout: float = 30) -> int:
        return self.submit(entry, keys).result(timeout)

    async def seal(self) -> Sealed:
        """A checkpoint covering every record appended before this call, signed now."""
        request = _Seal()
        if self._thread is None:
            raise AuditUnavailableError("the audit log's writer is not running")
        self._queue.put(request)
        return await asyncio.shield(asyncio.wrap_future(request.future))

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        """The loop, kept alive: whatever one pass raises marks the writer failed (the Gate
        then refuses calls) and the next pass tries again; only a stop ends it."""
        while True:
            try:
                if self._loop():
                    return
            except Exception as exc:  # never die silently with callers waiting
                self.failure = f"writer: {type(exc).__name__}: {exc}"
                logger.exception("audit writer pass failed")
                time.sleep(0.1)

    def _loop(self) -> bool:
        interval = self.checkpoint_interval_s
        while True:
            timeout = None
            if self._unsigned:
                timeout = max(0.0, self._last_signed + interval - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._sign()
                continue
            items = [first]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = self._handle(items)
            if self._unsigned and time.monotonic() - self._last_signed >= interval:
                self._sign()
            if stop:
                if self._unsigned:
                    self._sign()
                return True

    def _handle(self, items: list[object]) -> bool:
        """Append the entries among `items` (in order, seals cut the batch), answer seals."""
        batch: list[_Item] = []
        stop = False
        for item in items:
            if isinstance(item, tuple):
                batch.append(item)  # (entry, keys, future)
                continue
            self._commit(batch)
            batch = []
            if isinstance(item, _Seal):
                self._seal(item)
            elif item is _STOP:
                stop = True
        self._commit(batch)
        return stop

    def _commit(self, batch: list[_Item]) -> None:
        if not batch:
            return
        try:
            with self.store.transaction() as uow:
                entries = [entry for entry, _, _ in batch]
                first = audit_log.append(uow, entries, [keys for _, keys, _ in batch])
        except Exception as exc:
            if self.failure is None:
                self.failed_at, self.failed = time.monotonic(), 0
            self.failed += len(batch)
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.error("audit log append of %d records failed: %s", len(batch), self.failure)
            _answer(batch, lambda _: AuditUnavailableError())
            return
        if self.failure is not None:
            logger.warning("audit log appends succeed again (after: %s)", self.failure)
        self.failure = None
        self.appended += len(batch)
        self._unsigned = True
        _answer(batch, lambda offset: first + offset)

    def _sign(self) -> Sealed | None:
        """Sign a checkpoint of the current head (None if it could not be)."""
        try:
            with self.store.transaction() as uow:
                size, root = audit_log.head(uow)
                note = self.signer(uow) if self.signer is not None else None
        except Exception as exc:
            logger.error("audit checkpoint failed: %s: %s", type(exc).__name__, exc)
            self._last_signed = time.monotonic()  # try again after an interval, not in a loop
            return None
        self._unsigned = False
        self._last_signed = time.monotonic()
        self.checkpoints += 1
        return Sealed(size, root, note)

    def _seal(self, request: _Seal) -> None:
        sealed = self._sign()
        with contextlib.suppress(InvalidStateError):  # its caller stopped waiting
            if sealed is None:
                request.future.set_exception(AuditUnavailableError("the audit log could not sign"))
            else:
                request.future.set_result(sealed)
