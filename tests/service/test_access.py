"""Continuous access evaluation across server workers: two evaluators on two Store instances
(two processes' views of one database). A change made through one counts on the other's very
next check, with no cache to expire."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.domain.identity import Risk, Role
from corral.identity.errors import InvalidTokenError
from corral.identity.evaluation import AccessEvaluator
from corral.identity.tokens import AccessTokenClaims
from corral.store import Store


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    url = f"sqlite:///{tmp_path}/corral.db"
    first = Store(url)
    first.migrate()
    second = Store(url)
    yield first, second
    first.close()
    second.close()


def _claims(subject: str, issued_at: float | None = None) -> AccessTokenClaims:
    now = time.time() if issued_at is None else issued_at
    return AccessTokenClaims(
        issuer="http://corral",
        subject=subject,
        audience="http://corral",
        client_id=subject,
        token_id="t",  # noqa: S106
        issued_at=int(now),
        not_before=int(now),
        expires_at=int(now) + 300,
        jkt="k",
        session_id=None,
        scope=(),
        raw={},
    )


def test_a_change_in_one_worker_counts_on_the_next_check_in_another(
    stores: tuple[Store, Store],
) -> None:
    worker_a, worker_b = stores
    sponsor = worker_b.create_user("sponsor", roles={Role.SPONSOR})
    agent = worker_b.create_agent("bot", sponsors=[sponsor.id])
    check = AccessEvaluator(worker_a)
    old = _claims(agent.id, issued_at=time.time() - 5)
    assert check.evaluate(old, jkt="k").id == agent.id

    worker_b.set_agent_risk(agent.id, Risk.HIGH)
    with pytest.raises(InvalidTokenError, match="high risk"):
        check.evaluate(old, jkt="k")
    worker_b.set_agent_risk(agent.id, Risk.LOW)
    assert check.evaluate(old, jkt="k").id == agent.id

    worker_b.remove_sponsor(agent.id, sponsor.id)  # the last one: the agent is disabled
    with pytest.raises(InvalidTokenError, match="disabled"):
        check.evaluate(old, jkt="k")
    worker_b.add_sponsor(agent.id, sponsor.id)
    worker_b.set_agent_enabled(agent.id, True)
    assert check.evaluate(old, jkt="k").id == agent.id

    worker_b.revoke_tokens(agent.id)
    with pytest.raises(InvalidTokenError, match="revoked"):
        check.evaluate(old, jkt="k")
    fresh = _claims(agent.id, issued_at=time.time() + 2)  # issued after the revoke
    assert check.evaluate(fresh, jkt="k").id == agent.id

    worker_b.set_user_enabled(sponsor.id, False)  # a disabled sponsor sponsors nobody
    with pytest.raises(InvalidTokenError, match="disabled"):
        check.evaluate(fresh, jkt="k")


def test_each_refusal_has_its_own_message_and_code(stores: tuple[Store, Store]) -> None:
    """Disabled, revoked, at high risk and unknown identities are each refused saying so."""
    store, _ = stores
    sponsor = store.create_user("sponsor", roles={Role.SPONSOR})
    check = AccessEvaluator(store)
    cases: tuple[tuple[Callable[[str], object], str, str], ...] = (
        (lambda a: store.set_agent_enabled(a, False), "identity_disabled", "is disabled"),
        (store.revoke_tokens, "token_revoked", "revoked"),
        (lambda a: store.set_agent_risk(a, Risk.HIGH), "identity_high_risk", "at high risk"),
    )
    for i, (change, code, message) in enumerate(cases):
        agent = store.create_agent(f"bot{i}", sponsors=[sponsor.id])
        claims = _claims(agent.id, issued_at=time.time() - 5)
        check.evaluate(claims, jkt="k")
        change(agent.id)
        with pytest.raises(InvalidTokenError, match=message) as refused:
            check.evaluate(claims, jkt="k")
        assert refused.value.code == code and refused.value.error == "invalid_token"
    with pytest.raises(InvalidTokenError, match="no longer exists") as unknown:
        check.evaluate(_claims("a-0123456789abcdef"), jkt="k")
    assert unknown.value.code == "identity_unknown"
