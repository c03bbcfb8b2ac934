"""Remember single-use identifiers (DPoP proof and client assertion `jti`s) until they expire.

A proof is accepted at most once: its key is recorded the first time and refused after, until
the moment the proof would be refused anyway for its age. Entries are kept per owner (the
authenticated client the proof or assertion belongs to), each owner with its own bound, and
are recorded only once the owner is authenticated: a flood, authenticated or not, can fill
only its own sender's share, never lock other callers out. An owner whose share is full of
live entries is refused new ones (`ReplayCacheFullError`) rather than forget one, because
forgetting would let that proof be replayed.
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

    def first_use(self, key: str, expires_at: float, now: float, owner: str = "") -> bool:
        """Record `key` until `expires_at` in `owner`'s share; False if it was already
        recorded and still live. `owner` must be an authenticated identity."""
        ...


class _Share:
    __slots__ = ("full_sweep_at", "seen")

    def __init__(self) -> None:
        self.seen: OrderedDict[str, float] = OrderedDict()
        self.full_sweep_at = float("-inf")

    def purge_head(self, now: float) -> None:
        # Entries arrive in roughly expiry order (expiry = issue time + a fixed window), so
        # dropping expired ones from the oldest end is enough on the way.
        seen = self.seen
        while seen:
            key, expires_at = next(iter(seen.items()))
            if expires_at > now:
                break
            del seen[key]

    def purge_all(self, now: float) -> None:
        """A straggler (an early expiry behind a later one) goes too; O(share), so run only
        when the share is full, and at most once a second."""
        if now - self.full_sweep_at < 1.0:
            return
        self.full_sweep_at = now
        for key in [k for k, exp in self.seen.items() if exp <= now]:
            del self.seen[key]


class ReplayCache:
    """In-memory, thread-safe `ReplayGuard` for one process, bounded per owner.

    `max_entries` bounds each owner's live entries. The number of owners is bounded by the
    directory (owners are authenticated identities); idle owners' expired entries are swept
    every `sweep_interval` seconds, so memory follows live proofs only.
    """

    def __init__(self, max_entries: int = 50_000, sweep_interval: float = 60.0) -> None:
        self._max = max_entries
        self._shares: dict[str, _Share] = {}
        self._lock = threading.Lock()
        self._sweep_interval = sweep_interval
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        with self._lock:
            return sum(len(share.seen) for share in self._shares.values())

    def first_use(self, key: str, expires_at: float, now: float, owner: str = "") -> bool:
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            share = self._shares.get(owner)
            if share is None:
                share = self._shares[owner] = _Share()
            known = share.seen.get(key)
            if known is not None and known > now:
                return False
            share.purge_head(now)
            if len(share.seen) >= self._max:
                share.purge_all(now)
            if len(share.seen) >= self._max:
                raise ReplayCacheFullError("too many recent proofs from this client; retry shortly")
            share.seen[key] = expires_at
            share.seen.move_to_end(key)
            return True

    def _sweep(self, now: float) -> None:
        """Drop expired entries of every owner, and owners left with none."""
        self._next_sweep = now + self._sweep_interval
        for owner in list(self._shares):
            share = self._shares[owner]
            share.purge_head(now)
            if not share.seen:
                del self._shares[owner]
