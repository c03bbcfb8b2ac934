"""The Gate's inspect stages until DLP exists: they let everything through unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.gate import GateCall

__all__ = ["PassInput", "PassOutput"]


class PassInput:
    """A `corral.gate.InputInspector` that lets every argument through."""

    __slots__ = ()

    async def inspect_in(self, call: GateCall) -> None:
        return None


class PassOutput:
    """A `corral.gate.OutputInspector` that lets every result through."""

    __slots__ = ()

    async def inspect_out(self, call: GateCall) -> None:
        return None
