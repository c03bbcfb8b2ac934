"""The Gate on its own: the stages' order, what a refusal or a failure walks, and that the
no-op stages change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from corral.domain.access import OPERATOR, SYSTEM
from corral.errors import InvalidInputError, PermissionDeniedError
from corral.gate import STAGES, Gate, GateCall, PolicyAuthorizer, Route, operation, tool_operation
from tests.gate.spy import Spy


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _echo(call: GateCall) -> Any:
    return {"target": call.target, "args": call.args}


async def _fail(call: GateCall) -> Any:
    raise InvalidInputError("bad")


def _gate(run: Any = _echo) -> Gate:
    return Gate(
        {"show_pool": Route(run)}, tools=Route(run), authorizer=PolicyAuthorizer(policy=None)
    )


@pytest.mark.anyio
async def test_stages_run_in_order_and_the_no_ops_change_nothing() -> None:
    spy = Spy(_gate()).install()
    answer = await spy.gate.handle(SYSTEM, operation("show_pool"), "p", {"a": 1})
    assert answer == {"target": "p", "args": {"a": 1}}
    assert spy.walks["show_pool"] == [(STAGES, True)]
    await spy.gate.handle(SYSTEM, tool_operation("click"), "ses-1", {"x": 1, "y": 2})
    assert spy.walks["click"] == [(STAGES, True)]


@pytest.mark.anyio
async def test_a_refusal_and_a_failure_are_recorded() -> None:
    spy = Spy(_gate(_fail)).install()
    with pytest.raises(PermissionDeniedError):
        await spy.gate.handle(None, operation("show_pool"), "p")  # no caller: fail closed
    assert spy.walks["show_pool"] == [(("authorize", "record"), False)]
    with pytest.raises(InvalidInputError):
        await spy.gate.handle(SYSTEM, operation("show_pool"), "p")
    assert spy.walks["show_pool"][1] == (("authorize", "inspect_in", "act", "record"), False)


@pytest.mark.anyio
async def test_an_operation_the_gate_does_not_serve_is_refused() -> None:
    gate = _gate()
    with pytest.raises(InvalidInputError, match="not served here"):
        await gate.handle(SYSTEM, operation("acquire"), "p")


@pytest.mark.anyio
async def test_without_a_policy_an_operation_the_gate_decides_is_refused() -> None:
    gate = Gate({"create_user": Route(_echo, decides=False)}, authorizer=PolicyAuthorizer(None))
    with pytest.raises(PermissionDeniedError, match="no policy"):
        await gate.handle(OPERATOR, operation("create_user"), None, {})


def test_the_catalogue_is_documented_and_its_actions_are_cedar_actions() -> None:
    from pathlib import Path

    from corral.access.schema import ADMIN_ACTIONS, LENDING_ACTIONS
    from corral.gate import OPERATIONS
    from corral.gate.operations import render_markdown

    doc = Path(__file__).parents[2] / "docs" / "operations.md"
    assert doc.read_text() == render_markdown(), "regenerate: python -m corral.gate"
    actions = {op.action for op in OPERATIONS.values()}
    assert actions <= set(LENDING_ACTIONS) | set(ADMIN_ACTIONS), actions


def test_session_controls_are_defined_once() -> None:
    """The request model's fields are exactly the controls policy knows a caller may ask for."""
    from corral.access.context import CONTROL_FLAGS
    from corral.gate.operations import AcquirePc, AcquireRequest, SessionControls

    assert set(SessionControls.model_fields) == {*CONTROL_FLAGS, "allowed_hosts"}
    for model in (AcquireRequest, AcquirePc):
        assert model.model_fields["controls"].annotation == SessionControls | None
