"""The `corral` command."""

from __future__ import annotations

import typer

from corral import __version__
from corral.cli import (
    connect,
    demo,
    events,
    federation,
    identity,
    image,
    pc,
    policy,
    pool,
    serve,
    session,
    store,
)

app = typer.Typer(
    name="corral",
    help="Corral lends isolated, disposable Linux desktop PCs to AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(image.app, name="image", help="Build and list PC images.")
app.add_typer(pc.app, name="pc")
app.add_typer(pool.app, name="pool")
app.add_typer(session.app, name="session")
app.add_typer(policy.app, name="policy")
app.add_typer(policy.approvals_app, name="approvals")
app.add_typer(
    identity.user_app, name="user", help="Human users: admins, security admins, sponsors."
)
app.add_typer(identity.agent_app, name="agent", help="Agent identities, their sponsors and keys.")
app.add_typer(events.app, name="events")
app.add_typer(federation.app, name="federation", help="Trusted OpenID Connect providers.")
app.add_typer(store.app, name="store")

app.command()(serve.up)
app.command()(demo.demo)
app.command()(connect.connect)


@app.command()
def version() -> None:
    """Print Corral's version."""
    print(__version__)
