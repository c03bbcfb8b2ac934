"""HTTP adapter of Shared Signals: the push receiver (`POST /ssf/events`, RFC 8935) and the
transmitter metadata (`GET /.well-known/ssf-configuration`).

Neither takes a Corral token: a pushed SET authenticates itself by its signature (the
middleware exempts these paths), and the metadata is public. A refused SET is answered 400
with `{"err": ..., "description": ...}` (RFC 8935 section 2.3); an accepted one 202, no body.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from corral.api._answers import SetError, SsfConfiguration, ok
from corral.identity.errors import SetRefusedError
from corral.identity.event_emitter import SET_CONTENT_TYPE, transmitter_metadata
from corral.identity.event_receiver import EventReceiver

__all__ = ["include_ssf", "ssf_router"]

RECEIVER_PATH = "/ssf/events"
METADATA_PATH = "/.well-known/ssf-configuration"
MAX_SET_BYTES = 16 * 1024
_SET_BODY = {
    "requestBody": {
        "required": True,
        "content": {SET_CONTENT_TYPE: {"schema": {"type": "string", "maxLength": MAX_SET_BYTES}}},
    }
}


def _refused(err: str, description: str) -> JSONResponse:
    return JSONResponse(SetRefusedError(err, description).body(), status_code=400)


def ssf_router(receiver: EventReceiver, issuer: str) -> APIRouter:
    router = APIRouter(tags=["events"])

    @router.post(
        RECEIVER_PATH,
        status_code=202,
        response_class=Response,
        responses={
            202: {"description": "accepted (no body)"},
            400: {"model": SetError, "description": "refused (RFC 8935 section 2.3)"},
        },
        openapi_extra=_SET_BODY,
    )
    async def push(request: Request) -> Response:
        """Receive one Security Event Token from a trusted provider (RFC 8935 push)."""
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != SET_CONTENT_TYPE:
            return _refused("invalid_request", f"the body must be {SET_CONTENT_TYPE}")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_SET_BYTES:
            return _refused("invalid_request", "the SET is too large")
        body = await request.body()
        if len(body) > MAX_SET_BYTES:
            return _refused("invalid_request", "the SET is too large")
        try:
            token = body.decode("ascii").strip()
        except UnicodeDecodeError:
            return _refused("invalid_request", "the body is not a compact JWS")
        try:
            await receiver.receive(token)
        except SetRefusedError as exc:
            return JSONResponse(exc.body(), status_code=400)
        return Response(status_code=202)

    @router.get(METADATA_PATH, response_model=None, responses=ok(SsfConfiguration))
    async def configuration() -> JSONResponse:
        """SSF transmitter metadata: issuer, keys, push delivery, event types."""
        return JSONResponse(
            transmitter_metadata(issuer), headers={"Cache-Control": "public, max-age=300"}
        )

    return router


def include_ssf(app: FastAPI, receiver: EventReceiver, issuer: str) -> None:
    app.include_router(ssf_router(receiver, issuer))
