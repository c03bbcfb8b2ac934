"""The one URL normalization DPoP's `htu` comparison uses (RFC 9449 section 4.3, point 9).

Both the proof's `htu` and the URL the request arrived on go through `normalize_htu`, which
applies RFC 3986 syntax- and scheme-based normalization (sections 6.2.2 and 6.2.3) and drops the
query and fragment, so that equivalent spellings match and nothing else does.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["normalize_htu"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on a path that starts with "/"."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def normalize_htu(url: str) -> str:
    """`scheme://host[:port]/path` in canonical form; ValueError if not an absolute http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("not an http(s) URL")
    host = parts.hostname  # lowercased, userinfo dropped
    if not host:
        raise ValueError("URL has no host")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port  # ValueError when out of range or not a number
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _PERCENT.sub(_percent, parts.path) or "/"
    if not path.startswith("/"):
        raise ValueError("URL path is not absolute")
    return f"{scheme}://{netloc}{_remove_dot_segments(path)}"
