"""The manifest written beside every rootfs, and the decisions made from it (pure)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BUILDER_VERSION",
    "LAYERS_VERSION",
    "BuildInputs",
    "cache_key",
    "is_up_to_date",
    "make_manifest",
]

# Bump when the build steps change what ends up in an image, so existing images are rebuilt.
BUILDER_VERSION = 2
# Bump when the steps making the cached bootstrap/package layers change, so those are remade.
LAYERS_VERSION = 2


@dataclass(frozen=True)
class BuildInputs:
    """Everything that decides an image's content, known before building it."""

    name: str
    suite: str
    arch: str
    recipe_path: str
    recipe_digest: str
    pcd_version: str
    pcd_digest: str


def is_up_to_date(manifest: dict[str, Any] | None, inputs: BuildInputs) -> bool:
    """True when the current image was built from these very inputs by this builder."""
    if not manifest:
        return False
    return (
        manifest.get("builder") == BUILDER_VERSION
        and manifest.get("suite") == inputs.suite
        and manifest.get("arch") == inputs.arch
        and (manifest.get("recipe") or {}).get("digest") == inputs.recipe_digest
        and (manifest.get("pcd") or {}).get("digest") == inputs.pcd_digest
    )


def cache_key(**parts: Any) -> str:
    """Hex sha256 of keyword parts, stable across runs (sorted canonical JSON)."""
    blob = json.dumps({"builder": LAYERS_VERSION, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def make_manifest(
    inputs: BuildInputs,
    *,
    digest: str,
    size_bytes: int,
    packages: list[dict[str, str]],
    user: dict[str, Any],
    build_seconds: float,
    built_at: datetime | None = None,
) -> dict[str, Any]:
    when = (built_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "name": inputs.name,
        "digest": digest,
        "builder": BUILDER_VERSION,
        "recipe": {"name": inputs.name, "path": inputs.recipe_path, "digest": inputs.recipe_digest},
        "pcd": {"version": inputs.pcd_version, "digest": inputs.pcd_digest},
        "packages": packages,
        "size_bytes": size_bytes,
        "build_seconds": round(build_seconds, 1),
        "built_at": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "suite": inputs.suite,
        "arch": inputs.arch,
        "user": user,
    }
