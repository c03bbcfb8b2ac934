"""The store: pools, PCs and sessions on SQLite or PostgreSQL.

`Store.transaction()` is the unit of work (several repositories, one transaction); every other
method is a thin wrapper that opens one and calls one repository method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from corral.config import paths
from corral.domain.access import PrincipalStatus
from corral.domain.events import OutboxEntry, SsfReceiver
from corral.domain.federation import FederatedSubject, OidcProvider, PrincipalKind
from corral.domain.identity import Agent, AgentKey, Group, Risk, Role, User, UserSecrets
from corral.domain.models import PC, PCState, Pool, PoolSpec, Session
from corral.domain.policy import Approval, ApprovalState, PolicyChange, PoolAssignment, StoredPolicy
from corral.errors import ConflictError
from corral.store import _secrets
from corral.store._engine import default_url, make_engine
from corral.store._hot import HotReads
from corral.store._migrate import migrate
from corral.store._secrets import StoreKeys
from corral.store._uow import UnitOfWork, check_no_open_unit_of_work, unit_of_work

__all__ = ["KeyRotation", "Store"]

T = TypeVar("T")
_ACQUIRE_ATTEMPTS = 5


@dataclass(frozen=True)
class KeyRotation:
    new_key: str
    resealed: int  # stored secrets sealed again with the new key
    retired: list[str]  # old keys dropped from the key file


class Store:
    """Thread-safe: every unit of work (and so every method) runs on its own pooled
    connection, so one `Store` is shared by all threads.

    Secrets (TOTP seeds, OIDC client secrets, push authorization headers) are sealed with the
    keys in `key_file` (default `<data dir>/secrets.key`, created 0600 on first start).
    """

    def __init__(self, url: str | None = None, *, key_file: Path | None = None) -> None:
        self.url = url or default_url()
        self.dialect = make_url(self.url).get_backend_name()
        self._engine = make_engine(self.url)
        self._hot = HotReads(self._engine)
        self.keys = StoreKeys(key_file or paths().data / "secrets.key")

    def transaction(self, *, write: bool = True) -> AbstractContextManager[UnitOfWork]:
        """A unit of work: its repositories (`uow.pools`, `uow.sessions`, `uow.policies`, ...)
        share one transaction, committed when the block ends normally and rolled back when
        an exception leaves it. `write=False` for reads only (on SQLite it then takes no write
        lock; a write through it is refused). One at a time per thread or task: opening
        another, or calling a Store method, inside it raises `UnitOfWorkError`.

            with store.transaction() as uow:
                got = uow.sessions.acquire(pool, ...)
                if got is not None:
                    uow.policies.set_session_controls(got[0].id, controls)
        """
        return unit_of_work(self._engine, self.keys, database=self.url, write=write)

    def _reading(self) -> AbstractContextManager[UnitOfWork]:
        return unit_of_work(self._engine, self.keys, database=self.url, write=False)

    def migrate(self) -> None:
        """Upgrade the schema, then seal any plaintext secret an older version left (and
        refuse to go on if sealed ones name a key the key file lacks): every start runs it."""
        check_no_open_unit_of_work(self.url)
        migrate(self._engine)
        with self.transaction() as uow:
            sealed = uow.secrets.seal_on_start()
        if sealed:
            _secrets.scrub(self._engine)

    def rotate_secrets_key(self, *, keep_old: bool = False) -> KeyRotation:
        """1. Add a new key to the key file (it seals from now on, in every process: they
        re-read the file when it changes); 2. reseal every stored secret with it in one
        transaction; 3. unless `keep_old`, drop the old keys no stored value names any more."""
        new_key = self.keys.add_key()
        with self.transaction() as uow:
            resealed = uow.secrets.reseal_all()
        _secrets.scrub(self._engine)
        retired: list[str] = []
        if not keep_old:
            with self._reading() as uow:
                in_use = set(uow.secrets.key_ids_in_use())
            retired = self.keys.retire(in_use)
        return KeyRotation(new_key, resealed, retired)

    def close(self) -> None:
        self._engine.dispose()

    def _read(self, fn: Callable[[Connection], T]) -> T:
        """`fn` on the connection of a read-only unit of work (for store code that has no
        repository method yet; prefer one)."""
        with self._reading() as uow:
            return fn(uow.connection)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """`fn` on the connection of a writing unit of work (as `_read`)."""
        with self.transaction() as uow:
            return fn(uow.connection)

    def _write_unique(self, fn: Callable[[Connection], T], conflict: ConflictError) -> T:
        """`_write`, a unique-name race read as `conflict` (repositories use `_unique`)."""
        try:
            return self._write(fn)
        except IntegrityError as e:
            raise conflict from e

    # pools

    def create_pool(self, spec: PoolSpec) -> Pool:
        with self.transaction() as uow:
            return uow.pools.create(spec)

    def get_pool(self, name: str) -> Pool:
        with self._reading() as uow:
            return uow.pools.get(name)

    def list_pools(self) -> list[Pool]:
        with self._reading() as uow:
            return uow.pools.list()

    def set_pool_deleting(self, name: str) -> Pool:
        with self.transaction() as uow:
            return uow.pools.set_deleting(name)

    def delete_pool(self, name: str) -> None:
        with self.transaction() as uow:
            uow.pools.delete(name)

    # PCs

    def add_pc(self, pool: str, pc_id: str, state: PCState = PCState.BOOTING) -> PC:
        with self.transaction() as uow:
            return uow.pcs.add(pool, pc_id, state)

    def get_pc(self, pc_id: str) -> PC:
        with self._reading() as uow:
            return uow.pcs.get(pc_id)

    def list_pcs(self, pool: str | None = None, state: PCState | None = None) -> list[PC]:
        with self._reading() as uow:
            return uow.pcs.list(pool, state)

    def set_pc_state(
        self, pc_id: str, state: PCState, *, expect: PCState | None = None, detail: str = ""
    ) -> bool:
        with self.transaction() as uow:
            return uow.pcs.set_state(pc_id, state, expect=expect, detail=detail)

    def delete_pc(self, pc_id: str) -> None:
        with self.transaction() as uow:
            uow.pcs.delete(pc_id)

    def pc_counts(self, pool: str) -> dict[PCState, int]:
        with self._reading() as uow:
            return uow.pcs.counts(pool)

    # sessions

    def acquire(
        self,
        pool: str,
        *,
        session_id: str,
        expires_at: datetime,
        idempotency_key: str | None,
        request_hash: str,
        now: datetime,
        owner: str | None = None,
        controls: dict[str, object] | None = None,
        limit_owner: bool = False,
        then: Callable[[UnitOfWork, Session], None] | None = None,
    ) -> tuple[Session, bool] | None:
        """Bind a READY PC to a new session, replay an idempotent retry, or None if no PC is
        READY. A new session's `controls` are recorded in the same transaction, so it never
        exists without them; so are the writes of `then(uow, session)`, called for a new
        session only (it raising undoes the acquire). `limit_owner`: hold `owner` to the
        pool's per-agent limit (SessionLimitError past it), counted in the same transaction.
        A unique-constraint race (same key, or a PC claimed twice) is retried in a new unit of
        work: the retry sees the winner's commit and answers with its session."""
        attempt = 1
        while True:
            try:
                with self.transaction() as uow:
                    got = uow.sessions.acquire(
                        pool,
                        session_id=session_id,
                        expires_at=expires_at,
                        idempotency_key=idempotency_key,
                        request_hash=request_hash,
                        now=now,
                        owner=owner,
                        controls=controls,
                        limit_owner=limit_owner,
                    )
                    if then is not None and got is not None and got[1]:
                        then(uow, got[0])
                    return got
            except IntegrityError as e:
                if attempt == _ACQUIRE_ATTEMPTS:
                    raise ConflictError(
                        f"could not record session {session_id!r}: {e.orig}",
                        hint="retry with a new session id",
                    ) from e
                attempt += 1

    def get_session(self, session_id: str) -> Session:
        with self._reading() as uow:
            return uow.sessions.get(session_id)

    def list_sessions(
        self, *, active_only: bool = False, pool: str | None = None, owner: str | None = None
    ) -> list[Session]:
        with self._reading() as uow:
            return uow.sessions.list(active_only=active_only, pool=pool, owner=owner)

    def touch_session(self, session_id: str, now: datetime) -> None:
        with self.transaction() as uow:
            uow.sessions.touch(session_id, now)

    def release_session(
        self, session_id: str, *, reason: str, now: datetime, by: str | None = None
    ) -> Session | None:
        """End an active session (None if it had already ended), recording `reason` and who
        ended it (`by`: a user or agent id, or "system")."""
        with self.transaction() as uow:
            return uow.sessions.release(session_id, reason=reason, now=now, by=by)

    def sessions_to_evict(self, now: datetime) -> list[tuple[Session, str]]:
        with self._reading() as uow:
            return uow.sessions.to_evict(now)

    # directory: users, agents, sponsors, groups, agent keys

    def identity_version(self) -> int:
        """A counter bumped by every directory change; a request check that remembers it can
        tell on the next request whether anything that decides access changed."""
        with self._reading() as uow:
            return uow.directory.version()

    def principal_status(self, subject: str) -> PrincipalStatus | None:
        """The agent or user a token names (by id only), as it stands now; None if unknown.
        On every request: a single statement outside any unit of work (`_hot.py`)."""
        return self._hot.principal_status(subject)

    def revoke_tokens(self, ref: str) -> str:
        """Refuse the tokens issued so far to the agent or user `ref`; returns its id."""
        with self.transaction() as uow:
            return uow.access.revoke_tokens(ref)

    def admin_exists(self) -> bool:
        with self._reading() as uow:
            return uow.access.admin_exists()

    def add_user_key(self, user: str, key: AgentKey) -> None:
        with self.transaction() as uow:
            uow.access.add_user_key(user, key)

    def list_user_keys(self, user: str) -> list[AgentKey]:
        with self._reading() as uow:
            return uow.access.list_user_keys(user)

    def create_user(
        self,
        name: str,
        *,
        roles: Iterable[Role] = (),
        email: str | None = None,
        password_hash: str | None = None,
    ) -> User:
        with self.transaction() as uow:
            return uow.directory.create_user(
                name, roles=roles, email=email, password_hash=password_hash
            )

    def get_user(self, ref: str) -> User:
        """By id or name."""
        with self._reading() as uow:
            return uow.directory.get_user(ref)

    def list_users(self) -> list[User]:
        with self._reading() as uow:
            return uow.directory.list_users()

    def get_user_secrets(self, ref: str) -> UserSecrets:
        with self._reading() as uow:
            return uow.directory.get_user_secrets(ref)

    def set_user_password(self, ref: str, password_hash: str) -> None:
        with self.transaction() as uow:
            uow.directory.set_user_password(ref, password_hash)

    def set_user_totp(self, ref: str, secret: str | None, *, enabled: bool) -> None:
        with self.transaction() as uow:
            uow.directory.set_user_totp(ref, secret, enabled=enabled)

    def set_user_enabled(self, ref: str, enabled: bool) -> tuple[User, list[Agent]]:
        """Returns the user and the agents that disabling them left without a sponsor."""
        with self.transaction() as uow:
            return uow.directory.set_user_enabled(ref, enabled)

    def set_user_roles(self, ref: str, roles: Iterable[Role]) -> tuple[User, list[Agent]]:
        """Replace the roles; returns the user and the agents that losing the sponsor role left
        without an able sponsor (now disabled). Refused if no enabled admin would remain."""
        with self.transaction() as uow:
            return uow.directory.set_user_roles(ref, roles)

    def create_agent(
        self,
        name: str,
        *,
        sponsors: Sequence[str],
        groups: Sequence[str] = (),
        key: AgentKey | None = None,
    ) -> Agent:
        """An agent with its sponsors (ids or names), groups and first public key, atomically."""
        with self.transaction() as uow:
            return uow.directory.create_agent(name, sponsors=sponsors, groups=groups, key=key)

    def get_agent(self, ref: str) -> Agent:
        """By id (the client id) or name."""
        with self._reading() as uow:
            return uow.directory.get_agent(ref)

    def list_agents(self) -> list[Agent]:
        with self._reading() as uow:
            return uow.directory.list_agents()

    def set_agent_enabled(self, ref: str, enabled: bool, *, reason: str | None = None) -> Agent:
        with self.transaction() as uow:
            return uow.directory.set_agent_enabled(ref, enabled, reason=reason)

    def set_agent_risk(self, ref: str, risk: Risk, *, may_lower: bool = True) -> Agent:
        """Set an agent's risk; without `may_lower`, PermissionDeniedError for a lower level
        (decided against the locked row, in the write's own transaction)."""
        with self.transaction() as uow:
            return uow.directory.set_agent_risk(ref, risk, may_lower=may_lower)

    def add_sponsor(self, agent: str, user: str) -> Agent:
        with self.transaction() as uow:
            return uow.directory.add_sponsor(agent, user)

    def remove_sponsor(self, agent: str, user: str) -> Agent:
        """Removing the last able sponsor disables the agent in the same transaction."""
        with self.transaction() as uow:
            return uow.directory.remove_sponsor(agent, user)

    def add_agent_key(self, agent: str, key: AgentKey) -> AgentKey:
        with self.transaction() as uow:
            return uow.directory.add_agent_key(agent, key)

    def list_agent_keys(self, agent: str) -> list[AgentKey]:
        with self._reading() as uow:
            return uow.directory.list_agent_keys(agent)

    def revoke_agent_key(self, agent: str, kid: str) -> AgentKey:
        with self.transaction() as uow:
            return uow.directory.revoke_agent_key(agent, kid)

    def rotate_agent_key(self, agent: str, key: AgentKey, *, old_expires_at: datetime) -> AgentKey:
        """Add `key`; the agent's other live keys expire at `old_expires_at` at the latest."""
        with self.transaction() as uow:
            return uow.directory.rotate_agent_key(agent, key, old_expires_at=old_expires_at)

    def create_group(self, name: str, description: str = "") -> Group:
        with self.transaction() as uow:
            return uow.directory.create_group(name, description)

    def get_group(self, ref: str) -> Group:
        with self._reading() as uow:
            return uow.directory.get_group(ref)

    def list_groups(self) -> list[Group]:
        with self._reading() as uow:
            return uow.directory.list_groups()

    def delete_group(self, ref: str) -> None:
        with self.transaction() as uow:
            uow.directory.delete_group(ref)

    def group_members(self, ref: str) -> tuple[list[str], list[str]]:
        """Names of the group's users and of its agents."""
        with self._reading() as uow:
            return uow.directory.group_members(ref)

    def set_group_member(
        self, group: str, kind: Literal["user", "agent"], member: str, *, present: bool
    ) -> None:
        """Add (`present`) or remove a user or agent; idempotent."""
        with self.transaction() as uow:
            uow.directory.set_group_member(group, kind, member, present=present)

    # federation

    def create_oidc_provider(self, provider: OidcProvider) -> OidcProvider:
        with self.transaction() as uow:
            return uow.federation.create_provider(provider)

    def get_oidc_provider(self, name: str) -> OidcProvider:
        with self._reading() as uow:
            return uow.federation.get_provider(name)

    def get_oidc_provider_by_issuer(self, issuer: str) -> OidcProvider:
        with self._reading() as uow:
            return uow.federation.get_provider_by_issuer(issuer)

    def list_oidc_providers(self) -> list[OidcProvider]:
        with self._reading() as uow:
            return uow.federation.list_providers()

    def delete_oidc_provider(self, name: str) -> None:
        with self.transaction() as uow:
            uow.federation.delete_provider(name)

    def link_subject(
        self, provider: str, subject: str, kind: PrincipalKind, principal: str
    ) -> FederatedSubject:
        with self.transaction() as uow:
            return uow.federation.link_subject(provider, subject, kind, principal)

    def unlink_subject(self, provider: str, subject: str) -> None:
        with self.transaction() as uow:
            uow.federation.unlink_subject(provider, subject)

    def resolve_subject(self, provider: str, subject: str) -> FederatedSubject | None:
        with self._reading() as uow:
            return uow.federation.resolve_subject(provider, subject)

    def list_subjects(self, provider: str | None = None) -> list[FederatedSubject]:
        with self._reading() as uow:
            return uow.federation.list_subjects(provider)

    # shared signals: receivers, outbox, inbound jtis

    def create_ssf_receiver(
        self,
        name: str,
        *,
        endpoint: str,
        audience: str,
        events: Sequence[str] = (),
        auth_header: str | None = None,
    ) -> SsfReceiver:
        """A push receiver subscribed to `events` (short names or URIs; empty: all)."""
        with self.transaction() as uow:
            return uow.events.create_receiver(
                name, endpoint=endpoint, audience=audience, events=events, auth_header=auth_header
            )

    def get_ssf_receiver(self, ref: str) -> SsfReceiver:
        with self._reading() as uow:
            return uow.events.get_receiver(ref)

    def list_ssf_receivers(self) -> list[SsfReceiver]:
        with self._reading() as uow:
            return uow.events.list_receivers()

    def delete_ssf_receiver(self, ref: str) -> SsfReceiver:
        """Remove a receiver with its undelivered SETs."""
        with self.transaction() as uow:
            return uow.events.delete_receiver(ref)

    def enqueue_ssf(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Queue (receiver id, jti, signed SET) rows in one transaction, due at once."""
        with self.transaction() as uow:
            uow.events.enqueue(items)

    def claim_ssf_due(
        self, now: datetime, *, lease: timedelta, limit: int = 50
    ) -> list[OutboxEntry]:
        """Due SETs, each claimed for `lease` so no other process pushes it meanwhile. Polled
        often: finding nothing due is a read, and writes nothing."""
        with self._reading() as uow:
            due = uow.events.due(now, limit=limit)
        if not due:
            return []
        with self.transaction() as uow:
            return uow.events.claim(due, now, lease=lease)

    def mark_ssf_delivered(self, entry_id: int, now: datetime) -> None:
        with self.transaction() as uow:
            uow.events.mark_delivered(entry_id, now)

    def mark_ssf_failed(self, entry_id: int, error: str, next_attempt_at: datetime) -> None:
        """Count a failed push, keep why (never the token), and when to try again."""
        with self.transaction() as uow:
            uow.events.mark_failed(entry_id, error, next_attempt_at)

    def list_ssf_outbox(self, *, pending_only: bool = False, limit: int = 100) -> list[OutboxEntry]:
        with self._reading() as uow:
            return uow.events.list_outbox(pending_only=pending_only, limit=limit)

    def remember_ssf_inbound(self, issuer: str, jti: str) -> bool:
        """Record a received SET's jti; False if this issuer sent it before (in any process)."""
        with self.transaction() as uow:
            return uow.events.remember_inbound(issuer, jti)

    def forget_ssf_inbound(self, issuer: str, jti: str) -> None:
        """Undo `remember_ssf_inbound` when the event could not be acted on, so a retry works."""
        with self.transaction() as uow:
            uow.events.forget_inbound(issuer, jti)

    def prune_ssf(self, *, outbox_before: datetime, inbound_before: datetime) -> tuple[int, int]:
        """Drop finished outbox rows and old inbound jtis; returns how many of each."""
        with self.transaction() as uow:
            return uow.events.prune(outbox_before=outbox_before, inbound_before=inbound_before)

    # policies, pool assignments, approvals, session controls (issue 5)

    def access_versions(self) -> tuple[int, int]:
        """(directory version, policy-set version) in one read: a policy decision's cached
        inputs are still good while both are unchanged.

        Read on every authorized request, so it skips the query builder and the unit of work
        (one SELECT of two single-row tables is consistent on its own): about 10 us instead
        of 150 us on SQLite.
        """
        return self._hot.access_versions()

    def policy_version(self) -> int:
        with self._reading() as uow:
            return uow.policies.version()

    def list_policies(self) -> list[StoredPolicy]:
        with self._reading() as uow:
            return uow.policies.list()

    def get_policy(self, name: str) -> StoredPolicy:
        with self._reading() as uow:
            return uow.policies.get(name)

    def add_policy(
        self, name: str, text: str, *, actor: str, replace: bool = False
    ) -> StoredPolicy:
        """Add a (validated) policy, or replace the text of an existing one; logged, versioned."""
        with self.transaction() as uow:
            return uow.policies.add(name, text, actor=actor, replace=replace)

    def remove_policy(self, name: str, *, actor: str) -> StoredPolicy:
        with self.transaction() as uow:
            return uow.policies.remove(name, actor=actor)

    def set_policy_enabled(self, name: str, enabled: bool, *, actor: str) -> StoredPolicy:
        with self.transaction() as uow:
            return uow.policies.set_enabled(name, enabled, actor=actor)

    def seed_policies(self, defaults: Sequence[tuple[str, str]], *, actor: str) -> bool:
        """Install the shipped policies if they never were; True if this call did."""
        with self.transaction() as uow:
            return uow.policies.seed(defaults, actor=actor)

    def policy_changes(self, *, since: int = 0, limit: int = 200) -> list[PolicyChange]:
        with self._reading() as uow:
            return uow.policies.changes(since=since, limit=limit)

    def assign_pool(
        self, pool: str, kind: Literal["agent", "group"], ref: str, *, actor: str
    ) -> bool:
        with self.transaction() as uow:
            return uow.policies.assign_pool(pool, kind, ref, actor=actor)

    def unassign_pool(
        self, pool: str, kind: Literal["agent", "group"], ref: str, *, actor: str
    ) -> bool:
        with self.transaction() as uow:
            return uow.policies.unassign_pool(pool, kind, ref, actor=actor)

    def pool_assignments(self, pool: str | None = None) -> list[PoolAssignment]:
        with self._reading() as uow:
            return uow.policies.assignments(pool)

    def bearer_pools_of_agent(self, agent_id: str) -> list[str]:
        """The pools accepting bearer tokens that are assigned to the agent (by id) or to one
        of its groups: whether the token endpoint may issue it a bearer token."""
        with self._reading() as uow:
            return uow.policies.bearer_pools_of_agent(agent_id)

    # console logouts

    def end_console_session(self, token_id: str, user_id: str, expires_at: datetime) -> None:
        with self.transaction() as uow:
            uow.console.end_session(token_id, user_id, expires_at)

    def live_console_logouts(self) -> list[tuple[str, datetime]]:
        with self._reading() as uow:
            return uow.console.live_logouts()

    def create_approval(self, approval: Approval) -> Approval:
        with self.transaction() as uow:
            return uow.policies.create_approval(approval)

    def get_approval(self, approval_id: str) -> Approval:
        with self._reading() as uow:
            return uow.policies.get_approval(approval_id)

    def approval_for(self, agent_id: str, digest: str, now: datetime) -> Approval | None:
        with self._reading() as uow:
            return uow.policies.approval_for(agent_id, digest, now)

    def list_approvals(
        self, *, state: ApprovalState | None = None, agent_ids: Sequence[str] | None = None
    ) -> list[Approval]:
        with self._reading() as uow:
            return uow.policies.list_approvals(state=state, agent_ids=agent_ids)

    def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> Approval:
        self.expire_approvals(now)  # committed on its own: an answer too late still expires it
        with self.transaction() as uow:
            return uow.policies.decide_approval(approval_id, approve=approve, by=by, now=now)

    def use_approval(self, approval_id: str, now: datetime) -> bool:
        """Count one use of an approved approval; False if it has none left."""
        with self.transaction() as uow:
            return uow.policies.use_approval(approval_id, now)

    def expire_approvals(self, now: datetime) -> int:
        with self.transaction() as uow:
            return uow.policies.expire_approvals(now)

    def set_session_controls(
        self, session_id: str, controls: dict[str, object]
    ) -> dict[str, object]:
        """Fix a session's controls; returns those in force (the first ones recorded)."""
        with self.transaction() as uow:
            return uow.policies.set_session_controls(session_id, controls)

    def session_controls(self, session_id: str) -> dict[str, object] | None:
        with self._reading() as uow:
            return uow.policies.session_controls(session_id)
