"""Snapshots of the host's state, to prove a PC leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.runtime._state import FIRST_UID, SLOTS_DIR


@dataclass(frozen=True)
class HostSnapshot:
    mounts: frozenset[str]
    cgroups: frozenset[str]
    containers: frozenset[str]
    links: frozenset[str]
    netns: frozenset[int]
    pc_processes: frozenset[int]
    state_entries: frozenset[str]
    uid_slots: frozenset[str]  # host-wide uid range claims held by PCs of this state folder


def _cgroup_dirs() -> frozenset[str]:
    found: set[str] = set()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        corral = hierarchy / "corral"
        if corral.is_dir():
            found.update(f"{hierarchy.name}/{p.name}" for p in corral.iterdir() if p.is_dir())
    return frozenset(found)


def _netns_inodes() -> frozenset[int]:
    inodes = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        except OSError:
            continue
    return frozenset(inodes)


def _pc_processes() -> frozenset[int]:
    """Live host processes running as a uid of some PC's private range.

    Zombies are left out: a PC's init is orphaned when `runc run --detach` exits, so the host's
    init reaps it a moment after it dies; a zombie holds no memory, file or namespace.
    """
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid < FIRST_UID:
                continue
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            pids.add(int(pid))
    return frozenset(pids)


def snapshot(state_root: Path, runc_root: Path) -> HostSnapshot:
    mounts = frozenset(
        line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )
    links = frozenset(
        subprocess.run(
            ["ip", "-o", "link"], capture_output=True, text=True, check=True
        ).stdout.split("\n")
    )
    runc = subprocess.run(
        ["runc", "--root", str(runc_root), "list", "-q"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    pcs_dir = state_root / "pcs"
    entries = frozenset(p.name for p in pcs_dir.iterdir()) if pcs_dir.exists() else frozenset()
    slots = (
        frozenset(
            f"{p.name}={p.read_text()}"
            for p in SLOTS_DIR.glob("[0-9]*")
            if p.read_text().startswith(str(state_root))
        )
        if SLOTS_DIR.exists()
        else frozenset()
    )
    return HostSnapshot(
        mounts,
        _cgroup_dirs(),
        frozenset(runc),
        frozenset(x.split("@")[0].split(":")[1].strip() for x in links if x),
        _netns_inodes(),
        _pc_processes(),
        entries,
        slots,
    )
