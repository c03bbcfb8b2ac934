"""PC lifecycle on real PCs: boot, act, reset, destroy, restart, and bad input."""

from __future__ import annotations

import json
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import pytest

from corral.errors import (
    DiskFullError,
    ImageNotFoundError,
    InvalidInputError,
    PCNotFoundError,
    PCUnavailableError,
)
from corral.runtime.pcs import PCInfo, PCRuntime

from ._host import snapshot
from .conftest import TEST_IMAGE, CorralCLI


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", png[16:24])
    assert zlib.crc32(png[12:29]) == struct.unpack(">I", png[29:33])[0]
    return width, height


def test_boot_gives_a_healthy_desktop(rt: PCRuntime, pc: PCInfo) -> None:
    assert pc.status == "ready" and pc.pid
    assert pc.id in [p.id for p in rt.list_pcs()]
    assert rt.health(pc.id).ok
    with rt.client(pc.id) as client:
        shot = client.screenshot()
        assert _png_size(shot.png) == (1280, 800) == (shot.width, shot.height)
        scaled = client.screenshot(max_width=1024, max_height=768)
        assert _png_size(scaled.png) == (1024, 640) and scaled.scale == pytest.approx(0.8)
        who = client.run(["id", "-un"])
        assert (who.exit_code, who.stdout.strip()) == (0, "user")


def test_input_reaches_the_desktop(rt: PCRuntime, pc: PCInfo) -> None:
    with rt.client(pc.id) as client:
        client.mouse_move(321, 123)
        where = client.run(["xdotool", "getmouselocation", "--shell"]).stdout
        assert "X=321" in where and "Y=123" in where
        client.clipboard_set("héllo ✓ 日本")
        assert client.clipboard_get() == "héllo ✓ 日本"
        client.launch(["xterm", "-T", "corral-test-term", "-e", "sh"])
        deadline = time.monotonic() + 10
        while not any(w["title"] == "corral-test-term" for w in client.list_windows()):
            assert time.monotonic() < deadline, "the launched xterm never showed a window"
            time.sleep(0.05)
        win = next(w for w in client.list_windows() if w["title"] == "corral-test-term")
        client.focus_window(win["id"])
        client.type_text("echo ok > ~/typed.txt\n")
        deadline = time.monotonic() + 10
        while client.run(["cat", "typed.txt"]).stdout.strip() != "ok":
            assert time.monotonic() < deadline, "typed text never ran in the terminal"
            time.sleep(0.05)


def test_files_are_confined_to_home_and_tmp(rt: PCRuntime, pc: PCInfo) -> None:
    with rt.client(pc.id) as client:
        client.write_file("notes/a.txt", "ünïcode".encode(), mkdirs=True)
        assert client.read_file("/home/user/notes/a.txt") == "ünïcode".encode()
        assert [e["name"] for e in client.list_dir("notes")] == ["a.txt"]
        client.run(["ln", "-s", "/etc", "/home/user/etc-link"])
        for bad in ("/etc/passwd", "../../etc/passwd", "etc-link/passwd", "/proc/1/environ"):
            with pytest.raises(InvalidInputError) as info:
                client.read_file(bad)
            assert info.value.code == "path_not_allowed", bad
        with pytest.raises(InvalidInputError):
            client.write_file("/usr/bin/evil", b"x")


def _upper_layer(state_root: Path, pc_id: str) -> set[str]:
    """What the PC has written on top of its image, seen from the host, once the desktop has
    settled: the window manager writes its log and then, a moment later, its session folder,
    both after the desktop is ready (CI once saw the second one arrive between two looks)."""
    upper = state_root / "pcs" / pc_id / "upperfs" / "upper"
    settled = ("home/user/.cache/openbox/openbox.log", "home/user/.cache/openbox/sessions")
    deadline = time.monotonic() + 10
    while not all((upper / path).exists() for path in settled):
        assert time.monotonic() < deadline, "the window manager never finished starting"
        time.sleep(0.01)
    return {str(p.relative_to(upper)) for p in upper.rglob("*")}


def test_reset_returns_exactly_to_the_image(rt: PCRuntime, pc: PCInfo, state_root: Path) -> None:
    fresh_upper = _upper_layer(state_root, pc.id)
    with rt.client(pc.id) as client:
        fresh_home = client.run(["ls", "-A", "/home/user"]).stdout.split()
        client.write_file("secret.txt", b"from session one")
        client.write_file("/tmp/also", b"x")
        client.launch(["sleep", "12345"])
        assert "sleep 12345" in json.dumps(client.processes())
    upper_before = _upper_layer(state_root, pc.id)
    rt.reset(pc.id)
    after = rt.info(pc.id)
    assert after.status == "ready" and after.pid != pc.pid
    assert "home/user/secret.txt" in upper_before
    assert _upper_layer(state_root, pc.id) == fresh_upper
    with rt.client(pc.id) as client:
        assert client.run(["ls", "-A", "/home/user"]).stdout.split() == fresh_home
        assert client.run(["test", "-e", "/tmp/also"]).exit_code == 1
        assert "sleep 12345" not in json.dumps(client.processes())
    assert rt.health(pc.id).ok


def test_destroy_leaves_nothing_behind(rt: PCRuntime, state_root: Path) -> None:
    before = snapshot(state_root, state_root / "runc")
    info = rt.boot(TEST_IMAGE)
    during = snapshot(state_root, state_root / "runc")
    assert during.mounts > before.mounts and during.pc_processes > before.pc_processes
    assert during.uid_slots > before.uid_slots
    assert during.cgroups > before.cgroups and during.netns > before.netns
    rt.destroy(info.id)
    after = snapshot(state_root, state_root / "runc")
    assert after == before
    with pytest.raises(PCNotFoundError):
        rt.info(info.id)


def test_cli_boot_exec_screenshot_reset_destroy(corral_cli: CorralCLI, tmp_path: Path) -> None:
    boot = corral_cli("pc", "boot", "--image", TEST_IMAGE)
    assert boot.returncode == 0, boot.stderr
    pc_id = boot.stdout.strip()
    assert pc_id.startswith("pc-")
    listed = corral_cli("pc", "list")
    assert pc_id in listed.stdout
    ran = corral_cli("pc", "exec", pc_id, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    slow = corral_cli("pc", "exec", pc_id, "--timeout", "1", "--", "sleep", "30")
    assert slow.returncode == 124 and "timed out" in slow.stderr
    big = corral_cli(
        "pc",
        "exec",
        pc_id,
        "--max-output",
        "1000",
        "--",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero | tr '\\0' a",
    )
    assert big.returncode == 0, big.stderr
    assert big.stdout.startswith("a" * 1000) and "output cut" in big.stdout
    assert len(big.stdout) < 2000
    shot = corral_cli("pc", "screenshot", pc_id, "-o", str(tmp_path / "s.png"))
    assert shot.returncode == 0, shot.stderr
    assert _png_size((tmp_path / "s.png").read_bytes()) == (1280, 800)
    assert corral_cli("pc", "reset", pc_id).returncode == 0
    assert corral_cli("pc", "health", pc_id).returncode == 0
    assert corral_cli("pc", "destroy", pc_id).returncode == 0
    assert pc_id not in corral_cli("pc", "list").stdout


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("pc", "boot", "--image", "no-such-image"), 3, "no image named"),
        (("pc", "boot", "--image", TEST_IMAGE, "--size", "huge"), 2, "unknown PC size"),
        (("pc", "boot", "--image", TEST_IMAGE, "--screen", "10x10x24"), 2, "out of range"),
        (("pc", "exec", "pc-nope", "--", "true"), 3, "no PC with id"),
        (("pc", "reset", "pc-nope"), 3, "no PC with id"),
        (("pc", "destroy", "../../etc"), 3, "no PC with id"),
        (("pc", "screenshot", "pc-nope", "-o", "/tmp/x.png"), 3, "no PC with id"),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_nothing(
    corral_cli: CorralCLI, state_root: Path, args: tuple[str, ...], code: int, text: str
) -> None:
    before = snapshot(state_root, state_root / "runc")
    result = corral_cli(*args)
    assert result.returncode == code, result.stderr
    assert text in result.stderr
    assert snapshot(state_root, state_root / "runc") == before


def test_unknown_image_and_size_from_python(rt: PCRuntime) -> None:
    with pytest.raises(ImageNotFoundError):
        rt.boot("no-such-image")
    with pytest.raises(InvalidInputError):
        rt.boot(TEST_IMAGE, size="tiny")


def test_command_not_found_and_bad_key_are_clear(rt: PCRuntime, pc: PCInfo) -> None:
    with rt.client(pc.id) as client:
        with pytest.raises(Exception, match="no-such-program"):
            client.run(["no-such-program"])
        with pytest.raises(InvalidInputError, match="NoSuchKey"):
            client.press_keys("ctrl+NoSuchKey")
        with pytest.raises(InvalidInputError):
            client.click(-1, 5)
        with pytest.raises(InvalidInputError):
            client.click(5000, 5)
        assert client.health()["x"]


def test_full_disk_is_a_clear_error_and_the_pc_survives(rt: PCRuntime, pc: PCInfo) -> None:
    with rt.client(pc.id) as client:
        fill = client.run(["dd", "if=/dev/zero", "of=/home/user/fill", "bs=1M"], timeout_s=120)
        assert fill.exit_code != 0 and "No space left" in fill.stderr
        with pytest.raises(DiskFullError):
            client.write_file("more.bin", b"x" * 1_000_000)
        assert client.health()["x"]
    rt.reset(pc.id)
    with rt.client(pc.id) as client:
        assert client.run(["test", "-e", "/home/user/fill"]).exit_code == 1


def test_dead_pc_is_reported_and_cleaned_up(rt: PCRuntime, state_root: Path) -> None:
    before = snapshot(state_root, state_root / "runc")
    info = rt.boot(TEST_IMAGE)
    assert info.pid
    os.kill(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while rt.info(info.id).status != "dead":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not rt.health(info.id).ok
    with pytest.raises(PCUnavailableError), rt.client(info.id) as client:
        client.run(["true"])
    assert info.id in rt.reconcile()
    assert snapshot(state_root, state_root / "runc") == before


def test_restart_finds_running_pcs_and_cleans_half_made_ones(
    rt: PCRuntime, pc: PCInfo, state_root: Path
) -> None:
    fresh = PCRuntime(state_root)  # a new process would build exactly this from disk
    assert fresh.info(pc.id).status == "ready"
    assert fresh.health(pc.id).ok
    half = state_root / "pcs" / "pc-halfmade01"
    (half / "rootfs").mkdir(parents=True)
    old = time.time() - 3600
    (half / "state.json").write_text(
        json.dumps(
            {
                "id": "pc-halfmade01",
                "image": TEST_IMAGE,
                "image_digest": "sha256:0",
                "image_rootfs": "/nonexistent",
                "size": "small",
                "screen": "1280x800x24",
                "slot": 4000,
                "status": "booting",
                "created_at": old,
            }
        )
    )
    cleaned = fresh.reconcile()
    assert "pc-halfmade01" in cleaned and not half.exists()
    assert pc.id not in cleaned and fresh.health(pc.id).ok


def test_concurrent_boots_get_private_uid_ranges(rt: PCRuntime, state_root: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        pcs = list(pool.map(lambda _: rt.boot(TEST_IMAGE), range(3)))
    try:
        owners = set()
        for info in pcs:
            with rt.client(info.id) as client:
                assert client.run(["true"]).exit_code == 0
            owners.add(os.stat(f"/proc/{info.pid}").st_uid)
        assert len(owners) == 3  # each PC's desktop user is a different host uid
    finally:
        for info in pcs:
            rt.destroy(info.id)
