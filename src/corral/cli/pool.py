"""`corral pool ...`: define pools on a running Corral server (REST /v1/pools)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from corral.cli._common import (
    OutputFormat,
    OutputOption,
    TextTable,
    emit,
    err_console,
    handle_errors,
    progress,
)
from corral.cli._http import call, credential_option
from corral.errors import InvalidInputError, UnavailableError

app = typer.Typer(
    help="Create, list, show and delete pools of PCs.",
    no_args_is_help=True,
    callback=credential_option,
)


_STATES = ("ready", "in_use", "booting", "resetting", "quarantined")
_POLL_S = 0.5  # the REST API has no change feed yet: --wait asks again this often


def _row(pool: dict[str, Any]) -> list[str]:
    counts = pool.get("counts", {})
    return [
        pool["name"],
        pool["image"],
        pool["region"],
        pool["size"],
        str(pool["warm"]),
        str(pool["max"]),
        str(pool.get("max_sessions_per_agent", "")),
        *(str(counts.get(s, 0)) for s in _STATES),
        "deleting" if pool.get("deleting") else "",
    ]


def _table(pools: list[dict[str, Any]]) -> TextTable:
    table = TextTable(
        "NAME",
        "IMAGE",
        "REGION",
        "SIZE",
        "WARM",
        "MAX",
        "PER AGENT",
        "READY",
        "IN USE",
        "BOOTING",
        "RESETTING",
        "QUARANTINED",
        "",
    )
    for pool in pools:
        table.add_row(*_row(pool))
    return table


@app.command()
@handle_errors
def create(
    name: str,
    image: Annotated[str, typer.Option(help="image the PCs boot from")] = "desktop",
    region: Annotated[str, typer.Option(help="region label")] = "local",
    size: Annotated[str, typer.Option(help="small, medium or large")] = "small",
    warm: Annotated[int, typer.Option(help="PCs kept booted and ready")] = 2,
    max_pcs: Annotated[int, typer.Option("--max", help="most PCs the pool may hold")] = 10,
    idle_timeout: Annotated[
        int, typer.Option(help="seconds before an idle session is released")
    ] = 1800,
    max_lifetime: Annotated[int, typer.Option(help="seconds a session may live")] = 8 * 3600,
    allow_bearer: Annotated[
        bool,
        typer.Option(
            "--allow-bearer",
            help="also accept plain bearer tokens (no DPoP) on this pool: only for MCP clients "
            "that cannot do proof of possession",
        ),
    ] = False,
    max_sessions_per_agent: Annotated[
        int | None,
        typer.Option(
            help="active sessions one agent may hold in this pool at once (default: half of "
            "--max, at least 1)",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="return once the warm PCs are ready, showing progress on stderr"
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="with --wait: seconds to wait at most", min=1)
    ] = 600.0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a pool; the server starts warming its PCs at once."""
    pool = call(
        "POST",
        "/v1/pools",
        json={
            "name": name,
            "image": image,
            "region": region,
            "size": size,
            "warm": warm,
            "max": max_pcs,
            "idle_timeout_s": idle_timeout,
            "max_lifetime_s": max_lifetime,
            "allow_bearer": allow_bearer,
            "max_sessions_per_agent": max_sessions_per_agent,
        },
    )
    if wait:
        pool = _wait_warm(pool, timeout)
    emit(output, pool, lambda: _table([pool]))


def _wait_warm(pool: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Ask for the pool until its `warm` PCs are ready; progress on stderr only."""
    name, want = pool["name"], int(pool["warm"])
    deadline = time.monotonic() + timeout
    with progress(f"pool {name}: warming {want} PC(s)") as shown:
        while True:
            counts = pool.get("counts", {})
            ready = int(counts.get("ready", 0))
            shown.update(f"{ready}/{want} ready, {counts.get('booting', 0)} booting")
            if ready >= want:
                return pool
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"pool {name}: {ready} of {want} warm PCs ready after {timeout:g} s",
                    hint=f"the pool exists and keeps warming: see `corral pool show {name}` "
                    "and the server's log",
                )
            time.sleep(_POLL_S)
            pool = call("GET", f"/v1/pools/{name}")


@app.command("list")
@handle_errors
def list_(output: OutputOption = OutputFormat.table) -> None:
    """List pools with their PC counts."""
    pools = call("GET", "/v1/pools")
    emit(output, pools, lambda: _table(pools))


@app.command()
@handle_errors
def show(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Show one pool."""
    pool = call("GET", f"/v1/pools/{name}")
    emit(output, pool, lambda: _table([pool]))


@app.command()
@handle_errors
def delete(name: str) -> None:
    """Delete a pool: it drains (active sessions end first), then its PCs are destroyed."""
    call("DELETE", f"/v1/pools/{name}")
    err_console.print(f"pool {name} is draining; it disappears once its sessions end")


def _assignee(agent: str | None, group: str | None) -> dict[str, str]:
    if (agent is None) == (group is None):
        raise InvalidInputError("name exactly one of --agent AGENT or --group GROUP")
    return {"agent": agent} if agent is not None else {"group": group or ""}


AgentOpt = Annotated[str | None, typer.Option("--agent", help="agent name (or id)")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="group name (or id)")]


@app.command()
@handle_errors
def assign(name: str, agent: AgentOpt = None, group: GroupOpt = None) -> None:
    """Let an agent, or every agent of a group, acquire PCs from pool NAME (default policy)."""
    who = _assignee(agent, group)
    done = call("POST", f"/v1/pools/{name}/assignments", json=who)
    kind, ref = next(iter(who.items()))
    err_console.print(
        f"pool {name} {'assigned to' if done['changed'] else 'already assigned to'} {kind} {ref}"
    )


@app.command()
@handle_errors
def unassign(name: str, agent: AgentOpt = None, group: GroupOpt = None) -> None:
    """Undo `corral pool assign`."""
    who = _assignee(agent, group)
    kind, ref = next(iter(who.items()))
    done = call("DELETE", f"/v1/pools/{name}/assignments?{kind}={ref}")
    err_console.print(
        f"pool {name} {'no longer' if done['changed'] else 'was not'} assigned to {kind} {ref}"
    )


@app.command()
@handle_errors
def assignments(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Who pool NAME is assigned to."""
    found = call("GET", f"/v1/pools/{name}/assignments")

    def table() -> TextTable:
        table = TextTable("POOL", "AGENT", "GROUP", "BY", "SINCE")
        for a in found:
            table.add_row(
                a["pool"], a["agent"] or "", a["group"] or "", a["created_by"], a["created_at"][:19]
            )
        return table

    emit(output, found, table)
