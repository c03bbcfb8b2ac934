"""`corral demo`: play an agent against a running Corral, through the official MCP client.

It uses only the gateway at `/mcp`, as a plain MCP client configuration would: list pools,
acquire a PC, open a terminal, type a command, read the file the command wrote, take a
screenshot, release. Each step prints its wall time, so it doubles as a smoke test of a
deployment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from corral.cli._common import out_console, safe
from corral.cli._http import DEFAULT_URL, credential_path, set_credential

if TYPE_CHECKING:  # the MCP SDK loads when the demo runs, not for `corral --help`
    from mcp import ClientSession
    from mcp_types import CallToolResult

__all__ = ["demo"]

COMMAND = "echo hello from corral > ~/demo.txt\n"
TERMINAL_WAIT_S = 20.0
FILE_WAIT_S = 10.0
POLL_S = 0.2


class DemoError(Exception):
    """A step failed; the message says which and why."""


def _text(result: CallToolResult) -> str:
    from mcp_types import TextContent

    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


class _Agent:
    """The MCP session plus step timing."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def call(self, tool: str, args: dict[str, Any] | None = None) -> CallToolResult:
        from mcp_types import CallToolResult

        result = await self.session.call_tool(tool, args or {})
        if not isinstance(result, CallToolResult):
            raise DemoError(f"{tool}: unexpected answer {type(result).__name__}")
        if result.is_error:
            raise DemoError(f"{tool}: {_text(result)}")
        return result

    @staticmethod
    def step(started: float, label: str, detail: str = "") -> None:
        ms = (time.perf_counter() - started) * 1000
        line = f"[dim]{ms:7.0f} ms[/]  [bold]{label}[/]  {safe(detail)}".rstrip()
        out_console.print(line, highlight=False)


def _check_reachable(url: str) -> None:
    """Fail fast, and plainly, when nothing listens at `url`."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=3):
            pass
    except OSError as exc:
        raise DemoError(
            f"Corral is not reachable at {url} ({exc.strerror or exc}); start it with `corral up`"
        ) from None


def _first_cause(exc: BaseException) -> BaseException:
    """The MCP client raises through task groups: find the error that started it."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _wait_for_terminal(agent: _Agent, pid: object) -> str:
    """The id of the window the launched xterm (`pid`) maps; typing before it does is lost."""
    deadline = time.monotonic() + TERMINAL_WAIT_S
    while True:
        windows = (await agent.call("list_windows")).structured_content or {}
        for window in windows.get("windows", []):
            if window.get("pid") == pid:
                return str(window["id"])
        if time.monotonic() > deadline:
            raise DemoError(f"no xterm window appeared within {TERMINAL_WAIT_S:g} s")
        await asyncio.sleep(POLL_S)


async def _read_back(agent: _Agent) -> str:
    deadline = time.monotonic() + FILE_WAIT_S
    while True:
        try:
            content = _text(await agent.call("read_file", {"path": "demo.txt"}))
        except DemoError:
            content = ""
        if content.endswith("\n"):
            return content
        if time.monotonic() > deadline:
            raise DemoError(f"~/demo.txt was not written within {FILE_WAIT_S:g} s")
        await asyncio.sleep(POLL_S)


async def _play(agent: _Agent, pool: str, out: Path) -> None:
    from mcp_types import ImageContent

    t = time.perf_counter()
    pools = (await agent.call("list_pools")).structured_content or {}
    names = [str(p["name"]) for p in pools.get("pools", [])]
    agent.step(t, "list_pools", ", ".join(names) or "(none)")
    if pool not in names:
        raise DemoError(f"there is no pool {pool!r} (pools: {', '.join(names) or 'none'})")

    t = time.perf_counter()
    session = (await agent.call("acquire_pc", {"pool": pool})).structured_content or {}
    agent.step(t, "acquire_pc", f"PC {session.get('pc_id')} (session {session.get('session_id')})")
    try:
        t = time.perf_counter()
        launched = await agent.call("launch_app", {"command": ["xterm"]})
        window = await _wait_for_terminal(agent, (launched.structured_content or {}).get("pid"))
        await agent.call("focus_window", {"window_id": window})
        agent.step(t, "launch_app", f"xterm is up (window {window})")

        t = time.perf_counter()
        await agent.call("type_text", {"text": COMMAND})
        agent.step(t, "type_text", repr(COMMAND))

        t = time.perf_counter()
        content = await _read_back(agent)
        agent.step(t, "read_file", f"demo.txt: {content.strip()!r}")

        t = time.perf_counter()
        shot = await agent.call("screenshot")
        image = next((c for c in shot.content if isinstance(c, ImageContent)), None)
        if image is None:
            raise DemoError("screenshot: no image in the answer")
        png = base64.b64decode(image.data)
        out.write_bytes(png)
        agent.step(t, "screenshot", f"{_text(shot).split(';')[0]}, saved to {out}")
    except BaseException:
        with contextlib.suppress(Exception):  # do not hide the first failure
            await agent.call("release_pc")
        raise
    t = time.perf_counter()
    await agent.call("release_pc")
    agent.step(t, "release_pc", "the PC is being reset")


async def _run(url: str, pool: str, out: Path, credential: Path) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    from corral.client.http import DPoPAuth, mcp_http_client

    endpoint = f"{url}/mcp"
    started = time.perf_counter()
    try:
        async with (
            mcp_http_client(DPoPAuth.from_credential(credential)) as http,
            streamable_http_client(endpoint, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            t = time.perf_counter()
            await session.initialize()
            _Agent.step(t, "connect", endpoint)
            await _play(_Agent(session), pool, out)
    except Exception as exc:
        cause = _first_cause(exc)
        if isinstance(cause, DemoError):
            raise cause from None
        if isinstance(cause, MCPError):
            raise DemoError(f"the MCP server at {endpoint} refused: {cause.message}") from None
        raise DemoError(f"talking to {endpoint} failed: {cause!r}") from None
    total = (time.perf_counter() - started) * 1000
    out_console.print(f"[green]demo done[/] in {total:.0f} ms; screenshot: {out}", highlight=False)


def demo(
    url: Annotated[str, typer.Option(help="Corral's address (or set CORRAL_URL)")] = DEFAULT_URL,
    pool: Annotated[str, typer.Option(help="pool to acquire a PC from")] = "default",
    out: Annotated[Path, typer.Option("--out", "-o", help="where to save the screenshot")] = Path(
        "demo.png"
    ),
    credential: Annotated[
        Path | None,
        typer.Option(help="credential to act with (default: $CORRAL_CREDENTIAL or admin.json)"),
    ] = None,
) -> None:
    """Act as an agent over MCP: acquire a PC, open a terminal, type a command, read the file
    it wrote, save a screenshot, release; each step with its time."""
    url = url.rstrip("/")
    try:
        _check_reachable(url)
        set_credential(credential)
        path = credential_path()
        if not path.exists():
            raise DemoError(f"no credential at {path}: pass --credential")
        asyncio.run(_run(url, pool, out, path))
    except DemoError as exc:
        out_console.print(f"[bold red]demo failed:[/] {safe(exc)}", highlight=False)
        raise typer.Exit(1) from None
