"""One trace's records as a tree: the user's request, the agent, its sessions, their actions.

Records link by span: a record whose parent span is another record's span is its child (a
caller that passes `traceparent` per call builds its own tree). Within a session, records
whose parent is outside the trace hang under the session's acquire, so a trace started by
one request reads: request -> acquire (session, PC) -> each tool call -> release. Each node
keeps what a reviewer needs (time, operation, actor, outcome, decisions) and its log index,
whose inclusion proof `corral audit prove INDEX` prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["entry_record", "node_of", "trace_tree"]


def entry_record(index: int, entry: bytes) -> dict[str, Any]:
    """A stored entry as readers see it: its index and its record (JSON), or, for an entry
    that is not one (never written by Corral), null and its size."""
    try:
        return {"index": index, "record": json.loads(entry)}
    except ValueError:
        return {"index": index, "record": None, "bytes": len(entry)}


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _corral(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(_map(record.get("unmapped")).get("corral"))


def node_of(index: int, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of one record a trace tree shows."""
    if not isinstance(record, Mapping):
        return {"index": index, "operation": "(not a record)", "children": []}
    corral = _corral(record)
    trace, actor = _map(corral.get("trace")), _map(corral.get("actor"))
    if not trace:  # API Activity keeps it in OCSF's own `trace` object
        ocsf = _map(record.get("trace"))
        span = _map(ocsf.get("span"))
        trace = {"trace_id": ocsf.get("uid"), "span_id": span.get("uid")}
        trace["parent_id"] = span.get("parent_uid")
    metadata = _map(record.get("metadata"))
    decisions = corral.get("decisions")
    node: dict[str, Any] = {
        "index": index,
        "record_id": metadata.get("uid"),
        "time": record.get("time"),
        "operation": corral.get("operation") or record.get("message"),
        "outcome": corral.get("outcome"),
        "actor": {
            "id": _map(_map(record.get("actor")).get("user")).get("uid"),
            **{k: actor[k] for k in ("kind", "sponsor", "on_behalf_of") if k in actor},
        },
        "session": corral.get("session"),
        "pc": corral.get("pc"),
        "pool": corral.get("pool"),
        "span_id": trace.get("span_id"),
        "parent_id": trace.get("parent_id"),
        "decisions": decisions if isinstance(decisions, list) else [],
        "children": [],
    }
    if record.get("status_code") is not None:
        node["error"] = record.get("status_code")
    return node


def trace_tree(trace_id: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`records`: `{"index": i, "record": {...}}` of one trace, in log order."""
    nodes = [node_of(int(r["index"]), r.get("record")) for r in records]
    by_span = {n["span_id"]: n for n in nodes if isinstance(n["span_id"], str)}
    acquires = {
        n["session"]: n
        for n in nodes
        if n["operation"] == "acquire" and n["outcome"] == "success" and n["session"]
    }
    roots: list[dict[str, Any]] = []
    for node in nodes:
        parent = by_span.get(node["parent_id"]) if node["parent_id"] else None
        if parent is None and node["session"] in acquires and acquires[node["session"]] is not node:
            parent = acquires[node["session"]]
        # only an earlier record can be a parent: a forest whatever spans a caller sent
        if parent is not None and parent["index"] < node["index"]:
            parent["children"].append(node)
        else:
            roots.append(node)
    # the caller's span the trace started from (its user request), when it came from outside
    outside = {n["parent_id"] for n in roots if n["parent_id"] and n["parent_id"] not in by_span}
    return {
        "trace_id": trace_id,
        "records": len(nodes),
        "request_spans": sorted(outside),
        "started_by_corral": not outside,
        "children": roots,
    }
