"""Thin ctypes wrappers over the Linux calls the runtime needs and Python lacks.

Mount calls go straight to the kernel (no `mount` processes) because they sit on the boot and
reset paths, where every millisecond counts. Idmapped mounts let a read-only image owned by host
root appear, inside a PC, owned by that PC's own shifted uid range without copying or chowning a
single file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading
import time
from pathlib import Path

__all__ = [
    "MS_BIND",
    "MS_NODEV",
    "MS_NOSUID",
    "MS_NOSYMFOLLOW",
    "MS_RDONLY",
    "MS_REC",
    "idmapped_bind",
    "is_mountpoint",
    "mount",
    "mounts_under",
    "overlay_from_fds",
    "umount",
]

_libc = ctypes.CDLL(None, use_errno=True)

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOSYMFOLLOW = 0x100  # Linux >= 5.10: symlinks on this mount are never followed
MS_BIND = 0x1000
MS_REC = 0x4000
_MNT_DETACH = 0x2
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 0x1
_OPEN_TREE_CLOEXEC = 0o2000000
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
# x86_64 and aarch64 share these numbers (the "new mount API" block is generic).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def mount(source: str, target: Path, fstype: str | None, flags: int = 0, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode(),
            str(target).encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {fstype or 'bind'} {source} on {target}",
    )


def umount(target: Path, *, lazy: bool = False) -> bool:
    """Unmount `target`; False if it was not mounted (idempotent cleanup)."""
    rc = _libc.umount2(str(target).encode(), _MNT_DETACH if lazy else 0)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    if err == errno.EBUSY and not lazy:
        return umount(target, lazy=True)
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


#: id-map namespaces made so far, by (host_base, count): a PC's range is fixed by its slot,
#: so boots and resets of the same slot reuse one (an open descriptor keeps it alive, no
#: process needed) instead of starting a helper process each time (~5-10 ms of every boot)
_IDMAPS: dict[tuple[int, int], int] = {}
_IDMAPS_LOCK = threading.Lock()


def _idmap_fd(host_base: int, count: int) -> int:
    """A descriptor of a user namespace mapping 0..count-1 to host_base.., cached; the
    caller must not close it."""
    with _IDMAPS_LOCK:
        fd = _IDMAPS.get((host_base, count))
        if fd is None:
            fd = _IDMAPS[(host_base, count)] = _userns_fd(host_base, count)
        return fd


def _userns_fd(host_base: int, count: int) -> int:
    """Open a user namespace that maps ids 0..count-1 to host_base.. (used only as an id map).

    A helper process (`unshare --user`) creates the namespace; we write its maps and keep a
    descriptor to it. A child process rather than fork(): the control plane calls this from
    worker threads, and fork() in a threaded process can deadlock the child.
    """
    own = os.readlink("/proc/self/ns/user")
    helper = subprocess.Popen(
        ["unshare", "--user", "--", "sleep", "30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                if os.readlink(f"/proc/{helper.pid}/ns/user") != own:
                    break
            except OSError:
                pass
            if helper.poll() is not None or time.monotonic() > deadline:
                raise OSError(errno.EPERM, "could not create a user namespace for the id map")
            time.sleep(0.0002)
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{helper.pid}/{name}").write_text(f"0 {host_base} {count}\n")
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.kill()
        helper.wait()


def idmapped_bind(source: Path, target: Path, host_base: int, count: int) -> None:
    """Bind `source` read-only, nosuid and nodev on `target`, shifting ids 0..count-1 to
    host_base.."""
    ns_fd = _idmap_fd(host_base, count)
    tree_fd = -1
    try:
        tree_fd = _check(
            _libc.syscall(
                _SYS_OPEN_TREE,
                _AT_FDCWD,
                str(source).encode(),
                _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC,
            ),
            f"open_tree {source}",
        )
        attr = _MountAttr(
            _MOUNT_ATTR_IDMAP | _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV,
            0,
            0,
            ns_fd,
        )
        _check(
            _libc.syscall(
                _SYS_MOUNT_SETATTR,
                tree_fd,
                b"",
                _AT_EMPTY_PATH,
                ctypes.byref(attr),
                ctypes.sizeof(attr),
            ),
            f"idmap {source}",
        )
        _check(
            _libc.syscall(
                _SYS_MOVE_MOUNT,
                tree_fd,
                b"",
                _AT_FDCWD,
                str(target).encode(),
                _MOVE_MOUNT_F_EMPTY_PATH,
            ),
            f"move_mount to {target}",
        )
    finally:
        if tree_fd >= 0:
            os.close(tree_fd)


def overlay_from_fds(lower: Path, upper_fs: Path, target: Path) -> None:
    """Mount an overlay of `lower` (read-only) and `upper_fs`'s `upper`/`work` folders on
    `target`, nosuid and nodev, without any host path in its options.

    overlayfs shows its options as they were given, and the PC reads its own mount table: a
    classic `lowerdir=/run/corral/pcs/<id>/lower,...` tells it the state folder, its id and the
    layout. Given as `/proc/self/fd/N` of descriptors this process holds, the options name only
    descriptor numbers (any kernel with overlayfs; the layers are resolved at mount time).
    1. Open each layer folder as an O_PATH descriptor (nothing is read through it).
    2. Mount the overlay from `/proc/self/fd/N` paths, nosuid,nodev.
    3. Close the descriptors: the overlay holds its own references to the layers.
    """
    fds: list[int] = []
    try:
        for layer in (lower, upper_fs / "upper", upper_fs / "work"):
            fds.append(os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
        low, up, work = (f"/proc/self/fd/{fd}" for fd in fds)
        mount(
            "overlay",
            target,
            "overlay",
            MS_NOSUID | MS_NODEV,
            f"lowerdir={low},upperdir={up},workdir={work}",
        )
    finally:
        for fd in fds:
            os.close(fd)


def _unescape(field: str) -> str:
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below `prefix`, deepest first (the order to unmount them in)."""
    found: list[Path] = []
    root = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = _unescape(line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def is_mountpoint(path: Path) -> bool:
    return Path(str(path).rstrip("/")) in mounts_under(path)
