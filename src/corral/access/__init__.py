"""Least privilege: Cedar policies decide every request, with its context.

`schema` describes what policies talk about, `defaults` the policies Corral ships, `context`
builds a request's entities and context from Corral's records, and `engine` decides. The one
enforcement function, `authorize`, lives in the service layer (corral.access.service), which
reads the store and calls these. See docs/policies.md.
"""

from corral.access.context import (
    Compliance,
    Controls,
    DirectoryView,
    PoolAssignments,
    RequestFacts,
    approval_preview,
    build_context,
    directory_records,
    pool_record,
    reads_program,
    request_digest,
    session_records,
    tool_args,
)
from corral.access.defaults import DEFAULT_POLICIES, SYSTEM_POLICIES, NamedPolicy
from corral.access.engine import (
    CompiledPolicies,
    Decision,
    EntityRef,
    PolicyEngine,
    PolicyError,
    validate_policy_name,
)
from corral.access.schema import ToolAction, corral_schema

__all__ = [
    "DEFAULT_POLICIES",
    "SYSTEM_POLICIES",
    "CompiledPolicies",
    "Compliance",
    "Controls",
    "Decision",
    "DirectoryView",
    "EntityRef",
    "NamedPolicy",
    "PolicyEngine",
    "PolicyError",
    "PoolAssignments",
    "RequestFacts",
    "ToolAction",
    "approval_preview",
    "build_context",
    "corral_schema",
    "directory_records",
    "pool_record",
    "reads_program",
    "request_digest",
    "session_records",
    "tool_args",
    "validate_policy_name",
]
