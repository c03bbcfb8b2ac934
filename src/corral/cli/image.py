"""`corral image build|list`: a thin adapter over corral.runtime.images."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli._common import (
    TextTable,
    err_console,
    handle_errors,
    human_age,
    human_size,
    out_console,
    safe,
)

if TYPE_CHECKING:
    from corral.runtime.images import Image

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Build and list PC images.")


def _interactive() -> bool:
    """Spinners only for a person at a terminal; CI and pipes get plain lines."""
    return err_console.is_terminal and os.environ.get("CI", "").lower() not in ("1", "true")


@contextmanager
def _progress_printer(title: str) -> Iterator[Callable[[str], None]]:
    if not _interactive():

        def plain(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

        yield plain
        return
    with err_console.status(title) as status:

        def fancy(msg: str) -> None:
            err_console.print(f"[dim]{safe(msg)}[/]", highlight=False)
            status.update(f"{title}: {msg.split('] ', 1)[-1]}")

        yield fancy


@app.command()
@handle_errors
def build(
    name: Annotated[str, typer.Argument(help="Image name; without --recipe, a built-in recipe.")],
    recipe: Annotated[Path | None, typer.Option(help="Recipe TOML file to build.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Build even if the image is up to date.")
    ] = False,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Also remake the cached package layer (newer package versions)."
        ),
    ] = False,
) -> None:
    """Build an image from its recipe (needs root; cached, so rebuilding is quick)."""
    from corral.runtime.images import build_image

    started = time.time()
    with _progress_printer(f"building {name}") as progress:
        img = build_image(name, recipe, progress=progress, force=force, refresh=refresh)
    m = img.manifest
    built = _built_at(img)
    how = (
        f"up to date (built {human_age(started - built)})"
        if built is not None and built < started
        else f"built in {float(m.get('build_seconds', 0)):.1f}s"
    )
    out_console.print(
        f"[bold green]{img.name}[/] {img.digest}  {human_size(int(m.get('size_bytes', 0)))}  "
        f"{how}  ({img.path})",
        highlight=False,
    )


def _built_at(img: Image) -> float | None:
    try:
        return datetime.fromisoformat(str(img.manifest["built_at"])).timestamp()
    except (KeyError, ValueError):
        return None


def _age(img: Image) -> str:
    built = _built_at(img)
    return "?" if built is None else human_age(time.time() - built)


@app.command("list")
@handle_errors
def list_images() -> None:
    """List the current version of every image."""
    from corral.runtime.images import ImageStore

    images = ImageStore().list()
    if not images:
        err_console.print("no images yet; build one with `corral image build desktop`")
        return
    table = TextTable("NAME", "DIGEST", "SIZE", "AGE", "PACKAGES")
    for img in images:
        table.add_row(
            img.name,
            img.digest.removeprefix("sha256:")[:12],
            human_size(int(img.manifest.get("size_bytes", 0))),
            _age(img),
            str(len(img.manifest.get("packages", []))),
        )
    out_console.print(table)
