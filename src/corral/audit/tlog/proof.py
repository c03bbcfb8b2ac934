"""C2SP tlog-proof (https://c2sp.org/tlog-proof): an entry's inclusion proof with the signed
checkpoint it leads to, as one text file an auditor verifies offline; and the consistency
proof text of C2SP tlog-witness (`old <size>`, hash lines, blank line, checkpoint)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from corral.audit.tlog.merkle import HASH_SIZE, ProofError
from corral.audit.tlog.note import NoteError, b64decode_strict

__all__ = ["HEADER", "MAX_PROOF_HASHES", "InclusionProofText"]

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 63  # a tree of at most 2^63 leaves


def _decimal(text: str, what: str) -> int:
    if (
        len(text) > 19
        or not text.isdigit()
        or not text.isascii()
        or (text != "0" and text.startswith("0"))
    ):
        raise ProofError(f"bad {what} {text[:30]!r}: decimal, no leading zeros")
    return int(text)


def _hashes(lines: Sequence[str]) -> list[bytes]:
    if len(lines) > MAX_PROOF_HASHES:
        raise ProofError(f"a proof holds at most {MAX_PROOF_HASHES} hashes")
    out = []
    for line in lines:
        try:
            h = b64decode_strict(line)
        except NoteError as exc:
            raise ProofError(str(exc)) from exc
        if len(h) != HASH_SIZE:
            raise ProofError(f"a proof hash is {HASH_SIZE} bytes")
        out.append(h)
    return out


@dataclass(frozen=True)
class InclusionProofText:
    index: int
    path: tuple[bytes, ...]
    #: the signed checkpoint note, verbatim
    checkpoint: str
    extra: bytes | None = None

    def text(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.path]
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str) -> InclusionProofText:
        head, sep, checkpoint = text.partition("\n\n")
        if not sep or not checkpoint:
            raise ProofError("a tlog-proof is its lines, a blank line, then the checkpoint")
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise ProofError(f"a tlog-proof starts with {HEADER!r}")
        rest = lines[1:]
        extra = None
        if rest and rest[0].startswith("extra "):
            try:
                extra = b64decode_strict(rest[0][len("extra ") :])
            except NoteError as exc:
                raise ProofError(str(exc)) from exc
            rest = rest[1:]
        if not rest or not rest[0].startswith("index "):
            raise ProofError("a tlog-proof names its entry's index")
        index = _decimal(rest[0][len("index ") :], "index")
        return cls(index, tuple(_hashes(rest[1:])), checkpoint, extra)
