"""Signed checkpoints of the audit log, the keys that sign them, and the proofs that lead to them.

The log key is an Ed25519 signed-note key kept in the data folder: `audit/log.skey` (0600, Go
`sumdb/note` form `PRIVATE+KEY+<name>+<id>+<key>`) and `audit/log.vkey` (`<name>+<id>+<key>`,
what an auditor is given). Its name is the checkpoint origin (setting CORRAL_AUDIT_ORIGIN).
Witness keys (CORRAL_AUDIT_WITNESS_KEYS: a 0600 file of signer keys, one a line) cosign every
checkpoint with C2SP tlog-cosignature v1.

`sign_checkpoint` signs the log's head in the caller's unit of work and keeps the note; `prove`
writes an entry's C2SP tlog-proof against the latest kept checkpoint; `verify_proof` checks such
a proof offline with nothing but the log's (and the witnesses') verifier keys.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from corral.audit import log
from corral.audit.tlog.checkpoint import Checkpoint
from corral.audit.tlog.cosignature import CosignatureSigner, CosignatureVerifier
from corral.audit.tlog.merkle import ProofError, leaf_hash, root_from_inclusion
from corral.audit.tlog.note import NoteError, NoteSigner, NoteVerifier, open_note, sign_note
from corral.audit.tlog.proof import InclusionProofText
from corral.config import AuditSettings, audit_settings, paths
from corral.errors import AuditIntegrityError, InvalidInputError, NotFoundError, StoreSecurityError
from corral.store import CheckpointRow

if TYPE_CHECKING:
    from corral.store import UnitOfWork

__all__ = [
    "MAX_PROOF_BYTES",
    "LogKeys",
    "ProofInvalid",
    "ProofVerdict",
    "prove",
    "read_key_text",
    "sign_checkpoint",
    "verify_proof",
]

KEY_DIR = "audit"
SKEY_FILE = "log.skey"
VKEY_FILE = "log.vkey"
#: the key of the hashes records keep of content (typed text, file content): secret, so a
#: reader of the log cannot confirm a guess of a short secret by hashing it
CONTENT_KEY_FILE = "content.key"
#: the latest signed checkpoint, kept outside the database: a history rewritten in the
#: database (its checkpoint rows deleted with it) still contradicts this copy
LATEST_FILE = "latest.checkpoint"
#: a proof file at most this long: 63 hashes, an entry of 65,535 bytes in base64 in its
#: `extra` line, and a checkpoint with 100 signatures fit well within it
MAX_PROOF_BYTES = 256 * 1024


def _private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreSecurityError(f"{path} is readable by others", hint=f"chmod 600 {path}")


def _write_new(path: Path, text: str, mode: int) -> bool:
    """Write `text` to `path` unless it exists (False then); atomic: a reader sees all or
    nothing, and of two processes creating it at once one wins and the other reads it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader sees the old or the new, never half)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_line(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    if not text or "\n" in text:
        raise AuditIntegrityError(f"{path} must hold one key on one line")
    return text


@dataclass(frozen=True)
class LogKeys:
    """The log's signer key and the witness keys that cosign each of its checkpoints."""

    signer: NoteSigner
    witnesses: tuple[CosignatureSigner, ...] = field(default=())
    #: the HMAC key of content hashes in records (`content.key`, 32 random bytes)
    content_key: bytes = field(default=b"", repr=False)
    #: where the latest signed checkpoint is kept outside the database (None: nowhere)
    latest_file: Path | None = None

    def latest_outside(self) -> CheckpointRow | None:
        """The checkpoint kept outside the database, checked against the log key (None if
        there is none yet); AuditIntegrityError if it is there but not a valid checkpoint."""
        if self.latest_file is None or not self.latest_file.exists():
            return None
        note = self.latest_file.read_text(encoding="utf-8")
        try:
            text, _ = open_note(note, [self.verifier])
            checkpoint = Checkpoint.parse(text)
        except (NoteError, ValueError) as exc:
            raise AuditIntegrityError(f"{self.latest_file}: {exc}") from None
        return CheckpointRow(checkpoint.size, checkpoint.root, note, datetime.now(UTC))

    def keep_outside(self, note: str) -> None:
        if self.latest_file is not None:
            _replace(self.latest_file, note)

    @property
    def origin(self) -> str:
        return self.signer.name

    @property
    def verifier(self) -> NoteVerifier:
        return self.signer.verifier

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey

    @staticmethod
    def folder(data_dir: Path | None = None) -> Path:
        return (data_dir or paths().data) / KEY_DIR

    @classmethod
    def load(
        cls,
        data_dir: Path | None = None,
        settings: AuditSettings | None = None,
        *,
        create: bool = True,
    ) -> LogKeys:
        """The keys in the data folder, the log key created on first use (`create`). The
        key's name must be the configured origin: a new origin is a new log."""
        settings = settings or audit_settings()
        try:
            probe = NoteSigner.generate(settings.origin)
        except NoteError as exc:
            raise InvalidInputError(
                f"bad audit log origin {settings.origin!r}: {exc}",
                hint="set CORRAL_AUDIT_ORIGIN to a name without spaces or '+'",
            ) from None
        folder = cls.folder(data_dir)
        skey_path, vkey_path = folder / SKEY_FILE, folder / VKEY_FILE
        if not skey_path.exists():
            if not create:
                raise NotFoundError(f"no audit log key in {folder}")
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_new(skey_path, probe.skey + "\n", 0o600)
        _private(skey_path)
        try:
            signer = NoteSigner.from_skey(_read_line(skey_path))
        except NoteError as exc:
            raise AuditIntegrityError(f"{skey_path}: {exc}") from None
        if signer.name != settings.origin:
            raise AuditIntegrityError(
                f"the audit log key in {skey_path} is for origin {signer.name!r}, "
                f"the setting says {settings.origin!r}",
                hint="a new origin is a new log: set CORRAL_AUDIT_ORIGIN back, or move the "
                "key folder away to start a log under the new origin (docs/audit.md)",
            )
        vkey = signer.verifier.vkey
        if not _write_new(vkey_path, vkey + "\n", 0o644) and _read_line(vkey_path) != vkey:
            raise AuditIntegrityError(f"{vkey_path} is not the verifier key of {skey_path}")
        content_path = folder / CONTENT_KEY_FILE
        if not content_path.exists() and create:
            _write_new(content_path, secrets.token_hex(32) + "\n", 0o600)
        content_key = b""
        if content_path.exists():
            _private(content_path)
            try:
                content_key = bytes.fromhex(_read_line(content_path))
            except ValueError:
                raise AuditIntegrityError(f"{content_path} must hold 64 hex digits") from None
            if len(content_key) != 32:
                raise AuditIntegrityError(f"{content_path} must hold 64 hex digits")
        return cls(
            signer,
            tuple(_witness_signers(settings.witness_keys)),
            content_key,
            folder / LATEST_FILE,
        )


def _witness_signers(path: Path | None) -> list[CosignatureSigner]:
    if path is None:
        return []
    try:
        _private(path)
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the witness keys file {path}: {exc}") from None
    signers = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(CosignatureSigner.from_skey(line))
        except NoteError as exc:
            raise InvalidInputError(f"{path}, line {number}: {exc}") from None
    return signers


def sign_checkpoint(
    uow: UnitOfWork, keys: LogKeys, *, clock: Callable[[], float] = time.time
) -> str:
    """Sign the log's head as of `uow` (log key, then every witness key with the time), keep
    it and return the signed note; when the log has not grown since the latest checkpoint,
    that one. Refuses (AuditIntegrityError) to sign a head inconsistent with the latest."""
    size, edge = uow.audit.state(lock=True)  # signers and appenders take turns
    _, root = log.head(uow)
    latest = uow.audit.latest_checkpoint()
    from corral.audit.tlog.tiled import TiledLog

    tree = TiledLog(uow.audit, size, edge)
    # The head must extend what was signed: the latest stored checkpoint, and the copy kept
    # outside the database (which deleting checkpoint rows does not remove).
    for signed in (latest, keys.latest_outside()):
        if signed is None:
            continue
        if signed.size > size:
            raise AuditIntegrityError(
                f"the log holds {size} entries but a checkpoint of {signed.size} was signed"
            )
        if tree.root_at(signed.size) != signed.root:
            raise AuditIntegrityError(
                f"the log's first {signed.size} entries no longer give the root signed then"
            )
    if latest is not None and latest.size == size:
        keys.keep_outside(latest.note)
        return latest.note
    text = Checkpoint(keys.origin, size, root).text()
    now = clock()
    note = sign_note(text, keys.signer)
    note += "".join(w.signature_line(text, int(now)) for w in keys.witnesses)
    uow.audit.add_checkpoint(CheckpointRow(size, root, note, datetime.fromtimestamp(now, UTC)))
    keys.keep_outside(note)
    return note


def prove(uow: UnitOfWork, index: int, *, with_entry: bool = True) -> str:
    """The C2SP tlog-proof of entry `index` against the latest signed checkpoint; the entry
    itself in the proof's `extra` line unless `with_entry` is False."""
    latest = uow.audit.latest_checkpoint()
    if latest is None:
        raise NotFoundError(
            "the audit log has no signed checkpoint yet", hint="corral audit checkpoint"
        )
    if not 0 <= index < latest.size:
        raise NotFoundError(
            f"entry {index} is not under the latest signed checkpoint ({latest.size} entries)",
            hint="corral audit checkpoint" if index >= latest.size else None,
        )
    path = log.inclusion(uow, index, latest.size)
    extra = None
    if with_entry:
        extra = uow.audit.entries(index, index + 1)[0]
    return InclusionProofText(index, tuple(path), latest.note, extra).text()


class ProofInvalid(ValueError):
    """A proof that is malformed or does not verify: the message says why."""


@dataclass(frozen=True)
class ProofVerdict:
    index: int
    origin: str
    size: int
    root: bytes
    leaf: bytes
    #: where the entry came from: the caller's file, or the proof's own `extra` line
    entry_from: str
    witnesses: tuple[tuple[str, int], ...]  # (name, cosignature timestamp)


def read_key_text(value: str) -> str:
    """A verifier key given as itself or as a file holding it."""
    path = Path(value).expanduser()
    if "+" in value and not path.exists():
        return value.strip()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the key file {value}: {exc.strerror}") from None


def verify_proof(
    proof: bytes,
    log_key: NoteVerifier,
    witnesses: Sequence[CosignatureVerifier] = (),
    entry: bytes | None = None,
) -> ProofVerdict:
    """Check a C2SP tlog-proof offline: the checkpoint is signed by `log_key` (its origin
    being the key's name) and cosigned by every one of `witnesses`, and the inclusion proof
    leads from the entry (`entry`, else the proof's `extra` line) to the checkpoint's root.
    Raises ProofInvalid saying why not."""
    if len(proof) > MAX_PROOF_BYTES:
        raise ProofInvalid(f"the proof is over {MAX_PROOF_BYTES} bytes")
    try:
        text = proof.decode("utf-8")
        parsed = InclusionProofText.parse(text)
    except UnicodeDecodeError:
        raise ProofInvalid("the proof is not UTF-8 text") from None
    except (ProofError, NoteError) as exc:
        raise ProofInvalid(f"malformed proof: {exc}") from None
    try:
        body, _ = open_note(parsed.checkpoint, [log_key])
        checkpoint = Checkpoint.parse(body)
    except NoteError as exc:
        raise ProofInvalid(f"the checkpoint: {exc}") from None
    if checkpoint.origin != log_key.name:
        raise ProofInvalid(
            f"the checkpoint's origin {checkpoint.origin!r} is not the key's {log_key.name!r}"
        )
    cosigned = []
    for witness in witnesses:
        try:
            c = witness.verify_note(parsed.checkpoint)
        except NoteError as exc:
            raise ProofInvalid(f"witness {witness.name}: {exc}") from None
        cosigned.append((c.name, c.timestamp))
    if parsed.index >= checkpoint.size:
        raise ProofInvalid(
            f"index {parsed.index} is not below the checkpoint's size {checkpoint.size}"
        )
    if entry is not None:
        data, entry_from = entry, "given"
    elif parsed.extra is not None:
        data, entry_from = parsed.extra, "the proof's extra line"
    else:
        raise ProofInvalid("the proof carries no entry: give the entry's file")
    leaf = leaf_hash(data)
    try:
        got = root_from_inclusion(leaf, parsed.index, checkpoint.size, parsed.path)
    except ProofError as exc:
        raise ProofInvalid(f"the inclusion proof: {exc}") from None
    if got != checkpoint.root:
        raise ProofInvalid(
            f"the inclusion proof of entry {parsed.index} does not lead to the checkpoint's "
            "root (the entry or a proof hash differs)"
        )
    return ProofVerdict(
        parsed.index,
        checkpoint.origin,
        checkpoint.size,
        checkpoint.root,
        leaf,
        entry_from,
        tuple(cosigned),
    )
