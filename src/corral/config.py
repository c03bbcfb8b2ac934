"""Where Corral keeps things on the host; every path can be moved by an environment variable."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from corral.errors import InvalidInputError

__all__ = ["AuditSettings", "Paths", "audit_settings", "paths"]


@dataclass(frozen=True)
class Paths:
    data: Path  # service data (database, keys): CORRAL_DATA_DIR
    state: Path  # live runtime state of PCs, lost on host reboot like the PCs: CORRAL_STATE_DIR
    images: Path  # built, read-only images: CORRAL_IMAGE_DIR
    cache: Path  # build caches keyed by recipe digest: CORRAL_CACHE_DIR

    @property
    def pcs(self) -> Path:
        return self.state / "pcs"

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default).expanduser()


def paths() -> Paths:
    """Read the paths from the environment each call, so tests can point them elsewhere."""
    return Paths(
        data=_env_path("CORRAL_DATA_DIR", "~/.local/share/corral"),
        state=_env_path("CORRAL_STATE_DIR", "/run/corral"),
        images=_env_path("CORRAL_IMAGE_DIR", "/var/lib/corral/images"),
        cache=_env_path("CORRAL_CACHE_DIR", "/var/cache/corral"),
    )


@dataclass(frozen=True)
class AuditSettings:
    #: the audit log's checkpoint origin, which is also its signing key's name
    #: (CORRAL_AUDIT_ORIGIN; default `corral.local/<host name>/audit`)
    origin: str
    #: a file of witness signer keys, one per line, that cosign every checkpoint
    #: (CORRAL_AUDIT_WITNESS_KEYS; default: none)
    witness_keys: Path | None
    #: characters of typed text, clipboard text and file content a record shows beside their
    #: keyed hash (CORRAL_AUDIT_PREVIEW, 0 to 64; default 0: typed text is often a password)
    preview: int = 0


def default_audit_origin() -> str:
    host = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.") or "host"
    return f"corral.local/{host}/audit"


def audit_settings() -> AuditSettings:
    """Read from the environment each call, like `paths()`."""
    keys = os.environ.get("CORRAL_AUDIT_WITNESS_KEYS")
    preview = os.environ.get("CORRAL_AUDIT_PREVIEW", "0")
    if not preview.isdigit() or int(preview) > 64:
        raise InvalidInputError(
            f"CORRAL_AUDIT_PREVIEW={preview[:20]!r} is not a number of characters",
            hint="0 (no preview, the default) to 64",
        )
    return AuditSettings(
        origin=os.environ.get("CORRAL_AUDIT_ORIGIN") or default_audit_origin(),
        witness_keys=Path(keys).expanduser() if keys else None,
        preview=int(preview),
    )
