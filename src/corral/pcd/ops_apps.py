"""`launch` and `open_url`: start GUI programs detached from pcd (own session, output to a log
file in $TMPDIR or /tmp that the agent can read), reaped in the background."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from .args import Args
from .context import Context
from .errors import UNSUPPORTED, PcdError, bad_request

BROWSER = "/usr/bin/chromium"
BROWSER_FLAGS = (
    "--no-sandbox",  # Chromium cannot make namespaces in a PC; the PC is the sandbox
    "--test-type",  # hides the "unsupported command-line flag" bar that would mislead a model
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
URL_SCHEMES = ("http", "https", "file", "about")
MAX_URL = 64 * 1024
_WM_WAIT_S = 5.0


def start_detached(ctx: Context, argv: list[str]) -> dict[str, Any]:
    # Right after boot, a window mapped before the WM is fully up would never be shown.
    ctx.desktop.wait_wm(_WM_WAIT_S)
    import tempfile

    name = os.path.basename(argv[0])[:40] or "program"
    fd, log = tempfile.mkstemp(
        prefix=f"corral-launch-{name}-", suffix=".log", dir=ctx.env.get("TMPDIR") or "/tmp"
    )
    try:
        proc = ctx.children.spawn(
            argv, cwd=ctx.home, env=ctx.env, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd
        )
    except PcdError:
        os.close(fd)
        os.unlink(log)
        raise
    os.close(fd)
    ctx.children.reap_in_background(proc)
    return {"pid": proc.pid, "log": log}


def launch(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    argv = args.opt_str_list("argv", max_items=10_000, max_len=1 << 20)
    if argv is None:
        raise bad_request("launch: missing required 'argv' (a list of strings)")
    return start_detached(ctx, argv), b""


def open_url(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    from urllib.parse import urlsplit

    url = args.get_str("url", max_len=MAX_URL, allow_empty=False)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in URL_SCHEMES or any(c in url for c in "\0\r\n"):
        raise bad_request(
            f"open_url: {url[:100]!r} is not allowed; use an http, https, file or about URL"
        )
    if not os.access(BROWSER, os.X_OK):
        raise PcdError(
            UNSUPPORTED,
            "this PC's image has no browser; acquire a PC from a pool that uses the desktop image",
        )
    profile = os.path.join(ctx.home, ".config", "chromium")
    argv = [BROWSER, *BROWSER_FLAGS, f"--user-data-dir={profile}", url]
    return start_detached(ctx, argv), b""
