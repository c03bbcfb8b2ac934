"""The policies Corral ships: installed on first start, then the admins' to change.

Two kinds:
- DEFAULT_POLICIES are stored like any admin's policy (listed, removable, replaceable); they keep
  the out-of-the-box behaviour: admins administer, agents acquire only the pools assigned to them
  or their groups and act only in their own sessions, sponsors watch and approve for their agents,
  and a high-risk agent gets nothing.
- SYSTEM_POLICIES are not stored and cannot be removed: the session controls fixed at acquire
  (a promise made to whoever set them) and the admins' right to read and change policies (so a
  bad change can always be undone through the API).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_POLICIES", "SYSTEM_POLICIES", "NamedPolicy"]


@dataclass(frozen=True)
class NamedPolicy:
    """A policy's name (its id in decisions) and its Cedar text (one or more statements)."""

    name: str
    text: str


DEFAULT_POLICIES: tuple[NamedPolicy, ...] = (
    NamedPolicy(
        "admins-administer",
        "// Admins may do everything, in every session.\n"
        'permit (principal in Role::"admin", action, resource);',
    ),
    NamedPolicy(
        "security-admins-read",
        "// Security admins read the directory, policies, audit and sessions, and watch them.\n"
        'permit (\n  principal in Role::"security_admin",\n'
        '  action in [Action::"read_directory", Action::"read_policies", Action::"read_audit",\n'
        '             Action::"read_pool", Action::"inspect_pool", Action::"read_session",\n'
        '             Action::"observe"],\n  resource\n);',
    ),
    NamedPolicy(
        "security-admins-contain",
        "// Security admins may take access away (disable, revoke tokens or keys, raise risk),\n"
        "// never grant it.\n"
        'permit (\n  principal in Role::"security_admin",\n'
        '  action == Action::"revoke_tokens",\n  resource\n);',
    ),
    NamedPolicy(
        "agents-read-pools",
        "// Agents may list the pools and read their state.\n"
        'permit (principal is Agent, action == Action::"read_pool", resource is Pool);',
    ),
    NamedPolicy(
        "agents-acquire-assigned-pools",
        "// An agent may acquire a PC only from a pool assigned to it or to one of its groups.\n"
        'permit (principal is Agent, action == Action::"acquire", resource is Pool)\n'
        "when {\n  resource.agents.contains(principal) ||\n"
        "  resource.groups.containsAny(principal.groups)\n};",
    ),
    NamedPolicy(
        "owners-use-their-sessions",
        "// Whoever acquired a session may drive its PC, read it, watch it and release it.\n"
        "permit (\n  principal,\n"
        '  action in [Action::"computer", Action::"release", Action::"read_session",\n'
        '             Action::"observe"],\n'
        "  resource\n)\nwhen { resource in principal };",
    ),
    NamedPolicy(
        "sponsors-observe",
        "// A sponsor may watch (and read) the sessions of the agents it sponsors.\n"
        'permit (\n  principal is User,\n  action in [Action::"observe", Action::"read_session"],\n'
        "  resource is Session\n)\nwhen { resource.sponsors.contains(principal) };",
    ),
    NamedPolicy(
        "sponsors-approve",
        "// A sponsor answers approval requests of the agents it sponsors.\n"
        'permit (principal is User, action == Action::"approve", resource is Agent)\n'
        "when { resource.sponsors.contains(principal) };",
    ),
    NamedPolicy(
        "high-risk-agents-blocked",
        "// An agent at high risk gets nothing until its risk is lowered.\n"
        "forbid (principal is Agent, action, resource)\nwhen { context.risk_score >= 3 };",
    ),
)

SYSTEM_POLICIES: tuple[NamedPolicy, ...] = (
    NamedPolicy(
        "system-admins-manage-policies",
        'permit (\n  principal in Role::"admin",\n'
        '  action in [Action::"read_policies", Action::"manage_policies"],\n'
        "  resource\n);",
    ),
    NamedPolicy(
        "system-session-read-only",
        'forbid (principal, action in Action::"modify", resource)\n'
        "when { context has controls && context.controls.read_only };",
    ),
    NamedPolicy(
        "system-session-no-clipboard",
        'forbid (principal, action in Action::"clipboard", resource)\n'
        "when { context has controls && context.controls.no_clipboard };",
    ),
    NamedPolicy(
        "system-session-no-file-transfer",
        'forbid (principal, action in Action::"file_transfer", resource)\n'
        "when { context has controls && context.controls.no_file_transfer };",
    ),
    NamedPolicy(
        "system-session-allowed-hosts",
        'forbid (principal, action == Action::"open_url", resource)\n'
        "when {\n  context has controls && context.controls.restrict_hosts &&\n"
        "  !(context has args && context.args has host &&\n"
        "    context.controls.allowed_hosts.contains(context.args.host))\n};",
    ),
)
