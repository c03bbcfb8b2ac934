"""The unit of work: one transaction on one connection, seen through per-pillar repositories.

`Store.transaction()` opens one. Everything done through its repositories commits together when
the `with` block ends normally and is rolled back when an exception leaves it, so a change and
the writes that must go with it (an acquire, its session controls, later its audit record) are
never seen apart, on SQLite and PostgreSQL alike:

- SQLite: a writing unit of work starts with BEGIN IMMEDIATE (the database's write lock, taken
  up front, so writers take turns and each sees the one before); a read-only one with a plain
  BEGIN, which under WAL never waits.
- PostgreSQL: READ COMMITTED, as before; the repositories lock the rows they change
  (`SELECT ... FOR UPDATE`, `FOR SHARE` on a pool being acquired from, `SKIP LOCKED` on the PC
  an acquire claims, advisory locks on an idempotency key and on an agent's per-pool limit).

One unit of work at a time per store and thread (or asyncio task): opening a second one, or
calling a `Store` method, while one is open is refused with `UnitOfWorkError`. The inner
transaction would be another connection that does not see the outer one's writes and, on SQLite,
would wait for the lock the outer one holds until the busy timeout. Nested savepoints are not
offered: the repositories use them internally where a conflict is expected (a name taken
concurrently), and that is all a caller needs, so a unit of work stays all or nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property

from sqlalchemy import Connection, Engine

from corral.store._engine import transaction
from corral.store._repositories import (
    AccessRepository,
    AuditRepository,
    ConsoleRepository,
    DirectoryRepository,
    EventsRepository,
    FederationRepository,
    PCRepository,
    PolicyRepository,
    PoolRepository,
    SecretsRepository,
    SessionRepository,
    UnitOfWorkError,
)
from corral.store._secrets import StoreKeys

__all__ = ["UnitOfWork", "UnitOfWorkError", "check_no_open_unit_of_work", "unit_of_work"]

# The databases (by URL) that have a unit of work open in this thread or task. A ContextVar,
# so `asyncio.to_thread` from inside an open unit of work counts as inside it too.
_OPEN: ContextVar[frozenset[str]] = ContextVar("corral_store_open_units", default=frozenset())


class UnitOfWork:
    """One transaction; each attribute is a pillar's repository on its connection.

    `pools`, `pcs`, `sessions`: the lifecycle's rows. `directory` (users, agents, sponsors,
    groups, agent keys), `access` (token revocation, users' keys), `federation` (OIDC
    providers, linked subjects), `events` (shared signals), `policies` (policies, pool
    assignments, approvals, session controls), `console` (logouts), `secrets` (sealed columns),
    `audit` (the audit log's state, entries and tiles).
    Repositories are made on first use, so a unit of work costs only what it touches.
    """

    def __init__(self, conn: Connection, keys: StoreKeys, *, writable: bool) -> None:
        self.connection = conn
        """For a new pillar's repository (built on this connection, in this transaction);
        code above the store uses the repositories."""
        self.writable = writable
        self._keys = keys

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.connection.dialect.name

    @cached_property
    def pools(self) -> PoolRepository:
        return PoolRepository(self.connection, writable=self.writable)

    @cached_property
    def pcs(self) -> PCRepository:
        return PCRepository(self.connection, writable=self.writable)

    @cached_property
    def sessions(self) -> SessionRepository:
        return SessionRepository(self.connection, writable=self.writable)

    @cached_property
    def directory(self) -> DirectoryRepository:
        return DirectoryRepository(self.connection, writable=self.writable, keys=self._keys)

    @cached_property
    def access(self) -> AccessRepository:
        return AccessRepository(self.connection, writable=self.writable)

    @cached_property
    def federation(self) -> FederationRepository:
        return FederationRepository(self.connection, writable=self.writable, keys=self._keys)

    @cached_property
    def events(self) -> EventsRepository:
        return EventsRepository(self.connection, writable=self.writable, keys=self._keys)

    @cached_property
    def policies(self) -> PolicyRepository:
        return PolicyRepository(self.connection, writable=self.writable)

    @cached_property
    def console(self) -> ConsoleRepository:
        return ConsoleRepository(self.connection, writable=self.writable)

    @cached_property
    def audit(self) -> AuditRepository:
        return AuditRepository(self.connection, writable=self.writable)

    @cached_property
    def secrets(self) -> SecretsRepository:
        return SecretsRepository(self.connection, writable=self.writable, keys=self._keys)


def check_no_open_unit_of_work(database: str) -> None:
    """Refuse a second transaction on `database` while this thread or task holds one open."""
    if database in _OPEN.get():
        raise UnitOfWorkError(
            "a unit of work is already open on this store here: do this through its "
            "repositories (uow.pools, uow.sessions, ...) instead of opening another "
            "transaction or calling a Store method, which would not see its uncommitted "
            "writes (and, on SQLite, would wait for its lock)"
        )


@contextmanager
def unit_of_work(
    engine: Engine, keys: StoreKeys, *, database: str, write: bool
) -> Iterator[UnitOfWork]:
    """Open a unit of work on `engine`: committed when the block ends normally, rolled back
    when an exception leaves it. `database` names it for the one-at-a-time rule."""
    open_now = _OPEN.get()
    if database in open_now:
        check_no_open_unit_of_work(database)
    token = _OPEN.set(open_now | {database})
    try:
        with transaction(engine, write=write) as conn:
            yield UnitOfWork(conn, keys, writable=write)
    finally:
        _OPEN.reset(token)
