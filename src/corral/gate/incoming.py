"""The trace an operation belongs to, as the adapter received it (W3C trace context).

Adapters set it for the request they serve: the HTTP middleware from `traceparent`,
`tracestate` and `baggage` headers, the MCP servers from the request's `params._meta` (which wins
over the HTTP headers: it is what MCP clients set per call), the host CLI from the
`TRACEPARENT` environment variable (OpenTelemetry's convention). The Gate reads it when a call
enters (`current_trace`); none received means Corral starts a trace for the call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from corral.domain.trace import TraceContext

__all__ = ["current_trace", "trace_from", "traced"]

_current: ContextVar[TraceContext | None] = ContextVar("corral_trace", default=None)

#: the carrier keys W3C trace context uses (HTTP headers in lower case, MCP `_meta` keys)
_KEYS = ("traceparent", "tracestate", "baggage")


def trace_from(carrier: Mapping[str, object] | None) -> TraceContext | None:
    """The caller's trace if the carrier holds a valid `traceparent`, else None (an invalid
    one is ignored, as W3C trace context says: the call then starts a new trace)."""
    if not carrier or "traceparent" not in carrier:
        return None
    found = TraceContext.from_carrier({k: carrier.get(k) for k in _KEYS})
    return None if found.started_here else found


def current_trace() -> TraceContext | None:
    return _current.get()


@contextmanager
def traced(trace: TraceContext | None) -> Iterator[None]:
    """Operations in this context belong to `trace` (None: each starts its own)."""
    token = _current.set(trace)
    try:
        yield
    finally:
        _current.reset(token)
