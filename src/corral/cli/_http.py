"""A small REST client for CLI commands that talk to a running Corral server.

Every request is signed (DPoP) with a credential: `--credential`, else `$CORRAL_CREDENTIAL`,
else `<data dir>/admin.json`, which the first `corral up` writes for the bootstrap admin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.errors import InvalidInputError, RuntimeFailureError, from_problem

if TYPE_CHECKING:  # httpx and the DPoP signer load when a request is sent, not for --help
    from corral.client.http import DPoPAuth

__all__ = ["DEFAULT_URL", "call", "credential_path", "set_credential"]

DEFAULT_URL = os.environ.get("CORRAL_URL", "http://127.0.0.1:8420")
_chosen: Path | None = None


def set_credential(path: Path | None) -> None:
    """The `--credential` option of a command group (wins over the environment)."""
    global _chosen
    _chosen = path


def credential_path() -> Path:
    if _chosen is not None:
        return _chosen
    env = os.environ.get("CORRAL_CREDENTIAL")
    if env:
        return Path(env)
    from corral.config import paths

    return paths().data / "admin.json"


def _auth() -> DPoPAuth:
    from corral.client.http import DPoPAuth

    path = credential_path()
    if not path.exists():
        raise InvalidInputError(
            f"no credential at {path}",
            hint="start the server with `corral up` (its first run writes the admin credential "
            "there), or pass --credential / set CORRAL_CREDENTIAL",
        )
    return DPoPAuth.from_credential(path)


def call(
    method: str,
    path: str,
    *,
    url: str = DEFAULT_URL,
    json: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Any:
    """Send one signed request; return the decoded JSON, or raise a CorralError carrying the
    server's code, detail and hint, with the exit code the error table gives that code."""
    import httpx

    try:
        with httpx.Client(auth=_auth(), timeout=timeout) as client:
            response = client.request(method, url + path, json=json, headers=headers)
    except httpx.HTTPError as exc:
        raise RuntimeFailureError(
            f"cannot reach Corral at {url}: {exc}",
            hint="start it with `corral up` (or set CORRAL_URL)",
        ) from None
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        # A problem body (RFC 9457), or the token endpoint's OAuth error: the class of the
        # error table with this code gives the exit code.
        raise from_problem(
            response.status_code, body if isinstance(body, dict) else None, response.text[:500]
        )
    return response.json()


def credential_option(
    credential: Annotated[
        Path | None,
        typer.Option(
            help="credential file to sign requests with "
            "(default: $CORRAL_CREDENTIAL, else <data dir>/admin.json)"
        ),
    ] = None,
) -> None:
    """Typer callback shared by the command groups that talk to the server."""
    set_credential(credential)
