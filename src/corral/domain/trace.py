"""W3C Trace Context (traceparent, tracestate) and W3C Baggage, as a caller sends them in HTTP
headers or in an MCP request's `params._meta` (the 2026-07-28 revision reserves those three
keys for exactly this). Corral keeps a caller's trace across token, acquire, tool calls and
release, and starts one when none comes; what the caller sent is validated, bounded and kept
as observed, never trusted for identity.

Rules (W3C Trace Context Level 2, W3C Baggage): `traceparent` is
`version-traceid-parentid-flags` in lowercase hex; an all-zero trace or parent id, version
`ff`, or anything after the flags of a version-00 header makes it invalid, and an invalid or
missing `traceparent` discards `tracestate`. `tracestate` is at most 32 `key=value` members;
baggage at most 64 members and 8192 bytes. What breaks these rules is dropped whole, never
cut in the middle.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "BAGGAGE_MAX_BYTES",
    "TRACESTATE_MAX_BYTES",
    "TraceContext",
    "current_trace",
    "parse_baggage",
    "parse_traceparent",
    "parse_tracestate",
    "trace_from",
    "traced",
]

TRACESTATE_MAX_BYTES = 512
BAGGAGE_MAX_BYTES = 8192
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_STATE_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
_STATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAGGAGE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")


def parse_traceparent(value: str | None) -> tuple[str, str, int] | None:
    """(trace id, parent id, flags) of a valid `traceparent`, else None."""
    if value is None or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, int(flags, 16)


def parse_tracestate(value: str | None) -> str | None:
    """The `tracestate` list normalized (`k=v,k=v`), or None if it breaks the rules."""
    if value is None or len(value) > 4 * TRACESTATE_MAX_BYTES:  # bounded work on hostile input
        return None
    members = []
    for raw in value.split(",", 64):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or not _STATE_KEY.fullmatch(key) or not _STATE_VALUE.fullmatch(val):
            return None
        members.append(f"{key}={val}")
    if (
        not members
        or len(members) > 32
        or len({m.split("=", 1)[0] for m in members}) != len(members)
    ):
        return None
    joined = ",".join(members)
    return joined if len(joined) <= TRACESTATE_MAX_BYTES else None


def parse_baggage(value: str | None) -> str | None:
    """The baggage header if it is well formed and within the limits, else None."""
    if value is None:
        return None
    if len(value.encode()) > BAGGAGE_MAX_BYTES:
        return None
    members = [m.strip(" \t") for m in value.split(",")]
    if len(members) > 64:
        return None
    for member in members:
        pairs = [p.strip(" \t") for p in member.split(";")]
        key, eq, val = pairs[0].partition("=")
        if not eq or not _TOKEN.fullmatch(key.strip(" \t")):
            return None
        if not _BAGGAGE_VALUE.fullmatch(val.strip(" \t")):
            return None
        for prop in pairs[1:]:
            pkey, peq, pval = prop.partition("=")
            if not _TOKEN.fullmatch(pkey.strip(" \t")):
                return None
            if peq and not _BAGGAGE_VALUE.fullmatch(pval.strip(" \t")):
                return None
    return value


@dataclass(frozen=True)
class TraceContext:
    """The trace a request belongs to. `parent_id` is the caller's span (None when Corral
    started the trace: nothing valid came); `tracestate` and `baggage` as the caller sent
    them, validated."""

    trace_id: str
    parent_id: str | None
    flags: int = 0
    tracestate: str | None = None
    baggage: str | None = None

    @property
    def started_here(self) -> bool:
        return self.parent_id is None

    @classmethod
    def start(cls) -> TraceContext:
        """A new trace (random 16-byte id, never all zeros)."""
        while True:
            trace_id = secrets.token_hex(16)
            if trace_id != "0" * 32:
                return cls(trace_id, None)

    @classmethod
    def from_carrier(cls, carrier: Mapping[str, object]) -> TraceContext:
        """From HTTP headers (lowercase names) or an MCP request's `_meta`: the caller's trace
        if its `traceparent` is valid, else a new one (its `tracestate` then discarded)."""

        def text(key: str) -> str | None:
            value = carrier.get(key)
            return value if isinstance(value, str) else None

        parent = parse_traceparent(text("traceparent"))
        baggage = parse_baggage(text("baggage"))
        if parent is None:
            return cls(cls.start().trace_id, None, baggage=baggage)
        trace_id, parent_id, flags = parent
        return cls(trace_id, parent_id, flags, parse_tracestate(text("tracestate")), baggage)

    def child(self) -> str:
        """A `traceparent` naming a new span of this trace (for what Corral calls next)."""
        span = secrets.token_hex(8)
        while span == "0" * 16:
            span = secrets.token_hex(8)
        return f"00-{self.trace_id}-{span}-{self.flags & 0x03:02x}"


# -- the trace of what is being served (set by adapters, read by the Gate and the audit log) --

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
    """The trace of the request being served, as its adapter received it (None: none came)."""
    return _current.get()


@contextmanager
def traced(trace: TraceContext | None) -> Iterator[None]:
    """Operations in this context belong to `trace` (None: each starts its own)."""
    token = _current.set(trace)
    try:
        yield
    finally:
        _current.reset(token)
