"""Mounts for building inside a chroot, and the guard that keeps cleanup from escaping them.

A build bind-mounts the host's package cache into the new root; deleting a staging folder while
anything is still mounted under it would delete through the mount. So every removal first unmounts
and then proves, from /proc/self/mountinfo, that nothing is mounted below the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from corral.errors import ImageBuildError
from corral.runtime.images._signals import signals_blocked

__all__ = ["chroot_mounts", "mounts_under", "parse_mountinfo", "safe_rmtree", "unmount_under"]

# Nodes for the build's private /dev (a tmpfs, so package scripts never see host devices).
_DEVICES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}
_DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[str]:
    """Mount points listed in a /proc/PID/mountinfo text, in mount order."""
    points = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(_unescape(fields[4]))
    return points


def _under(point: str, root: str) -> bool:
    return point == root or point.startswith(root.rstrip("/") + "/")


def mounts_under(path: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below `path`, deepest (most recently mounted) first."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    root = os.path.realpath(path)
    return [p for p in reversed(parse_mountinfo(text)) if _under(p, root)]


def unmount_under(path: Path) -> None:
    """Unmount everything at or below `path`, lazily if a busy mount will not let go."""
    for _ in range(3):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts_under(path):
        raise ImageBuildError(
            f"could not unmount everything under {path}",
            hint="see `findmnt -R` and unmount it by hand",
        )


def safe_rmtree(path: Path) -> None:
    """Remove a build folder only after unmounting and proving nothing is mounted below it."""
    if not os.path.lexists(path):
        return
    with signals_blocked():
        unmount_under(path)
        if mounts_under(path):  # pragma: no cover - unmount_under raises first
            raise ImageBuildError(f"refusing to delete {path}: something is still mounted under it")
        shutil.rmtree(path)


def _make_dev(dev: Path) -> None:
    for name, (major, minor) in _DEVICES.items():
        os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)  # noqa: S103 - world-usable like any /dev/null
    for name, target in _DEV_LINKS.items():
        os.symlink(target, dev / name)
    (dev / "pts").mkdir()
    (dev / "shm").mkdir(mode=0o1777)
    os.chmod(dev / "shm", 0o1777)  # noqa: S103 - sticky scratch, as on any host


def _mount(argv: list[str]) -> None:
    done = subprocess.run(["mount", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError(f"mount {' '.join(argv)} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def chroot_mounts(root: Path, binds: dict[str, Path] | None = None) -> Iterator[None]:
    """Mount /proc, /sys (read-only), a private /dev and `binds` ({path-in-root: host dir})
    under `root`; on the way out, always unmount all of it, even on errors or Ctrl-C."""
    try:
        _mount(["-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc")])
        _mount(["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(root / "sys")])
        _mount(["-t", "tmpfs", "-o", "mode=0755,nosuid,size=64m", "corral-dev", str(root / "dev")])
        _make_dev(root / "dev")
        _mount(
            [
                "-t",
                "devpts",
                "-o",
                "newinstance,ptmxmode=0666,mode=0620,nosuid,noexec",
                "devpts",
                str(root / "dev/pts"),
            ]
        )
        for inside, host in (binds or {}).items():
            target = root / inside.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            if not _under(os.path.realpath(target), os.path.realpath(root)):
                raise ImageBuildError(f"refusing to mount over {target}: it leads out of the root")
            _mount(["--bind", str(host), str(target)])
        yield
    finally:
        with signals_blocked():
            for inside in binds or {}:
                unmount_under(root / inside.lstrip("/"))
            for inside in ("dev", "sys", "proc"):
                unmount_under(root / inside)
