"""Benchmark the audit log: sustained appends with checkpoints (SQLite, PostgreSQL), append to
signed checkpoint, a full verify, and the record stage's cost on the tool-call path.

Rows, each beside its floor measured in the same run:
- appends/s through the writer (200 concurrent callers on one event loop, each waiting for its
  record's commit like a Gate call; group commit; a checkpoint signed at most 0.5 s after an
  append), floor: the same records appended by one thread straight into the log in batches of
  4,096 (the store and Merkle work alone);
- acknowledged append -> signed checkpoint covering it, p50 and p99 over every record of that
  run, target <= 1 s;
- a full `verify_log` of CORRAL_BENCH_AUDIT_VERIFY records (default 1,000,000), floor: hashing
  the same entries' leaves with hashlib alone, target <= 20 s;
- the record stage's own work per call (event, OCSF record, canonical bytes, queueing; the
  commit is shared and waited for, not worked), floor: `json.dumps` of the same record.

`CORRAL_BENCH_PG_URL` (or CORRAL_TEST_PG_URL) adds the PostgreSQL rows; without either, the
script `scripts/postgres-test.sh` starts the private test server (root).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._stats import Row, percentile, render, summarize
from corral.audit import log as audit_log
from corral.audit.checkpoints import LogKeys, sign_checkpoint
from corral.audit.recorder import AuditRecorder
from corral.audit.verify import verify_log
from corral.audit.writer import AuditWriter
from corral.config import AuditSettings
from corral.domain.access import Caller, CallerKind
from corral.gate import GateCall, Route, tool_operation
from corral.store import EntryKeys, Store

APPENDS = int(os.environ.get("CORRAL_BENCH_AUDIT_APPENDS", "50000"))
VERIFY = int(os.environ.get("CORRAL_BENCH_AUDIT_VERIFY", "1000000"))
CALLERS = 200
_SETTINGS = AuditSettings(origin="bench.local/audit", witness_keys=None)


def _entry(i: int) -> bytes:
    """A record about the size of a tool call's (about 1 KB)."""
    body = {"i": i, "class_uid": 6003, "pad": "x" * 900, "metadata": {"uid": uuid.uuid4().hex}}
    return json.dumps(body, separators=(",", ":")).encode()


def _pg_url() -> str | None:
    url = os.environ.get("CORRAL_BENCH_PG_URL") or os.environ.get("CORRAL_TEST_PG_URL")
    if url:
        return url
    if os.geteuid() != 0:
        return None
    script = Path(__file__).resolve().parents[1] / "scripts" / "postgres-test.sh"
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, check=False, timeout=900
    )
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout else None


def _fresh_pg(base: str) -> tuple[str, Any]:
    from sqlalchemy import NullPool, create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), drop


def _appends(floor_url: str, url: str, keys: LogKeys, label: str) -> list[Row]:
    entries = [_entry(i) for i in range(APPENDS)]
    keyed = [EntryKeys(record_id=f"r{i}") for i in range(APPENDS)]
    # floor: one thread, batches of 4,096, straight into the log (its own database)
    floor_store = Store(floor_url)
    floor_store.migrate()
    start = time.perf_counter()
    for at in range(0, APPENDS, 4096):
        with floor_store.transaction() as uow:
            audit_log.append(uow, entries[at : at + 4096], keyed[at : at + 4096])
    floor_rate = APPENDS / (time.perf_counter() - start)
    floor_store.close()

    store = Store(url)
    store.migrate()
    signed: list[tuple[float, int]] = []

    def signer(uow: Any) -> str:
        note = sign_checkpoint(uow, keys)
        size, _ = audit_log.head(uow)
        signed.append((time.monotonic(), size))
        return note

    writer = AuditWriter(store, signer=signer, checkpoint_interval_s=0.5).start()
    acked: dict[int, float] = {}  # index -> when its append was acknowledged (committed)

    async def callers() -> None:
        """CALLERS concurrent callers on one event loop, as the server's Gate calls are: each
        waits for its record's commit before its next call."""

        async def caller(k: int) -> None:
            for i in range(k, APPENDS, CALLERS):
                index = await writer.append(entries[i], keyed[i])
                acked[index] = time.monotonic()

        await asyncio.gather(*(caller(k) for k in range(CALLERS)))

    start = time.perf_counter()
    asyncio.run(callers())
    elapsed = time.perf_counter() - start
    writer.stop()
    store.close()
    rate = APPENDS / elapsed
    # acknowledged append -> the first signed checkpoint that covers it
    lags: list[float] = []
    for index, acked_at in acked.items():
        covering = next((when for when, size in signed if size > index), None)
        if covering is not None:
            lags.append((covering - acked_at) * 1000)
    assert sorted(acked) == list(range(APPENDS))
    return [
        Row(
            f"{label}: appends/s, writer, {CALLERS} callers",
            "/s",
            rate,
            rate,
            APPENDS,
            floor_rate,
            ">= 20,000/s",
            "PASS" if rate >= 20_000 else "MISS",
        ),
        Row(
            f"{label}: append -> signed checkpoint",
            "ms",
            statistics.median(lags),
            percentile(lags, 0.99),
            len(lags),
            None,
            "p50 and p99 <= 1000 ms (p95 column: p99)",
            "PASS" if percentile(lags, 0.99) <= 1000 else "MISS",
        ),
    ]


def _verify(url: str, keys: LogKeys) -> Row:
    store = Store(url)
    store.migrate()
    batch = [_entry(i)[:200] for i in range(10_000)]
    for _ in range(VERIFY // len(batch)):
        with store.transaction() as uow:
            audit_log.append(uow, batch)
    with store.transaction() as uow:
        sign_checkpoint(uow, keys)
        size, _ = uow.audit.state()
    start = time.perf_counter()
    for entry in batch * (size // len(batch)):
        hashlib.sha256(b"\x00" + entry).digest()
    floor = time.perf_counter() - start
    start = time.perf_counter()
    with store.transaction(write=False) as uow:
        verdict = verify_log(uow, log_key=keys.verifier)
    took = time.perf_counter() - start
    store.close()
    assert verdict.ok, verdict
    return Row(
        f"verify_log, {size:,} records (SQLite)",
        "s",
        took,
        took,
        1,
        floor,
        "<= 20 s",
        "PASS" if took <= 20 else "MISS",
    )


def _record_stage(url: str, keys: LogKeys) -> Row:
    """CPU of the record stage for a click (building, encoding, queueing), not the commit it
    shares: the writer runs, but the timing ends when the entry is queued."""
    store = Store(url)
    store.migrate()
    writer = AuditWriter(store).start()
    recorder = AuditRecorder(writer, content_key=keys.content_key, via="bench")
    caller = Caller(CallerKind.AGENT, "a-bench", address="127.0.0.1", jkt="j" * 43)

    async def nothing(call: GateCall) -> Any:
        return None

    route = Route(nothing)
    op = tool_operation("click")
    from corral.audit.ocsf import encode, to_ocsf

    samples, floor = [], []
    for i in range(2000):
        call = GateCall(caller, op, "s-bench", {"x": i % 100, "y": 5}, route)
        start = time.perf_counter()
        event = recorder.event(call)
        record = to_ocsf(event, record_id=uuid.uuid4().hex, product_version="bench")
        writer.submit(encode(record), EntryKeys(record_id=f"r{i}"))
        samples.append((time.perf_counter() - start) * 1e6)
        start = time.perf_counter()
        json.dumps(record)
        floor.append((time.perf_counter() - start) * 1e6)
    writer.stop()
    store.close()
    return summarize(
        "record stage per tool call (build, encode, queue)",
        samples[200:],
        unit="µs",
        floor=floor[200:],
        target="p50 <= 100 µs",
        ok=lambda med, p95, fl: med <= 100,
    )


def _keys(tmp: Path, name: str) -> LogKeys:
    """A log's own keys (each log keeps its latest checkpoint in its own data folder)."""
    return LogKeys.load(tmp / name, _SETTINGS)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-audit-"))
    rows: list[Row] = []
    sqlite = (f"sqlite:///{tmp}/floor.db", f"sqlite:///{tmp}/appends.db")
    rows += _appends(*sqlite, _keys(tmp, "sqlite"), "SQLite")
    pg = _pg_url()
    if pg is not None:
        (floor, drop_floor), (url, drop) = _fresh_pg(pg), _fresh_pg(pg)
        try:
            rows += _appends(floor, url, _keys(tmp, "pg"), "PostgreSQL")
        finally:
            drop_floor()
            drop()
    else:
        print("PostgreSQL rows left out: no CORRAL_BENCH_PG_URL and not root")
    rows.append(_record_stage(f"sqlite:///{tmp}/stage.db", _keys(tmp, "stage")))
    if VERIFY:
        rows.append(_verify(f"sqlite:///{tmp}/verify.db", _keys(tmp, "verify")))
    print(render(rows))
    print("storage per minute of an active session: not measured (session recording is not built)")
    return 0
