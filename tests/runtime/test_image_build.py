"""Real image builds (root, debootstrap, the host's Debian mirror).

The first build on a machine is slow (minutes: downloads and dpkg); the cached layers under the
cache folder make every later one take seconds, and an unchanged image is a no-op.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.config import paths
from corral.errors import ImageBuildError, InvalidInputError
from corral.runtime.images import Image, ImageStore, build_image
from corral.runtime.images._digest import tree_digest
from corral.runtime.images._mounts import mounts_under

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(1800)]


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("image build tests need root (CI is root): run them with sudo")


def _staging_dirs(*parents: Path) -> list[Path]:
    return [p for parent in parents if parent.is_dir() for p in parent.glob(".staging-*")]


def _assert_clean(store_root: Path) -> None:
    cache = paths().cache
    assert mounts_under(store_root) == []
    assert mounts_under(cache) == []
    assert _staging_dirs(store_root, cache / "bases", cache / "bootstrap") == []


def _chroot(rootfs: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True)


@pytest.fixture(scope="module")
def minimal() -> Iterator[Image]:
    _require_root()
    yield build_image("minimal", progress=print)


def test_manifest(minimal: Image) -> None:
    m = minimal.manifest
    assert m["name"] == "minimal" and m["digest"] == minimal.digest
    assert minimal.digest.startswith("sha256:") and len(minimal.digest) == 71
    assert minimal.path.name == minimal.digest.removeprefix("sha256:")[:16]
    assert m["recipe"]["name"] == "minimal" and m["recipe"]["digest"].startswith("sha256:")
    assert m["pcd"]["digest"].startswith("sha256:")
    names = {p["name"] for p in m["packages"]}
    assert {"xvfb", "openbox", "python3", "python3-pil", "python3-xlib", "tini"} <= names
    assert all(p["version"] for p in m["packages"])
    assert m["size_bytes"] > 100 * 2**20
    assert m["build_seconds"] >= 0 and m["built_at"].endswith("Z")
    assert m["suite"] and m["arch"]
    assert m["user"] == {"name": "user", "uid": 1000, "gid": 1000, "home": "/home/user"}
    assert ImageStore().get("minimal") == minimal


def test_rootfs_contents(minimal: Image) -> None:
    root = minimal.rootfs
    assert (root / "usr/bin/Xvfb").is_file()
    assert (root / "usr/bin/openbox").is_file()
    assert (root / "usr/bin/tini").is_file() or (root / "usr/sbin/tini").is_file()
    done = _chroot(root, "/usr/bin/python3", "-B", "-c", "import PIL, Xlib")
    assert done.returncode == 0, done.stderr
    passwd = (root / "etc/passwd").read_text()
    assert "user:x:1000:1000::/home/user:/bin/bash" in passwd
    home = root / "home/user"
    assert home.is_dir() and home.stat().st_uid == 1000
    assert "user:!" in (root / "etc/shadow").read_text()  # no password
    launcher = root / "usr/local/bin/corral-pcd"
    assert launcher.is_file() and os.access(launcher, os.X_OK)
    assert launcher.read_text().startswith("#!/usr/bin/python3 -I\n")
    assert (root / "usr/lib/corral/pcd/__init__.py").is_file()
    pycs = list((root / "usr/lib/corral/pcd/__pycache__").glob("*.pyc"))
    assert len(pycs) == len(list((root / "usr/lib/corral/pcd").rglob("*.py")))
    assert (root / "run/corral").is_dir()
    assert (root / "run/corral").stat().st_mode & 0o7777 == 0o755
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "etc/hostname").read_text() == "pc\n"
    assert (root / "etc/resolv.conf").read_text() == ""
    assert (root / "usr/sbin/policy-rc.d").is_file()
    assert list((root / "var/lib/apt/lists").glob("*_Packages")) == []
    assert list((root / "var/cache/apt/archives").glob("*.deb")) == []
    assert (root / "etc/corral/motd").is_file()


def test_pcd_imports_on_the_images_python(minimal: Image) -> None:
    done = _chroot(
        minimal.rootfs,
        "/usr/bin/python3",
        "-I",
        "-B",
        "-c",
        "import sys; sys.path.insert(0, '/usr/lib/corral'); import pcd.main",
    )
    assert done.returncode == 0, done.stderr


def test_no_leftovers(minimal: Image) -> None:
    _assert_clean(ImageStore().root)


def test_image_still_matches_its_digest(minimal: Image) -> None:
    """Images are read-only: nothing above (nor any PC) may have written into the rootfs."""
    assert tree_digest(minimal.rootfs).digest == minimal.digest


def test_second_build_is_a_fast_noop(minimal: Image) -> None:
    lines: list[str] = []
    start = time.monotonic()
    again = build_image("minimal", progress=lines.append)
    assert time.monotonic() - start < 10
    assert again == minimal
    assert any("up to date" in line for line in lines)


def test_missing_package_fails_cleanly(tmp_path: Path) -> None:
    _require_root()
    recipe = tmp_path / "broken.toml"
    recipe.write_text('name = "broken"\npackages = ["xterm", "corral-no-such-package"]\n')
    store = ImageStore(tmp_path / "images")
    with pytest.raises(ImageBuildError) as exc:
        build_image("broken", recipe, store=store)
    assert "corral-no-such-package" in exc.value.message
    assert "last lines of the build log" in exc.value.message
    assert exc.value.hint and "log" in exc.value.hint
    assert store.list() == []
    _assert_clean(store.root)


def test_bad_key_fails_validation(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('name = "bad"\npackages = ["xterm"]\n[user]\nname = "user"\nshell = "zsh"\n')
    with pytest.raises(InvalidInputError) as exc:
        build_image("bad", recipe, store=ImageStore(tmp_path / "images"))
    assert "unknown key 'user.shell'" in exc.value.message
    assert not (tmp_path / "images").exists()


def test_sigterm_mid_build_leaves_nothing(tmp_path: Path) -> None:
    """Stop a build while apt runs inside the chroot: no mounts, no staging, nothing registered."""
    _require_root()
    recipe = tmp_path / "interrupted.toml"
    # A package set no other test uses, so its base is not cached and apt really runs.
    recipe.write_text(f'name = "interrupted"\npackages = ["xterm", "tini"]\n# {time.time()}\n')
    images = tmp_path / "images"
    code = (
        "import sys; from pathlib import Path; from corral.runtime.images import *; "
        "build_image('interrupted', Path(sys.argv[1]), store=ImageStore(Path(sys.argv[2])), "
        "refresh=True)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(recipe), str(images)])
    bases = paths().cache / "bases"
    deadline = time.monotonic() + 600
    try:
        while not any(mounts_under(p) for p in _staging_dirs(bases)):
            assert proc.poll() is None, "the build ended before apt ran"
            assert time.monotonic() < deadline, "the build never reached apt"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ImageStore(images).list() == []
    _assert_clean(images)


@pytest.mark.desktop
def test_desktop_image_has_a_browser() -> None:
    _require_root()
    desktop = build_image("desktop", progress=print)
    names = {p["name"] for p in desktop.manifest["packages"]}
    assert {"chromium", "fonts-liberation", "xvfb", "python3-xlib"} <= names
    done = _chroot(desktop.rootfs, "/usr/lib/chromium/chromium", "--version")
    assert done.returncode == 0 and "Chromium" in done.stdout, done.stderr
    assert desktop.user.uid == 1000
    _assert_clean(ImageStore().root)
