"""Policies through the real server: REST /v1/policies and the `corral policy`, `corral pool
assign` and `corral approvals` commands, admin only."""

from __future__ import annotations

import json

from tests.e2e.conftest import Server


def test_shipped_policies_are_listed_and_admin_only(server: Server) -> None:
    r = server.http.get("/v1/policies")
    assert r.status_code == 200, r.text
    body = r.json()
    names = {p["name"] for p in body["policies"]}
    assert {"admins-administer", "agents-acquire-assigned-pools", "sponsors-observe"} <= names
    assert any(p["name"] == "system-session-read-only" for p in body["system"])
    assert server.agent.get("/v1/policies").status_code == 403
    assert server.anon.get("/v1/policies").status_code == 401
    add = server.agent.post(
        "/v1/policies", json={"name": "x", "text": "permit (principal, action, resource);"}
    )
    assert add.status_code == 403


def test_add_test_remove_through_rest(server: Server) -> None:
    bad = server.http.post(
        "/v1/policies",
        json={"name": "bad", "text": 'permit (principal, action == Action::"fly", resource);'},
    )
    assert bad.status_code == 400
    assert 'unrecognized action `Action::"fly"`' in bad.json()["detail"]
    good = server.http.post(
        "/v1/policies",
        json={
            "name": "e2e-no-curl",
            "text": 'forbid (principal, action == Action::"run_command", resource)\n'
            "when { context has args && context.args has program && "
            'context.args.program == "curl" };',
        },
    )
    assert good.status_code == 201, good.text
    assert server.http.post(
        "/v1/policies", json={"name": "e2e-no-curl", "text": "x"}
    ).status_code in (400, 409)
    test = server.http.post(
        "/v1/policies/test",
        json={
            "principal": 'User::"admin"',
            "action": 'Action::"run_command"',
            "resource": 'PC::"nowhere"',
            "context": {"args": {"program": "curl", "shell": False}},
        },
    )
    assert test.status_code == 200, test.text
    assert test.json()["decision"] == "deny"
    assert test.json()["policies"] == ["e2e-no-curl"]
    changes = server.http.get("/v1/policies/changes").json()
    assert any(c["kind"] == "add" and c["subject"] == "e2e-no-curl" for c in changes)
    assert server.http.delete("/v1/policies/e2e-no-curl").status_code == 200
    assert server.http.get("/v1/policies/e2e-no-curl").status_code == 404
    schema = server.http.get("/v1/policies/schema")
    assert schema.status_code == 200 and 'action "run_command"' in schema.text


def test_policy_cli(server: Server, tmp_path: object) -> None:
    listed = server.corral("policy", "list", "--system")
    assert listed.returncode == 0, listed.stderr
    assert "agents-acquire-assigned-pools" in listed.stdout
    assert "system-session-read-only" in listed.stdout
    refused = server.corral(
        "policy",
        "add",
        "oops",
        "--text",
        "permit (principal, action, resource) when { context.nope };",
    )
    assert refused.returncode != 0
    assert "attribute `nope` in context not found" in refused.stderr
    added = server.corral(
        "policy",
        "add",
        "e2e-night",
        "--text",
        'forbid (principal is Agent, action == Action::"acquire", resource)'
        " when { context.hour < 6 };",
    )
    assert added.returncode == 0, added.stderr
    allowed = server.corral(
        "policy",
        "test",
        "--principal",
        'User::"admin"',
        "--action",
        'Action::"create_pool"',
        "--resource",
        'Pool::"new"',
        "--json",
    )
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["policies"] == ["admins-administer"]
    denied = server.corral(
        "policy",
        "test",
        "--principal",
        'Agent::"agent-e2e"',
        "--action",
        "acquire",
        "--resource",
        'Pool::"nopool"',
        "--context",
        '{"hour": 3}',
    )
    assert denied.returncode == 1
    assert "deny" in denied.stdout and "e2e-night" in denied.stdout
    broken = server.corral(
        "policy",
        "test",
        "--principal",
        'Agent::"agent-e2e"',
        "--action",
        "acquire",
        "--resource",
        'Pool::"nopool"',
        "--context",
        '{"hour": "three"}',
    )
    assert (
        broken.returncode == 1
        and "errors:" in broken.stdout
        and "(none)" not in broken.stdout.split("errors:")[1].splitlines()[0]
    )
    history = server.corral("policy", "history")
    assert history.returncode == 0 and "e2e-night" in history.stdout
    removed = server.corral("policy", "remove", "e2e-night")
    assert removed.returncode == 0, removed.stderr


def test_pool_assign_cli(server: Server) -> None:
    server.create_pool("assigned", warm=0)
    made = server.corral("pool", "assign", "assigned", "--agent", "agent-e2e")
    assert made.returncode == 0, made.stderr
    shown = server.corral("pool", "assignments", "assigned")
    assert "agent-e2e" in shown.stdout
    decision = server.http.post(
        "/v1/policies/test",
        json={
            "principal": 'Agent::"agent-e2e"',
            "action": "acquire",
            "resource": 'Pool::"assigned"',
        },
    ).json()
    assert decision["decision"] == "allow"
    assert (
        server.corral("pool", "assign", "assigned").returncode != 0
    )  # neither --agent nor --group
    assert server.corral("pool", "assign", "assigned", "--agent", "nobody").returncode != 0
    gone = server.corral("pool", "unassign", "assigned", "--agent", "agent-e2e")
    assert gone.returncode == 0, gone.stderr
    decision = server.http.post(
        "/v1/policies/test",
        json={
            "principal": 'Agent::"agent-e2e"',
            "action": "acquire",
            "resource": 'Pool::"assigned"',
        },
    ).json()
    assert decision["decision"] == "deny"
    assert (
        server.agent.post("/v1/pools/assigned/assignments", json={"agent": "agent-e2e"}).status_code
        == 403
    )


def test_approvals_cli_lists_nothing_yet(server: Server) -> None:
    listed = server.corral("approvals", "list", "--state", "all")
    assert listed.returncode == 0, listed.stderr
    assert server.corral("approvals", "approve", "ap-nope").returncode != 0
    assert server.http.get("/v1/approvals?state=bogus").status_code == 400
