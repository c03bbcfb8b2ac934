"""The Gate's record stage until the audit log exists."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.gate import GateCall

__all__ = ["NoRecord"]


class NoRecord:
    """A `corral.gate.Recorder` that keeps nothing. It sees every call, denied and failed ones
    included (`call.error` set), which is what the audit log will append."""

    __slots__ = ()

    async def admit(self, call: GateCall) -> None:
        return None

    async def record(self, call: GateCall) -> None:
        return None
