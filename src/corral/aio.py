"""asyncio helpers that Python 3.11's standard library gets subtly wrong.

`asyncio.wait_for(event.wait(), timeout)` loses a cancellation that arrives as the event is set
(the inner wait is done, so `wait_for` returns its result instead of raising; CPython
gh-86296, fixed in 3.12). A loop that waits that way (the pool manager's, the event emitter's)
then never stops: `task.cancel()` is swallowed and whoever awaits the task hangs. CI hit it.
`wait_event` uses `asyncio.timeout`, which counts cancellations and re-raises an outside one.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set (True) or `timeout` seconds pass (False); a cancellation of
    the waiting task always propagates."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
