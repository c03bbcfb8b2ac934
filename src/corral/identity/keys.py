"""The server's token signing keys: generate, persist, rotate, publish.

The keyring holds one current key (it signs new tokens) and older keys kept only to verify
tokens they signed until those tokens expire. Key ids are RFC 7638 thumbprints, so a kid names
exactly one public key. Private keys live in one JSON file readable only by its owner and never
appear in a repr, a log line or the JWKS.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey

from corral.errors import InvalidInputError

__all__ = ["SigningAlg", "SigningKey", "SigningKeyring"]

SigningAlg = Literal["EdDSA", "ES256"]
_FORMAT = "corral-signing-keys/1"
# How long a replaced key keeps verifying: longer than any token it may have signed lives.
DEFAULT_KEEP_OLD_FOR = 3600.0


@dataclass(frozen=True)
class SigningKey:
    """One signing key; `retire_at` is when it stops verifying (None: it is current)."""

    kid: str
    alg: SigningAlg
    created_at: float
    retire_at: float | None
    private: Key = field(repr=False, compare=False)

    def public_jwk(self) -> dict[str, Any]:
        jwk = dict(self.private.as_dict(private=False))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def usable_at(self, now: float) -> bool:
        return self.retire_at is None or now < self.retire_at


def _new_key(alg: SigningAlg, now: float) -> SigningKey:
    private: Key
    if alg == "EdDSA":
        private = OKPKey.generate_key("Ed25519")
    elif alg == "ES256":
        private = ECKey.generate_key("P-256")
    else:
        raise InvalidInputError(f"unsupported signing algorithm {alg!r}", hint="use EdDSA or ES256")
    return SigningKey(private.thumbprint(), alg, now, None, private)


class SigningKeyring:
    """Current key first, then older keys still accepted for verification.

    Reads are lock-free: rotation swaps in a new immutable tuple; writers take a lock so two
    rotations cannot lose a key.
    """

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        ordered = tuple(keys)
        if not ordered or ordered[0].retire_at is not None:
            raise InvalidInputError("a keyring needs a current key")
        # One attribute, swapped whole, so a reader never sees a half-rotated ring.
        self._state: tuple[tuple[SigningKey, ...], dict[str, SigningKey]] = (
            ordered,
            {k.kid: k for k in ordered},
        )
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SigningKeyring(current={self.current.kid!r}, keys={len(self.keys)})"

    @classmethod
    def generate(cls, alg: SigningAlg = "EdDSA", now: float | None = None) -> SigningKeyring:
        return cls([_new_key(alg, time.time() if now is None else now)])

    @property
    def current(self) -> SigningKey:
        return self._state[0][0]

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return self._state[0]

    def verification_key(self, kid: object, now: float) -> SigningKey | None:
        """The key named `kid`, if we have it and it has not retired."""
        key = self._state[1].get(kid) if isinstance(kid, str) else None
        return key if key is not None and key.usable_at(now) else None

    def rotate(
        self,
        alg: SigningAlg | None = None,
        now: float | None = None,
        keep_old_for: float = DEFAULT_KEEP_OLD_FOR,
    ) -> SigningKey:
        """Make a new current key; the old one verifies for `keep_old_for` more seconds."""
        now = time.time() if now is None else now
        with self._write_lock:
            new = _new_key(alg or self.current.alg, now)
            old = replace(self.current, retire_at=now + keep_old_for)
            self._swap((new, old, *self.keys[1:]), now)
        return new

    def prune(self, now: float | None = None) -> None:
        """Forget retired keys: tokens they signed stop verifying."""
        with self._write_lock:
            self._swap(self.keys, time.time() if now is None else now)

    def _swap(self, keys: tuple[SigningKey, ...], now: float) -> None:
        kept = tuple(k for k in keys if k.usable_at(now))
        self._state = (kept, {k.kid: k for k in kept})

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        """The public JWK Set for `/.well-known/jwks.json`: every key that still verifies."""
        now = time.time() if now is None else now
        return {"keys": [k.public_jwk() for k in self.keys if k.usable_at(now)]}

    # -- persistence ---------------------------------------------------------------------

    def to_json(self) -> str:
        """The private keyring document; handle like a password."""
        doc = {
            "format": _FORMAT,
            "keys": [
                {
                    "alg": k.alg,
                    "created_at": k.created_at,
                    "retire_at": k.retire_at,
                    "jwk": k.private.as_dict(private=True),
                }
                for k in self.keys
            ],
        }
        return json.dumps(doc, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SigningKeyring:
        try:
            doc = json.loads(text)
            if doc.get("format") != _FORMAT:
                raise ValueError("unknown format")
            keys = [_key_from_entry(entry) for entry in doc["keys"]]
        except (ValueError, KeyError, TypeError, AttributeError, JoseError) as exc:
            raise InvalidInputError(
                "the signing key file is not a Corral keyring",
                hint="restore it from backup, or move it away to generate a new one",
            ) from exc
        return cls(keys)

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600 (created so, never widened afterwards)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> SigningKeyring:
        """Read a keyring, refusing a file that others can read or write."""
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInputError(
                f"signing key file {path} is accessible to other users",
                hint=f"chmod 600 {path}",
            )
        return cls.from_json(path.read_text(encoding="utf-8"))

    @classmethod
    def load_or_create(cls, path: Path, alg: SigningAlg = "EdDSA") -> SigningKeyring:
        """First run bootstraps a keyring; later runs load it."""
        if path.exists():
            return cls.load(path)
        ring = cls.generate(alg)
        ring.save(path)
        return ring


def _key_from_entry(entry: dict[str, Any]) -> SigningKey:
    alg = entry["alg"]
    jwk = entry["jwk"]
    private: Key
    if alg == "EdDSA" and jwk.get("crv") == "Ed25519":
        private = OKPKey.import_key(jwk)
    elif alg == "ES256" and jwk.get("crv") == "P-256":
        private = ECKey.import_key(jwk)
    else:
        raise ValueError("unsupported key")
    if not private.is_private:
        raise ValueError("not a private key")
    retire_at = entry.get("retire_at")
    return SigningKey(
        private.thumbprint(),
        alg,
        float(entry["created_at"]),
        None if retire_at is None else float(retire_at),
        private,
    )
