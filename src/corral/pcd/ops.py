"""The op table: each op's handler and the args it accepts (anything else is refused, so a
misspelt arg fails loudly instead of being ignored)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import (
    ops_apps,
    ops_clipboard,
    ops_files,
    ops_input,
    ops_run,
    ops_screen,
    ops_system,
    ops_windows,
)
from .args import Args
from .context import Context

Handler = Callable[[Context, Args, bytes], tuple[dict[str, Any], bytes]]


@dataclass(frozen=True)
class Op:
    handler: Handler
    args: frozenset[str]


def _op(handler: Handler, *names: str) -> Op:
    return Op(handler, frozenset(names))


OPS: dict[str, Op] = {
    "health": _op(ops_system.health),
    "processes": _op(ops_system.processes),
    "screenshot": _op(ops_screen.screenshot, "max_width", "max_height"),
    "mouse_move": _op(ops_input.mouse_move, "x", "y"),
    "click": _op(ops_input.click, "x", "y", "button", "count"),
    "drag": _op(ops_input.drag, "path", "button"),
    "scroll": _op(ops_input.scroll, "x", "y", "dx", "dy"),
    "type_text": _op(ops_input.type_text, "text"),
    "press_keys": _op(ops_input.press_keys, "keys"),
    "run": _op(ops_run.run, "argv", "shell", "timeout_s", "max_output", "cwd", "env", "stdin"),
    "read_file": _op(ops_files.read_file, "path", "max_bytes"),
    "write_file": _op(ops_files.write_file, "path", "mode", "append", "mkdirs"),
    "list_dir": _op(ops_files.list_dir, "path"),
    "clipboard_get": _op(ops_clipboard.clipboard_get),
    "clipboard_set": _op(ops_clipboard.clipboard_set, "text"),
    "list_windows": _op(ops_windows.list_windows),
    "focus_window": _op(ops_windows.focus_window, "id"),
    "launch": _op(ops_apps.launch, "argv"),
    "open_url": _op(ops_apps.open_url, "url"),
}
