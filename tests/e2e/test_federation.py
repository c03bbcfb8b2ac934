"""Federation and console logins on the real `corral up`, with a real OpenID Connect provider
(oidc-provider-mock) on loopback.

- A workload identity token of the provider (an ID token whose `aud` is the configured
  audience) is exchanged at /v1/token with a DPoP proof, and the Corral token lists pools and
  acquires a PC; unmapped subjects, another audience and a replay are refused.
- A user signs in to the console with a password: the cookie opens the session viewer and its
  screenshots; a POST without this server's Origin is refused; a revoke and a disable end the
  session on the next request.
- A user signs in to the console through the provider (authorization code flow with PKCE).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.identity import CLIENT_ASSERTION_TYPE, DPoPKey

from ..oidc_mock import AUTHLIB_WARNINGS, MockProvider, mock_provider
from .conftest import Server

pytestmark = AUTHLIB_WARNINGS

CLIENT_ID = "corral-e2e"
SECRET = "e2e-client-secret-value"  # noqa: S105
PASSWORD = "correct horse battery"  # noqa: S105


class BoundToken(httpx.Auth):
    """Sends a DPoP-bound token with a fresh proof on every request."""

    def __init__(self, token: str, key: DPoPKey) -> None:
        self.token = token
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = str(request.url.copy_with(query=None))
        request.headers["Authorization"] = f"DPoP {self.token}"
        request.headers["DPoP"] = self.key.proof(request.method, url, access_token=self.token)
        yield request


@pytest.fixture(scope="module")
def idp() -> Iterator[MockProvider]:
    with mock_provider() as provider:
        yield provider


@pytest.fixture(scope="module")
def federated(server: Server, idp: MockProvider, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Provider `ci` configured with the CLI, trusted for assertions and console logins."""
    secret = tmp_path_factory.mktemp("fed") / "client-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    added = server.corral(
        "federation", "add", "ci",
        "--issuer", idp.issuer,
        "--audience", CLIENT_ID,
        "--jwks-uri", idp.jwks_uri,
        "--client-id", CLIENT_ID,
        "--client-secret-file", str(secret),
        "--console", "--assertions",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    shown = server.corral("federation", "show", "ci")
    assert shown.returncode == 0 and "set" in shown.stdout
    for output in (added, shown, server.corral("federation", "list")):
        assert SECRET not in output.stdout + output.stderr
    return "ci"


def _token(server: Server, assertion: str, key: DPoPKey) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    proof = key.proof("POST", f"{server.url}/v1/token")
    return server.anon.post("/v1/token", data=form, headers={"DPoP": proof})


def test_workload_token_acquires_a_pc(server: Server, idp: MockProvider, federated: str) -> None:
    linked = server.corral("federation", "link", federated, "repo:acme/app", "--agent", "agent-e2e")
    assert linked.returncode == 0, linked.stderr
    assert "repo:acme/app" in server.corral("federation", "subjects", federated).stdout
    server.create_pool("fed", warm=1, max=2)
    server.wait_ready("fed", 1)

    key = DPoPKey.generate()
    workload = idp.id_token("repo:acme/app", CLIENT_ID)
    r = _token(server, workload, key)
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "DPoP"  # noqa: S105
    with httpx.Client(
        base_url=server.url, timeout=60, auth=BoundToken(r.json()["access_token"], key)
    ) as agent:
        pools = agent.get("/v1/pools")
        assert pools.status_code == 200 and "fed" in [p["name"] for p in pools.json()]
        acquired = agent.post("/v1/pools/fed/sessions", json={"wait_s": 60})
        assert acquired.status_code == 201, acquired.text
        session = acquired.json()
        mine = agent.get("/v1/sessions").json()
        assert [s["session_id"] for s in mine] == [session["session_id"]]  # the agent's own
        released = agent.delete(f"/v1/sessions/{session['session_id']}")
        assert released.status_code == 200

    # the same workload token again: refused (single use)
    again = _token(server, workload, key)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    # a subject nobody linked, and a token for another audience
    for refused in (
        idp.id_token("repo:acme/other", CLIENT_ID),
        idp.id_token("repo:acme/app", "someone-else"),
    ):
        r = _token(server, refused, key)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    # without a DPoP proof
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": idp.id_token("repo:acme/app", CLIENT_ID),
    }
    assert server.anon.post("/v1/token", data=form).status_code == 400
    # unlinked: refused from then on
    assert server.corral("federation", "unlink", federated, "repo:acme/app").returncode == 0
    r = _token(server, idp.id_token("repo:acme/app", CLIENT_ID), key)
    assert r.status_code == 401


def _user(server: Server, name: str) -> None:
    argv = ["user", "create", name, "--role", "admin", "--password-stdin"]
    made = subprocess.run(
        [sys.executable, "-m", "corral", *argv],
        env={**server.env, "COLUMNS": "250"},
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr


@pytest.fixture(scope="module")
def session_id(server: Server) -> Iterator[str]:
    """A PC acquired by the e2e agent, for the console to look at."""
    server.create_pool("watched", warm=1, max=1)
    server.wait_ready("watched", 1)
    r = server.acquire("watched", wait_s=60)
    assert r.status_code == 201, r.text
    sid = str(r.json()["session_id"])
    yield sid
    server.agent.delete(f"/v1/sessions/{sid}")


def _browser(server: Server, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60, **kw)


def test_console_password_login(server: Server, session_id: str) -> None:
    _user(server, "watcher")
    _user(server, "watcher2")
    viewer = f"/sessions/{session_id}/viewer"
    with _browser(server) as browser, _browser(server) as second:
        r = browser.post(
            "/console/login", data={"username": "watcher", "password": PASSWORD, "code": ""}
        )
        assert r.status_code == 303, r.text
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        page = browser.get(viewer)
        assert page.status_code == 200 and "screenshot" in page.text
        shot = browser.get(f"/v1/sessions/{session_id}/screenshot")
        assert shot.status_code == 200 and shot.content.startswith(b"\x89PNG")
        landing = browser.get("/console")
        assert landing.status_code == 200 and session_id in landing.text
        # not a token for the API, and no POST without this server's Origin
        assert browser.get("/v1/pools").status_code == 401
        assert browser.post("/console/logout").status_code == 403
        evil = browser.post("/console/logout", headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        assert browser.get(viewer).status_code == 200

        # a wrong password looks like an unknown user
        bad = second.post("/console/login", data={"username": "watcher2", "password": "nope"})
        unknown = second.post("/console/login", data={"username": "ghost", "password": "nope"})
        assert bad.status_code == unknown.status_code == 401 and bad.text == unknown.text
        ok = second.post("/console/login", data={"username": "watcher2", "password": PASSWORD})
        assert ok.status_code == 303 and second.get(viewer).status_code == 200

        # an admin's revoke: refused on the next request, for this user only
        revoked = server.http.post("/v1/users/watcher/revoke")
        assert revoked.status_code == 200, revoked.text
        assert browser.get(viewer).status_code == 401
        assert browser.get(f"/v1/sessions/{session_id}/screenshot").status_code == 401
        assert second.get(viewer).status_code == 200
        # disabling a user: the same
        assert server.corral("user", "disable", "watcher2").returncode == 0
        assert second.get(viewer).status_code == 401
        r = second.get("/console")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_console_oidc_login(
    server: Server, idp: MockProvider, federated: str, session_id: str
) -> None:
    _user(server, "oidc-admin")
    linked = server.corral("federation", "link", federated, "ops@idp", "--user", "oidc-admin")
    assert linked.returncode == 0, linked.stderr
    with _browser(server, follow_redirects=True) as browser:
        form = browser.get("/console/oidc/ci/start")  # -> the provider's authorization form
        assert form.status_code == 200 and str(form.url).startswith(idp.issuer), form.url
        signed_in = browser.post(str(form.url), data={"sub": "ops@idp"})  # -> our callback
        assert signed_in.status_code == 200, signed_in.text
        assert str(signed_in.url).startswith(f"{server.url}/console/oidc/ci/callback")
        assert "Signed in" in signed_in.text
        landing = browser.get("/console")
        assert landing.status_code == 200 and session_id in landing.text
        assert browser.get(f"/sessions/{session_id}/viewer").status_code == 200
        logout = browser.post("/console/logout", headers={"Origin": server.url})
        assert logout.status_code == 200 and "sign in" in logout.text.lower()  # the login form
        assert browser.get(f"/sessions/{session_id}/viewer").status_code == 401
    # a provider subject nobody linked gets no session
    with _browser(server, follow_redirects=True) as stranger:
        form = stranger.get("/console/oidc/ci/start")
        r = stranger.post(str(form.url), data={"sub": "stranger@idp"})
        assert r.status_code == 401 and "corral_console" not in stranger.cookies


def test_cli_refusals(server: Server, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    r = server.corral(
        "federation", "add", "bad", "--issuer", "https://bad.example", "--audience", "x",
        "--jwks", str(jwks), "--assertions",
    )  # fmt: skip
    assert r.returncode == 2 and "private" in r.stderr
    r = server.corral(
        "federation", "add", "plain", "--issuer", "http://idp.example", "--audience", "x",
        "--jwks-uri", "http://idp.example/jwks", "--assertions",
    )  # fmt: skip
    assert r.returncode == 2 and "https" in r.stderr
    assert server.corral("federation", "show", "nope").returncode == 3
    r = server.corral("federation", "link", "ci", "s", "--agent", "a", "--user", "u")
    assert r.returncode == 2 and "exactly one" in r.stderr
