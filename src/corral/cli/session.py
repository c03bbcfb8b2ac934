"""`corral session ...`: see and end sessions on a running Corral server (REST /v1/sessions)."""

from __future__ import annotations

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

app = typer.Typer(
    help="List, show and release agent sessions.", no_args_is_help=True, callback=credential_option
)


def _table(sessions: list[dict[str, Any]]) -> TextTable:
    table = TextTable(
        "SESSION", "POOL", "PC", "STATE", "CREATED", "EXPIRES", "RELEASE REASON", "RELEASED BY"
    )
    for s in sessions:
        table.add_row(
            s["session_id"],
            s["pool"],
            s["pc_id"],
            s["state"],
            (s["created_at"] or "")[:19],
            (s["expires_at"] or "")[:19],
            s.get("release_reason") or "",
            s.get("released_by") or "",
        )
    return table


@app.command("list")
@handle_errors
def list_(
    all_: Annotated[bool, typer.Option("--all", help="include released sessions")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List active sessions (or all with --all)."""
    found = call("GET", f"/v1/sessions?active={'false' if all_ else 'true'}")
    emit(output, found, lambda: _table(found))


@app.command()
@handle_errors
def show(session_id: str, output: OutputOption = OutputFormat.table) -> None:
    """Show one active session with its MCP and viewer URLs."""
    s = call("GET", f"/v1/sessions/{session_id}")
    if output is OutputFormat.json:
        print_json(s)
        return
    out_console.print(_table([s]))
    out_console.print(f"MCP URL:    {safe(s['mcp_url'])}\nviewer URL: {safe(s['viewer_url'])}")


@app.command()
@handle_errors
def release(session_id: str) -> None:
    """Release a session now; its PC is reset and returned to the pool."""
    s = call("DELETE", f"/v1/sessions/{session_id}")
    err_console.print(f"released {safe(s['session_id'])} (PC {safe(s['pc_id'])} is being reset)")
