"""How an error reaches a caller: one problem body (RFC 9457) for REST and MCP alike, from the
error table; a pending approval names its id, so a program can wait on it or show it to a
human; other errors carry no such member."""

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
PROBLEM = {
    "type": "urn:corral:error:approval_pending",
    "title": "Approval pending",
    "status": 403,
    "detail": PENDING.message,
    "code": "approval_pending",
    "hint": PENDING.hint,
    "approval_id": "ap-1",
}
# The body before problem details, kept for one release as the `error` member.
LEGACY = {
    "code": "approval_pending",
    "message": PENDING.message,
    "hint": PENDING.hint,
    "approval_id": "ap-1",
}


def test_rest_answer_is_a_problem_naming_the_approval() -> None:
    answer = error_response(PENDING)
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    body = json.loads(bytes(answer.body))
    assert body == {**PROBLEM, "error": LEGACY}
    other = json.loads(bytes(error_response(PermissionDeniedError("no")).body))
    assert "approval_id" not in other and "approval_id" not in other["error"]
    assert "hint" not in other  # omitted when there is none


def test_mcp_tool_error_is_the_same_problem() -> None:
    result = error_result(PENDING)
    assert result.is_error and result.structured_content == {**PROBLEM, "error": LEGACY}
    (block,) = result.content
    assert isinstance(block, TextContent)
    text = block.text
    assert text.startswith("error (approval_pending): ") and "ap-1" in text
    other = error_result(PermissionDeniedError("no")).structured_content
    assert other is not None and "approval_id" not in other
