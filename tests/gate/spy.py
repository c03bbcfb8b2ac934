"""A spy stage for the Gate: installed in place of all five stages, it forwards each to the
stage it replaced and records, per call, which stages the call walked, in order."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from corral.access.decisions import Decided
from corral.gate import Gate, GateCall


class Spy:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.inner = (gate.authorizer, gate.input, gate.actor, gate.output, gate.recorder)
        self.lock = threading.Lock()
        self._open: dict[int, list[str]] = {}
        #: operation name -> (stages walked, succeeded) of every call
        self.walks: dict[str, list[tuple[tuple[str, ...], bool]]] = defaultdict(list)
        #: operation name -> the policy decisions its calls carried to the record stage
        self.decisions: dict[str, list[Decided]] = defaultdict(list)

    def install(self) -> Spy:
        g = self.gate
        g.authorizer = g.input = g.actor = g.output = g.recorder = self
        return self

    def remove(self) -> None:
        g = self.gate
        g.authorizer, g.input, g.actor, g.output, g.recorder = self.inner

    def _saw(self, call: GateCall, stage: str) -> None:
        with self.lock:
            self._open.setdefault(id(call), []).append(stage)

    async def authorize(self, call: GateCall) -> None:
        self._saw(call, "authorize")
        await self.inner[0].authorize(call)

    async def inspect_in(self, call: GateCall) -> None:
        self._saw(call, "inspect_in")
        await self.inner[1].inspect_in(call)

    async def act(self, call: GateCall) -> Any:
        self._saw(call, "act")
        return await self.inner[2].act(call)

    async def inspect_out(self, call: GateCall) -> None:
        self._saw(call, "inspect_out")
        await self.inner[3].inspect_out(call)

    async def admit(self, call: GateCall) -> None:
        await self.inner[4].admit(call)  # part of the record stage, before the call runs

    async def record(self, call: GateCall) -> None:
        self._saw(call, "record")
        try:
            await self.inner[4].record(call)
        finally:
            with self.lock:
                walked = tuple(self._open.pop(id(call)))
                self.walks[call.operation.name].append((walked, call.error is None))
                self.decisions[call.operation.name].extend(call.decisions)

    def complete(self) -> set[str]:
        """The operations with at least one call that walked every stage and succeeded."""
        from corral.gate import STAGES

        with self.lock:
            return {
                name
                for name, walks in self.walks.items()
                if any(ok and walked == STAGES for walked, ok in walks)
            }
