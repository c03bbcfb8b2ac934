"""The trace an operation belongs to, as the adapter received it (W3C trace context).

Adapters set it for the request they serve: the HTTP middleware from `traceparent`,
`tracestate` and `baggage` headers, the MCP servers from the request's `params._meta` (which wins
over the HTTP headers: it is what MCP clients set per call), the host CLI from the
`TRACEPARENT` environment variable (OpenTelemetry's convention). The Gate reads it when a call
enters (`current_trace`); none received means Corral starts a trace for the call. The context
variable itself lives in `corral.domain.trace`, so the audit pillar reads it too.
"""

from corral.domain.trace import current_trace, trace_from, traced

__all__ = ["current_trace", "trace_from", "traced"]
