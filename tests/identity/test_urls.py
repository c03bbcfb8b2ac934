"""htu normalization (RFC 3986 section 6.2.2 and 6.2.3)."""

from __future__ import annotations

import pytest

from corral.identity._urls import normalize_htu


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://a.example/x", "https://a.example/x"),
        ("HTTPS://A.Example:443/x?q#f", "https://a.example/x"),
        ("http://a.example:80", "http://a.example/"),
        ("http://a.example:8420/x", "http://a.example:8420/x"),
        ("https://user:pw@a.example/x", "https://a.example/x"),
        ("https://a.example/a/./b/../c", "https://a.example/a/c"),
        ("https://a.example/a/..", "https://a.example/"),
        ("https://a.example/%7e%41%2f", "https://a.example/~A%2F"),
        ("http://[::1]:8420/mcp", "http://[::1]:8420/mcp"),
        ("http://127.0.0.1:8420/mcp", "http://127.0.0.1:8420/mcp"),
    ],
)
def test_normalizes(url: str, normal: str) -> None:
    assert normalize_htu(url) == normal


@pytest.mark.parametrize(
    "url", ["ftp://a.example/", "/relative", "https:///nohost", "https://a.example:99999/", ""]
)
def test_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_htu(url)
