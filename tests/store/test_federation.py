"""Trusted OIDC providers and subject links in the store, on both databases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.domain.federation import OidcProvider
from corral.domain.identity import Role
from corral.domain.models import PoolSpec
from corral.errors import ConflictError, InvalidInputError, NotFoundError
from corral.store import Store

JWKS = {
    "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]
}
IDP = OidcProvider(
    name="idp",
    issuer="https://idp.example.test",
    audience="corral",
    jwks=JWKS,
    allow_assertions=True,
    allow_events=True,
)


def test_provider_round_trip_and_lookup_by_issuer(store: Store) -> None:
    created = store.create_oidc_provider(IDP)
    assert created.jwks == JWKS and created.allow_assertions and not created.allow_console
    assert store.get_oidc_provider_by_issuer(IDP.issuer) == created
    assert [p.name for p in store.list_oidc_providers()] == ["idp"]
    assert "secret" not in repr(replace(created, client_secret="s3cret"))  # noqa: S106


def test_provider_conflicts_and_bad_config(store: Store) -> None:
    store.create_oidc_provider(IDP)
    with pytest.raises(ConflictError):
        store.create_oidc_provider(replace(IDP, name="other"))  # same issuer
    with pytest.raises(InvalidInputError, match="https"):
        store.create_oidc_provider(replace(IDP, name="plain", issuer="http://idp.example.test"))
    with pytest.raises(InvalidInputError, match="no keys"):
        store.create_oidc_provider(replace(IDP, name="nokeys", issuer="https://x.test", jwks=None))
    with pytest.raises(InvalidInputError, match="client id"):
        store.create_oidc_provider(
            replace(IDP, name="console", issuer="https://y.test", allow_console=True)
        )
    with pytest.raises(NotFoundError):
        store.get_oidc_provider_by_issuer("https://nobody.test")


def test_subject_links_map_to_one_principal_and_bump_version(store: Store) -> None:
    store.create_oidc_provider(IDP)
    user = store.create_user("alice", roles={Role.SPONSOR})
    agent = store.create_agent("bot", sponsors=[user.id])
    before = store.identity_version()
    link = store.link_subject("idp", "workload-1", "agent", "bot")
    assert (link.kind, link.principal_id) == ("agent", agent.id)
    assert store.identity_version() > before
    store.link_subject("idp", "alice@idp", "user", user.id)
    assert store.resolve_subject("idp", "alice@idp").principal_id == user.id  # type: ignore[union-attr]
    with pytest.raises(ConflictError):
        store.link_subject("idp", "workload-1", "user", "alice")
    with pytest.raises(NotFoundError):
        store.link_subject("idp", "x", "agent", "nobody")
    assert len(store.list_subjects("idp")) == 2
    store.unlink_subject("idp", "workload-1")
    assert store.resolve_subject("idp", "workload-1") is None
    with pytest.raises(NotFoundError):
        store.unlink_subject("idp", "workload-1")
    store.delete_oidc_provider("idp")
    assert store.list_subjects() == []


def test_pool_bearer_opt_in_round_trips(store: Store) -> None:
    store.create_pool(PoolSpec(name="open", image="minimal", warm=0, allow_bearer=True))
    store.create_pool(PoolSpec(name="closed", image="minimal", warm=0))
    assert store.get_pool("open").spec.allow_bearer is True
    assert store.get_pool("closed").spec.allow_bearer is False
