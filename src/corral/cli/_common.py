"""What every CLI command shares: error reporting and consoles."""

from __future__ import annotations

import functools
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich import table as rich_table
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.style import StyleType
from rich.text import Text

from corral.domain.text import visible
from corral.errors import CorralError, InvalidInputError
from corral.store import Store, check_data_files

__all__ = [
    "TextTable",
    "check_data_folder",
    "err_console",
    "handle_errors",
    "human_age",
    "human_size",
    "local_store",
    "out_console",
    "read_secret_file",
    "safe",
]

out_console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def safe(value: object) -> str:
    """Untrusted text (from an agent, a PC, a server answer) for an f-string passed to a
    console: its controls made visible (`corral.domain.text.visible`), its Rich markup escaped,
    so it is printed exactly as it is and never styles, hides or breaks the line around it."""
    return escape(visible(str(value)))


class TextTable(rich_table.Table):
    """A table whose string cells are plain text: never Rich markup, every control, bidi and
    invisible character made visible, and long values folded onto more lines rather than cut
    with an ellipsis, so a cell shows all of what it holds and nothing else."""

    def __init__(self, *headers: str, **kwargs: Any) -> None:
        super().__init__(*headers, **kwargs)
        for column in self.columns:
            column.overflow = "fold"

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: StyleType | None = None,
        end_section: bool = False,
    ) -> None:
        cells = [Text(visible(r)) if isinstance(r, str) else r for r in renderables]
        super().add_row(*cells, style=style, end_section=end_section)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a CorralError into a red message with its hint and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CorralError as exc:
            # Messages may quote what a caller, an agent or a PC sent: shown as plain text.
            err_console.print(f"[bold red]error:[/] {safe(exc.message)}", highlight=False)
            if exc.hint:
                err_console.print(f"  [dim]hint:[/] {safe(exc.hint)}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def check_data_folder() -> None:
    """At start: the data folder 0700 and its files 0600, owned by us; what was wider is
    fixed and said so, what someone else owns is refused (corral.store._files)."""
    from corral.config import paths
    from corral.store._engine import default_url

    check_data_files(
        paths().data,
        database_url=default_url(),
        report=lambda msg: err_console.print(f"[yellow]{msg}[/]", highlight=False),
    )


@contextmanager
def local_store() -> Iterator[Store]:
    """The server's database, opened directly (commands run by root on the server host),
    migrated first so a command works before the first `corral up`."""
    check_data_folder()
    store = Store()
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def read_secret_file(path: Path, what: str) -> str:
    """One line from a file only its owner can read (it holds a credential: `what`)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInputError(f"{path} is readable by others", hint=f"chmod 600 {path}")
    if not text or "\n" in text:
        raise InvalidInputError(f"{path} must hold the {what} on one line")
    return text
