"""WebSocket handshakes authenticate exactly as HTTP requests do (the one transport-agnostic
`RequestAuthenticator`), through the real app's middleware: a DPoP-bound token with a proof for
the handshake's GET, or a console cookie with this server's Origin (no cross-site WebSocket
hijacking); a refusal is the same 401 problem with its DPoP challenge.

Starlette's TestClient drives the handshake in process: uvicorn here has no WebSocket library
(neither `websockets` nor `wsproto` is a dependency), so a real server cannot serve one yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocket

from corral.api.authn import principal_of
from tests.api import test_console
from tests.api.conftest import BASE, Client, Env

WS_PATH = "/v1/live-test"
CONSOLE_WS_PATH = "/console/live-test"


def _add_echo(app: object, path: str) -> None:
    """A WebSocket route that answers with the caller the middleware established."""

    async def echo(websocket: WebSocket) -> None:
        who = principal_of(websocket)
        await websocket.accept()
        await websocket.send_json({"caller": who.id if who else None})
        await websocket.close()

    app.router.add_websocket_route(path, echo)  # type: ignore[attr-defined]


@pytest.fixture
def ws_env(env: Env) -> Env:
    _add_echo(env.app, WS_PATH)
    return env


def test_a_dpop_handshake_is_authenticated(ws_env: Env, admin: Client) -> None:
    assert ws_env.http is not None
    token = admin.tokens.get()
    proof = admin.tokens.key.proof("GET", BASE + WS_PATH, access_token=token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    with ws_env.http.websocket_connect(WS_PATH, headers=headers) as ws:
        assert ws.receive_json() == {"caller": ws_env.directory.get_user("root").id}


def test_a_handshake_without_a_token_gets_the_401_problem(ws_env: Env) -> None:
    assert ws_env.http is not None
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        ws_env.http.websocket_connect(WS_PATH),
    ):
        pass  # refused at the handshake
    answer = refused.value
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "unauthenticated"
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("DPoP ") and 'algs="EdDSA ES256 Ed25519"' in challenge
    assert f'resource_metadata="{BASE}/.well-known/oauth-protected-resource"' in challenge


def test_a_proof_for_another_method_is_refused(ws_env: Env, admin: Client) -> None:
    assert ws_env.http is not None
    token = admin.tokens.get()
    proof = admin.tokens.key.proof("POST", BASE + WS_PATH, access_token=token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        ws_env.http.websocket_connect(WS_PATH, headers=headers),
    ):
        pass  # refused at the handshake
    assert refused.value.status_code == 401
    assert refused.value.json()["code"] == "invalid_dpop_proof"


@pytest.fixture
def console_env(tmp_path: Path) -> Iterator[test_console.Env]:
    e = test_console.Env(tmp_path)
    _add_echo(e.app, CONSOLE_WS_PATH)
    yield e
    e.store.close()


def test_a_console_cookie_opens_a_console_websocket_from_this_origin_only(
    console_env: test_console.Env,
) -> None:
    assert console_env.login().status_code == 303
    client = console_env.client
    with client.websocket_connect(CONSOLE_WS_PATH, headers={"Origin": BASE}) as ws:
        assert ws.receive_json() == {"caller": console_env.ops}
    # Another site's page cannot open it with the user's cookie, nor can a page without Origin.
    for headers in ({"Origin": "http://evil.example"}, {}):
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect(CONSOLE_WS_PATH, headers=headers),
        ):
            pass  # refused at the handshake
        assert refused.value.status_code == 403, headers
        assert refused.value.json()["title"] == "Cross-origin request refused"
