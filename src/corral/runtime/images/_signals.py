"""Signals during a build: SIGTERM must clean up like Ctrl-C, and cleanup must not be cut short.

Without this, `kill PID` (what service managers and CI send) would end the build with its chroot
mounts still in place and its staging folder left behind.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Interrupted", "signals_blocked", "sigterm_raises"]


class Interrupted(BaseException):
    """Raised from the SIGTERM handler, so `finally` blocks run as they do for Ctrl-C."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into `Interrupted` for the duration (main thread only: elsewhere Python
    cannot install handlers, and whoever runs the thread owns signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (a second Ctrl-C waits for cleanup)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
