"""The per-agent session limit over the real REST route (issue 9, section 5): one agent
cannot hold a whole pool; the refusal names the limit and how to change it."""

from __future__ import annotations

from corral.domain.models import PCState, PoolSpec

from .conftest import Client, Env


def _pool(
    env: Env, admin: Client, name: str, n: int, max_sessions_per_agent: int | None = None
) -> None:
    env.store.create_pool(
        PoolSpec(
            name=name,
            image="minimal",
            warm=0,
            max=n,
            max_sessions_per_agent=max_sessions_per_agent,
        )
    )
    for i in range(n):
        env.store.add_pc(name, f"pc-{name}-{i}", PCState.READY)
    assigned = admin("POST", f"/v1/pools/{name}/assignments", json={"agent": "bot"})
    assert assigned.status_code == 200, assigned.text


def test_an_agent_gets_at_most_its_limit_of_a_pool(env: Env, admin: Client, bot: Client) -> None:
    _pool(env, admin, "shared", 4)  # no limit given: half of 4
    assert admin("GET", "/v1/pools/shared").json()["max_sessions_per_agent"] == 2
    held = []
    for _ in range(2):
        acquired = bot("POST", "/v1/pools/shared/sessions", json={"wait_s": 0})
        assert acquired.status_code == 201, acquired.text
        held.append(acquired.json()["session_id"])
    refused = bot("POST", "/v1/pools/shared/sessions", json={"wait_s": 0})
    assert refused.status_code == 409, refused.text
    error = refused.json()
    assert error["code"] == "session_limit"
    assert "holds 2 session(s) in pool 'shared'" in error["detail"]
    assert "max_sessions_per_agent 2" in error["detail"]
    assert "release a session first" in error["hint"]
    assert "--max-sessions-per-agent" in error["hint"]
    # Two PCs are still ready for others; a human admin is not held to the agents' limit.
    assert admin("GET", "/v1/pools/shared").json()["counts"]["ready"] == 2
    assert admin("POST", "/v1/pools/shared/sessions", json={"wait_s": 0}).status_code == 201
    # Releasing one of its sessions lets the agent acquire again.
    assert bot("DELETE", f"/v1/sessions/{held[0]}").status_code == 200
    again = bot("POST", "/v1/pools/shared/sessions", json={"wait_s": 0})
    assert again.status_code == 201, again.text


def test_admins_set_the_limit_and_bad_values_are_refused(admin: Client) -> None:
    body = {"name": "wide", "image": "minimal", "warm": 0, "max": 6}
    made = admin("POST", "/v1/pools", json={**body, "max_sessions_per_agent": 6})
    assert made.status_code == 201, made.text
    assert made.json()["max_sessions_per_agent"] == 6
    for bad in (0, 7):
        refused = admin(
            "POST", "/v1/pools", json={**body, "name": "bad", "max_sessions_per_agent": bad}
        )
        assert refused.status_code == 400, refused.text
        assert "max_sessions_per_agent" in refused.json()["detail"]
