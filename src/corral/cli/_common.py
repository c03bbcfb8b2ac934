"""What every CLI command shares: error reporting, consoles, `--output`, progress.

Imported by every command module, so it stays light: nothing here imports the store, HTTP,
crypto or pydantic at module level (`corral --help` must start fast;
tests/unit/test_cli_startup.py).
"""

from __future__ import annotations

import enum
import functools
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, cast

import typer

from corral.domain.text import visible
from corral.errors import CorralError, InvalidInputError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.status import Status

    from corral.store import Store

__all__ = [
    "OutputFormat",
    "OutputOption",
    "Progress",
    "TextTable",
    "check_data_folder",
    "emit",
    "err_console",
    "handle_errors",
    "human_age",
    "human_size",
    "interactive",
    "local_store",
    "out_console",
    "print_json",
    "progress",
    "read_secret_file",
    "safe",
]

#: Width used when the output is not a terminal: wide enough that no table column is ever
#: folded or cut, so `corral ... | grep` and `> file` see every value on its row's line.
UNBOUNDED_WIDTH = 1 << 20


class _LazyConsole:
    """Stands in for a `WideConsole` (corral.cli._render), made on first use."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._real: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            from corral.cli._render import WideConsole

            self._real = WideConsole(stderr=self._stderr)
        return getattr(self._real, name)


out_console = cast("Console", _LazyConsole(stderr=False))
err_console = cast("Console", _LazyConsole(stderr=True))

P = ParamSpec("P")
R = TypeVar("R")


def safe(value: object) -> str:
    """Untrusted text (from an agent, a PC, a server answer) for an f-string passed to a
    console: its controls made visible (`corral.domain.text.visible`), its Rich markup escaped,
    so it is printed exactly as it is and never styles, hides or breaks the line around it."""
    from rich.markup import escape

    return escape(visible(str(value)))


if TYPE_CHECKING:
    from corral.cli._render import TextTable
else:

    def TextTable(*headers: str, **kwargs: Any) -> Any:
        """A table whose string cells are plain text (corral.cli._render.TextTable), made
        without importing Rich until a command draws one."""
        from corral.cli._render import TextTable as _TextTable

        return _TextTable(*headers, **kwargs)


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
    from corral.store import check_data_files
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
    from corral.store import Store

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


class OutputFormat(enum.StrEnum):
    """What a list or show command prints on stdout."""

    table = "table"
    json = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        case_sensitive=False,
        help="table (for people, the default) or json (for scripts: stable keys, see docs/cli.md)",
    ),
]


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def print_json(value: object) -> None:
    """`--output json`: one JSON document on stdout and nothing else (messages and progress
    go to stderr). ASCII only, so controls, bidi and invisible characters an agent or a PC
    put in a value arrive escaped (\\u202e), never raw on a terminal."""
    sys.stdout.write(json.dumps(value, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def emit(output: OutputFormat, data: object, table: Callable[[], RenderableType]) -> None:
    """Print `data` as JSON, or the table made from it (built only when needed)."""
    if output is OutputFormat.json:
        print_json(data)
    else:
        out_console.print(table())


def interactive() -> bool:
    """Live progress only for a person at a terminal; CI and pipes get plain lines."""
    return err_console.is_terminal and os.environ.get("CI", "").lower() not in ("1", "true")


@dataclass
class Progress:
    """A long operation's progress, always on stderr (stdout stays the command's answer, a
    JSON document with --output json). At a terminal: one live status line that `update`
    rewrites, with `log` lines kept above it. Elsewhere: plain lines, an `update` printed only
    when its text changes, so a log or CI job shows each state once."""

    title: str
    _status: Status | None = None
    _last: str | None = None
    _started: float = 0.0

    def start(self) -> Progress:
        self._started = time.monotonic()
        if interactive():
            self._status = err_console.status(safe(self.title))
            self._status.start()
        else:
            self._plain(self.title)
        return self

    def update(self, message: str) -> None:
        """The current state (transient on a terminal)."""
        if message == self._last:
            return
        self._last = message
        if self._status is not None:
            self._status.update(f"{safe(self.title)}: {safe(message)}")
        else:
            self._plain(f"{self.title}: {message}")

    def log(self, message: str) -> None:
        """A line worth keeping (a build step), and the current state."""
        if self._status is not None:
            err_console.print(f"[dim]{safe(message)}[/]", highlight=False)
            self._status.update(f"{safe(self.title)}: {safe(message.split('] ', 1)[-1])}")
        else:
            self._plain(message)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    @staticmethod
    def _plain(line: str) -> None:
        print(visible(line), file=sys.stderr, flush=True)


@contextmanager
def progress(title: str) -> Iterator[Progress]:
    """`with progress("building desktop") as p: ... p.log(step) ... p.update(state)`."""
    shown = Progress(title).start()
    try:
        yield shown
    finally:
        shown.stop()
