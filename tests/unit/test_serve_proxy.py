"""`corral up --trusted-proxy`: uvicorn believes forwarded headers from the named proxies only,
and from none by default (its own default trusts loopback)."""

from __future__ import annotations

import pytest

from corral.cli.serve import proxy_settings
from corral.errors import InvalidInputError


def test_no_proxy_named_means_no_forwarded_headers() -> None:
    assert proxy_settings([]) == {"proxy_headers": False, "forwarded_allow_ips": []}


def test_named_proxies_are_normalized_networks() -> None:
    assert proxy_settings(["10.0.0.5", "10.1.0.0/16", "fd00::/8"]) == {
        "proxy_headers": True,
        "forwarded_allow_ips": ["10.0.0.5/32", "10.1.0.0/16", "fd00::/8"],
    }


@pytest.mark.parametrize("bad", ["*", "proxy.example", "10.0.0.0/33", ""])
def test_anything_but_an_address_or_cidr_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        proxy_settings([bad])
    assert "--trusted-proxy" in info.value.message and info.value.hint
