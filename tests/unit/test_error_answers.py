"""How an error reaches a caller: a pending approval names its id to REST and MCP clients alike,
so a program can wait on it or show it to a human; other errors carry no such field."""

from __future__ import annotations

import json

from mcp_types import TextContent

from corral.api.errors import error_response
from corral.errors import ApprovalPendingError, PermissionDeniedError
from corral.mcp._tools import error_result

PENDING = ApprovalPendingError(
    'run_command on PC::"pc-1" waits for a sponsor\'s approval (approval ap-1)',
    hint="one of your sponsors answers with `corral approvals approve ap-1`",
    approval_id="ap-1",
)


def test_rest_answer_names_the_approval() -> None:
    answer = error_response(PENDING)
    assert answer.status_code == 403
    error = json.loads(bytes(answer.body))["error"]
    assert error == {
        "code": "approval_pending",
        "message": PENDING.message,
        "hint": PENDING.hint,
        "approval_id": "ap-1",
    }
    other = json.loads(bytes(error_response(PermissionDeniedError("no")).body))["error"]
    assert "approval_id" not in other


def test_mcp_tool_error_names_the_approval() -> None:
    result = error_result(PENDING)
    assert result.is_error and result.structured_content is not None
    assert result.structured_content["error"]["approval_id"] == "ap-1"
    (block,) = result.content
    assert isinstance(block, TextContent)
    text = block.text
    assert text.startswith("error (approval_pending): ") and "ap-1" in text
    other = error_result(PermissionDeniedError("no")).structured_content
    assert other is not None and "approval_id" not in other["error"]
