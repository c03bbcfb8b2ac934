"""`corral audit ...`: the audit log, checked on this host (the server may be stopped)."""

from __future__ import annotations

import base64

import typer

from corral.cli._common import (
    OutputFormat,
    OutputOption,
    err_console,
    handle_errors,
    local_store,
    out_console,
    print_json,
)

__all__ = ["app"]

app = typer.Typer(help="The audit log: verify it.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The audit log: verify it."""  # a group, so `verify` stays a subcommand


@app.command("verify")
@handle_errors
def verify(output: OutputOption = OutputFormat.table) -> None:
    """Recompute the audit log from its records and check every stored hash and the head.

    Exits 0 if the stored log is consistent with itself; else 1, naming the first bad index
    (0-based): the lowest record whose proof no longer holds (changed, deleted, reordered or
    inserted records, stray rows, or changed hashes). A rewrite that recomputes every hash is
    caught against signed checkpoints, which come next (docs/audit.md)."""
    from corral.audit.verify import verify_log

    with local_store() as store, store.transaction(write=False) as uow:
        verdict = verify_log(uow)
    root = base64.b64encode(verdict.root).decode()
    if output is OutputFormat.json:
        print_json(
            {
                "ok": verdict.ok,
                "size": verdict.size,
                "root": root,
                "first_bad_index": verdict.first_bad,
                "problems": verdict.problems,
            }
        )
    elif verdict.ok:
        line = f"audit log intact: {verdict.size} records, root {root}"
        out_console.print(line, highlight=False)
    else:
        for problem in verdict.problems:
            err_console.print(f"[red]bad:[/] {problem}", highlight=False)
        out_console.print(f"first bad index: {verdict.first_bad}", highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)
