"""Console logout rows: the ids of console sessions ended before they expire.

The console keeps the live ones in memory for its per-request check (no store round trip on
the request path) and reads them back at start, so a restart keeps a logged-out browser out.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from corral.store._tables import console_logouts

__all__ = ["end_console_session", "live_console_logouts"]


def end_console_session(
    conn: Connection, token_id: str, user_id: str, expires_at: datetime, now: datetime
) -> None:
    """Record one logout (again is a no-op) and drop rows that have expired anyway."""
    conn.execute(delete(console_logouts).where(console_logouts.c.expires_at <= now))
    known = conn.execute(
        select(console_logouts.c.token_id).where(console_logouts.c.token_id == token_id)
    ).first()
    if known is None:
        conn.execute(
            insert(console_logouts).values(
                token_id=token_id, user_id=user_id, expires_at=expires_at
            )
        )


def live_console_logouts(conn: Connection, now: datetime) -> list[tuple[str, datetime]]:
    """(token id, expiry) of every logout whose session would still be live."""
    rows = conn.execute(
        select(console_logouts.c.token_id, console_logouts.c.expires_at).where(
            console_logouts.c.expires_at > now
        )
    )
    return [(r[0], r[1]) for r in rows]
