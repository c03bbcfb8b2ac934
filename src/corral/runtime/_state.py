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

    def free_slot(self) -> int:
        """Lowest slot no PC holds (call under `lock`). Folders without state hold none."""
        used = {r.slot for r in (self.load(i) for i in self.ids()) if r is not None}
        for slot in range(MAX_SLOTS):
            if slot not in used:
                return slot
        raise RuntimeError("no free uid range left")
