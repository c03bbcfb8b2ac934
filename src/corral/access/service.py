"""The policy service: `authorize`, the one enforcement function, and the admin operations on
policies, pool assignments and sponsor approvals.

Every adapter path that touches a pool, a session, a PC or an administered collection asks
`authorize(caller, action, target, ...)` (or `require`, which raises). It reads two counters from
the store on every call (the directory and policy-set versions, one query) and re-reads what
changed, so a risk change, a new policy or a group membership counts on the very next request.
Everything else is reused: the parsed policy set (sliced per action), the directory's entities,
each session's entities and its controls.

Steps of a decision (see docs/policies.md):
1. The server's own calls (SYSTEM) are allowed; nothing else is implied.
2. The caller must be a known user or agent of the directory.
3. A session token reaches only its own session: its PC's tools, reading and releasing it.
4. Cedar decides on the policy set with the request's context (risk, time, client address,
   token binding, PC compliance, session controls, tool arguments). Default deny; any error
   denies.
5. A denial that only a sponsor's approval would lift becomes a pending approval request (agents
   only); an approved, unexpired approval of the same request shape lets it through.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import cedarpy

from corral.access import (
    DEFAULT_POLICIES,
    SYSTEM_POLICIES,
    CompiledPolicies,
    Compliance,
    Controls,
    Decision,
    DirectoryView,
    EntityRef,
    NamedPolicy,
    PolicyEngine,
    PolicyError,
    PoolAssignments,
    RequestFacts,
    ToolAction,
    approval_preview,
    build_context,
    directory_records,
    pool_record,
    reads_program,
    request_digest,
    session_records,
    tool_args,
    validate_policy_name,
)
from corral.access.decisions import note_decision
from corral.access.rewrite import Rewritten, rewrite_names
from corral.access.schema import SESSION_ACTIONS
from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Risk, Role
from corral.domain.models import Pool, Session
from corral.domain.policy import (
    Approval,
    ApprovalState,
    PolicyChange,
    PoolAssignment,
    StoredPolicy,
)
from corral.errors import (
    ApprovalPendingError,
    CorralError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from corral.lifecycle.tools import TOOLS, parse_args
from corral.store import Store

__all__ = ["PolicyService", "Target", "denial_hint", "tool_actions"]

log = logging.getLogger("corral.policy")

SYSTEM_PREFIX = "system-"
APPROVAL_WAIT_S = 15 * 60  # how long a sponsor has to answer
APPROVAL_VALID_S = 15 * 60  # how long an answer stands (unless a policy says otherwise)
APPROVAL_MAX_USES = 1000  # @approval_uses("N") at most
APPROVAL_MAX_WINDOW_S = 24 * 3600  # @approval_window("SECONDS") at most
_CACHE = 2048


def tool_actions() -> list[ToolAction]:
    """The tool catalogue as policy actions (the schema is built from it)."""
    return [ToolAction(t.name, t.input_tool) for t in TOOLS.values()]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def caller_record(caller: Caller) -> tuple[EntityRef, dict[str, Any]]:
    """An entity for a caller the directory has no record of, from what authenticated it."""
    if caller.kind is CallerKind.AGENT:
        ref = EntityRef("Agent", caller.id)
        attrs: dict[str, Any] = {
            "enabled": True,
            "risk": Risk.NONE.value,
            "risk_score": 0,
            "groups": [],
            "sponsors": [],
        }
        return ref, {"uid": ref.to_json(), "attrs": attrs, "parents": []}
    # The host operator (CallerKind.OPERATOR) is a User with no roles and no groups: the
    # system policy `system-host-operator-administers` names it by its fixed id.
    ref = EntityRef("User", caller.id)
    roles = [{"type": "Role", "id": r.value} for r in sorted(caller.roles)]
    return ref, {"uid": ref.to_json(), "attrs": {"enabled": True, "groups": []}, "parents": roles}


@dataclass(frozen=True)
class Target:
    """What a request is about: the Cedar resource, and either the entity records describing
    it or the session it belongs to (whose entities, controls and token scope then apply)."""

    ref: EntityRef
    records: tuple[Mapping[str, Any], ...] = ()
    session: Session | None = None


@dataclass(frozen=True)
class _Snapshot:
    """What one directory version and one policy version give: reused until either moves."""

    versions: tuple[int, int]
    view: DirectoryView
    entities: cedarpy.Entities
    policies: CompiledPolicies
    load_error: str | None = None
    #: some policy reads the program of a command (the context's `program_rules`)
    program_rules: bool = False


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


def _positive(name: str, value: str, most: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if not 1 <= number <= most:
        raise InvalidInputError(
            f"@{name}({value!r}) is not a whole number from 1 to {most}",
            hint=f'write e.g. @{name}("{min(most, 3)}")',
        )
    return number


def approval_terms(
    annotations: Iterable[Mapping[str, str]], default_window_s: int
) -> tuple[int | None, int]:
    """(uses, window in seconds) of an approval the forbids with these annotations ask for.

    Single use, standing `default_window_s` after the answer, unless the policies say:
    `@approval_uses("N")` lets N identical requests through; `@approval_window("S")` makes
    the answer stand S seconds, and alone (no use count) lets any number through within them.
    Several forbids: the strictest of each."""
    uses: list[int] = []
    windows: list[int] = []
    for found in annotations:
        if "approval_uses" in found:
            uses.append(_positive("approval_uses", found["approval_uses"], APPROVAL_MAX_USES))
        if "approval_window" in found:
            windows.append(
                _positive("approval_window", found["approval_window"], APPROVAL_MAX_WINDOW_S)
            )
    window = min(windows) if windows else default_window_s
    if uses:
        return min(uses), window
    return (None if windows else 1), window


def _canonical_args(action: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """A tool's arguments as the tool runs them (validated, defaults filled in): what an
    approval covers, whatever order or defaults the caller sent."""
    if action in TOOLS:
        try:
            return dict(parse_args(action, dict(args or {}))[1].model_dump(mode="json"))
        except CorralError:
            pass
    return dict(args or {})


def denial_hint(decision: Decision, controls: Controls | None) -> str | None:
    """What to change after a denial a caller cannot lift by retrying: a sponsor's refusal, or
    a control its session was acquired with (they hold for the session's whole life)."""
    if decision.approval_state == ApprovalState.DENIED.value:
        return (
            "a sponsor refused this exact request; asking again gets the same answer until it "
            "expires: do something else, or ask a sponsor"
        )
    found = set(decision.policies)
    if "system-session-read-only" in found:
        return (
            "this session is read-only (fixed when it was acquired): screenshots and reads "
            "work, input tools, run_command, write_file and set_clipboard do not"
        )
    if "system-session-allowed-hosts" in found:
        hosts = ", ".join(controls.allowed_hosts or ()) if controls else ""
        return f"this session may open only these hosts: {hosts or '(none)'}"
    if "system-session-no-clipboard" in found:
        return "this session has no clipboard (fixed when it was acquired)"
    if "system-session-no-file-transfer" in found:
        return "this session may not read or write files (fixed when it was acquired)"
    if "system-session-controls-hold" in found:
        return (
            "this session has no_clipboard, no_file_transfer or allowed_hosts (fixed when it was "
            "acquired); run_command and launch_app with arguments could step around them, so "
            "they are refused unless the pool's permit says "
            '@allow_alongside("run_command launch_app")'
        )
    if "system-program-rules-need-argv" in found:
        return (
            "a policy restricts which programs run, and a shell (or a program that runs others, "
            "such as env, xargs or python3) would decide what really runs: call run_command "
            'with argv naming the program itself, e.g. {"argv": ["ls", "-l"]}'
        )
    if "system-open-url-web-schemes" in found:
        return (
            "open_url opens http and https URLs only (another scheme needs the pool's permit "
            'to say @allow_schemes("file")); check the URL is complete, e.g. https://host/'
        )
    return None


class PolicyService:
    """Thread-safe: snapshots are immutable and swapped whole; caches are guarded by a lock."""

    def __init__(
        self,
        store: Store,
        *,
        tools: Iterable[ToolAction] | None = None,
        approval_wait: timedelta = timedelta(seconds=APPROVAL_WAIT_S),
        approval_valid: timedelta = timedelta(seconds=APPROVAL_VALID_S),
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.engine = PolicyEngine(tool_actions() if tools is None else tools)
        self.approval_wait = approval_wait
        self.approval_valid = approval_valid
        self.now = now
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self._session_entities = _Lru(_CACHE)  # (directory version, session id) -> Entities
        self._controls = _Lru(_CACHE * 4)  # session id -> Controls (fixed at acquire)

    def start(self) -> bool:
        """Install the shipped policies if they never were (first start); True if it did."""
        return self.store.seed_policies(
            [(p.name, p.text) for p in DEFAULT_POLICIES], actor=CallerKind.SYSTEM.value
        )

    # -- what decisions are made on ------------------------------------------------------------
    def _current(self) -> _Snapshot:
        """The snapshot for the store's versions now (one read); rebuilt only what moved."""
        versions = self.store.access_versions()
        snap = self._snapshot
        if snap is not None and snap.versions == versions:
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and snap.versions == versions:
                return snap
            if snap is None or snap.versions[0] != versions[0]:
                view = DirectoryView.of(
                    self.store.list_users(), self.store.list_agents(), self.store.list_groups()
                )
                entities = self.engine.entities(directory_records(view))
            else:
                view, entities = snap.view, snap.entities
            if snap is None or snap.versions[1] != versions[1]:
                policies, error = self._compile(versions[1])
                program_rules = reads_program(policies.statements.values())
            else:
                policies, error = snap.policies, snap.load_error
                program_rules = snap.program_rules
            self._snapshot = _Snapshot(versions, view, entities, policies, error, program_rules)
            return self._snapshot

    def _compile(self, version: int) -> tuple[CompiledPolicies, str | None]:
        """The enabled stored policies plus the system ones. A stored policy that no longer
        validates (say after an upgrade renamed a tool) fails closed: only the system policies
        apply (which let admins read and fix policies) until it is fixed."""
        stored = [NamedPolicy(p.name, p.text) for p in self.store.list_policies() if p.enabled]
        try:
            return self.engine.compile([*stored, *SYSTEM_POLICIES], version), None
        except PolicyError as exc:
            log.error("policy set %s is invalid, only system policies apply: %s", version, exc)
            return self.engine.compile(SYSTEM_POLICIES, version), str(exc)

    def _entities(
        self, snap: _Snapshot, target: Target, extra: Sequence[Mapping[str, Any]] = ()
    ) -> cedarpy.Entities:
        """The directory's entities plus the target's: a session's (and its PC's) are built
        from the same snapshot and reused for the session's life within a directory version.
        `extra` records (a caller the directory does not describe) are never cached."""
        if target.session is None:
            return self.engine.extend(snap.entities, [*target.records, *extra])
        key = (snap.versions[0], target.session.id)
        with self._lock:
            found = self._session_entities.get(key)
        if found is None or extra:
            session = target.session
            owner = snap.view.principal(session.owner) if session.owner else None
            agent = snap.view.agents.get(session.owner or "")
            sponsors = snap.view.sponsor_ids(agent) if agent else []
            records = session_records(session, owner, sponsors)
            if extra:
                return self.engine.extend(snap.entities, [*records, *extra])
            found = self.engine.extend(snap.entities, records)
            with self._lock:
                self._session_entities.put(key, found)
        return found

    # -- targets -------------------------------------------------------------------------------
    def pool(self, name: str, pool: Pool | None = None) -> Target:
        """An existing pool with its assignments (read now; `pool` if the caller just read
        it); a bare entity if there is none."""
        try:
            pool = pool if pool is not None and pool.name == name else self.store.get_pool(name)
        except NotFoundError:
            return Target(EntityRef("Pool", name))
        found = self.store.pool_assignments(name)
        assigned = PoolAssignments(
            agents=tuple(a.agent_id for a in found if a.agent_id),
            groups=tuple(a.group_id for a in found if a.group_id),
        )
        return Target(EntityRef("Pool", name), (pool_record(pool, assigned),))

    @staticmethod
    def session(session: Session, *, pc: bool = False) -> Target:
        """The session (or, with `pc`, its PC: what the tools act on); no store read."""
        ref = EntityRef("PC", session.pc_id) if pc else EntityRef("Session", session.id)
        return Target(ref, session=session)

    @staticmethod
    def collection(kind: Literal["Directory", "Policy", "AuditLog", "Image"], name: str) -> Target:
        return Target(EntityRef(kind, name))

    @staticmethod
    def _agent_target(agent_id: str) -> Target:
        return Target(EntityRef("Agent", agent_id))

    # -- the one enforcement function ----------------------------------------------------------
    def authorize(
        self,
        caller: Caller | None,
        action: str,
        target: Target,
        *,
        facts: RequestFacts | None = None,
        args: Mapping[str, Any] | None = None,
        compliance: Compliance | None = None,
    ) -> Decision:
        """May `caller` do `action` on `target` now? Never raises: a failure is a denial.
        The decision is noted on the Gate call being served (`corral.access.decisions`)."""
        try:
            decision = self._authorize(caller, action, target, facts, args, compliance)
        except Exception as exc:  # fail closed, whatever broke
            log.exception("authorize failed for %s on %s", action, target.ref)
            decision = Decision(False, errors=(f"authorization failed: {exc}",))
        note_decision(action, str(target.ref), decision)
        return decision

    def _authorize(
        self,
        caller: Caller | None,
        action: str,
        target: Target,
        facts: RequestFacts | None,
        args: Mapping[str, Any] | None,
        compliance: Compliance | None,
    ) -> Decision:
        # 1. The server's own calls (eviction, shutdown, default pools) need no policy.
        if caller is not None and caller.kind is CallerKind.SYSTEM:
            return Decision(True, ("system",))
        if caller is None:
            return Decision(False, errors=("no authenticated principal",))
        # 2. The caller as the directory describes it (groups, sponsors, risk). One the directory
        #    does not know (only the server's own code makes such a Caller) is described by its
        #    authenticated kind and roles alone: no groups, no assignments, no sponsorships.
        snap = self._current()
        principal = snap.view.principal(caller.id)
        extra: list[dict[str, Any]] = []
        if principal is None:
            principal, record = caller_record(caller)
            extra.append(record)
        # 3. A session token: its own session only, and only what a session does.
        if caller.session_id is not None and (
            target.session is None
            or target.session.id != caller.session_id
            or not (action in TOOLS or action in SESSION_ACTIONS)
        ):
            return Decision(False, errors=("a session token reaches only its own session",))
        # 4. Cedar, with the request's context.
        facts = facts or RequestFacts(
            now=self.now(),
            client_ip=caller.address,
            binding="dpop" if caller.jkt else "bearer",
            session_token=caller.session_id is not None,
        )
        agent = snap.view.agents.get(caller.id)
        risk = agent.risk if agent else Risk.NONE
        controls = self.controls(target.session.id) if target.session is not None else None
        if controls is not None and not controls.any:
            controls = None  # no control set: `context has controls` is false
        context_args = tool_args(action, args) if action in TOOLS else None
        entities = self._entities(snap, target, extra)

        def decide(approved: bool) -> Decision:
            context = build_context(
                risk=risk,
                facts=facts,
                approved=approved,
                pc=compliance,
                controls=controls,
                args=context_args,
                program_rules=snap.program_rules,
            )
            return self.engine.decide(
                snap.policies, principal, action, target.ref, context, entities
            )

        decision = decide(False)
        if snap.load_error:
            decision = replace(decision, errors=(*decision.errors, snap.load_error))
        # 5. Held for a sponsor: only if approving would change the answer.
        if decision.allowed or not decision.forbidden or decision.errors or agent is None:
            return decision
        with_approval = decide(True)
        if not with_approval.allowed:
            return decision
        return self._approval(
            snap,
            agent.id,
            principal,
            action,
            target,
            args,
            context_args,
            facts.now,
            decision,
            with_approval,
        )

    def _approval(
        self,
        snap: _Snapshot,
        agent_id: str,
        principal: EntityRef,
        action: str,
        target: Target,
        args: Mapping[str, Any] | None,
        policy_args: Mapping[str, Any] | None,
        now: datetime,
        held: Decision,
        approved: Decision,
    ) -> Decision:
        """The answer to a request only a sponsor's approval would allow (`held` now,
        `approved` with the approval):
        1. The approval covers this exact request: principal, action, resource and every
           argument in canonical form (content by hash; `request_digest`).
        2. An approved one that has uses left lets it through and counts the use (a
           conditional update: two requests racing for the last use do not both win).
        3. Else a pending (or denied) one of the same request answers; none: a new pending
           one is recorded with what the sponsor reads (`approval_preview`) and the terms the
           holding forbids set (single use by default)."""
        canonical = _canonical_args(action, args)
        digest = request_digest(principal, action, target.ref, canonical)
        found = self.store.approval_for(agent_id, digest, now)
        if found is not None and found.state is ApprovalState.APPROVED:
            if self.store.use_approval(found.id, now):
                return replace(approved, approval_id=found.id, approval_state=found.state.value)
            found = None  # its last use went to another request: ask again
        if found is None:
            found = self._new_approval(
                snap, agent_id, principal, action, target, canonical, policy_args, now, held
            )
        return replace(held, approval_id=found.id, approval_state=found.state.value)

    def _new_approval(
        self,
        snap: _Snapshot,
        agent_id: str,
        principal: EntityRef,
        action: str,
        target: Target,
        canonical: Mapping[str, Any],
        policy_args: Mapping[str, Any] | None,
        now: datetime,
        held: Decision,
    ) -> Approval:
        default_window = int(self.approval_valid.total_seconds())
        try:
            max_uses, window_s = approval_terms(
                (snap.policies.annotations.get(pid, {}) for pid in held.policies), default_window
            )
        except InvalidInputError:  # a bad annotation (stored before it was checked): strictest
            max_uses, window_s = 1, default_window
        found = self.store.create_approval(
            Approval(
                id=f"ap-{secrets.token_hex(8)}",
                agent_id=agent_id,
                session_id=target.session.id if target.session else None,
                action=action,
                resource=str(target.ref),
                digest=request_digest(principal, action, target.ref, canonical),
                detail=approval_preview(action, canonical, policy_args),
                state=ApprovalState.PENDING,
                requested_at=now,
                expires_at=now + self.approval_wait,
                policies=held.policies,
                max_uses=max_uses,
                window_s=window_s,
            )
        )
        log.info("approval %s requested by %s for %s", found.id, principal, action)
        return found

    def require(
        self,
        caller: Caller | None,
        action: str,
        target: Target,
        *,
        deny: Callable[[Decision], CorralError] | None = None,
        facts: RequestFacts | None = None,
        args: Mapping[str, Any] | None = None,
        compliance: Compliance | None = None,
    ) -> Decision:
        """`authorize`, raising on a denial: ApprovalPendingError while a sponsor has to answer,
        else `deny(decision)` if given (say a 404 that does not reveal a session), else
        PermissionDeniedError with the reason."""
        decision = self.authorize(
            caller, action, target, facts=facts, args=args, compliance=compliance
        )
        if decision.allowed:
            return decision
        if decision.approval_state == ApprovalState.PENDING.value:
            raise ApprovalPendingError(
                f"{action} on {target.ref} waits for a sponsor's approval "
                f"(approval {decision.approval_id})",
                hint=f"one of your sponsors answers with `corral approvals approve "
                f"{decision.approval_id}` (or deny) within "
                f"{int(self.approval_wait.total_seconds() // 60)} minutes; then call again "
                "with the same arguments (the approval covers that one request)",
                approval_id=decision.approval_id or "",
            )
        if deny is not None:
            raise deny(decision)
        controls = self.controls(target.session.id) if target.session is not None else None
        raise PermissionDeniedError(
            f"{action} on {target.ref} is not allowed: {decision.reason}",
            hint=denial_hint(decision, controls),
        )

    async def wait_for_approval(self, approval_id: str, timeout_s: float) -> Approval:
        """Poll until the approval is answered or expires, at most `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            found = await asyncio.to_thread(self.store.get_approval, approval_id)
            if found.state is not ApprovalState.PENDING or loop.time() >= deadline:
                return found
            await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))

    # -- session controls ----------------------------------------------------------------------
    def acquire_controls(self, decision: Decision, requested: Controls | None = None) -> Controls:
        """The controls a new session gets: those of every permit that allowed the acquire
        (`@controls`, `@allowed_hosts`) plus what the caller asked for; restrictions add up."""
        policies = self._current().policies
        controls = requested or Controls()
        for pid in decision.policies:
            if policies.effects.get(pid) == "permit":
                controls = controls.merge(Controls.from_annotations(policies.annotations[pid]))
        return controls

    def fix_controls(self, session_id: str, controls: Controls) -> Controls:
        """Record a new session's controls; they hold for its whole life (a replayed acquire
        keeps those of the first). Returns the controls in force."""
        fixed = Controls.from_json(
            self.store.set_session_controls(session_id, controls.to_json()), stored=True
        )
        with self._lock:
            self._controls.put(session_id, fixed)
        return fixed

    def controls(self, session_id: str) -> Controls:
        with self._lock:
            found = self._controls.get(session_id)
        if found is None:
            found = Controls.from_json(self.store.session_controls(session_id), stored=True)
            with self._lock:
                self._controls.put(session_id, found)
        return found

    # -- admin: policies -----------------------------------------------------------------------
    def _admin(self, caller: Caller | None, action: str, target: Target) -> Caller:
        self.require(caller, action, target)
        assert caller is not None  # require refuses None
        return caller

    def validate(self, name: str, text: str) -> None:
        """Refuse (PolicyError, Cedar's message) a policy that would not validate."""
        validate_policy_name(name)
        if name.startswith(SYSTEM_PREFIX):
            raise InvalidInputError(
                f"policy names starting with {SYSTEM_PREFIX!r} are reserved for system policies",
                hint="choose another name",
            )
        parsed = self.engine.parse(NamedPolicy(name, text))
        for est in parsed.values():  # @controls, @allowed_hosts, @allow_* must be usable
            Controls.from_annotations(
                {str(k): str(v) for k, v in est.get("annotations", {}).items()}
            )
        default = int(self.approval_valid.total_seconds())
        for statement in parsed.values():  # approval terms must make sense before they count
            approval_terms([statement.get("annotations") or {}], default)

    def list_policies(self, *, principal: Caller | None) -> list[StoredPolicy]:
        self._admin(principal, "read_policies", self.collection("Policy", "all"))
        return self.store.list_policies()

    @staticmethod
    def system_policies() -> tuple[NamedPolicy, ...]:
        return SYSTEM_POLICIES

    def get_policy(self, name: str, *, principal: Caller | None) -> StoredPolicy:
        self._admin(principal, "read_policies", self.collection("Policy", name))
        return self.store.get_policy(name)

    def add_policy(
        self, name: str, text: str, *, principal: Caller | None, replace: bool = False
    ) -> StoredPolicy:
        return self.add_policy_explained(name, text, principal=principal, replace=replace)[0]

    def add_policy_explained(
        self, name: str, text: str, *, principal: Caller | None, replace: bool = False
    ) -> tuple[StoredPolicy, Rewritten]:
        """Add (or replace) a policy; users, agents and groups it names by name are stored by
        their ids (the notes say which), and entities that match nothing are warned about."""
        who = self._admin(principal, "manage_policies", self.collection("Policy", name))
        self.validate(name, text)
        rewritten = self.rewrite(text)
        added = self.store.add_policy(name, rewritten.text, actor=who.id, replace=replace)
        log.info("policy %s %s by %s", name, "replaced" if replace else "added", who.id)
        return added, rewritten

    def rewrite(self, text: str) -> Rewritten:
        """`text` naming directory entities by id; what was renamed and what matches nothing
        (users, agents, groups, pools and roles)."""
        snap = self._current()
        others = {
            "Pool": {p.name for p in self.store.list_pools()},
            "Role": {r.value for r in Role},
        }
        return rewrite_names(text, snap.view.names(), others)

    def remove_policy(self, name: str, *, principal: Caller | None) -> StoredPolicy:
        who = self._admin(principal, "manage_policies", self.collection("Policy", name))
        removed = self.store.remove_policy(name, actor=who.id)
        log.info("policy %s removed by %s", name, who.id)
        return removed

    def set_policy_enabled(
        self, name: str, enabled: bool, *, principal: Caller | None
    ) -> StoredPolicy:
        who = self._admin(principal, "manage_policies", self.collection("Policy", name))
        return self.store.set_policy_enabled(name, enabled, actor=who.id)

    def changes(self, *, principal: Caller | None, since: int = 0) -> list[PolicyChange]:
        self._admin(principal, "read_policies", self.collection("Policy", "all"))
        return self.store.policy_changes(since=since)

    def test(
        self,
        principal: EntityRef,
        action: str,
        resource: EntityRef,
        context: Mapping[str, Any] | None = None,
        *,
        caller: Caller | None,
    ) -> Decision:
        """What the current policies answer to this request, and why: for trying policies out.

        Entities come from the directory and the store as for a real request; `context` holds
        context attributes to set (the rest take the principal's risk, the time now, a DPoP
        token); `client_ip` may be given as a plain address.
        """
        self._admin(caller, "read_policies", self.collection("Policy", "all"))
        snap = self._current()
        # The principal (and an Agent resource) as enforcement sees it: the entity of its id,
        # whether written by id or by its name.
        names = snap.view.names()
        principal = names.resolve(principal) or principal
        resource = names.resolve(resource) or resource
        target = self._target_for_test(resource)
        agent = snap.view.agents.get(principal.id) if principal.type == "Agent" else None
        ctx = build_context(
            risk=agent.risk if agent else Risk.NONE,
            facts=RequestFacts(self.now()),
            program_rules=snap.program_rules,
        )
        overrides = dict(context or {})
        if isinstance(overrides.get("client_ip"), str):
            overrides["client_ip"] = {"__extn": {"fn": "ip", "arg": overrides["client_ip"]}}
        ctx.update(overrides)
        decision = self.engine.decide(
            snap.policies,
            principal,
            action,
            target.ref,
            ctx,
            self._entities(snap, target),
            strict=True,
        )
        if snap.load_error:
            decision = replace(decision, errors=(*decision.errors, snap.load_error))
        return decision

    def _target_for_test(self, ref: EntityRef) -> Target:
        if ref.type == "Pool":
            return self.pool(ref.id)
        try:
            if ref.type == "Session":
                return self.session(self.store.get_session(ref.id))
            if ref.type == "PC":
                pc = self.store.get_pc(ref.id)
                if pc.session_id:
                    return self.session(self.store.get_session(pc.session_id), pc=True)
        except NotFoundError:
            pass
        return Target(ref)

    # -- admin: pool assignments ---------------------------------------------------------------
    def assign_pool(
        self,
        pool: str,
        *,
        agent: str | None = None,
        group: str | None = None,
        present: bool = True,
        principal: Caller | None,
    ) -> bool:
        """Assign (or with `present=False` unassign) `pool` to an agent or a group; False if
        nothing changed."""
        if (agent is None) == (group is None):
            raise InvalidInputError("name exactly one of an agent or a group")
        who = self._admin(principal, "assign_pool", self.pool(pool))
        kind: Literal["agent", "group"] = "agent" if agent is not None else "group"
        ref = agent if agent is not None else group
        assert ref is not None
        if present:
            return self.store.assign_pool(pool, kind, ref, actor=who.id)
        return self.store.unassign_pool(pool, kind, ref, actor=who.id)

    def pool_assignments(
        self, pool: str | None = None, *, principal: Caller | None
    ) -> list[PoolAssignment]:
        # Decided before the pool is looked up: who may not inspect pools does not learn which
        # exist either.
        self._admin(principal, "inspect_pool", self.pool(pool) if pool else self.pool("*"))
        if pool is not None:
            self.store.get_pool(pool)
        return self.store.pool_assignments(pool)

    # -- approvals -----------------------------------------------------------------------------
    def list_approvals(
        self, *, principal: Caller | None, state: ApprovalState | None = None
    ) -> list[Approval]:
        """The approvals `principal` may answer (its agents', or all for an admin)."""
        if principal is None:
            raise PermissionDeniedError("no authenticated principal for this request")
        self.store.expire_approvals(self.now())
        found = self.store.list_approvals(state=state)
        allowed: dict[str, bool] = {}
        for approval in found:
            if approval.agent_id not in allowed:
                target = self._agent_target(approval.agent_id)
                allowed[approval.agent_id] = self.authorize(principal, "approve", target).allowed
        return [a for a in found if allowed[a.agent_id]]

    def decide_approval(
        self, approval_id: str, *, approve: bool, principal: Caller | None
    ) -> Approval:
        """A sponsor (or admin) approves or denies a pending request of its agent."""
        found = self.store.get_approval(approval_id)
        target = self._agent_target(found.agent_id)
        who = self._admin(principal, "approve", target)
        decided = self.store.decide_approval(
            approval_id, approve=approve, by=who.id, now=self.now()
        )
        log.info("approval %s %s by %s", approval_id, decided.state.value, who.id)
        return decided
