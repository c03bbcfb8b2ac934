"""`corral audit ...`: the audit log, checked on this host (the server may be stopped), and its
proofs, checked anywhere with only the log's public key."""

from __future__ import annotations

import base64
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli._common import (
    OutputFormat,
    OutputOption,
    err_console,
    handle_errors,
    local_store,
    out_console,
    print_json,
    safe,
)

if TYPE_CHECKING:
    from corral.audit.tlog.cosignature import CosignatureVerifier
    from corral.audit.tlog.note import NoteVerifier

__all__ = ["app"]

# The summary must equal the lazy entry's in corral.cli.main (tests/unit/test_cli_startup.py).
app = typer.Typer(help="The audit log: verify, prove, trace, export.", no_args_is_help=True)

KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="VKEY",
        help="the log's verifier key (<name>+<id>+<key>), or a file holding it",
    ),
]
WitnessOption = Annotated[
    list[str] | None,
    typer.Option(
        "--witness",
        metavar="VKEY",
        help="a witness's cosignature verifier key (or its file) whose cosignature is "
        "required; repeat for several",
    ),
]


@app.callback()
def _group() -> None:
    """The audit log: verify, prove, trace, export."""  # a group: each command a subcommand


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _log_verifier(text: str) -> NoteVerifier:
    from corral.audit.checkpoints import read_key_text
    from corral.audit.tlog.note import NoteError, NoteVerifier
    from corral.errors import InvalidInputError

    try:
        return NoteVerifier.from_vkey(read_key_text(text))
    except NoteError as exc:
        raise InvalidInputError(f"bad log key: {exc}") from None


def _witness_verifiers(values: list[str] | None) -> list[CosignatureVerifier]:
    from corral.audit.checkpoints import read_key_text
    from corral.audit.tlog.cosignature import CosignatureVerifier
    from corral.audit.tlog.note import NoteError
    from corral.errors import InvalidInputError

    out = []
    for value in values or []:
        try:
            out.append(CosignatureVerifier.from_vkey(read_key_text(value)))
        except NoteError as exc:
            raise InvalidInputError(f"bad witness key {value[:60]!r}: {exc}") from None
    return out


@app.command("key")
@handle_errors
def key(output: OutputOption = OutputFormat.table) -> None:
    """Print the log's verifier key (<name>+<id>+<key>), what an auditor verifies with.

    The key is created in the data folder (audit/log.skey, audit/log.vkey) on first use; its
    name is the checkpoint origin (CORRAL_AUDIT_ORIGIN)."""
    from corral.audit.checkpoints import LogKeys
    from corral.cli._common import check_data_folder

    check_data_folder()
    keys = LogKeys.load()
    if output is OutputFormat.json:
        print_json(
            {
                "vkey": keys.vkey,
                "origin": keys.origin,
                "key_id": f"{keys.signer.id:08x}",
                "witnesses": [w.verifier.vkey for w in keys.witnesses],
            }
        )
    else:
        out_console.print(keys.vkey, highlight=False, soft_wrap=True)


@app.command("checkpoint")
@handle_errors
def checkpoint(output: OutputOption = OutputFormat.table) -> None:
    """Sign the log's current head now (log key and witness keys) and print the checkpoint.

    Prints the latest one again when the log has not grown since."""
    from corral.audit.checkpoints import LogKeys, sign_checkpoint
    from corral.audit.tlog.checkpoint import Checkpoint
    from corral.audit.tlog.note import split_note

    with local_store() as store:
        keys = LogKeys.load()
        with store.transaction() as uow:
            note = sign_checkpoint(uow, keys)
    if output is OutputFormat.json:
        cp = Checkpoint.parse(split_note(note)[0])
        print_json({"origin": cp.origin, "size": cp.size, "root": _b64(cp.root), "note": note})
    else:
        sys.stdout.write(note)


@app.command("prove")
@handle_errors
def prove(
    target: Annotated[str, typer.Argument(metavar="INDEX|RECORD_ID")],
    record: Annotated[
        bool, typer.Option("--record", help="TARGET is a record id even if it is all digits")
    ] = False,
    no_entry: Annotated[
        bool, typer.Option("--no-entry", help="leave the entry out of the proof's extra line")
    ] = False,
) -> None:
    """Print the C2SP tlog-proof of one entry against the latest signed checkpoint.

    INDEX is 0-based; anything else (or with --record) is a record id (its metadata.uid). The
    entry itself goes in the proof's `extra` line (base64) unless --no-entry. Save it as
    NAME.tlog-proof and check it with `corral audit verify --proof`."""
    from corral.audit.checkpoints import prove as make_proof
    from corral.errors import NotFoundError

    with local_store() as store, store.transaction(write=False) as uow:
        if target.isdigit() and target.isascii() and not record:
            index = int(target)
        else:
            found = uow.audit.index_of_record(target)
            if found is None:
                raise NotFoundError(f"no audit entry with record id {target!r}")
            index = found
        text = make_proof(uow, index, with_entry=not no_entry)
    sys.stdout.write(text)


@app.command("verify")
@handle_errors
def verify(
    output: OutputOption = OutputFormat.table,
    key: KeyOption = None,
    witness: WitnessOption = None,
    proof: Annotated[
        Path | None,
        typer.Option(
            "--proof",
            help="check this tlog-proof file offline instead (needs --key, no data folder)",
        ),
    ] = None,
    entry: Annotated[
        Path | None,
        typer.Option("--entry", help="with --proof: the entry's file (else the proof's own)"),
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            metavar="FILE",
            help="a signed checkpoint kept elsewhere (an auditor's or a witness's copy) that "
            "the log must still agree with; repeat for several",
        ),
    ] = None,
) -> None:
    """Check the audit log on this host, or (--proof) one entry's proof anywhere.

    On this host: recompute the log from its records and check every stored hash, the head,
    and every signed checkpoint (its signature by the log key, given with --key or read from
    the data folder, each --witness's cosignature, and its root against the records): those
    stored, the latest one kept outside the database (`audit/latest.checkpoint`) and each
    --checkpoint FILE, so deleting checkpoint rows along with a rewrite hides nothing. Exits
    0 if all hold; else 1, naming the first bad index (0-based): the lowest record whose
    proof no longer holds.

    With --proof FILE --key VKEY: check the checkpoint's signature (and each --witness's
    cosignature) and the inclusion proof of the entry (--entry FILE, else the one in the
    proof). Exits 0 if valid, else 1 with a line saying why."""
    if proof is not None:
        _verify_proof(output, key, witness, proof, entry)
        return
    if entry is not None:
        from corral.errors import InvalidInputError

        raise InvalidInputError("--entry goes with --proof")
    _verify_log(output, key, witness, checkpoint or [])


def _verify_proof(
    output: OutputFormat,
    key: str | None,
    witness: list[str] | None,
    proof: Path,
    entry: Path | None,
) -> None:
    from corral.audit.checkpoints import MAX_PROOF_BYTES, ProofInvalid, verify_proof
    from corral.errors import InvalidInputError

    if key is None:
        raise InvalidInputError("--proof needs the log's verifier key: --key VKEY")
    log_key = _log_verifier(key)
    witnesses = _witness_verifiers(witness)
    try:
        with proof.open("rb") as f:
            data = f.read(MAX_PROOF_BYTES + 1)
        entry_data = entry.read_bytes() if entry is not None else None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        verdict = verify_proof(data, log_key, witnesses, entry_data)
    except ProofInvalid as exc:
        if output is OutputFormat.json:
            print_json({"ok": False, "error": str(exc)})
        else:
            out_console.print(f"invalid: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if output is OutputFormat.json:
        print_json(
            {
                "ok": True,
                "index": verdict.index,
                "origin": verdict.origin,
                "size": verdict.size,
                "root": _b64(verdict.root),
                "leaf_hash": _b64(verdict.leaf),
                "entry": verdict.entry_from,
                "witnesses": [{"name": n, "timestamp": t} for n, t in verdict.witnesses],
            }
        )
        return
    cosigned = "".join(f", cosigned by {n} at {t}" for n, t in verdict.witnesses)
    out_console.print(
        f"valid: entry {verdict.index} ({verdict.entry_from}) is in {verdict.origin} "
        f"at size {verdict.size}, root {_b64(verdict.root)}, signed by the log key{cosigned}",
        highlight=False,
        soft_wrap=True,
    )


def _verify_log(
    output: OutputFormat, key: str | None, witness: list[str] | None, checkpoints: list[Path]
) -> None:
    from corral.audit.checkpoints import LATEST_FILE, LogKeys
    from corral.audit.verify import checkpoints_from_files, verify_log
    from corral.config import paths

    witnesses = _witness_verifiers(witness)
    latest = LogKeys.folder(paths().data) / LATEST_FILE
    outside = checkpoints_from_files([*checkpoints, *([latest] if latest.is_file() else [])])
    with local_store() as store:
        log_key = _log_verifier(key) if key is not None else None
        vkey_file = LogKeys.folder(paths().data) / "log.vkey"
        if log_key is None and vkey_file.is_file():
            log_key = _log_verifier(str(vkey_file))
        with store.transaction(write=False) as uow:
            verdict = verify_log(uow, log_key=log_key, witnesses=witnesses, outside=outside)
    root = _b64(verdict.root)
    if output is OutputFormat.json:
        print_json(
            {
                "ok": verdict.ok,
                "size": verdict.size,
                "root": root,
                "first_bad_index": verdict.first_bad,
                "checkpoints": verdict.checkpoints,
                "bad_checkpoints": verdict.bad_checkpoints,
                "problems": verdict.problems,
            }
        )
    elif verdict.ok:
        line = f"audit log intact: {verdict.size} records, root {root}"
        if verdict.checkpoints:
            line += f"; {verdict.checkpoints} signed checkpoints hold"
        out_console.print(line, highlight=False)
    else:
        for problem in verdict.problems:
            err_console.print(f"[red]bad:[/] {problem}", highlight=False)
        if verdict.first_bad is not None:
            out_console.print(f"first bad index: {verdict.first_bad}", highlight=False)
        if verdict.bad_checkpoints:
            sizes = ", ".join(str(s) for s in verdict.bad_checkpoints[:20])
            out_console.print(f"bad checkpoints (sizes): {sizes}", highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)


TraceId = Annotated[str, typer.Argument(metavar="TRACE_ID", help="a W3C trace id (32 hex)")]
_MAX_TRACE = 2000  # as the server's trace view (corral.audit.service.MAX_TRACE_RECORDS)


@app.command("trace")
@handle_errors
def trace(trace_id: TraceId, output: OutputOption = OutputFormat.table) -> None:
    """Print one trace's records as a tree: the request, the agent, its sessions, each action
    and the policy decisions taken for it (REST: GET /v1/audit/traces/TRACE_ID)."""
    import re

    from corral.audit.trace_tree import entry_record, trace_tree
    from corral.errors import InvalidInputError, NotFoundError

    if not re.fullmatch(r"[0-9a-f]{32}", trace_id):
        raise InvalidInputError(
            f"{trace_id[:40]!r} is not a trace id", hint="32 lowercase hex digits"
        )
    with local_store() as store, store.transaction(write=False) as uow:
        rows = uow.audit.trace_entries(trace_id, limit=_MAX_TRACE + 1)
    truncated, rows = len(rows) > _MAX_TRACE, rows[:_MAX_TRACE]
    if not rows:
        raise NotFoundError(f"no audit record in trace {trace_id}")
    tree = trace_tree(trace_id, [entry_record(i, e) for i, e in rows])
    tree["truncated"] = truncated
    if truncated:
        err_console.print(f"the trace has more than {_MAX_TRACE} records: the first are shown")
    if output is OutputFormat.json:
        print_json(tree)
        return
    started = "started by Corral" if tree["started_by_corral"] else "from request span"
    spans = ", ".join(safe(s) for s in tree["request_spans"])
    out_console.print(f"trace {trace_id}: {tree['records']} records, {started} {spans}".rstrip())
    for node in tree["children"]:
        _print_node(node, 1)


def _print_node(node: dict[str, object], depth: int) -> None:
    from datetime import UTC, datetime

    when = node.get("time")
    stamp = (
        datetime.fromtimestamp(when / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
        if isinstance(when, int)
        else "?"
    )
    actor = node.get("actor") if isinstance(node.get("actor"), dict) else {}
    assert isinstance(actor, dict)
    who = f"{actor.get('kind') or '?'} {actor.get('id') or ''}".strip()
    where = " ".join(f"{k}={safe(node[k])}" for k in ("session", "pc") if node.get(k) is not None)
    error = f" ({safe(node['error'])})" if node.get("error") else ""
    out_console.print(
        f"{'  ' * depth}#{node.get('index')} {stamp} {safe(node.get('operation'))} "
        f"{safe(node.get('outcome'))}{error} by {safe(who)} {where}".rstrip()
    )
    decisions = node.get("decisions")
    for decision in decisions if isinstance(decisions, list) else []:
        if isinstance(decision, dict):
            verdict = "allow" if decision.get("allowed") else "deny"
            policies = ", ".join(safe(p) for p in decision.get("policies") or []) or "-"
            out_console.print(
                f"{'  ' * (depth + 1)}{verdict} {safe(decision.get('action'))} by {policies}"
            )
    children = node.get("children")
    for child in children if isinstance(children, list) else []:
        if isinstance(child, dict):
            _print_node(child, depth + 1)


class ExportFormat(StrEnum):
    ocsf = "ocsf"
    jsonl = "jsonl"


@app.command("export")
@handle_errors
def export(
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="ocsf: each OCSF record as stored, one per line (its bytes are the log's "
            "entry); jsonl: {index, leaf_hash, record} per line",
        ),
    ] = ExportFormat.ocsf,
    since: Annotated[
        str | None,
        typer.Option(help="only records at or after this time (ISO 8601, or epoch ms)"),
    ] = None,
    session: Annotated[str | None, typer.Option(help="only this session's records")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write to this file (default: stdout)")
    ] = None,
) -> None:
    """Stream the audit log's records, oldest first, in pages (the server may be running)."""
    import hashlib
    import json

    cutoff = _since_ms(since)
    sink = out.open("w", encoding="utf-8") if out is not None else sys.stdout
    written = 0
    try:
        with local_store() as store:
            start = 0
            while True:
                with store.transaction(write=False) as uow:
                    if session is not None:
                        rows = uow.audit.session_entries(session, start, 1000)
                    else:
                        rows = uow.audit.entry_rows(start, 1000)
                for index, entry in rows:
                    try:
                        record = json.loads(entry)
                    except ValueError:
                        record = None
                    when = record.get("time") if isinstance(record, dict) else None
                    if cutoff is not None and not (isinstance(when, int) and when >= cutoff):
                        continue
                    if format_ is ExportFormat.ocsf:
                        sink.write(entry.decode("utf-8", "replace") + "\n")
                    else:
                        leaf = hashlib.sha256(b"\x00" + entry).hexdigest()
                        line = {"index": index, "leaf_hash": leaf, "record": record}
                        sink.write(json.dumps(line, sort_keys=True) + "\n")
                    written += 1
                if len(rows) < 1000:
                    break
                start = rows[-1][0] + 1
    finally:
        if out is not None:
            sink.close()
    if out is not None:
        err_console.print(f"{written} records written to {safe(out)}")


def _since_ms(value: str | None) -> int | None:
    from datetime import UTC, datetime

    from corral.errors import InvalidInputError

    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"--since {value[:40]!r} is not a time",
            hint="ISO 8601 (2026-12-03T10:00:00Z) or epoch milliseconds",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
