"""URL rules shared by configuration that names remote endpoints (providers, receivers)."""

from __future__ import annotations

from urllib.parse import urlsplit

from corral.errors import InvalidInputError

__all__ = ["LOCAL_HOSTS", "require_https_or_loopback"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def require_https_or_loopback(url: str, what: str) -> None:
    """Remote endpoints are https; plain http only on loopback (tests, a local sidecar)."""
    parts = urlsplit(url)
    loopback = parts.scheme == "http" and (parts.hostname or "") in LOCAL_HOSTS
    if not parts.netloc or not (parts.scheme == "https" or loopback):
        raise InvalidInputError(
            f"{what} {url!r} is not an https URL",
            hint="use https:// (plain http is accepted only on loopback, for testing)",
        )
