"""`corral events ...`: where Corral pushes its security events, and how the pushes went.

Like `corral user` and `corral agent`, these act on the local store directly. Events raised by
those commands (an agent's risk, a key rotated or revoked, tokens revoked) are signed with the
signing keys in the data folder and queued in the store; the running server pushes them.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli._common import (
    OutputFormat,
    OutputOption,
    TextTable,
    emit,
    err_console,
    handle_errors,
    local_store,
    out_console,
    print_json,
    read_secret_file,
)

if TYPE_CHECKING:  # the store, crypto and the event service load when a command runs
    from corral.domain.events import SsfReceiver
    from corral.identity.event_emitter import EventEmitter
    from corral.identity.keys import SigningKeyring
    from corral.store import Store

if TYPE_CHECKING:
    from corral.gate.host import HostGate

__all__ = ["app", "cli_events", "host_gate"]

app = typer.Typer(help="CAEP security events: receivers and deliveries.", no_args_is_help=True)
receivers_app = typer.Typer(help="Where Corral pushes its events.", no_args_is_help=True)
app.add_typer(receivers_app, name="receivers")

log = logging.getLogger("corral.events")


def _issuer() -> str:
    return os.environ.get("CORRAL_URL", "http://127.0.0.1:8420").rstrip("/")


def _server_keyring() -> SigningKeyring | None:
    """The server's keyring from the data folder; None (never a new one) if there is none,
    since SETs signed by keys the server does not publish could not be verified."""
    from corral.config import paths
    from corral.identity.keys import SigningKeyring

    path = paths().data / "signing-keys.json"
    if not path.exists():
        log.warning("no signing keys at %s: run `corral up` once on this host", path)
        return None
    return SigningKeyring.load(path)


def cli_events(store: Store) -> EventEmitter:
    """The event sink of CLI commands: SETs queued in the store for the server to push."""
    from corral.identity.event_emitter import EventEmitter

    return EventEmitter(store, issuer=_issuer(), keyring=_server_keyring)


def host_gate(store: Store) -> HostGate:
    """The Gate the CLI's writes walk, as the host operator (corral.gate.host)."""
    from corral.gate.host import HostGate
    from corral.identity.directory import Directory

    return HostGate(Directory(store, events=cli_events(store)), store)


def _receiver_table(receivers: list[SsfReceiver]) -> TextTable:
    from corral.domain.events import event_short_name

    table = TextTable("NAME", "ID", "ENDPOINT", "AUDIENCE", "EVENTS", "ENABLED", "AUTH HEADER")
    for r in receivers:
        table.add_row(
            r.name,
            r.id,
            r.endpoint,
            r.audience,
            ", ".join(event_short_name(e) for e in r.events),
            "yes" if r.enabled else "no",
            "set" if r.auth_header else "",
        )
    return table


def _receiver_json(r: SsfReceiver) -> dict[str, Any]:
    """--output json (docs/cli.md); the authorization header is a secret: only whether set."""
    from corral.domain.events import event_short_name

    return {
        "id": r.id,
        "name": r.name,
        "endpoint": r.endpoint,
        "audience": r.audience,
        "events": [event_short_name(e) for e in r.events],
        "enabled": r.enabled,
        "auth_header_set": r.auth_header is not None,
        "created_at": r.created_at,
    }


@receivers_app.command("add")
@handle_errors
def receivers_add(
    name: str,
    endpoint: Annotated[str, typer.Option(help="push URL of the receiver (https)")],
    audience: Annotated[str, typer.Option(help="`aud` of the SETs it gets")],
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--events",
            help="session-revoked, credential-change, risk-level-change (repeat or comma "
            "separate; default all)",
        ),
    ] = None,
    auth_header_file: Annotated[
        Path | None,
        typer.Option(help="file (mode 0600) whose one line is sent as Authorization"),
    ] = None,
) -> None:
    """Push Corral's CAEP events to a receiver (RFC 8935)."""
    auth_header = (
        read_secret_file(auth_header_file, "authorization header") if auth_header_file else None
    )
    from corral.gate.operations import AddReceiver

    args = AddReceiver(
        endpoint=endpoint, audience=audience, events=events or [], auth_header=auth_header
    )
    with local_store() as store:
        receiver = host_gate(store).run("add_ssf_receiver", name, args)
    out_console.print(_receiver_table([receiver]))


@receivers_app.command("list")
@handle_errors
def receivers_list(output: OutputOption = OutputFormat.table) -> None:
    """List the receivers and the event types each gets."""
    with local_store() as store:
        found = store.list_ssf_receivers()
    emit(output, [_receiver_json(r) for r in found], lambda: _receiver_table(found))


@receivers_app.command("remove")
@handle_errors
def receivers_remove(name: str) -> None:
    """Remove a receiver; its undelivered events are dropped."""
    with local_store() as store:
        host_gate(store).run("remove_ssf_receiver", name)
    err_console.print(f"receiver {name} removed")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


@app.command("outbox")
@handle_errors
def outbox(
    pending: Annotated[bool, typer.Option(help="only SETs still to be delivered")] = False,
    limit: Annotated[int, typer.Option(help="at most this many, newest first", min=1)] = 50,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Show the deliveries of Corral's events: delivered, pending (with the next try) or failed."""
    with local_store() as store:
        names = {r.id: r.name for r in store.list_ssf_receivers()}
        entries = store.list_ssf_outbox(pending_only=pending, limit=limit)
    if output is OutputFormat.json:  # never the signed SET itself (`token`)
        print_json(
            [
                {
                    "id": e.id,
                    "receiver": names.get(e.receiver_id, e.receiver_id),
                    "receiver_id": e.receiver_id,
                    "jti": e.jti,
                    "status": e.status,
                    "attempts": e.attempts,
                    "created_at": e.created_at,
                    "next_attempt_at": e.next_attempt_at if e.status == "pending" else None,
                    "delivered_at": e.delivered_at,
                    "last_error": e.last_error,
                }
                for e in entries
            ]
        )
        return
    table = TextTable("ID", "RECEIVER", "JTI", "STATUS", "ATTEMPTS", "CREATED", "NEXT TRY", "ERROR")
    for e in entries:
        table.add_row(
            str(e.id),
            names.get(e.receiver_id, e.receiver_id),
            e.jti,
            e.status,
            str(e.attempts),
            _when(e.created_at),
            _when(e.next_attempt_at) if e.status == "pending" else "",
            e.last_error or "",
        )
    out_console.print(table)
