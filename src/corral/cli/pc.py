"""`corral pc ...`: root-only operator commands to drive PCs on this host directly."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli._common import (
    OutputFormat,
    OutputOption,
    TextTable,
    err_console,
    handle_errors,
    human_age,
    out_console,
    print_json,
    progress,
    safe,
)
from corral.errors import InvalidInputError

if TYPE_CHECKING:
    from corral.runtime.pcs import PCRuntime

DEFAULT_SCREEN = "1280x800x24"  # corral.runtime.pcs.DEFAULT_SCREEN, without importing the runtime

app = typer.Typer(
    help="Boot and drive PCs on this host (root-only debugging commands).", no_args_is_help=True
)

TIMEOUT_EXIT = 124  # what timeout(1) uses, so scripts can tell a timeout from a failure


def _runtime() -> PCRuntime:
    from corral.runtime.pcs import PCRuntime

    return PCRuntime()


@app.command()
@handle_errors
def boot(
    image: Annotated[str, typer.Option(help="image to boot (see `corral image list`)")],
    size: Annotated[str, typer.Option(help="small, medium or large")] = "small",
    screen: Annotated[str, typer.Option(help="WIDTHxHEIGHTxDEPTH")] = DEFAULT_SCREEN,
) -> None:
    """Boot a PC and print its id once its desktop is ready."""
    start = time.perf_counter()
    with progress(f"booting a {size} PC from {image}"):
        pc = _runtime().boot(image, size=size, screen=screen)
    err_console.print(f"[green]ready[/] in {(time.perf_counter() - start) * 1000:.0f} ms")
    print(pc.id)


@app.command("list")
@handle_errors
def list_(output: OutputOption = OutputFormat.table) -> None:
    """List the PCs on this host (cleans up PCs whose processes died)."""
    rt = _runtime()
    for pc_id in rt.reconcile():
        err_console.print(f"[yellow]cleaned up dead PC {pc_id}[/]")
    if output is OutputFormat.json:
        print_json(
            [
                {
                    "id": pc.id,
                    "image": pc.image,
                    "size": pc.size,
                    "status": pc.status,
                    "pid": pc.pid,
                    "created_at": datetime.fromtimestamp(pc.created_at, UTC),
                }
                for pc in rt.list_pcs()
            ]
        )
        return
    table = TextTable("ID", "IMAGE", "SIZE", "STATUS", "PID", "AGE")
    now = time.time()
    for pc in rt.list_pcs():
        table.add_row(
            pc.id, pc.image, pc.size, pc.status, str(pc.pid or "-"), human_age(now - pc.created_at)
        )
    out_console.print(table)


@app.command(
    name="exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@handle_errors
def exec_(
    pc_id: Annotated[str, typer.Argument(metavar="ID")],
    command: Annotated[list[str], typer.Argument(help="command and arguments, after --")],
    timeout: Annotated[float, typer.Option(help="seconds before the command is killed")] = 30.0,
    max_output: Annotated[int, typer.Option(help="bytes kept per stream")] = 1 << 20,
) -> None:
    """Run a command in the PC as the desktop user; pass its output and exit code through."""
    if not command:
        raise InvalidInputError("no command given", hint="corral pc exec ID -- CMD ARGS...")
    with _runtime().client(pc_id, timeout=timeout + 10) as client:
        result = client.run(command, timeout_s=timeout, max_output=max_output)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.stdout.flush()
    if result.timed_out:
        err_console.print(f"[red]command timed out after {timeout:g} s and was killed[/]")
        raise typer.Exit(TIMEOUT_EXIT)
    raise typer.Exit(result.exit_code if result.exit_code is not None else 1)


@app.command()
@handle_errors
def screenshot(
    pc_id: Annotated[str, typer.Argument(metavar="ID")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write")],
    max_width: Annotated[int | None, typer.Option(help="scale down to fit this width")] = None,
    max_height: Annotated[int | None, typer.Option(help="scale down to fit this height")] = None,
) -> None:
    """Save a PNG screenshot of the PC's desktop."""
    with _runtime().client(pc_id) as client:
        shot = client.screenshot(max_width, max_height)
    output.write_bytes(shot.png)
    err_console.print(f"wrote {output} ({shot.width}x{shot.height}, scale {shot.scale:.3f})")


@app.command()
@handle_errors
def reset(pc_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Return the PC to exactly its image baseline, with a fresh desktop."""
    start = time.perf_counter()
    _runtime().reset(pc_id)
    err_console.print(f"[green]reset[/] {pc_id} in {(time.perf_counter() - start) * 1000:.0f} ms")


@app.command()
@handle_errors
def destroy(pc_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Destroy the PC and everything it held on the host."""
    _runtime().destroy(pc_id)
    err_console.print(f"destroyed {pc_id}")


@app.command()
@handle_errors
def health(pc_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Check that the PC's daemon and X server answer (exit 1 if not)."""
    result = _runtime().health(pc_id)
    state = "healthy" if result.ok else "UNHEALTHY"
    out_console.print(f"{safe(pc_id)}: {state} ({safe(result.detail)})")
    if not result.ok:
        raise typer.Exit(1)
