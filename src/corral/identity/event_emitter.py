"""Corral's security events going out: CAEP SETs signed by Corral, queued, pushed (RFC 8935).

`EventEmitter` is the `EventSink` the directory and the control plane report changes to: it
signs one SET per enabled receiver subscribed to the event's type and queues them in the store's
outbox, in one transaction. `EventDelivery` is the loop (started by the app's lifespan) that
pushes due rows: POST with `Content-Type: application/secevent+jwt`, success is 202, anything
else is retried with exponential backoff up to a cap, then given up. Tokens are never logged.

Events are queued after the change they report has committed: a crash in between loses the
event, never the change (revocation itself is enforced from the store on the next request).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from corral.aio import wait_event
from corral.domain.access import Caller, CallerKind
from corral.domain.events import CAEP_EVENT_TYPES, OutboxEntry, SsfReceiver, retry_delay
from corral.domain.models import Session
from corral.identity.caep import (
    DEFAULT_MAX_AGE,
    CorralEvent,
    build_set,
    session_revoked,
    set_claims,
)
from corral.identity.keys import SigningKeyring
from corral.store import Store

__all__ = [
    "SET_CONTENT_TYPE",
    "EventDelivery",
    "EventEmitter",
    "release_event",
    "transmitter_metadata",
]

log = logging.getLogger("corral.events")

SET_CONTENT_TYPE = "application/secevent+jwt"
PUSH_TIMEOUT_S = 10.0
#: a claimed row is not pushed by anyone else for this long (longer than a push can take)
CLAIM_LEASE = timedelta(seconds=60)
TICK_S = 0.5
PRUNE_EVERY_S = 600.0
#: delivered and given-up SETs are kept this long for `corral events outbox`
OUTBOX_RETENTION = timedelta(days=7)
MAX_PARALLEL_PUSHES = 8


def _utcnow() -> datetime:
    return datetime.now(UTC)


def release_event(session: Session, by: Caller | None, reason: str) -> CorralEvent | None:
    """A session-revoked event when someone other than its owner ended the session (an admin,
    or the server evicting it); None for the owner's own release, which revokes nothing."""
    if session.owner is None or by is None or by.id == session.owner:
        return None
    entity = "policy" if by.kind is CallerKind.SYSTEM else "admin"
    return session_revoked(
        session.owner,
        at=(session.released_at or _utcnow()).timestamp(),
        initiating_entity=entity,
        reason=f"session {session.id} released ({reason})",
        session_id=session.id,
    )


class EventEmitter:
    """Turns Corral events into signed SETs in the outbox, one per subscribed receiver.

    `keyring` is called only when some receiver wants the event, so a CLI without receivers
    configured never touches the signing keys; it may return None when there are no keys (the
    event is then dropped with a warning).
    """

    def __init__(
        self,
        store: Store,
        *,
        issuer: str,
        keyring: Callable[[], SigningKeyring | None],
        clock: Callable[[], float] = time.time,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.issuer = issuer.rstrip("/")
        self._keyring = keyring
        self._clock = clock
        self.on_queued = on_queued
        #: told each event emitted and how many receivers it was queued for (the audit log's
        #: "security events out"); must not block
        self.on_emitted: Callable[[CorralEvent, int], None] | None = None

    def emit(self, event: CorralEvent) -> None:
        """Queue the event for its receivers. Never raises: the change it reports has already
        happened, and failing the caller now would only hide that."""
        queued = 0
        try:
            queued = self.queue(event)
        except Exception as exc:  # the exception text may quote SQL parameters: the SETs
            log.error(
                "could not queue %s for %s: %s", event.type, event.principal, type(exc).__name__
            )
        if self.on_emitted is not None:
            try:
                self.on_emitted(event, queued)
            except Exception:
                log.exception("the audit record of an emitted %s was not taken", event.type)

    def queue(self, event: CorralEvent) -> int:
        """Sign and queue; returns how many receivers the event was queued for."""
        receivers = [r for r in self.store.list_ssf_receivers() if r.wants(event.type)]
        if not receivers:
            return 0
        keyring = self._keyring()
        if keyring is None:
            log.warning("no signing keys here: %s for %s not queued", event.type, event.principal)
            return 0
        now = self._clock()
        items = []
        for receiver in receivers:
            jti = secrets.token_urlsafe(16)
            claims = set_claims(
                event, issuer=self.issuer, audience=receiver.audience, jti=jti, iat=now
            )
            items.append((receiver.id, jti, build_set(claims, keyring)))
        self.store.enqueue_ssf(items)
        log.info("queued %s for %s to %d receiver(s)", event.type, event.principal, len(items))
        if self.on_queued is not None:
            self.on_queued()
        return len(items)


def _describe(response: httpx.Response) -> str:
    """Why a push failed, from the receiver's answer (RFC 8935 `err` and `description`)."""
    text = f"HTTP {response.status_code}"
    if response.status_code // 100 == 2:
        return f"{text} (a push receiver answers 202)"
    try:
        body = response.json()
    except ValueError:
        return text
    if isinstance(body, dict) and isinstance(body.get("err"), str):
        text += f" {body['err'][:64]}"
        if isinstance(body.get("description"), str):
            text += f": {body['description'][:300]}"
    return text


class EventDelivery:
    """Pushes due outbox rows to their receivers until cancelled; safe to run in several
    processes at once (rows are claimed in the store)."""

    def __init__(
        self,
        store: Store,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _utcnow,
        tick_s: float = TICK_S,
        inbound_max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.store = store
        self._client = client
        self._clock = clock
        self._tick = tick_s
        self._inbound_keep = timedelta(seconds=2 * inbound_max_age)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_prune = float("-inf")  # prune on the first pass

    def wake(self) -> None:
        """Look at the outbox now (thread-safe; a no-op before `run` started)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        own = self._client is None
        client = self._client or httpx.AsyncClient(timeout=PUSH_TIMEOUT_S, follow_redirects=False)
        try:
            while True:
                try:
                    await self.deliver_due(client)
                    await self._maybe_prune()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep delivering whatever one pass hit
                    log.error("event delivery pass failed: %s", type(exc).__name__)
                self._wake.clear()
                await wait_event(self._wake, self._tick)
        finally:
            if own:
                await client.aclose()

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Push every due row once; returns how many were delivered."""
        now = self._clock()
        due = await asyncio.to_thread(self.store.claim_ssf_due, now, lease=CLAIM_LEASE)
        if not due:
            return 0
        receivers = {r.id: r for r in await asyncio.to_thread(self.store.list_ssf_receivers)}
        gate = asyncio.Semaphore(MAX_PARALLEL_PUSHES)

        async def one(entry: OutboxEntry) -> bool:
            async with gate:
                return await self._push(client, entry, receivers.get(entry.receiver_id))

        results = await asyncio.gather(*(one(e) for e in due))
        return sum(results)

    async def _push(
        self, client: httpx.AsyncClient, entry: OutboxEntry, receiver: SsfReceiver | None
    ) -> bool:
        error: str | None = None
        if receiver is None or not receiver.enabled:
            error = "the receiver is disabled"
        else:
            headers = {"Content-Type": SET_CONTENT_TYPE, "Accept": "application/json"}
            if receiver.auth_header:
                headers["Authorization"] = receiver.auth_header
            try:
                response = await client.post(
                    receiver.endpoint, content=entry.token.encode("ascii"), headers=headers
                )
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: the push did not complete"
            else:
                if response.status_code == 202:
                    await asyncio.to_thread(self.store.mark_ssf_delivered, entry.id, self._clock())
                    log.info("SET %s delivered to %s", entry.jti, receiver.name)
                    return True
                error = _describe(response)
        retry_at = self._clock() + retry_delay(entry.attempts + 1)
        await asyncio.to_thread(self.store.mark_ssf_failed, entry.id, error, retry_at)
        name = receiver.name if receiver else entry.receiver_id
        log.warning("SET %s to %s failed (%s); next try %s", entry.jti, name, error, retry_at)
        return False

    async def _maybe_prune(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = loop.time()
        now = self._clock()
        await asyncio.to_thread(
            lambda: self.store.prune_ssf(
                outbox_before=now - OUTBOX_RETENTION, inbound_before=now - self._inbound_keep
            )
        )


def transmitter_metadata(issuer: str) -> dict[str, object]:
    """`/.well-known/ssf-configuration` (SSF 1.0 transmitter metadata): who signs Corral's
    SETs, where its keys are, that it pushes (RFC 8935), and which event types it emits.
    Receivers are configured by an operator (`corral events receivers add`), so no stream
    management endpoint is offered."""
    issuer = issuer.rstrip("/")
    return {
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "delivery_methods_supported": ["urn:ietf:rfc:8935"],
        "events_supported": list(CAEP_EVENT_TYPES),
    }
