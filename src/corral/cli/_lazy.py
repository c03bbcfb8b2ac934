"""A command group that imports a subcommand's module only when that subcommand runs.

`corral --help` lists every command from the short help written in the table below, so it
imports none of them; `corral pool list` imports `corral.cli.pool` and nothing else of the CLI.
The heavy libraries (SQLAlchemy, FastAPI, uvicorn, MCP, cryptography, pydantic models) load
inside the command that needs them (tests/unit/test_cli_startup.py guards it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, ClassVar

import typer
from typer._click.exceptions import UsageError
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_group

__all__ = ["Lazy", "LazyGroup"]


@dataclass(frozen=True)
class Lazy:
    """Where a subcommand lives: `module:attribute`, a `typer.Typer` (a command group) or a
    function (one command). `help` is its one-line summary in `corral --help`; `override`
    makes it the group's own help too (as `add_typer(help=...)` did)."""

    target: str
    help: str
    override: bool = False

    def load(self, name: str) -> Any:
        module, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        if isinstance(found, typer.Typer):
            command: Any = get_group(found)  # as add_typer would: no completion options
        else:
            single = typer.Typer()
            single.command(name)(found)
            command = get_command_from_info(
                single.registered_commands[0],
                pretty_exceptions_short=single.pretty_exceptions_short,
                rich_markup_mode=single.rich_markup_mode,
            )
        command.name = name
        if self.override:
            command.help = self.help
        return command


class _Summary(typer.core.TyperCommand):
    """What `corral --help` shows of a subcommand not loaded yet: its name and summary."""


class LazyGroup(TyperGroup):
    """A TyperGroup whose subcommands in `lazy` are imported on first use. While the group
    formats its own help, an unloaded subcommand answers with a summary stand-in instead."""

    lazy: ClassVar[dict[str, Lazy]] = {}
    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.lazy, *(name for name in self.commands if name not in self.lazy)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return self.commands.get(cmd_name)
        entry = self.lazy[cmd_name]
        if self._listing:
            return _Summary(name=cmd_name, help=entry.help, callback=None)
        command = entry.load(cmd_name)
        self.commands[cmd_name] = command
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Typer suggests from the loaded commands only: offer the lazy ones too."""
        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if self.suggest_commands and matches:
                suggestions = ", ".join(f"{m!r}" for m in matches)
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
