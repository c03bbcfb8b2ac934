"""Session handles: how a stateless MCP client names the PC it acquired on later calls.

MCP 2026-07-28 has no protocol session, so the gateway's `acquire_pc` answers a handle that
the client passes back as the `session` argument of the computer tools and `release_pc`. A
handle reads `<session id>.<tag>`, where the tag is an HMAC over the session id, the caller's
kind and id and the thumbprint of its DPoP key (`jkt`). The caller is not in the handle: it
comes from the request's own authentication, so a handle replayed by another agent, or by the
same agent holding another DPoP key, computes another tag and is refused, as is any handle
whose session id or tag was altered. Nothing is stored: any control-plane process holding the
same keyring checks a handle, and the session's own row in the store says whether it is still
active (a handle outlives nothing: release ends it, as it ends the session's URL).

The MAC key is derived from the server's signing keys (`SigningKeyring`), one per key, so it
is shared by every process that shares the keyring and it rotates with it; a handle verifies
while the key that minted it does. HMAC rather than a signature keeps the check off the
tool-call budget (microseconds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from corral.errors import PermissionDeniedError

if TYPE_CHECKING:
    from corral.domain.access import Caller
    from corral.identity.keys import SigningKeyring

__all__ = ["InvalidSessionHandleError", "SessionHandles"]

_LABEL = b"corral/session-handle/v1"
_TAG_BYTES = 16  # 128-bit tags: forging one is a 2^-128 guess
# A session id as the control plane makes them ("ses-" + 16 hex), with room for others.
_HANDLE = re.compile(r"^([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{22})$")


class InvalidSessionHandleError(PermissionDeniedError):
    """A handle that is malformed, altered, or presented by a caller it was not made for."""

    code = "invalid_session_handle"


class SessionHandles:
    """Mints and opens session handles under `keys()` (current key first; any opens)."""

    def __init__(self, keys: Callable[[], Sequence[bytes]]) -> None:
        self._keys = keys
        # HMAC objects already keyed, per key list (copying one skips re-keying per call)
        self._macs: tuple[Sequence[bytes] | None, list[hmac.HMAC]] = (None, [])

    def __repr__(self) -> str:
        return "SessionHandles()"

    @classmethod
    def from_keyring(cls, keyring: SigningKeyring) -> SessionHandles:
        """Handles keyed by the server's signing keys: one MAC key per signing key, derived
        once (HMAC-SHA256 of a fixed label under the private key) and kept by key id."""
        derived: dict[str, bytes] = {}
        cached: list[tuple[tuple[object, ...], list[bytes]]] = []

        def keys() -> list[bytes]:
            ring = keyring.keys  # current first; retired keys are pruned from the ring
            if cached and cached[0][0] is ring:  # the ring is swapped whole on rotation
                return cached[0][1]
            out = []
            for key in ring:
                mac_key = derived.get(key.kid)
                if mac_key is None:
                    private = key.private.as_dict(private=True)["d"]
                    mac_key = hmac.new(_unb64(str(private)), _LABEL, hashlib.sha256).digest()
                    derived[key.kid] = mac_key
                out.append(mac_key)
            cached[:] = [(ring, out)]
            return out

        return cls(keys)

    @classmethod
    def ephemeral(cls) -> SessionHandles:
        """A random key for this process only (tests, and servers without authentication)."""
        keys = (secrets.token_bytes(32),)
        return cls(lambda: keys)

    def _keyed(self) -> list[hmac.HMAC]:
        keys = self._keys()
        seen, macs = self._macs
        if seen is not keys:
            macs = [hmac.new(k, digestmod=hashlib.sha256) for k in keys]
            self._macs = (keys, macs)
        return macs

    @staticmethod
    def _tag(keyed: hmac.HMAC, session_id: str, caller: Caller | None) -> bytes:
        # Length-prefixed fields: no two (session, caller, key) triples share a message.
        fields = (
            (session_id, "", "", "")
            if caller is None
            else (session_id, caller.kind.value, caller.id, caller.jkt or "")
        )
        mac = keyed.copy()
        mac.update(_LABEL + "|".join(f"{len(f)}:{f}" for f in fields).encode())
        return mac.digest()[:_TAG_BYTES]

    def mint(self, session_id: str, caller: Caller | None) -> str:
        """The handle of `session_id` for `caller` (with the caller's current DPoP key)."""
        tag = self._tag(self._keyed()[0], session_id, caller)
        return f"{session_id}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode('ascii')}"

    def open(self, handle: object, caller: Caller | None) -> str:
        """The session id of `handle` if it was minted for this caller and DPoP key; else
        InvalidSessionHandleError (the same answer for every reason, so a guess learns
        nothing)."""
        # 1. The shape: `<session id>.<22 base64url chars>`, nothing else, bounded.
        match = _HANDLE.match(handle) if isinstance(handle, str) and len(handle) < 100 else None
        if match is None:
            raise InvalidSessionHandleError(
                "the session handle is malformed",
                hint="pass the `session` value acquire_pc answered, unchanged",
            )
        session_id, tag_text = match.groups()
        try:
            tag = base64.urlsafe_b64decode(tag_text + "==")
        except (binascii.Error, ValueError):  # unreachable past the pattern; fail closed
            tag = b""
        # 2. The tag, recomputed for this request's caller and key under every key that still
        #    verifies, compared in constant time.
        for keyed in self._keyed():
            if len(tag) == _TAG_BYTES and hmac.compare_digest(
                tag, self._tag(keyed, session_id, caller)
            ):
                return session_id
        raise InvalidSessionHandleError(
            "the session handle is not valid for this caller",
            hint="a handle works only for the agent that acquired the PC, with the DPoP key it "
            "used then; acquire_pc again (the same idempotency_key returns the same PC)",
        )


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
