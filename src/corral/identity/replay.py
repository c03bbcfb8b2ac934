"""Remember single-use identifiers (DPoP proof and client assertion `jti`s) until they expire.

A proof is accepted at most once: its key is recorded the first time and refused after, until
the moment the proof would be refused anyway for its age. The cache is bounded; when it is
full of live entries it refuses new ones (`ReplayCacheFullError`) rather than forget one,
because forgetting would let that proof be replayed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

from corral.identity.errors import ReplayCacheFullError

__all__ = ["ReplayCache", "ReplayGuard"]


class ReplayGuard(Protocol):
    """Anything that can tell a first use from a repeat; a shared store can implement it when
    several workers must see each other's proofs."""

    def first_use(self, key: str, expires_at: float, now: float) -> bool:
        """Record `key` until `expires_at`; False if it was already recorded and still live."""
        ...


class ReplayCache:
    """In-memory, thread-safe, bounded `ReplayGuard` for one process."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, key: str, expires_at: float, now: float) -> bool:
        with self._lock:
            known = self._seen.get(key)
            if known is not None and known > now:
                return False
            self._purge(now)
            if len(self._seen) >= self._max:
                raise ReplayCacheFullError("too many recent proofs to remember; retry shortly")
            self._seen[key] = expires_at
            self._seen.move_to_end(key)
            return True

    def _purge(self, now: float) -> None:
        # Entries arrive in roughly expiry order (expiry = issue time + a fixed window), so
        # dropping expired ones from the oldest end is enough; a straggler just waits longer.
        seen = self._seen
        while seen:
            key, expires_at = next(iter(seen.items()))
            if expires_at > now:
                break
            del seen[key]
