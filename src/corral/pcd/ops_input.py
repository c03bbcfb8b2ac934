"""Pointer and keyboard ops. Pointer input and typing go through XTEST on the persistent
connection (a click is well under a millisecond); key combinations go through xdotool, whose
modifier handling is well proven."""

from __future__ import annotations

import time
from typing import Any

from .args import Args
from .context import Context
from .errors import bad_request
from .keys import parse_keys
from .xconn import BUTTONS, SCROLL_DOWN, SCROLL_LEFT, SCROLL_RIGHT, SCROLL_UP
from .xdotool import xdotool

MAX_TEXT = 100_000
MAX_PATH_POINTS = 10_000
MAX_SCROLL = 50
_DRAG_SETTLE_S = 0.015
_DRAG_STEP_S = 0.002

Result = tuple[dict[str, Any], bytes]


def _point(ctx: Context, args: Args, value: object, name: str) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise bad_request(f"{args.op}: {name} must be [x, y]")
    x = args.check_int(f"{name} x", value[0], lo=0, hi=ctx.width - 1)
    y = args.check_int(f"{name} y", value[1], lo=0, hi=ctx.height - 1)
    return x, y


def _opt_point(ctx: Context, args: Args) -> tuple[int, int] | None:
    """Optional x,y: both or neither, inside the screen."""
    if args.has("x") != args.has("y"):
        raise bad_request(f"{args.op}: give both 'x' and 'y', or neither")
    if not args.has("x"):
        return None
    return (args.get_int("x", lo=0, hi=ctx.width - 1), args.get_int("y", lo=0, hi=ctx.height - 1))


def _button(args: Args) -> int:
    name = args.raw("button")
    if name is None:
        return BUTTONS["left"]
    if not isinstance(name, str) or name not in BUTTONS:
        raise bad_request(f"{args.op}: unknown button {name!r}; use 'left', 'right' or 'middle'")
    return BUTTONS[name]


def _here(ctx: Context) -> dict[str, Any]:
    x, y = ctx.x.pointer()
    return {"x": x, "y": y}


def mouse_move(ctx: Context, args: Args, blob: bytes) -> Result:
    point = _opt_point(ctx, args)
    if point is None:
        raise bad_request("mouse_move: missing required integers 'x' and 'y'")
    with ctx.input_lock, ctx.x.session() as d:
        ctx.x.motion(d, *point)
        ctx.x.sync(d)
    return {"x": point[0], "y": point[1]}, b""


def click(ctx: Context, args: Args, blob: bytes) -> Result:
    point = _opt_point(ctx, args)
    button = _button(args)
    count = args.get_int("count", default=1, lo=1, hi=3)
    with ctx.input_lock, ctx.x.session() as d:
        if point is not None:
            ctx.x.motion(d, *point)
        for _ in range(count):
            ctx.x.button(d, button, True)
            ctx.x.button(d, button, False)
        ctx.x.sync(d)
    return _here(ctx), b""


def drag(ctx: Context, args: Args, blob: bytes) -> Result:
    path = args.raw("path")
    if not isinstance(path, list) or not 2 <= len(path) <= MAX_PATH_POINTS:
        raise bad_request(f"drag: 'path' must be a list of 2 to {MAX_PATH_POINTS} [x, y] points")
    points = [_point(ctx, args, p, f"path[{i}]") for i, p in enumerate(path)]
    button = _button(args)
    with ctx.input_lock, ctx.x.session() as d:
        ctx.x.motion(d, *points[0])
        ctx.x.sync(d)
        ctx.x.button(d, button, True)
        try:
            # Pauses let a window manager's synchronous button grab replay the press before
            # the pointer moves (otherwise the frozen motions are merged), and let
            # applications see each step as its own event.
            ctx.x.sync(d)
            time.sleep(_DRAG_SETTLE_S)
            for point in points[1:]:
                ctx.x.motion(d, *point)
                ctx.x.sync(d)
                time.sleep(_DRAG_STEP_S)
            time.sleep(_DRAG_SETTLE_S)
        finally:
            ctx.x.button(d, button, False)
            ctx.x.sync(d)
    return _here(ctx), b""


def scroll(ctx: Context, args: Args, blob: bytes) -> Result:
    point = _opt_point(ctx, args)
    dx = args.get_int("dx", default=0, lo=-MAX_SCROLL, hi=MAX_SCROLL)
    dy = args.get_int("dy", default=0, lo=-MAX_SCROLL, hi=MAX_SCROLL)
    steps = [
        (SCROLL_DOWN if dy > 0 else SCROLL_UP, abs(dy)),
        (SCROLL_RIGHT if dx > 0 else SCROLL_LEFT, abs(dx)),
    ]
    with ctx.input_lock, ctx.x.session() as d:
        if point is not None:
            ctx.x.motion(d, *point)
        for button, count in steps:
            for _ in range(count):
                ctx.x.button(d, button, True)
                ctx.x.button(d, button, False)
        ctx.x.sync(d)
    return _here(ctx), b""


def type_text(ctx: Context, args: Args, blob: bytes) -> Result:
    text = args.get_str("text", max_len=MAX_TEXT)
    with ctx.input_lock:
        typed = ctx.typer.type(text)
    return {"chars": typed}, b""


def press_keys(ctx: Context, args: Args, blob: bytes) -> Result:
    combos = parse_keys(args.raw("keys"))
    with ctx.input_lock:
        xdotool(
            ["key", "--clearmodifiers", "--delay", "2", "--", *combos],
            env=ctx.env,
            timeout=10 + 0.1 * len(combos),
        )
    return {"keys": combos}, b""
