"""URL rules: configuration that names remote endpoints (providers, receivers), and URLs as
the PC's browser will read them (for policy and the allowed_hosts control)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from corral.errors import InvalidInputError

__all__ = [
    "LOCAL_HOSTS",
    "WebUrl",
    "normalize_host",
    "normalize_host_name",
    "parse_web_url",
    "require_https_or_loopback",
]

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


@dataclass(frozen=True)
class WebUrl:
    """A URL as a browser sees it: the scheme (lowercase, no colon), the host (normalised by
    `normalize_host`, "" when the URL has none) and the serialised URL the browser is given."""

    scheme: str
    host: str
    href: str


def normalize_host(host: str) -> str:
    """One spelling per host: lowercase, IDNA (punycode), no trailing dot. `host` is what the
    WHATWG parser gave (already lowercase and punycode for http(s)); the same function
    normalises the host names of `allowed_hosts`, so both sides meet."""
    return host.rstrip(".").lower()


def parse_web_url(url: str) -> WebUrl:
    """Parse `url` the way the PC's browser (Chromium) does, with the WHATWG URL standard (the
    ada parser): `http://evil\\@allowed/` is host `evil`, `HTTP://ALLOWED./` is host `allowed`,
    percent-escapes and IDNA are decoded. InvalidInputError if the browser would not take it."""
    import ada_url  # here, not at the top: the host CLI's start does not pay for it

    try:
        if any(c in url for c in "\0\r\n"):
            raise ValueError(url)
        parsed = ada_url.parse_url(url, attributes=("protocol", "hostname", "href"))
    except ValueError:
        raise InvalidInputError(
            f"{url[:200]!r} is not a valid URL",
            hint="give an absolute URL such as https://example.com/page",
        ) from None
    return WebUrl(
        scheme=str(parsed["protocol"]).rstrip(":").lower(),
        host=normalize_host(str(parsed["hostname"])),
        href=str(parsed["href"]),
    )


def normalize_host_name(name: str) -> str:
    """A host name from configuration (`allowed_hosts`) in the form `parse_web_url` gives:
    `Bücher.DE.` becomes `xn--bcher-kva.de`. InvalidInputError if it is no host name."""
    name = name.strip()
    plain = not any(c in name for c in "/\\@?#% \t") and (":" not in name or name[:1] == "[")
    if name and plain:
        try:
            host = parse_web_url(f"http://{name}/").host
        except InvalidInputError:
            host = ""
        if host:
            return host
    raise InvalidInputError(
        f"{name[:200]!r} is not a host name",
        hint="give bare host names such as docs.example.com (no scheme, port or path)",
    )
