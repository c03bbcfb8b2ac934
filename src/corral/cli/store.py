"""`corral store ...`: the local database's upkeep; today, rotating the key that seals its secrets.

Acts on the local database and key file directly, like `corral user` (run it on the server host,
as the user that runs `corral up`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from corral.cli._common import err_console, handle_errors, local_store

__all__ = ["app"]

app = typer.Typer(help="The local database and its sealing key.", no_args_is_help=True)


@app.command("rotate-key")
@handle_errors
def rotate_key(
    keep_old: Annotated[
        bool,
        typer.Option(help="keep the old keys in the key file (they no longer seal anything)"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
) -> None:
    """Seal every stored secret (TOTP seeds, OIDC client secrets, push authorization headers)
    with a new key, in one transaction, then drop the old keys (docs/store.md)."""
    with local_store() as store:
        done = store.rotate_secrets_key(keep_old=keep_old)
        path = store.keys.path
    if as_json:
        print(
            json.dumps(
                {
                    "key_file": str(path),
                    "new_key": done.new_key,
                    "resealed": done.resealed,
                    "retired": done.retired,
                }
            )
        )
        return
    err_console.print(
        f"new store key {done.new_key} in {path}; {done.resealed} secret(s) resealed with it"
    )
    if done.retired:
        err_console.print(f"old key(s) dropped: {', '.join(done.retired)}")
    err_console.print("back up the key file now: the database cannot be read without it")
