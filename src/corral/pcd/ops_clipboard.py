"""Clipboard ops through xclip.

An X selection lives in the process that owns it: `xclip -i` keeps running to serve the text
until another program takes the clipboard. pcd runs it in the foreground as its own child and
waits (briefly) until the X selection owner has changed, so a clipboard_get right after sees
the new text.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from .args import Args
from .children import Children, kill_group
from .context import Context
from .errors import INTERNAL, TIMEOUT, PcdError
from .ops_run import execute

MAX_TEXT = 16 << 20
_OWNER_WAIT_S = 2.0


def _owner(ctx: Context) -> int:
    with ctx.x.session() as d:
        owner = d.get_selection_owner(ctx.x.atom(d, "CLIPBOARD"))
        return int(getattr(owner, "id", owner) or 0)


def clipboard_get(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    outcome = execute(
        Children(),
        ["xclip", "-selection", "clipboard", "-o"],
        cwd="/",
        env=ctx.env,
        stdin=None,
        timeout=5.0,
        cap=MAX_TEXT,
    )
    if outcome.timed_out:
        raise PcdError(TIMEOUT, "the clipboard owner did not answer in 5 s")
    if outcome.exit_code != 0:
        # Empty clipboard (no owner, or no text target): xclip says so on stderr.
        return {"text": ""}, b""
    if outcome.stdout.truncated:
        raise PcdError(INTERNAL, f"clipboard holds over {MAX_TEXT} bytes")
    return {"text": outcome.stdout.data.decode("utf-8", errors="replace")}, b""


def clipboard_set(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    text = args.get_str("text", max_len=MAX_TEXT)
    before = _owner(ctx)
    # -quiet keeps xclip in the foreground as our own child (reaped by a thread) instead of
    # forking an orphan; it exits by itself when another program takes the clipboard.
    proc = ctx.children.spawn(
        ["xclip", "-quiet", "-selection", "clipboard", "-i"],
        cwd="/",
        env=ctx.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ctx.children.reap_in_background(proc)
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode(errors="replace"))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    deadline = time.monotonic() + _OWNER_WAIT_S
    delay = 0.0005
    while _owner(ctx) in (before, 0):
        if proc.poll() is not None:
            raise PcdError(
                INTERNAL, f"xclip exited with {proc.returncode} before taking the clipboard"
            )
        if time.monotonic() > deadline:
            kill_group(proc.pid)
            raise PcdError(TIMEOUT, f"xclip did not take the clipboard in {_OWNER_WAIT_S} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
    return {"chars": len(text)}, b""
