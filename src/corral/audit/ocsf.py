"""An `AuditEvent` as an OCSF 1.8.0 record, and that record as the bytes the Merkle log appends.

- `to_ocsf(event, record_id=..., product_version=...)`: the OCSF record (a dict) of the class
  its category maps to (docs/audit.md, "Records (OCSF)"), with the `security_control` and
  `trace` profiles (policy decisions in `actor.authorizations`, `action_id`, `disposition_id`
  and `policy`; the W3C trace in `trace`) and what OCSF has no place for in `unmapped.corral`.
- `reduce_content(data, key)`: what a record keeps of content an agent typed or a PC returned:
  its HMAC-SHA256 under the log's content key, its size and a short escaped preview.
- `encode(record)`: canonical JSON (sorted keys, compact, UTF-8, no NaN), at most 65,535 bytes
  (a C2SP tlog-tiles entry): larger records have their biggest summaries replaced by their
  SHA-256 and size, and are marked truncated.

Everything from an agent or from inside a PC is hostile: every string `to_ocsf` copies is
bounded and has its control, bidi and invisible characters escaped (`corral.domain.text`).
Nothing here validates against the OCSF schema at run time (that costs milliseconds per record);
`tests/audit/test_ocsf.py` validates every category and outcome against the official export.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import math
from collections.abc import Mapping
from typing import Any

from corral.audit.event import Actor, AuditEvent, Category, DecisionNote, Outcome
from corral.domain.text import visible

__all__ = [
    "MAX_ENTRY_BYTES",
    "OCSF_PROFILES",
    "OCSF_VERSION",
    "encode",
    "reduce_content",
    "to_ocsf",
]

#: the newest OCSF release the `ocsf-json-schema` package bundles (its official export)
OCSF_VERSION = "1.8.0"
#: `security_control` adds `actor.authorizations`, `policy`, `action_id`, `disposition_id`
#: to every class used; `trace` (the `trace` object) applies to API Activity only in 1.8.0,
#: so the other classes keep the trace in `metadata.correlation_uid` and `unmapped.corral.trace`
OCSF_PROFILES = ("security_control", "trace")
#: a C2SP tlog-tiles entry is prefixed by a uint16 length
MAX_ENTRY_BYTES = 65_535

#: bounds on what a record copies from an event (characters, after escaping)
_ID_CHARS = 200
_TEXT_CHARS = 1024
_DEPTH = 16
#: decisions a record names (the first and the last half: the one that refused a call is the
#: last it took), and policies per decision; the record counts what it leaves out
_DECISIONS = 100
_POLICIES = 32
_CUT = "\u2026"  # marks a string that was cut

_PRODUCT_NAME = "Corral"

# (class uid, category uid)
_AUTHENTICATION = (3002, 3)  # Identity & Access Management
_AUTHORIZE_SESSION = (3003, 3)
_ACCOUNT_CHANGE = (3001, 3)
_API_ACTIVITY = (6003, 6)  # Application Activity
_DETECTION_FINDING = (2004, 2)  # Findings

_API_NAMES = {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_API_EXACT = {
    "observe": 2,
    "screenshot": 2,
    "read_file": 2,
    "list_directory": 2,
    "policy_changes": 2,
    "policy_schema": 2,
    "test_policy": 2,
    "pool_assignments": 2,
    "session_grant": 1,
    "acquire": 1,
    "write_file": 3,
    "decide_approval": 3,
    "release": 4,
}
_API_PREFIXES = (
    ("list_", 2),
    ("show_", 2),
    ("get_", 2),
    ("read_", 2),
    ("create_", 1),
    ("add_", 1),
    ("delete_", 4),
    ("remove_", 4),
    ("revoke_", 4),
    ("set_", 3),
    ("assign_", 3),
    ("enable_", 3),
    ("disable_", 3),
    ("rotate_", 3),
    ("update_", 3),
)
_ACCOUNT_NAMES = {1: "Create", 2: "Enable", 5: "Disable", 6: "Delete", 9: "Lock", 12: "Unlock"}
_ACCOUNT_PREFIXES = (
    ("create_", 1),
    ("enable_", 2),
    ("disable_", 5),
    ("delete_", 6),
    ("lock_", 9),
    ("unlock_", 12),
)
# OCSF user.type_id: the caller kinds of `corral.domain.access.CallerKind`
_USER_TYPES = {
    "user": (1, "User"),
    "operator": (2, "Admin"),
    "system": (3, "System"),
    "agent": (99, "Agent"),
}
# Informational, Low, Medium
_SEVERITY = {Outcome.SUCCESS: 1, Outcome.FAILURE: 2, Outcome.DENIED: 3}


def _text(value: object, limit: int = _ID_CHARS) -> str:
    """`value` as a string of at most `limit` characters (+ the cut mark) with every control,
    bidi and invisible character escaped: never more than `limit` characters of the input."""
    text = value if type(value) is str else str(value)
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text  # the common case: a plain id
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if not (text.isascii() and text.isprintable()):
        text = visible(text)
        if len(text) > limit:
            text, cut = text[:limit], True
    return text + _CUT if cut else text


def _opt(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _summary(value: Any, depth: int = 0) -> Any:
    """A copy of an args/result summary that is plain JSON: strings bounded and escaped, keys
    strings, non-finite floats and huge integers as text, anything else by its type name."""
    kind = type(value)
    if kind is str:
        return _text(value, _TEXT_CHARS)
    if kind is int:
        return value if -(2**63) <= value < 2**64 else f"<int of {value.bit_length()} bits>"
    if value is None or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if depth >= _DEPTH:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        return {_text(k): _summary(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_summary(v, depth + 1) for v in value]
    if isinstance(value, str):  # subclasses: a StrEnum...
        return _text(str(value), _TEXT_CHARS)
    if isinstance(value, int):
        return _summary(int(value), depth)
    if isinstance(value, float):
        return _summary(float(value), depth)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    return f"<{_text(kind.__name__, 64)}>"


def _activity(
    operation: str, exact: Mapping[str, int], prefixes: tuple[tuple[str, int], ...]
) -> int:
    found = exact.get(operation)
    if found is not None:
        return found
    for prefix, activity in prefixes:
        if operation.startswith(prefix):
            return activity
    return 99


def _user(actor: Actor, uid: str | None) -> dict[str, Any]:
    type_id, type_name = _USER_TYPES.get(actor.kind, (0, "Unknown"))
    user: dict[str, Any] = {"type_id": type_id, "type": type_name}
    if type_id == 0 and actor.kind:
        user["type_id"], user["type"] = 99, _text(actor.kind, 64)
    if uid is not None:
        user["uid"] = uid
    else:  # refused before anyone was known, or the server itself
        user["name"] = "system" if actor.kind == "system" else "unknown"
    if actor.key_thumbprint is not None:
        user["credential_uid"] = _text(actor.key_thumbprint)
    return user


@functools.lru_cache(maxsize=1024)
def _ip(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _endpoint(address: str | None) -> dict[str, Any]:
    if address is None:
        return {"name": "corral"}  # the server itself (system, lifecycle)
    ip = _ip(address) if len(address) <= 64 else None
    # not an IP: a unix socket, a test client
    return {"ip": ip} if ip is not None else {"name": _text(address)}


def _kept_decisions(event: AuditEvent) -> tuple[DecisionNote, ...]:
    notes = event.decisions
    if len(notes) <= _DECISIONS:
        return notes
    return notes[: _DECISIONS // 2] + notes[-(_DECISIONS // 2) :]


def _decisions(
    notes: tuple[DecisionNote, ...],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(`unmapped.corral.decisions`, `actor.authorizations`)."""
    detail: list[dict[str, Any]] = []
    authorizations: list[dict[str, Any]] = []
    for note in notes:
        policies = [_text(p) for p in note.policies[:_POLICIES]]
        item: dict[str, Any] = {
            "action": _text(note.action),
            "resource": _text(note.resource),
            "allowed": note.allowed,
            "policies": policies,
        }
        if len(note.policies) > _POLICIES:
            item["policies_total"] = len(note.policies)
        if note.reason is not None:
            item["reason"] = _text(note.reason, _TEXT_CHARS)
        detail.append(item)
        decision = "allow" if note.allowed else "deny"
        if policies:
            authorizations.extend(
                {"decision": decision, "policy": {"uid": p, "is_applied": True}} for p in policies
            )
        else:
            authorizations.append({"decision": decision})
    return detail, authorizations


def to_ocsf(event: AuditEvent, *, record_id: str, product_version: str) -> dict[str, Any]:
    """The OCSF 1.8.0 record of `event` (docs/audit.md, "Records (OCSF)").

    `record_id` becomes `metadata.uid` (and a finding's uid); the trace id becomes
    `metadata.correlation_uid`. Every string copied from the event is bounded and escaped, so
    the record's size outside `unmapped.corral` is bounded whatever the event holds.
    """
    category = event.category
    outcome = event.outcome
    actor = event.actor
    operation = _text(event.operation)
    action = _text(event.action)
    session, pc, pool, target = (
        _opt(event.session_id), _opt(event.pc_id), _opt(event.pool), _opt(event.target)
    )  # fmt: skip
    if category is Category.AUTHENTICATION:
        cls = _AUTHENTICATION
        activity_id, activity = (
            (3, "Authentication Ticket") if event.operation == "token" else (1, "Logon")
        )
    elif category is Category.SESSION and event.operation == "acquire":
        cls, activity_id, activity = _AUTHORIZE_SESSION, 1, "Assign Privileges"
    elif category is Category.ACCOUNT:
        cls = _ACCOUNT_CHANGE
        activity_id = _activity(event.operation, {}, _ACCOUNT_PREFIXES)
        activity = _ACCOUNT_NAMES.get(activity_id, operation)
    elif category is Category.SECURITY:
        cls, activity_id, activity = _DETECTION_FINDING, 1, "Create"
    else:  # API, TOOL (run_command too: see docs/audit.md), LIFECYCLE, SESSION's release
        cls = _API_ACTIVITY
        activity_id = _activity(event.operation, _API_EXACT, _API_PREFIXES)
        activity = _API_NAMES[activity_id] if activity_id != 99 else operation
    class_uid, category_uid = cls
    status_id = 1 if outcome is Outcome.SUCCESS else 2
    if cls is _DETECTION_FINDING:  # a finding's status is its own (New...), not the outcome's
        status_id = 1 if outcome is Outcome.SUCCESS else 99

    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "profiles": list(OCSF_PROFILES) if cls is _API_ACTIVITY else [OCSF_PROFILES[0]],
        "product": {
            "name": _PRODUCT_NAME,
            "vendor_name": _PRODUCT_NAME,
            "version": _text(product_version, 64),
        },
        "uid": _text(record_id),
    }
    corral: dict[str, Any] = {
        "operation": operation,
        "outcome": outcome.value,
        "action": action,
        "actor": {"kind": _text(actor.kind, 64)},
    }
    record: dict[str, Any] = {
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "severity_id": _SEVERITY[outcome],
        "status_id": status_id,
        "time": event.time_ms,
        "metadata": metadata,
        "unmapped": {"corral": corral},
    }
    if status_id == 99:
        record["status"] = outcome.value
    duration = event.duration_ms
    if math.isfinite(duration) and duration >= 0:
        corral["duration_ms"] = duration
        record["duration"] = round(duration)
        record["start_time"] = event.time_ms - record["duration"]
    if event.error_code is not None:
        record["status_code"] = _text(event.error_code, 64)
    if event.error_message is not None:
        record["status_detail"] = _text(event.error_message, _TEXT_CHARS)

    # what OCSF has no attribute for: the same keys in every class
    actor_id = _opt(actor.id)
    if actor.sponsor is not None:
        corral["actor"]["sponsor"] = _text(actor.sponsor)
    if actor.on_behalf_of is not None:
        corral["actor"]["on_behalf_of"] = _text(actor.on_behalf_of)
    for key, value in (("session", session), ("pc", pc), ("pool", pool), ("target", target)):
        if value is not None:
            corral[key] = value
    if event.via is not None:
        corral["via"] = _text(event.via, 64)
    if event.status is not None:
        corral["http_status"] = event.status
    if event.args:
        corral["args"] = _summary(event.args)
    if event.result:
        corral["result"] = _summary(event.result)

    # the policy decisions (security_control profile)
    notes = _kept_decisions(event)
    authorizations: list[dict[str, Any]] = []
    if notes:
        corral["decisions"], authorizations = _decisions(notes)
        if len(notes) < len(event.decisions):
            corral["decisions_total"] = len(event.decisions)
    if notes or outcome is Outcome.DENIED:
        denied = outcome is Outcome.DENIED
        record["action_id"] = 2 if denied else 1  # Denied, Allowed
        record["disposition_id"] = 2 if denied else 1  # Blocked, Allowed
        if denied and cls is not _ACCOUNT_CHANGE:  # its `policy` is a policy (de)tached
            for note in reversed(event.decisions):  # the last one refused it
                if not note.allowed and note.policies:
                    record["policy"] = {"uid": _text(note.policies[0]), "is_applied": True}
                    break

    trace = event.trace
    if trace is not None:
        trace_id, span_id = _text(trace.trace_id), _text(trace.span_id)
        parent_id = _opt(trace.parent_id)
        metadata["correlation_uid"] = trace_id
        if cls is _API_ACTIVITY:  # the trace profile (API Activity only in 1.8.0)
            span: dict[str, Any] = {
                "uid": span_id,
                "operation": operation,
                "start_time": record.get("start_time", event.time_ms),
                "end_time": event.time_ms,
            }
            if "duration" in record:
                span["duration"] = record["duration"]
            if parent_id is not None:
                span["parent_uid"] = parent_id
            record["trace"] = {"uid": trace_id, "span": span}
        else:
            corral["trace"] = {"trace_id": trace_id, "span_id": span_id}
            if parent_id is not None:
                corral["trace"]["parent_id"] = parent_id

    if cls is _DETECTION_FINDING:  # no actor, no endpoints: who it was stays in unmapped
        if actor_id is not None:
            corral["actor"]["id"] = actor_id
        if actor.address is not None:
            corral["actor"]["address"] = _text(actor.address)
        record["finding_info"] = {
            "uid": metadata["uid"],
            "title": operation,
            "types": [action],
            "created_time": event.time_ms,
        }
        resources = _resources(session, pc, pool, target)
        if resources:
            record["resources"] = resources
        return record

    user = _user(actor, actor_id)
    ocsf_actor: dict[str, Any] = {"user": user}
    if actor.session_id is not None:
        ocsf_actor["session"] = {"uid": _text(actor.session_id)}
    if authorizations:
        ocsf_actor["authorizations"] = authorizations
    record["actor"] = ocsf_actor
    record["src_endpoint"] = _endpoint(actor.address)

    if cls is _API_ACTIVITY:
        api: dict[str, Any] = {"operation": operation, "service": {"name": _PRODUCT_NAME}}
        if event.status is not None:
            api["response"] = {"code": event.status}
        if trace is not None:
            api["request"] = {"uid": record["trace"]["span"]["uid"]}
        record["api"] = api
        resources = _resources(session, pc, pool, target)
        if resources:
            record["resources"] = resources
    elif cls is _AUTHENTICATION:
        record["user"] = user
        record["service"] = {"name": _PRODUCT_NAME}
        if event.operation in ("token", "authenticate"):
            record["auth_protocol_id"] = 6  # OAuth 2.0
        if "session" in ocsf_actor:
            record["session"] = ocsf_actor["session"]
    elif cls is _AUTHORIZE_SESSION:
        record["user"] = user
        record["privileges"] = [action]
        if session is not None:
            record["session"] = {"uid": session}
    else:  # Account Change: the account changed
        if target is not None:
            record["user"] = {"uid": target}
        else:
            record["user"] = {"name": "unknown", "type_id": 0}
    return record


def _resources(
    session: str | None, pc: str | None, pool: str | None, target: str | None
) -> list[dict[str, Any]]:
    out = []
    if session is not None:
        out.append({"type": "session", "uid": session})
    if pc is not None:
        out.append({"type": "pc", "uid": pc})
    if pool is not None:
        out.append({"type": "pool", "name": pool})
    if target is not None:
        out.append({"type": "target", "uid": target})
    return out


def reduce_content(data: bytes | str, key: bytes, *, preview: int = 16) -> dict[str, Any]:
    """What a record keeps of content: `{"hmac_sha256": hex, "size": bytes, "preview": text}`.

    The HMAC (SHA-256, under the log's content key) lets someone who holds the content prove it
    is what was typed or read, without the log disclosing it or allowing a dictionary attack by
    anyone without the key. `size` counts UTF-8 bytes (a `str` with lone surrogates is counted
    and hashed as `surrogatepass` encodes it). The preview is at most the first `preview`
    characters of the content with backslashes doubled and every control, bidi, invisible or
    undecodable character escaped (`\\x1b`, `\\u202e`; an undecodable byte as `\\xff`): it never
    holds more than `preview` characters of the original.
    """
    if not key:
        raise ValueError("reduce_content needs a non-empty key")
    preview = max(0, preview)
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
        head = data[:preview]
    else:
        raw = bytes(data)
        # at most 4 bytes a character: the first `preview` characters are all in here whole
        head = raw[: preview * 4].decode("utf-8", "surrogateescape")[:preview]
    shown = []
    for ch in head:
        if ch == "\\":
            shown.append("\\\\")
        elif "\udc80" <= ch <= "\udcff" and not isinstance(data, str):
            shown.append(f"\\x{ord(ch) - 0xDC00:02x}")  # a byte that is not UTF-8
        else:
            shown.append(visible(ch))
    return {
        "hmac_sha256": hmac.new(key, raw, hashlib.sha256).hexdigest(),
        "size": len(raw),
        "preview": "".join(shown),
    }


_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
    check_circular=False,  # a loop ends in RecursionError, reported as ValueError
)


def _dumps(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"an audit record must be plain JSON: {exc}") from exc


def _digest(blob: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def encode(record: Mapping[str, Any]) -> bytes:
    """`record` as canonical JSON bytes (sorted keys, `,`/`:` separators, UTF-8, no NaN or
    infinity), at most `MAX_ENTRY_BYTES`.

    A larger record is shrunk, never refused: the largest values under `unmapped.corral` (args,
    result, decisions...) and then under `unmapped` are replaced by `{"sha256", "size"}` of
    their canonical JSON until it fits, `actor.authorizations` (the decisions again) is dropped
    if that is not enough, and the record is marked (`unmapped.corral.truncated`, the paths in
    `unmapped.corral.truncated_fields`, `metadata.is_truncated`, `metadata.untruncated_size`).
    A record that still does not fit (none `to_ocsf` makes) keeps only its small top-level
    values. Raises ValueError only when the record is not JSON (NaN, a lone surrogate, an
    object, a non-string key...).
    """
    data = _dumps(record)
    if len(data) <= MAX_ENTRY_BYTES:
        return data
    full_size = len(data)
    rec = dict(record)
    unmapped = dict(rec["unmapped"]) if isinstance(rec.get("unmapped"), Mapping) else {}
    corral = dict(unmapped["corral"]) if isinstance(unmapped.get("corral"), Mapping) else {}
    unmapped["corral"] = corral
    rec["unmapped"] = unmapped
    metadata = dict(rec["metadata"]) if isinstance(rec.get("metadata"), Mapping) else None
    if metadata is not None:
        metadata["is_truncated"] = True
        metadata["untruncated_size"] = full_size
        rec["metadata"] = metadata
    fields: list[str] = []
    corral["truncated"] = True
    corral["truncated_fields"] = fields

    candidates: list[tuple[int, str, dict[str, Any], str]] = []
    for container, prefix in ((corral, "unmapped.corral."), (unmapped, "unmapped.")):
        for key, value in container.items():
            if (container is unmapped and key == "corral") or (
                container is corral and key in ("truncated", "truncated_fields")
            ):
                continue
            size = len(_dumps(value))
            if size > 96:  # a digest is about 90 bytes
                candidates.append((size, prefix + key, container, key))
    candidates.sort(key=lambda c: c[0], reverse=True)  # stable: corral's first on a tie
    for _, path, container, key in candidates:
        container[key] = _digest(_dumps(container[key]))
        fields.append(path)
        data = _dumps(rec)
        if len(data) <= MAX_ENTRY_BYTES:
            return data

    actor = rec.get("actor")
    if isinstance(actor, Mapping) and "authorizations" in actor:
        rec["actor"] = {k: v for k, v in actor.items() if k != "authorizations"}
        fields.append("actor.authorizations")
        data = _dumps(rec)
        if len(data) <= MAX_ENTRY_BYTES:
            return data

    # Last resort (a record `to_ocsf` did not make): keep the small top-level values.
    kept: dict[str, Any] = {}
    budget = MAX_ENTRY_BYTES // 2
    dropped = []
    for key in sorted(record):
        if key == "unmapped":
            continue
        size = len(_dumps(key)) + len(_dumps(record[key])) + 2
        if size <= 2048 and size <= budget:
            kept[key] = record[key]
            budget -= size
        else:
            dropped.append(_text(key, 64))
    kept["unmapped"] = {
        "corral": {
            "truncated": True,
            "truncated_fields": ["*"],
            "dropped": dropped[:64],
            "record": _digest(_dumps(record)),
        }
    }
    return _dumps(kept)
