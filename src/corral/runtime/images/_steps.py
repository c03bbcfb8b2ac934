"""The file-level steps of a build: preparing apt, trimming caches, and the per-image finish
(desktop user, pcd, recipe files, host identity).

The finish steps are cheap and run on a copy of the cached base on every build, so a change to the
user, the recipe's files or pcd never reinstalls packages.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from corral.runtime.images._recipe import Recipe
from corral.runtime.images._rootfs import clear_dir, ensure_dir, resolve_in_root, write_file

__all__ = [
    "PCD_ROOT",
    "configure_apt",
    "finish_rootfs",
    "install_pcd",
    "pcd_files",
    "trim_rootfs",
]

PCD_ROOT = "/usr/lib/corral"
RUN_DIR = "/run/corral"  # where a PC's shared host folder is mounted

_POLICY_RC = b"""#!/bin/sh
# Corral images start no services: a PC runs only what its daemon starts.
exit 101
"""
_NODOC = b"""# Corral images carry no docs, man pages or translations (smaller, faster to hash).
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""
_PCD_LAUNCHER = b"""#!/usr/bin/python3 -I
import sys
sys.path.insert(0, "/usr/lib/corral")
from pcd.main import main
sys.exit(main(sys.argv[1:]))
"""
_HOSTS = b"127.0.0.1\tlocalhost pc\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def configure_apt(rootfs: Path, sources: str, host_resolv: Path) -> None:
    """Point the new root's apt at the host's mirror and keep package scripts from starting
    services; DNS comes from the host only while packages are installed."""
    write_file(rootfs, "/etc/apt/sources.list.d/debian.sources", sources.encode())
    write_file(rootfs, "/etc/apt/sources.list", b"# see sources.list.d/debian.sources\n")
    write_file(rootfs, "/usr/sbin/policy-rc.d", _POLICY_RC, 0o755)
    write_file(rootfs, "/etc/dpkg/dpkg.cfg.d/90corral-nodoc", _NODOC)
    resolv = host_resolv.read_bytes() if host_resolv.is_file() else b""
    write_file(rootfs, "/etc/resolv.conf", resolv)


def trim_rootfs(rootfs: Path) -> None:
    """Drop what apt and dpkg leave behind: package lists, logs, old config copies, temp files."""
    for path in (
        "/var/lib/apt/lists",
        "/var/cache/apt/archives",
        "/tmp",
        "/var/tmp",
        "/root/.cache",
    ):
        clear_dir(rootfs, path)
    ensure_dir(rootfs, "/var/lib/apt/lists/partial", 0o700)
    ensure_dir(rootfs, "/var/cache/apt/archives/partial", 0o700)
    for name in ("pkgcache.bin", "srcpkgcache.bin"):
        p = resolve_in_root(rootfs, f"/var/cache/apt/{name}")
        if p.is_file():
            p.unlink()
    for old_dir in ("/var/cache/debconf", "/var/lib/dpkg"):
        d = resolve_in_root(rootfs, old_dir)
        for f in d.glob("*-old") if d.is_dir() else []:
            f.unlink()
    logs = resolve_in_root(rootfs, "/var/log")
    for dirpath, _dirs, files in os.walk(logs) if logs.is_dir() else []:
        for log in files:
            os.unlink(os.path.join(dirpath, log))


def pcd_files(src: Path) -> list[str]:
    """pcd's Python sources relative to its folder (no caches, nothing else)."""
    return sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if "__pycache__" not in p.relative_to(src).parts
    )


def install_pcd(rootfs: Path, src: Path) -> None:
    """Copy pcd to /usr/lib/corral/pcd and add the `corral-pcd` launcher, which runs it on the
    image's own python3 in isolated mode (no user site, no environment)."""
    dest = f"{PCD_ROOT}/pcd"
    target = resolve_in_root(rootfs, dest)
    if target.exists():
        shutil.rmtree(target)
    for rel in pcd_files(src):
        write_file(rootfs, f"{dest}/{rel}", (src / rel).read_bytes())
    write_file(rootfs, "/usr/local/bin/corral-pcd", _PCD_LAUNCHER, 0o755)


def finish_rootfs(rootfs: Path, recipe: Recipe) -> None:
    """Host identity, scratch and mount-point folders, and the recipe's own files."""
    write_file(rootfs, "/etc/hostname", b"pc\n")
    write_file(rootfs, "/etc/hosts", _HOSTS)
    write_file(rootfs, "/etc/resolv.conf", b"")
    # X's socket folders exist up front: Xvfb runs unprivileged and cannot create them.
    for d in ("/tmp", "/var/tmp", "/tmp/.X11-unix", "/tmp/.ICE-unix"):
        os.chmod(ensure_dir(rootfs, d), 0o1777)  # noqa: S103 - sticky scratch dirs
    os.chmod(ensure_dir(rootfs, RUN_DIR), 0o755)  # noqa: S103 - readable mount point
    for f in recipe.files:
        write_file(rootfs, f.path, f.data, f.mode)
