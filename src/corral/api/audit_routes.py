"""The audit log over HTTP (docs/audit.md).

Public, in the C2SP tlog-tiles layout, so any witness or auditor can follow the log with only
its verifier key: `/audit/checkpoint` (the latest signed checkpoint), `/audit/key` (the
verifier key, `name+keyid+key`) and the hash tiles `/audit/tile/<L>/<N>[.p/<W>]`. These hold
only hashes and signatures and are doors served before any caller exists, like the token
endpoint. The records themselves (entry bundles `/audit/tile/entries/...`, `/v1/audit/*`) need
`read_audit` and go through the Gate.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import PlainTextResponse, Response

from corral.api._answers import (
    AuditEntriesOut,
    AuditRecordProved,
    ConsistencyOut,
    InclusionOut,
    TraceOut,
    ok,
)
from corral.api._problem import problems
from corral.api.deps import Principal
from corral.gate import Gate
from corral.gate import operations as ops

if TYPE_CHECKING:
    from corral.audit.service import AuditService

__all__ = ["include_audit"]

#: a tile never changes: a full one is final, and a partial one of a given width too
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_FRESH = {"Cache-Control": "no-store"}
_MAX = 2**62
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "text"}
_BINARY = {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "C2SP tlog-tiles bytes",
}
RecordId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
TraceId = Annotated[str, Path(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")]


def include_audit(app: FastAPI, gate: Gate, audit: AuditService) -> None:
    @app.get(
        "/audit/checkpoint",
        response_class=PlainTextResponse,
        responses={200: _TEXT},
        tags=["audit"],
    )
    async def checkpoint() -> PlainTextResponse:
        """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note)."""
        note = await asyncio.to_thread(audit.checkpoint)
        return PlainTextResponse(note, headers=_FRESH)

    @app.get(
        "/audit/key",
        response_class=PlainTextResponse,
        responses={200: _TEXT},
        tags=["audit"],
    )
    async def key() -> PlainTextResponse:
        """The log's verifier key in the signed-note form `name+keyid+key`."""
        return PlainTextResponse(audit.vkey() + "\n")

    @app.get(
        "/audit/tile/entries/{path:path}",
        response_class=Response,
        responses={
            200: _BINARY,
            **problems(401, 403, 404),
        },
        tags=["audit"],
    )
    async def entry_bundle(path: Annotated[str, Path(max_length=80)], who: Principal) -> Response:
        """An entry bundle (C2SP tlog-tiles): the records themselves, `read_audit` only."""
        op = ops.operation("audit_entry_bundle")
        data = await gate.handle(who, op, f"tile/entries/{path}")
        return Response(data, media_type="application/octet-stream", headers=_IMMUTABLE)

    @app.get(
        "/audit/tile/{path:path}",
        response_class=Response,
        responses={200: _BINARY, **problems(404)},
        tags=["audit"],
    )
    async def hash_tile(path: Annotated[str, Path(max_length=80)]) -> Response:
        """A hash tile (C2SP tlog-tiles), public: it holds only hashes."""
        data = await asyncio.to_thread(audit.hash_tile, f"tile/{path}")
        return Response(data, media_type="application/octet-stream", headers=_IMMUTABLE)

    @app.get(
        "/v1/audit/entries",
        response_model=None,
        responses={**ok(AuditEntriesOut), **problems(400, 401, 403)},
        tags=["audit"],
    )
    async def entries(
        who: Principal,
        start: Annotated[int, Query(ge=0, le=_MAX)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        session: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Records by index (or one session's), with the log's size and the next index."""
        args = ops.AuditEntries(start=start, limit=limit, session=session)
        result: dict[str, Any] = await gate.handle(who, ops.operation("audit_entries"), None, args)
        return result

    @app.get(
        "/v1/audit/records/{record_id}",
        response_model=None,
        responses={**ok(AuditRecordProved), **problems(401, 403, 404)},
        tags=["audit"],
    )
    async def record(record_id: RecordId, who: Principal) -> dict[str, Any]:
        """One record, its index and a C2SP tlog-proof of it against the latest checkpoint."""
        result: dict[str, Any] = await gate.handle(who, ops.operation("audit_record"), record_id)
        return result

    @app.get(
        "/v1/audit/proof/inclusion",
        response_model=None,
        responses={**ok(InclusionOut), **problems(400, 401, 403)},
        tags=["audit"],
    )
    async def inclusion(
        who: Principal,
        index: Annotated[int, Query(ge=0, le=_MAX)],
        size: Annotated[int | None, Query(ge=1, le=_MAX)] = None,
    ) -> dict[str, Any]:
        """An RFC 9162 inclusion proof (hex hashes) of entry `index` in tree `size`."""
        args = ops.AuditInclusion(index=index, size=size)
        result: dict[str, Any] = await gate.handle(
            who, ops.operation("audit_inclusion"), None, args
        )
        return result

    @app.get(
        "/v1/audit/proof/consistency",
        response_model=None,
        responses={**ok(ConsistencyOut), **problems(400, 401, 403)},
        tags=["audit"],
    )
    async def consistency(
        who: Principal,
        first: Annotated[int, Query(ge=1, le=_MAX)],
        second: Annotated[int | None, Query(ge=1, le=_MAX)] = None,
    ) -> dict[str, Any]:
        """An RFC 9162 consistency proof (hex hashes) between two tree sizes."""
        args = ops.AuditConsistency(first=first, second=second)
        result: dict[str, Any] = await gate.handle(
            who, ops.operation("audit_consistency"), None, args
        )
        return result

    @app.get(
        "/v1/audit/traces/{trace_id}",
        response_model=None,
        responses={**ok(TraceOut), **problems(401, 403, 404)},
        tags=["audit"],
    )
    async def trace(trace_id: TraceId, who: Principal) -> dict[str, Any]:
        """Every record of one W3C trace as a tree: request, agent, session, actions."""
        result: dict[str, Any] = await gate.handle(who, ops.operation("audit_trace"), trace_id)
        return result
