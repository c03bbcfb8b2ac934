"""One enforcement point (issue 5): every route of the real app and every MCP tool asks
`PolicyService.authorize`, and obeys its answer.

The whole app, built as `corral up` builds it (token endpoint, authentication, console, directory,
policies, Shared Signals, both MCP servers), serves on uvicorn on loopback, on SQLite; only the PC
runtime is a fake (no PCs here: tests/e2e drive real ones). `authorize` of the control plane's
PolicyService (the one instance the directory, policy and console routes share) is wrapped: the
wrapper records every call and, while a test says so, answers with a denial instead of asking
Cedar.

For every route: an admin's well-formed request, with real objects in its path, is refused
(403/404, or a listing filtered to nothing) while authorize denies, authorize was asked with the
expected action during that very request, and nothing reached the PC; the same request then
succeeds (2xx) once authorize decides again. Every MCP tool, of the gateway and of the
per-session server, the same through the official MCP client. A route the app serves that is in
neither the table of cases nor the allowlist fails `test_every_route_is_covered`, so a route
added later needs a case here (or a reason in the allowlist).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from corral.access import Decision
from corral.access.service import PolicyService, Target
from corral.api.app import create_app
from corral.audit.checkpoints import LogKeys
from corral.audit.service import AuditService
from corral.client.http import AgentCredential, DPoPAuth, TokenSource, mcp_http_client
from corral.config import AuditSettings
from corral.domain.access import Caller, CallerKind
from corral.domain.models import PCState, PoolSpec
from corral.domain.policy import Approval, ApprovalState
from corral.gate import OPERATIONS, STAGES
from corral.gate import Gate as GateType
from corral.identity import SigningKeyring
from corral.identity.directory import Directory
from corral.identity.event_receiver import EventReceiver
from corral.identity.token_endpoint import AuthService
from corral.lifecycle.control import ControlPlane
from corral.lifecycle.tools import TOOLS
from corral.mcp.gateway import LIFECYCLE_TOOLS
from corral.runtime.client import CommandResult, Screenshot
from corral.store import Store
from tests.gate.spy import Spy
from tests.mcp.client import call, connect, text
from tests.support.fakes import FakeDriver, tiny_png

PASSWORD = "a long enough password"  # noqa: S105
ANY = "*"  # an ASGI route that takes every method (the MCP endpoints)
PUBLIC, DOCS, OWN = "public by design", "static API description", "the caller's own sign-out"

# Routes that do not ask authorize, each with why. Anything else the app serves needs a case.
ALLOWLIST: dict[tuple[str, str], str] = {
    # Answer without any identity (corral.identity.authenticate.EXEMPT_PATHS): liveness, a token
    # (the client authenticates with its own signed assertion and a DPoP proof; that is how a
    # caller gets an identity to authorize), the public keys, Shared Signals metadata, and the
    # SET receiver (each SET is authenticated by its signature; what it does, like ending an
    # agent's sessions, goes through the ControlPlane as the server itself).
    ("GET", "/healthz"): PUBLIC,
    ("POST", "/v1/token"): PUBLIC,
    ("GET", "/.well-known/jwks.json"): PUBLIC,
    ("GET", "/.well-known/ssf-configuration"): PUBLIC,
    ("POST", "/ssf/events"): PUBLIC,
    # How to authenticate, readable before one can (RFC 9728, RFC 8414): static documents.
    ("GET", "/.well-known/oauth-protected-resource"): PUBLIC,
    ("GET", "/.well-known/oauth-protected-resource/{resource}"): PUBLIC,
    ("GET", "/.well-known/oauth-authorization-server"): PUBLIC,
    # The console's sign-in pages (corral.api.console_auth._PUBLIC): signing in is authentication.
    ("GET", "/console/login"): PUBLIC,
    ("POST", "/console/login"): PUBLIC,
    ("GET", "/console/oidc/{provider}/start"): PUBLIC,
    ("GET", "/console/oidc/{provider}/callback"): PUBLIC,
    # Authenticated, but neither reads the store nor reaches a PC: FastAPI's description of
    # the API, the same for every caller.
    ("GET", "/openapi.json"): DOCS,
    ("GET", "/docs"): DOCS,
    ("GET", "/docs/oauth2-redirect"): DOCS,
    ("GET", "/redoc"): DOCS,
    # Ends the console session of the cookie it comes with (in memory), nobody else's.
    ("POST", "/console/logout"): OWN,
    # The audit log's checkpoint, verifier key and hash tiles: hashes and signatures only,
    # public so any witness or auditor can follow the log (the records are cases below).
    ("GET", "/audit/checkpoint"): PUBLIC,
    ("GET", "/audit/key"): PUBLIC,
    ("GET", "/audit/tile/{path}"): PUBLIC,
}
# The MCP endpoints: every tools/call they serve is a case below (test_gateway_tools_*,
# test_session_server_*); their other methods (initialize, tools/list, ping) answer from the
# static catalogue and touch neither the store nor a PC. The per-session endpoint also asks
# `read_session` before MCP sees any request (test_session_server_refuses_before_mcp).
MCP_ROUTES = {(ANY, "/mcp"), (ANY, "/sessions/{session_id}/mcp")}

# Valid arguments for every computer tool: a new tool without an entry fails a test.
TOOL_ARGS: dict[str, dict[str, Any]] = {
    "screenshot": {},
    "mouse_move": {"x": 1, "y": 1},
    "click": {"x": 1, "y": 1},
    "double_click": {"x": 1, "y": 1},
    "drag": {"start_x": 1, "start_y": 1, "end_x": 2, "end_y": 2},
    "scroll": {"dy": 1},
    "type_text": {"text": "hi"},
    "press_keys": {"keys": "Return"},
    "run_command": {"command": "true"},
    "read_file": {"path": "/tmp/a.txt"},
    "write_file": {"path": "/tmp/a.txt", "content": "x"},
    "list_directory": {"path": "/tmp"},
    "get_clipboard": {},
    "set_clipboard": {"text": "x"},
    "list_windows": {},
    "focus_window": {"window_id": "0x1"},
    "launch_app": {"command": ["xterm"]},
    "open_url": {"url": "http://intranet.test/"},
    "wait": {"seconds": 0.01},
}


# -- the fake PC: it answers every tool and counts what reached it ---------------------------


class Desktop:
    """A PC daemon client for every tool (the runtime below the Gate is not under test)."""

    def __init__(self, runtime: DesktopRuntime) -> None:
        self.runtime = runtime

    def _did(self, op: str) -> None:
        with self.runtime.lock:
            self.runtime.ops.append(op)

    def __enter__(self) -> Desktop:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def screenshot(self, max_width: int | None = None, max_height: int | None = None) -> Screenshot:
        self._did("screenshot")
        return Screenshot(tiny_png(), 1280, 800, 1280, 800, 1.0)

    def run(self, argv: list[str] | None = None, **_: Any) -> CommandResult:
        self._did("run")
        return CommandResult(0, "", "", False, False, False, 1.0)

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes:
        self._did("read_file")
        return b"x"

    def write_file(self, path: str, data: bytes, **_: Any) -> dict[str, Any]:
        self._did("write_file")
        return {"path": path}

    def list_dir(self, path: str) -> list[dict[str, Any]]:
        self._did("list_dir")
        return [{"name": "a.txt", "type": "file", "size": 1}]

    def clipboard_get(self) -> str:
        self._did("clipboard_get")
        return "x"

    def list_windows(self) -> list[dict[str, Any]]:
        self._did("list_windows")
        return [{"id": "0x1", "title": "xterm", "focused": True}]

    def launch(self, argv: list[str]) -> int:
        self._did("launch")
        return 42

    def __getattr__(self, op: str) -> Callable[..., None]:
        """The input tools and the rest answer nothing: mouse_move, click, drag, scroll, ..."""
        if op.startswith("_"):
            raise AttributeError(op)
        return lambda *args, **kw: self._did(op)


class DesktopRuntime(FakeDriver):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def client(self, pc_id: str, timeout: float = 30.0) -> Desktop:  # type: ignore[override]
        return Desktop(self)


# -- the wrapped authorize -------------------------------------------------------------------


def deny_all(action: str) -> bool:
    return True


def allow_all(action: str) -> bool:
    return False


@dataclass
class Asked:
    """The actions authorize was asked for one caller while a `Gate.watch` block ran."""

    actions: frozenset[str] = frozenset()


class Gate:
    """Stands in for `PolicyService.authorize` on the one instance: records every call and
    answers a denial for the actions `denies` names (else the real decision). The server's own
    calls (SYSTEM: clean-up when an MCP session closes) always get the real decision."""

    def __init__(self, policy: PolicyService) -> None:
        self.real = policy.authorize
        self.lock = threading.Lock()
        self.calls: list[tuple[str | None, str]] = []
        self.denies: Callable[[str], bool] = allow_all

    def __call__(self, caller: Caller | None, action: str, target: Target, **kw: Any) -> Decision:
        with self.lock:
            self.calls.append((caller.id if caller else None, action))
            denies = self.denies
        if (caller is None or caller.kind is not CallerKind.SYSTEM) and denies(action):
            return Decision(False, errors=("denied by the enforcement test",))
        return self.real(caller, action, target, **kw)

    @contextmanager
    def watch(self, caller_id: str, denies: Callable[[str], bool]) -> Iterator[Asked]:
        with self.lock:
            start = len(self.calls)
            self.denies = denies
        asked = Asked()
        try:
            yield asked
        finally:
            with self.lock:
                self.denies = allow_all
                asked.actions = frozenset(a for who, a in self.calls[start:] if who == caller_id)


# -- the server -----------------------------------------------------------------------------


class World:
    """The app on loopback with an admin `root` (key credential and console password), a
    sponsor `alice` and her agent `bot`; helpers make fresh objects for each case."""

    def __init__(self, tmp: Path) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.token_url = f"{self.base}/v1/token"
        self.store = Store(f"sqlite:///{tmp}/corral.db")
        self.store.migrate()
        self.directory = d = Directory(self.store)
        self.root = d.create_user("root", roles=["admin"], password=PASSWORD).id
        d.create_user("alice", roles=["sponsor"])
        bot = d.create_agent("bot", ["alice"], token_endpoint=self.token_url)
        self.bot = bot["agent_id"]
        credential = d.create_user_credential("root", self.token_url)
        self.runtime = DesktopRuntime()
        self.control = ControlPlane(self.store, self.runtime)  # type: ignore[arg-type]
        self.gate = Gate(self.control.policy)
        self.control.policy.authorize = self.gate  # type: ignore[method-assign]
        auth = AuthService(self.store, SigningKeyring.generate(), self.base, self.token_url)
        receiver = EventReceiver(
            self.store, Directory(self.store), self.control, audience=self.base
        )
        self.audit = AuditService.open(
            self.store,
            LogKeys.load(tmp / "data", AuditSettings("enforcement.test/audit", None)),
        )
        self.app: FastAPI = create_app(
            self.control,
            base_url=self.base,
            manage_pools=False,
            auth=auth,
            event_receiver=receiver,
            audit=self.audit,
        )
        self.auth = DPoPAuth(TokenSource(AgentCredential.from_mapping(credential)))
        self.rest = httpx2.Client(base_url=self.base, auth=self.auth.for_mcp(), timeout=30)
        self.browser = httpx2.Client(base_url=self.base, timeout=30)
        bot_auth = DPoPAuth(TokenSource(AgentCredential.from_mapping(bot)))
        self.as_bot = httpx2.Client(base_url=self.base, auth=bot_auth.for_mcp(), timeout=30)
        self._names = itertools.count()
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        signed_in = self.browser.post(
            "/console/login", data={"username": "root", "password": PASSWORD, "code": ""}
        )
        assert signed_in.status_code == 303, signed_in.text

    def stop(self) -> None:
        for client in (self.rest, self.browser, self.as_bot):
            client.close()
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()
        self.store.close()

    # fresh objects, made directly (they are the scene, not what is tested)

    def fresh(self, kind: str) -> str:
        return f"{kind}-{next(self._names)}"

    def pool(self, pcs: int = 0) -> str:
        name = self.fresh("pool")
        self.store.create_pool(PoolSpec(name, "minimal", warm=0, max=max(1, pcs)))
        for _ in range(pcs):
            pc = self.fresh("pc")
            self.runtime.alive.add(pc)
            self.store.add_pc(name, pc, PCState.READY)
        return name

    def session(self) -> str:
        """An active session of root's, acquired over REST (authorize deciding for real)."""
        r = self.rest.post(f"/v1/pools/{self.pool(pcs=1)}/sessions", json={"wait_s": 0})
        assert r.status_code == 201, r.text
        return str(r.json()["session_id"])

    def user(self, *, enabled: bool = True) -> str:
        name = self.fresh("user")
        self.directory.create_user(name, roles=["sponsor"])
        if not enabled:
            self.directory.disable_user(name)
        return name

    def agent(self, *, enabled: bool = True, sponsors: tuple[str, ...] = ("alice",)) -> str:
        name = self.fresh("agent")
        self.directory.create_agent(name, list(sponsors), token_endpoint=self.token_url)
        if not enabled:
            self.directory.disable_agent(name)
        return name

    def group(self, *, bot: bool = False) -> str:
        name = self.fresh("group")
        self.directory.create_group(name)
        if bot:
            self.directory.add_to_group(name, "agent", "bot")
        return name

    def policy(self) -> str:
        name = self.fresh("policy")
        text = 'permit (principal in Role::"admin", action == Action::"read_pool", resource);'
        self.store.add_policy(name, text, actor="test")
        return name

    def audit_record(self) -> tuple[str, str]:
        """(record id, trace id) of the latest record in the audit log."""
        with self.store.transaction(write=False) as uow:
            size, _ = uow.audit.state()
            entry = uow.audit.entries(size - 1, size)[0]
        record = json.loads(entry)
        return record["metadata"]["uid"], record["metadata"]["correlation_uid"]

    def approval(self) -> str:
        now = datetime.now(UTC)
        approval = Approval(
            id=self.fresh("ap"),
            agent_id=self.bot,
            action="run_command",
            resource='PC::"pc-x"',
            digest=self.fresh("digest"),
            detail={"program": "curl"},
            state=ApprovalState.PENDING,
            requested_at=now,
            expires_at=now + timedelta(minutes=15),
        )
        return self.store.create_approval(approval).id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("enforcement"))
    w.start()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the routes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request. `listed`: for a listing that is filtered per item (asking authorize for
    each), the text that shows the prepared item; denied, the listing must not show it."""

    path: str
    json: Any = None
    params: dict[str, str] | None = None
    listed: str | None = None
    browser: bool = False  # with the console cookie (as a browser), not a DPoP token
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Case:
    method: str
    route: str
    prepare: Callable[[World], Call]
    actions: frozenset[str]
    ok: int
    then: frozenset[str]  # asked too, once the first decision allows

    @property
    def id(self) -> str:
        return f"{self.method} {self.route}"


CASES: dict[tuple[str, str], Case] = {}


def case(
    method: str, route: str, *actions: str, ok: int = 200, then: tuple[str, ...] = ()
) -> Callable[[Callable[[World], Call]], Callable[[World], Call]]:
    """Register how to make a well-formed request to `route`, what authorize must be asked
    while serving it when it denies, and what more when it allows (`then`)."""

    def register(prepare: Callable[[World], Call]) -> Callable[[World], Call]:
        assert (method, route) not in CASES, f"two cases for {method} {route}"
        CASES[(method, route)] = Case(
            method, route, prepare, frozenset(actions), ok, frozenset(then)
        )
        return prepare

    return register


# pools and lending (corral.api.app -> ControlPlane)

case("GET", "/v1/pools", "read_pool")(lambda w: Call("/v1/pools", listed=f'"{w.pool()}"'))
case("POST", "/v1/pools", "create_pool", ok=201)(
    lambda w: Call("/v1/pools", json={"name": w.fresh("pool"), "image": "minimal", "warm": 0})
)
case("GET", "/v1/pools/{name}", "read_pool")(lambda w: Call(f"/v1/pools/{w.pool()}"))
case("GET", "/v1/pools/{name}/pcs", "inspect_pool")(
    lambda w: Call(f"/v1/pools/{w.pool(pcs=1)}/pcs")
)
case("DELETE", "/v1/pools/{name}", "delete_pool", ok=202)(lambda w: Call(f"/v1/pools/{w.pool()}"))
case("POST", "/v1/pools/{pool}/sessions", "acquire", ok=201)(
    lambda w: Call(f"/v1/pools/{w.pool(pcs=1)}/sessions", json={"wait_s": 0})
)
case("GET", "/v1/sessions", "read_session")(
    lambda w: Call("/v1/sessions", listed=f'"{w.session()}"')
)
case("GET", "/v1/sessions/{session_id}", "read_session")(
    lambda w: Call(f"/v1/sessions/{w.session()}")
)
case("DELETE", "/v1/sessions/{session_id}", "release")(
    lambda w: Call(f"/v1/sessions/{w.session()}")
)
# Denied reading the session, the caller gets "gone" before the tool's own decision; every
# tool's own action is in test_rest_tools_ask_for_their_own_action.
case("POST", "/v1/sessions/{session_id}/actions/{tool}", "read_session", then=("screenshot",))(
    lambda w: Call(f"/v1/sessions/{w.session()}/actions/screenshot", json={})
)
case("GET", "/v1/sessions/{session_id}/screenshot", "observe")(
    lambda w: Call(f"/v1/sessions/{w.session()}/screenshot")
)
case("GET", "/sessions/{session_id}/viewer", "read_session")(
    lambda w: Call(f"/sessions/{w.session()}/viewer")
)

# the console (with its cookie, as a browser)


@case("GET", "/console", "read_session", "approve")
def _console(w: World) -> Call:
    w.approval()  # the page lists the pending approvals the user may answer, too
    return Call("/console", listed=w.session(), browser=True)


@case("POST", "/console/approvals/{approval_id}/{answer}", "approve", ok=303)
def _console_approve(w: World) -> Call:
    # a browser's form post: the session cookie, same origin
    path = f"/console/approvals/{w.approval()}/approve"
    return Call(path, browser=True, headers={"Origin": w.base})


# pool assignments and approvals (corral.api.policy_routes -> PolicyService)

case("GET", "/v1/pools/{pool}/assignments", "inspect_pool")(
    lambda w: Call(f"/v1/pools/{w.pool()}/assignments")
)
case("POST", "/v1/pools/{pool}/assignments", "assign_pool")(
    lambda w: Call(f"/v1/pools/{w.pool()}/assignments", json={"agent": "bot"})
)


@case("DELETE", "/v1/pools/{pool}/assignments", "assign_pool")
def _unassign(w: World) -> Call:
    pool = w.pool()
    w.store.assign_pool(pool, "agent", "bot", actor="test")
    return Call(f"/v1/pools/{pool}/assignments", params={"agent": "bot"})


case("GET", "/v1/approvals", "approve")(lambda w: Call("/v1/approvals", listed=w.approval()))
case("POST", "/v1/approvals/{approval_id}/approve", "approve")(
    lambda w: Call(f"/v1/approvals/{w.approval()}/approve")
)
case("POST", "/v1/approvals/{approval_id}/deny", "approve")(
    lambda w: Call(f"/v1/approvals/{w.approval()}/deny")
)

# the audit log's records and proofs (corral.api.audit_routes -> the Gate's authorize stage)

case("GET", "/v1/audit/entries", "read_audit")(lambda w: Call("/v1/audit/entries"))
case("GET", "/v1/audit/records/{record_id}", "read_audit")(
    lambda w: Call(f"/v1/audit/records/{w.audit_record()[0]}")
)
case("GET", "/v1/audit/traces/{trace_id}", "read_audit")(
    lambda w: Call(f"/v1/audit/traces/{w.audit_record()[1]}")
)
case("GET", "/v1/audit/proof/inclusion", "read_audit")(
    lambda w: Call("/v1/audit/proof/inclusion", params={"index": "0", "size": "1"})
)
case("GET", "/v1/audit/proof/consistency", "read_audit")(
    lambda w: Call("/v1/audit/proof/consistency", params={"first": "1", "second": "1"})
)
case("GET", "/audit/tile/entries/{path}", "read_audit")(
    lambda w: Call("/audit/tile/entries/000.p/1")
)

# policies

case("GET", "/v1/policies", "read_policies")(lambda w: Call("/v1/policies"))
case("POST", "/v1/policies", "manage_policies", ok=201)(
    lambda w: Call(
        "/v1/policies",
        json={
            "name": w.fresh("policy"),
            "text": 'permit (principal in Role::"admin", action == Action::"read_pool", resource);',
        },
    )
)
case("GET", "/v1/policies/changes", "read_policies")(lambda w: Call("/v1/policies/changes"))
case("GET", "/v1/policies/schema", "read_policies")(lambda w: Call("/v1/policies/schema"))
case("POST", "/v1/policies/test", "read_policies")(
    lambda w: Call(
        "/v1/policies/test",
        json={"principal": 'Agent::"bot"', "action": "read_pool", "resource": 'Pool::"p"'},
    )
)
case("GET", "/v1/policies/{name}", "read_policies")(lambda w: Call(f"/v1/policies/{w.policy()}"))
case("PATCH", "/v1/policies/{name}", "manage_policies")(
    lambda w: Call(f"/v1/policies/{w.policy()}", json={"enabled": False})
)
case("DELETE", "/v1/policies/{name}", "manage_policies")(
    lambda w: Call(f"/v1/policies/{w.policy()}")
)

# the directory (corral.api.directory_routes -> DirectoryService)

READ, CONTAIN, MANAGE = "read_directory", "revoke_tokens", "manage_directory"

case("GET", "/v1/users", READ)(lambda w: Call("/v1/users"))
case("POST", "/v1/users", MANAGE, ok=201)(
    lambda w: Call("/v1/users", json={"name": w.fresh("user"), "roles": ["sponsor"]})
)
case("GET", "/v1/users/{ref}", READ)(lambda w: Call(f"/v1/users/{w.user()}"))
case("PUT", "/v1/users/{ref}/roles", MANAGE)(
    lambda w: Call(f"/v1/users/{w.user()}/roles", json={"roles": ["security_admin"]})
)
case("POST", "/v1/users/{ref}/disable", CONTAIN)(lambda w: Call(f"/v1/users/{w.user()}/disable"))
case("POST", "/v1/users/{ref}/enable", MANAGE)(
    lambda w: Call(f"/v1/users/{w.user(enabled=False)}/enable")
)
case("POST", "/v1/users/{ref}/revoke", CONTAIN)(lambda w: Call(f"/v1/users/{w.user()}/revoke"))
case("GET", "/v1/agents", READ)(lambda w: Call("/v1/agents"))
case("POST", "/v1/agents", MANAGE, ok=201)(
    lambda w: Call("/v1/agents", json={"name": w.fresh("agent"), "sponsors": ["alice"]})
)
case("GET", "/v1/agents/{ref}", READ)(lambda w: Call(f"/v1/agents/{w.agent()}"))
case("POST", "/v1/agents/{ref}/disable", CONTAIN)(lambda w: Call(f"/v1/agents/{w.agent()}/disable"))
case("POST", "/v1/agents/{ref}/enable", MANAGE)(
    lambda w: Call(f"/v1/agents/{w.agent(enabled=False)}/enable")
)
# lowering a risk also needs MANAGE (issue 9): asked once containment is allowed
case("PUT", "/v1/agents/{ref}/risk", CONTAIN, then=(MANAGE,))(
    lambda w: Call(f"/v1/agents/{w.agent()}/risk", json={"level": "medium"})
)
case("POST", "/v1/agents/{ref}/sponsors", MANAGE)(
    lambda w: Call(f"/v1/agents/{w.agent()}/sponsors", json={"user": "root"})
)
case("DELETE", "/v1/agents/{ref}/sponsors/{user}", MANAGE)(
    lambda w: Call(f"/v1/agents/{w.agent(sponsors=('alice', 'root'))}/sponsors/root")
)
case("GET", "/v1/agents/{ref}/keys", READ)(lambda w: Call(f"/v1/agents/{w.agent()}/keys"))
case("POST", "/v1/agents/{ref}/keys/rotate", MANAGE)(
    lambda w: Call(f"/v1/agents/{w.agent()}/keys/rotate")
)


@case("POST", "/v1/agents/{ref}/keys/{kid}/revoke", CONTAIN)
def _revoke_key(w: World) -> Call:
    agent = w.agent()
    kid = w.directory.agent_keys(agent)[0].kid
    return Call(f"/v1/agents/{agent}/keys/{kid}/revoke")


case("POST", "/v1/agents/{ref}/revoke", CONTAIN)(lambda w: Call(f"/v1/agents/{w.agent()}/revoke"))
case("GET", "/v1/groups", READ)(lambda w: Call("/v1/groups"))
case("POST", "/v1/groups", MANAGE, ok=201)(
    lambda w: Call("/v1/groups", json={"name": w.fresh("group")})
)
case("GET", "/v1/groups/{ref}", READ)(lambda w: Call(f"/v1/groups/{w.group()}"))
case("DELETE", "/v1/groups/{ref}", MANAGE, ok=204)(lambda w: Call(f"/v1/groups/{w.group()}"))
case("GET", "/v1/groups/{ref}/members", READ)(lambda w: Call(f"/v1/groups/{w.group()}/members"))
case("POST", "/v1/groups/{ref}/members", MANAGE)(
    lambda w: Call(f"/v1/groups/{w.group()}/members", json={"kind": "agent", "member": "bot"})
)
case("DELETE", "/v1/groups/{ref}/members/{kind}/{member}", MANAGE)(
    lambda w: Call(f"/v1/groups/{w.group(bot=True)}/members/agent/bot")
)


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route `app` serves, included routers flattened; a
    route without a method set (a plain ASGI endpoint) takes every method. HEAD is left out
    where GET is served (it runs the GET endpoint)."""
    found: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        path = route.path_format or route.path
        assert path is not None, f"a route without a path: {route!r}"
        methods = route.methods
        if methods is None:
            found.add((ANY, path))
            continue
        found |= {(m, path) for m in methods if not (m == "HEAD" and "GET" in methods)}
    return found


def _send(w: World, method: str, c: Call) -> httpx2.Response:
    client = w.browser if c.browser else w.rest
    return client.request(method, c.path, json=c.json, params=c.params, headers=c.headers)


def test_every_route_is_covered(world: World) -> None:
    served = served_routes(world.app)
    # what the enumeration must see, or it is not looking at the whole app
    assert {(ANY, "/mcp"), (ANY, "/sessions/{session_id}/mcp"), ("POST", "/ssf/events")} <= served
    assert ("GET", "/console") in served and ("DELETE", "/v1/groups/{ref}") in served
    uncovered = served - set(CASES) - set(ALLOWLIST) - MCP_ROUTES
    assert not uncovered, f"routes with no enforcement case here and not allowlisted: {uncovered}"
    stale = (set(CASES) | set(ALLOWLIST) | MCP_ROUTES) - served
    assert not stale, f"cases for routes the app does not serve: {stale}"
    assert not set(CASES) & set(ALLOWLIST)


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_asks_authorize_and_obeys_a_denial(world: World, route: tuple[str, str]) -> None:
    c = CASES[route]
    request = c.prepare(world)
    ops = len(world.runtime.ops)
    with world.gate.watch(world.root, deny_all) as asked:
        denied = _send(world, c.method, request)
    assert asked.actions == c.actions, f"{c.id} asked authorize for {set(asked.actions)}"
    assert len(world.runtime.ops) == ops, "a denied request reached the PC"
    if request.listed is None:
        assert denied.status_code in (403, 404), f"{c.id}: {denied.status_code} {denied.text}"
        assert denied.json()["code"] in ("permission_denied", "session_gone")
    else:  # a listing shows only what authorize allowed: nothing
        assert denied.status_code == 200, denied.text
        assert request.listed not in denied.text
    # the control: the same request, authorize deciding for real, succeeds for the admin
    with world.gate.watch(world.root, allow_all) as asked:
        allowed = _send(world, c.method, request)
    assert allowed.status_code == c.ok, f"{c.id}: {allowed.status_code} {allowed.text}"
    assert asked.actions == c.actions | c.then
    if request.listed is not None:
        assert request.listed in allowed.text


def test_allowlisted_routes_need_no_decision(world: World) -> None:
    """The public ones answer without any identity; the API description needs one but no
    decision (it is the same for everyone)."""
    for path in ("/healthz", "/.well-known/jwks.json", "/.well-known/ssf-configuration"):
        assert world.browser.get(path).status_code == 200, path
    with httpx2.Client(base_url=world.base) as anonymous:
        assert anonymous.get("/console/login").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 401
        assert anonymous.get("/v1/pools").status_code == 401  # the rest needs an identity
    with world.gate.watch(world.root, deny_all) as asked:
        assert world.rest.get("/openapi.json").status_code == 200
    assert asked.actions == frozenset()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_rest_tools_ask_for_their_own_action(world: World, tool: str) -> None:
    """Every tool over REST: refused when authorize denies the tool's action (the caller may
    read the session, so the refusal is 403 with the reason), and nothing reaches the PC."""
    path = f"/v1/sessions/{world.session()}/actions/{tool}"
    ops = len(world.runtime.ops)
    with world.gate.watch(world.root, lambda action: action == tool) as asked:
        denied = world.rest.post(path, json=TOOL_ARGS[tool])
    assert denied.status_code == 403, denied.text
    assert denied.json()["code"] == "permission_denied"
    assert asked.actions == {"read_session", tool}
    assert len(world.runtime.ops) == ops
    with world.gate.watch(world.root, allow_all) as asked:
        allowed = world.rest.post(path, json=TOOL_ARGS[tool])
    assert allowed.status_code == 200, allowed.text
    assert asked.actions == {"read_session", tool}
    assert tool == "wait" or len(world.runtime.ops) > ops


def test_a_released_session_says_why_only_to_whoever_may_read_it(world: World) -> None:
    sid = world.session()
    assert world.rest.delete(f"/v1/sessions/{sid}").status_code == 200
    for path, method in [
        (f"/v1/sessions/{sid}", "GET"),
        (f"/v1/sessions/{sid}/actions/screenshot", "POST"),
        (f"/v1/sessions/{sid}/screenshot", "GET"),
    ]:
        with world.gate.watch(world.root, deny_all) as asked:
            denied = world.rest.request(method, path, json={} if method == "POST" else None)
        assert denied.status_code == 404 and "released" not in denied.text, denied.text
        assert asked.actions == {"read_session"}
        allowed = world.rest.request(method, path, json={} if method == "POST" else None)
        assert allowed.status_code == 404 and "was released (released)" in allowed.text


def test_who_may_not_inspect_pools_does_not_learn_which_exist(world: World) -> None:
    for pool in (world.pool(), "no-such-pool"):
        r = world.as_bot.get(f"/v1/pools/{pool}/assignments")
        assert r.status_code == 403 and r.json()["code"] == "permission_denied", r.text
    assert world.rest.get("/v1/pools/no-such-pool/assignments").status_code == 404


# -- MCP: the tools, through the official client ----------------------------------------------


def test_every_tool_has_a_case() -> None:
    assert set(TOOL_ARGS) == set(TOOLS)
    assert {t.name for t in LIFECYCLE_TOOLS} == {"list_pools", "acquire_pc", "release_pc"}


def _refused(result: CallToolResult, code: str = "permission_denied") -> bool:
    error = (result.structured_content or {}).get("error", {})
    return result.is_error and error.get("code") == code


@pytest.mark.anyio
async def test_gateway_tools_ask_authorize_and_obey_a_denial(world: World) -> None:
    gate, me = world.gate, world.root
    url = f"{world.base}/mcp"
    pool = world.pool(pcs=3)
    async with connect(url, world.auth) as s:
        listed = {t.name for t in (await s.list_tools()).tools}
        assert listed == {t.name for t in LIFECYCLE_TOOLS} | set(TOOLS)

        with gate.watch(me, deny_all) as asked:
            pools = await call(s, "list_pools")
        assert not pools.is_error and pool not in text(pools)
        assert asked.actions == {"read_pool"}
        with gate.watch(me, allow_all) as asked:
            assert pool in text(await call(s, "list_pools"))
        assert asked.actions == {"read_pool"}

        with gate.watch(me, deny_all) as asked:
            refused = await call(s, "acquire_pc", {"pool": pool, "wait_s": 0})
        assert _refused(refused), text(refused)
        assert asked.actions == {"acquire"}
        with gate.watch(me, allow_all) as asked:
            acquired = await call(s, "acquire_pc", {"pool": pool, "wait_s": 0})
        assert not acquired.is_error, text(acquired)
        assert asked.actions == {"acquire"}

        for tool, args in TOOL_ARGS.items():
            ops = len(world.runtime.ops)
            with gate.watch(me, tool.__eq__) as asked:  # denies just `tool`
                refused = await call(s, tool, args)
            assert _refused(refused), f"{tool}: {text(refused)}"
            assert asked.actions == {"read_session", tool}
            assert len(world.runtime.ops) == ops, f"{tool} reached the PC"
            with gate.watch(me, allow_all) as asked:
                done = await call(s, tool, args)
            assert not done.is_error, f"{tool}: {text(done)}"
            assert asked.actions == {"read_session", tool}

        # denied even reading the session: it is gone for this caller (and unbound)
        with gate.watch(me, deny_all) as asked:
            gone = await call(s, "screenshot")
        assert _refused(gone, "session_gone"), text(gone)
        assert asked.actions == {"read_session"}

        with gate.watch(me, allow_all):
            assert not (await call(s, "acquire_pc", {"pool": pool, "wait_s": 0})).is_error
        with gate.watch(me, deny_all) as asked:
            refused = await call(s, "release_pc")
        assert refused.is_error, text(refused)
        assert asked.actions == {"release"}

        with gate.watch(me, allow_all):
            acquired = await call(s, "acquire_pc", {"pool": pool, "wait_s": 0})
        assert not acquired.is_error, text(acquired)
        with gate.watch(me, allow_all) as asked:
            released = await call(s, "release_pc")
        assert not released.is_error, text(released)
        assert asked.actions == {"release"}
    # the two sessions the denials left bound to nobody are still lent (nothing was released)
    assert len(world.store.list_sessions(active_only=True, pool=pool)) == 2


def test_session_server_refuses_before_mcp(world: World) -> None:
    """The per-session URL asks `read_session` before MCP sees a request: denied, it answers
    404 with a JSON-RPC error, whatever the method."""
    sid = world.session()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"accept": "application/json, text/event-stream"}
    with world.gate.watch(world.root, deny_all) as asked:
        r = world.rest.post(f"/sessions/{sid}/mcp", json=body, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["data"]["code"] == "session_gone"
    assert asked.actions == {"read_session"}


@pytest.mark.anyio
async def test_session_server_tools_ask_authorize_and_obey_a_denial(world: World) -> None:
    gate, me = world.gate, world.root
    url = f"{world.base}/sessions/{world.session()}/mcp"
    async with (
        mcp_http_client(world.auth) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        with gate.watch(me, deny_all) as asked, pytest.raises(MCPError, match="no session"):
            await session.initialize()
    assert asked.actions == {"read_session"}
    async with connect(url, world.auth) as s:
        assert {t.name for t in (await s.list_tools()).tools} == set(TOOLS)
        for tool, args in TOOL_ARGS.items():
            ops = len(world.runtime.ops)
            with gate.watch(me, tool.__eq__) as asked:  # denies just `tool`
                refused = await call(s, tool, args)
            assert _refused(refused), f"{tool}: {text(refused)}"
            assert asked.actions == {"read_session", tool}
            assert len(world.runtime.ops) == ops, f"{tool} reached the PC"
            with gate.watch(me, allow_all) as asked:
                done = await call(s, tool, args)
            assert not done.is_error, f"{tool}: {text(done)}"
            assert asked.actions == {"read_session", tool}
        # denied reading the session, a tool call is refused at the door
        with gate.watch(me, deny_all) as asked, pytest.raises(MCPError, match="no session"):
            await call(s, "screenshot")
        assert asked.actions == {"read_session"}


# -- every operation walks every stage of the Gate --------------------------------------------

#: catalogue operations only the host CLI serves (tests/unit/test_host_gate.py drives them)
HOST_ONLY = {
    "create_user_key",
    "add_oidc_provider",
    "remove_oidc_provider",
    "link_subject",
    "unlink_subject",
    "add_ssf_receiver",
    "remove_ssf_receiver",
}


@pytest.mark.anyio
async def test_every_operation_walks_every_stage(world: World) -> None:
    """A spy stage in the app's Gate; then every route (the cases above), every MCP tool of
    both servers and the per-session server's door, as real clients send them. Every catalogue
    operation the server serves, and every computer tool, walked authorize, inspect_in, act,
    inspect_out and record, in that order; and every route but the allowlisted ones went
    through the Gate (a request that reaches no operation fails here)."""
    gate: GateType = world.app.state.gate
    spy = Spy(gate).install()
    try:
        for route in sorted(CASES):
            c = CASES[route]
            request = c.prepare(world)
            calls = sum(len(w) for w in spy.walks.values())
            answer = await asyncio.to_thread(_send, world, c.method, request)
            assert answer.status_code == c.ok, f"{c.id}: {answer.status_code} {answer.text}"
            assert sum(len(w) for w in spy.walks.values()) > calls, f"{c.id} skipped the Gate"
        for tool, args in TOOL_ARGS.items():
            path = f"/v1/sessions/{world.session()}/actions/{tool}"
            answer = await asyncio.to_thread(world.rest.post, path, json=args)
            assert answer.status_code == 200, f"{tool}: {answer.text}"
        pool = world.pool(pcs=1)
        async with connect(f"{world.base}/mcp", world.auth) as s:
            assert not (await call(s, "list_pools")).is_error
            assert not (await call(s, "acquire_pc", {"pool": pool, "wait_s": 0})).is_error
            again = await call(s, "acquire_pc", {"pool": pool})  # held: a fresh grant
            assert not again.is_error and "already holding" in text(again)
            for tool, args in TOOL_ARGS.items():
                assert not (await call(s, tool, args)).is_error, tool
            assert not (await call(s, "release_pc")).is_error
        async with connect(f"{world.base}/sessions/{world.session()}/mcp", world.auth) as s:
            for tool, args in TOOL_ARGS.items():
                assert not (await call(s, tool, args)).is_error, tool
    finally:
        spy.remove()
    served = {name for name, op in OPERATIONS.items() if gate.serves(op)}
    assert served == set(OPERATIONS) - HOST_ONLY
    missing = (served | set(TOOLS)) - spy.complete()
    assert not missing, f"operations that did not walk every stage: {sorted(missing)}"
    for name, walks in spy.walks.items():  # and none skipped a stage on its way
        for walked, ok in walks:
            assert walked == STAGES if ok else walked[-1] == "record", (name, walked)
    # Every operation's policy decisions reached its record stage, with what decided them.
    undecided = sorted(name for name in served | set(TOOLS) if not spy.decisions[name])
    assert not undecided, f"operations whose decisions the record stage never saw: {undecided}"
    for name in served | set(TOOLS):
        assert all(d.decision.policies or d.decision.errors for d in spy.decisions[name]), name
