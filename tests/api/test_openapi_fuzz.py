"""The OpenAPI document is a contract generators can use: a schema-driven fuzzer (schemathesis)
sends what the document allows, and what it forbids, to a real server, and every answer must
be documented (status, content type, body shape) and none may be a 5xx.

The server is the whole app as `corral up` builds it (token endpoint, authentication, directory,
policies, Shared Signals, console) on uvicorn on loopback, on a real SQLite store, called with a
real DPoP-bound token of an admin (so requests reach the routes rather than stop at a refusal).
Only the PC runtime is a fake that answers every tool (tests/api/test_enforcement.py): the
routes that act on PCs (acquire, the tool actions, screenshot, release) run here against it,
and against real PCs in tests/e2e/test_rest.py. The bootstrap admin's own user is out of reach:
the fuzzer gets its name wrong, never `root`, so it cannot lock itself out mid-run.

Bounded and derandomized for CI: a fixed number of examples per operation and mode, the same
ones every run (docs/api.md "Fuzzing").
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from corral.api.app import create_app
from corral.client.http import AgentCredential, TokenSource
from corral.identity import SigningKeyring
from corral.identity.directory import Directory
from corral.identity.event_receiver import EventReceiver
from corral.identity.token_endpoint import AuthService
from corral.lifecycle.control import ControlPlane
from corral.store import Store
from tests.api.test_enforcement import DesktopRuntime

#: examples per operation, for valid and for invalid input: about 650 requests in all, two
#: to three minutes on two busy cores
EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 4}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# The Shared Signals receiver takes a compact JWS as its body: sent as text.
schemathesis.serializer.alias("application/secevent+jwt", "text/plain")


class _DPoP(requests.auth.AuthBase):
    """A fresh DPoP proof for each request (RFC 9449), over the token of `tokens`."""

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.tokens.get()
        url = str(r.url).split("?", 1)[0]
        r.headers["Authorization"] = f"DPoP {token}"
        r.headers["DPoP"] = self.tokens.key.proof(str(r.method), url, access_token=token)
        return r


class FuzzServer:
    def __init__(self, tmp: Path) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        token_url = f"{self.base}/v1/token"
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        directory = Directory(self.store)
        directory.create_user("root", roles=["admin"])
        credential = directory.create_user_credential("root", token_url)
        control = ControlPlane(self.store, DesktopRuntime())  # type: ignore[arg-type]
        auth = AuthService(self.store, SigningKeyring.generate(), self.base, token_url)
        receiver = EventReceiver(self.store, Directory(self.store), control, audience=self.base)
        app = create_app(
            control, base_url=self.base, manage_pools=False, auth=auth, event_receiver=receiver
        )
        self.tokens = TokenSource(AgentCredential.from_mapping(credential))
        self.http = requests.Session()
        self.http.auth = _DPoP(self.tokens)
        self.http.trust_env = False
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()
        self.store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    s = FuzzServer(tmp_path_factory.mktemp("fuzz"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def spec(server: FuzzServer) -> dict[str, Any]:
    answer = server.http.get(f"{server.base}/openapi.json", timeout=30)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def _operations(spec: dict[str, Any]) -> list[str]:
    return [f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item]


@pytest.mark.timeout(900)  # one test for every operation: well over the usual 300 s when busy
def test_every_operation_survives_the_fuzzer(server: FuzzServer, spec: dict[str, Any]) -> None:
    """Each operation, with valid and with invalid input: no 5xx, every answer documented."""
    # Every request carries the admin's token: authentication is not what is fuzzed here
    # (tests/api/test_enforcement.py, tests/e2e/test_attacks.py), so the fuzzer does not
    # try requests without it.
    schema = schemathesis.openapi.from_dict(_without_security(spec))
    failures: list[str] = []
    ran: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err fails the test here
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(
                max_examples=EXAMPLES[mode],
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def fuzz(case: schemathesis.Case[Any]) -> None:
                if _hits_root(case):
                    return
                response = case.call(base_url=server.base, session=server.http, timeout=60)
                case.validate_response(response, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid: no parameters, no body
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (AssertionError, BaseExceptionGroup) as exc:  # every operation, then report
                failures.append(f"{operation.label} [{mode.value}]: {_summary(exc)}")
            ran.append(operation.label)
    assert len(set(ran)) == len(_operations(spec))
    assert failures == [], "\n\n".join(failures)


def _without_security(spec: dict[str, Any]) -> dict[str, Any]:
    paths = {
        path: {m: {k: v for k, v in op.items() if k != "security"} for m, op in item.items()}
        for path, item in spec["paths"].items()
    }
    return {**spec, "paths": paths}


def _hits_root(case: schemathesis.Case[Any]) -> bool:
    """A request that names the fuzzing admin (by chance): not sent (see the module doc)."""
    return any(str(v).strip().lower() == "root" for v in (case.path_parameters or {}).values())


def _summary(exc: BaseException) -> str:
    """The failure without the reproduction command (it carries a token)."""
    return str(exc).split("Reproduce with:", 1)[0].strip()
