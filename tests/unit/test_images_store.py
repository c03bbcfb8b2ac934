"""The image store on a fake tree: lookups, listing, publishing and its atomic `current`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from corral.errors import ImageNotFoundError
from corral.runtime.images import DesktopUser, ImageStore

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def _manifest(name: str, digest: str) -> dict[str, Any]:
    return {
        "name": name,
        "digest": digest,
        "packages": [{"name": "xvfb", "version": "2:21"}],
        "size_bytes": 123,
        "built_at": "2026-01-01T00:00:00Z",
        "user": {"name": "user", "uid": 1000, "gid": 1000, "home": "/home/user"},
    }


def _staging(root: Path) -> Path:
    staging = root / f".staging-{os.urandom(3).hex()}"
    (staging / "rootfs" / "etc").mkdir(parents=True)
    return staging


def test_empty_store(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "missing")
    assert store.list() == []
    with pytest.raises(ImageNotFoundError) as exc:
        store.get("desktop")
    assert exc.value.message == "no image named desktop"
    assert "corral image build desktop" in (exc.value.hint or "")


def test_publish_then_get_and_list(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    img = store.publish("minimal", _staging(tmp_path), _manifest("minimal", DIGEST_A))
    assert img.name == "minimal" and img.digest == DIGEST_A
    assert img.path == tmp_path / "minimal" / ("a" * 16)
    assert img.rootfs == img.path / "rootfs" and img.rootfs.is_dir()
    assert os.readlink(tmp_path / "minimal" / "current") == "a" * 16
    assert img.user == DesktopUser("user", 1000, 1000, "/home/user")
    assert json.loads((img.path / "manifest.json").read_text())["digest"] == DIGEST_A
    assert [i.name for i in store.list()] == ["minimal"]
    assert not list(tmp_path.glob(".staging-*"))


def test_new_version_moves_current_and_keeps_old(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    old = store.publish("minimal", _staging(tmp_path), _manifest("minimal", DIGEST_A))
    new = store.publish("minimal", _staging(tmp_path), _manifest("minimal", DIGEST_B))
    assert store.get("minimal").digest == DIGEST_B
    assert old.path.is_dir() and new.path.is_dir()  # PCs may still run on the old one
    assert [i.digest for i in store.list()] == [DIGEST_B]  # only current ones are listed
    assert not [p for p in (tmp_path / "minimal").iterdir() if p.name.startswith(".current")]


def test_same_content_keeps_existing_version(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first = store.publish("minimal", _staging(tmp_path), _manifest("minimal", DIGEST_A))
    again = _staging(tmp_path)
    m = _manifest("minimal", DIGEST_A) | {"size_bytes": 999}
    second = store.publish("minimal", again, m)
    assert second.path == first.path
    assert second.manifest["size_bytes"] == 123  # a registered version is never rewritten
    assert again.is_dir()  # left for the caller to delete


def test_broken_entries_are_not_found_and_not_listed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    store.publish("good", _staging(tmp_path), _manifest("good", DIGEST_A))
    (tmp_path / "nolink").mkdir()
    (tmp_path / "dangling").mkdir()
    os.symlink("0123456789abcdef", tmp_path / "dangling" / "current")
    bad = tmp_path / "badjson" / "0123456789abcdef"
    (bad / "rootfs").mkdir(parents=True)
    (bad / "manifest.json").write_text("{not json")
    os.symlink(bad.name, tmp_path / "badjson" / "current")
    (tmp_path / ".staging-x").mkdir()
    assert [i.name for i in store.list()] == ["good"]
    for name in ("nolink", "dangling", "badjson", "../good", ".staging-x", ""):
        with pytest.raises(ImageNotFoundError):
            store.get(name)


def test_default_root_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_IMAGE_DIR", str(tmp_path / "imgs"))
    assert ImageStore().root == tmp_path / "imgs"


def test_half_registered_version_is_replaced(tmp_path: Path) -> None:
    """A crash between the rename and the manifest leaves a version nobody could boot: the next
    build with the same content replaces it instead of reusing it."""
    store = ImageStore(tmp_path)
    broken = tmp_path / "minimal" / ("a" * 16)
    (broken / "rootfs").mkdir(parents=True)
    img = store.publish("minimal", _staging(tmp_path), _manifest("minimal", DIGEST_A))
    assert img.path == broken and img.manifest["digest"] == DIGEST_A
    assert (img.rootfs / "etc").is_dir()
