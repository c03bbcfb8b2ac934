"""Rows to domain records: the store hands out the domain's dataclasses, never SQLAlchemy rows."""

from __future__ import annotations

from sqlalchemy import RowMapping

from corral.domain.models import PC, PCState, Pool, PoolSpec, Session, SessionState

__all__ = ["pc_from_row", "pool_from_row", "pool_values", "session_from_row"]

_SPEC_FIELDS = (
    "image",
    "region",
    "size",
    "warm",
    "max",
    "idle_timeout_s",
    "max_lifetime_s",
    "allow_bearer",
    "max_sessions_per_agent",
)


def pool_values(spec: PoolSpec) -> dict[str, object]:
    """The pool columns for `spec` (every spec field is a column)."""
    values: dict[str, object] = {"name": spec.name}
    values.update({f: getattr(spec, f) for f in _SPEC_FIELDS})
    return values


def pool_from_row(row: RowMapping) -> Pool:
    values = {f: row[f] for f in _SPEC_FIELDS}
    values["allow_bearer"] = bool(values["allow_bearer"])
    spec = PoolSpec(name=row["name"], **values)
    return Pool(spec=spec, created_at=row["created_at"], deleting=bool(row["deleting"]))


def pc_from_row(row: RowMapping) -> PC:
    return PC(
        id=row["id"],
        pool=row["pool"],
        state=PCState(row["state"]),
        session_id=row["session_id"],
        created_at=row["created_at"],
        detail=row["detail"],
    )


def session_from_row(row: RowMapping) -> Session:
    return Session(
        id=row["id"],
        pool=row["pool"],
        pc_id=row["pc_id"],
        state=SessionState(row["state"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_activity=row["last_activity"],
        idempotency_key=row["idempotency_key"],
        released_at=row["released_at"],
        release_reason=row["release_reason"],
        owner=row["owner"],
        released_by=row["released_by"],
    )
