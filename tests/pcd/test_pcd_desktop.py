"""Clipboard, windows, launching programs, processes, and the daemon's own lifecycle."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pcd_harness import Client, Daemon, find_window, wait_for


def _xclips(client: Client, parent: int) -> list[dict[str, Any]]:
    return [
        p
        for p in client.call("processes")["processes"]
        if p["cmd"].startswith("xclip ") and p["ppid"] == parent
    ]


def test_clipboard_round_trip(client: Client, pcd: Daemon) -> None:
    for text in ("héllo ✓ 日本\nsecond line\ttab", "plain", "x" * 200_000, ""):
        client.call("clipboard_set", text=text)
        assert client.call("clipboard_get")["text"] == text
    # Another X client sees it too.
    client.call("clipboard_set", text="for others")
    out = subprocess.run(
        ["xclip", "-selection", "clipboard", "-o"],
        env=pcd.x_env(),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert out == "for others"
    # Each set replaces the previous owner, which exits and is reaped: no pile-up.
    time.sleep(0.3)
    assert len(_xclips(client, pcd.pid)) == 1
    assert not [
        p
        for p in client.call("processes")["processes"]
        if p["ppid"] == pcd.pid and p["cmd"] == "[xclip]"
    ]  # no zombies


def test_clipboard_get_when_empty(fresh_pcd: Daemon) -> None:
    with fresh_pcd.client() as c:
        assert c.call("clipboard_get") == {"text": ""}
        assert c.error("clipboard_set").code == "bad_request"


def test_launch_list_and_focus_windows(client: Client, pcd: Daemon) -> None:
    first = client.call("launch", argv=["xterm", "-T", "win-one"])
    second = client.call("launch", argv=["xterm", "-T", "win-two"])
    try:
        one = find_window(client, "win-one", with_pid=True)
        two = find_window(client, "win-two", with_pid=True)
        assert one["pid"] == first["pid"] and two["pid"] == second["pid"]
        assert one["id"].startswith("0x") and one["id"] != two["id"]
        for w in (one, two):
            assert w["width"] > 100 and w["height"] > 100
            assert 0 <= w["x"] < 1280 and 0 <= w["y"] < 800
            assert w["desktop"] == 0 and w["visible"] is True
        for target in (one, two, one):
            assert client.call("focus_window", id=target["id"]) == {
                "id": target["id"],
                "focused": True,
            }
            windows = {w["id"]: w for w in client.call("list_windows")["windows"]}
            assert windows[target["id"]]["focused"] is True
            assert sum(w["focused"] for w in windows.values()) == 1
            active = subprocess.run(
                ["xdotool", "getactivewindow"],
                env=pcd.x_env(),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert int(active) == int(target["id"], 16)
        assert Path(first["log"]).exists() and first["log"].startswith("/tmp/")
    finally:
        os.kill(first["pid"], signal.SIGKILL)
        os.kill(second["pid"], signal.SIGKILL)
    wait_for(
        lambda: (
            not {"win-one", "win-two"}
            & {w["title"] for w in client.call("list_windows")["windows"]}
        )
    )


def test_focus_window_errors(client: Client) -> None:
    assert client.error("focus_window", id="0x7fffff0").code == "not_found"
    assert client.error("focus_window", id="window-1").code == "bad_request"
    assert client.error("focus_window").code == "bad_request"


def test_launch_is_detached_and_reaped(client: Client, pcd: Daemon, tmp_path: Path) -> None:
    marker = tmp_path / "launched"
    result = client.call("launch", argv=["sh", "-c", f'echo "$DISPLAY" > {marker}; echo log'])
    wait_for(marker.exists)
    assert marker.read_text().strip() == pcd.display
    assert wait_for(lambda: Path(result["log"]).read_text()) == "log\n"
    wait_for(lambda: not Path(f"/proc/{result['pid']}").exists())  # reaped, no zombie

    sleeper = client.call("launch", argv=["sleep", "30"])
    procs = {p["pid"]: p for p in client.call("processes")["processes"]}
    assert procs[sleeper["pid"]]["ppid"] == pcd.pid
    assert os.getsid(sleeper["pid"]) == sleeper["pid"]  # its own session
    os.kill(sleeper["pid"], signal.SIGKILL)


def test_launch_errors(client: Client) -> None:
    assert client.error("launch", argv=["/no/such/app"]).code == "not_found"
    assert client.error("launch", argv=[]).code == "bad_request"
    assert client.error("launch").code == "bad_request"


def test_open_url(client: Client) -> None:
    for url in (
        "javascript:alert(1)",
        "ftp://example.com/",
        "chrome://settings",
        "",
        "http://x/\nfoo",
    ):
        assert client.error("open_url", url=url).code == "bad_request"
    if not os.path.exists("/usr/bin/chromium"):
        err = client.error("open_url", url="https://example.com/")
        assert err.code == "unsupported" and "desktop image" in err.message
        return
    result = client.call("open_url", url="about:blank")
    try:
        window = wait_for(
            lambda: [
                w
                for w in client.call("list_windows")["windows"]
                if "chromium" in w["title"].lower() or w["pid"] == result["pid"]
            ],
            timeout=30,
        )
        assert window
    finally:
        os.killpg(result["pid"], signal.SIGKILL)


def test_processes(client: Client, pcd: Daemon) -> None:
    procs = client.call("processes")["processes"]
    by_pid = {p["pid"]: p for p in procs}
    me = by_pid[pcd.pid]
    assert "pcd.main" in me["cmd"] and me["user"]
    children = [p for p in procs if p["ppid"] == pcd.pid]
    assert any(p["cmd"].startswith("Xvfb") for p in children)
    assert any(p["cmd"] == "openbox" for p in children)
    assert all(set(p) == {"pid", "ppid", "user", "cmd"} for p in procs)


# -- lifecycle (each test has a daemon of its own) --------------------------------------------


def test_sigterm_stops_everything(fresh_pcd: Daemon) -> None:
    with fresh_pcd.client() as c:
        children = [
            p["pid"] for p in c.call("processes")["processes"] if p["ppid"] == fresh_pcd.pid
        ]
        sleeper = c.call("launch", argv=["sleep", "60"])["pid"]
        assert children
    assert fresh_pcd.stop() == 0
    assert not fresh_pcd.socket.exists()
    for pid in [*children, sleeper]:
        assert (
            not Path(f"/proc/{pid}").exists()
            or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        )


def test_pcd_exits_when_xvfb_dies(fresh_pcd: Daemon) -> None:
    with fresh_pcd.client() as c:
        xvfb = next(
            p["pid"]
            for p in c.call("processes")["processes"]
            if p["ppid"] == fresh_pcd.pid and p["cmd"].startswith("Xvfb")
        )
    os.kill(xvfb, signal.SIGKILL)
    assert fresh_pcd.proc.wait(10) == 1
    assert "Xvfb exited" in fresh_pcd.log()


def test_health_reports_a_hung_x_server(fresh_pcd: Daemon) -> None:
    with fresh_pcd.client() as c:
        xvfb = next(
            p["pid"]
            for p in c.call("processes")["processes"]
            if p["ppid"] == fresh_pcd.pid and p["cmd"].startswith("Xvfb")
        )
        os.kill(xvfb, signal.SIGSTOP)
        try:
            started = time.monotonic()
            health = c.call("health")
            assert time.monotonic() - started < 3
            assert health["x"] is False and health["pid"] == fresh_pcd.pid
        finally:
            os.kill(xvfb, signal.SIGCONT)
        assert c.call("health")["x"] is True


def test_boot_is_fast_and_needs_no_window_manager(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, "--wm", "none")
    try:
        assert daemon.boot_s < 2.0, f"boot took {daemon.boot_s:.3f} s"
        with daemon.client() as c:
            assert c.call("health")["wm"] is False
            launched = c.call("launch", argv=["xterm", "-T", "no-wm"])
            window = find_window(c, "no-wm")  # listed without an EWMH window manager
            assert c.call("focus_window", id=window["id"])["focused"] is True
            os.kill(launched["pid"], signal.SIGKILL)
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("argv", [["--bogus"], ["--geometry", "12x"], ["--socket"]])
def test_bad_command_line(tmp_path: Path, argv: list[str]) -> None:
    from pcd_harness import BOOT, PKG_PARENT, SYSTEM_PYTHON

    proc = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", BOOT, str(PKG_PARENT), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0 and "pcd:" in proc.stderr
