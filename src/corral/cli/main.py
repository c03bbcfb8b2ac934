"""The `corral` command.

Subcommands are listed here with their one-line help and imported only when run
(`corral.cli._lazy`), so `corral --help` and every command start fast: keep heavy imports
(store, HTTP server, MCP, crypto, pydantic models) inside the command modules' functions or
below their module level, never here.
"""

from __future__ import annotations

import typer

from corral.cli._lazy import Lazy, LazyGroup

__all__ = ["app"]


class CorralGroup(LazyGroup):
    lazy = {
        "up": Lazy(
            "corral.cli.serve:up",
            "Serve Corral (REST, MCP) until Ctrl-C; first run builds the default image and pool.",
        ),
        "demo": Lazy(
            "corral.cli.demo:demo",
            "Act as an agent over MCP: acquire a PC, open a terminal, type a command, read the "
            "file it wrote, save a screenshot, release; each step with its time.",
        ),
        "connect": Lazy(
            "corral.cli.connect:connect",
            "Serve the gateway's tools over stdio MCP, signing for the agent (DPoP).",
        ),
        "version": Lazy("corral.cli.main:version", "Print Corral's version."),
        "image": Lazy("corral.cli.image:app", "Build and list PC images.", override=True),
        "pc": Lazy(
            "corral.cli.pc:app", "Boot and drive PCs on this host (root-only debugging commands)."
        ),
        "pool": Lazy("corral.cli.pool:app", "Create, list, show and delete pools of PCs."),
        "session": Lazy("corral.cli.session:app", "List, show and release agent sessions."),
        "policy": Lazy(
            "corral.cli.policy:app",
            "Cedar policies: list, add, remove, test; see docs/policies.md.",
        ),
        "approvals": Lazy(
            "corral.cli.policy:approvals_app",
            "Requests a policy holds for a sponsor: list, approve, deny.",
        ),
        "user": Lazy(
            "corral.cli.identity:user_app",
            "Human users: admins, security admins, sponsors.",
            override=True,
        ),
        "agent": Lazy(
            "corral.cli.identity:agent_app",
            "Agent identities, their sponsors and keys.",
            override=True,
        ),
        "events": Lazy("corral.cli.events:app", "CAEP security events: receivers and deliveries."),
        "federation": Lazy(
            "corral.cli.federation:app", "Trusted OpenID Connect providers.", override=True
        ),
        "store": Lazy("corral.cli.store:app", "The local database and its sealing key."),
        "audit": Lazy("corral.cli.audit:app", "The audit log: verify, prove, trace, export."),
    }


app = typer.Typer(
    name="corral",
    cls=CorralGroup,
    help="Corral lends isolated, disposable Linux desktop PCs to AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Corral lends isolated, disposable Linux desktop PCs to AI agents."""


def version() -> None:
    """Print Corral's version."""
    from corral import __version__

    print(__version__)
