"""The OpenAPI document (docs/api.md): readable by any authenticated caller, typed answers,
every error a documented problem body, bounds on what reaches the store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.api.conftest import Client, Env

OPEN_SHAPES = {
    # Shapes that depend on something else, said in their descriptions: a tool's arguments
    # and structured result (docs/tools.md), and the context of a policy test (as Cedar
    # sees it).
    "ToolOut.data",
    "TestBody.context",
    "POST /v1/sessions/{session_id}/actions/{tool} body",
    # an audit record is an OCSF 1.8.0 record, whose schema is OCSF's (docs/audit.md)
    "AuditRecordOut.record",
    "AuditRecordProved.record",
}


def _open_objects(node: Any, where: str) -> Iterator[str]:
    """Where `node` has an object of unknown shape (`additionalProperties: true`)."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is True:
            yield where
        for key, value in node.items():
            yield from _open_objects(value, where if key == "properties" else f"{where}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from _open_objects(item, where)


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_any_authenticated_caller_reads_the_document(env: Env, bot: Client) -> None:
    """An agent without any role reads it; nobody reads it without a token."""
    assert bot("GET", "/openapi.json", check_secrets=False).status_code == 200
    assert env.http is not None
    anonymous = env.http.get("/openapi.json")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.json()["code"] == anonymous.json()["error"]["code"]


def test_answers_are_typed(bot: Client) -> None:
    """No answer and no body is an object of unknown shape, but the few that depend on
    something else (OPEN_SHAPES); every answer names its schema."""
    spec = bot("GET", "/openapi.json", check_secrets=False).json()
    found: set[str] = set()
    for name, schema in spec["components"]["schemas"].items():
        found |= {w.removesuffix(".anyOf") for w in _open_objects(schema, name)}
    for label, operation in _operations(spec):
        for status, answer in operation["responses"].items():
            for media in answer.get("content", {}).values():
                assert media.get("schema") not in ({}, None), f"{label} {status}: untyped"
                if any(_open_objects(media, "")):
                    found.add(f"{label} {status}")
        if any(_open_objects(operation.get("requestBody", {}), "")):
            found.add(f"{label} body")
    assert found == OPEN_SHAPES


def test_every_error_is_a_documented_problem(bot: Client) -> None:
    spec = bot("GET", "/openapi.json", check_secrets=False).json()
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    public = {"/healthz", "/v1/token", "/.well-known/jwks.json", "/ssf/events"}
    public |= {"/.well-known/ssf-configuration", "/.well-known/oauth-authorization-server"}
    public |= {"/.well-known/oauth-protected-resource"}
    public |= {"/.well-known/oauth-protected-resource/{resource}"}
    public |= {"/audit/checkpoint", "/audit/key", "/audit/tile/{path}"}
    for label, operation in _operations(spec):
        answers = operation["responses"]
        assert "422" not in answers or "HTTPValidationError" not in str(answers["422"]), label
        if label.split(" ", 1)[1] in public:
            continue
        for status in ("401", "403", "503"):
            content = answers[status]["content"]
            assert content == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, f"{label} {status}"
        assert operation["security"] == [{"DPoP": []}], label


def test_integers_that_reach_the_store_are_bounded(admin: Client) -> None:
    """A version past int64 was a 500 (SQLite overflow); now the document says the bound
    and the answer is a 400 that names the parameter."""
    spec = admin("GET", "/openapi.json", check_secrets=False).json()
    since = spec["paths"]["/v1/policies/changes"]["get"]["parameters"][0]
    assert since["schema"]["maximum"] == 2**63 - 1
    too_big = admin("GET", "/v1/policies/changes", params={"since": 2**63})
    assert too_big.status_code == 400, too_big.text
    assert too_big.headers["content-type"] == "application/problem+json"
    assert "since" in too_big.json()["detail"]
    assert admin("GET", "/v1/policies/changes", params={"since": 2**63 - 1}).json() == []
    pool = {"name": "p", "image": "minimal", "idle_timeout_s": 2**63}
    refused = admin("POST", "/v1/pools", json=pool)
    assert refused.status_code == 400, refused.text
    assert "idle_timeout_s" in refused.json()["detail"]
