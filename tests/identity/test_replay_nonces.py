"""The replay cache and the nonce source."""

from __future__ import annotations

import threading

import pytest

from corral.identity import NonceSource, ReplayCache, ReplayCacheFullError
from tests.identity.helpers import NOW


def test_first_use_then_replay_until_expiry() -> None:
    cache = ReplayCache()
    assert cache.first_use("a", expires_at=NOW + 60, now=NOW)
    assert not cache.first_use("a", expires_at=NOW + 60, now=NOW + 59)
    assert cache.first_use("a", expires_at=NOW + 200, now=NOW + 60)


def test_expired_entries_are_dropped() -> None:
    cache = ReplayCache()
    for i in range(100):
        cache.first_use(str(i), expires_at=NOW + i, now=NOW)
    cache.first_use("late", expires_at=NOW + 500, now=NOW + 50)
    assert len(cache) == 50


def test_full_cache_refuses_instead_of_forgetting() -> None:
    cache = ReplayCache(max_entries=2)
    cache.first_use("a", NOW + 60, NOW)
    cache.first_use("b", NOW + 60, NOW)
    with pytest.raises(ReplayCacheFullError) as info:
        cache.first_use("c", NOW + 60, NOW)
    assert info.value.status == 503
    assert not cache.first_use("a", NOW + 60, NOW)  # still remembered
    assert cache.first_use("c", NOW + 120, NOW + 61)  # room again once they expire


def test_concurrent_uses_of_one_key_admit_exactly_one() -> None:
    cache = ReplayCache()
    results: list[bool] = []
    start = threading.Barrier(8)

    def use() -> None:
        start.wait()
        results.append(cache.first_use("k", NOW + 60, NOW))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_nonce_lifetime_and_forgery() -> None:
    source = NonceSource(lifetime=120)
    nonce = source.issue(NOW)
    assert source.check(nonce, NOW) and source.check(nonce, NOW + 120)
    assert not source.check(nonce, NOW + 121)
    assert not source.check(nonce, NOW - 60)  # from the future
    assert not NonceSource().check(nonce, NOW)  # another secret
    flipped = nonce[:-2] + ("A" if nonce[-2] != "A" else "B") + nonce[-1]
    for bad in (flipped, "", "x" * 100, None, 5, "!!!!"):
        assert not source.check(bad, NOW)


def test_shared_secret_lets_workers_accept_each_others_nonces() -> None:
    secret = b"s" * 32
    assert NonceSource(secret).check(NonceSource(secret).issue(NOW), NOW)
    with pytest.raises(ValueError):
        NonceSource(b"short")
    assert "s" * 32 not in repr(NonceSource(secret))
