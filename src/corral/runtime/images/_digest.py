"""Content digests: one sha256 that changes exactly when what a PC would see changes.

The digest covers every entry's relative path, type, permission bits, owner, size and content
(or symlink target), in a canonical sorted order, and nothing else (not mtimes), so two builds
of the same content agree and any tampering or drift is visible.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TreeDigest", "entry_record", "file_sha256", "files_digest", "tree_digest"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class TreeDigest:
    digest: str  # "sha256:<hex>"
    size_bytes: int  # apparent size of files (hard links once) and symlinks
    entries: int


def file_sha256(path: Path | bytes) -> str:
    """Hash a regular file without following a symlink in its last component."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def entry_record(rel: bytes, st: os.stat_result, content: str) -> bytes:
    """The canonical line for one entry; `content` is a file hash, a link target or a device."""
    mode = st.st_mode
    kind = (
        "d"
        if stat.S_ISDIR(mode)
        else "f"
        if stat.S_ISREG(mode)
        else "l"
        if stat.S_ISLNK(mode)
        else "c"
        if stat.S_ISCHR(mode)
        else "b"
    )
    size = st.st_size if kind in "fl" else 0
    head = f"\0{kind}\0{stat.S_IMODE(mode):o}\0{st.st_uid}\0{st.st_gid}\0{size}\0{content}\n"
    return rel + head.encode("utf-8", "surrogateescape")


def _walk(root: bytes, rel: bytes) -> Iterator[tuple[bytes, os.stat_result, bytes]]:
    """Depth-first, name-sorted walk that never follows symlinks."""
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        child = os.path.join(rel, e.name) if rel else e.name
        st = e.stat(follow_symlinks=False)
        yield child, st, e.path
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, child)


def tree_digest(root: Path) -> TreeDigest:
    """Digest a directory tree; sockets and fifos are skipped (they hold no content)."""
    h = hashlib.sha256()
    broot = os.fsencode(root)
    st = os.lstat(broot)
    h.update(entry_record(b".", st, ""))
    size, count = 0, 1
    seen: dict[tuple[int, int], str] = {}  # hard links are hashed once
    for rel, st, full in _walk(broot, b""):
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            known = seen.get(key)
            content = known or file_sha256(full)
            if st.st_nlink > 1:
                seen[key] = content
            size += 0 if known else st.st_size
        elif stat.S_ISLNK(mode):
            content = os.fsdecode(os.readlink(full))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            content = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        elif stat.S_ISDIR(mode):
            content = ""
        else:
            continue
        h.update(entry_record(rel, st, content))
        size += st.st_size if stat.S_ISLNK(mode) else 0
        count += 1
    return TreeDigest("sha256:" + h.hexdigest(), size, count)


def files_digest(root: Path, rels: list[str]) -> str:
    """Digest of selected files by relative path and content, e.g. pcd's sources."""
    h = hashlib.sha256()
    for rel in sorted(rels):
        h.update(f"{rel}\0{file_sha256(root / rel)}\n".encode())
    return "sha256:" + h.hexdigest()
