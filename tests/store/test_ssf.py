"""Shared Signals rows on SQLite and PostgreSQL: receivers, the outbox and inbound jtis."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from corral.domain.events import (
    CAEP_EVENT_TYPES,
    MAX_ATTEMPTS,
    RISK_LEVEL_CHANGE,
    SESSION_REVOKED,
)
from corral.errors import ConflictError, InvalidInputError, NotFoundError
from corral.store import Store

LEASE = timedelta(seconds=60)


def _now() -> datetime:
    return datetime.now(UTC)


def _receiver(store: Store, name: str = "siem", **kw: object) -> str:
    made = store.create_ssf_receiver(
        name,
        endpoint=str(kw.get("endpoint", "https://siem.example/ssf")),
        audience="https://siem.example",
        events=kw.get("events", ()),  # type: ignore[arg-type]
        auth_header=kw.get("auth_header"),  # type: ignore[arg-type]
    )
    return made.id


def test_receivers(store: Store) -> None:
    rid = _receiver(store, events=["session-revoked,risk-level-change"], auth_header="Bearer s3")
    got = store.get_ssf_receiver("siem")
    assert got.id == rid and got.enabled and got.auth_header == "Bearer s3"
    assert got.events == (SESSION_REVOKED, RISK_LEVEL_CHANGE)
    assert got.wants(SESSION_REVOKED) and not got.wants(CAEP_EVENT_TYPES[1])
    assert "s3" not in repr(got)
    assert store.get_ssf_receiver(rid).name == "siem"
    _receiver(store, "all", endpoint="http://127.0.0.1:9/ssf")  # loopback may be plain http
    assert [r.name for r in store.list_ssf_receivers()] == ["all", "siem"]
    assert store.get_ssf_receiver("all").events == CAEP_EVENT_TYPES
    with pytest.raises(ConflictError):
        _receiver(store)
    with pytest.raises(InvalidInputError, match="https"):
        _receiver(store, "plain", endpoint="http://siem.example/ssf")
    with pytest.raises(InvalidInputError, match="unknown event type"):
        _receiver(store, "typo", events=["session-revokd"])
    with pytest.raises(InvalidInputError, match="authorization header"):
        _receiver(store, "nl", auth_header="Bearer a\r\nX-Evil: 1")
    store.delete_ssf_receiver("all")
    with pytest.raises(NotFoundError):
        store.get_ssf_receiver("all")


def test_outbox_claim_deliver_fail(store: Store) -> None:
    rid = _receiver(store)
    store.enqueue_ssf([(rid, "j1", "tok1"), (rid, "j2", "tok2")])
    now = _now() + timedelta(seconds=1)
    claimed = store.claim_ssf_due(now, lease=LEASE)
    assert [(e.jti, e.token, e.attempts) for e in claimed] == [("j1", "tok1", 0), ("j2", "tok2", 0)]
    assert "tok1" not in repr(claimed[0])
    # claimed rows are leased: nobody else pushes them meanwhile
    assert store.claim_ssf_due(now, lease=LEASE) == []
    store.mark_ssf_delivered(claimed[0].id, now)
    store.mark_ssf_failed(claimed[1].id, "HTTP 503", now + timedelta(seconds=5))
    entries = {e.jti: e for e in store.list_ssf_outbox()}
    assert entries["j1"].status == "delivered" and entries["j1"].attempts == 1
    assert entries["j2"].status == "pending" and entries["j2"].last_error == "HTTP 503"
    assert [e.jti for e in store.list_ssf_outbox(pending_only=True)] == ["j2"]
    assert store.claim_ssf_due(now + timedelta(seconds=4), lease=LEASE) == []
    again = store.claim_ssf_due(now + timedelta(seconds=5), lease=LEASE)
    assert [(e.jti, e.attempts) for e in again] == [("j2", 1)]
    # a lease that runs out (the pushing process died) makes the row due again
    assert store.claim_ssf_due(now + timedelta(seconds=5) + LEASE, lease=LEASE)


def test_given_up_after_max_attempts(store: Store) -> None:
    rid = _receiver(store)
    store.enqueue_ssf([(rid, "j", "t")])
    now = _now() + timedelta(seconds=1)
    for _ in range(MAX_ATTEMPTS):
        (entry,) = store.claim_ssf_due(now, lease=LEASE)
        store.mark_ssf_failed(entry.id, "connection refused", now)
    assert store.claim_ssf_due(now + timedelta(days=1), lease=LEASE) == []
    (entry,) = store.list_ssf_outbox()
    assert entry.status == "failed" and entry.attempts == MAX_ATTEMPTS
    assert store.list_ssf_outbox(pending_only=True) == []


def test_concurrent_claims_never_share_a_row(store: Store) -> None:
    rid = _receiver(store)
    store.enqueue_ssf([(rid, f"j{i}", "t") for i in range(40)])
    now = _now() + timedelta(seconds=1)
    barrier = threading.Barrier(4)

    def claim(_: int) -> list[str]:
        barrier.wait()
        return [e.jti for e in store.claim_ssf_due(now, lease=LEASE, limit=40)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(claim, range(4)))
    everything = [jti for result in results for jti in result]
    assert sorted(everything) == sorted(f"j{i}" for i in range(40))  # each row exactly once


def test_removing_a_receiver_drops_its_outbox(store: Store) -> None:
    rid = _receiver(store)
    store.enqueue_ssf([(rid, "j", "t")])
    store.delete_ssf_receiver(rid)
    assert store.list_ssf_outbox() == []


def test_inbound_jti_is_insert_unique(store: Store) -> None:
    assert store.remember_ssf_inbound("https://idp.example", "j1")
    assert not store.remember_ssf_inbound("https://idp.example", "j1")
    assert store.remember_ssf_inbound("https://other.example", "j1")
    store.forget_ssf_inbound("https://idp.example", "j1")
    assert store.remember_ssf_inbound("https://idp.example", "j1")


def test_inbound_race_has_one_winner(store: Store) -> None:
    barrier = threading.Barrier(8)

    def remember(_: int) -> bool:
        barrier.wait()
        return store.remember_ssf_inbound("https://idp.example", "same")

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(remember, range(8))) == [False] * 7 + [True]


def test_prune(store: Store) -> None:
    rid = _receiver(store)
    store.enqueue_ssf([(rid, "done", "t"), (rid, "open", "t")])
    now = _now() + timedelta(seconds=1)
    done, _ = store.claim_ssf_due(now, lease=LEASE)
    store.mark_ssf_delivered(done.id, now)
    store.remember_ssf_inbound("https://idp.example", "old")
    later = now + timedelta(days=1)
    assert store.prune_ssf(outbox_before=later, inbound_before=later) == (1, 1)
    assert [e.jti for e in store.list_ssf_outbox()] == ["open"]  # pending rows are kept
    assert store.remember_ssf_inbound("https://idp.example", "old")
