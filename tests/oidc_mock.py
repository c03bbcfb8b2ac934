"""A real OpenID Connect provider on loopback for federation tests: oidc-provider-mock (Flask,
authlib) served by werkzeug in a thread, plus a driver for its authorization code flow.

The mock accepts any client id and secret (but insists on one: no public clients) and any
redirect URI, signs ID tokens with RS256
(`aud` = the client id, `iss` = its own URL) and shows an authorization form that takes the
subject to sign in as (`sub`) in a POST.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import werkzeug.serving

with warnings.catch_warnings():  # it imports authlib.jose, which warns it is deprecated
    import authlib.deprecate  # noqa: F401 (installs an "always" filter; undone on exit)

    warnings.simplefilter("ignore", DeprecationWarning)
    import oidc_provider_mock


class MockProvider:
    """The running provider: `issuer` is its URL (http://127.0.0.1:PORT)."""

    def __init__(self, server: werkzeug.serving.BaseWSGIServer) -> None:
        self.server = server
        self.issuer = f"http://127.0.0.1:{server.server_port}"
        self.http = httpx.Client(base_url=self.issuer, timeout=30)

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    def jwks(self) -> dict[str, Any]:
        return dict(self.http.get("/jwks").json())

    def sign_in(self, authorize_url: str, sub: str) -> str:
        """Submit the mock's authorization form as `sub`; returns where it redirects (the
        client's redirect URI with `code` and `state`)."""
        form = self.http.get(authorize_url)
        assert form.status_code == 200, form.text
        answer = self.http.post(authorize_url, data={"sub": sub})
        assert answer.status_code == 302, answer.text
        return str(answer.headers["location"])

    def id_token(
        self,
        sub: str,
        client_id: str,
        *,
        redirect_uri: str = "http://127.0.0.1/callback",
        nonce: str | None = None,
    ) -> str:
        """An ID token for `sub` with `aud` = `client_id`, by driving the code flow (the mock
        issues tokens no other way); used as a workload identity token."""
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid",
            "state": "s",
        }
        if nonce is not None:
            params["nonce"] = nonce
        back = self.sign_in(f"/oauth2/authorize?{urlencode(params)}", sub)
        code = parse_qs(urlsplit(back).query)["code"][0]
        answer = self.http.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "client_secret": "any",  # the mock takes any secret, but wants one
            },
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id_token"])


@contextmanager
def mock_provider(token_lifetime: timedelta = timedelta(minutes=10)) -> Iterator[MockProvider]:
    """Serve a fresh provider (own keys, own users) on a free loopback port until exit."""
    app = oidc_provider_mock.app(
        require_nonce=False, issue_refresh_token=False, access_token_max_age=token_lifetime
    )
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    provider = MockProvider(server)
    try:
        yield provider
    finally:
        provider.http.close()
        server.shutdown()
        thread.join(10)
        server.server_close()


#: for test modules that run the mock: authlib warns about its own deprecated internals
#: (in the server thread, while a test runs); those are not Corral's warnings
AUTHLIB_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib")
