"""Shared Signals rows: receivers, the outbox of SETs to push, and the jtis of SETs received.

The outbox lives in the store so an event raised anywhere (a server worker, or the CLI on the
server host, which writes the store directly) is pushed by whichever server runs, and survives
restarts. A push is claimed by moving `next_attempt_at` forward with a compare-and-set, so two
processes never push the same row at once. Inbound jtis are recorded by insert-unique (the
primary key), so a replay is refused across processes too.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import Connection, RowMapping, and_, delete, insert, or_, select, update

from corral.domain.events import (
    MAX_ATTEMPTS,
    OutboxEntry,
    SsfReceiver,
    parse_event_types,
    validate_receiver,
)
from corral.errors import ConflictError, NotFoundError
from corral.store._secrets import AUTH_HEADER, StoreKeys
from corral.store._tables import ssf_inbound, ssf_outbox, ssf_receivers

__all__ = [
    "claim",
    "create_receiver",
    "delete_receiver",
    "due",
    "enqueue",
    "forget_inbound",
    "get_receiver",
    "list_outbox",
    "list_receivers",
    "mark_delivered",
    "mark_failed",
    "prune",
    "receiver_exists_error",
    "remember_inbound",
]

MAX_ERROR_CHARS = 500


def receiver_exists_error(name: str) -> ConflictError:
    return ConflictError(
        f"a receiver named {name!r} already exists",
        hint="choose another name, or remove it first (corral events receivers remove)",
    )


def _receiver(row: RowMapping, keys: StoreKeys | None) -> SsfReceiver:
    """With `keys` None the header is left out (not opened)."""
    header = row["auth_header"] if keys is not None else None
    return SsfReceiver(
        id=row["id"],
        name=row["name"],
        endpoint=row["endpoint"],
        audience=row["audience"],
        events=tuple(e for e in row["events"].split(",") if e),
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
        auth_header=keys.open(header, AUTH_HEADER, row["id"]) if keys and header else None,
    )


def create_receiver(
    conn: Connection,
    *,
    name: str,
    endpoint: str,
    audience: str,
    events: tuple[str, ...],
    auth_header: str | None,
    now: datetime,
    keys: StoreKeys,
) -> SsfReceiver:
    validate_receiver(name, endpoint, audience, auth_header)
    wanted = parse_event_types(events)
    if conn.execute(select(ssf_receivers.c.id).where(ssf_receivers.c.name == name)).first():
        raise receiver_exists_error(name)
    receiver_id = f"r-{secrets.token_hex(8)}"
    conn.execute(
        insert(ssf_receivers).values(
            id=receiver_id,
            name=name,
            endpoint=endpoint,
            audience=audience,
            events=",".join(wanted),
            auth_header=keys.seal(auth_header, AUTH_HEADER, receiver_id) if auth_header else None,
            enabled=True,
            created_at=now,
        )
    )
    return get_receiver(conn, receiver_id, keys)


def get_receiver(conn: Connection, ref: str, keys: StoreKeys | None) -> SsfReceiver:
    """By id or name; with `keys` None, without its authorization header."""
    query = select(ssf_receivers).where(or_(ssf_receivers.c.id == ref, ssf_receivers.c.name == ref))
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFoundError(
            f"no receiver named {ref!r}", hint="corral events receivers list shows them"
        )
    return _receiver(row, keys)


def list_receivers(conn: Connection, keys: StoreKeys) -> list[SsfReceiver]:
    rows = conn.execute(select(ssf_receivers).order_by(ssf_receivers.c.name)).mappings()
    return [_receiver(r, keys) for r in rows]


def delete_receiver(conn: Connection, ref: str) -> SsfReceiver:
    """Remove a receiver and its undelivered SETs (the outbox rows go with it). Its header is
    not opened, so a receiver whose sealed header no longer opens can still be removed."""
    receiver = get_receiver(conn, ref, None)
    conn.execute(delete(ssf_outbox).where(ssf_outbox.c.receiver_id == receiver.id))
    conn.execute(delete(ssf_receivers).where(ssf_receivers.c.id == receiver.id))
    return receiver


def _entry(row: RowMapping) -> OutboxEntry:
    return OutboxEntry(
        id=int(row["id"]),
        receiver_id=row["receiver_id"],
        jti=row["jti"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        attempts=int(row["attempts"]),
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
        token=row["token"],
    )


def enqueue(conn: Connection, items: list[tuple[str, str, str]], now: datetime) -> None:
    """Queue (receiver id, jti, signed SET) rows, due at once."""
    if not items:
        return
    conn.execute(
        insert(ssf_outbox),
        [
            {
                "receiver_id": receiver_id,
                "jti": jti,
                "token": token,
                "created_at": now,
                "next_attempt_at": now,
                "attempts": 0,
                "delivered_at": None,
                "last_error": None,
            }
            for receiver_id, jti, token in items
        ],
    )


_PENDING = and_(ssf_outbox.c.delivered_at.is_(None), ssf_outbox.c.attempts < MAX_ATTEMPTS)


def due(conn: Connection, now: datetime, limit: int) -> list[OutboxEntry]:
    """Rows due now, oldest first (a read: most polls find nothing and write nothing)."""
    rows = conn.execute(
        select(ssf_outbox)
        .where(_PENDING, ssf_outbox.c.next_attempt_at <= now)
        .order_by(ssf_outbox.c.next_attempt_at, ssf_outbox.c.id)
        .limit(limit)
    ).mappings()
    return [_entry(r) for r in rows]


def claim(
    conn: Connection, entries: list[OutboxEntry], now: datetime, lease: timedelta
) -> list[OutboxEntry]:
    """Claim rows read by `due` for `lease` (their next attempt moved past the push). The claim
    is a compare-and-set on `next_attempt_at`: of two processes claiming the same row, one
    updates it and the other sees zero rows changed and skips it."""
    claimed: list[OutboxEntry] = []
    for entry in entries:
        moved = conn.execute(
            update(ssf_outbox)
            .where(
                ssf_outbox.c.id == entry.id,
                ssf_outbox.c.delivered_at.is_(None),
                ssf_outbox.c.next_attempt_at == entry.next_attempt_at,
            )
            .values(next_attempt_at=now + lease)
        )
        if moved.rowcount == 1:
            claimed.append(entry)
    return claimed


def mark_delivered(conn: Connection, entry_id: int, now: datetime) -> None:
    conn.execute(
        update(ssf_outbox)
        .where(ssf_outbox.c.id == entry_id)
        .values(delivered_at=now, attempts=ssf_outbox.c.attempts + 1, last_error=None)
    )


def mark_failed(conn: Connection, entry_id: int, error: str, next_attempt_at: datetime) -> None:
    conn.execute(
        update(ssf_outbox)
        .where(ssf_outbox.c.id == entry_id, ssf_outbox.c.delivered_at.is_(None))
        .values(
            attempts=ssf_outbox.c.attempts + 1,
            last_error=error[:MAX_ERROR_CHARS],
            next_attempt_at=next_attempt_at,
        )
    )


def list_outbox(conn: Connection, *, pending_only: bool, limit: int) -> list[OutboxEntry]:
    """Newest first."""
    query = select(ssf_outbox).order_by(ssf_outbox.c.id.desc()).limit(limit)
    if pending_only:
        query = query.where(_PENDING)
    return [_entry(r) for r in conn.execute(query).mappings()]


def remember_inbound(conn: Connection, issuer: str, jti: str, now: datetime) -> None:
    """Insert; a second insert of the same (issuer, jti) raises IntegrityError."""
    conn.execute(insert(ssf_inbound).values(issuer=issuer, jti=jti, received_at=now))


def forget_inbound(conn: Connection, issuer: str, jti: str) -> None:
    conn.execute(
        delete(ssf_inbound).where(ssf_inbound.c.issuer == issuer, ssf_inbound.c.jti == jti)
    )


def prune(
    conn: Connection, *, outbox_before: datetime, inbound_before: datetime
) -> tuple[int, int]:
    """Drop delivered and given-up SETs created before `outbox_before`, and inbound jtis
    received before `inbound_before` (older than any SET still accepted). Returns the counts."""
    done = or_(ssf_outbox.c.delivered_at.is_not(None), ssf_outbox.c.attempts >= MAX_ATTEMPTS)
    outbox = conn.execute(
        delete(ssf_outbox).where(done, ssf_outbox.c.created_at < outbox_before)
    ).rowcount
    inbound = conn.execute(
        delete(ssf_inbound).where(ssf_inbound.c.received_at < inbound_before)
    ).rowcount
    return int(outbox or 0), int(inbound or 0)
