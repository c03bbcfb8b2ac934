"""The token endpoint under abuse (issue 9): an unauthenticated flood leaves nothing in the
replay cache, and bearer tokens go only to agents assigned to a bearer pool, without telling
an unauthenticated caller whether such a pool exists. Real store, proofs and assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.domain.models import PoolSpec
from corral.identity import DPoPKey, InvalidClientError, ReplayCache, client_assertion
from corral.identity.directory import Credential
from tests.identity.test_token_endpoint import TOKEN_URL, Env, refused

FLOOD = 120


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, replay=ReplayCache(max_entries=FLOOD // 4))
    yield e
    e.client.close()
    e.store.close()


def _flood(env: Env) -> None:
    """FLOOD token requests from as many addresses (so no per-address limit stops them), each
    with a valid, fresh DPoP proof and a client assertion forged in the agent's name."""
    attacker = DPoPKey.generate()
    stranger = DPoPKey.generate().private_jwk()
    for i in range(FLOOD):
        form = env.form(client_assertion=client_assertion(env.agent_id, TOKEN_URL, stranger))
        with pytest.raises(InvalidClientError):
            asyncio.run(
                env.auth.token(
                    form,
                    attacker.proof("POST", TOKEN_URL),
                    "POST",
                    client_address=f"198.51.100.{i % 250}",
                )
            )


def test_unauthenticated_flood_cannot_lock_agents_out(env: Env) -> None:
    # Before the fix every refused request's proof jti was recorded, and once the cache was
    # full it refused everyone (503): here the flood is four times the cache.
    _flood(env)
    assert len(env.auth._replay) == 0  # type: ignore[arg-type]  # nothing of the flood kept
    r = env.post()
    assert r.status_code == 200, r.text
    # ... and a replayed proof of the agent is still caught.
    proof = env.dpop.proof("POST", TOKEN_URL)
    assert env.post(proof=proof).status_code == 200
    assert "replayed" in refused(env.post(proof=proof), 400, "invalid_dpop_proof")


def test_one_clients_proofs_fill_only_its_own_share(tmp_path: Path) -> None:
    cache = ReplayCache(max_entries=3)
    for i in range(3):
        assert cache.first_use(f"k{i}", expires_at=200.0, now=100.0, owner="noisy")
    with pytest.raises(Exception, match="too many recent proofs"):
        cache.first_use("k3", expires_at=200.0, now=100.0, owner="noisy")
    assert cache.first_use("k0", expires_at=200.0, now=100.0, owner="quiet")
    # entries leave with their proof's window, and so does their owner
    assert cache.first_use("k9", expires_at=400.0, now=300.0, owner="noisy")
    assert len(cache) == 1


def _no_proof(env: Env, form: dict[str, str]) -> tuple[int, str]:
    r = env.post(form, proof=None)
    return r.status_code, r.json()["error"]


def _user_form(env: Env, cred: Credential) -> dict[str, str]:
    user_id = cred["client_id"]
    return env.form(
        client_id=user_id, client_assertion=client_assertion(user_id, TOKEN_URL, cred["key"])
    )


def test_bearer_tokens_only_for_agents_assigned_to_a_bearer_pool(env: Env) -> None:
    admin = env.directory.create_user("root", roles=["admin"])
    admin_cred = env.directory.create_user_credential(admin.id, TOKEN_URL)
    other = env.directory.create_agent("other", sponsors=["alice"], token_endpoint=TOKEN_URL)
    forged = env.form(
        client_assertion=client_assertion(env.agent_id, TOKEN_URL, DPoPKey.generate().private_jwk())
    )
    # An unauthenticated caller's answer, before any pool accepts bearer tokens ...
    before = _no_proof(env, forged)
    env.store.create_pool(PoolSpec(name="open", image="minimal", warm=0, allow_bearer=True))
    # ... is the same after one does: it learns nothing about the pools.
    assert _no_proof(env, env.form(client_assertion=forged["client_assertion"])) == before
    assert before == (401, "invalid_client")

    # An admin (any user) never gets one, nor an agent the bearer pool is not assigned to.
    assert _no_proof(env, _user_form(env, admin_cred)) == (400, "invalid_dpop_proof")
    assert _no_proof(env, env.form()) == (400, "invalid_dpop_proof")

    # Assigned directly: a bearer token. Through a group: too.
    env.store.assign_pool("open", "agent", env.agent_id, actor="test")
    r = env.post(proof=None)
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer", r.text  # noqa: S105
    group = env.directory.create_group("bearers")
    env.directory.add_to_group(group.name, "agent", other["agent_id"])
    env.store.assign_pool("open", "group", group.name, actor="test")
    other_form = env.form(
        client_id=other["agent_id"],
        client_assertion=client_assertion(other["agent_id"], TOKEN_URL, other["key"]),
    )
    assert env.post(other_form, proof=None).status_code == 200
    # The admin still gets none, and every caller can still have a DPoP-bound token.
    assert _no_proof(env, _user_form(env, admin_cred)) == (400, "invalid_dpop_proof")
    assert env.post(_user_form(env, admin_cred)).json()["token_type"] == "DPoP"  # noqa: S105
