"""`corral policy ...` and `corral approvals ...`: Cedar policies and sponsor approvals on a
running Corral server (REST /v1/policies, /v1/approvals)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli._common import (
    OutputFormat,
    OutputOption,
    TextTable,
    emit,
    err_console,
    handle_errors,
    out_console,
    print_json,
    safe,
)
from corral.cli._http import call, credential_option
from corral.errors import InvalidInputError

app = typer.Typer(
    help="Cedar policies: list, add, remove, test; see docs/policies.md.",
    no_args_is_help=True,
    callback=credential_option,
)
approvals_app = typer.Typer(
    help="Requests a policy holds for a sponsor: list, approve, deny.",
    no_args_is_help=True,
    callback=credential_option,
)


def _read_text(file: str | None, text: str | None) -> str:
    if (file is None) == (text is None):
        raise InvalidInputError("give the policy as FILE (or - for stdin) or with --text")
    if text is not None:
        return text
    assert file is not None
    if file == "-":
        return sys.stdin.read()
    path = Path(file)
    if not path.is_file():
        raise InvalidInputError(f"no file {file}", hint="give a .cedar file, or - for stdin")
    return path.read_text()


@app.command("list")
@handle_errors
def list_(
    system: Annotated[bool, typer.Option(help="also list the built-in system policies")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List the policies (name, state, who last changed it)."""
    found = call("GET", "/v1/policies")
    if output is OutputFormat.json:
        print_json({**found, "system": found["system"] if system else []})
        return
    table = TextTable("NAME", "ENABLED", "CREATED BY", "UPDATED", "FIRST LINE")
    for p in found["policies"]:
        first = next((ln for ln in p["text"].splitlines() if ln.strip()), "")
        table.add_row(
            p["name"], "yes" if p["enabled"] else "no", p["created_by"], p["updated_at"][:19], first
        )
    if system:
        for p in found["system"]:
            table.add_row(p["name"], "always", "system", "", p["text"].splitlines()[0])
    out_console.print(table)
    err_console.print(f"policy set version {found['version']}")


@app.command()
@handle_errors
def show(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Print one policy's Cedar text (with --output json, the policy with its state)."""
    policy = call("GET", f"/v1/policies/{name}")
    if output is OutputFormat.json:
        print_json(policy)
        return
    print(policy["text"])


@app.command()
@handle_errors
def add(
    name: str,
    file: Annotated[str | None, typer.Argument(help="Cedar file, or - for stdin")] = None,
    text: Annotated[str | None, typer.Option(help="the Cedar text itself")] = None,
    replace: Annotated[bool, typer.Option(help="replace the text of an existing policy")] = False,
) -> None:
    """Add a policy (validated against the schema first; an invalid one is refused)."""
    added = call(
        "POST",
        "/v1/policies",
        json={"name": name, "text": _read_text(file, text), "replace": replace},
    )
    err_console.print(f"policy {safe(added['name'])} {'replaced' if replace else 'added'}")
    for note in added.get("notes", []):  # names are stored as the ids decisions match
        err_console.print(f"note: {note}", markup=False, highlight=False)
    for warning in added.get("warnings", []):
        err_console.print(f"warning: {warning}", markup=False, highlight=False)


@app.command()
@handle_errors
def remove(name: str) -> None:
    """Remove a policy."""
    call("DELETE", f"/v1/policies/{name}")
    err_console.print(f"policy {name} removed")


@app.command()
@handle_errors
def enable(name: str) -> None:
    """Enable a policy."""
    call("PATCH", f"/v1/policies/{name}", json={"enabled": True})
    err_console.print(f"policy {name} enabled")


@app.command()
@handle_errors
def disable(name: str) -> None:
    """Disable a policy (it stays stored, and applies again once enabled)."""
    call("PATCH", f"/v1/policies/{name}", json={"enabled": False})
    err_console.print(f"policy {name} disabled")


@app.command()
@handle_errors
def history(
    since: Annotated[int, typer.Option(help="from this policy-set version on")] = 0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Every change to policies and pool assignments: version, what, who, when."""
    changes = call("GET", f"/v1/policies/changes?since={since}")

    def table() -> TextTable:
        table = TextTable("VERSION", "CHANGE", "SUBJECT", "BY", "AT")
        for c in changes:
            table.add_row(str(c["version"]), c["kind"], c["subject"], c["actor"], c["at"][:19])
        return table

    emit(output, changes, table)


@app.command()
@handle_errors
def schema() -> None:
    """Print the Cedar schema policies are validated against."""
    print(call("GET", "/v1/policies/schema"), end="")


@app.command()
@handle_errors
def test(
    principal: Annotated[str, typer.Option(help='who asks, e.g. Agent::"bot"')],
    action: Annotated[str, typer.Option(help='e.g. Action::"run_command"')],
    resource: Annotated[str, typer.Option(help='e.g. PC::"pc-1" or Pool::"default"')],
    context: Annotated[
        str, typer.Option(help='context attributes to set, as JSON, e.g. {"risk_score": 3}')
    ] = "{}",
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
) -> None:
    """What the current policies answer, and why. Exit code 0 if allowed, 1 if denied."""
    try:
        ctx = json.loads(context)
    except ValueError as exc:
        raise InvalidInputError(f"--context is not JSON: {exc}") from None
    if not isinstance(ctx, dict):
        raise InvalidInputError("--context must be a JSON object")
    answer: dict[str, Any] = call(
        "POST",
        "/v1/policies/test",
        json={"principal": principal, "action": action, "resource": resource, "context": ctx},
    )
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        colour = "green" if answer["decision"] == "allow" else "red"
        decision = safe(answer["decision"])
        policies = safe(", ".join(answer["policies"]) or "(none)")
        out_console.print(f"decision: [bold {colour}]{decision}[/]", highlight=False)
        out_console.print(f"policies: {policies}")
        out_console.print(
            f"errors:   {safe('; '.join(answer['errors']) or '(none)')}", highlight=False
        )
        out_console.print(f"reason:   {safe(answer['reason'])}", highlight=False)
    if answer["decision"] != "allow":
        raise typer.Exit(1)


def _approvals_table(found: list[dict[str, Any]]) -> TextTable:
    table = TextTable(
        "ID", "STATE", "AGENT", "ACTION", "RESOURCE", "DETAIL", "EXPIRES", "DECIDED BY"
    )
    for a in found:
        detail = " ".join(f"{k}={v}" for k, v in sorted(a["detail"].items()))
        table.add_row(
            a["id"],
            a["state"],
            a["agent_id"],
            a["action"],
            a["resource"],
            detail,
            a["expires_at"][:19],
            a["decided_by"] or "",
        )
    return table


@approvals_app.command("list")
@handle_errors
def approvals_list(
    state: Annotated[
        str, typer.Option(help="pending, approved, denied, expired or all")
    ] = "pending",
    output: OutputOption = OutputFormat.table,
) -> None:
    """The requests of your agents (all, for an admin) waiting for an answer."""
    found = call("GET", f"/v1/approvals?state={state}")
    emit(output, found, lambda: _approvals_table(found))


@approvals_app.command()
@handle_errors
def approve(approval_id: str) -> None:
    """Approve: the agent's identical request goes through once (or as often as the policy
    that held it allows) until the approval expires."""
    done = call("POST", f"/v1/approvals/{approval_id}/approve")
    uses = "any number of times" if done.get("max_uses") is None else f"{done['max_uses']} time(s)"
    until = safe(done["expires_at"][:19])
    err_console.print(f"approved {safe(done['id'])} ({uses}, until {until})")


@approvals_app.command()
@handle_errors
def deny(approval_id: str) -> None:
    """Deny: the agent's identical request is refused until the answer expires."""
    done = call("POST", f"/v1/approvals/{approval_id}/deny")
    err_console.print(f"denied {safe(done['id'])}")
