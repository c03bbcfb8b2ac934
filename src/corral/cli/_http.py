"""A small REST client for CLI commands that talk to a running Corral server."""

from __future__ import annotations

import os
from typing import Any

import httpx

from corral.errors import CorralError, RuntimeFailureError

__all__ = ["DEFAULT_URL", "call"]

DEFAULT_URL = os.environ.get("CORRAL_URL", "http://127.0.0.1:8420")


def call(
    method: str,
    path: str,
    *,
    url: str = DEFAULT_URL,
    json: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Any:
    """Send one request; return the decoded JSON, or raise a CorralError carrying the server's
    message."""
    try:
        response = httpx.request(method, url + path, json=json, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RuntimeFailureError(
            f"cannot reach Corral at {url}: {exc}",
            hint="start it with `corral up` (or set CORRAL_URL)",
        ) from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"message": response.text[:500]}
        err = CorralError(str(error.get("message")), hint=error.get("hint"))
        err.code = str(error.get("code", "error"))
        err.exit_code = 1 if response.status_code >= 500 else 2
        raise err
    return response.json()
