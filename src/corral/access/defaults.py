"""The policies Corral ships: installed on first start, then the admins' to change.

Two kinds:
- DEFAULT_POLICIES are stored like any admin's policy (listed, removable, replaceable); they keep
  the out-of-the-box behaviour: admins administer, agents acquire only the pools assigned to them
  or their groups and act only in their own sessions, sponsors watch and approve for their agents,
  and a high-risk agent gets nothing.
- SYSTEM_POLICIES are not stored and cannot be removed: the session controls fixed at acquire
  (a promise made to whoever set them, held against every tool that could step around them),
  what the policy context can vouch for (a command whose program a shell decides is refused
  while a policy restricts programs; open_url takes http and https only), the host operator's
  right to administer (`User::"host-operator"`, the host CLI) and the admins' right
  to read and change policies (so a bad change can always be undone through the API). Where a
  system policy can be lifted, the lift is an exemption a permit of the session's acquire grants
  (`@allow_alongside`, `@allow_schemes`), recorded with the session's controls.
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
        "system-host-operator-administers",
        "// The host CLI (`corral user|agent|federation|events ...`, run with the data folder's\n"
        "// rights: root on the host) administers, as it always could; its calls walk the Gate\n"
        "// like any other, so they are decided and recorded.\n"
        'permit (principal == User::"host-operator", action, resource);',
    ),
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
    NamedPolicy(
        "system-session-controls-hold",
        "// A session with no_clipboard, no_file_transfer or allowed_hosts refuses the tools that\n"
        "// step around them (a shell runs xclip or base64, `chromium URL` opens any host; a bare\n"
        "// terminal or browser takes typed commands and URLs) unless\n"
        '// a permit of its acquire says @allow_alongside("run_command launch_app").\n'
        'forbid (principal, action in [Action::"run_command", Action::"launch_app"], resource)\n'
        "when {\n  context has controls &&\n"
        "  (context.controls.no_clipboard || context.controls.no_file_transfer ||\n"
        "   context.controls.restrict_hosts) &&\n"
        '  ((action == Action::"run_command" &&\n'
        '    !context.controls.allow_alongside.contains("run_command")) ||\n'
        '   (action == Action::"launch_app" &&\n'
        '    !context.controls.allow_alongside.contains("launch_app") &&\n'
        "    !(context has args && context.args has argc && context.args.argc <= 1 &&\n"
        "      context.args has shell && !context.args.shell)))\n};",
    ),
    NamedPolicy(
        "system-program-rules-need-argv",
        "// While a stored policy reads the program (context.args.program, program_path, argv or\n"
        "// command), a command whose program a shell or launcher decides is refused: give\n"
        "// run_command an argv naming the program itself.\n"
        'forbid (principal, action in [Action::"run_command", Action::"launch_app"], resource)\n'
        "when {\n  context.program_rules &&\n"
        "  !(context has args && context.args has shell && !context.args.shell)\n};",
    ),
    NamedPolicy(
        "system-open-url-web-schemes",
        "// open_url opens http and https URLs; another scheme (file, javascript, data, about)\n"
        '// only where a permit of the session\'s acquire says @allow_schemes("file").\n'
        'forbid (principal, action == Action::"open_url", resource)\n'
        "unless {\n  context has args && context.args has scheme &&\n"
        '  (["http", "https"].contains(context.args.scheme) ||\n'
        "   (context has controls &&\n"
        "    context.controls.allow_schemes.contains(context.args.scheme)))\n};",
    ),
)
