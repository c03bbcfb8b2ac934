"""Shared Signals records and rules: where Corral pushes its security events, and when it retries.

Pure (no I/O). A receiver is an HTTP endpoint (RFC 8935 push) subscribed to some CAEP event
types; each event becomes one Security Event Token per subscribed receiver, kept in an outbox
until the receiver answers 202. Failed pushes are retried with exponential backoff, capped, and
given up after `MAX_ATTEMPTS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from corral.domain.urls import require_https_or_loopback
from corral.errors import InvalidInputError

__all__ = [
    "CAEP_EVENT_TYPES",
    "CREDENTIAL_CHANGE",
    "MAX_ATTEMPTS",
    "RISK_LEVEL_CHANGE",
    "SESSION_REVOKED",
    "OutboxEntry",
    "SsfReceiver",
    "event_short_name",
    "parse_event_types",
    "retry_delay",
    "validate_receiver",
]

_CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SESSION_REVOKED = _CAEP + "session-revoked"
CREDENTIAL_CHANGE = _CAEP + "credential-change"
RISK_LEVEL_CHANGE = _CAEP + "risk-level-change"
#: the CAEP 1.0 event types Corral emits and accepts, in a stable order
CAEP_EVENT_TYPES: tuple[str, ...] = (SESSION_REVOKED, CREDENTIAL_CHANGE, RISK_LEVEL_CHANGE)

#: pushes of one SET before it is given up (about four hours with the delays below)
MAX_ATTEMPTS = 24
RETRY_BASE = timedelta(seconds=1)
RETRY_CAP = timedelta(minutes=15)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_AUTH_HEADER = 4096


@dataclass(frozen=True)
class SsfReceiver:
    """An endpoint Corral pushes SETs to, and which event types it wants."""

    id: str
    name: str
    endpoint: str
    audience: str  # the `aud` of the SETs it gets
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime
    #: sent as the Authorization header of each push; a secret, never shown
    auth_header: str | None = field(default=None, repr=False)

    def wants(self, event_type: str) -> bool:
        return self.enabled and event_type in self.events


@dataclass(frozen=True)
class OutboxEntry:
    """One SET on its way to one receiver."""

    id: int
    receiver_id: str
    jti: str
    created_at: datetime
    next_attempt_at: datetime
    attempts: int
    delivered_at: datetime | None
    last_error: str | None
    token: str = field(repr=False)  # the signed SET: never logged

    @property
    def status(self) -> str:
        """delivered, failed (given up) or pending."""
        if self.delivered_at is not None:
            return "delivered"
        return "failed" if self.attempts >= MAX_ATTEMPTS else "pending"


def event_short_name(event_type: str) -> str:
    """`session-revoked` for the CAEP URI, the URI itself for anything else."""
    return event_type.removeprefix(_CAEP)


def parse_event_types(values: Iterable[str]) -> tuple[str, ...]:
    """Event types from short names (`session-revoked`) or full URIs; empty means all three."""
    wanted: list[str] = []
    for value in values:
        for item in value.split(","):
            name = item.strip()
            if not name:
                continue
            uri = name if name.startswith("https://") else _CAEP + name
            if uri not in CAEP_EVENT_TYPES:
                raise InvalidInputError(
                    f"unknown event type {name!r}",
                    hint="use session-revoked, credential-change or risk-level-change",
                )
            if uri not in wanted:
                wanted.append(uri)
    return tuple(t for t in CAEP_EVENT_TYPES if t in wanted) if wanted else CAEP_EVENT_TYPES


def validate_receiver(
    name: str, endpoint: str, audience: str, auth_header: str | None = None
) -> None:
    """Refuse a receiver that could not be pushed to safely, saying what to change."""
    if not _NAME.match(name):
        raise InvalidInputError(
            f"receiver name {name!r} is not valid",
            hint="use 1-63 lowercase letters, digits, '.', '_' and '-'",
        )
    require_https_or_loopback(endpoint, "endpoint")
    if not audience or len(audience) > 512:
        raise InvalidInputError(
            "the audience is empty or too long", hint="give the `aud` the receiver expects"
        )
    if auth_header is not None and (
        not auth_header.strip()
        or len(auth_header) > MAX_AUTH_HEADER
        or any(c in auth_header for c in "\r\n")
    ):
        raise InvalidInputError(
            "the authorization header is empty, too long or spans several lines",
            hint="put one line such as `Bearer <token>` in the file",
        )


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed push: 1 s, 2 s, 4 s ... at most 15 min."""
    if attempts < 1:
        return timedelta(0)
    exponent = min(attempts - 1, 20)  # 2**20 s is far past the cap already
    delay: timedelta = RETRY_BASE * (2**exponent)
    return min(RETRY_CAP, delay)
