"""`corral image build|list`: a thin adapter over corral.runtime.images."""

from __future__ import annotations

import time
from datetime import datetime
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
    human_size,
    out_console,
    print_json,
    progress,
)

if TYPE_CHECKING:
    from corral.runtime.images import Image

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Build and list PC images.")


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
    with progress(f"building {name}") as shown:  # stderr: a live line, or plain lines
        img = build_image(name, recipe, progress=shown.log, force=force, refresh=refresh)
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
def list_images(output: OutputOption = OutputFormat.table) -> None:
    """List the current version of every image."""
    from corral.runtime.images import ImageStore

    images = ImageStore().list()
    if output is OutputFormat.json:
        print_json(
            [
                {
                    "name": img.name,
                    "digest": img.digest,
                    "size_bytes": int(img.manifest.get("size_bytes", 0)),
                    "built_at": img.manifest.get("built_at"),
                    "packages": len(img.manifest.get("packages", [])),
                    "path": str(img.path),
                }
                for img in images
            ]
        )
        return
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
