"""File ops: confined to $HOME and /tmp, no symlink escapes, atomic writes."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pcd_harness import PKG_PARENT, Client, Daemon


@pytest.fixture
def tmpdir_in_tmp(tmp_path: Path) -> Path:
    assert str(tmp_path).startswith("/tmp/")
    return tmp_path


def test_write_read_round_trip(client: Client, pcd: Daemon) -> None:
    data = bytes(range(256)) * 1000
    result = client.call("write_file", data, path="docs/data.bin", mkdirs=True)
    assert result == {"size": len(data), "path": f"{pcd.home}/docs/data.bin"}
    assert (pcd.home / "docs" / "data.bin").read_bytes() == data
    meta, blob = client.call_blob("read_file", path="~/docs/data.bin")
    assert blob == data and meta == {"size": len(data), "path": f"{pcd.home}/docs/data.bin"}
    assert client.call_blob("read_file", path=f"{pcd.home}/docs/./data.bin")[1] == data


def test_write_empty_file_mode_and_append(client: Client, pcd: Daemon) -> None:
    assert client.call("write_file", path="empty.txt")["size"] == 0
    assert (pcd.home / "empty.txt").read_bytes() == b""
    client.call("write_file", b"secret", path="secret.txt", mode=0o600)
    assert stat.S_IMODE(os.stat(pcd.home / "secret.txt").st_mode) == 0o600
    client.call("write_file", b"one\n", path="log.txt")
    assert stat.S_IMODE(os.stat(pcd.home / "log.txt").st_mode) == 0o644
    assert client.call("write_file", b"two\n", path="log.txt", append=True)["size"] == 8
    assert (pcd.home / "log.txt").read_bytes() == b"one\ntwo\n"
    client.call("write_file", b"new\n", path="fresh.log", append=True, mode=0o640)
    assert stat.S_IMODE(os.stat(pcd.home / "fresh.log").st_mode) == 0o640


def test_write_in_tmp(client: Client, tmpdir_in_tmp: Path) -> None:
    target = tmpdir_in_tmp / "in-tmp.txt"
    client.call("write_file", b"tmp data", path=str(target))
    assert target.read_bytes() == b"tmp data"
    assert client.call_blob("read_file", path=str(target))[1] == b"tmp data"


def test_write_is_atomic(client: Client, pcd: Daemon) -> None:
    target = pcd.home / "atomic.bin"
    old, new = b"a" * (8 << 20), b"b" * (8 << 20)
    client.call("write_file", old, path="atomic.bin")
    inode = os.stat(target).st_ino
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            seen.add(data[:1] + bytes([len(data) == len(old)]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for content in (new, old, new):
            client.call("write_file", content, path="atomic.bin")
    finally:
        stop.set()
        thread.join()
    assert seen <= {b"a\x01", b"b\x01"}  # always a whole old or whole new file
    assert target.read_bytes() == new
    assert os.stat(target).st_ino != inode  # replaced by rename, not rewritten in place
    assert not [p for p in os.listdir(pcd.home) if "corral-tmp" in p]


def test_list_dir(client: Client, pcd: Daemon) -> None:
    base = pcd.home / "listing"
    (base / "sub").mkdir(parents=True)
    (base / "file.txt").write_bytes(b"12345")
    (base / "link").symlink_to("/etc/passwd")
    os.mkfifo(base / "fifo")
    result = client.call("list_dir", path="listing")
    assert result["path"] == str(base)
    entries = {e["name"]: e for e in result["entries"]}
    assert [e["name"] for e in result["entries"]] == sorted(entries)
    assert {name: e["type"] for name, e in entries.items()} == {
        "sub": "dir",
        "file.txt": "file",
        "link": "symlink",
        "fifo": "other",
    }
    assert entries["file.txt"]["size"] == 5
    assert entries["file.txt"]["mtime"] == pytest.approx(os.stat(base / "file.txt").st_mtime)
    home = client.call("list_dir", path="~")
    assert home["path"] == str(pcd.home) and "listing" in {e["name"] for e in home["entries"]}
    assert client.call("list_dir", path="/tmp")["path"] == "/tmp"


def test_file_errors(client: Client, pcd: Daemon) -> None:
    (pcd.home / "adir").mkdir(exist_ok=True)
    (pcd.home / "afile").write_bytes(b"x" * 100)
    os.mkfifo(pcd.home / "afifo")
    assert client.error("read_file", path="missing.txt").code == "not_found"
    assert client.error("read_file", path="adir").code == "is_directory"
    assert client.error("read_file", path="~").code == "is_directory"
    assert client.error("read_file", path="afifo").code == "bad_request"  # and no hang
    assert client.error("read_file", path="afile", max_bytes=99).code == "too_large"
    assert client.call_blob("read_file", path="afile", max_bytes=100)[1] == b"x" * 100
    assert client.error("read_file", path="afile", max_bytes=(64 << 20) + 1).code == "bad_request"
    assert client.error("read_file", path="afile/inner").code == "not_directory"
    assert client.error("list_dir", path="afile").code == "not_directory"
    assert client.error("list_dir", path="nowhere").code == "not_found"
    assert client.error("write_file", b"x", path="adir").code == "is_directory"
    assert client.error("write_file", b"x", path="no/such/dir/f").code == "not_found"
    assert client.error("write_file", b"x", path="f", mode=0o10000).code == "bad_request"
    assert client.error("write_file", b"x", path="").code == "bad_request"
    assert client.error("write_file", b"x", path="f", append="yes").code == "bad_request"
    assert client.error("read_file").code == "bad_request"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../../etc/passwd",
        "/tmp/../etc/passwd",
        "~/../../etc/passwd",
        "/",
        "/home",
        "/tmpfoo/x",
        "/proc/self/environ",
        "docs/../../x",
    ],
)
def test_paths_outside_home_and_tmp_are_refused(client: Client, path: str) -> None:
    for op, blob, args in (
        ("read_file", b"", {}),
        ("list_dir", b"", {}),
        ("write_file", b"x", {"mkdirs": True}),
    ):
        err = client.error(op, blob, path=path, **args)
        assert err.code == "path_not_allowed", (op, path, err)
        assert "/tmp" in err.message


def test_symlinks_are_never_followed(client: Client, pcd: Daemon) -> None:
    (pcd.home / "etc-link").symlink_to("/etc")
    (pcd.home / "passwd-link").symlink_to("/etc/passwd")
    (pcd.home / "inner").mkdir()
    (pcd.home / "inner" / "real.txt").write_text("real")
    (pcd.home / "inner-link").symlink_to(pcd.home / "inner")  # even inside home
    victim = pcd.home / "victim.txt"
    victim.write_text("untouched")
    (pcd.home / "victim-link").symlink_to(victim)
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("read_file", b"", {"path": "etc-link/passwd"}),
        ("read_file", b"", {"path": "passwd-link"}),
        ("read_file", b"", {"path": "inner-link/real.txt"}),
        ("list_dir", b"", {"path": "etc-link"}),
        ("list_dir", b"", {"path": "inner-link"}),
        ("write_file", b"x", {"path": "etc-link/evil"}),
        ("write_file", b"x", {"path": "etc-link/new/evil", "mkdirs": True}),
        ("write_file", b"pwned", {"path": "victim-link"}),
        ("write_file", b"pwned", {"path": "victim-link", "append": True}),
    ]
    for op, blob, args in cases:
        err = client.error(op, blob, **args)
        assert err.code == "path_not_allowed", (op, args, err)
        assert "symlink" in err.message
    assert victim.read_text() == "untouched"
    assert not (Path("/etc") / "evil").exists()
    assert client.call_blob("read_file", path="inner/real.txt")[1] == b"real"


def test_error_mapping_for_a_full_disk() -> None:
    """ENOSPC/EDQUOT cannot be provoked without root; check the mapping write_file uses."""
    sys.path.insert(0, str(PKG_PARENT))
    try:
        if TYPE_CHECKING:  # the same file, which mypy knows by its package name
            from corral.pcd.errors import from_oserror
        else:  # imported top-level, as a PC's python imports it
            from pcd.errors import from_oserror
    finally:
        sys.path.remove(str(PKG_PARENT))
    import errno

    for number in (errno.ENOSPC, errno.EDQUOT):
        err = from_oserror(OSError(number, os.strerror(number)), "/home/user/f")
        assert err.code == "disk_full" and "/home/user/f" in err.message
