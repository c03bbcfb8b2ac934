"""End-to-end fixtures: the real `corral up` server in a child process, on SQLite and on
PostgreSQL, booting real PCs. Needs root and the `minimal` image (CI has both)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.client.http import DPoPAuth
from tests.runtime.conftest import clean_stale_test_states

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("CORRAL_TEST_IMAGE", "minimal")


def pg_base_url() -> str:
    url = os.environ.get("CORRAL_TEST_PG_URL")
    if not url:
        url = subprocess.run(
            ["bash", str(ROOT / "scripts/postgres-test.sh")],
            check=True,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        ).stdout.strip()
        os.environ["CORRAL_TEST_PG_URL"] = url
    return url


def fresh_pg_url() -> str:
    """A new schema in the test database, so each server starts from an empty store."""
    import psycopg

    base = pg_base_url()
    schema = "e2e_" + secrets.token_hex(4)
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
    return f"{base}?options=-csearch_path%3D{schema}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `corral up` child process and its private state; restartable (kill -9 tests)."""

    def __init__(self, dialect: str, tmp: Path, args: tuple[str, ...] = ()) -> None:
        self.dialect = dialect
        #: more `corral up` options (e.g. --trusted-proxy)
        self.args = args
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = Path(f"/run/corral-e2e-{os.getpid()}-{secrets.token_hex(3)}")
        db = fresh_pg_url() if dialect == "postgresql" else f"sqlite:///{tmp}/corral.db"
        self.env = {
            **os.environ,
            "CORRAL_STATE_DIR": str(self.state),
            "CORRAL_DATA_DIR": str(tmp),
            "CORRAL_DATABASE_URL": db,
            "CORRAL_URL": self.url,
        }
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp = tmp
        #: unauthenticated: health checks and the refusals of the attack suite
        self.anon = httpx.Client(base_url=self.url, timeout=60)
        #: the bootstrap admin (`<data dir>/admin.json`, written by the first `corral up`)
        self.admin_file = tmp / "admin.json"
        self.agent_file = tmp / "agent-e2e.json"
        self.agent_id = ""
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.agent = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corral",
                    "up",
                    "--port",
                    str(self.port),
                    "--no-default-pool",
                    *self.args,
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"server died: {self.log.read_text()[-3000:]}"
            try:
                if self.anon.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up in 60 s"
            time.sleep(0.05)
        if not self.agent_id:
            self._make_clients()

    @staticmethod
    def corral_argv() -> list[str]:
        """How to run the CLI (`corral` without arguments)."""
        return [sys.executable, "-m", "corral"]

    def corral(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI with the server's environment (its database, URL and data folder)."""
        return subprocess.run(
            [*self.corral_argv(), *args],
            env={**self.env, "COLUMNS": "250"},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def make_agent(self, name: str, path: Path) -> str:
        """A new agent (sponsored by the e2e sponsor) with its credential at `path`."""
        made = self.corral("agent", "create", name, "--sponsor", "e2e-sponsor", "-o", str(path))
        assert made.returncode == 0, made.stderr
        return str(json.loads(path.read_text())["agent_id"])

    def client(self, credential: Path) -> httpx.Client:
        """An httpx client that signs every request with `credential` (DPoP)."""
        return httpx.Client(
            base_url=self.url, timeout=60, auth=DPoPAuth.from_credential(credential)
        )

    def _make_clients(self) -> None:
        assert self.admin_file.exists(), "corral up did not write the admin credential"
        made = self.corral("user", "create", "e2e-sponsor", "--role", "sponsor")
        assert made.returncode == 0, made.stderr
        self.agent_id = self.make_agent("agent-e2e", self.agent_file)
        self.http.close()
        self.agent.close()
        self.http = self.client(self.admin_file)
        self.agent = self.client(self.agent_file)
        self.agent_auth = DPoPAuth.from_credential(self.agent_file)

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.http.close()
        self.agent.close()
        self.anon.close()
        from corral.runtime.pcs import PCRuntime

        rt = PCRuntime(self.state)
        for pc in rt.list_pcs():
            rt.destroy(pc.id)
        shutil.rmtree(self.state, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------
    def create_pool(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "image": IMAGE, "warm": 1, "max": 2, **fields}
        r = self.http.post("/v1/pools", json=body)
        assert r.status_code == 201, r.text
        # Agents acquire only from pools assigned to them (default policy): the e2e agent's.
        assigned = self.http.post(f"/v1/pools/{name}/assignments", json={"agent": "agent-e2e"})
        assert assigned.status_code == 200, assigned.text
        return dict(r.json())

    def wait_ready(self, pool: str, ready: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.http.get(f"/v1/pools/{pool}").json()
            if info["counts"].get("ready", 0) >= ready:
                return dict(info)
            assert time.monotonic() < deadline, f"pool {pool} never had {ready} ready: {info}"
            time.sleep(0.05)

    def acquire(self, pool: str, key: str | None = None, **body: Any) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.agent.post(f"/v1/pools/{pool}/sessions", json=body or None, headers=headers)

    def act(self, session_id: str, tool: str, **args: Any) -> httpx.Response:
        return self.agent.post(f"/v1/sessions/{session_id}/actions/{tool}", json=args)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root (CI is root)")
    clean_stale_test_states()
    srv = Server(request.param, tmp_path_factory.mktemp(f"e2e-{request.param}"))
    srv.start()
    yield srv
    srv.close()
