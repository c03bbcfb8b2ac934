"""The interface the pool manager drives PCs through, below it: `PCDriver`.

The runc driver (`corral.runtime.pcs.PCRuntime`) is today's only implementation; another
sandbox (a microVM, a remote host) implements the same few calls. The pool manager never
reaches past this interface: it boots, resets, destroys, checks and lists PCs, and talks to
each PC's daemon through the `PcdClient` the driver hands out (whose transport is the
driver's business: `corral.runtime.client.PcdTransport`). Test fakes implement it too
(tests/support/fakes.py), so the manager's tests run without root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corral.runtime.client import PcdClient

__all__ = ["Health", "ImageRef", "Images", "PCDriver", "PCInfo"]


@dataclass(frozen=True)
class Health:
    ok: bool
    pcd: bool
    x: bool
    detail: str
    misbehaving: bool = False  # pcd broke the protocol: quarantine at once, do not retry


@dataclass(frozen=True)
class PCInfo:
    id: str
    image: str
    image_digest: str
    size: str
    status: str
    pid: int | None
    created_at: float
    socket: Path  # where the driver reaches the PC's daemon (a unix socket for runc)


class ImageRef(Protocol):
    """What the manager reads of an image: its name and the digest of its current build."""

    @property
    def name(self) -> str: ...

    @property
    def digest(self) -> str: ...


class Images(Protocol):
    def get(self, name: str) -> ImageRef: ...


class PCDriver(Protocol):
    """Boots and tends PCs. Calls block (the manager runs them on its own threads) and raise
    `CorralError`s: PCUnavailableError, PCMisbehavingError, NotFoundError for an unknown id."""

    @property
    def images(self) -> Images: ...

    def boot(self, image: str, size: str = ..., screen: str = ...) -> PCInfo:
        """A new PC from `image`, its desktop answering."""
        ...

    def reset(self, pc_id: str) -> PCInfo:
        """Back to the image's baseline: every process killed, every write discarded."""
        ...

    def destroy(self, pc_id: str) -> None: ...

    def info(self, pc_id: str) -> PCInfo: ...

    def list_pcs(self) -> list[PCInfo]: ...

    def health(self, pc_id: str) -> Health: ...

    def reconcile(self, boot_grace_s: float = ...) -> list[str]:
        """Clean up what a crashed process left behind; the ids removed."""
        ...

    def client(self, pc_id: str, timeout: float = ...) -> PcdClient:
        """A connection to the PC's daemon (opened on first use)."""
        ...
