"""C2SP signed-note (https://c2sp.org/signed-note) with Ed25519: signing, verifier keys, and
opening a note against the keys one trusts, with the spec's rejection rules.

A note is its text (ending in a newline), a blank line, then signature lines
`— <key name> base64(key id || signature)`. A key id is the first four bytes of
SHA-256(name || "\\n" || type || public key); Ed25519 note keys have type 0x01. Verifier keys
are written `<name>+<8 hex key id>+base64(type || public key)`; signer keys as Go's
`sumdb/note` writes them, `PRIVATE+KEY+<name>+<key id>+base64(type || seed)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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

__all__ = [
    "ED25519",
    "MAX_SIGNATURES",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "Signature",
    "b64decode_strict",
    "key_id",
    "open_note",
    "sign_note",
    "split_note",
]

ED25519 = 0x01
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16; Go caps at 100
_DASH = "\u2014 "


class NoteError(ValueError):
    """A note that is malformed, or that no trusted key signed."""


def key_id(name: str, key_type: int, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public).digest()
    return int(struct.unpack(">I", digest[:4])[0])


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"bad key name {name!r}: non-empty, no spaces, no '+'")


def b64decode_strict(text: str) -> bytes:
    """Standard padded base64, refusing any other spelling of the same bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"bad base64 {text[:20]!r}") from exc
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"non-canonical base64 {text[:20]!r}")
    return raw


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    id: int
    key: Ed25519PublicKey
    key_type: int = ED25519

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        parts = vkey.split("+", 2)  # base64 may hold '+'; names may not
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        _check_name(name)
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise NoteError("a verifier key's id is 8 lowercase hex digits")
        wanted = int(hex_id, 16)
        raw = b64decode_strict(b64)
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
        if key_id(name, ED25519, raw[1:]) != wanted:
            raise NoteError("the verifier key's id does not match its name and key")
        return cls(name, wanted, Ed25519PublicKey.from_public_bytes(raw[1:]))

    @property
    def vkey(self) -> str:
        raw = bytes([self.key_type]) + _public_bytes(self.key)
        return f"{self.name}+{self.id:08x}+{base64.b64encode(raw).decode()}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


def parse_skey(
    skey: str, types: tuple[int, ...], wrong_type: str
) -> tuple[str, int, Ed25519PrivateKey]:
    """(name, key type, key) of a `PRIVATE+KEY+<name>+<hex id>+<base64(type || seed)>` signer
    key (the Go `sumdb/note` form), its type one of `types` and its id checked."""
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise NoteError("a signer key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
    name, hex_id, b64 = parts[2:]
    raw = b64decode_strict(b64)
    if len(raw) != 33 or raw[0] not in types:
        raise NoteError(wrong_type)
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    _check_name(name)
    if f"{key_id(name, raw[0], _public_bytes(key.public_key())):08x}" != hex_id:
        raise NoteError("the signer key's id does not match its name and key")
    return name, raw[0], key


@dataclass(frozen=True)
class NoteSigner:
    name: str
    key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        name, _, key = parse_skey(
            skey, (ED25519,), "only Ed25519 signer keys (type 0x01, 32-byte seed) are supported"
        )
        return cls(name, key)

    @property
    def id(self) -> int:
        return key_id(self.name, ED25519, _public_bytes(self.key.public_key()))

    @property
    def skey(self) -> str:
        seed = self.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.id:08x}+{raw}"

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.id, self.key.public_key())

    def signature_line(self, text: bytes) -> str:
        sig = struct.pack(">I", self.id) + self.key.sign(text)
        return f"{_DASH}{self.name} {base64.b64encode(sig).decode()}\n"


@dataclass(frozen=True)
class Signature:
    """One signature line: the key it names and the signature bytes."""

    name: str
    id: int
    signature: bytes

    @property
    def line(self) -> str:
        raw = struct.pack(">I", self.id) + self.signature
        return f"{_DASH}{self.name} {base64.b64encode(raw).decode()}\n"


def _check_text(text: str) -> None:
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note may hold no control character but newline")


def sign_note(text: str, *signers: NoteSigner) -> str:
    """The signed note of `text` (which must end in a newline)."""
    if not text.endswith("\n"):
        raise NoteError("a note's text ends in a newline")
    _check_text(text)
    body = text.encode()
    return text + "\n" + "".join(s.signature_line(body) for s in signers)


def split_note(message: bytes | str) -> tuple[str, list[Signature]]:
    """The text and the signature lines of a note, checked for form only."""
    try:
        msg = message.decode() if isinstance(message, bytes) else message
    except UnicodeDecodeError as exc:
        raise NoteError("a note is UTF-8") from exc
    _check_text(msg)
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteError("a note has a blank line between its text and its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("a note ends in signature lines, each ending in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("a signature line starts with an em dash and a space")
        name, space, b64 = line[len(_DASH) :].partition(" ")
        if not space or " " in b64:
            raise NoteError("a signature line is '— <name> <base64>'")
        _check_name(name)
        raw = b64decode_strict(b64)
        if len(raw) < 5:
            raise NoteError("a signature holds a key id and at least one byte")
        signatures.append(Signature(name, struct.unpack(">I", raw[:4])[0], raw[4:]))
    return text, signatures


def open_note(message: bytes | str, verifiers: list[NoteVerifier]) -> tuple[str, list[str]]:
    """The note's text and the names of the trusted keys that signed it. Signatures by unknown
    keys are ignored; a known key's bad signature rejects the note; so does a note no known
    key signed."""
    text, signatures = split_note(message)
    known = {(v.name, v.id): v for v in verifiers}
    verified: list[str] = []
    seen: set[tuple[str, int]] = set()
    for sig in signatures:
        verifier = known.get((sig.name, sig.id))
        if verifier is None or (sig.name, sig.id) in seen:
            continue
        seen.add((sig.name, sig.id))
        if not verifier.verify(text.encode(), sig.signature):
            raise NoteError(f"the signature of {sig.name} does not verify")
        verified.append(sig.name)
    if not verified:
        raise NoteError("no trusted key signed this note")
    return text, verified
