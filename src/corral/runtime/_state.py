"""On-disk runtime state of PCs: one folder per PC under the state dir, and a host-wide lock.

The state lives on disk (under /run, like the PCs it describes, gone after a host reboot) so a
restarted Corral finds running PCs again and cleans up what half-died.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["FIRST_UID", "UIDS_PER_PC", "PCRecord", "StateDir"]

# 2^30: far above system users and the ranges tools hand out in /etc/subuid (100000 + n*65536),
# and with MAX_SLOTS ranges still below 2^31.
FIRST_UID = 1 << 30
UIDS_PER_PC = 65536
MAX_SLOTS = 4096
# Host-wide registry of claimed uid ranges (one file per slot naming the PC folder holding it).
SLOTS_DIR = Path(os.environ.get("CORRAL_UID_SLOTS_DIR", "/run/corral-uid-slots"))


@dataclass
class PCRecord:
    id: str
    image: str
    image_digest: str
    image_rootfs: str
    size: str
    screen: str
    slot: int
    status: str  # booting | ready | resetting | destroying
    created_at: float
    booted_at: float = 0.0
    changed_at: float = 0.0  # last status change: the grace period of reconcile counts from it
    user: dict[str, Any] | None = None

    @property
    def uid_base(self) -> int:
        return FIRST_UID + self.slot * UIDS_PER_PC


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def pc_dir(self, pc_id: str) -> Path:
        return self.root / pc_id

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Host-wide lock for allocating slots and changing the set of PCs."""
        self.root.mkdir(parents=True, exist_ok=True)
        # PCs' user namespaces must traverse down to their own rootfs and io folders.
        for folder in (self.root.parent, self.root):
            os.chmod(folder, 0o711)  # noqa: S103
        fd = os.open(self.root.parent / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def load(self, pc_id: str) -> PCRecord | None:
        try:
            data = json.loads((self.pc_dir(pc_id) / "state.json").read_text())
            return PCRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def save(self, record: PCRecord) -> None:
        path = self.pc_dir(record.id) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)

    def claim_slot(self, pc_id: str) -> int:
        """Claim the lowest uid range no PC on this host holds, whatever its state folder.

        Claims live in one host-wide folder (not per state folder), so two Corral instances
        or test runs never hand the same host uids to two PCs. A claim whose PC folder is
        gone is stale and is taken over.
        """
        owner = str(self.pc_dir(pc_id))
        SLOTS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(SLOTS_DIR / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for slot in range(MAX_SLOTS):
                claim = SLOTS_DIR / str(slot)
                try:
                    holder = claim.read_text().strip()
                except FileNotFoundError:
                    holder = ""
                if holder and Path(holder).exists():
                    continue
                claim.write_text(owner)
                return slot
        finally:
            os.close(fd)
        raise RuntimeError("no free uid range left")

    def release_slot(self, pc_id: str, slot: int) -> None:
        """Give the uid range back (only if this PC still holds it)."""
        claim = SLOTS_DIR / str(slot)
        with contextlib.suppress(OSError):
            if claim.read_text().strip() == str(self.pc_dir(pc_id)):
                claim.unlink()
