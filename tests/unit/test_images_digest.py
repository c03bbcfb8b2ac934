"""The content digest: canonical, sensitive to content and metadata, blind to mtimes."""

from __future__ import annotations

import os
from pathlib import Path

from corral.runtime.images._digest import files_digest, tree_digest


def _tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("pc\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + b"x" * (3 << 20))  # > one read chunk
    os.chmod(root / "bin" / "tool", 0o700)
    os.symlink("/etc/hostname", root / "link")
    os.link(root / "etc" / "hostname", root / "hard")
    os.mkfifo(root / "fifo")
    return root


def test_same_content_same_digest(tmp_path: Path) -> None:
    a = tree_digest(_tree(tmp_path / "a"))
    b = tree_digest(_tree(tmp_path / "b"))
    assert a == b
    assert a.digest.startswith("sha256:") and len(a.digest) == 71
    assert a.size_bytes == 3 + (4 + (3 << 20)) + len("/etc/hostname")  # hard link once


def test_mtime_does_not_matter(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    before = tree_digest(root).digest
    os.utime(root / "etc" / "hostname", (0, 0))
    assert tree_digest(root).digest == before


def test_content_mode_link_and_names_matter(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    seen = {tree_digest(root).digest}
    (root / "etc" / "hostname").write_text("PC\n")
    seen.add(tree_digest(root).digest)
    os.chmod(root / "bin" / "tool", 0o500)
    seen.add(tree_digest(root).digest)
    os.unlink(root / "link")
    os.symlink("/etc/other", root / "link")
    seen.add(tree_digest(root).digest)
    (root / "etc" / "empty").mkdir()
    seen.add(tree_digest(root).digest)
    os.rename(root / "etc" / "empty", root / "etc" / "empty2")
    seen.add(tree_digest(root).digest)
    assert len(seen) == 6


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("one")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "escape")
    before = tree_digest(root).digest
    outside.write_text("two")
    assert tree_digest(root).digest == before


def test_files_digest(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    d1 = files_digest(tmp_path, ["b.py", "a.py"])
    assert d1 == files_digest(tmp_path, ["a.py", "b.py"])
    (tmp_path / "a.py").write_text("x = 2\n")
    assert files_digest(tmp_path, ["a.py", "b.py"]) != d1
