"""Every policy decision taken for a Gate call, attached to that call.

The Gate opens a collection for each call (`collect_decisions`); `PolicyService.authorize`, the
one enforcement point, notes each decision it takes into the open collection, whichever service
asked and on whichever thread (`asyncio.to_thread` carries the context along). So the Gate's
record stage sees every decision a call caused, allow and deny, with the policies that
determined it, although services decide at the moment they hold the object (a session under
its lock, a pool's spec), not before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from corral.access.engine import Decision

__all__ = ["Decided", "collect_decisions", "note_decision"]


@dataclass(frozen=True, slots=True)
class Decided:
    """One decision: the Cedar action, the resource it was about, and the answer."""

    action: str
    resource: str
    decision: Decision


_open: ContextVar[list[Decided] | None] = ContextVar("corral_decisions", default=None)


@contextmanager
def collect_decisions(into: list[Decided]) -> Iterator[list[Decided]]:
    """Decisions taken in this context (and threads started from it) go `into` the list."""
    token = _open.set(into)
    try:
        yield into
    finally:
        _open.reset(token)


def note_decision(action: str, resource: str, decision: Decision) -> None:
    collection = _open.get()
    if collection is not None:
        collection.append(Decided(action, resource, decision))
