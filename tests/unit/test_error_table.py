"""The one error table: every class a row with a status, a title and an exit code; REST, MCP
and the CLI all read it; docs/errors.md is generated from it and must match."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import corral.api.app
import corral.cli.main  # noqa: F401
from corral.errors import (
    CorralError,
    InvalidInputError,
    NotFoundError,
    SessionGoneError,
    StoreUnavailableError,
    error_table,
    from_problem,
    problem,
)
from corral.identity.errors import AuthError, ReplayCacheFullError
from corral.problem import Problem

ROOT = Path(__file__).resolve().parents[2]


def test_every_class_is_a_row_with_an_error_status() -> None:
    rows = error_table()
    assert {r.cls for r in rows} >= {CorralError, AuthError, StoreUnavailableError}
    for row in rows:
        assert 400 <= row.status <= 599 and row.title and row.code, row
        assert row.exit_code >= 1, row
    # The auth family is in the table with the statuses its answers carry.
    by_class = {r.cls: r for r in rows}
    assert by_class[AuthError].status == 401 and by_class[AuthError].mcp == "HTTP answer"
    assert by_class[ReplayCacheFullError].status == 503
    assert by_class[StoreUnavailableError].status == 503
    assert by_class[NotFoundError].title == "Not found"


def test_a_problem_body_validates_as_the_exported_model() -> None:
    exc = InvalidInputError(
        "bad request: body.warm: too small",
        hint="warm >= 0",
        errors=[{"field": "body.warm", "detail": "too small"}],
    )
    body = problem(exc, alias=False)
    assert body == {
        "type": "urn:corral:error:invalid_input",
        "title": "Invalid input",
        "status": 400,
        "detail": exc.message,
        "code": "invalid_input",
        "hint": "warm >= 0",
        "errors": [{"field": "body.warm", "detail": "too small"}],
    }
    model = Problem.model_validate(problem(exc)).model_dump()
    assert model["code"] == "invalid_input" and model["error"]["message"] == exc.message
    schema = Problem.model_json_schema()
    assert set(schema["required"]) == {"type", "title", "status", "detail", "code"}


def test_a_server_answer_becomes_the_row_of_its_code() -> None:
    gone = from_problem(404, problem(SessionGoneError("session s-1 was released")))
    assert (gone.code, gone.exit_code, gone.status) == ("session_gone", 3, 404)
    assert gone.message == "session s-1 was released"
    busy = from_problem(503, problem(StoreUnavailableError()))
    assert busy.exit_code == 9 and busy.hint == "retry in a few seconds"
    # the body before problem details, an OAuth answer, and no JSON at all
    legacy = from_problem(409, {"error": {"code": "conflict", "message": "exists"}})
    assert (legacy.code, legacy.message, legacy.exit_code) == ("conflict", "exists", 8)
    oauth = from_problem(401, {"error": "invalid_client", "error_description": "no key"})
    assert (oauth.code, oauth.message, oauth.exit_code) == ("invalid_client", "no key", 4)
    crash = from_problem(500, None, "Internal Server Error")
    assert (crash.message, crash.exit_code) == ("Internal Server Error", 1)
    unknown = from_problem(404, {"code": "no_such_code", "detail": "?"})
    assert unknown.exit_code == 3  # by status


def test_docs_errors_md_is_generated_from_the_classes() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen-errors-doc.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert gen.render(page) == page, "run: .venv/bin/python scripts/gen-errors-doc.py"
