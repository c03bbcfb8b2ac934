"""File ops confined to $HOME and /tmp (see safepath for how escapes are prevented)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import Any

from .args import Args
from .context import Context
from .errors import BAD_REQUEST, IS_DIRECTORY, TOO_LARGE, PcdError, from_oserror
from .safepath import DIR_FLAGS, Target, is_symlink, open_parent, parse, step_error

DEFAULT_READ = 16 << 20
MAX_READ = 64 << 20
MAX_ENTRIES = 10_000
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC

Result = tuple[dict[str, Any], bytes]


def _target(ctx: Context, args: Args) -> Target:
    return parse(args.get_str("path", max_len=4096, allow_empty=False), ctx.home)


def _is_dir(target: Target) -> PcdError:
    return PcdError(IS_DIRECTORY, f"{target.path!r} is a directory; use list_dir")


def read_file(ctx: Context, args: Args, blob: bytes) -> Result:
    target = _target(ctx, args)
    limit = args.get_int("max_bytes", default=DEFAULT_READ, lo=0, hi=MAX_READ)
    if not target.name:
        raise _is_dir(target)
    with open_parent(target) as parent:
        try:
            # O_NONBLOCK: opening a FIFO must not hang the connection.
            fd = os.open(target.name, os.O_RDONLY | os.O_NONBLOCK | _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise step_error(exc, target, parent) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _is_dir(target)
        if not stat.S_ISREG(info.st_mode):
            raise PcdError(BAD_REQUEST, f"{target.path!r} is not a regular file")
        if info.st_size > limit:
            raise PcdError(
                TOO_LARGE,
                f"{target.path!r} is {info.st_size} bytes, over max_bytes "
                f"{limit}; raise max_bytes (up to {MAX_READ}) or read it in parts "
                "with run (e.g. head -c)",
            )
        chunks = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise PcdError(TOO_LARGE, f"{target.path!r} grew past max_bytes {limit} while being read")
    return {"size": len(data), "path": target.path}, data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_file(ctx: Context, args: Args, blob: bytes) -> Result:
    target = _target(ctx, args)
    mode = args.get_int("mode", default=0o644, lo=0, hi=0o7777)
    append = args.get_bool("append", default=False)
    mkdirs = args.get_bool("mkdirs", default=False)
    if not target.name:
        raise _is_dir(target)
    name = target.name
    with open_parent(target, mkdirs=mkdirs) as parent:
        try:
            existing: os.stat_result | None = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise step_error(exc, target, parent) from None
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise step_error(OSError(errno.ELOOP, "symlink"), target, parent)
            if stat.S_ISDIR(existing.st_mode):
                raise _is_dir(target)
            if not stat.S_ISREG(existing.st_mode):
                raise PcdError(BAD_REQUEST, f"{target.path!r} is not a regular file")
        try:
            if append:
                size = _append(parent, name, blob, mode, created=existing is None)
            else:
                size = _replace(parent, name, blob, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP or is_symlink(parent, name):
                raise step_error(exc, target, parent) from None
            raise from_oserror(exc, target.path) from None
    return {"size": size, "path": target.path}, b""


def _append(parent: int, name: str, data: bytes, mode: int, *, created: bool) -> int:
    fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _FILE_FLAGS, mode, dir_fd=parent)
    try:
        if created:
            os.fchmod(fd, mode)
        _write_all(fd, data)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _replace(parent: int, name: str, data: bytes, mode: int) -> int:
    """Write a temp file next to the target and rename it over, so readers never see a
    partial file."""
    tmp = f".{name[:200]}.{secrets.token_hex(4)}.corral-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600, dir_fd=parent)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=parent)
        raise
    return len(data)


def _kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "symlink"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"


def list_dir(ctx: Context, args: Args, blob: bytes) -> Result:
    target = _target(ctx, args)
    with open_parent(target) as parent:
        if target.name:
            try:
                fd = os.open(target.name, DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise step_error(exc, target, parent) from None
        else:
            fd = os.dup(parent)
    entries: list[dict[str, Any]] = []
    truncated = False
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if len(entries) >= MAX_ENTRIES:
                    truncated = True
                    break
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while listing
                entries.append(
                    {
                        "name": entry.name,
                        "type": _kind(entry),
                        "size": info.st_size,
                        "mtime": info.st_mtime,
                    }
                )
    finally:
        os.close(fd)
    entries.sort(key=lambda e: str(e["name"]))
    result: dict[str, Any] = {"path": target.path, "entries": entries}
    if truncated:
        result["truncated"] = True
    return result, b""
