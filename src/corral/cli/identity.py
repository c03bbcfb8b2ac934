"""`corral user ...` and `corral agent ...`: manage the directory in the local store.

These act on the database directly (CORRAL_DATABASE_URL, else the data folder's SQLite file),
so an operator can create the first users and agents before any server runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli._common import (
    OutputFormat,
    OutputOption,
    TextTable,
    err_console,
    handle_errors,
    local_store,
    out_console,
    print_json,
    safe,
)
from corral.cli.events import cli_events
from corral.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:  # the directory (store, crypto, argon2) loads when a command runs
    from corral.domain.identity import Agent, AgentKey, User
    from corral.identity.directory import Directory

if TYPE_CHECKING:
    from corral.gate.host import HostGate

__all__ = ["agent_app", "user_app"]

user_app = typer.Typer(help="Create and manage human users.", no_args_is_help=True)
agent_app = typer.Typer(help="Create and manage agent identities.", no_args_is_help=True)
sponsor_app = typer.Typer(help="Add or remove an agent's sponsors.", no_args_is_help=True)
key_app = typer.Typer(help="List, rotate and revoke an agent's keys.", no_args_is_help=True)
agent_app.add_typer(sponsor_app, name="sponsor")
agent_app.add_typer(key_app, name="key")


def _token_endpoint() -> str:
    return os.environ.get("CORRAL_URL", "http://127.0.0.1:8420").rstrip("/") + "/v1/token"


def write_credential(path: Path, credential: dict[str, Any], *, overwrite: bool) -> Path:
    from corral.identity import directory

    return directory.write_credential(path, credential, overwrite=overwrite)


@contextmanager
def _directory() -> Iterator[Directory]:
    from corral.cli.events import cli_events
    from corral.identity.directory import Directory

    with local_store() as store:
        yield Directory(store, events=cli_events(store))  # CAEP events queued for the server


@contextmanager
def _host() -> Iterator[tuple[HostGate, Directory]]:
    """Writes walk the Gate as the host operator (corral.gate.host); reads use the directory."""
    from corral.gate.host import HostGate
    from corral.identity.directory import Directory

    with local_store() as store:
        directory = Directory(store, events=cli_events(store))  # CAEP events for the server
        yield HostGate(directory, store), directory


def _user_table(users: list[User]) -> TextTable:
    table = TextTable("NAME", "ID", "ROLES", "EMAIL", "ENABLED", "TOTP", "GROUPS")
    for u in users:
        table.add_row(
            u.name,
            u.id,
            ", ".join(sorted(r.value for r in u.roles)),
            u.email or "",
            "yes" if u.enabled else "no",
            "yes" if u.totp_enabled else "no",
            ", ".join(u.groups),
        )
    return table


def _agent_table(agents: list[Agent], names: dict[str, str]) -> TextTable:
    table = TextTable("NAME", "ID", "ENABLED", "RISK", "SPONSORS", "GROUPS", "DISABLED BECAUSE")
    for a in agents:
        table.add_row(
            a.name,
            a.id,
            "yes" if a.enabled else "no",
            a.risk.value,
            ", ".join(names.get(s, s) for s in a.sponsors),
            ", ".join(a.groups),
            a.disabled_reason or "",
        )
    return table


def _key_table(keys: list[AgentKey]) -> TextTable:
    table = TextTable("KID", "CREATED", "EXPIRES", "REVOKED")
    for k in keys:
        table.add_row(
            k.kid,
            k.created_at.isoformat(timespec="seconds"),
            k.expires_at.isoformat(timespec="seconds") if k.expires_at else "",
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    return table


def _show_agents(directory: Directory, agents: list[Agent]) -> None:
    names = {u.id: u.name for u in directory.list_users()}
    out_console.print(_agent_table(agents, names))


# --output json: the same keys as the REST directory API (docs/cli.md)


def _user_json(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "roles": sorted(r.value for r in u.roles),
        "enabled": u.enabled,
        "totp_enabled": u.totp_enabled,
        "groups": list(u.groups),
        "created_at": u.created_at,
    }


def _agent_json(a: Agent, names: dict[str, str]) -> dict[str, Any]:
    return {
        "id": a.id,
        "client_id": a.client_id,
        "name": a.name,
        "enabled": a.enabled,
        "disabled_reason": a.disabled_reason,
        "risk": a.risk.value,
        "sponsors": [{"id": s, "name": names.get(s)} for s in a.sponsors],
        "groups": list(a.groups),
        "created_at": a.created_at,
    }


def _key_json(k: AgentKey) -> dict[str, Any]:
    kty, crv = k.public_jwk.get("kty"), k.public_jwk.get("crv")
    return {
        "kid": k.kid,
        "kty": kty if isinstance(kty, str) else None,
        "crv": crv if isinstance(crv, str) else None,
        "created_at": k.created_at,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
        "usable": k.usable(datetime.now(UTC)),
    }


def _ops() -> ModuleType:
    """The Gate's operation models, imported only when a write runs (a fast `--help`)."""
    from corral.gate import operations

    return operations


def _risk(level: str) -> Any:
    """The level as the catalogue takes it, with the directory's own message if unknown."""
    from corral.domain.identity import parse_risk

    return _ops().AgentRisk(level=parse_risk(level).value)


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise InvalidInputError("no password on standard input")
    return password


# users


@user_app.command("create")
@handle_errors
def user_create(
    name: str,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="admin, security_admin or sponsor; repeat for several"),
    ] = None,
    email: Annotated[str | None, typer.Option(help="contact address")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read a console password from stdin")
    ] = False,
    key: Annotated[
        bool, typer.Option("--key", help="make a key credential for CLI/API use (-o FILE)")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="credential file (default ./NAME.json)")
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing credential file")] = False,
) -> None:
    """Create a user (a human: admins, security admins and agent sponsors)."""
    password = _read_password() if password_stdin else None
    path = output or Path(f"{name}.json")
    if key and path.exists() and not force:
        raise ConflictError(f"{path} already exists", hint="choose another -o, or pass --force")
    with _host() as (gate, _):
        args = _ops().CreateUser(name=name, roles=role or [], email=email, password=password)
        user = gate.run("create_user", None, args)
        out_console.print(_user_table([user]))
        if key:
            cred = gate.run(
                "create_user_key", user.id, _ops().CreateUserKey(token_endpoint=_token_endpoint())
            )
            write_credential(path, cred, overwrite=force)
            out_console.print(f"credential written to {path} (keep it secret)", highlight=False)


@user_app.command("list")
@handle_errors
def user_list(output: OutputOption = OutputFormat.table) -> None:
    """List users."""
    with _directory() as directory:
        users = directory.list_users()
    if output is OutputFormat.json:
        print_json([_user_json(u) for u in users])
    else:
        out_console.print(_user_table(users))


@user_app.command("disable")
@handle_errors
def user_disable(name: str) -> None:
    """Disable a user; agents left without an enabled sponsor are disabled too."""
    with _host() as (gate, _):
        agents = gate.run("disable_user", name)
        err_console.print(f"user {name} disabled")
        for agent in agents:
            err_console.print(f"agent {safe(agent.name)} disabled: {safe(agent.disabled_reason)}")


@user_app.command("enable")
@handle_errors
def user_enable(name: str) -> None:
    """Enable a user (agents they sponsor stay as they are: enable them one by one)."""
    with _host() as (gate, _):
        out_console.print(_user_table([gate.run("enable_user", name)]))


@user_app.command("show")
@handle_errors
def user_show(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Show one user (never a password hash or TOTP secret)."""
    with _directory() as directory:
        user = directory.get_user(name)
    if output is OutputFormat.json:
        print_json(_user_json(user))
    else:
        out_console.print(_user_table([user]))


@user_app.command("roles")
@handle_errors
def user_roles(
    name: str,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="the complete new set; repeat for several, none for no role"),
    ] = None,
) -> None:
    """Replace a user's roles; agents left without an able sponsor are disabled. The last
    enabled admin keeps the admin role."""
    with _host() as (gate, _):
        user, agents = gate.run("set_user_roles", name, _ops().UserRoles(roles=role or []))
        out_console.print(_user_table([user]))
        for agent in agents:
            err_console.print(f"agent {safe(agent.name)} disabled: {safe(agent.disabled_reason)}")


@user_app.command("revoke")
@handle_errors
def user_revoke(name: str) -> None:
    """Refuse every token issued so far to this user, from the next request on."""
    with _host() as (gate, _):
        user_id = gate.run("revoke_user_tokens", name)
    err_console.print(f"tokens of user {name} ({user_id}) revoked")


# agents


@agent_app.command("create")
@handle_errors
def agent_create(
    name: str,
    sponsor: Annotated[
        list[str] | None,
        typer.Option("--sponsor", help="user who answers for the agent; repeat for several"),
    ] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="group to join")] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="credential file (default ./NAME.json)")
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing credential file")] = False,
    token_endpoint: Annotated[
        str | None, typer.Option(help="token URL written into the credential ($CORRAL_URL)")
    ] = None,
) -> None:
    """Create an agent with a new key pair; its credential (private key) goes to a 0600 file."""
    path = output or Path(f"{name}.json")
    if path.exists() and not force:  # before creating anything, so no agent lacks its file
        raise ConflictError(f"{path} already exists", hint="choose another -o, or pass --force")
    with _host() as (gate, _):
        args = _ops().CreateAgent(
            name=name,
            sponsors=sponsor or [],
            groups=group or [],
            token_endpoint=token_endpoint or _token_endpoint(),
            key_lifetime_s=None,
        )
        cred = gate.run("create_agent", None, args)
        write_credential(path, cred, overwrite=force)
    out_console.print(f"agent [bold]{name}[/] created: id {cred['agent_id']}", highlight=False)
    out_console.print(f"credential written to {path} (keep it secret)", highlight=False)


@agent_app.command("list")
@handle_errors
def agent_list(output: OutputOption = OutputFormat.table) -> None:
    """List agents with their sponsors, risk and state."""
    with _directory() as directory:
        if output is OutputFormat.json:
            names = {u.id: u.name for u in directory.list_users()}
            print_json([_agent_json(a, names) for a in directory.list_agents()])
            return
        _show_agents(directory, directory.list_agents())


@agent_app.command("show")
@handle_errors
def agent_show(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Show one agent with its sponsors, groups, risk, state and keys (public halves only)."""
    with _directory() as directory:
        agent = directory.get_agent(name)
        if output is OutputFormat.json:
            names = {u.id: u.name for u in directory.list_users()}
            keys = [_key_json(k) for k in directory.agent_keys(agent.id)]
            print_json({**_agent_json(agent, names), "keys": keys})
            return
        _show_agents(directory, [agent])
        out_console.print(_key_table(directory.agent_keys(agent.id)))


@agent_app.command("revoke")
@handle_errors
def agent_revoke(name: str) -> None:
    """Refuse every token issued so far to this agent, from the next request on (it may get
    new ones: disable it to keep it out)."""
    with _host() as (gate, _):
        agent_id = gate.run("revoke_agent_tokens", name)
    err_console.print(f"tokens of agent {name} ({agent_id}) revoked")


@agent_app.command("disable")
@handle_errors
def agent_disable(
    name: str, reason: Annotated[str | None, typer.Option(help="why, for the record")] = None
) -> None:
    """Disable an agent: its tokens stop working on the next request."""
    with _host() as (gate, directory):
        _show_agents(
            directory, [gate.run("disable_agent", name, _ops().DisableAgent(reason=reason))]
        )


@agent_app.command("enable")
@handle_errors
def agent_enable(name: str) -> None:
    """Enable an agent again (it needs an enabled sponsor)."""
    with _host() as (gate, directory):
        _show_agents(directory, [gate.run("enable_agent", name)])


@agent_app.command("risk")
@handle_errors
def agent_risk(name: str, level: str) -> None:
    """Set an agent's risk level: none, low, medium or high."""
    with _host() as (gate, directory):
        _show_agents(directory, [gate.run("set_risk", name, _risk(level))])


@sponsor_app.command("add")
@handle_errors
def sponsor_add(name: str, user: str) -> None:
    """Make USER a sponsor of agent NAME."""
    with _host() as (gate, directory):
        _show_agents(directory, [gate.run("add_sponsor", name, _ops().Sponsor(user=user))])


@sponsor_app.command("remove")
@handle_errors
def sponsor_remove(name: str, user: str) -> None:
    """Remove USER as sponsor of agent NAME; without sponsors the agent is disabled."""
    with _host() as (gate, directory):
        agent = gate.run("remove_sponsor", name, _ops().Sponsor(user=user))
        _show_agents(directory, [agent])
    if not agent.enabled:
        err_console.print(f"agent {safe(name)} is disabled: {safe(agent.disabled_reason)}")


@key_app.command("list")
@handle_errors
def key_list(name: str, output: OutputOption = OutputFormat.table) -> None:
    """List an agent's public keys."""
    with _directory() as directory:
        keys = directory.agent_keys(name)
    if output is OutputFormat.json:
        print_json([_key_json(k) for k in keys])
    else:
        out_console.print(_key_table(keys))


@key_app.command("rotate")
@handle_errors
def key_rotate(
    name: str,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="credential file (default ./NAME.json)")
    ] = None,
    grace: Annotated[int, typer.Option(help="seconds the old keys keep working", min=0)] = 3600,
    token_endpoint: Annotated[
        str | None, typer.Option(help="token URL written into the credential ($CORRAL_URL)")
    ] = None,
) -> None:
    """Give an agent a new key pair and replace its credential file; old keys expire after
    the grace period."""
    path = output or Path(f"{name}.json")
    with _host() as (gate, _):
        args = _ops().RotateKey(grace_s=grace, token_endpoint=token_endpoint or _token_endpoint())
        cred = gate.run("rotate_key", name, args)
        write_credential(path, cred, overwrite=True)
    out_console.print(f"new key {cred['key']['kid']} for agent {name}", highlight=False)
    out_console.print(f"credential written to {path}; old keys expire in {grace} s")


@key_app.command("revoke")
@handle_errors
def key_revoke(name: str, kid: str) -> None:
    """Revoke one key at once (put `--` before a KID that starts with '-')."""
    with _host() as (gate, _):
        gate.run("revoke_key", name, _ops().RevokeKey(kid=kid))
    err_console.print(f"key {kid} of agent {name} revoked")
