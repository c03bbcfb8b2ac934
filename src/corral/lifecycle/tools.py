"""The computer tools: one catalogue, one implementation, behind MCP and REST alike.

Each tool has a name, a description written for a model (units, coordinate space, limits), an
argument model (pydantic: what the adapters validate and publish as JSON schema) and a function
that performs it on a PC through the runtime's pcd client.

Coordinates are pixels in the space of the latest screenshot the session took: when a model asks
for screenshots scaled to fit (say 1024x768), it clicks in that scaled space and Corral maps the
point back to the real screen.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corral.domain.urls import parse_web_url
from corral.errors import InvalidInputError
from corral.runtime.client import PcdClient

__all__ = ["TOOLS", "ScreenSpace", "Tool", "ToolResult", "parse_args"]

MAX_TEXT = 100_000
MAX_FILE = 16 * 1024 * 1024


@dataclass
class ScreenSpace:
    """The coordinate space the agent works in: the real screen times `scale`."""

    screen_width: int = 1280
    screen_height: int = 800
    scale: float = 1.0

    @property
    def width(self) -> int:
        return max(1, round(self.screen_width * self.scale))

    @property
    def height(self) -> int:
        return max(1, round(self.screen_height * self.scale))

    def to_screen(self, x: int, y: int) -> tuple[int, int]:
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise InvalidInputError(
                f"point ({x}, {y}) is off the screen",
                hint=f"x must be 0..{self.width - 1} and y 0..{self.height - 1} "
                "(pixels of the latest screenshot)",
            )
        sx = min(self.screen_width - 1, round(x / self.scale))
        sy = min(self.screen_height - 1, round(y / self.scale))
        return sx, sy


@dataclass
class ToolResult:
    text: str = ""
    image_png: bytes | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The REST form: images as base64."""
        out: dict[str, Any] = {"text": self.text, "data": self.data}
        if self.image_png is not None:
            out["image"] = {
                "mime_type": "image/png",
                "base64": base64.b64encode(self.image_png).decode(),
            }
        return out


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


Coord = Field(ge=0, le=16384, description="pixels in the latest screenshot's space")


class ScreenshotArgs(_Args):
    max_width: int | None = Field(
        None, ge=64, le=7680, description="scale down to fit this width (keeps aspect)"
    )
    max_height: int | None = Field(
        None, ge=64, le=4320, description="scale down to fit this height (keeps aspect)"
    )


class PointArgs(_Args):
    x: int = Coord
    y: int = Coord


class ClickArgs(_Args):
    x: int | None = Field(None, ge=0, le=16384, description="omit to click where the pointer is")
    y: int | None = Field(None, ge=0, le=16384)
    button: Literal["left", "right", "middle"] = "left"


class DragArgs(_Args):
    start_x: int = Coord
    start_y: int = Coord
    end_x: int = Coord
    end_y: int = Coord
    button: Literal["left", "right", "middle"] = "left"


class ScrollArgs(_Args):
    x: int | None = Field(None, ge=0, le=16384)
    y: int | None = Field(None, ge=0, le=16384)
    dx: int = Field(0, ge=-50, le=50, description="wheel clicks, positive = right")
    dy: int = Field(0, ge=-50, le=50, description="wheel clicks, positive = down")


class TypeTextArgs(_Args):
    text: str = Field(max_length=MAX_TEXT, description="Unicode text; \\n presses Enter")


class PressKeysArgs(_Args):
    keys: str = Field(
        min_length=1,
        max_length=200,
        description="X key names joined by '+', e.g. 'ctrl+c', 'Return', 'alt+F4'",
    )


class RunCommandArgs(_Args):
    command: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXT,
        description="shell command line, run by /bin/sh -c as the desktop user "
        "(refused while a policy restricts programs: use argv then)",
    )
    argv: list[str] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="program and arguments, run without a shell, e.g. ['ls', '-l', '/tmp']",
    )
    timeout_s: float = Field(30, gt=0, le=600, description="seconds before it is killed")

    @model_validator(mode="after")
    def _one_form(self) -> RunCommandArgs:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of command (a shell line) or argv (a list)")
        if self.argv is not None and (
            not self.argv[0] or any(len(a) > MAX_TEXT or "\0" in a for a in self.argv)
        ):
            raise ValueError(
                f"argv[0] must name a program; no argument may hold NUL or exceed {MAX_TEXT} "
                "characters"
            )
        return self


class PathArgs(_Args):
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="absolute, or relative to the home folder; only the home "
        "folder and /tmp are allowed",
    )


class WriteFileArgs(PathArgs):
    content: str = Field(max_length=MAX_FILE, description="text to write (UTF-8)")
    base64: bool = Field(False, description="content is base64 of binary data")


class TextArgs(_Args):
    text: str = Field(max_length=MAX_TEXT)


class WindowArgs(_Args):
    window_id: str = Field(min_length=1, max_length=32, description="id from list_windows")


class LaunchArgs(_Args):
    command: list[str] = Field(
        min_length=1, max_length=64, description="program and arguments, e.g. ['xterm']"
    )


class UrlArgs(_Args):
    url: str = Field(
        min_length=1,
        max_length=8192,
        description="an http or https URL (other schemes only where a policy allows them)",
    )


class WaitArgs(_Args):
    seconds: float = Field(gt=0, le=60)


class NoArgs(_Args):
    pass


Runner = Callable[[PcdClient, ScreenSpace, Any], ToolResult]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[_Args]
    run: Runner
    input_tool: bool = False  # drives mouse or keyboard (read-only sessions refuse these)


def _screenshot(c: PcdClient, space: ScreenSpace, a: ScreenshotArgs) -> ToolResult:
    shot = c.screenshot(a.max_width, a.max_height)
    space.screen_width, space.screen_height = shot.screen_width, shot.screen_height
    space.scale = shot.scale
    return ToolResult(
        text=f"screenshot {shot.width}x{shot.height} (screen {shot.screen_width}x"
        f"{shot.screen_height}); use coordinates in this image's pixels",
        image_png=shot.png,
        data={
            "width": shot.width,
            "height": shot.height,
            "scale": shot.scale,
            "screen_width": shot.screen_width,
            "screen_height": shot.screen_height,
        },
    )


def _ok(text: str, **data: Any) -> ToolResult:
    return ToolResult(text=text, data=data)


def _mouse_move(c: PcdClient, s: ScreenSpace, a: PointArgs) -> ToolResult:
    c.mouse_move(*s.to_screen(a.x, a.y))
    return _ok(f"pointer at ({a.x}, {a.y})")


def _clicker(count: int) -> Runner:
    def run(c: PcdClient, s: ScreenSpace, a: ClickArgs) -> ToolResult:
        if (a.x is None) != (a.y is None):
            raise InvalidInputError("give both x and y, or neither")
        if a.x is not None and a.y is not None:
            c.click(*s.to_screen(a.x, a.y), button=a.button, count=count)
        else:
            c.click(button=a.button, count=count)
        return _ok(f"{'double-' if count == 2 else ''}clicked {a.button}")

    return run


def _drag(c: PcdClient, s: ScreenSpace, a: DragArgs) -> ToolResult:
    c.drag([s.to_screen(a.start_x, a.start_y), s.to_screen(a.end_x, a.end_y)], a.button)
    return _ok(f"dragged from ({a.start_x}, {a.start_y}) to ({a.end_x}, {a.end_y})")


def _scroll(c: PcdClient, s: ScreenSpace, a: ScrollArgs) -> ToolResult:
    if (a.x is None) != (a.y is None):
        raise InvalidInputError("give both x and y, or neither")
    point = s.to_screen(a.x, a.y) if a.x is not None and a.y is not None else (None, None)
    c.scroll(a.dx, a.dy, *point)
    return _ok(f"scrolled dx={a.dx} dy={a.dy}")


def _type_text(c: PcdClient, s: ScreenSpace, a: TypeTextArgs) -> ToolResult:
    c.type_text(a.text)
    return _ok(f"typed {len(a.text)} characters")


def _press_keys(c: PcdClient, s: ScreenSpace, a: PressKeysArgs) -> ToolResult:
    c.press_keys(a.keys)
    return _ok(f"pressed {a.keys}")


def _run_command(c: PcdClient, s: ScreenSpace, a: RunCommandArgs) -> ToolResult:
    if a.argv is not None:
        r = c.run(argv=a.argv, timeout_s=a.timeout_s)  # exec'd by pcd, no shell
    else:
        r = c.run(shell=a.command, timeout_s=a.timeout_s)
    status = "timed out and was killed" if r.timed_out else f"exit code {r.exit_code}"
    text = f"{status}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    return ToolResult(
        text=text,
        data={
            "exit_code": r.exit_code,
            "stdout": r.stdout,
            "stderr": r.stderr,
            "timed_out": r.timed_out,
            "truncated": r.stdout_truncated or r.stderr_truncated,
        },
    )


def _read_file(c: PcdClient, s: ScreenSpace, a: PathArgs) -> ToolResult:
    raw = c.read_file(a.path, max_bytes=MAX_FILE)
    try:
        return ToolResult(text=raw.decode(), data={"size": len(raw), "base64": False})
    except UnicodeDecodeError:
        encoded = base64.b64encode(raw).decode()
        return ToolResult(text=encoded, data={"size": len(raw), "base64": True})


def _write_file(c: PcdClient, s: ScreenSpace, a: WriteFileArgs) -> ToolResult:
    try:
        raw = base64.b64decode(a.content, validate=True) if a.base64 else a.content.encode()
    except ValueError:
        raise InvalidInputError("content is not valid base64") from None
    info = c.write_file(a.path, raw, mkdirs=True)
    return _ok(f"wrote {len(raw)} bytes to {info.get('path', a.path)}", size=len(raw))


def _list_directory(c: PcdClient, s: ScreenSpace, a: PathArgs) -> ToolResult:
    entries = c.list_dir(a.path)
    lines = [f"{e['type'][0]} {e.get('size', 0):>10} {e['name']}" for e in entries]
    return ToolResult(text="\n".join(lines) or "(empty)", data={"entries": entries})


def _get_clipboard(c: PcdClient, s: ScreenSpace, a: NoArgs) -> ToolResult:
    text = c.clipboard_get()
    return ToolResult(text=text, data={"text": text})


def _set_clipboard(c: PcdClient, s: ScreenSpace, a: TextArgs) -> ToolResult:
    c.clipboard_set(a.text)
    return _ok(f"clipboard set ({len(a.text)} characters)")


def _list_windows(c: PcdClient, s: ScreenSpace, a: NoArgs) -> ToolResult:
    windows = c.list_windows()
    lines = [f"{w['id']} {'*' if w.get('focused') else ' '} {w['title']}" for w in windows]
    return ToolResult(text="\n".join(lines) or "(no windows)", data={"windows": windows})


def _focus_window(c: PcdClient, s: ScreenSpace, a: WindowArgs) -> ToolResult:
    c.focus_window(a.window_id)
    return _ok(f"focused {a.window_id}")


def _launch_app(c: PcdClient, s: ScreenSpace, a: LaunchArgs) -> ToolResult:
    pid = c.launch(a.command)
    return _ok(f"started {a.command[0]} (pid {pid})", pid=pid)


def _open_url(c: PcdClient, s: ScreenSpace, a: UrlArgs) -> ToolResult:
    # The browser gets the URL as serialised by the same WHATWG parser policy decided on, so
    # the host it connects to is the host policy saw.
    url = parse_web_url(a.url).href
    c.open_url(url)
    return _ok(f"opened {url}")


def _wait(c: PcdClient, s: ScreenSpace, a: WaitArgs) -> ToolResult:
    time.sleep(a.seconds)
    return _ok(f"waited {a.seconds:g} s")


_SPACE = "Coordinates are pixels of the latest screenshot (origin top-left)."

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "screenshot",
            "Take a PNG screenshot of the PC's screen. Optionally scale it down to "
            "fit max_width x max_height; later coordinates are then in the scaled image's pixels.",
            ScreenshotArgs,
            _screenshot,
        ),
        Tool("mouse_move", f"Move the mouse pointer. {_SPACE}", PointArgs, _mouse_move, True),
        Tool(
            "click",
            f"Click a mouse button once at (x, y), or where the pointer is. {_SPACE}",
            ClickArgs,
            _clicker(1),
            True,
        ),
        Tool("double_click", f"Double-click at (x, y). {_SPACE}", ClickArgs, _clicker(2), True),
        Tool("drag", f"Press at start, move to end, release. {_SPACE}", DragArgs, _drag, True),
        Tool(
            "scroll",
            "Turn the mouse wheel dx/dy clicks (positive dy scrolls down), at (x, y) "
            f"if given. {_SPACE}",
            ScrollArgs,
            _scroll,
            True,
        ),
        Tool(
            "type_text",
            "Type Unicode text on the keyboard into the focused window (up to "
            f"{MAX_TEXT} characters; newline presses Enter).",
            TypeTextArgs,
            _type_text,
            True,
        ),
        Tool(
            "press_keys",
            "Press a key combination such as 'ctrl+c', 'ctrl+alt+t', 'Return', "
            "'Escape' or 'alt+F4' (X key names joined by '+').",
            PressKeysArgs,
            _press_keys,
            True,
        ),
        Tool(
            "run_command",
            "Run a command in the PC as the desktop user and return its exit code, stdout and "
            "stderr (each cut at 1 MiB; killed after timeout_s, default 30 s). Give argv "
            "(program and arguments, no shell) or command (a shell line for /bin/sh -c).",
            RunCommandArgs,
            _run_command,
        ),
        Tool(
            "read_file",
            "Read a file from the PC (home folder or /tmp only, at most 16 MiB); text "
            "comes back as is, binary as base64.",
            PathArgs,
            _read_file,
        ),
        Tool(
            "write_file",
            "Write a file in the PC (home folder or /tmp only), creating folders; "
            "replaces an existing file.",
            WriteFileArgs,
            _write_file,
        ),
        Tool(
            "list_directory",
            "List a folder in the PC (home folder or /tmp only).",
            PathArgs,
            _list_directory,
        ),
        Tool("get_clipboard", "Return the PC's clipboard text.", NoArgs, _get_clipboard),
        Tool("set_clipboard", "Put text on the PC's clipboard.", TextArgs, _set_clipboard),
        Tool("list_windows", "List the open windows: id, title, focus.", NoArgs, _list_windows),
        Tool(
            "focus_window",
            "Bring a window (id from list_windows) to the front and focus it.",
            WindowArgs,
            _focus_window,
            True,
        ),
        Tool(
            "launch_app",
            "Start a program on the desktop, e.g. ['xterm'] or ['chromium'].",
            LaunchArgs,
            _launch_app,
            True,
        ),
        Tool(
            "open_url",
            "Open an http(s) URL in the PC's browser (desktop image).",
            UrlArgs,
            _open_url,
            True,
        ),
        Tool("wait", "Wait some seconds (at most 60) for the screen to settle.", WaitArgs, _wait),
    )
}


def parse_args(tool: str, raw: dict[str, Any] | None) -> tuple[Tool, _Args]:
    """Look up `tool` and validate its arguments; clear InvalidInputError otherwise."""
    spec = TOOLS.get(tool)
    if spec is None:
        raise InvalidInputError(f"unknown tool {tool!r}", hint=f"tools: {', '.join(sorted(TOOLS))}")
    try:
        return spec, spec.args.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInputError(f"bad arguments for {tool}: {problems}") from None
