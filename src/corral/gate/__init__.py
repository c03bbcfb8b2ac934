"""The Gate: one entry point, `Gate.handle(caller, operation, target, args)`, for every
operation from every adapter (REST, both MCP servers, the console, the host CLI), walking the
stages authorize -> inspect_in -> act -> inspect_out -> record (docs/architecture.md).

- `corral.gate.operations`: the operation catalogue (with the computer tools as operations).
- `lifecycle_gate(control)`: the server's Gate; `corral.gate.host.host_gate()`: the host CLI's.
- The stage interfaces (`Authorizer`, `InputInspector`, `Actor`, `OutputInspector`,
  `Recorder`) are where the audit, DLP and detection pillars plug in.
"""

from corral.gate._gate import (
    STAGES,
    Actor,
    Authorizer,
    Gate,
    GateCall,
    Handler,
    InputInspector,
    OutputInspector,
    PolicyAuthorizer,
    Recorder,
    Route,
)
from corral.gate._routes import control_routes, lifecycle_gate
from corral.gate.operations import OPERATIONS, Kind, Operation, operation, tool_operation

__all__ = [
    "OPERATIONS",
    "STAGES",
    "Actor",
    "Authorizer",
    "Gate",
    "GateCall",
    "Handler",
    "InputInspector",
    "Kind",
    "Operation",
    "OutputInspector",
    "PolicyAuthorizer",
    "Recorder",
    "Route",
    "control_routes",
    "lifecycle_gate",
    "operation",
    "tool_operation",
]
