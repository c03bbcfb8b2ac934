"""The store: pools, PCs and sessions on SQLite or PostgreSQL, one transaction per call."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from corral.store import (
    _access,
    _console,
    _directory,
    _federation,
    _pcs,
    _policies,
    _pools,
    _secrets,
    _sessions,
    _ssf,
)
from corral.store._engine import default_url, make_engine, transaction
from corral.store._hot import HotReads
from corral.store._migrate import migrate
from corral.store._secrets import StoreKeys

__all__ = ["KeyRotation", "Store"]

T = TypeVar("T")
_ACQUIRE_ATTEMPTS = 5


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyRotation:
    new_key: str
    resealed: int  # stored secrets sealed again with the new key
    retired: list[str]  # old keys dropped from the key file


class Store:
    """Thread-safe: every method runs in its own transaction on its own pooled connection.

    Secrets (TOTP seeds, OIDC client secrets, push authorization headers) are sealed with the
    keys in `key_file` (default `<data dir>/secrets.key`, created 0600 on first start).
    """

    def __init__(self, url: str | None = None, *, key_file: Path | None = None) -> None:
        self.url = url or default_url()
        self.dialect = make_url(self.url).get_backend_name()
        self._engine = make_engine(self.url)
        self._hot = HotReads(self._engine)
        self.keys = StoreKeys(key_file or paths().data / "secrets.key")

    def migrate(self) -> None:
        """Upgrade the schema, then seal any plaintext secret an older version left (and
        refuse to go on if sealed ones name a key the key file lacks): every start runs it."""
        migrate(self._engine)
        if self._write(lambda c: _secrets.seal_on_start(c, self.keys)):
            _secrets.scrub(self._engine)

    def rotate_secrets_key(self, *, keep_old: bool = False) -> KeyRotation:
        """1. Add a new key to the key file (it seals from now on, in every process: they
        re-read the file when it changes); 2. reseal every stored secret with it in one
        transaction; 3. unless `keep_old`, drop the old keys no stored value names any more."""
        new_key = self.keys.add_key()
        resealed = self._write(lambda c: _secrets.reseal_all(c, self.keys))
        _secrets.scrub(self._engine)
        retired: list[str] = []
        if not keep_old:
            in_use = set(self._read(_secrets.key_ids_in_use))
            retired = self.keys.retire(in_use)
        return KeyRotation(new_key, resealed, retired)

    def close(self) -> None:
        self._engine.dispose()

    def _read(self, fn: Callable[[Connection], T]) -> T:
        with transaction(self._engine, write=False) as conn:
            return fn(conn)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        with transaction(self._engine, write=True) as conn:
            return fn(conn)

    # pools

    def create_pool(self, spec: PoolSpec) -> Pool:
        try:
            return self._write(lambda c: _pools.create_pool(c, spec, _now()))
        except IntegrityError as e:  # created concurrently
            raise _pools.pool_exists_error(spec.name) from e

    def get_pool(self, name: str) -> Pool:
        return self._read(lambda c: _pools.get_pool(c, name))

    def list_pools(self) -> list[Pool]:
        return self._read(_pools.list_pools)

    def set_pool_deleting(self, name: str) -> Pool:
        return self._write(lambda c: _pools.set_pool_deleting(c, name))

    def delete_pool(self, name: str) -> None:
        self._write(lambda c: _pools.delete_pool(c, name))

    # PCs

    def add_pc(self, pool: str, pc_id: str, state: PCState = PCState.BOOTING) -> PC:
        try:
            return self._write(lambda c: _pcs.add_pc(c, pool, pc_id, state, _now()))
        except IntegrityError as e:  # same id added concurrently, or the pool just went
            self.get_pool(pool)
            raise _pcs.pc_exists_error(pc_id) from e

    def get_pc(self, pc_id: str) -> PC:
        return self._read(lambda c: _pcs.get_pc(c, pc_id))

    def list_pcs(self, pool: str | None = None, state: PCState | None = None) -> list[PC]:
        return self._read(lambda c: _pcs.list_pcs(c, pool, state))

    def set_pc_state(
        self, pc_id: str, state: PCState, *, expect: PCState | None = None, detail: str = ""
    ) -> bool:
        return self._write(
            lambda c: _pcs.set_pc_state(c, pc_id, state, expect=expect, detail=detail, now=_now())
        )

    def delete_pc(self, pc_id: str) -> None:
        self._write(lambda c: _pcs.delete_pc(c, pc_id))

    def pc_counts(self, pool: str) -> dict[PCState, int]:
        return self._read(lambda c: _pcs.pc_counts(c, pool))

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
    ) -> tuple[Session, bool] | None:
        """Bind a READY PC to a new session, replay an idempotent retry, or None if no PC is
        READY. A new session's `controls` are recorded in the same transaction, so it never
        exists without them. `limit_owner`: hold `owner` to the pool's per-agent limit
        (SessionLimitError past it), counted in the same transaction. A unique-constraint race
        (same key, or a PC claimed twice) is retried: the retry sees the winner's commit and
        answers with its session."""

        def acquire(c: Connection) -> tuple[Session, bool] | None:
            got = _sessions.acquire(
                c,
                pool,
                session_id=session_id,
                expires_at=expires_at,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                now=now,
                owner=owner,
                limit_owner=limit_owner,
            )
            if got is not None and got[1] and controls is not None:
                _policies.set_session_controls(c, got[0].id, controls, now)
            return got

        attempt = 1
        while True:
            try:
                return self._write(acquire)
            except IntegrityError as e:
                if attempt == _ACQUIRE_ATTEMPTS:
                    raise ConflictError(
                        f"could not record session {session_id!r}: {e.orig}",
                        hint="retry with a new session id",
                    ) from e
                attempt += 1

    def get_session(self, session_id: str) -> Session:
        return self._read(lambda c: _sessions.get_session(c, session_id))

    def list_sessions(
        self, *, active_only: bool = False, pool: str | None = None, owner: str | None = None
    ) -> list[Session]:
        return self._read(
            lambda c: _sessions.list_sessions(c, active_only=active_only, pool=pool, owner=owner)
        )

    def touch_session(self, session_id: str, now: datetime) -> None:
        self._write(lambda c: _sessions.touch_session(c, session_id, now))

    def release_session(
        self, session_id: str, *, reason: str, now: datetime, by: str | None = None
    ) -> Session | None:
        """End an active session (None if it had already ended), recording `reason` and who
        ended it (`by`: a user or agent id, or "system")."""
        return self._write(
            lambda c: _sessions.release_session(c, session_id, reason=reason, now=now, by=by)
        )

    def sessions_to_evict(self, now: datetime) -> list[tuple[Session, str]]:
        return self._read(lambda c: _sessions.sessions_to_evict(c, now))

    # directory: users, agents, sponsors, groups, agent keys

    def identity_version(self) -> int:
        """A counter bumped by every directory change; a request check that remembers it can
        tell on the next request whether anything that decides access changed."""
        return self._read(_directory.version)

    def principal_status(self, subject: str) -> PrincipalStatus | None:
        """The agent or user a token names (by id only), as it stands now; None if unknown."""
        return self._hot.principal_status(subject)

    def revoke_tokens(self, ref: str) -> str:
        """Refuse the tokens issued so far to the agent or user `ref`; returns its id."""
        return self._write(lambda c: _access.revoke_tokens(c, ref, _now()))

    def admin_exists(self) -> bool:
        return self._read(_access.admin_exists)

    def add_user_key(self, user: str, key: AgentKey) -> None:
        self._write_unique(
            lambda c: _access.add_user_key(c, user, key, _now()),
            ConflictError(f"key {key.kid!r} is already registered"),
        )

    def list_user_keys(self, user: str) -> list[AgentKey]:
        return self._read(lambda c: _access.list_user_keys(c, user))

    def _write_unique(self, fn: Callable[[Connection], T], conflict: ConflictError) -> T:
        """A write whose unique name may be taken concurrently: that race reads as `conflict`."""
        try:
            return self._write(fn)
        except IntegrityError as e:
            raise conflict from e

    def create_user(
        self,
        name: str,
        *,
        roles: Iterable[Role] = (),
        email: str | None = None,
        password_hash: str | None = None,
    ) -> User:
        return self._write_unique(
            lambda c: _directory.create_user(
                c, name, roles=roles, email=email, password_hash=password_hash, now=_now()
            ),
            _directory.user_exists_error(name),
        )

    def get_user(self, ref: str) -> User:
        """By id or name."""
        return self._read(lambda c: _directory.get_user(c, ref))

    def list_users(self) -> list[User]:
        return self._read(_directory.list_users)

    def get_user_secrets(self, ref: str) -> UserSecrets:
        return self._read(lambda c: _directory.get_user_secrets(c, ref, self.keys))

    def set_user_password(self, ref: str, password_hash: str) -> None:
        self._write(lambda c: _directory.set_user_password(c, ref, password_hash, _now()))

    def set_user_totp(self, ref: str, secret: str | None, *, enabled: bool) -> None:
        self._write(
            lambda c: _directory.set_user_totp(
                c, ref, secret, enabled=enabled, now=_now(), keys=self.keys
            )
        )

    def set_user_enabled(self, ref: str, enabled: bool) -> tuple[User, list[Agent]]:
        """Returns the user and the agents that disabling them left without a sponsor."""
        return self._write(
            lambda c: _directory.set_user_enabled(c, ref, enabled=enabled, now=_now())
        )

    def set_user_roles(self, ref: str, roles: Iterable[Role]) -> tuple[User, list[Agent]]:
        """Replace the roles; returns the user and the agents that losing the sponsor role left
        without an able sponsor (now disabled). Refused if no enabled admin would remain."""
        wanted = frozenset(roles)
        return self._write(lambda c: _directory.set_user_roles(c, ref, wanted, _now()))

    def create_agent(
        self,
        name: str,
        *,
        sponsors: Sequence[str],
        groups: Sequence[str] = (),
        key: AgentKey | None = None,
    ) -> Agent:
        """An agent with its sponsors (ids or names), groups and first public key, atomically."""
        return self._write_unique(
            lambda c: _directory.create_agent(
                c, name, sponsors=sponsors, group_refs=groups, key=key, now=_now()
            ),
            _directory.agent_exists_error(name),
        )

    def get_agent(self, ref: str) -> Agent:
        """By id (the client id) or name."""
        return self._read(lambda c: _directory.get_agent(c, ref))

    def list_agents(self) -> list[Agent]:
        return self._read(_directory.list_agents)

    def set_agent_enabled(self, ref: str, enabled: bool, *, reason: str | None = None) -> Agent:
        return self._write(
            lambda c: _directory.set_agent_enabled(
                c, ref, enabled=enabled, reason=reason, now=_now()
            )
        )

    def set_agent_risk(self, ref: str, risk: Risk, *, may_lower: bool = True) -> Agent:
        """Set an agent's risk; without `may_lower`, PermissionDeniedError for a lower level
        (decided against the locked row, in the write's own transaction)."""
        return self._write(
            lambda c: _directory.set_agent_risk(c, ref, risk, _now(), may_lower=may_lower)
        )

    def add_sponsor(self, agent: str, user: str) -> Agent:
        try:
            return self._write(lambda c: _directory.add_sponsor(c, agent, user, _now()))
        except IntegrityError as e:  # added concurrently
            raise ConflictError(f"user {user!r} already sponsors agent {agent!r}") from e

    def remove_sponsor(self, agent: str, user: str) -> Agent:
        """Removing the last able sponsor disables the agent in the same transaction."""
        return self._write(lambda c: _directory.remove_sponsor(c, agent, user, _now()))

    def add_agent_key(self, agent: str, key: AgentKey) -> AgentKey:
        return self._write_unique(
            lambda c: _directory.add_agent_key(c, agent, key, _now()),
            ConflictError(f"key {key.kid!r} is already registered"),
        )

    def list_agent_keys(self, agent: str) -> list[AgentKey]:
        return self._read(lambda c: _directory.list_agent_keys(c, agent))

    def revoke_agent_key(self, agent: str, kid: str) -> AgentKey:
        return self._write(lambda c: _directory.revoke_agent_key(c, agent, kid, _now()))

    def rotate_agent_key(self, agent: str, key: AgentKey, *, old_expires_at: datetime) -> AgentKey:
        """Add `key`; the agent's other live keys expire at `old_expires_at` at the latest."""
        return self._write_unique(
            lambda c: _directory.rotate_agent_key(
                c, agent, key, old_expires_at=old_expires_at, now=_now()
            ),
            ConflictError(f"key {key.kid!r} is already registered"),
        )

    def create_group(self, name: str, description: str = "") -> Group:
        return self._write_unique(
            lambda c: _directory.create_group(c, name, description, _now()),
            _directory.group_exists_error(name),
        )

    def get_group(self, ref: str) -> Group:
        return self._read(lambda c: _directory.get_group(c, ref))

    def list_groups(self) -> list[Group]:
        return self._read(_directory.list_groups)

    def delete_group(self, ref: str) -> None:
        self._write(lambda c: _directory.delete_group(c, ref))

    def group_members(self, ref: str) -> tuple[list[str], list[str]]:
        """Names of the group's users and of its agents."""
        return self._read(lambda c: _directory.group_members(c, ref))

    def set_group_member(
        self, group: str, kind: Literal["user", "agent"], member: str, *, present: bool
    ) -> None:
        """Add (`present`) or remove a user or agent; idempotent."""
        try:
            self._write(
                lambda c: _directory.set_group_member(
                    c, group, kind=kind, member_ref=member, member=present, now=_now()
                )
            )
        except IntegrityError:  # added concurrently: it is a member, as asked
            if not present:
                raise

    # federation

    def create_oidc_provider(self, provider: OidcProvider) -> OidcProvider:
        conflict = _federation.provider_exists_error(provider.name, provider.issuer)
        return self._write_unique(
            lambda c: _federation.create_provider(c, provider, _now(), self.keys), conflict
        )

    def get_oidc_provider(self, name: str) -> OidcProvider:
        return self._read(lambda c: _federation.get_provider(c, name, self.keys))

    def get_oidc_provider_by_issuer(self, issuer: str) -> OidcProvider:
        return self._read(lambda c: _federation.get_provider_by_issuer(c, issuer, self.keys))

    def list_oidc_providers(self) -> list[OidcProvider]:
        return self._read(lambda c: _federation.list_providers(c, self.keys))

    def delete_oidc_provider(self, name: str) -> None:
        self._write(lambda c: _federation.delete_provider(c, name))

    def link_subject(
        self, provider: str, subject: str, kind: PrincipalKind, principal: str
    ) -> FederatedSubject:
        return self._write(
            lambda c: _federation.link_subject(c, provider, subject, kind, principal, _now())
        )

    def unlink_subject(self, provider: str, subject: str) -> None:
        self._write(lambda c: _federation.unlink_subject(c, provider, subject))

    def resolve_subject(self, provider: str, subject: str) -> FederatedSubject | None:
        return self._read(lambda c: _federation.resolve_subject(c, provider, subject))

    def list_subjects(self, provider: str | None = None) -> list[FederatedSubject]:
        return self._read(lambda c: _federation.list_subjects(c, provider))

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
        return self._write_unique(
            lambda c: _ssf.create_receiver(
                c,
                name=name,
                endpoint=endpoint,
                audience=audience,
                events=tuple(events),
                auth_header=auth_header,
                now=_now(),
                keys=self.keys,
            ),
            _ssf.receiver_exists_error(name),
        )

    def get_ssf_receiver(self, ref: str) -> SsfReceiver:
        return self._read(lambda c: _ssf.get_receiver(c, ref, self.keys))

    def list_ssf_receivers(self) -> list[SsfReceiver]:
        return self._read(lambda c: _ssf.list_receivers(c, self.keys))

    def delete_ssf_receiver(self, ref: str) -> SsfReceiver:
        """Remove a receiver with its undelivered SETs."""
        return self._write(lambda c: _ssf.delete_receiver(c, ref))

    def enqueue_ssf(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Queue (receiver id, jti, signed SET) rows in one transaction, due at once."""
        self._write(lambda c: _ssf.enqueue(c, list(items), _now()))

    def claim_ssf_due(
        self, now: datetime, *, lease: timedelta, limit: int = 50
    ) -> list[OutboxEntry]:
        """Due SETs, each claimed for `lease` so no other process pushes it meanwhile. Polled
        often: finding nothing due is a read, and writes nothing."""
        due = self._read(lambda c: _ssf.due(c, now, limit))
        if not due:
            return []
        return self._write(lambda c: _ssf.claim(c, due, now, lease))

    def mark_ssf_delivered(self, entry_id: int, now: datetime) -> None:
        self._write(lambda c: _ssf.mark_delivered(c, entry_id, now))

    def mark_ssf_failed(self, entry_id: int, error: str, next_attempt_at: datetime) -> None:
        """Count a failed push, keep why (never the token), and when to try again."""
        self._write(lambda c: _ssf.mark_failed(c, entry_id, error, next_attempt_at))

    def list_ssf_outbox(self, *, pending_only: bool = False, limit: int = 100) -> list[OutboxEntry]:
        return self._read(lambda c: _ssf.list_outbox(c, pending_only=pending_only, limit=limit))

    def remember_ssf_inbound(self, issuer: str, jti: str) -> bool:
        """Record a received SET's jti; False if this issuer sent it before (in any process)."""
        try:
            self._write(lambda c: _ssf.remember_inbound(c, issuer, jti, _now()))
        except IntegrityError:
            return False
        return True

    def forget_ssf_inbound(self, issuer: str, jti: str) -> None:
        """Undo `remember_ssf_inbound` when the event could not be acted on, so a retry works."""
        self._write(lambda c: _ssf.forget_inbound(c, issuer, jti))

    def prune_ssf(self, *, outbox_before: datetime, inbound_before: datetime) -> tuple[int, int]:
        """Drop finished outbox rows and old inbound jtis; returns how many of each."""
        return self._write(
            lambda c: _ssf.prune(c, outbox_before=outbox_before, inbound_before=inbound_before)
        )

    # policies, pool assignments, approvals, session controls (issue 5)

    def access_versions(self) -> tuple[int, int]:
        """(directory version, policy-set version) in one read: a policy decision's cached
        inputs are still good while both are unchanged.

        Read on every authorized request, so it skips the query builder and the explicit
        transaction (one SELECT of two single-row tables is consistent on its own): about
        10 us instead of 150 us on SQLite.
        """
        return self._hot.access_versions()

    def policy_version(self) -> int:
        return self._read(_policies.version)

    def list_policies(self) -> list[StoredPolicy]:
        return self._read(_policies.list_policies)

    def get_policy(self, name: str) -> StoredPolicy:
        return self._read(lambda c: _policies.get_policy(c, name))

    def add_policy(
        self, name: str, text: str, *, actor: str, replace: bool = False
    ) -> StoredPolicy:
        """Add a (validated) policy, or replace the text of an existing one; logged, versioned."""
        return self._write_unique(
            lambda c: _policies.add_policy(
                c, name, text, actor=actor, now=_now(), replace_=replace
            ),
            _policies.policy_exists_error(name),
        )

    def remove_policy(self, name: str, *, actor: str) -> StoredPolicy:
        return self._write(lambda c: _policies.remove_policy(c, name, actor=actor, now=_now()))

    def set_policy_enabled(self, name: str, enabled: bool, *, actor: str) -> StoredPolicy:
        return self._write(
            lambda c: _policies.set_policy_enabled(c, name, enabled, actor=actor, now=_now())
        )

    def seed_policies(self, defaults: Sequence[tuple[str, str]], *, actor: str) -> bool:
        """Install the shipped policies if they never were; True if this call did."""
        return self._write(lambda c: _policies.seed_policies(c, defaults, actor=actor, now=_now()))

    def policy_changes(self, *, since: int = 0, limit: int = 200) -> list[PolicyChange]:
        return self._read(lambda c: _policies.list_changes(c, since=since, limit=limit))

    def assign_pool(
        self, pool: str, kind: Literal["agent", "group"], ref: str, *, actor: str
    ) -> bool:
        try:
            return self._write(
                lambda c: _policies.assign_pool(c, pool, kind, ref, actor=actor, now=_now())
            )
        except IntegrityError:  # assigned concurrently: it is assigned, as asked
            return False

    def unassign_pool(
        self, pool: str, kind: Literal["agent", "group"], ref: str, *, actor: str
    ) -> bool:
        return self._write(
            lambda c: _policies.unassign_pool(c, pool, kind, ref, actor=actor, now=_now())
        )

    def pool_assignments(self, pool: str | None = None) -> list[PoolAssignment]:
        return self._read(lambda c: _policies.list_assignments(c, pool))

    def bearer_pools_of_agent(self, agent_id: str) -> list[str]:
        """The pools accepting bearer tokens that are assigned to the agent (by id) or to one
        of its groups: whether the token endpoint may issue it a bearer token."""
        return self._read(lambda c: _policies.bearer_pools_of_agent(c, agent_id))

    # console logouts

    def end_console_session(self, token_id: str, user_id: str, expires_at: datetime) -> None:
        self._write(
            lambda c: _console.end_console_session(c, token_id, user_id, expires_at, _now())
        )

    def live_console_logouts(self) -> list[tuple[str, datetime]]:
        return self._read(lambda c: _console.live_console_logouts(c, _now()))

    def create_approval(self, approval: Approval) -> Approval:
        return self._write(lambda c: _policies.create_approval(c, approval))

    def get_approval(self, approval_id: str) -> Approval:
        return self._read(lambda c: _policies.get_approval(c, approval_id))

    def approval_for(self, agent_id: str, digest: str, now: datetime) -> Approval | None:
        return self._read(lambda c: _policies.approval_for(c, agent_id, digest, now))

    def list_approvals(
        self, *, state: ApprovalState | None = None, agent_ids: Sequence[str] | None = None
    ) -> list[Approval]:
        return self._read(lambda c: _policies.list_approvals(c, state=state, agent_ids=agent_ids))

    def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> Approval:
        self.expire_approvals(now)  # committed on its own: an answer too late still expires it
        return self._write(
            lambda c: _policies.decide_approval(c, approval_id, approve=approve, by=by, now=now)
        )

    def use_approval(self, approval_id: str, now: datetime) -> bool:
        """Count one use of an approved approval; False if it has none left."""
        return self._write(lambda c: _policies.use_approval(c, approval_id, now))

    def expire_approvals(self, now: datetime) -> int:
        return self._write(lambda c: _policies.expire_approvals(c, now))

    def set_session_controls(
        self, session_id: str, controls: dict[str, object]
    ) -> dict[str, object]:
        """Fix a session's controls; returns those in force (the first ones recorded)."""
        try:
            return self._write(
                lambda c: _policies.set_session_controls(c, session_id, controls, _now())
            )
        except IntegrityError:  # recorded concurrently: that record wins
            found = self.session_controls(session_id)
            if found is None:
                raise
            return found

    def session_controls(self, session_id: str) -> dict[str, object] | None:
        return self._read(lambda c: _policies.get_session_controls(c, session_id))
