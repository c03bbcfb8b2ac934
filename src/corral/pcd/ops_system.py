"""`health` and `processes`: what the host uses to tell a live PC from a dead one."""

from __future__ import annotations

import os
import pwd
import time
from functools import cache
from typing import Any

from .args import Args
from .context import Context
from .xping import ping

HEALTH_X_TIMEOUT_S = 1.0


def health(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    screen = ping(ctx.display, HEALTH_X_TIMEOUT_S)
    return {
        "x": screen is not None,
        "display": ctx.display,
        "width": screen.width if screen else ctx.width,
        "height": screen.height if screen else ctx.height,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - ctx.started, 3),
        "wm": ctx.desktop.wm_running(),
        "wm_ready": ctx.desktop.wm_ready(),
    }, b""


@cache
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _process(pid: int) -> dict[str, Any] | None:
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/stat", "rb") as f:
            stat = f.read()
        with open(f"{base}/cmdline", "rb") as f:
            cmdline = f.read()
        uid = os.stat(base).st_uid
    except OSError:
        return None  # exited meanwhile
    # comm is in parentheses and may itself contain ") ", so split at the last one.
    comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
    ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
    return {
        "pid": pid,
        "ppid": ppid,
        "user": _user(uid),
        "cmd": " ".join(args) if args else f"[{comm}]",
    }


def processes(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = _process(int(name))
            if proc is not None:
                found.append(proc)
    found.sort(key=lambda p: int(p["pid"]))
    return {"processes": found}, b""
