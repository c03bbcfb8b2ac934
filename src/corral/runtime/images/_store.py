"""The image store: `<root>/<name>/<digest[:16]>/{rootfs/,manifest.json}` plus a `current` link.

Versions are never changed once registered (PCs use their rootfs as an overlay lower layer, and a
PC may still run on an old one); building again adds a version and moves `current` atomically.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.config import paths
from corral.errors import ImageNotFoundError
from corral.runtime.images._mounts import safe_rmtree
from corral.runtime.images._recipe import NAME_RE

__all__ = ["DesktopUser", "Image", "ImageStore", "version_dir_name"]

MANIFEST = "manifest.json"
CURRENT = "current"


@dataclass(frozen=True)
class DesktopUser:
    """The unprivileged account the desktop and the agent's commands run as."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Image:
    name: str
    digest: str  # "sha256:<hex>" content digest of the rootfs
    path: Path  # version folder holding rootfs/ and manifest.json
    rootfs: Path  # path / "rootfs"
    manifest: dict[str, Any]

    @property
    def user(self) -> DesktopUser:
        u = self.manifest["user"]
        return DesktopUser(
            name=str(u["name"]), uid=int(u["uid"]), gid=int(u["gid"]), home=str(u["home"])
        )


def version_dir_name(digest: str) -> str:
    """Short, content-addressed folder name of a version: the first 16 hex digits."""
    return digest.removeprefix("sha256:")[:16]


def _not_found(name: str) -> ImageNotFoundError:
    return ImageNotFoundError(
        f"no image named {name}",
        hint=f"build it with `corral image build {name}`; `corral image list` shows what exists",
    )


class ImageStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else paths().images

    def get(self, name: str) -> Image:
        """The current version of `name`; ImageNotFoundError if there is none (or it is broken)."""
        if not NAME_RE.match(name):
            raise _not_found(name)
        current = self.root / name / CURRENT
        try:
            version = (self.root / name / os.readlink(current)).resolve()
        except OSError:
            raise _not_found(name) from None
        manifest = _read_manifest(version)
        if manifest is None or not (version / "rootfs").is_dir():
            raise _not_found(name)
        return Image(
            name=name,
            digest=str(manifest.get("digest", "")),
            path=version,
            rootfs=version / "rootfs",
            manifest=manifest,
        )

    def list(self) -> list[Image]:
        """Current version of every image, by name; broken entries are skipped."""
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                out.append(self.get(entry.name))
            except ImageNotFoundError:
                continue
        return out

    def publish(self, name: str, staging: Path, manifest: dict[str, Any]) -> Image:
        """Register `staging` (holding rootfs/) as a version of `name` and make it current.

        1. Rename staging to `<name>/<digest[:16]>` (same filesystem: atomic). If that version
           already exists it has the same content, so it is kept and staging is left for the
           caller to delete.
        2. Write manifest.json into the new version (before anyone can find it as `current`).
        3. Point `current` at it by renaming a fresh temporary symlink over the old one.
        """
        digest = str(manifest["digest"])
        image_dir = self.root / name
        image_dir.mkdir(parents=True, exist_ok=True)
        version = image_dir / version_dir_name(digest)
        if version.exists() and _read_manifest(version) is None:
            safe_rmtree(version)  # a crash mid-registration: never served, so safe to replace
        if not version.exists():
            os.rename(staging, version)
            _write_durably(
                version / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            )
        link = image_dir / f".current-{secrets.token_hex(4)}"
        os.symlink(version.name, link)
        os.replace(link, image_dir / CURRENT)
        _fsync_dir(image_dir)
        return self.get(name)


def _read_manifest(version: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((version / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    """Write via a temporary file, fsync and rename, so a crash leaves the old file or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
