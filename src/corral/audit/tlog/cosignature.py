"""C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature), the Ed25519 type: a witness's
timestamped signature of a checkpoint, as one more signature line of the checkpoint's note.

A cosigner signs `cosignature/v1\\n` + `time <POSIX seconds>\\n` + the checkpoint's whole note
text (with its final newline, without signature lines). The signature line is
`— <cosigner name> base64(key id || u64be(timestamp) || Ed25519 signature)`, where the key id
is SHA-256(name || "\\n" || 0x04 || public key)[:4]: signature type 0x04, so the same key
used as a plain (0x01) note signer has another id. Verifier keys are
`<name>+<hex id>+base64(0x04 || public key)`.

Signer keys are written like note signer keys, `PRIVATE+KEY+<name>+<hex id>+base64(type ||
seed)`, with type 0x04 (what `CosignatureSigner.generate` writes) or 0x01 (a Go `sumdb/note`
key, accepted for convenience: its cosignatures carry the 0x04 key id).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from corral.audit.tlog.note import (
    ED25519,
    NoteError,
    Signature,
    b64decode_strict,
    key_id,
    parse_skey,
    split_note,
)

__all__ = [
    "COSIGNATURE_V1",
    "HEADER",
    "MAX_TIMESTAMP",
    "Cosignature",
    "CosignatureSigner",
    "CosignatureVerifier",
    "cosign",
    "cosigned_message",
]

COSIGNATURE_V1 = 0x04  # signed-note signature type: timestamped Ed25519 cosignature
HEADER = "cosignature/v1"
MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a v1 cosigner signs for the checkpoint note text `text` at `timestamp`."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"a cosignature's timestamp is 0 to 2^63-1, not {timestamp}")
    if not text.endswith("\n"):
        raise NoteError("a note's text ends in a newline")
    return f"{HEADER}\ntime {timestamp}\n{text}".encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"bad key name {name!r}: non-empty, no spaces, no '+'")


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who, and the time it states."""

    name: str
    timestamp: int


@dataclass(frozen=True)
class CosignatureVerifier:
    name: str
    id: int
    key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        _check_name(name)
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise NoteError("a verifier key's id is 8 lowercase hex digits")
        raw = b64decode_strict(b64)
        if len(raw) != 33 or raw[0] != COSIGNATURE_V1:
            raise NoteError(
                "a witness key is an Ed25519 cosignature verifier key (type 0x04, 32 bytes)"
            )
        wanted = int(hex_id, 16)
        if key_id(name, COSIGNATURE_V1, raw[1:]) != wanted:
            raise NoteError("the verifier key's id does not match its name and key")
        return cls(name, wanted, Ed25519PublicKey.from_public_bytes(raw[1:]))

    @property
    def vkey(self) -> str:
        raw = bytes([COSIGNATURE_V1]) + _raw_public(self.key)
        return f"{self.name}+{self.id:08x}+{base64.b64encode(raw).decode()}"

    def check(self, text: str, signature: bytes) -> Cosignature:
        """The cosignature in `signature` (a signature line's bytes after the key id) over
        the note text `text`; NoteError if it is malformed or does not verify."""
        if len(signature) != 8 + 64:
            raise NoteError(f"the cosignature of {self.name} is not 8 + 64 bytes")
        (timestamp,) = struct.unpack(">Q", signature[:8])
        if timestamp > MAX_TIMESTAMP:
            raise NoteError(f"the cosignature of {self.name} has a timestamp over 2^63-1")
        try:
            self.key.verify(signature[8:], cosigned_message(text, timestamp))
        except InvalidSignature:
            raise NoteError(f"the cosignature of {self.name} does not verify") from None
        return Cosignature(self.name, timestamp)

    def verify_note(self, message: str) -> Cosignature:
        """This cosigner's cosignature on the signed note `message`: NoteError if the note
        has none, or a bad one (lines by other keys are ignored, as signed-note asks)."""
        text, signatures = split_note(message)
        found: Cosignature | None = None
        for sig in signatures:
            if (sig.name, sig.id) == (self.name, self.id):
                found = self.check(text, sig.signature)  # every matching line must verify
        if found is None:
            raise NoteError(f"no cosignature by {self.name} ({self.id:08x})")
        return found


@dataclass(frozen=True)
class CosignatureSigner:
    name: str
    key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @classmethod
    def generate(cls, name: str) -> CosignatureSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> CosignatureSigner:
        name, _, key = parse_skey(
            skey,
            (COSIGNATURE_V1, ED25519),
            "a witness signer key is Ed25519 (type 0x04 or 0x01, 32-byte seed)",
        )
        return cls(name, key)

    @property
    def public(self) -> bytes:
        return _raw_public(self.key.public_key())

    @property
    def id(self) -> int:
        return key_id(self.name, COSIGNATURE_V1, self.public)

    @property
    def skey(self) -> str:
        seed = self.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw = base64.b64encode(bytes([COSIGNATURE_V1]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.id:08x}+{raw}"

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.id, self.key.public_key())

    def signature(self, text: str, timestamp: int) -> Signature:
        sig = self.key.sign(cosigned_message(text, timestamp))
        return Signature(self.name, self.id, struct.pack(">Q", timestamp) + sig)

    def signature_line(self, text: str, timestamp: int) -> str:
        return self.signature(text, timestamp).line


def cosign(message: str, signer: CosignatureSigner, timestamp: int) -> str:
    """The signed note `message` with `signer`'s cosignature added (at `timestamp`)."""
    text, _ = split_note(message)
    if not message.endswith("\n"):
        raise NoteError("a note ends in a newline")
    return message + signer.signature_line(text, timestamp)
