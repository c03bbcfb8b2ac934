"""Spawning Xvfb with nothing but `os`, so it starts before pcd imports anything else.

Readiness comes from -displayfd: Xvfb writes its display number to the pipe once it accepts
clients, so there is no polling. With -fbdir, Xvfb keeps its framebuffer in a memory-mapped XWD
file on tmpfs that screenshots read directly (no 4 MB GetImage round trip).
"""

from __future__ import annotations

import contextlib
import os
import select
import time

READY_TIMEOUT_S = 15.0
FB_PARENT = "/dev/shm"
FB_FILE = "Xvfb_screen0"


def parse_geometry(text: str) -> tuple[int, int, int]:
    """ "1280x800x24" (depth optional, default 24) -> (width, height, depth)."""
    try:
        numbers = [int(p) for p in text.lower().split("x")]
    except ValueError:
        numbers = []
    if len(numbers) == 2:
        numbers.append(24)
    if len(numbers) != 3 or not (16 <= numbers[0] <= 8192 and 16 <= numbers[1] <= 8192):
        raise ValueError(f"bad geometry {text!r}; use WIDTHxHEIGHTxDEPTH like 1280x800x24")
    if numbers[2] not in (16, 24, 32):
        raise ValueError(f"bad colour depth in {text!r}; use 24")
    return numbers[0], numbers[1], numbers[2]


def make_fbdir() -> str | None:
    """A private folder on tmpfs for the framebuffer file, or None if there is none."""
    path = f"{FB_PARENT}/pcd-fb-{os.getpid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:  # left by an earlier process with our pid
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}/{FB_FILE}")
    except OSError:
        return None
    return path


def spawn(display: str, geometry: tuple[int, int, int], fbdir: str | None) -> tuple[int, int]:
    """Start Xvfb; return (pid, read end of the -displayfd pipe). `display` "auto" lets Xvfb
    pick a free display number."""
    read_fd, write_fd = os.pipe()
    argv = ["Xvfb"]
    if display != "auto":
        argv.append(display)
    width, height, depth = geometry
    argv += [
        "-screen",
        "0",
        f"{width}x{height}x{depth}",
        "-nolisten",
        "tcp",
        "-noreset",
        "-displayfd",
        str(write_fd),
    ]
    if fbdir:
        argv += ["-fbdir", fbdir]
    os.set_inheritable(write_fd, True)  # the only fd Xvfb inherits besides stdio
    try:
        pid = os.posix_spawnp(
            "Xvfb",
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            ],
        )
    finally:
        os.close(write_fd)
    return pid, read_fd


def wait_ready(read_fd: int) -> str:
    """Block until Xvfb writes its display number; return ":N"."""
    data = b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                raise RuntimeError(f"Xvfb gave no display in {READY_TIMEOUT_S:.0f} s")
            chunk = os.read(read_fd, 32)
            if not chunk:
                raise RuntimeError("Xvfb exited before it was ready (see its messages above)")
            data += chunk
    finally:
        os.close(read_fd)
    return ":" + data.decode().strip()
