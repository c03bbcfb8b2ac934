"""The host CLI's Gate: `corral user|agent|federation|events ...` write through it.

The host CLI works on the local store with the data folder's rights (root on the host), without
a server. Its writes still walk the Gate's stages with an explicit caller, `OPERATOR`
(`CallerKind.OPERATOR`): the authorize stage asks Cedar for the operation's catalogue action
(the shipped system policy `system-host-operator-administers` allows it, so root on the host
administers as it always could, and a stored forbid can narrow it), and the record stage writes
every one, allowed or refused, into the audit log (the same log as the server's: appends take
turns on the store's log state), signing a checkpoint before the command ends. Reads (list,
show) stay direct: they change nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from corral.domain.access import OPERATOR
from corral.gate._gate import Gate, GateCall, PolicyAuthorizer, Route
from corral.gate.incoming import trace_from, traced
from corral.gate.operations import (
    AddProvider,
    AddReceiver,
    AgentRisk,
    CreateAgent,
    CreateUser,
    CreateUserKey,
    DisableAgent,
    LinkSubject,
    RevokeKey,
    RotateKey,
    Sponsor,
    UnlinkSubject,
    UserRoles,
    operation,
)

if TYPE_CHECKING:
    from corral.audit.recorder import AuditRecorder
    from corral.identity.directory import Directory
    from corral.store import Store

__all__ = ["HostGate"]


def _sync(fn: Callable[[GateCall], Any]) -> Route:
    """A route over the policy-free layer: the authorize stage decides (`decides=False`)."""

    async def run(call: GateCall) -> Any:
        return fn(call)

    return Route(run, decides=False)


def _host_routes(directory: Directory, store: Store) -> dict[str, Route]:
    d, s = directory, store

    def target(call: GateCall) -> str:
        return call.target or ""

    def create_user(call: GateCall) -> Any:
        a: CreateUser = call.args
        return d.create_user(a.name, roles=a.roles, email=a.email, password=a.password)

    def create_user_key(call: GateCall) -> Any:
        a: CreateUserKey = call.args
        return d.create_user_credential(target(call), a.token_endpoint)

    def set_user_roles(call: GateCall) -> Any:
        a: UserRoles = call.args
        return d.set_roles(target(call), a.roles)

    def create_agent(call: GateCall) -> Any:
        a: CreateAgent = call.args
        return d.create_agent(a.name, a.sponsors, a.groups, a.token_endpoint or "")

    def disable_agent(call: GateCall) -> Any:
        a: DisableAgent = call.args
        return d.disable_agent(target(call), a.reason)

    def set_risk(call: GateCall) -> Any:
        a: AgentRisk = call.args
        return d.set_risk(target(call), a.level)

    def add_sponsor(call: GateCall) -> Any:
        a: Sponsor = call.args
        return d.add_sponsor(target(call), a.user)

    def remove_sponsor(call: GateCall) -> Any:
        a: Sponsor = call.args
        return d.remove_sponsor(target(call), a.user)

    def rotate_key(call: GateCall) -> Any:
        a: RotateKey = call.args
        grace = timedelta(seconds=a.grace_s)
        return d.rotate_agent_key(target(call), grace, a.token_endpoint or "")

    def revoke_key(call: GateCall) -> Any:
        a: RevokeKey = call.args
        return d.revoke_agent_key(target(call), a.kid)

    def add_provider(call: GateCall) -> Any:
        a: AddProvider = call.args
        return s.create_oidc_provider(a.provider)

    def link_subject(call: GateCall) -> Any:
        a: LinkSubject = call.args
        return s.link_subject(target(call), a.subject, a.kind, a.principal)

    def unlink_subject(call: GateCall) -> Any:
        a: UnlinkSubject = call.args
        return s.unlink_subject(target(call), a.subject)

    def add_receiver(call: GateCall) -> Any:
        a: AddReceiver = call.args
        return s.create_ssf_receiver(
            target(call),
            endpoint=a.endpoint,
            audience=a.audience,
            events=a.events,
            auth_header=a.auth_header,
        )

    return {
        "create_user": _sync(create_user),
        "create_user_key": _sync(create_user_key),
        "set_user_roles": _sync(set_user_roles),
        "disable_user": _sync(lambda c: d.disable_user(target(c))),
        "enable_user": _sync(lambda c: d.enable_user(target(c))),
        "revoke_user_tokens": _sync(lambda c: d.revoke_tokens(d.get_user(target(c)).id)),
        "create_agent": _sync(create_agent),
        "disable_agent": _sync(disable_agent),
        "enable_agent": _sync(lambda c: d.enable_agent(target(c))),
        "set_risk": _sync(set_risk),
        "add_sponsor": _sync(add_sponsor),
        "remove_sponsor": _sync(remove_sponsor),
        "rotate_key": _sync(rotate_key),
        "revoke_key": _sync(revoke_key),
        "revoke_agent_tokens": _sync(lambda c: d.revoke_tokens(d.get_agent(target(c)).id)),
        "add_oidc_provider": _sync(add_provider),
        "remove_oidc_provider": _sync(lambda c: s.delete_oidc_provider(target(c))),
        "link_subject": _sync(link_subject),
        "unlink_subject": _sync(unlink_subject),
        "add_ssf_receiver": _sync(add_receiver),
        "remove_ssf_receiver": _sync(lambda c: s.delete_ssf_receiver(target(c))),
    }


class HostGate:
    """A Gate over the local store for the host CLI, calling as `OPERATOR`."""

    def __init__(self, directory: Directory, store: Store, *, record: bool = True) -> None:
        from corral.access.service import PolicyService  # Cedar only when a write runs

        self.store = store
        self.recorder = _HostRecorder(store) if record else None
        self.gate = Gate(
            _host_routes(directory, store),
            authorizer=PolicyAuthorizer(PolicyService(store)),
            recorder=self.recorder,
        )

    def run(self, name: str, target: str | None = None, args: Any = None) -> Any:
        """Walk the Gate for the catalogue operation `name`, as the host operator, in the
        trace `TRACEPARENT` names (OpenTelemetry's variable for a process's parent span);
        recorded in the audit log, under a checkpoint signed before this returns."""
        trace = trace_from({k.lower(): v for k, v in os.environ.items() if k in _TRACE_VARS})

        async def run() -> Any:
            with traced(trace):
                return await self.gate.handle(OPERATOR, operation(name), target, args)

        try:
            return asyncio.run(run())
        finally:
            if self.recorder is not None:
                self.recorder.close()  # a last checkpoint covers this command's record


class _HostRecorder:
    """The audit log's record stage for the host CLI, opened on the first write (a read-only
    command loads no key and starts no writer)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._inner: AuditRecorder | None = None

    def _open(self) -> AuditRecorder:
        if self._inner is None:
            from corral.audit.checkpoints import LogKeys, sign_checkpoint
            from corral.audit.recorder import AuditRecorder
            from corral.audit.writer import AuditWriter

            keys = LogKeys.load()
            writer = AuditWriter(self.store, signer=lambda uow: sign_checkpoint(uow, keys))
            self._inner = AuditRecorder(writer, content_key=keys.content_key, via="cli")
        self._inner.writer.start()
        return self._inner

    async def admit(self, call: GateCall) -> None:
        await self._open().admit(call)

    async def record(self, call: GateCall) -> None:
        await self._open().record(call)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.writer.stop()


#: the environment variables that carry W3C trace context into a process
_TRACE_VARS = ("TRACEPARENT", "TRACESTATE", "BAGGAGE")
