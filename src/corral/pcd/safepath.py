"""Resolving agent-supplied paths inside $HOME or /tmp without any symlink escape.

1. Normalize lexically: relative paths are relative to $HOME; "." and empty parts drop out;
   ".." is refused outright (no lexical games).
2. Pick the allowed root the path lies under ($HOME or /tmp); anything else is refused.
3. Open the root, then walk one component at a time with openat(O_NOFOLLOW | O_DIRECTORY)
   relative to the previous directory fd. A symlink anywhere fails the walk, and since every
   step is relative to an fd we already hold, a concurrent rename or symlink swap cannot make
   us leave the tree (no TOCTOU window).
4. The caller acts on the final name relative to the parent fd, again with O_NOFOLLOW.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import BAD_REQUEST, NOT_DIRECTORY, NOT_FOUND, PATH_NOT_ALLOWED, PcdError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_PATH = 4096


@dataclass(frozen=True)
class Target:
    """A path split into its allowed root, the directories below it and the final name."""

    root: str
    dirs: tuple[str, ...]
    name: str  # "" when the path is the root itself

    @property
    def path(self) -> str:
        return os.path.join(self.root, *self.dirs, self.name) if self.name else self.root


def _not_allowed(path: str, why: str, roots: tuple[str, ...]) -> PcdError:
    return PcdError(
        PATH_NOT_ALLOWED,
        f"{path!r}: {why}; only paths inside "
        f"{' or '.join(roots)} are allowed (relative paths start at {roots[0]})",
    )


def parse(path: str, home: str, tmp: str = "/tmp") -> Target:
    """Steps 1 and 2: lexical normalization and root selection."""
    roots = (home, tmp)
    if not path or "\0" in path or len(path) > MAX_PATH:
        raise PcdError(
            BAD_REQUEST,
            f"path must be a non-empty string without NUL, at most {MAX_PATH} characters",
        )
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    full = path if path.startswith("/") else home.rstrip("/") + "/" + path
    parts = [p for p in full.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _not_allowed(path, "'..' is not allowed", roots)
    for root in roots:
        root_parts = [p for p in root.split("/") if p]
        if parts[: len(root_parts)] == root_parts:
            rest = parts[len(root_parts) :]
            if not rest:
                return Target(root, (), "")
            return Target(root, tuple(rest[:-1]), rest[-1])
    raise _not_allowed(path, "outside the allowed folders", roots)


def is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _step_error(
    exc: OSError, target: Target, upto: tuple[str, ...], dir_fd: int | None = None
) -> PcdError:
    """Map a failed step; `dir_fd` (the parent of upto[-1]) tells symlinks from files, since
    O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR rather than ELOOP."""
    where = os.path.join(target.root, *upto)
    if exc.errno == errno.ENOTDIR and dir_fd is not None and is_symlink(dir_fd, upto[-1]):
        exc = OSError(errno.ELOOP, "symlink")
    if exc.errno == errno.ELOOP:
        return PcdError(
            PATH_NOT_ALLOWED,
            f"{where!r} is a symlink; pcd does not follow symlinks (use the real path)",
        )
    if exc.errno == errno.ENOENT:
        return PcdError(NOT_FOUND, f"{where!r} does not exist")
    if exc.errno == errno.ENOTDIR:
        return PcdError(NOT_DIRECTORY, f"{where!r} is not a directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PcdError(PATH_NOT_ALLOWED, f"{where!r}: permission denied")
    return PcdError(BAD_REQUEST, f"{where!r}: {exc.strerror}")


@contextmanager
def open_parent(target: Target, *, mkdirs: bool = False) -> Iterator[int]:
    """Step 3: yield an fd of the directory holding target.name (or of the root itself when
    the name is empty), creating missing directories when `mkdirs`."""
    fd = os.open(target.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(target.dirs):
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not mkdirs:
                    raise _step_error(
                        FileNotFoundError(errno.ENOENT, ""), target, target.dirs[: i + 1]
                    ) from None
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise _step_error(exc, target, target.dirs[: i + 1]) from None
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _step_error(exc, target, target.dirs[: i + 1], fd) from None
            except OSError as exc:
                raise _step_error(exc, target, target.dirs[: i + 1], fd) from None
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def step_error(exc: OSError, target: Target, dir_fd: int) -> PcdError:
    """An OSError on the final component (relative to its parent `dir_fd`)."""
    return _step_error(exc, target, (*target.dirs, target.name), dir_fd)
