"""Micro-benchmark of policy decisions: what `authorize()` adds to every request.

Target (issue 5): decision overhead per request with 100 policies, p50 <= 150 us. Measured on a
real SQLite store (a directory of 200 agents, 50 users, 20 groups) with the shipped policies
plus admin policies up to 100 stored ones, spread over actions, principals and conditions the
way an operator would write them. Rows:

- authorize(), a tool call in the caller's own session: everything a request pays (the one
  store read of the directory and policy versions, cached entities and controls, Cedar).
- authorize(), acquire: adds reading the pool and its assignments.
- engine only: the Cedar decision alone, on the same 100 policies.
- engine only, 100 policies that all apply to the action: the worst case for slicing.
- floor: one Cedar call with a single `permit` on the same entities (cedarpy's own cost).
- first decision after a policy change: re-reading the set, validating the changed policy,
  slicing again (info only).

Pure CPU and SQLite: no root, no server.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cedarpy

from bench._stats import Row, render, summarize, time_ms
from corral.access import DEFAULT_POLICIES, SYSTEM_POLICIES, NamedPolicy
from corral.access.service import PolicyService
from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Role
from corral.domain.models import PCState, PoolSpec
from corral.store import Store

RUNS = int(os.environ.get("CORRAL_BENCH_RUNS", "2000"))
POLICIES = 100
TARGET_US = 150


def _us(samples_ms: list[float]) -> list[float]:
    return [s * 1000 for s in samples_ms]


def _admin_policies(count: int) -> list[NamedPolicy]:
    """`count` policies of the kinds operators write, over many actions and principals."""
    kinds = [
        lambda i: (
            f'permit (principal == Agent::"agent-{i % 200}", action == Action::"acquire",'
            f' resource == Pool::"pool-{i % 10}");'
        ),
        lambda i: (
            f'forbid (principal in Group::"group-{i % 20}", action == Action::"run_command",'
            " resource) when { context has args && context.args has program &&"
            f' context.args.program == "tool-{i}" }};'
        ),
        lambda i: (
            f'forbid (principal in Group::"group-{i % 20}", action in Action::"computer",'
            " resource) when { context has client_ip &&"
            f' context.client_ip.isInRange(ip("198.51.{i % 250}.0/24")) }};'
        ),
        lambda i: (
            f'permit (principal in Group::"group-{i % 20}", action == Action::"observe",'
            f" resource is Session) when {{ context.hour >= {i % 8} }};"
        ),
        lambda i: (
            f'forbid (principal is Agent, action == Action::"open_url", resource) when {{'
            " context has args && context.args has host &&"
            f' context.args.host == "blocked-{i}.test" }};'
        ),
        lambda i: (
            f'forbid (principal, action in Action::"file_transfer", resource) when {{'
            " context has args && context.args has path &&"
            f' context.args.path like "/secret-{i}/*" }};'
        ),
        lambda i: (
            f'permit (principal in Role::"security_admin", action == Action::"read_audit",'
            f" resource) when {{ context.weekday <= {1 + i % 7} }};"
        ),
        lambda i: (
            f'forbid (principal == Agent::"agent-{i % 200}", action, resource) when'
            " { context.risk_score >= 2 };"
        ),
    ]
    return [NamedPolicy(f"admin-{i:03d}", kinds[i % len(kinds)](i)) for i in range(count)]


def _all_apply(count: int) -> list[NamedPolicy]:
    """`count` policies whose scope matches a `click`: nothing can be sliced away."""
    return [
        NamedPolicy(
            f"wide-{i:03d}",
            "forbid (principal, action, resource) when { context has args &&"
            f' context.args has host && context.args.host == "h-{i}.test" }};',
        )
        for i in range(count)
    ]


def _world(folder: Path) -> tuple[Store, PolicyService, Caller, Caller]:
    store = Store(f"sqlite:///{folder}/bench.db")
    store.migrate()
    service = PolicyService(store)
    service.start()
    for g in range(20):
        store.create_group(f"group-{g}")
    sponsors = [store.create_user(f"user-{u}", roles=[Role.SPONSOR]).id for u in range(50)]
    agents = [
        store.create_agent(f"agent-{a}", sponsors=[sponsors[a % 50]], groups=[f"group-{a % 20}"])
        for a in range(200)
    ]
    store.create_pool(PoolSpec(name="pool-0", image="minimal", max=20))
    store.add_pc("pool-0", "pc-bench", PCState.READY)
    for policy in _admin_policies(POLICIES - len(DEFAULT_POLICIES)):
        # stored as `corral policy add` stores them: names of agents and groups as their ids
        store.add_policy(policy.name, service.rewrite(policy.text).text, actor="bench")
    agent = Caller(CallerKind.AGENT, agents[0].id, jkt="thumbprint")
    now = datetime.now(UTC)
    got = store.acquire(
        "pool-0",
        session_id="ses-bench",
        expires_at=now + timedelta(hours=1),
        idempotency_key=None,
        request_hash="h",
        now=now,
        owner=agent.id,
    )
    assert got is not None
    store.set_session_controls("ses-bench", {})
    admin = Caller(CallerKind.USER, store.create_user("root", roles=[Role.ADMIN]).id)
    return store, service, agent, admin


def _rows(folder: Path, runs: int) -> list[Row]:
    store, service, agent, _admin = _world(folder)
    assert len(store.list_policies()) == POLICIES
    session = store.get_session("ses-bench")
    pc = service.session(session, pc=True)
    args = {"x": 10, "y": 10}
    assert service.authorize(agent, "click", pc, args=args).allowed
    tool = _us(time_ms(lambda: service.authorize(agent, "click", pc, args=args), runs))

    pool = service.pool("pool-0")
    assert service.authorize(agent, "acquire", pool).allowed
    acquire = _us(
        time_ms(lambda: service.authorize(agent, "acquire", service.pool("pool-0")), runs)
    )

    # The engine alone, on the snapshot authorize() uses.
    snap = service._current()
    entities = service._entities(snap, pc)
    principal = snap.view.principal(agent.id)
    assert principal is not None
    from corral.access import RequestFacts, build_context, tool_args

    ctx = build_context(
        risk=snap.view.agents[agent.id].risk,
        facts=RequestFacts(),
        args=tool_args("click", args),
    )
    engine = service.engine
    engine_only = _us(
        time_ms(
            lambda: engine.decide(snap.policies, principal, "click", pc.ref, ctx, entities), runs
        )
    )
    wide = engine.compile([*_all_apply(POLICIES), *SYSTEM_POLICIES], version="wide")
    assert len(wide.for_action("click")) >= POLICIES
    worst = _us(
        time_ms(lambda: engine.decide(wide, principal, "click", pc.ref, ctx, entities), runs)
    )
    single = cedarpy.PolicySet.from_str("permit (principal, action, resource);")
    request = {
        "principal": principal.to_json(),
        "action": {"type": "Action", "id": "click"},
        "resource": pc.ref.to_json(),
        "context": ctx,
    }
    floor = _us(time_ms(lambda: cedarpy.is_authorized(request, single, entities), runs))

    changes = max(20, runs // 50)

    def change() -> None:
        store.add_policy(
            "bench-churn", "permit (principal, action, resource);", actor="bench", replace=True
        )

    def first() -> None:
        service.authorize(agent, "click", pc, args=args)

    change()
    after_change = _us(time_ms(first, changes, between=change))
    store.close()

    def within(med: float, p95: float, floor_med: float | None) -> bool:
        return med <= TARGET_US

    return [
        summarize(
            f"authorize(), tool call, {POLICIES} policies",
            tool,
            unit="us",
            floor=floor,
            target=f"p50 <= {TARGET_US} us",
            ok=within,
        ),
        summarize(
            "authorize(), acquire (reads pool)", acquire, unit="us", floor=floor, target="info only"
        ),
        summarize(
            f"engine only, {POLICIES} policies",
            engine_only,
            unit="us",
            floor=floor,
            target="info only",
        ),
        summarize(
            f"engine only, {POLICIES} policies all in scope",
            worst,
            unit="us",
            floor=floor,
            target="info only",
        ),
        summarize(
            "first decision after a policy change", after_change, unit="us", target="info only"
        ),
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="corral-bench-policy-") as folder:
        rows = _rows(Path(folder), RUNS)
    print(render(rows))
    print("floor: one Cedar call, one `permit` policy, same entities and context")
    return 0 if all(r.verdict != "MISS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
