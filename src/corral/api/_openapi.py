"""The OpenAPI document (`/openapi.json`) as generators need it.

FastAPI documents what each route declares; this adds what every route shares, so no route
can forget it: the DPoP security scheme, the problem answers of the authentication
middleware (401), of the policy check (403), of request validation (400, which Corral answers
instead of FastAPI's 422), of the body limit (413) and of an unavailable store (503).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from corral.api._problem import problem_json_schema, problems

__all__ = ["install_openapi"]

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_DPOP = {
    "type": "http",
    "scheme": "DPoP",
    "description": "an access token from POST /v1/token, bound to the caller's key, with a "
    "fresh DPoP proof on every request (RFC 9449); docs/authentication.md",
}


def _document(app: FastAPI, public: Collection[str]) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # Corral answers 400, not 422
        schemas.pop(name, None)
    schemas.update(problem_json_schema())
    doc["components"]["securitySchemes"] = {"DPoP": _DPOP}
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            answers: dict[str, Any] = operation.setdefault("responses", {})
            validation = answers.get("422", {}).get("content", {}).get("application/json", {})
            if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del answers["422"]
            shared: list[int] = []
            if operation.get("parameters") or operation.get("requestBody"):
                shared.append(400)
            if operation.get("requestBody"):
                shared.append(413)
            if path not in public:
                shared += [401, 403, 503]
                operation["security"] = [{"DPoP": []}]
            for status, answer in problems(*shared).items():
                answers.setdefault(str(status), answer)
            operation["responses"] = dict(sorted(answers.items()))
    return doc


def install_openapi(app: FastAPI, *, public: Collection[str]) -> None:
    """Serve the completed document; `public` are the paths that take no token."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, public)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
