"""The reads on every request, without the ORM-level transaction machinery.

`principal_status` (authentication) and `access_versions` (policy decisions) run for every
request. Through a SQLAlchemy transaction each costs ~150 us, almost all of it connection,
BEGIN/COMMIT and result plumbing around a ~5 us query; a single SELECT on a pooled DBAPI
connection is atomic by itself on SQLite and PostgreSQL, so this path runs the statements
directly (~15 us). They are built from the same table metadata (or, for the two version
counters, plain SQL both databases read alike), and tests/store covers both databases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select

from corral.domain.access import CallerKind, PrincipalStatus
from corral.domain.identity import Risk
from corral.errors import StoreUnavailableError
from corral.store._directory import _roles
from corral.store._engine import is_outage, outage_errors
from corral.store._policies import VERSIONS_SQL
from corral.store._tables import agents, users

__all__ = ["HotReads"]

_AGENT = select(agents.c.id, agents.c.enabled, agents.c.risk, agents.c.tokens_revoked_before).where(
    agents.c.id == bindparam("subject")
)
_USER = select(users.c.id, users.c.enabled, users.c.roles, users.c.tokens_revoked_before).where(
    users.c.id == bindparam("subject")
)


@dataclass(frozen=True)
class _Statement:
    sql: str
    positions: Sequence[str] | None  # parameter order for positional paramstyles

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        if self.positions is None:
            return dict(values)
        return tuple(values[name] for name in self.positions)


def _aware(value: Any) -> datetime | None:
    """A stored time as aware UTC: SQLite hands back naive UTC text, PostgreSQL timestamptz."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class HotReads:
    """Compiled once per engine; each call checks a DBAPI connection out of the pool."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._outage = outage_errors(engine)
        self._agent = self._compile(_AGENT)
        self._user = self._compile(_USER)
        self._versions = _Statement(VERSIONS_SQL, ())  # no parameters

    def _compile(self, query: Any) -> _Statement:
        compiled = query.compile(dialect=self._engine.dialect)
        positions = list(compiled.positiontup) if compiled.positional else None
        return _Statement(str(compiled), positions)

    def _first(self, statement: _Statement, subject: str) -> tuple[Any, ...] | None:
        try:
            return self._query(statement, subject)
        except self._outage as exc:  # the store's boundary: corral.store._engine
            if not is_outage(exc):
                raise
            raise StoreUnavailableError() from exc

    def _query(self, statement: _Statement, subject: str) -> tuple[Any, ...] | None:
        conn = self._engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(statement.sql, statement.params({"subject": subject}))
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            conn.close()  # back to the pool, which rolls back whatever the driver began
        return tuple(row) if row is not None else None

    def access_versions(self) -> tuple[int, int]:
        """(directory version, policy-set version) in one SELECT of two single-row tables."""
        row = self._first(self._versions, "")
        return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)

    def principal_status(self, subject: str) -> PrincipalStatus | None:
        """The agent or user with id `subject` (never by name), or None if there is none."""
        agent = self._first(self._agent, subject)
        if agent is not None:
            return PrincipalStatus(
                kind=CallerKind.AGENT,
                id=agent[0],
                enabled=bool(agent[1]),
                risk=Risk(agent[2]),
                roles=frozenset(),
                tokens_revoked_before=_aware(agent[3]),
            )
        user = self._first(self._user, subject)
        if user is not None:
            return PrincipalStatus(
                kind=CallerKind.USER,
                id=user[0],
                enabled=bool(user[1]),
                risk=Risk.NONE,
                roles=_roles(user[2]),
                tokens_revoked_before=_aware(user[3]),
            )
        return None
