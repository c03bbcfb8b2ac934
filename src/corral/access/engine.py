"""The policy decision point: Cedar (through cedarpy) over parsed, reused policy sets.

Parsing is the expensive part of a Cedar call, so a policy set is compiled once per policy
version and sliced per action: a policy whose action scope cannot match an action (say
`action == Action::"acquire"` for a `click`) is left out of that action's set, which changes no
decision (Cedar never evaluates such a policy's conditions) and keeps a decision's cost near the
number of policies that can actually apply. Entities are parsed by the caller once per directory
version (`entities`) and extended per request (`extend`).

Default deny, fail closed: no permit, any forbid, any evaluation error, or any failure of the
engine itself is a denial, reported with the reason.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from corral.access.defaults import NamedPolicy
from corral.access.schema import (
    ADMIN_ACTIONS,
    LENDING_ACTIONS,
    PRINCIPAL_TYPES,
    ToolAction,
    action_ancestors,
    corral_schema,
)
from corral.errors import InvalidInputError

__all__ = [
    "CompiledPolicies",
    "Decision",
    "EntityRef",
    "PolicyEngine",
    "PolicyError",
    "validate_policy_name",
]

_PARSED_KEEP = 4096  # validated policies remembered (by name and text)
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")
_POSITIONAL = re.compile(r"\bpolicy(\d+)\b")
_FOR_POLICY = re.compile(r"^for policy `[^`]*`,\s*")
_FOR_ACTION = re.compile(r"\s*for Action::\"[^\"]*\"")


class PolicyError(InvalidInputError):
    """A policy that does not parse or does not validate against the schema; the message is
    Cedar's own, with the policy's name in place of Cedar's positional id."""

    title = "Invalid policy"
    code = "invalid_policy"


def validate_policy_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInputError(
            f"bad policy name {name!r}",
            hint="use 1-63 lowercase letters, digits, '.', '_' and '-', starting with a letter",
        )
    return name


@dataclass(frozen=True)
class EntityRef:
    """A Cedar entity uid: `Agent::"bot"` is EntityRef("Agent", "bot")."""

    type: str
    id: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    def __str__(self) -> str:
        return f"{self.type}::{json.dumps(self.id)}"

    @classmethod
    def parse(cls, text: str) -> EntityRef:
        """`Type::"id"` (the form `corral policy test` takes) into a ref."""
        kind, sep, rest = text.strip().partition("::")
        try:
            value = json.loads(rest) if sep else None
        except ValueError:
            value = None
        if not kind.isidentifier() or not isinstance(value, str):
            raise InvalidInputError(
                f"bad entity {text!r}", hint='write it as Type::"id", e.g. Agent::"bot"'
            )
        return cls(kind, value)


@dataclass(frozen=True)
class Decision:
    """The answer to one request, with what determined it."""

    allowed: bool
    #: ids of the policies that determined it: the permits that allowed, or the forbids that
    #: denied (empty for a default deny)
    policies: tuple[str, ...] = ()
    #: evaluation or engine errors; any error denies
    errors: tuple[str, ...] = ()
    #: a forbid decided it (as opposed to no permit applying)
    forbidden: bool = False
    #: set when a sponsor's approval is (or was) involved: its id and state
    approval_id: str | None = None
    approval_state: str | None = None

    @property
    def reason(self) -> str:
        if self.approval_state == "pending":
            return f"waiting for a sponsor's approval ({self.approval_id})"
        if self.approval_state == "denied":
            return f"denied by a sponsor ({self.approval_id})"
        if self.allowed and self.approval_id:
            return f"allowed by {', '.join(self.policies)} with approval {self.approval_id}"
        if self.allowed:
            return f"allowed by {', '.join(self.policies)}"
        if self.errors:
            return f"denied: policy evaluation failed ({'; '.join(self.errors)})"
        if self.forbidden:
            return f"denied by {', '.join(self.policies)}"
        return "denied: no policy permits it"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision": "allow" if self.allowed else "deny",
            "policies": list(self.policies),
            "errors": list(self.errors),
            "reason": self.reason,
        }
        if self.approval_id:
            out["approval"] = {"id": self.approval_id, "state": self.approval_state}
        return out


def _renamed(message: str, ids: Mapping[str, str]) -> str:
    return _POSITIONAL.sub(lambda m: ids.get(m.group(0), m.group(0)), message)


def _summarize(messages: Iterable[str]) -> str:
    """Cedar's validation messages without the repeats: the same problem found for 40 actions
    is one message, saying for how many."""
    counts: dict[str, int] = {}
    for message in messages:
        key = _FOR_ACTION.sub("", _FOR_POLICY.sub("", message)).strip()
        counts[key] = counts.get(key, 0) + (1 if _FOR_ACTION.search(message) else 0)
    return "; ".join(f"{k} (for {n} actions)" if n > 1 else k for k, n in counts.items())


@dataclass
class CompiledPolicies:
    """One version of the policy set, parsed: the static policies under their Corral ids, each
    one's effect and annotations, and per-action slices built on first use."""

    version: Any
    statements: dict[str, dict[str, Any]]
    ancestors: Mapping[str, frozenset[str]]
    effects: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    _slices: dict[str, cedarpy.PolicySet] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for pid, est in self.statements.items():
            self.effects[pid] = str(est["effect"])
            self.annotations[pid] = {str(k): str(v) for k, v in est.get("annotations", {}).items()}

    def _applies(self, est: Mapping[str, Any], action: str) -> bool:
        scope = est["action"]
        op = scope.get("op")
        mine = self.ancestors.get(action, frozenset({action}))
        if op == "All":
            return True
        if op == "==":
            return bool(scope["entity"]["id"] == action)
        if op == "in" and "entity" in scope:
            return scope["entity"]["id"] in mine
        if op == "in" and "entities" in scope:
            return any(e["id"] in mine for e in scope["entities"])
        return True  # a scope this code does not know: keep it, Cedar decides

    def for_action(self, action: str) -> cedarpy.PolicySet:
        """The policies that can apply to `action`, parsed once."""
        found = self._slices.get(action)
        if found is None:
            with self._lock:
                found = self._slices.get(action)
                if found is None:
                    subset = {
                        pid: est
                        for pid, est in self.statements.items()
                        if self._applies(est, action)
                    }
                    doc = {"staticPolicies": subset, "templates": {}, "templateLinks": []}
                    found = cedarpy.PolicySet.from_json_str(json.dumps(doc))
                    self._slices[action] = found
        return found


class PolicyEngine:
    """Validates policies against the Corral schema and decides requests. Thread-safe: a
    compiled set is immutable once built and replaced whole on a version change."""

    def __init__(self, tools: Iterable[ToolAction]) -> None:
        tools = list(tools)
        self.schema_text = corral_schema(tools)
        self.schema = cedarpy.Schema.from_str(self.schema_text)
        self.ancestors = action_ancestors(tools)
        #: every concrete action (groups are not requests) -> the resource type it applies to
        self.resource_types: dict[str, str] = {
            **LENDING_ACTIONS,
            **ADMIN_ACTIONS,
            **{t.name: "PC" for t in tools},
        }
        self.actions = frozenset(self.resource_types)
        self._parsed: dict[NamedPolicy, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # -- policies ----------------------------------------------------------------------------
    def parse(self, policy: NamedPolicy) -> dict[str, dict[str, Any]]:
        """The policy's statements under their Corral ids (`name`, or `name#1`, `name#2`...
        when it has several); PolicyError with Cedar's message if it is not valid."""
        validate_policy_name(policy.name)
        if not policy.text.strip():
            raise PolicyError(f"policy {policy.name!r} is empty", hint="write a Cedar policy")
        try:
            est = json.loads(cedarpy.policies_to_json_str(policy.text))
        except ValueError as exc:
            raise PolicyError(f"policy {policy.name!r} does not parse: {exc}") from None
        if est.get("templates") or est.get("templateLinks"):
            raise PolicyError(
                f"policy {policy.name!r} is a template (it has ?principal or ?resource)",
                hint="name the principal and resource, or leave them unconstrained",
            )
        found = est.get("staticPolicies") or {}
        if not found:
            raise PolicyError(f"policy {policy.name!r} has no statement")
        order = sorted(found, key=lambda k: int(k.removeprefix("policy")))
        if len(order) == 1:
            ids = {order[0]: policy.name}
        else:
            ids = {old: f"{policy.name}#{i}" for i, old in enumerate(order, 1)}
        result = cedarpy.validate_policies(policy.text, self.schema)
        if not result.validation_passed:
            problems = _summarize(_renamed(e.error, ids) for e in result.errors)
            raise PolicyError(
                f"policy {policy.name!r} does not match the Corral schema: {problems}",
                hint="corral policy schema prints the schema (entity types, actions, context)",
            )
        return {ids[old]: found[old] for old in order}

    def compile(self, policies: Sequence[NamedPolicy], version: Any) -> CompiledPolicies:
        """Parse and validate every policy; PolicyError names the first invalid one."""
        statements: dict[str, dict[str, Any]] = {}
        for policy in policies:
            # A policy validated before (same name and text) is not validated again: a change
            # of one policy re-checks that one, not the whole set (a few ms each).
            parsed = self._parsed.get(policy)
            if parsed is None:
                parsed = self.parse(policy)
                with self._lock:
                    if len(self._parsed) >= _PARSED_KEEP:
                        self._parsed.clear()
                    self._parsed[policy] = parsed
            for pid, est in parsed.items():
                if pid in statements:
                    raise PolicyError(f"two policies are named {pid!r}")
                statements[pid] = est
        return CompiledPolicies(version, statements, self.ancestors)

    # -- entities ----------------------------------------------------------------------------
    def entities(self, records: Sequence[Mapping[str, Any]]) -> cedarpy.Entities:
        """Parse entity records once (checked against the schema) for reuse across requests."""
        return cedarpy.Entities.from_json_str(json.dumps(list(records)), self.schema)

    @staticmethod
    def extend(base: cedarpy.Entities, records: Sequence[Mapping[str, Any]]) -> cedarpy.Entities:
        """A new handle: `base` plus per-request records (base is not parsed again)."""
        if not records:
            return base
        return base.with_added_json_str(json.dumps(list(records)))

    # -- decisions ---------------------------------------------------------------------------
    def decide(
        self,
        policies: CompiledPolicies,
        principal: EntityRef,
        action: str,
        resource: EntityRef,
        context: Mapping[str, Any],
        entities: cedarpy.Entities,
        *,
        strict: bool = False,
    ) -> Decision:
        """Allow only if a permit applies, no forbid applies and nothing failed.

        The principal and resource types are checked against the action here; the context's
        shape only with `strict` (Cedar validates the whole request against the schema, about
        25 us more). The service's own contexts come from `build_context`, whose output the
        tests check against the schema; contexts typed by a person (`corral policy test`) are
        decided with `strict`. Either way a context that does not fit makes an evaluation
        error, and an error denies.
        """
        wanted = self.resource_types.get(action)
        if wanted is None:
            return Decision(False, errors=(f"unknown action {action!r}",))
        if principal.type not in PRINCIPAL_TYPES:
            return Decision(False, errors=(f"principal {principal} is not a User or an Agent",))
        if resource.type != wanted:
            return Decision(False, errors=(f"{action} applies to a {wanted}, not to {resource}",))
        try:
            request = {
                "principal": principal.to_json(),
                "action": {"type": "Action", "id": action},
                "resource": resource.to_json(),
                "context": dict(context),
            }
            answer = cedarpy.is_authorized(
                request,
                policies.for_action(action),
                entities,
                schema=self.schema if strict else None,
            )
            reasons = tuple(answer.diagnostics.reasons)
            errors = tuple(str(e) for e in answer.diagnostics.errors)
            allowed = answer.allowed and not errors
        except Exception as exc:  # fail closed: the engine itself failing is a denial
            return Decision(False, errors=(f"policy engine failed: {exc}",))
        forbidden = any(policies.effects.get(pid) == "forbid" for pid in reasons)
        return Decision(allowed, reasons, errors, forbidden=forbidden and not allowed)
