"""Server-issued DPoP nonces (RFC 9449 section 8): short-lived and stateless.

A nonce is `base64url(issued_at || random || HMAC(secret, issued_at || random))`, so any worker
holding the same secret can check it without shared state, and a proof carrying one cannot have
been made before the nonce existed, which bounds how far ahead an attacker can pre-compute
proofs with a stolen key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct

__all__ = ["NonceSource"]

_STAMP = struct.Struct(">Q")
_RANDOM_BYTES = 8
_MAC_BYTES = 16


class NonceSource:
    """Issues and checks nonces valid for `lifetime` seconds."""

    def __init__(self, secret: bytes | None = None, lifetime: float = 300.0) -> None:
        if secret is not None and len(secret) < 32:
            raise ValueError("a nonce secret needs at least 32 bytes")
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.lifetime = lifetime
        self._current: tuple[float, str] = (float("-inf"), "")

    def __repr__(self) -> str:
        return f"NonceSource(lifetime={self.lifetime})"

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, now: float) -> str:
        body = _STAMP.pack(int(now)) + secrets.token_bytes(_RANDOM_BYTES)
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode("ascii")

    def current(self, now: float) -> str:
        """The nonce to hand out now: one for every caller, rotated every third of its
        lifetime, so a client that takes each new DPoP-Nonce header never sees its nonce
        expire, and answering with it costs no signing per request."""
        since, nonce = self._current
        if not since <= now < since + self.lifetime / 3:
            nonce = self.issue(now)
            self._current = (now, nonce)
        return nonce

    def check(self, nonce: object, now: float) -> bool:
        """True if `nonce` is one of ours and not older than `lifetime` (nor from the future)."""
        if not isinstance(nonce, str) or len(nonce) > 64:
            return False
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(raw) != _STAMP.size + _RANDOM_BYTES + _MAC_BYTES:
            return False
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return False
        issued_at: int = _STAMP.unpack(body[: _STAMP.size])[0]
        return issued_at - 5 <= now and now - issued_at <= self.lifetime
