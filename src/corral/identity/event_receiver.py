"""Security events coming in: an external identity provider pushes CAEP SETs (RFC 8935).

`EventReceiver.receive` verifies the SET (`corral.identity.caep.verify_set`: trusted issuer
with `allow_events`, its keys, Corral as audience, fresh, never seen) and acts on it:

| event | effect on the mapped agent or user |
|---|---|
| session-revoked | tokens issued so far refused; its active sessions released |
| credential-change, change_type revoke or delete | tokens issued so far refused |
| credential-change, create or update | none |
| risk-level-change | an agent's risk raised to the level (LOW/MEDIUM/HIGH); never lowered |

The subject maps to a Corral identity only through an explicit link (`corral federation link`,
`Store.resolve_subject`). An event about anyone else is accepted (202) and does nothing: the
provider may publish events for all its subjects, and telling it which ones Corral knows would
leak the directory. Effects go through the Directory and the ControlPlane, so they take effect on
the next request and Corral's own receivers hear about them as Corral events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from corral.domain.access import SYSTEM
from corral.domain.events import CREDENTIAL_CHANGE, RISK_LEVEL_CHANGE, SESSION_REVOKED
from corral.domain.federation import FederatedSubject, OidcProvider
from corral.domain.identity import Risk
from corral.errors import NotFoundError, PermissionDeniedError, SessionGoneError
from corral.identity.caep import (
    DEFAULT_MAX_AGE,
    KeysFor,
    ReceivedEvent,
    corral_risk,
    pinned_keys,
    verify_set,
)
from corral.identity.directory import Directory
from corral.identity.errors import AuthError, SetRefusedError
from corral.identity.federation_service import FederationService
from corral.lifecycle.control import ControlPlane
from corral.store import Store

__all__ = ["EventReceiver", "Outcome", "federation_keys", "subject_key"]

log = logging.getLogger("corral.events")

_RISK_ORDER = (Risk.NONE, Risk.LOW, Risk.MEDIUM, Risk.HIGH)
RELEASE_REASON = "caep_session_revoked"


@dataclass(frozen=True)
class Outcome:
    """What an accepted event did, for the log and the tests (never the token)."""

    event_type: str
    issuer: str
    jti: str
    principal: str | None  # the Corral identity it mapped to, if any
    action: str


def subject_key(subject: Mapping[str, Any], provider: OidcProvider) -> str | None:
    """The provider-side subject to look up in the links: `sub` of an iss_sub identifier
    issued by this provider, the address of an email one, the id of an opaque one, or that of
    a complex subject's `user`. None when the subject cannot be one of this provider's."""
    fmt = subject.get("format")
    if fmt == "iss_sub":
        return str(subject["sub"]) if subject.get("iss") == provider.issuer else None
    if fmt == "email":
        return str(subject["email"])
    if fmt == "opaque":
        return str(subject["id"])
    user = subject.get("user")
    return subject_key(user, provider) if isinstance(user, Mapping) else None


class EventReceiver:
    """The push endpoint's service half. `audience` is Corral's issuer URL; `keys_for` gives
    a provider's JWK Set (pinned keys by default; a JWKS fetcher plugs in here)."""

    def __init__(
        self,
        store: Store,
        directory: Directory,
        control: ControlPlane | None,
        *,
        audience: str,
        keys_for: KeysFor = pinned_keys,
        clock: Callable[[], float] = time.time,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.store = store
        self.directory = directory
        self.control = control
        self.audience = audience.rstrip("/")
        self.keys_for = keys_for
        self._clock = clock
        self.max_age = max_age
        #: told each verified SET and what Corral did about it (the audit log's "security
        #: events in"); must not block
        self.on_applied: Callable[[Outcome], None] | None = None

    def _provider(self, issuer: str) -> OidcProvider | None:
        try:
            return self.store.get_oidc_provider_by_issuer(issuer)
        except NotFoundError:
            return None

    async def receive(self, token: str) -> Outcome:
        """Verify and act; SetRefusedError for a refused SET. If acting fails, the jti is
        forgotten again so the transmitter's retry is not taken for a replay."""
        event = await asyncio.to_thread(
            lambda: verify_set(
                token,
                audience=self.audience,
                provider_for=self._provider,
                remember=self.store.remember_ssf_inbound,
                now=self._clock(),
                keys_for=self.keys_for,
                max_age=self.max_age,
            )
        )
        try:
            outcome = await self._apply(event)
        except BaseException:
            await asyncio.to_thread(self.store.forget_ssf_inbound, event.issuer, event.jti)
            raise
        if self.on_applied is not None:  # refused SETs are not: a flood must not fill the log
            try:
                self.on_applied(outcome)
            except Exception:
                log.exception("the audit record of a received SET was not taken")
        log.info(
            "SET %s from %s (%s): %s %s",
            outcome.jti,
            outcome.issuer,
            outcome.event_type.rsplit("/", 1)[-1],
            outcome.principal or "unmapped subject",
            outcome.action,
        )
        return outcome

    async def _apply(self, event: ReceivedEvent) -> Outcome:
        def done(principal: str | None, action: str) -> Outcome:
            return Outcome(event.type, event.issuer, event.jti, principal, action)

        key = subject_key(event.subject, event.provider)
        link: FederatedSubject | None = None
        if key is not None:
            link = await asyncio.to_thread(self.store.resolve_subject, event.provider.name, key)
        if link is None:
            return done(None, "ignored")
        who = link.principal_id
        reason = f"{event.type.rsplit('/', 1)[-1]} from {event.provider.name}"
        if event.type == SESSION_REVOKED:
            await self._revoke(who, reason)
            released = await self._release_sessions(who)
            return done(who, f"tokens revoked, {released} session(s) released")
        if event.type == CREDENTIAL_CHANGE:
            if event.payload["change_type"] in ("revoke", "delete"):
                await self._revoke(who, reason)
                return done(who, "tokens revoked")
            return done(who, "no effect")
        if event.type == RISK_LEVEL_CHANGE:
            return done(who, await self._raise_risk(link, str(event.payload["current_level"])))
        return done(who, "no effect")  # verify_set admits only the three types

    async def _revoke(self, principal: str, reason: str) -> None:
        await asyncio.to_thread(
            lambda: self.directory.revoke_tokens(
                principal, initiating_entity="policy", reason=reason
            )
        )

    async def _release_sessions(self, principal: str) -> int:
        sessions = await asyncio.to_thread(
            lambda: self.store.list_sessions(active_only=True, owner=principal)
        )
        released = 0
        for session in sessions:
            try:
                if self.control is not None:
                    await self.control.release(session.id, RELEASE_REASON, principal=SYSTEM)
                else:
                    await asyncio.to_thread(
                        functools.partial(
                            self.store.release_session,
                            session.id,
                            reason=RELEASE_REASON,
                            now=datetime.now(UTC),
                        )
                    )
            except SessionGoneError:
                continue  # released meanwhile
            released += 1
        return released

    async def _raise_risk(self, link: FederatedSubject, level: str) -> str:
        """Raise, never lower: the provider adds its view of the risk to Corral's own
        (detections, admins), and only an admin lowers it again."""
        if link.kind != "agent":
            return "no effect (risk levels apply to agents)"
        wanted = corral_risk(level)
        agent = await asyncio.to_thread(self.directory.get_agent, link.principal_id)
        if _RISK_ORDER.index(wanted) <= _RISK_ORDER.index(agent.risk):
            return f"risk stays {agent.risk.value}"
        try:  # the store compares again under its lock: a raise made meanwhile stands
            await asyncio.to_thread(self.directory.set_risk, agent.id, wanted, may_lower=False)
        except PermissionDeniedError:
            return "risk stays (raised meanwhile)"
        return f"risk raised to {wanted.value}"


def federation_keys(federation: FederationService) -> KeysFor:
    """Verify pushed SETs with the provider's keys as the federation holds them: pinned, or
    fetched from its `jwks_uri` and cached (docs/federation.md). Fails closed."""

    def keys_for(provider: OidcProvider) -> Mapping[str, Any]:
        try:
            return {"keys": federation.keys.source(provider).keys()}
        except AuthError as exc:  # no keys, or the provider is unreachable
            raise SetRefusedError("invalid_key", "the issuer's keys are not available") from exc

    return keys_for
