"""The directory service: users, agents, sponsors, groups and agent credentials.

Adapters (the CLI, and REST through `corral.identity.directory_service`) call `Directory`; it hashes
secrets, makes key pairs and hands the store only what the server may keep: password hashes and
the public halves of agent keys.
The private key of an agent leaves here once, inside the credential returned to its creator.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from corral.domain.identity import Agent, AgentKey, Group, Risk, User, parse_risk, parse_roles
from corral.errors import ConflictError, InvalidInputError
from corral.identity import caep
from corral.identity.client import DPoPKey
from corral.identity.passwords import (
    TotpEnrolment,
    hash_password,
    new_totp,
    normalize_totp_code,
    verify_password,
    verify_totp,
)
from corral.store import Store

__all__ = [
    "CREDENTIAL_FIELDS",
    "DEFAULT_TOKEN_ENDPOINT",
    "Credential",
    "Directory",
    "read_credential",
    "write_credential",
]

# `corral up` on its default address (not a secret: a URL)
DEFAULT_TOKEN_ENDPOINT = "http://127.0.0.1:8420/v1/token"  # noqa: S105
DEFAULT_ROTATION_GRACE = timedelta(hours=1)
CREDENTIAL_FIELDS = ("client_id", "token_endpoint", "key")

Credential = dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _credential(agent: Agent, key: DPoPKey, token_endpoint: str) -> Credential:
    private = {**key.private_jwk(), "kid": key.thumbprint, "alg": key.alg}
    return {
        "agent_id": agent.id,
        "client_id": agent.client_id,
        "token_endpoint": token_endpoint,
        "key": private,
    }


def _public_key(key: DPoPKey, expires_at: datetime | None) -> AgentKey:
    return AgentKey(
        kid=key.thumbprint,
        agent_id="",  # the store fills in the agent it is registered to
        created_at=_now(),
        public_jwk=dict(key.public_jwk),
        expires_at=expires_at,
    )


class Directory:
    """The directory operations, with the sponsor rules enforced by the store atomically.

    With `events`, changes that affect access elsewhere (revocations, credential changes, risk)
    are reported to it after they committed, to become CAEP events (docs/events.md).
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = _now,
        events: caep.EventSink | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self.events = events

    def _emit(self, make: Callable[[float], caep.CorralEvent]) -> None:
        if self.events is not None:
            self.events.emit(make(self._clock().timestamp()))

    # users

    def create_user(
        self,
        name: str,
        *,
        roles: Iterable[str] = (),
        email: str | None = None,
        password: str | None = None,
    ) -> User:
        password_hash = None if password is None else hash_password(password)
        return self.store.create_user(
            name, roles=parse_roles(roles), email=email, password_hash=password_hash
        )

    def create_user_credential(
        self,
        ref: str,
        token_endpoint: str = DEFAULT_TOKEN_ENDPOINT,
        key_lifetime: timedelta | None = None,
    ) -> Credential:
        """A key pair for a user's CLI/API use (client_id = user id, `private_key_jwt`); the
        store keeps only the public half. Returns the credential, which exists nowhere else."""
        user = self.store.get_user(ref)
        key = DPoPKey.generate("EdDSA")
        expires_at = None if key_lifetime is None else self._clock() + key_lifetime
        self.store.add_user_key(user.id, _public_key(key, expires_at))
        private = {**key.private_jwk(), "kid": key.thumbprint, "alg": key.alg}
        return {
            "user_id": user.id,
            "client_id": user.id,
            "token_endpoint": token_endpoint,
            "key": private,
        }

    def usable_user_keys(self, user: str) -> list[dict[str, Any]]:
        """A user's public JWKs (with kid) the token endpoint accepts assertions from now."""
        now = self._clock()
        return [
            {**k.public_jwk, "kid": k.kid} for k in self.store.list_user_keys(user) if k.usable(now)
        ]

    def revoke_tokens(
        self, ref: str, *, initiating_entity: str = "admin", reason: str | None = None
    ) -> str:
        """Every token issued so far to this agent or user is refused from the next request."""
        principal = self.store.revoke_tokens(ref)
        self._emit(
            lambda at: caep.session_revoked(
                principal,
                at=at,
                initiating_entity=initiating_entity,
                reason=reason or "tokens revoked",
            )
        )
        return principal

    def get_user(self, ref: str) -> User:
        return self.store.get_user(ref)

    def list_users(self) -> list[User]:
        return self.store.list_users()

    def disable_user(self, ref: str) -> list[Agent]:
        """Disable a user; returns the agents this left without a sponsor (now disabled)."""
        return self.store.set_user_enabled(ref, False)[1]

    def enable_user(self, ref: str) -> User:
        return self.store.set_user_enabled(ref, True)[0]

    def set_roles(self, ref: str, roles: Iterable[str]) -> tuple[User, list[Agent]]:
        """Replace a user's roles; returns the user and the agents that losing the sponsor
        role left without an able sponsor (now disabled). The last enabled admin keeps admin."""
        return self.store.set_user_roles(ref, parse_roles(roles))

    def set_password(self, ref: str, password: str) -> None:
        user = self.store.get_user(ref)
        self.store.set_user_password(user.id, hash_password(password))
        self._emit(
            lambda at: caep.credential_change(
                user.id, at=at, credential_type="password", change_type="update"
            )
        )

    def check_password(self, ref: str, password: str) -> bool:
        """A console login's first factor; a disabled user never passes."""
        user = self.store.get_user(ref)
        ok = verify_password(self.store.get_user_secrets(user.id).password_hash, password)
        return ok and user.enabled

    def enroll_totp(self, ref: str) -> TotpEnrolment:
        """A fresh TOTP secret, kept but not required until `confirm_totp` sees a good code."""
        user = self.store.get_user(ref)
        enrolment = new_totp(user.email or user.name)
        self.store.set_user_totp(user.id, enrolment.secret, enabled=False)
        return enrolment

    def confirm_totp(self, ref: str, code: str) -> None:
        secret = self.store.get_user_secrets(ref).totp_secret
        if secret is None:
            raise InvalidInputError("no TOTP enrolment to confirm", hint="enrol first")
        if not verify_totp(secret, normalize_totp_code(code) or "", self._clock().timestamp()):
            raise InvalidInputError("wrong TOTP code", hint="check the authenticator's clock")
        user = self.store.get_user(ref)
        self.store.set_user_totp(user.id, secret, enabled=True)
        self._emit(
            lambda at: caep.credential_change(
                user.id, at=at, credential_type="app", change_type="create", friendly_name="TOTP"
            )
        )

    def check_totp(self, ref: str, code: str) -> bool:
        """A console login's second factor; passes trivially while TOTP is not enabled.
        `code` must be spelled as `normalize_totp_code` returns it (the caller keys its
        replay check on that same spelling)."""
        secrets = self.store.get_user_secrets(ref)
        if not secrets.totp_enabled:
            return True
        return verify_totp(secrets.totp_secret, code, self._clock().timestamp())

    # agents

    def create_agent(
        self,
        name: str,
        sponsors: Sequence[str],
        groups: Sequence[str] = (),
        token_endpoint: str = DEFAULT_TOKEN_ENDPOINT,
        key_lifetime: timedelta | None = None,
    ) -> Credential:
        """Create an agent and its first key pair; the store keeps only the public half.

        Returns the credential (agent id, client id, token endpoint, private JWK with its kid),
        which exists nowhere else: write it with `write_credential` and hand it to the agent.
        """
        key = DPoPKey.generate("EdDSA")
        expires_at = None if key_lifetime is None else self._clock() + key_lifetime
        agent = self.store.create_agent(
            name, sponsors=sponsors, groups=groups, key=_public_key(key, expires_at)
        )
        return _credential(agent, key, token_endpoint)

    def get_agent(self, ref: str) -> Agent:
        return self.store.get_agent(ref)

    def list_agents(self) -> list[Agent]:
        return self.store.list_agents()

    def disable_agent(self, ref: str, reason: str | None = None) -> Agent:
        return self.store.set_agent_enabled(ref, False, reason=reason)

    def enable_agent(self, ref: str) -> Agent:
        return self.store.set_agent_enabled(ref, True)

    def add_sponsor(self, agent: str, user: str) -> Agent:
        return self.store.add_sponsor(agent, user)

    def remove_sponsor(self, agent: str, user: str) -> Agent:
        """Removing the last sponsor disables the agent (reason "no sponsor")."""
        return self.store.remove_sponsor(agent, user)

    def set_risk(self, agent: str, level: Risk | str, *, may_lower: bool = True) -> Agent:
        """Set an agent's risk; `may_lower=False` takes only a raise (PermissionDeniedError
        for a lower level, decided in the store's transaction)."""
        risk = level if isinstance(level, Risk) else parse_risk(level)
        previous = self.store.get_agent(agent).risk
        changed = self.store.set_agent_risk(agent, risk, may_lower=may_lower)
        if changed.risk != previous:
            self._emit(
                lambda at: caep.risk_level_change(
                    changed.id, at=at, current=changed.risk, previous=previous
                )
            )
        return changed

    def agent_keys(self, agent: str) -> list[AgentKey]:
        return self.store.list_agent_keys(agent)

    def usable_public_keys(self, agent: str) -> list[dict[str, Any]]:
        """The public JWKs (with kid) the token endpoint accepts assertions from right now."""
        now = self._clock()
        return [
            {**k.public_jwk, "kid": k.kid}
            for k in self.store.list_agent_keys(agent)
            if k.usable(now)
        ]

    def rotate_agent_key(
        self,
        agent: str,
        expires_old_after: timedelta = DEFAULT_ROTATION_GRACE,
        token_endpoint: str = DEFAULT_TOKEN_ENDPOINT,
    ) -> Credential:
        """A new key pair; the old keys keep working for `expires_old_after`, then expire."""
        if expires_old_after < timedelta(0):
            raise InvalidInputError("the old key's grace period cannot be negative")
        key = DPoPKey.generate("EdDSA")
        self.store.rotate_agent_key(
            agent, _public_key(key, None), old_expires_at=self._clock() + expires_old_after
        )
        record = self.store.get_agent(agent)
        self._emit(
            lambda at: caep.credential_change(
                record.id,
                at=at,
                credential_type=caep.AGENT_KEY_CREDENTIAL,
                change_type="update",
                friendly_name=f"key {key.thumbprint}",
            )
        )
        return _credential(record, key, token_endpoint)

    def revoke_agent_key(self, agent: str, kid: str) -> AgentKey:
        revoked = self.store.revoke_agent_key(agent, kid)
        self._emit(
            lambda at: caep.credential_change(
                revoked.agent_id,
                at=at,
                credential_type=caep.AGENT_KEY_CREDENTIAL,
                change_type="revoke",
                friendly_name=f"key {kid}",
            )
        )
        return revoked

    # groups

    def create_group(self, name: str, description: str = "") -> Group:
        return self.store.create_group(name, description)

    def list_groups(self) -> list[Group]:
        return self.store.list_groups()

    def get_group(self, ref: str) -> Group:
        return self.store.get_group(ref)

    def group_members(self, ref: str) -> tuple[list[str], list[str]]:
        """The names of a group's users and of its agents."""
        return self.store.group_members(ref)

    def delete_group(self, ref: str) -> None:
        self.store.delete_group(ref)

    def add_to_group(self, group: str, kind: Literal["user", "agent"], member: str) -> None:
        self.store.set_group_member(group, kind, member, present=True)

    def remove_from_group(self, group: str, kind: Literal["user", "agent"], member: str) -> None:
        self.store.set_group_member(group, kind, member, present=False)


def write_credential(path: Path, credential: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write the credential as JSON readable by its owner only (0600), atomically.

    Steps: 1. write a temporary file created 0600 in the target folder (never wider, not even
    for a moment); 2. flush it to disk; 3. link it into place, which fails if the target exists,
    or with `overwrite` rename it over the target; 4. remove the temporary name.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise ConflictError(
            f"{path} already exists", hint="choose another path with -o, or remove that file"
        )
    data = (json.dumps(dict(credential), indent=2) + "\n").encode()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already creates 0600; say so, whatever the platform
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConflictError(f"{path} already exists") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_credential(path: Path) -> Credential:
    """Load a credential file, refusing one others can read or one missing a field."""
    path = Path(path)
    if path.stat().st_mode & 0o077:
        raise InvalidInputError(
            f"{path} is readable by others", hint=f"restrict it: chmod 600 {path}"
        )
    try:
        credential = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read the credential {path}: {exc}") from None
    if not isinstance(credential, dict) or any(f not in credential for f in CREDENTIAL_FIELDS):
        raise InvalidInputError(
            f"{path} is not a Corral credential",
            hint=f"it needs the fields {', '.join(CREDENTIAL_FIELDS)}",
        )
    return credential
