"""OCSF records of audit events, validated offline against the official OCSF export.

`ocsf-json-schema` (dev only) bundles the official OCSF exports and builds the JSON Schema of a
class with its profiles; `jsonschema` validates. Every category and outcome, with hostile
strings, is checked against the schema of its class, before and after `encode`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import math
import timeit
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from corral.audit.event import Actor, AuditEvent, Category, DecisionNote, Outcome, TraceIds
from corral.audit.ocsf import (
    MAX_ENTRY_BYTES,
    OCSF_PROFILES,
    OCSF_VERSION,
    encode,
    reduce_content,
    to_ocsf,
)

KEY = b"k" * 32
HOSTILE = "rm -rf ~ #\u202e\x1b[31m\x00\ud800\u200b\x7f\r\nend"
TRACE = TraceIds(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7",
                 parent_id="a1b2c3d4e5f60718")  # fmt: skip


@functools.cache
def _schemas() -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))


@functools.cache
def _validator(class_uid: int, profiles: tuple[str, ...]) -> Draft202012Validator:
    schemas = _schemas()
    name = schemas.lookup_class_name_from_uid(class_uid=class_uid)
    schema = schemas.get_class_schema(class_name=name, profiles=list(profiles))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def assert_valid(record: dict[str, Any]) -> None:
    profiles = tuple(record["metadata"]["profiles"])
    validator = _validator(record["class_uid"], profiles)
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors)


AGENT = Actor(kind="agent", id="a-1f2e3d", sponsor="u-alice", on_behalf_of="u-bob",
              address="203.0.113.7", key_thumbprint="NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
              session_id="s-77")  # fmt: skip
USER = Actor(kind="user", id="u-alice", address="2001:db8::1")
OPERATOR = Actor(kind="operator", id="host-operator", address="unix:/run/corral.sock")
SYSTEM = Actor(kind="system", id=None)
ANONYMOUS = Actor(kind="agent", id=None, address="198.51.100.9")

# (category, operation, action, actor, expected class uid)
CASES: list[tuple[Category, str, str, Actor, int]] = [
    (Category.AUTHENTICATION, "token", "token", AGENT, 3002),
    (Category.AUTHENTICATION, "authenticate", "authenticate", ANONYMOUS, 3002),
    (Category.SESSION, "acquire", "acquire", AGENT, 3003),
    (Category.SESSION, "release", "release", AGENT, 6003),
    (Category.API, "create_pool", "admin_pool", USER, 6003),
    (Category.API, "list_pools", "read_pool", OPERATOR, 6003),
    (Category.ACCOUNT, "disable_agent", "admin_agent", USER, 3001),
    (Category.ACCOUNT, "revoke_agent_tokens", "admin_agent", OPERATOR, 3001),
    (Category.TOOL, "click", "click", AGENT, 6003),
    (Category.TOOL, "type_text", "type_text", AGENT, 6003),
    (Category.TOOL, "run_command", "run_command", AGENT, 6003),
    (Category.LIFECYCLE, "reset", "reset", SYSTEM, 6003),
    (Category.SECURITY, "ssf_receive", "session-revoked", SYSTEM, 2004),
]


def make_event(
    category: Category,
    operation: str,
    action: str,
    actor: Actor,
    outcome: Outcome,
    *,
    args: dict[Any, Any] | None = None,
    hostile: bool = True,
) -> AuditEvent:
    allowed = outcome is not Outcome.DENIED
    text = HOSTILE if hostile else "hello"
    decisions = (
        DecisionNote(action=action, resource='Session::"s-77"', allowed=allowed,
                     policies=("system-agents-act-in-own-session",) if allowed else (),
                     reason=None if allowed else "no permit"),
        DecisionNote(action=action, resource='Pc::"pc-3"', allowed=allowed,
                     policies=("p-1", "p-2") if allowed else ("forbid-run-" + text,),
                     reason=text),
    )  # fmt: skip
    return AuditEvent(
        time_ms=1_796_000_000_123,
        category=category,
        operation=operation,
        action=action,
        actor=actor,
        outcome=outcome,
        duration_ms=12.75,
        error_code=None if outcome is Outcome.SUCCESS else "policy_denied",
        error_message=None if outcome is Outcome.SUCCESS else f"refused: {text}",
        status={Outcome.SUCCESS: 200, Outcome.DENIED: 403, Outcome.FAILURE: 502}[outcome],
        session_id="s-77",
        pc_id="pc-3",
        pool="default",
        target="a-1f2e3d" if category is Category.ACCOUNT else None,
        trace=TRACE,
        decisions=decisions if actor.kind != "system" else (),
        args=args if args is not None else {"text": reduce_content(text, KEY), "x": 10, "y": 20},
        result={"exit_code": 0, "stdout": reduce_content(text * 100, KEY), "ratio": math.nan},
        via="mcp",
    )


ALL = [
    pytest.param(case, outcome, id=f"{case[1]}-{outcome.value}")
    for case, outcome in itertools.product(CASES, Outcome)
]


@pytest.mark.parametrize(("case", "outcome"), ALL)
def test_every_category_and_outcome_is_schema_valid(
    case: tuple[Category, str, str, Actor, int], outcome: Outcome
) -> None:
    category, operation, action, actor, class_uid = case
    event = make_event(category, operation, action, actor, outcome)
    record = to_ocsf(event, record_id="r-000042", product_version="0.1.0")
    assert_valid(record)
    assert record["class_uid"] == class_uid
    assert record["type_uid"] == class_uid * 100 + record["activity_id"]
    assert record["metadata"]["version"] == OCSF_VERSION == "1.8.0"
    assert record["metadata"]["uid"] == "r-000042"
    assert record["metadata"]["correlation_uid"] == TRACE.trace_id
    assert record["metadata"]["product"] == {
        "name": "Corral", "vendor_name": "Corral", "version": "0.1.0"
    }  # fmt: skip
    assert record["time"] == event.time_ms
    corral = record["unmapped"]["corral"]
    if class_uid == 6003:  # OCSF 1.8.0's trace profile applies to API Activity only
        assert record["metadata"]["profiles"] == list(OCSF_PROFILES)
        assert record["trace"]["uid"] == TRACE.trace_id
        assert record["trace"]["span"]["uid"] == TRACE.span_id
        assert record["trace"]["span"]["parent_uid"] == TRACE.parent_id
        assert "trace" not in corral
    else:
        assert record["metadata"]["profiles"] == ["security_control"] and "trace" not in record
        assert corral["trace"] == {
            "trace_id": TRACE.trace_id, "span_id": TRACE.span_id, "parent_id": TRACE.parent_id
        }  # fmt: skip
    assert corral["session"] == "s-77" and corral["pc"] == "pc-3" and corral["via"] == "mcp"
    assert corral["duration_ms"] == 12.75 and corral["outcome"] == outcome.value
    assert corral["result"]["ratio"] == "nan"  # no NaN reaches the log
    if class_uid == 2004:
        assert record["status_id"] == (1 if outcome is Outcome.SUCCESS else 99)
        assert "actor" not in record and corral["actor"]["kind"] == "system"
    else:
        assert record["status_id"] == (1 if outcome is Outcome.SUCCESS else 2)
        user = record["actor"]["user"]
        kind_ids = {"agent": 99, "user": 1, "operator": 2, "system": 3}
        assert user["type_id"] == kind_ids[actor.kind]
        assert user.get("uid") == actor.id
    if outcome is Outcome.SUCCESS:
        assert "status_code" not in record and "status_detail" not in record
    else:
        assert record["status_code"] == "policy_denied"
        # escaped: no control, bidi or lone surrogate reaches the record
        assert "\\u202e" in record["status_detail"] and "\\x1b" in record["status_detail"]
        assert "\u202e" not in record["status_detail"] and "\ud800" not in record["status_detail"]
    if event.decisions:
        assert record["action_id"] == (2 if outcome is Outcome.DENIED else 1)
        assert len(corral["decisions"]) == 2
        if class_uid != 2004:
            auths = record["actor"]["authorizations"]
            assert {a["decision"] for a in auths} == {
                "deny" if outcome is Outcome.DENIED else "allow"
            }
        if outcome is Outcome.DENIED and class_uid != 3001:
            assert record["policy"]["uid"].startswith("forbid-run-")
    if class_uid in (6003, 3002):
        assert ("ip" in record["src_endpoint"]) == (actor.address not in (None, OPERATOR.address))
    if class_uid == 6003:
        assert record["api"]["operation"] == operation
    data = encode(record)
    data.decode("utf-8")  # no lone surrogate made it through
    assert json.loads(data) == json.loads(json.dumps(record))


def test_run_command_is_api_activity_with_its_exit_code() -> None:
    event = make_event(Category.TOOL, "run_command", "run_command", AGENT, Outcome.SUCCESS)
    record = to_ocsf(event, record_id="r-1", product_version="0.1.0")
    assert (record["class_uid"], record["activity_id"], record["activity_name"]) == (
        6003, 99, "run_command"
    )  # fmt: skip
    assert record["unmapped"]["corral"]["result"]["exit_code"] == 0
    assert {"type": "pc", "uid": "pc-3"} in record["resources"]


def test_the_schema_check_can_fail() -> None:
    """The validator really checks: a missing required attribute, a bad enum, an unknown
    attribute and a bad IP are each refused."""
    event = make_event(Category.TOOL, "click", "click", AGENT, Outcome.SUCCESS)
    good = to_ocsf(event, record_id="r-1", product_version="0.1.0")
    assert_valid(good)
    for broken in (
        {k: v for k, v in good.items() if k != "api"},
        {**good, "status_id": 7},
        {**good, "corral_session": "s-77"},
        {**good, "src_endpoint": {"ip": "not an ip"}},
        {**good, "actor": {"user": {"type_id": 99}}},
    ):
        with pytest.raises(AssertionError):
            assert_valid(broken)


def test_without_trace_or_address_or_decisions_still_valid() -> None:
    for category, operation, action, _, _ in CASES:
        event = AuditEvent(
            time_ms=1, category=category, operation=operation, action=action,
            actor=Actor(kind="martian", id=None), outcome=Outcome.FAILURE,
            duration_ms=math.inf,
        )  # fmt: skip
        record = to_ocsf(event, record_id="r", product_version="v")
        assert_valid(record)
        assert "trace" not in record and "correlation_uid" not in record["metadata"]
        assert "duration" not in record
        encode(record)


def _big_event(**changes: Any) -> AuditEvent:
    big_args = {"chunks": ["A" * 1000 for _ in range(1000)], "text": "\x1b" * 1_000_000}
    event = make_event(Category.TOOL, "write_file", "write_file", AGENT, Outcome.SUCCESS,
                       args=big_args)  # fmt: skip
    fields = {f: getattr(event, f) for f in event.__dataclass_fields__}
    fields.update(changes)
    return AuditEvent(**fields)


def test_a_megabyte_event_encodes_within_the_entry_limit_and_stays_valid() -> None:
    record = to_ocsf(_big_event(), record_id="r-9", product_version="0.1.0")
    args_size = len(json.dumps(record["unmapped"]["corral"]["args"]).encode())
    assert args_size > 1_000_000
    data = encode(record)
    assert len(data) <= MAX_ENTRY_BYTES
    decoded = json.loads(data)
    assert_valid(decoded)
    corral = decoded["unmapped"]["corral"]
    assert corral["truncated"] is True
    assert corral["truncated_fields"] == ["unmapped.corral.args"]
    blob = json.dumps(
        record["unmapped"]["corral"]["args"], sort_keys=True, separators=(",", ":"),
        ensure_ascii=False,
    ).encode()  # fmt: skip
    assert corral["args"] == {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    assert corral["result"] == record["unmapped"]["corral"]["result"]  # small: kept
    assert decoded["metadata"]["is_truncated"] is True
    assert decoded["metadata"]["untruncated_size"] > 1_000_000
    assert encode(record) == data  # deterministic
    assert "truncated" not in record["unmapped"]["corral"]  # the caller's record untouched


def test_every_field_hostile_and_huge_still_fits() -> None:
    """Every string of the event at 1 MB of astral and control characters, and thousands of
    decisions: encode still fits and the record stays schema-valid."""
    huge = ("\U0001f600\x07\u202e" * 400_000)[:1_000_000]
    actor = Actor(kind=huge, id=huge, sponsor=huge, on_behalf_of=huge, address=huge,
                  key_thumbprint=huge, session_id=huge)  # fmt: skip
    notes = tuple(
        DecisionNote(action=huge, resource=huge, allowed=False, policies=(f"p{i}", huge),
                     reason=huge)
        for i in range(3000)
    )  # fmt: skip
    for category, operation, _, _, _ in CASES:
        event = _big_event(
            category=category, operation=operation + huge, action=huge, actor=actor,
            outcome=Outcome.DENIED, error_code=huge, error_message=huge, session_id=huge,
            pc_id=huge, pool=huge, target=huge, via=huge, decisions=notes,
            trace=TraceIds(trace_id=huge, span_id=huge, parent_id=huge),
            result={huge: [huge] * 100},
        )  # fmt: skip
        record = to_ocsf(event, record_id=huge, product_version=huge)
        corral = record["unmapped"]["corral"]
        assert corral["decisions_total"] == 3000 and len(corral["decisions"]) == 100
        assert corral["decisions"][-1]["policies"][0] == "p2999"
        data = encode(record)
        assert len(data) <= MAX_ENTRY_BYTES
        decoded = json.loads(data)
        assert_valid(decoded)
        assert decoded["unmapped"]["corral"]["truncated"] is True
        assert "*" not in decoded["unmapped"]["corral"]["truncated_fields"]
        assert "\u202e" not in data.decode() and "\x07" not in data.decode()


def test_encode_never_raises_for_size_even_on_records_to_ocsf_did_not_make() -> None:
    record = {"class_uid": 6003, "metadata": {"version": "1.8.0"}, "x": "y" * 200_000,
              "unmapped": {"blob": "z" * 200_000}}  # fmt: skip
    data = encode(record)
    assert len(data) <= MAX_ENTRY_BYTES
    decoded = json.loads(data)
    assert decoded["class_uid"] == 6003 and "x" not in decoded
    assert decoded["unmapped"]["corral"]["truncated"] is True


def test_encode_is_canonical_and_refuses_what_is_not_json() -> None:
    assert (
        encode({"b": 1, "a": ["é", 2.5, None, True]}) == '{"a":["é",2.5,null,true],"b":1}'.encode()
    )
    for bad in ({"x": math.nan}, {"x": math.inf}, {"x": object()}, {"x": "\ud800"}, {"x": b"1"}):
        with pytest.raises(ValueError, match="plain JSON"):
            encode(bad)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(ValueError):
        encode(looped)


def test_same_event_same_bytes() -> None:
    event = make_event(Category.TOOL, "click", "click", AGENT, Outcome.DENIED)
    first = encode(to_ocsf(event, record_id="r-1", product_version="0.1.0"))
    again = encode(to_ocsf(event, record_id="r-1", product_version="0.1.0"))
    assert first == again
    assert first != encode(to_ocsf(event, record_id="r-2", product_version="0.1.0"))


def test_summaries_are_plain_json_whatever_they_hold() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100):
        node["d"] = {}
        node = node["d"]
    args: dict[Any, Any] = {
        1: b"\x00\xff",
        "big": 10**500,
        "set": {1, 2},
        "deep": deep,
        "t": (1.5, -math.inf),
    }
    event = make_event(Category.TOOL, "click", "click", AGENT, Outcome.SUCCESS, args=args)
    record = to_ocsf(event, record_id="r", product_version="v")
    got = json.loads(encode(record))["unmapped"]["corral"]["args"]
    assert got["1"] == {"sha256": hashlib.sha256(b"\x00\xff").hexdigest(), "size": 2}
    assert got["big"] == "<int of 1661 bits>" and got["set"] == "<set>"
    assert got["t"] == [1.5, "-inf"]
    assert "<nested too deep>" in json.dumps(got["deep"])


# reduce_content


def test_reduce_content_hashes_with_the_key_and_counts_bytes() -> None:
    data = "pässwörd=hunter2 and more"
    out = reduce_content(data, KEY)
    raw = data.encode()
    assert out["hmac_sha256"] == hmac.new(KEY, raw, hashlib.sha256).hexdigest()
    assert out["size"] == len(raw) == 27
    assert out["preview"] == data[:16]
    assert reduce_content(raw, KEY) == out  # bytes and str agree
    other = reduce_content(data, b"another key")
    assert other["hmac_sha256"] != out["hmac_sha256"] and other["size"] == out["size"]
    assert reduce_content(data + "!", KEY)["hmac_sha256"] != out["hmac_sha256"]
    with pytest.raises(ValueError):
        reduce_content(data, b"")


@pytest.mark.parametrize(
    ("data", "preview"),
    [
        ("\x1b[2J\x1b[31msecret-token-value", "\\x1b[2J\\x1b[31msecret-"),
        ("\u202egnp.exe\u200b\u00a0tail of the secret", "\\u202egnp.exe\\u200b\\xa0tail o"),
        ("a\ud800b\udfffc" + "s" * 40, "a\\ud800b\\udfffcsssssssssss"),
        (
            b"\xff\xfe\x00ok\xc3\xa9\xe2\x82" + b"x" * 40,
            "\\xff\\xfe\\x00ok\u00e9\\xe2\\x82xxxxxxxx",
        ),
        ("back\\x1bslash then secret", "back\\\\x1bslash th"),
        ("\U0001f600" * 40, "\U0001f600" * 16),
        ("short", "short"),
        (b"", ""),
    ],
)
def test_reduce_content_preview_is_escaped_and_bounded(data: bytes | str, preview: str) -> None:
    out = reduce_content(data, KEY)
    assert out["preview"] == preview
    assert out["preview"].isprintable()


def test_reduce_content_never_leaks_more_than_the_preview() -> None:
    # no 8-character window repeats in this secret (checked), so a leak cannot hide
    secret = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(32))
    windows = [secret[i : i + 8] for i in range(len(secret) - 8)]
    assert len(set(windows)) == len(windows)
    for n in (0, 1, 8, 16, 50):
        out = reduce_content(secret, KEY, preview=n)
        assert out["preview"] == secret[:n]
        dumped = json.dumps(out)
        assert not [w for w in windows[n:] if w in dumped]
    hostile = "\x00" * 100
    out = reduce_content(hostile, KEY, preview=4)
    assert out["preview"] == "\\x00" * 4
    assert reduce_content("abc", KEY, preview=-3)["preview"] == ""


# speed


def test_to_ocsf_and_encode_are_fast() -> None:
    event = make_event(Category.TOOL, "click", "click", AGENT, Outcome.SUCCESS, hostile=False)
    n = 2000
    per_call = (
        min(
            timeit.repeat(
                lambda: encode(to_ocsf(event, record_id="r-000042", product_version="0.1.0")),
                number=n,
                repeat=3,
            )
        )
        / n
    )
    print(f"to_ocsf+encode: {per_call * 1e6:.1f} us per typical event")
    assert per_call < 500e-6  # a generous bound for slow CI; the target is well under 50 us
