"""`corral federation ...`: trusted OpenID Connect providers and their linked subjects.

Acts on the local database directly, like `corral user` and `corral agent`. The client secret
is read from a file (never an argument, which would sit in shell history and `ps`), and is
never printed.
"""

from __future__ import annotations

import json
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
from corral.cli.events import host_gate
from corral.errors import InvalidInputError

if TYPE_CHECKING:  # the federation code (crypto, HTTP) loads when a command runs
    from corral.domain.federation import FederatedSubject, OidcProvider, PrincipalKind

__all__ = ["app"]

app = typer.Typer(
    help="Trust external OpenID Connect providers and link their subjects.", no_args_is_help=True
)


def _read_jwks(path: Path) -> dict[str, object]:
    from corral.identity.federation import check_public_jwks

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read the JWK Set {path}: {exc}") from None
    return check_public_jwks(doc)


def _uses(p: OidcProvider) -> str:
    names = [("console", p.allow_console), ("assertions", p.allow_assertions)]
    return ", ".join(n for n, on in [*names, ("events", p.allow_events)] if on)


def _providers_table(providers: list[OidcProvider]) -> TextTable:
    table = TextTable("NAME", "ISSUER", "AUDIENCE", "KEYS", "CLIENT ID", "TRUSTED FOR")
    for p in providers:
        keys = "pinned" if p.jwks is not None else (p.jwks_uri or "")
        table.add_row(p.name, p.issuer, p.audience, keys, p.client_id or "", _uses(p))
    return table


def _subjects_table(subjects: list[FederatedSubject]) -> TextTable:
    table = TextTable("PROVIDER", "SUBJECT", "KIND", "CORRAL ID", "LINKED")
    for s in subjects:
        linked = s.created_at.isoformat(timespec="seconds")
        table.add_row(s.provider, s.subject, s.kind, s.principal_id, linked)
    return table


def _provider_json(p: OidcProvider) -> dict[str, Any]:
    """--output json (docs/cli.md): never the client secret, only whether one is set."""
    return {
        "name": p.name,
        "issuer": p.issuer,
        "audience": p.audience,
        "jwks_uri": p.jwks_uri,
        "pinned_keys": len(p.jwks.get("keys", [])) if p.jwks is not None else None,
        "client_id": p.client_id,
        "client_secret_set": bool(p.client_secret),
        "allow_console": p.allow_console,
        "allow_assertions": p.allow_assertions,
        "allow_events": p.allow_events,
        "created_at": p.created_at,
    }


def _subject_json(s: FederatedSubject) -> dict[str, Any]:
    return {
        "provider": s.provider,
        "subject": s.subject,
        "kind": s.kind,
        "principal_id": s.principal_id,
        "created_at": s.created_at,
    }


@app.command("add")
@handle_errors
def add(
    name: str,
    issuer: Annotated[str, typer.Option(help="the provider's issuer URL, exactly (its `iss`)")],
    audience: Annotated[str, typer.Option(help="the `aud` its workload tokens carry for Corral")],
    jwks_uri: Annotated[
        str | None, typer.Option(help="where its signing keys are published (fetched, cached)")
    ] = None,
    jwks: Annotated[
        Path | None, typer.Option(help="a JWK Set file of its public keys, pinned")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Corral's client id at the provider (console logins)")
    ] = None,
    client_secret_file: Annotated[
        Path | None, typer.Option(help="file (0600) with Corral's client secret, if any")
    ] = None,
    console: Annotated[bool, typer.Option("--console", help="trust it for console logins")] = False,
    assertions: Annotated[
        bool, typer.Option("--assertions", help="trust its workload tokens at /v1/token")
    ] = False,
    events: Annotated[
        bool, typer.Option("--events", help="accept its security events (CAEP)")
    ] = False,
) -> None:
    """Trust an OpenID Connect provider (keys by --jwks-uri or pinned with --jwks FILE)."""
    if (jwks_uri is None) == (jwks is None):
        raise InvalidInputError(
            "give exactly one of --jwks-uri or --jwks",
            hint="--jwks-uri fetches and caches the provider's keys; --jwks pins them",
        )
    if client_secret_file is not None and client_id is None:
        raise InvalidInputError("a client secret needs --client-id")
    from corral.domain.federation import OidcProvider

    provider = OidcProvider(
        name=name,
        issuer=issuer,
        audience=audience,
        jwks_uri=jwks_uri,
        jwks=_read_jwks(jwks) if jwks is not None else None,
        client_id=client_id,
        client_secret=read_secret_file(client_secret_file, "client secret")
        if client_secret_file
        else None,
        allow_console=console,
        allow_assertions=assertions,
        allow_events=events,
    )
    from corral.gate.operations import AddProvider

    with local_store() as store:
        created = host_gate(store).run("add_oidc_provider", None, AddProvider(provider=provider))
    out_console.print(_providers_table([created]))


@app.command("list")
@handle_errors
def list_providers(output: OutputOption = OutputFormat.table) -> None:
    """List the trusted providers."""
    with local_store() as store:
        found = store.list_oidc_providers()
    emit(output, [_provider_json(p) for p in found], lambda: _providers_table(found))


@app.command("show")
@handle_errors
def show(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Show one provider (never its client secret) and its linked subjects."""
    with local_store() as store:
        p = store.get_oidc_provider(name)
        subjects = store.list_subjects(name)
    if output is OutputFormat.json:
        print_json({**_provider_json(p), "subjects": [_subject_json(s) for s in subjects]})
        return
    rows = [
        ("name", p.name),
        ("issuer", p.issuer),
        ("audience", p.audience),
        ("jwks_uri", p.jwks_uri or ""),
        ("pinned keys", str(len(p.jwks.get("keys", []))) if p.jwks is not None else "no"),
        ("client id", p.client_id or ""),
        ("client secret", "set" if p.client_secret else "not set"),
        ("trusted for", _uses(p)),
        ("created", p.created_at.isoformat(timespec="seconds") if p.created_at else ""),
    ]
    table = TextTable("FIELD", "VALUE", show_header=False)
    for field, value in rows:
        table.add_row(field, value)
    out_console.print(table)
    out_console.print(_subjects_table(subjects))


@app.command("remove")
@handle_errors
def remove(name: str) -> None:
    """Stop trusting a provider; its subject links go with it."""
    with local_store() as store:
        host_gate(store).run("remove_oidc_provider", name)
    err_console.print(f"provider {name} removed")


@app.command("link")
@handle_errors
def link(
    name: str,
    subject: str,
    agent: Annotated[str | None, typer.Option(help="the Corral agent it stands for")] = None,
    user: Annotated[str | None, typer.Option(help="the Corral user it stands for")] = None,
) -> None:
    """Link SUBJECT (its `sub` at provider NAME) to a Corral agent or user."""
    if (agent is None) == (user is None):
        raise InvalidInputError("give exactly one of --agent or --user")
    kind: PrincipalKind = "agent" if agent is not None else "user"
    from corral.gate.operations import LinkSubject

    args = LinkSubject(subject=subject, kind=kind, principal=agent or user or "")
    with local_store() as store:
        found = host_gate(store).run("link_subject", name, args)
    out_console.print(_subjects_table([found]))


@app.command("unlink")
@handle_errors
def unlink(name: str, subject: str) -> None:
    """Remove a subject's link: its tokens and logins are refused from now on (sessions it
    already opened last until they expire, unless revoked)."""
    from corral.gate.operations import UnlinkSubject

    with local_store() as store:
        host_gate(store).run("unlink_subject", name, UnlinkSubject(subject=subject))
    err_console.print(f"subject {subject} at {name} unlinked")


@app.command("subjects")
@handle_errors
def subjects(
    name: Annotated[str | None, typer.Argument(help="only this provider")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List linked subjects."""
    with local_store() as store:
        if name is not None:
            store.get_oidc_provider(name)  # an unknown provider is an error, not an empty list
        found = store.list_subjects(name)
    emit(output, [_subject_json(s) for s in found], lambda: _subjects_table(found))
