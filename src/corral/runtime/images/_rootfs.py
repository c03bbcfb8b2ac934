"""Writing into and reading from a new root filesystem from the host side.

Paths inside the root are resolved the way a process chrooted there would see them (an absolute
symlink points into the root, not at the host), so a file written to `/etc/x` in the image can never
land on the host's own /etc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from corral.errors import ImageBuildError

__all__ = [
    "clear_dir",
    "ensure_dir",
    "installed_packages",
    "parse_passwd",
    "resolve_in_root",
    "write_file",
]

_MAX_LINKS = 40


def resolve_in_root(root: Path, path: str) -> Path:
    """Host path of `path` as seen inside `root`, following symlinks with `root` as `/`;
    missing components are kept as they are."""
    parts = list(PurePosixPath(path).parts[1:])
    cur = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / part
        if nxt.is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                raise ImageBuildError(f"too many symlinks resolving {path} in the image")
            target = PurePosixPath(os.readlink(nxt))
            if target.is_absolute():
                cur = root
                parts = list(target.parts[1:]) + parts
            else:
                parts = list(target.parts) + parts
            continue
        cur = nxt
    return cur


def ensure_dir(root: Path, path: str, mode: int = 0o755) -> Path:
    """Create `path` (and its parents) inside `root`, root-owned; return its host path."""
    host = resolve_in_root(root, path)
    missing = []
    cur = host
    while cur != root and not cur.exists():
        missing.append(cur)
        cur = cur.parent
    if not cur.is_dir():
        raise ImageBuildError(f"cannot create {path} in the image: {cur} is not a directory")
    for d in reversed(missing):
        d.mkdir(mode=mode)
        os.chmod(d, mode)
    return host


def write_file(root: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write a root-owned file at `path` inside `root`, replacing whatever was there
    (a symlink there is replaced, never followed)."""
    pure = PurePosixPath(path)
    parent = ensure_dir(root, str(pure.parent))
    target = parent / pure.name
    tmp = parent / f".{pure.name}.corral-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, mode)
    if target.is_dir() and not target.is_symlink():
        tmp.unlink()
        raise ImageBuildError(f"cannot write {path} in the image: it is a directory")
    os.replace(tmp, target)


def clear_dir(root: Path, path: str) -> None:
    """Empty a directory inside the image, keeping the directory itself."""
    host = resolve_in_root(root, path)
    if not host.is_dir():
        return
    for entry in host.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def parse_passwd(text: str, name: str) -> tuple[int, int, str] | None:
    """(uid, gid, home) of `name` in an /etc/passwd text."""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name:
            return int(fields[2]), int(fields[3]), fields[5]
    return None


def installed_packages(root: Path) -> list[dict[str, str]]:
    """Packages installed in the image, read with the host's dpkg-query from its database."""
    done = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root / 'var/lib/dpkg'}",
            "-W",
            "-f=${db:Status-Abbrev}\t${Package}\t${Version}\n",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ImageBuildError(f"cannot list the image's packages: {done.stderr.strip()}")
    out = []
    for line in done.stdout.splitlines():
        status, name, version = [*line.split("\t"), "", ""][:3]
        if status.startswith("ii"):
            out.append({"name": name, "version": version})
    return sorted(out, key=lambda p: p["name"])
