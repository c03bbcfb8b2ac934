"""Trace context as the W3C specs define it: what a caller may send, what is dropped whole."""

from __future__ import annotations

import pytest

from corral.domain.trace import (
    TraceContext,
    parse_baggage,
    parse_traceparent,
    parse_tracestate,
)

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent() -> None:
    assert parse_traceparent(GOOD) == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1,
    )  # fmt: skip
    # a later version may carry more fields: the first three are read
    assert parse_traceparent("01-" + GOOD[3:] + "-what-comes-next") is not None


@pytest.mark.parametrize(
    "bad",
    [
        GOOD.upper(),  # hex is lowercase
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero parent id
        "ff" + GOOD[2:],  # version ff
        GOOD + "-extra",  # version 00 has exactly four fields
        GOOD[:-1],  # short flags
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "",
        "x" * 600,
    ],
)
def test_an_invalid_traceparent_is_ignored(bad: str) -> None:
    assert parse_traceparent(bad) is None


def test_tracestate_and_baggage_limits() -> None:
    assert parse_tracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7") == (
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    )
    assert parse_tracestate("Upper=1") is None  # keys are lowercase
    assert parse_tracestate("a=1,a=2") is None  # a key once
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(33))) is None  # at most 32
    assert parse_tracestate("a=has,comma") is None
    assert parse_tracestate("a=1," * 1_000_000) is None  # refused before any splitting
    assert parse_baggage("userId=alice, serverNode=DF%2028;p1;p2=x") is not None
    assert parse_baggage("bad key=1") is None
    assert parse_baggage("k=" + "v" * 8200) is None  # over 8192 bytes
    assert parse_baggage(",".join(f"k{i}=v" for i in range(65))) is None  # over 64 members


def test_the_callers_trace_is_kept_or_one_is_started() -> None:
    kept = TraceContext.from_carrier(
        {"traceparent": GOOD, "tracestate": "rojo=1", "baggage": "user=alice"}
    )
    assert kept.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and not kept.started_here
    assert kept.tracestate == "rojo=1" and kept.baggage == "user=alice"
    child = kept.child()
    assert parse_traceparent(child) is not None and child.split("-")[1] == kept.trace_id
    assert child.split("-")[2] != kept.parent_id
    started = TraceContext.from_carrier({"traceparent": "junk", "tracestate": "rojo=1"})
    assert started.started_here and started.tracestate is None  # discarded with its parent
    assert len(started.trace_id) == 32 and started.trace_id != kept.trace_id
    assert TraceContext.from_carrier({"traceparent": 42}).started_here  # not text: ignored
