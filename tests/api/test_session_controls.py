"""Session controls asked for at acquire over REST: fixed for the session, shown in its JSON,
and enforced by the policy decision on every later tool call."""

from __future__ import annotations

from starlette.testclient import TestClient

from corral.domain.models import PCState, PoolSpec

from .conftest import BASE, Client, Env


def _pool(env: Env, n: int = 3) -> None:
    env.store.create_pool(PoolSpec(name="ctl", image="minimal", warm=0, max=n))
    for i in range(n):
        env.store.add_pc("ctl", f"pc-ctl-{i}", PCState.READY)


def test_controls_fixed_at_acquire_refuse_what_they_exclude(env: Env, admin: Client) -> None:
    _pool(env)
    body = {"controls": {"read_only": True, "allowed_hosts": ["Example.org "]}}
    acquired = admin("POST", "/v1/pools/ctl/sessions", json=body)
    assert acquired.status_code == 201, acquired.text
    session = acquired.json()
    assert session["controls"] == {
        "read_only": True,
        "no_clipboard": False,
        "no_file_transfer": False,
        "allowed_hosts": ["example.org"],
    }
    sid = session["session_id"]
    assert admin("GET", f"/v1/sessions/{sid}").json()["controls"] == session["controls"]

    act = f"/v1/sessions/{sid}/actions"
    for tool, args in (
        ("click", {"x": 1, "y": 1}),
        ("type_text", {"text": "hi"}),
        ("run_command", {"command": "true"}),
        ("open_url", {"url": "https://elsewhere.test/"}),
    ):
        refused = admin("POST", f"{act}/{tool}", json=args)
        assert refused.status_code == 403, (tool, refused.text)
        assert refused.json()["code"] == "permission_denied"

    # Without controls, the same admin runs the command (the refusal above was the control).
    free = admin("POST", "/v1/pools/ctl/sessions", json={}).json()
    ran = admin(
        "POST", f"/v1/sessions/{free['session_id']}/actions/run_command", json={"command": "true"}
    )
    assert ran.status_code == 200, ran.text
    assert free["controls"]["read_only"] is False


def test_bad_controls_are_refused_with_what_to_change(env: Env, admin: Client) -> None:
    _pool(env, 1)
    bad = admin("POST", "/v1/pools/ctl/sessions", json={"controls": {"read_only": "yes"}})
    assert bad.status_code == 400, bad.text
    unknown = admin("POST", "/v1/pools/ctl/sessions", json={"controls": {"no_mouse": True}})
    assert unknown.status_code == 400 and "no_mouse" in unknown.text
    # nothing was lent by the refused requests
    assert admin("GET", "/v1/pools/ctl").json()["counts"].get("ready") == 1


def test_the_client_address_reaches_the_policy_context(env: Env, admin: Client) -> None:
    """A policy on `context.client_ip` decides by the address the server saw the request from."""
    _pool(env)
    added = admin(
        "POST",
        "/v1/policies",
        json={
            "name": "acquire-from-the-office-only",
            "text": 'forbid (principal, action == Action::"acquire", resource)\n'
            'unless { context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) };',
        },
    )
    assert added.status_code == 201, added.text

    def from_address(address: str) -> Client:
        http = TestClient(env.app, base_url=BASE, client=(address, 40000))
        return Client(http, env.creds["root"])

    outside = from_address("192.168.1.5")("POST", "/v1/pools/ctl/sessions", json={})
    assert outside.status_code == 403, outside.text
    assert "acquire-from-the-office-only" in outside.text
    inside = from_address("10.1.2.3")("POST", "/v1/pools/ctl/sessions", json={})
    assert inside.status_code == 201, inside.text
