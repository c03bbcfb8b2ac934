"""Pure parts of the build: manifest and freshness, apt failure wording, mountinfo, passwd,
and writing into a root without escaping it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.runtime.images._manifest import (
    BUILDER_VERSION,
    BuildInputs,
    cache_key,
    is_up_to_date,
    make_manifest,
)
from corral.runtime.images._mounts import mounts_under, parse_mountinfo
from corral.runtime.images._rootfs import parse_passwd, resolve_in_root, write_file
from corral.runtime.images._run import CommandLog, explain_failure
from corral.runtime.images._steps import pcd_files

INPUTS = BuildInputs(
    name="minimal",
    suite="bookworm",
    arch="amd64",
    recipe_path="/r/minimal.toml",
    recipe_digest="sha256:r1",
    pcd_version="0.1.0",
    pcd_digest="sha256:p1",
)


def _manifest() -> dict[str, object]:
    return make_manifest(
        INPUTS,
        digest="sha256:d",
        size_bytes=10,
        packages=[{"name": "xvfb", "version": "1"}],
        user={"name": "user", "uid": 1000, "gid": 1000, "home": "/home/user"},
        build_seconds=12.34,
        built_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_manifest_fields() -> None:
    m = _manifest()
    assert m["built_at"] == "2026-01-02T03:04:05Z"
    assert m["recipe"] == {"name": "minimal", "path": "/r/minimal.toml", "digest": "sha256:r1"}
    assert m["pcd"] == {"version": "0.1.0", "digest": "sha256:p1"}
    assert m["build_seconds"] == 12.3
    for key in ("name", "digest", "packages", "size_bytes", "suite", "arch", "user"):
        assert key in m


def test_up_to_date_only_for_identical_inputs() -> None:
    m = _manifest()
    assert is_up_to_date(m, INPUTS)
    assert not is_up_to_date(None, INPUTS)
    assert not is_up_to_date({}, INPUTS)
    for change in (
        {"recipe_digest": "sha256:r2"},
        {"pcd_digest": "sha256:p2"},
        {"suite": "trixie"},
        {"arch": "arm64"},
    ):
        changed = BuildInputs(**{**INPUTS.__dict__, **change})
        assert not is_up_to_date(m, changed)
    assert not is_up_to_date({**m, "builder": BUILDER_VERSION - 1}, INPUTS)


def test_cache_key_is_stable_and_sensitive() -> None:
    assert cache_key(a=1, b=[1, 2]) == cache_key(b=[1, 2], a=1)
    assert cache_key(a=1) != cache_key(a=2)
    assert len(cache_key(a=1)) == 64


def test_explain_failure_names_missing_packages() -> None:
    tail = [
        "Reading package lists...",
        "E: Unable to locate package no-such-pkg",
        "E: Package 'gone' has no installation candidate",
        "E: Unable to locate package no-such-pkg",
    ]
    assert explain_failure(tail) == "apt could not find package(s): no-such-pkg, gone"
    assert explain_failure(["E: something else"]) is None


def test_command_failure_carries_tail_and_log_path(tmp_path: Path) -> None:
    log = CommandLog(tmp_path / "logs" / "b.log")
    with pytest.raises(Exception) as exc:
        log.run(["sh", "-c", "for i in $(seq 1 50); do echo line$i; done; exit 3"], "step x")
    log.close()
    err = exc.value
    assert "step x failed (exit status 3)" in str(err)
    assert "line50" in str(err) and "line20" not in str(err)
    assert str(tmp_path / "logs" / "b.log") in (getattr(err, "hint", "") or "")


MOUNTINFO = r"""22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:5 / /dev rw - devtmpfs udev rw
40 22 0:40 / /var/lib/corral/images/.staging-ab/rootfs/proc rw - proc proc rw
41 22 0:41 / /var/lib/corral/images/.staging-ab/rootfs/var/cache/apt/archives rw - ext4 /dev/vda rw
42 22 0:42 / /var/lib/corral/images/.staging-abc/rootfs/proc rw - proc proc rw
43 22 0:43 / /tmp/with\040space rw - tmpfs tmpfs rw
"""


def test_parse_mountinfo_unescapes() -> None:
    points = parse_mountinfo(MOUNTINFO)
    assert points[0] == "/" and points[-1] == "/tmp/with space"


def test_mounts_under_is_prefix_safe_and_deepest_first() -> None:
    under = mounts_under(Path("/var/lib/corral/images/.staging-ab"), MOUNTINFO)
    assert under == [
        "/var/lib/corral/images/.staging-ab/rootfs/var/cache/apt/archives",
        "/var/lib/corral/images/.staging-ab/rootfs/proc",
    ]
    assert mounts_under(Path("/nowhere"), MOUNTINFO) == []


def test_parse_passwd() -> None:
    text = "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n"
    assert parse_passwd(text, "user") == (1000, 1000, "/home/user")
    assert parse_passwd(text, "nobody") is None


def test_writes_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    host = tmp_path / "host-etc"
    host.mkdir()
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "link-abs")  # absolute: means the image's /etc
    os.symlink(str(host), root / "etc" / "escape")  # would point at the host if followed
    assert resolve_in_root(root, "/link-abs/hostname") == root / "etc" / "hostname"
    assert resolve_in_root(root, "/etc/../../../etc/x") == root / "etc" / "x"
    write_file(root, "/link-abs/hostname", b"pc\n")
    assert (root / "etc" / "hostname").read_bytes() == b"pc\n"
    write_file(root, "/etc/escape/f", b"x")
    assert not (host / "f").exists()
    assert (root / str(host).lstrip("/") / "f").read_bytes() == b"x"
    os.symlink(str(host / "target"), root / "etc" / "replaced")
    write_file(root, "/etc/replaced", b"y", 0o600)
    assert not (root / "etc" / "replaced").is_symlink()
    assert not (host / "target").exists()
    assert (root / "etc" / "replaced").stat().st_mode & 0o777 == 0o600


def test_pcd_files_skips_caches(tmp_path: Path) -> None:
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.cpython-311.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.py").write_text("")
    (tmp_path / "main.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert pcd_files(tmp_path) == ["main.py", "sub/x.py"]
