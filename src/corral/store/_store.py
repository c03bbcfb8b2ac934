"""The store: pools, PCs and sessions on SQLite or PostgreSQL, one transaction per call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from corral.domain.models import PC, PCState, Pool, PoolSpec, Session
from corral.errors import ConflictError
from corral.store import _pcs, _pools, _sessions
from corral.store._engine import default_url, make_engine, transaction
from corral.store._migrate import migrate

__all__ = ["Store"]

T = TypeVar("T")
_ACQUIRE_ATTEMPTS = 5


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """Thread-safe: every method runs in its own transaction on its own pooled connection."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.dialect = make_url(self.url).get_backend_name()
        self._engine = make_engine(self.url)

    def migrate(self) -> None:
        migrate(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with transaction(self._engine, write=False) as conn:
            return fn(conn)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        with transaction(self._engine, write=True) as conn:
            return fn(conn)

    # pools

    def create_pool(self, spec: PoolSpec) -> Pool:
        try:
            return self._write(lambda c: _pools.create_pool(c, spec, _now()))
        except IntegrityError as e:  # created concurrently
            raise _pools.pool_exists_error(spec.name) from e

    def get_pool(self, name: str) -> Pool:
        return self._read(lambda c: _pools.get_pool(c, name))

    def list_pools(self) -> list[Pool]:
        return self._read(_pools.list_pools)

    def set_pool_deleting(self, name: str) -> Pool:
        return self._write(lambda c: _pools.set_pool_deleting(c, name))

    def delete_pool(self, name: str) -> None:
        self._write(lambda c: _pools.delete_pool(c, name))

    # PCs

    def add_pc(self, pool: str, pc_id: str, state: PCState = PCState.BOOTING) -> PC:
        try:
            return self._write(lambda c: _pcs.add_pc(c, pool, pc_id, state, _now()))
        except IntegrityError as e:  # same id added concurrently, or the pool just went
            self.get_pool(pool)
            raise _pcs.pc_exists_error(pc_id) from e

    def get_pc(self, pc_id: str) -> PC:
        return self._read(lambda c: _pcs.get_pc(c, pc_id))

    def list_pcs(self, pool: str | None = None, state: PCState | None = None) -> list[PC]:
        return self._read(lambda c: _pcs.list_pcs(c, pool, state))

    def set_pc_state(
        self, pc_id: str, state: PCState, *, expect: PCState | None = None, detail: str = ""
    ) -> bool:
        return self._write(
            lambda c: _pcs.set_pc_state(c, pc_id, state, expect=expect, detail=detail, now=_now())
        )

    def delete_pc(self, pc_id: str) -> None:
        self._write(lambda c: _pcs.delete_pc(c, pc_id))

    def pc_counts(self, pool: str) -> dict[PCState, int]:
        return self._read(lambda c: _pcs.pc_counts(c, pool))

    # sessions

    def acquire(
        self,
        pool: str,
        *,
        session_id: str,
        expires_at: datetime,
        idempotency_key: str | None,
        request_hash: str,
        now: datetime,
    ) -> tuple[Session, bool] | None:
        """Bind a READY PC to a new session, replay an idempotent retry, or None if no PC is
        READY. A unique-constraint race (same key, or a PC claimed twice) is retried: the retry
        sees the winner's commit and answers with its session."""
        attempt = 1
        while True:
            try:
                return self._write(
                    lambda c: _sessions.acquire(
                        c,
                        pool,
                        session_id=session_id,
                        expires_at=expires_at,
                        idempotency_key=idempotency_key,
                        request_hash=request_hash,
                        now=now,
                    )
                )
            except IntegrityError as e:
                if attempt == _ACQUIRE_ATTEMPTS:
                    raise ConflictError(
                        f"could not record session {session_id!r}: {e.orig}",
                        hint="retry with a new session id",
                    ) from e
                attempt += 1

    def get_session(self, session_id: str) -> Session:
        return self._read(lambda c: _sessions.get_session(c, session_id))

    def list_sessions(self, *, active_only: bool = False, pool: str | None = None) -> list[Session]:
        return self._read(lambda c: _sessions.list_sessions(c, active_only=active_only, pool=pool))

    def touch_session(self, session_id: str, now: datetime) -> None:
        self._write(lambda c: _sessions.touch_session(c, session_id, now))

    def release_session(self, session_id: str, *, reason: str, now: datetime) -> Session | None:
        return self._write(
            lambda c: _sessions.release_session(c, session_id, reason=reason, now=now)
        )

    def sessions_to_evict(self, now: datetime) -> list[tuple[Session, str]]:
        return self._read(lambda c: _sessions.sessions_to_evict(c, now))
