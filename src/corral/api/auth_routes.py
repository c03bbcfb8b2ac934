"""HTTP adapter of the token endpoint (`POST /v1/token`), the JWKS and the discovery metadata.

Thin: it reads the form-encoded request (RFC 6749 section 4.4) and the DPoP header, calls
`AuthService.token`, and turns an `AuthError` into the OAuth JSON error answer
(RFC 6749 section 5.2) with the headers RFC 9449 asks for (`DPoP-Nonce`).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from corral.api._answers import (
    AuthorizationServerMetadata,
    JwkSet,
    OAuthError,
    ResourceMetadata,
    TokenOut,
    ok,
)
from corral.api._problem import problems
from corral.errors import NotFoundError
from corral.identity.errors import AuthError, UseDPoPNonceError
from corral.identity.resource_metadata import (
    AUTHORIZATION_SERVER_PATH,
    METADATA_PATH,
    authorization_server_metadata,
    is_resource_path,
    protected_resource_metadata,
)
from corral.identity.token_endpoint import AuthService, InvalidRequestError

__all__ = ["auth_router", "include_auth"]

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_TOKEN_REQUEST_BYTES = 64 * 1024
# Token answers must never be cached (RFC 6749 section 5.1).
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_TOKEN_REQUEST_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            FORM_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["grant_type", "client_assertion_type", "client_assertion"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_id": {"type": "string"},
                        "client_assertion_type": {"type": "string"},
                        "client_assertion": {"type": "string"},
                    },
                }
            }
        },
    },
    "parameters": [
        {"name": "DPoP", "in": "header", "required": True, "schema": {"type": "string"}},
    ],
}


# RFC 6749 section 5.2 error bodies (not problem bodies: OAuth clients parse these).
_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OAuthError, "description": why}
    for status, why in (
        (400, "a bad request or grant, or a bad DPoP proof (`use_dpop_nonce`: retry with it)"),
        (401, "the client could not be authenticated"),
        (429, "too many token requests; retry after Retry-After seconds"),
        (503, "temporarily unavailable; retry after Retry-After seconds"),
    )
}


def _error_answer(exc: AuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if isinstance(exc, UseDPoPNonceError):
        headers["DPoP-Nonce"] = exc.nonce
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(exc.oauth_error(), status_code=exc.token_endpoint_status, headers=headers)


async def _read_form(request: Request) -> dict[str, str]:
    """The parameters of a form-encoded body, each present at most once, text only."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE:
        raise InvalidRequestError(f"the token request must be {FORM_TYPE}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_TOKEN_REQUEST_BYTES:
        raise InvalidRequestError("the token request is too large")
    if len(await request.body()) > MAX_TOKEN_REQUEST_BYTES:
        raise InvalidRequestError("the token request is too large")
    form = await request.form(max_fields=32, max_files=0)
    params: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise InvalidRequestError(f"the {name} parameter is not text")
        if name in params:  # RFC 6749 section 3.2: parameters must not be repeated
            raise InvalidRequestError(f"the {name} parameter is repeated")
        params[name] = value
    return params


def auth_router(auth: AuthService) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/token",
        openapi_extra=_TOKEN_REQUEST_SCHEMA,
        tags=["auth"],
        response_model=None,
        responses={**ok(TokenOut), **_OAUTH_ERRORS},
    )
    async def token(request: Request) -> JSONResponse:
        """OAuth 2 client credentials with a private_key_jwt assertion and a DPoP proof."""
        dpop = request.headers.getlist("dpop")
        try:
            form = await _read_form(request)
            answer = await auth.token(
                form,
                ",".join(dpop) if dpop else None,  # several headers: refused as such
                request.method,
                client_address=request.client.host if request.client else None,
            )
        except AuthError as exc:
            return _error_answer(exc)
        nonces = auth.dpop_settings.nonces
        if nonces is not None:  # RFC 9449 8.2: the nonce to use next
            return JSONResponse(
                answer, headers={**_NO_STORE, "DPoP-Nonce": nonces.current(time.time())}
            )
        return JSONResponse(answer, headers=_NO_STORE)

    @router.get("/.well-known/jwks.json", tags=["auth"], response_model=None, responses=ok(JwkSet))
    async def jwks() -> JSONResponse:
        """The public keys that verify Corral's access tokens."""
        return JSONResponse(auth.jwks(), headers={"Cache-Control": "public, max-age=60"})

    @router.get(METADATA_PATH, tags=["auth"], response_model=None, responses=ok(ResourceMetadata))
    async def resource_metadata() -> JSONResponse:
        """RFC 9728 metadata of the API itself (REST under /v1)."""
        return _metadata(auth.issuer, "")

    @router.get(
        METADATA_PATH + "/{resource:path}",
        tags=["auth"],
        response_model=None,
        responses={**ok(ResourceMetadata), **problems(404)},
    )
    async def resource_metadata_of(resource: str) -> JSONResponse:
        """RFC 9728 metadata of `/mcp` and of each `/sessions/{id}/mcp`."""
        return _metadata(auth.issuer, "/" + resource)

    @router.get(
        AUTHORIZATION_SERVER_PATH,
        tags=["auth"],
        response_model=None,
        responses=ok(AuthorizationServerMetadata),
    )
    async def authorization_server() -> JSONResponse:
        """RFC 8414 metadata of Corral's authorization server (its token endpoint)."""
        return JSONResponse(
            authorization_server_metadata(auth.issuer), headers={"Cache-Control": _PUBLIC}
        )

    return router


_PUBLIC = "public, max-age=300"


def _metadata(issuer: str, resource_path: str) -> JSONResponse:
    if not is_resource_path(resource_path):
        raise NotFoundError(
            f"no protected resource at {resource_path or '/'}",
            hint="metadata is served for /mcp and /sessions/{id}/mcp (RFC 9728 section 3.1)",
        )
    body = protected_resource_metadata(issuer, resource_path)
    return JSONResponse(body, headers={"Cache-Control": _PUBLIC})


def include_auth(app: FastAPI, auth: AuthService) -> None:
    """Serve the token endpoint and the JWKS on `app`."""
    app.include_router(auth_router(auth))
