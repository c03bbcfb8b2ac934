"""Console sign-in under abuse (issue 9), in process on the real app: a TOTP code is good once
however it is spelled, the per-account limit holds whatever names the account, and a logout
outlives the process that recorded it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from starlette.testclient import TestClient

from corral.api.app import create_app
from corral.console.service import ConsoleSettings
from corral.identity.token_endpoint import AuthService, RateLimit
from tests.api.test_console import BASE, COOKIE, Env
from tests.oidc_mock import AUTHLIB_WARNINGS

pytestmark = AUTHLIB_WARNINGS

FULL_WIDTH = {ord("0") + i: 0xFF10 + i for i in range(10)}  # full-width digits, U+FF10 to U+FF19


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def test_a_totp_code_works_once_however_it_is_spelled(tmp_path: Path) -> None:
    env = Env(tmp_path, per_user=RateLimit(rate=0.01, burst=10))
    enrolment = env.directory.enroll_totp("tina")
    totp = pyotp.TOTP(enrolment.secret)
    env.directory.confirm_totp("tina", totp.now())
    code = totp.now()
    # Only ASCII digits are a code: the full-width spelling is refused outright.
    assert env.login("tina", code=code.translate(FULL_WIDTH)).status_code == 401
    assert env.login("tina", code=f"{code[:3]} {code[3:]}").status_code == 303
    # Before the fix each spelling was a new replay key while the verifier took them all.
    for again in (code, f" {code} ", code.translate(FULL_WIDTH), f"{code[:3]}\u3000{code[3:]}"):
        assert env.login("tina", code=again).status_code == 401, repr(again)
    env.store.close()


def test_the_per_account_limit_counts_the_account_not_its_spelling(tmp_path: Path) -> None:
    env = Env(tmp_path, per_user=RateLimit(rate=0.01, burst=3))
    try:
        ops_id = env.ops
        for name in ("ops", ops_id, " OPS "):  # the name, the id, another spelling
            assert env.login(name, password="wrong password!!").status_code == 401  # noqa: S106
        r = env.login(ops_id)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "too many sign-in attempts" in r.text
    finally:
        env.store.close()


def _restarted(env: Env) -> TestClient:
    """The same store and signing keys in a new app: what a restart of `corral up` gives."""
    auth = AuthService(env.store, env.keyring, BASE, f"{BASE}/v1/token")
    app = create_app(
        env.control,
        base_url=BASE,
        auth=auth,
        allowed_hosts=["testserver"],
        console_settings=ConsoleSettings(),
    )
    return TestClient(app, base_url=BASE, follow_redirects=False)


def test_a_logout_survives_a_restart(env: Env) -> None:
    viewer = f"/sessions/{env.session_id}/viewer"
    assert env.login().status_code == 303
    cookie = env.client.cookies[COOKIE]
    kept = env.browser()  # a second browser tab's copy, or a thief's
    kept.cookies.set(COOKIE, cookie)
    assert kept.get(viewer).status_code == 200
    assert env.client.post("/console/logout", headers={"Origin": BASE}).status_code == 303
    assert kept.get(viewer).status_code == 401
    after = _restarted(env)
    after.cookies.set(COOKIE, cookie)
    assert after.get(viewer).status_code == 401
    # another session of the same user is untouched by that logout, before and after
    assert env.login().status_code == 303
    other = _restarted(env)
    other.cookies.set(COOKIE, env.client.cookies[COOKIE])
    assert other.get(viewer).status_code == 200
