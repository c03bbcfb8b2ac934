"""The computer tools as MCP: their listing, their results and their errors.

Both MCP servers (per-session and gateway) publish the one catalogue in `corral.lifecycle.tools`
with its own descriptions and JSON schemas, and send every call to `ControlPlane.act`, which
validates the arguments and serializes the actions of a session. This module only translates:
a `ToolResult` becomes MCP content, and a `CorralError` becomes a tool result with `isError`
whose text says what to change, so a model can read it and correct itself. Nothing here may
answer with a protocol error or an HTTP 500 for a failure the caller can fix.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent, Tool
from pydantic import BaseModel

from corral.errors import CorralError, UnavailableError, problem
from corral.gate.operations import TOOLS, parse_model

if TYPE_CHECKING:
    from corral.domain.access import Caller
    from corral.gate import Gate
    from corral.lifecycle.tools import ToolResult

__all__ = [
    "computer_tools",
    "error_result",
    "guarded",
    "input_schema",
    "mcp_tool",
    "parse_model",
    "run_computer_tool",
    "text_result",
    "tool_result",
]

log = logging.getLogger("corral.mcp")
M = TypeVar("M", bound=BaseModel)


def mcp_tool(name: str, description: str, args: type[BaseModel]) -> Tool:
    """One MCP tool whose input schema is exactly its pydantic model's JSON schema."""
    return Tool(name=name, description=description, input_schema=args.model_json_schema())


@cache
def computer_tools() -> tuple[Tool, ...]:
    """The 19 computer tools, in catalogue order (built once: the catalogue is static)."""
    return tuple(mcp_tool(t.name, t.description, t.args) for t in TOOLS.values())


def input_schema(name: str) -> dict[str, Any] | None:
    spec = TOOLS.get(name)
    return None if spec is None else spec.args.model_json_schema()


def tool_result(result: ToolResult) -> CallToolResult:
    """Text always; a screenshot also as image content; `data` as structured content."""
    content: list[ContentBlock] = []
    if result.image_png is not None:
        data = base64.b64encode(result.image_png).decode("ascii")
        content.append(ImageContent(data=data, mime_type="image/png"))
    content.append(TextContent(text=result.text or "done"))
    return CallToolResult(content=content, structured_content=result.data or None)


def text_result(text: str, data: dict[str, Any] | None = None) -> CallToolResult:
    return CallToolResult(content=[TextContent(text=text)], structured_content=data or None)


def error_result(exc: CorralError) -> CallToolResult:
    """A tool error a model can act on: what went wrong, then what to change; its structured
    content is the error's problem body (RFC 9457, as REST answers it: the error table)."""
    text = f"error ({exc.code}): {exc.message}"
    if exc.hint:
        text += f"\nhint: {exc.hint}"
    if isinstance(exc, UnavailableError):
        text += f"\nretry after {exc.retry_after_s} s"
    return CallToolResult(
        content=[TextContent(text=text)], structured_content=problem(exc), is_error=True
    )


async def guarded(tool: str, call: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
    """Run one tool call; expected failures become tool errors, crashes are logged and reported
    as a tool error too (never a protocol error), so the agent's session is never stuck."""
    try:
        return await call()
    except CorralError as exc:
        return error_result(exc)
    except Exception:
        log.exception("MCP tool %s crashed", tool)
        return error_result(
            CorralError(
                f"{tool} failed inside Corral (the server logged the details)",
                hint="retry; if it keeps failing, release the PC and acquire another",
            )
        )


async def run_computer_tool(
    gate: Gate,
    session_id: str,
    tool: str,
    args: dict[str, Any] | None,
    principal: Caller | None,
) -> CallToolResult:
    """Act on `session_id` through the Gate (the control plane behind it validates `args`,
    unknown tools included, and runs the session's actions one at a time, in order)."""
    from corral.gate.operations import tool_operation

    op = tool_operation(tool)

    async def call() -> CallToolResult:
        return tool_result(await gate.handle(principal, op, session_id, args or {}))

    return await guarded(tool, call)
