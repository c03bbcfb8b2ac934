"""The whole ASGI app (`create_app`) in process: real store (SQLite), real token endpoint, real
authentication middleware and DPoP proofs; only the PC runtime is a fake (no PCs here)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from corral.api.app import create_app
from corral.audit.checkpoints import LogKeys
from corral.audit.service import AuditService
from corral.client.http import AgentCredential, DPoPAuth, TokenSource
from corral.config import AuditSettings
from corral.identity import SigningKeyring
from corral.identity.directory import Credential, Directory
from corral.identity.token_endpoint import AuthService
from corral.lifecycle.control import ControlPlane
from corral.store import Store
from tests.support.fakes import FakeDriver

BASE = "http://testserver"
TOKEN_URL = f"{BASE}/v1/token"
PASSWORD = "a long enough password"  # noqa: S105
_AUDIT = AuditSettings(origin="testserver/audit", witness_keys=None)
# Members no answer may carry: secrets of users, and private JWK members (RFC 7518 6.2.2, 6.3.2)
_SECRET_FIELDS = frozenset({"password", "password_hash", "totp_secret"})
_PRIVATE_JWK = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


def secrets_in(body: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Where `body` holds a secret: user secrets anywhere, private key members anywhere but the
    one-time credential (`credential.key`) of create and rotate answers."""
    found: list[str] = []
    if isinstance(body, Mapping):
        for name, value in body.items():
            where = (*path, str(name))
            if name in _SECRET_FIELDS:
                found.append(".".join(where))
            if name in _PRIVATE_JWK and path != ("credential", "key"):
                found.append(".".join(where))
            found += secrets_in(value, where)
    elif isinstance(body, list):
        for item in body:
            found += secrets_in(item, path)
    return found


class Client:
    """One identity's signed requests (DPoP, via `TokenSource`), every answer checked for
    secrets on the way back."""

    def __init__(self, http: TestClient, credential: Credential) -> None:
        self.http = http
        self.credential = credential
        self.tokens = TokenSource(AgentCredential.from_mapping(credential), client=http)
        self.auth = DPoPAuth(self.tokens).for_mcp()

    def __call__(
        self, method: str, path: str, *, check_secrets: bool = True, **kw: Any
    ) -> httpx2.Response:
        response = self.http.request(method, path, auth=self.auth, **kw)
        media = response.headers.get("content-type", "").split(";")[0].strip()
        json_answer = media in ("application/json", "application/problem+json")
        if check_secrets and json_answer:
            assert secrets_in(response.json()) == [], response.text
        return response

    def once(self, method: str, path: str, token: str | None = None) -> httpx2.Response:
        """One request with the current (or given) token and a fresh proof: no retry, so a
        refusal shows as it is."""
        token = token or self.tokens.get()
        proof = self.tokens.key.proof(method, BASE + path, access_token=token)
        return self.http.request(
            method, path, headers={"Authorization": f"DPoP {token}", "DPoP": proof}
        )


class Env:
    """A server with an admin, a security admin, a sponsor (all with key credentials) and an
    agent `bot` sponsored by the sponsor."""

    def __init__(self, tmp: Path) -> None:
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        self.directory = Directory(self.store)
        d = self.directory
        d.create_user("root", roles=["admin"])
        d.create_user("sec", roles=["security_admin"])
        d.create_user("alice", roles=["sponsor"], password=PASSWORD)
        self.creds = {
            name: d.create_user_credential(name, TOKEN_URL) for name in ("root", "sec", "alice")
        }
        self.creds["bot"] = d.create_agent("bot", ["alice"], token_endpoint=TOKEN_URL)
        self.auth = AuthService(self.store, SigningKeyring.generate(), BASE, TOKEN_URL)
        self.driver = FakeDriver()
        self.audit = AuditService.open(self.store, LogKeys.load(tmp / "data", _AUDIT))
        self.app = create_app(
            ControlPlane(self.store, self.driver),
            base_url=BASE,
            manage_pools=False,
            auth=self.auth,
            allowed_hosts=["testserver"],
            audit=self.audit,
        )
        self.http: TestClient | None = None

    def client(self, credential: Credential) -> Client:
        assert self.http is not None
        return Client(self.http, credential)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    with TestClient(e.app, base_url=BASE) as http:
        e.http = http
        yield e
    e.store.close()


@pytest.fixture
def admin(env: Env) -> Client:
    return env.client(env.creds["root"])


@pytest.fixture
def security(env: Env) -> Client:
    return env.client(env.creds["sec"])


@pytest.fixture
def sponsor(env: Env) -> Client:
    return env.client(env.creds["alice"])


@pytest.fixture
def bot(env: Env) -> Client:
    return env.client(env.creds["bot"])
