"""Console sign-in in process: the real app (middleware, routes, services) on SQLite, with the
OIDC logins going to a real OpenID provider on loopback (oidc-provider-mock).

No PCs: a session row stands in for an acquired PC, which is all the viewer page reads."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
from starlette.testclient import TestClient

from corral.api.app import create_app
from corral.console.service import ConsoleSettings
from corral.domain.federation import OidcProvider
from corral.domain.models import PCState, PoolSpec
from corral.domain.policy import Approval, ApprovalState
from corral.identity import DPoPKey, SigningKeyring, issue_access_token
from corral.identity.directory import Directory
from corral.identity.token_endpoint import AuthService, RateLimit
from corral.lifecycle.control import ControlPlane
from corral.store import Store
from tests.oidc_mock import AUTHLIB_WARNINGS, MockProvider, mock_provider

pytestmark = AUTHLIB_WARNINGS

BASE = "http://testserver"
PASSWORD = "correct horse battery"  # noqa: S105
COOKIE = "corral_console"


class Env:
    def __init__(self, tmp: Path, **console: Any) -> None:
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        self.directory = Directory(self.store)
        self.directory.create_user("ops", roles=["admin"], password=PASSWORD)
        self.directory.create_user("tina", roles=["sponsor"], password=PASSWORD)
        self.agent_id = self.directory.create_agent("bot", sponsors=["tina"])["agent_id"]
        self.ops = self.directory.get_user("ops").id
        self.keyring = SigningKeyring.generate()
        auth = AuthService(self.store, self.keyring, BASE, f"{BASE}/v1/token")
        self.control = ControlPlane(self.store, runtime=None)  # type: ignore[arg-type]
        self.control.policy.start()  # the shipped policies (the lifespan is not run here)
        app = create_app(
            self.control,
            base_url=BASE,
            auth=auth,
            allowed_hosts=["testserver"],
            console_settings=ConsoleSettings(**console),
        )
        self.app = app
        self.client = self.browser()
        self.session_id = self._session()

    def browser(self) -> TestClient:
        return TestClient(self.app, base_url=BASE, follow_redirects=False)

    def _session(self) -> str:
        """A session of the agent, as an acquire leaves it in the store."""
        self.store.create_pool(PoolSpec(name="p", image="minimal", warm=0))
        self.store.add_pc("p", "pc-1", PCState.READY)
        now = datetime.now(UTC)
        found = self.store.acquire(
            "p",
            session_id="s-console",
            expires_at=now + timedelta(hours=1),
            idempotency_key=None,
            request_hash="h",
            now=now,
            owner=self.agent_id,
        )
        assert found is not None
        return found[0].id

    def login(
        self, username: str = "ops", password: str = PASSWORD, code: str = "", **kw: Any
    ) -> Any:
        data = {"username": username, "password": password, "code": code}
        return self.client.post("/console/login", data=data, **kw)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def test_local_login_sets_a_strict_cookie_that_opens_the_console_and_viewer(env: Env) -> None:
    assert env.client.get("/console/login").status_code == 200
    r = env.login()
    assert r.status_code == 303 and r.headers["location"] == "/console"
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict", "Max-Age=28800"):
        assert attribute.lower() in set_cookie.lower(), set_cookie
    assert "secure" not in set_cookie.lower()  # plain http on loopback
    page = env.client.get("/console")
    assert page.status_code == 200 and env.session_id in page.text
    assert f"/sessions/{env.session_id}/viewer" in page.text
    viewer = env.client.get(f"/sessions/{env.session_id}/viewer")
    assert viewer.status_code == 200 and f"/v1/sessions/{env.session_id}/screenshot" in viewer.text
    assert viewer.headers["content-type"].startswith("text/html")


def test_the_cookie_is_no_token_elsewhere(env: Env) -> None:
    assert env.login().status_code == 303
    cookie = env.client.cookies[COOKIE]
    # not on the API (even reads), not for a write
    assert env.client.get("/v1/pools").status_code == 401
    assert env.client.get(f"/v1/sessions/{env.session_id}").status_code == 401
    r = env.client.post("/v1/pools", json={"name": "x", "image": "minimal"})
    assert r.status_code == 401
    # and not as a token in the Authorization header, bearer or DPoP
    anon = env.browser()
    assert anon.get("/v1/pools", headers={"Authorization": f"Bearer {cookie}"}).status_code == 401
    proof = DPoPKey.generate().proof("GET", f"{BASE}/v1/pools", access_token=cookie)
    r = anon.get("/v1/pools", headers={"Authorization": f"DPoP {cookie}", "DPoP": proof})
    assert r.status_code == 401 and "audience" in r.json()["detail"]


def test_an_access_token_is_no_console_cookie(env: Env) -> None:
    """A DPoP token of the same user, put in the cookie, is refused (wrong audience)."""
    token = issue_access_token(
        env.keyring, issuer=BASE, subject=env.ops, audience=BASE, client_id=env.ops, jkt=None
    ).access_token
    browser = env.browser()
    browser.cookies.set(COOKIE, token)
    r = browser.get(f"/sessions/{env.session_id}/viewer")
    assert r.status_code == 401


def test_login_failures_all_look_the_same(env: Env) -> None:
    messages = set()
    for user, password in [("ops", "wrong password!!"), ("nobody", PASSWORD), ("", "")]:
        r = env.login(user, password)
        assert r.status_code == 401 and COOKIE not in r.headers.get("set-cookie", "")
        messages.add(r.text)
    assert len(messages) == 1 and "name, password or code" in messages.pop()
    env.directory.disable_user("ops")
    r = env.login()
    assert r.status_code == 401 and "name, password or code" in r.text


def test_totp_is_required_once_enabled_and_a_code_works_once(env: Env) -> None:
    enrolment = env.directory.enroll_totp("tina")
    totp = pyotp.TOTP(enrolment.secret)
    env.directory.confirm_totp("tina", totp.now())
    assert env.login("tina").status_code == 401  # password alone
    assert env.login("tina", code="000000").status_code in (401,)
    code = totp.now()
    assert env.login("tina", code=code).status_code == 303
    assert env.login("tina", code=code).status_code == 401  # the same code again


def test_login_is_rate_limited_per_user(tmp_path: Path) -> None:
    env = Env(tmp_path, per_user=RateLimit(rate=0.01, burst=3))
    for _ in range(3):
        assert env.login(password="wrong password!!").status_code == 401  # noqa: S106
    r = env.login()  # even the right password now waits
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert env.login("tina").status_code == 303  # another user is not affected
    env.store.close()


def test_posts_need_a_same_origin_origin(env: Env) -> None:
    assert env.login().status_code == 303
    # no Origin, or another site's: refused (CSRF), and the session still works after
    assert env.client.post("/console/logout").status_code == 403
    evil = {"Origin": "https://evil.example"}
    assert env.client.post("/console/logout", headers=evil).status_code == 403
    assert env.client.get("/console").status_code == 200
    # a login form posted from another site is refused too (login CSRF)
    r = env.login(headers=evil)
    assert r.status_code == 403
    # this server's Origin: logged out, and the old cookie is dead even if replayed
    cookie = env.client.cookies[COOKIE]
    r = env.client.post("/console/logout", headers={"Origin": BASE})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    replayed = env.browser()
    replayed.cookies.set(COOKIE, cookie)
    assert replayed.get(f"/sessions/{env.session_id}/viewer").status_code == 401
    r = replayed.get("/console")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_disable_and_revoke_end_the_session_on_the_next_request(env: Env) -> None:
    viewer = f"/sessions/{env.session_id}/viewer"
    assert env.login().status_code == 303
    assert env.client.get(viewer).status_code == 200
    env.directory.disable_user("ops")
    assert env.client.get(viewer).status_code == 401
    assert env.client.get("/console").status_code == 303  # back to the login form
    env.directory.enable_user("ops")
    assert env.login().status_code == 303
    assert env.client.get(viewer).status_code == 200
    env.store.revoke_tokens("ops")
    assert env.client.get(viewer).status_code == 401
    r = env.client.get(f"/v1/sessions/{env.session_id}/screenshot")
    assert r.status_code == 401  # the viewer's screenshots too


def test_a_user_sees_only_what_it_may(env: Env) -> None:
    # tina sponsors the agent: the shipped policies let her observe its sessions (issue 5)
    assert env.login("tina").status_code == 303
    page = env.client.get("/console")
    assert page.status_code == 200 and env.session_id in page.text
    assert env.client.get(f"/sessions/{env.session_id}/viewer").status_code == 200
    # sam sponsors nobody: he sees nothing, and the session is not found for him
    env.directory.create_user("sam", roles=["sponsor"], password=PASSWORD)
    sam = env.browser()
    answer = sam.post("/console/login", data={"username": "sam", "password": PASSWORD, "code": ""})
    assert answer.status_code == 303
    page = sam.get("/console")
    assert page.status_code == 200 and env.session_id not in page.text
    assert sam.get(f"/sessions/{env.session_id}/viewer").status_code == 404


def test_a_sponsor_answers_approvals_in_the_console(env: Env) -> None:
    """The console lists the pending requests of the sponsor's agents and answers them through
    the same decide_approval as `corral approvals` (same policy, same record of who answered)."""
    now = datetime.now(UTC)
    held = env.store.create_approval(
        Approval(
            id="ap-console",
            agent_id=env.agent_id,
            action="run_command",
            resource='PC::"pc-1"',
            digest="d-console",
            detail={"command": "curl https://example.org"},
            state=ApprovalState.PENDING,
            requested_at=now,
            expires_at=now + timedelta(minutes=15),
        )
    )
    tina = env.browser()
    answer = tina.post(
        "/console/login", data={"username": "tina", "password": PASSWORD, "code": ""}
    )
    assert answer.status_code == 303
    page = tina.get("/console")
    assert (
        page.status_code == 200 and held.id in page.text and "curl https://example.org" in page.text
    )
    # a form posted from another site is refused (CSRF), and nothing is decided
    forged = tina.post(
        f"/console/approvals/{held.id}/approve", headers={"Origin": "https://evil.example"}
    )
    assert forged.status_code == 403
    assert env.store.get_approval(held.id).state is ApprovalState.PENDING
    bad = tina.post(f"/console/approvals/{held.id}/maybe", headers={"Origin": BASE})
    assert bad.status_code == 400
    done = tina.post(f"/console/approvals/{held.id}/approve", headers={"Origin": BASE})
    assert done.status_code == 303 and done.headers["location"] == "/console"
    decided = env.store.get_approval(held.id)
    assert decided.state is ApprovalState.APPROVED
    assert decided.decided_by == env.directory.get_user("tina").id
    assert held.id not in tina.get("/console").text  # answered: no longer waiting


# -- OIDC ----------------------------------------------------------------------------------


@pytest.fixture
def idp() -> Iterator[MockProvider]:
    with mock_provider() as provider:
        yield provider


def _add_provider(env: Env, idp: MockProvider, **changes: Any) -> None:
    fields: dict[str, Any] = {
        "name": "mock",
        "issuer": idp.issuer,
        "audience": "corral-console",
        "jwks_uri": idp.jwks_uri,
        "client_id": "corral-console",
        "client_secret": "s3cret-value",
        "allow_console": True,
        **changes,
    }
    env.store.create_oidc_provider(OidcProvider(**fields))


def _start(client: TestClient) -> str:
    r = client.get("/console/oidc/mock/start")
    assert r.status_code == 303, r.text
    state_cookie = r.headers["set-cookie"]
    assert "httponly" in state_cookie.lower() and "samesite=lax" in state_cookie.lower()
    return str(r.headers["location"])


def test_oidc_login_end_to_end(env: Env, idp: MockProvider) -> None:
    _add_provider(env, idp)
    env.store.link_subject("mock", "ops@idp", "user", "ops")
    assert "/console/oidc/mock/start" in env.client.get("/console/login").text
    location = _start(env.client)
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(f"{idp.issuer}/oauth2/authorize?")
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == ["corral-console"]
    assert query["redirect_uri"] == [f"{BASE}/console/oidc/mock/callback"]
    back = idp.sign_in(location, "ops@idp")
    assert back.startswith(f"{BASE}/console/oidc/mock/callback?")
    r = env.client.get(back)
    assert r.status_code == 200, r.text
    assert 'http-equiv="refresh"' in r.text and COOKIE in r.headers["set-cookie"]
    assert env.client.get(f"/sessions/{env.session_id}/viewer").status_code == 200
    # the code was used: the same callback again is refused
    assert env.client.get(back).status_code == 401


def test_oidc_login_refusals(env: Env, idp: MockProvider) -> None:
    _add_provider(env, idp)
    env.store.link_subject("mock", "ops@idp", "user", "ops")
    env.store.link_subject("mock", "bot@idp", "agent", "bot")

    def callback(sub: str, client: TestClient | None = None, **tamper: str) -> Any:
        client = client or env.browser()
        back = idp.sign_in(_start(client), sub)
        parts = urlsplit(back)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | tamper
        return client.get(f"{parts.path}?{urlencode(query)}")

    for r in (
        callback("stranger@idp"),  # unlinked subject
        callback("bot@idp"),  # linked to an agent
        callback("ops@idp", state="forged"),  # state of another login
    ):
        assert r.status_code == 401 and "identity provider failed" in r.text
        assert COOKIE not in r.headers.get("set-cookie", "")
    # the callback in a browser that did not start the login (login CSRF)
    client = env.browser()
    back = idp.sign_in(_start(client), "ops@idp")
    other = env.browser()
    assert other.get(back).status_code == 401
    # a disabled user
    env.directory.disable_user("ops")
    assert callback("ops@idp").status_code == 401
    # an unknown provider, or one not trusted for console logins
    assert env.client.get("/console/oidc/nope/start").status_code == 400
    env.store.delete_oidc_provider("mock")
    _add_provider(env, idp, allow_console=False, allow_assertions=True)
    assert env.client.get("/console/oidc/mock/start").status_code == 400


def test_the_console_shows_an_agents_hostile_text_as_text(env: Env) -> None:
    """Issue 9, section 4: an approval's command with a bidi override, ANSI escapes, invisible
    characters and HTML reaches the sponsor's page as visible escapes and text, never as the
    characters themselves or as markup."""
    now = datetime.now(UTC)
    env.store.create_approval(
        Approval(
            id="ap-hostile",
            agent_id=env.agent_id,
            action="run_command",
            resource='PC::"pc-1"',
            digest="d-hostile",
            detail={"command": "rm -rf ~ #\u202egnp.exe \x1b[31m\u200b<b>x</b>"},
            state=ApprovalState.PENDING,
            requested_at=now,
            expires_at=now + timedelta(minutes=15),
        )
    )
    assert env.login("tina").status_code == 303
    page = env.client.get("/console")
    assert page.status_code == 200
    assert "rm -rf ~ #\\u202egnp.exe \\x1b[31m\\u200b&lt;b&gt;x&lt;/b&gt;" in page.text
    for hidden in ("\u202e", "\x1b", "\u200b", "<b>"):
        assert hidden not in page.text


def test_viewer_and_screenshot_answers_cannot_be_sniffed_or_framed(env: Env) -> None:
    """Issue 9, section 7: the viewer page carries nosniff, frame protection and a CSP that
    allows its own script (by hash) and nothing else."""
    assert env.login().status_code == 303
    viewer = env.client.get(f"/sessions/{env.session_id}/viewer")
    assert viewer.status_code == 200
    headers = viewer.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    csp = {}
    for part in headers["content-security-policy"].split(";"):
        directive, _, value = part.strip().partition(" ")
        csp[directive] = value
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"] == "'self'" and csp["img-src"] == "blob:"
    # The page's one script and one style are exactly what the CSP's hashes allow.
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", viewer.text, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert csp[directive] == f"'sha256-{digest}'"
    assert "'unsafe-inline'" not in headers["content-security-policy"]
