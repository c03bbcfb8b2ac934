"""Federation rows: trusted OIDC providers and which of their subjects are which Corral identity.

Linking or unlinking a subject changes who can sign in, so it bumps the directory version like
every other access-affecting write.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, RowMapping, delete, insert, select

from corral.domain.federation import (
    FederatedSubject,
    OidcProvider,
    PrincipalKind,
    validate_provider,
)
from corral.errors import ConflictError, NotFoundError
from corral.store._directory import _agent_row, _bump, _user_row
from corral.store._secrets import CLIENT_SECRET, StoreKeys
from corral.store._tables import federated_subjects, oidc_providers

__all__ = [
    "create_provider",
    "delete_provider",
    "get_provider",
    "get_provider_by_issuer",
    "link_subject",
    "list_providers",
    "list_subjects",
    "provider_exists_error",
    "resolve_subject",
    "unlink_subject",
]


def _provider_not_found(what: str) -> NotFoundError:
    return NotFoundError(
        f"no OIDC provider {what}", hint="corral federation list shows the trusted providers"
    )


def provider_exists_error(name: str, issuer: str) -> ConflictError:
    return ConflictError(
        f"a provider named {name!r} or with issuer {issuer!r} already exists",
        hint="choose another name, or remove that provider first (corral federation remove)",
    )


def _provider(row: RowMapping, keys: StoreKeys) -> OidcProvider:
    secret = row["client_secret"]
    return OidcProvider(
        name=row["name"],
        issuer=row["issuer"],
        audience=row["audience"],
        jwks_uri=row["jwks_uri"],
        jwks=json.loads(row["jwks"]) if row["jwks"] else None,
        client_id=row["client_id"],
        client_secret=keys.open(secret, CLIENT_SECRET, row["name"]) if secret else None,
        allow_console=bool(row["allow_console"]),
        allow_assertions=bool(row["allow_assertions"]),
        allow_events=bool(row["allow_events"]),
        created_at=row["created_at"],
    )


def create_provider(
    conn: Connection, p: OidcProvider, now: datetime, keys: StoreKeys
) -> OidcProvider:
    validate_provider(p)
    taken = conn.execute(
        select(oidc_providers.c.name).where(
            (oidc_providers.c.name == p.name) | (oidc_providers.c.issuer == p.issuer)
        )
    ).first()
    if taken:
        raise provider_exists_error(p.name, p.issuer)
    conn.execute(
        insert(oidc_providers).values(
            name=p.name,
            issuer=p.issuer,
            audience=p.audience,
            jwks_uri=p.jwks_uri,
            jwks=json.dumps(p.jwks) if p.jwks is not None else None,
            client_id=p.client_id,
            client_secret=(
                keys.seal(p.client_secret, CLIENT_SECRET, p.name) if p.client_secret else None
            ),
            allow_console=p.allow_console,
            allow_assertions=p.allow_assertions,
            allow_events=p.allow_events,
            created_at=now,
        )
    )
    _bump(conn)
    return get_provider(conn, p.name, keys)


def _provider_row(conn: Connection, name: str) -> RowMapping:
    row = conn.execute(select(oidc_providers).where(oidc_providers.c.name == name)).mappings()
    found = row.first()
    if found is None:
        raise _provider_not_found(f"named {name!r}")
    return found


def get_provider(conn: Connection, name: str, keys: StoreKeys) -> OidcProvider:
    return _provider(_provider_row(conn, name), keys)


def get_provider_by_issuer(conn: Connection, issuer: str, keys: StoreKeys) -> OidcProvider:
    query = select(oidc_providers).where(oidc_providers.c.issuer == issuer)
    found = conn.execute(query).mappings().first()
    if found is None:
        raise _provider_not_found(f"with issuer {issuer!r}")
    return _provider(found, keys)


def list_providers(conn: Connection, keys: StoreKeys) -> list[OidcProvider]:
    rows = conn.execute(select(oidc_providers).order_by(oidc_providers.c.name)).mappings()
    return [_provider(r, keys) for r in rows]


def delete_provider(conn: Connection, name: str) -> None:
    _provider_row(conn, name)
    conn.execute(delete(federated_subjects).where(federated_subjects.c.provider == name))
    conn.execute(delete(oidc_providers).where(oidc_providers.c.name == name))
    _bump(conn)


def _subject(row: RowMapping) -> FederatedSubject:
    kind: PrincipalKind = "user" if row["user_id"] is not None else "agent"
    return FederatedSubject(
        provider=row["provider"],
        subject=row["subject"],
        kind=kind,
        principal_id=row["user_id"] or row["agent_id"],
        created_at=row["created_at"],
    )


def link_subject(
    conn: Connection,
    provider: str,
    subject: str,
    kind: PrincipalKind,
    principal_ref: str,
    now: datetime,
) -> FederatedSubject:
    """Map `subject` at `provider` to a Corral user or agent (by id or name)."""
    _provider_row(conn, provider)
    principal_id = (_user_row if kind == "user" else _agent_row)(conn, principal_ref)["id"]
    existing = resolve_subject(conn, provider, subject)
    if existing is not None:
        raise ConflictError(
            f"subject {subject!r} at {provider!r} is already linked to {existing.principal_id}",
            hint="unlink it first (corral federation unlink)",
        )
    conn.execute(
        insert(federated_subjects).values(
            provider=provider,
            subject=subject,
            user_id=principal_id if kind == "user" else None,
            agent_id=principal_id if kind == "agent" else None,
            created_at=now,
        )
    )
    _bump(conn)
    found = resolve_subject(conn, provider, subject)
    assert found is not None
    return found


def unlink_subject(conn: Connection, provider: str, subject: str) -> None:
    result = conn.execute(
        delete(federated_subjects).where(
            (federated_subjects.c.provider == provider) & (federated_subjects.c.subject == subject)
        )
    )
    if result.rowcount == 0:
        raise NotFoundError(
            f"subject {subject!r} at {provider!r} is not linked",
            hint="corral federation subjects lists the links",
        )
    _bump(conn)


def resolve_subject(conn: Connection, provider: str, subject: str) -> FederatedSubject | None:
    query = select(federated_subjects).where(
        (federated_subjects.c.provider == provider) & (federated_subjects.c.subject == subject)
    )
    row = conn.execute(query).mappings().first()
    return _subject(row) if row is not None else None


def list_subjects(conn: Connection, provider: str | None = None) -> list[FederatedSubject]:
    query = select(federated_subjects).order_by(
        federated_subjects.c.provider, federated_subjects.c.subject
    )
    if provider is not None:
        query = query.where(federated_subjects.c.provider == provider)
    return [_subject(r) for r in conn.execute(query).mappings()]
