"""The server's parts around its Gate, assembled once for the HTTP adapter.

`create_app` (corral.api) renders and routes; it builds nothing of a pillar itself. This puts
together what the server's adapters use: the Gate over the lifecycle, the directory and
policy services; the doors that run before there is a caller (the token endpoint, the
console's sign-in, request authentication's continuous access evaluation); the gateway's
session handles. `corral up` (the composition root, corral.cli.serve) builds the store, the
runtime, the keys and the lifecycle, and hands them here through `create_app`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.console.service import ConsoleService, ConsoleSettings
from corral.gate._gate import Gate
from corral.gate._routes import lifecycle_gate
from corral.identity.directory import Directory
from corral.identity.directory_service import DirectoryService
from corral.identity.evaluation import AccessEvaluator
from corral.identity.handles import SessionHandles

if TYPE_CHECKING:
    from corral.audit.service import AuditService
    from corral.identity.token_endpoint import AuthService
    from corral.lifecycle.control import ControlPlane

__all__ = ["ServerParts", "assemble"]


@dataclass(frozen=True)
class ServerParts:
    gate: Gate
    #: MCP gateway session handles: from the shared keyring with authentication (any
    #: control-plane process opens another's), else a key of this process only
    handles: SessionHandles
    #: continuous access evaluation for request authentication (None without authentication)
    access: AccessEvaluator | None
    #: the console's sign-in service (None without authentication)
    console: ConsoleService | None


def assemble(
    control: ControlPlane,
    *,
    base_url: str,
    auth: AuthService | None = None,
    console_settings: ConsoleSettings | None = None,
    audit: AuditService | None = None,
) -> ServerParts:
    """Wire the server's services for `create_app` (`audit`: the record stage and the log's
    reads; without it calls are not recorded, as in tests of other parts)."""
    # Acquire answers its grant from the service: the sessions' URLs, and their tokens.
    control.configure_grants(base_url, auth.session_grant if auth is not None else None)
    directory = Directory(control.store, events=control.events)  # CAEP events (docs/events.md)
    directory_service = DirectoryService(
        directory, token_endpoint=f"{base_url}/v1/token", policy=control.policy
    )
    gate = lifecycle_gate(control, directory_service, audit)
    if audit is not None:  # what happens outside the Gate's calls, recorded too
        control.manager.on_lifecycle = audit.recorder.note_lifecycle
    if auth is not None and audit is not None:
        # the token endpoint runs before any caller: it tells the log each outcome itself
        auth.on_outcome = audit.recorder.record_token
    if auth is None:
        return ServerParts(gate, SessionHandles.ephemeral(), None, None)
    console = ConsoleService(
        control.store,
        auth.keyring,
        auth.issuer,
        federation=auth.federation,
        settings=console_settings or ConsoleSettings(),
    )
    return ServerParts(
        gate, SessionHandles.from_keyring(auth.keyring), AccessEvaluator(control.store), console
    )
