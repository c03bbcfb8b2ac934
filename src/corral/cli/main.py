"""The `corral` command."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from corral import __version__
from corral.cli import image, pc
from corral.cli._common import err_console, handle_errors
from corral.errors import ImageNotFoundError
from corral.runtime.images import ImageStore, build_image
from corral.runtime.pcs import PCRuntime

app = typer.Typer(
    name="corral",
    help="Corral lends isolated, disposable Linux desktop PCs to AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(image.app, name="image", help="Build and list PC images.")
app.add_typer(pc.app, name="pc")

DEFAULT_IMAGE = "desktop"


@app.command()
def version() -> None:
    """Print Corral's version."""
    print(__version__)


@app.command()
@handle_errors
def up(
    image_name: Annotated[str, typer.Option("--image", help="image to serve")] = DEFAULT_IMAGE,
) -> None:
    """Run Corral on this host: build the default image if missing, boot a PC, keep it up.

    Until the control plane (pools, sessions, MCP) lands, this boots one PC and keeps it until
    Ctrl-C, then destroys it, leaving nothing running.
    """
    try:
        ImageStore().get(image_name)
    except ImageNotFoundError:
        err_console.print(f"image {image_name!r} is missing: building it (first run only)")
        build_image(image_name, progress=lambda msg: err_console.print(f"  {msg}"))
    rt = PCRuntime()
    for pc_id in rt.reconcile():
        err_console.print(f"[yellow]cleaned up dead PC {pc_id}[/]")
    info = rt.boot(image_name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err_console.print(f"[green]Corral is up.[/] PC [bold]{info.id}[/] ({image_name}) is ready:")
    err_console.print(f"  corral pc exec {info.id} -- uname -a")
    err_console.print(f"  corral pc screenshot {info.id} -o shot.png")
    err_console.print("Press Ctrl-C to stop; the PC is destroyed on the way out.")
    try:
        stop.wait()
    finally:
        rt.destroy(info.id)
        err_console.print(f"destroyed {info.id}; nothing left running")
