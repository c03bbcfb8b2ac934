"""Benchmark the control plane over HTTP against a real `corral up` child process.

Measures acquire from a warm pool (floor: an HTTP round trip to /healthz on the same server),
release until the PC is ready again, screenshot and click round trips through MCP (floor: the
same through REST), a pool of 10 from zero to ready, and the gateway's tool calls: `click`,
`run_command true` and `screenshot` through `/mcp` with the official MCP client and a DPoP proof
on every request, each beside the same action's pcd round trip (the pcd client straight on the
PC's socket; for the screenshot, the in-process grab inside the PC as `bench runtime` does).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench._stats import Row, render, summarize, time_ms
from bench.runtime import GRAB_FLOOR
from corral.client.http import DPoPAuth, mcp_http_client
from corral.runtime.pcs import PCRuntime

RUNS = int(os.environ.get("CORRAL_BENCH_RUNS", "20"))
IMAGE = os.environ.get("CORRAL_BENCH_IMAGE", "minimal")
#: "gateway": only the gateway rows (a pool of 2), for quick before/after runs
ONLY = os.environ.get("CORRAL_BENCH_ONLY", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_counts(http: httpx.Client, pool: str, ready: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while http.get(f"/v1/pools/{pool}").json()["counts"]["ready"] < ready:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool {pool} never reached {ready} ready PCs")
        time.sleep(0.002)


async def _mcp_round_trips(url: str, runs: int, auth: DPoPAuth) -> tuple[list[float], list[float]]:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    shots: list[float] = []
    clicks: list[float] = []
    async with (
        mcp_http_client(auth) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("screenshot", {})
        for _ in range(runs):
            start = time.perf_counter()
            await session.call_tool("screenshot", {})
            shots.append((time.perf_counter() - start) * 1000)
        for _ in range(runs * 2):
            start = time.perf_counter()
            await session.call_tool("click", {"x": 100, "y": 100})
            clicks.append((time.perf_counter() - start) * 1000)
    return shots, clicks


def _cpu_ms(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far, in ms: the server's
    own work per call, which other load on the machine moves far less than wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


#: the server's CPU ms per gateway call, by tool (printed under the table)
SERVER_CPU: dict[str, float] = {}
#: the official MCP client's own CPU ms per call (this process: MCP client, HTTP, DPoP proofs)
CLIENT_CPU: dict[str, float] = {}


async def _gateway_round_trips(
    url: str, state: Path, runs: int, auth: DPoPAuth, server_pid: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """click, run_command true and screenshot through the gateway at /mcp (the official MCP
    client; DPoP proof on every request), on the PC that `acquire_pc` lent this MCP session;
    and beside each, its floor on the same PC: the same action through the pcd client straight
    on the PC's socket (this process is root, like the server, and reads the server's runtime
    state), the screenshot's floor being the in-process grab inside the PC."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    calls: dict[str, tuple[dict[str, object], int]] = {
        "click": ({"x": 100, "y": 100}, runs * 5),
        "run_command": ({"argv": ["true"]}, runs * 2),
        "screenshot": ({}, runs * 2),
    }
    out: dict[str, list[float]] = {name: [] for name in calls}
    async with (
        mcp_http_client(auth) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        acquired = await session.call_tool("acquire_pc", {"pool": "ten"})
        if acquired.is_error:
            raise RuntimeError(f"acquire_pc failed: {acquired.content}")
        pc_id = (acquired.structured_content or {})["pc_id"]
        cpu = _cpu_ms(server_pid)
        await asyncio.sleep(2)  # the server's background work (pool manager), not per call
        SERVER_CPU["idle, per second"] = (_cpu_ms(server_pid) - cpu) / 2
        with PCRuntime(state).client(pc_id) as client:
            client.click(100, 100)
            client.run(["true"])
            grab = client.run(["python3", "-c", GRAB_FLOOR.format(runs=runs * 2)])
            floors = {
                "click": time_ms(lambda: client.click(100, 100), runs * 5),
                "run_command": time_ms(lambda: client.run(["true"]), runs * 2),
                "screenshot": json.loads(grab.stdout),
            }
        for name, (args, n) in calls.items():
            await session.call_tool(name, args)  # warm: connection to the PC, code paths
            cpu, mine = _cpu_ms(server_pid), _cpu_ms(os.getpid())
            for _ in range(n):
                start = time.perf_counter()
                answer = await session.call_tool(name, args)
                out[name].append((time.perf_counter() - start) * 1000)
                if answer.is_error:
                    raise RuntimeError(f"{name} failed: {answer.content}")
            SERVER_CPU[name] = (_cpu_ms(server_pid) - cpu) / n
            CLIENT_CPU[name] = (_cpu_ms(os.getpid()) - mine) / n
        await session.call_tool("release_pc", {})
    return out, floors


async def _bare_mcp_round_trips(url: str, runs: int, auth: DPoPAuth, pid: int) -> list[float]:
    """The same official client (DPoP proof on every request, which the bare server ignores)
    calling a no-op tool on the SDK's own server: what the MCP transport costs by itself."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    out: list[float] = []
    async with (
        mcp_http_client(auth) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("noop", {})
        cpu, mine = _cpu_ms(pid), _cpu_ms(os.getpid())
        for _ in range(runs):
            start = time.perf_counter()
            await session.call_tool("noop", {})
            out.append((time.perf_counter() - start) * 1000)
        SERVER_CPU["bare MCP no-op"] = (_cpu_ms(pid) - cpu) / runs
        CLIENT_CPU["bare MCP no-op"] = (_cpu_ms(os.getpid()) - mine) / runs
    return out


def _bare_mcp_row(auth: DPoPAuth) -> Row:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.mcp_floor_server", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the bare MCP server did not start") from None
                time.sleep(0.05)
        samples = asyncio.run(
            _bare_mcp_round_trips(f"http://127.0.0.1:{port}/mcp", RUNS * 5, auth, proc.pid)
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return summarize("bare MCP SDK server: no-op tool", samples, target="floor of the rows above")


def _gateway_rows(base: str, state: Path, auth: DPoPAuth, server_pid: int) -> list[Row]:
    gateway, floors = asyncio.run(
        _gateway_round_trips(f"{base}/mcp", state, RUNS, auth, server_pid)
    )
    rows = [
        summarize(
            "gateway /mcp: click",
            gateway["click"],
            floor=floors["click"],
            target="p50 <= floor + 2 ms, <= 3 ms",
            ok=lambda m, p, f: f is not None and m <= f + 2 and m <= 3,
        ),
        summarize(
            "gateway /mcp: run_command true",
            gateway["run_command"],
            floor=floors["run_command"],
            target="p50 <= floor + 2 ms, <= 4 ms",
            ok=lambda m, p, f: f is not None and m <= f + 2 and m <= 4,
        ),
    ]
    rows.append(
        summarize(
            "gateway /mcp: screenshot",
            gateway["screenshot"],
            floor=floors["screenshot"],
            target="p50 <= 1.3x floor",
            ok=lambda m, p, f: f is not None and m <= 1.3 * f,
        )
    )
    rows.append(_bare_mcp_row(auth))
    return rows


def main() -> int:
    if os.geteuid() != 0:
        print("the control-plane benchmark needs root", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    state = Path(tempfile.mkdtemp(prefix="corral-bench-", dir="/run"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CORRAL_STATE_DIR": str(state),
        "CORRAL_DATA_DIR": str(tmp),
        "CORRAL_DATABASE_URL": f"sqlite:///{tmp}/corral.db",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "up", "--port", str(port), "--no-default-pool"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: list[Row] = []
    try:
        http = httpx.Client(base_url=base, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        auth = DPoPAuth.from_credential(tmp / "admin.json")  # written by the first `corral up`
        http = httpx.Client(base_url=base, timeout=60, auth=auth)
        if ONLY == "gateway":
            http.post("/v1/pools", json={"name": "ten", "image": IMAGE, "warm": 1, "max": 2})
            _wait_counts(http, "ten", 1)
            print(render(_gateway_rows(base, state, auth, proc.pid)))
            _print_server_cpu()
            return 0
        floor = time_ms(lambda: http.get("/healthz"), RUNS * 2)

        start = time.perf_counter()
        http.post("/v1/pools", json={"name": "ten", "image": IMAGE, "warm": 10, "max": 10})
        _wait_counts(http, "ten", 10)
        ten = [(time.perf_counter() - start) * 1000]
        rows.append(
            summarize(
                "pool of 10 from zero to ready",
                [t / 1000 for t in ten],
                unit="s",
                target="<=10 s",
                ok=lambda m, p, f: m <= 10,
            )
        )
        sessions: list[str] = []

        def acquire() -> None:
            answer = http.post("/v1/pools/ten/sessions")
            answer.raise_for_status()
            sessions.append(answer.json()["session_id"])

        def release_all() -> None:
            while sessions:
                http.delete(f"/v1/sessions/{sessions.pop()}")
            _wait_counts(http, "ten", 10)

        def maybe_release() -> None:
            if len(sessions) >= 5:
                release_all()

        acq = time_ms(acquire, RUNS * 5, between=maybe_release)
        release_all()
        row = summarize(
            "acquire from a warm pool (HTTP)",
            acq,
            floor=floor,
            target="p50<=10 ms, p99<=50 ms",
            ok=lambda m, p, f: m <= 10 and _p99(acq) <= 50,
        )
        rows.append(row)

        def release_until_ready() -> None:
            acquire()
            _wait_counts(http, "ten", 9)
            start = time.perf_counter()
            http.delete(f"/v1/sessions/{sessions.pop()}")
            _wait_counts(http, "ten", 10)
            release_times.append((time.perf_counter() - start) * 1000)

        release_times: list[float] = []
        for _ in range(RUNS):
            release_until_ready()
        rows.append(
            summarize(
                "release until the PC is ready again",
                release_times,
                target="<=500 ms",
                ok=lambda m, p, f: m <= 500,
            )
        )

        acquire()
        sid = sessions[-1]
        rest_shot = time_ms(lambda: http.post(f"/v1/sessions/{sid}/actions/screenshot"), RUNS)
        rest_click = time_ms(
            lambda: http.post(f"/v1/sessions/{sid}/actions/click", json={"x": 100, "y": 100}),
            RUNS * 2,
        )
        shots, clicks = asyncio.run(_mcp_round_trips(f"{base}/sessions/{sid}/mcp", RUNS, auth))
        rows.append(
            summarize("screenshot round trip (MCP)", shots, floor=rest_shot, target="floor: REST")
        )
        rows.append(
            summarize("click round trip (MCP)", clicks, floor=rest_click, target="floor: REST")
        )
        release_all()
        _wait_counts(http, "ten", 10)
        rows.extend(_gateway_rows(base, state, auth, proc.pid))
        print(render(rows))
        print(f"acquire p99: {_p99(acq):.1f} ms; floor = GET /healthz on the same server")
        _print_server_cpu()
        return 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def _print_server_cpu() -> None:
    cpu = ", ".join(f"{name} {ms:.2f} ms" for name, ms in SERVER_CPU.items())
    print(f"server CPU per gateway call (all threads): {cpu}")
    if CLIENT_CPU:
        mine = ", ".join(f"{name} {ms:.2f} ms" for name, ms in CLIENT_CPU.items())
        print(f"client CPU per gateway call (the official MCP client, DPoP signing): {mine}")


def _p99(samples: list[float]) -> float:
    from bench._stats import percentile

    return percentile(samples, 0.99)
