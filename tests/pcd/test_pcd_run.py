"""The `run` op: output, exit codes, deadlines, output caps, process groups."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from pcd_harness import Client, Daemon, wait_for


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for a reaper that is not pcd (on this host, PID 1)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_run_argv_captures_output_and_exit_code(client: Client) -> None:
    result = client.call("run", argv=["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result["exit_code"] == 3
    assert result["stdout"] == "out\n" and result["stderr"] == "err\n"
    assert result["stdout_truncated"] is False and result["stderr_truncated"] is False
    assert result["timed_out"] is False
    assert 0 < result["duration_ms"] < 5000


def test_run_argv_never_goes_through_a_shell(client: Client, tmp_path: Path) -> None:
    """argv mode (run_command's `argv`) execs the program itself: shell syntax in an argument is
    plain text, so no `;`, `|`, `$(...)` or `*` can start a second program."""
    marker = tmp_path / "ran"
    words = ["a; touch " + str(marker), "| touch " + str(marker), "$(touch " + str(marker) + ")"]
    result = client.call("run", argv=["echo", *words, "$HOME", "*"])
    assert result["exit_code"] == 0
    assert result["stdout"] == " ".join([*words, "$HOME", "*"]) + "\n"
    assert not marker.exists()
    # FOO=1 as argv[0] is a program name, not an assignment
    assert client.error("run", argv=["FOO=1", "true"]).code == "not_found"


def test_run_shell_stdin_env_cwd(client: Client, pcd: Daemon, tmp_path: Path) -> None:
    result = client.sh(
        'printf "%s|%s|%s|" "$FOO" "$DISPLAY" "$HOME"; pwd; cat',
        env={"FOO": "bar"},
        stdin="from stdin ✓",
    )
    assert result["stdout"] == f"bar|{pcd.display}|{pcd.home}|{pcd.home}\nfrom stdin ✓"
    assert client.call("run", argv=["pwd"], cwd=str(tmp_path))["stdout"] == f"{tmp_path}\n"
    (pcd.home / "sub").mkdir(exist_ok=True)
    assert client.call("run", argv=["pwd"], cwd="sub")["stdout"] == f"{pcd.home}/sub\n"


def test_run_large_stdin_does_not_deadlock(client: Client) -> None:
    data = "x" * 900_000  # much more than a pipe holds; the request line caps it at 1 MiB
    result = client.call("run", argv=["wc", "-c"], stdin=data)
    assert result["stdout"].strip() == str(len(data))


def test_run_decodes_invalid_utf8_with_replacement(client: Client) -> None:
    result = client.call("run", argv=["printf", "a\\377b"])
    assert result["stdout"] == "a\ufffdb"


def test_run_timeout_kills_the_whole_process_group(client: Client, tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    result = client.sh(f"sleep 60 & echo $! > {pidfile}; sleep 60", timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert result["timed_out"] is True and result["exit_code"] is None
    assert 450 <= result["duration_ms"] < 5000
    background = int(pidfile.read_text())
    wait_for(lambda: _dead(background), timeout=5)


def test_run_returns_when_the_command_exits_even_if_a_child_keeps_the_pipes(
    client: Client, tmp_path: Path
) -> None:
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    result = client.sh(f"sleep 30 & echo $! > {pidfile}; echo done", timeout_s=20)
    assert time.monotonic() - started < 3
    assert result["exit_code"] == 0 and result["stdout"] == "done\n"
    assert result["timed_out"] is False
    os.kill(int(pidfile.read_text()), 9)


def test_run_caps_output_and_keeps_draining(client: Client) -> None:
    started = time.monotonic()
    result = client.sh(
        "head -c 5000000 /dev/zero | tr '\\0' a; head -c 3000 /dev/zero >&2", max_output=1000
    )
    assert time.monotonic() - started < 10
    assert result["exit_code"] == 0  # the writer was never blocked or killed
    assert result["stdout_truncated"] is True and result["stderr_truncated"] is True
    assert result["stdout"] == "a" * 1000 + "\n[corral: output cut at 1000 bytes]"
    assert result["stderr"].startswith("\0" * 1000 + "\n[corral: output cut at 1000 bytes]")
    small = client.call("run", argv=["echo", "hi"], max_output=3)
    assert small["stdout"] == "hi\n" and small["stdout_truncated"] is False


def test_run_signal_exit_is_negative(client: Client) -> None:
    assert client.sh("kill -TERM $$")["exit_code"] == -15


def test_run_missing_program_is_not_found(client: Client) -> None:
    err = client.error("run", argv=["/no/such/program"])
    assert err.code == "not_found" and "/no/such/program" in err.message
    assert client.error("run", argv=["no-such-program-xyz"]).code == "not_found"
    assert client.error("run", argv=["true"], cwd="/no/such/dir").code == "not_found"


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"argv": ["true"], "shell": "true"},
        {"argv": []},
        {"argv": "true"},
        {"argv": ["tr", "ue\0"]},
        {"argv": ["true"], "timeout_s": 0},
        {"argv": ["true"], "timeout_s": 601},
        {"argv": ["true"], "timeout_s": "5"},
        {"argv": ["true"], "max_output": -1},
        {"argv": ["true"], "max_output": (16 << 20) + 1},
        {"argv": ["true"], "env": {"A": 1}},
        {"argv": ["true"], "env": ["A=1"]},
        {"argv": ["true"], "stdin": 5},
        {"argv": ["true"], "timeout": 5},
    ],
)
def test_run_rejects_bad_args(client: Client, args: dict[str, Any]) -> None:
    assert client.error("run", **args).code == "bad_request"


def test_run_true_is_fast(client: Client) -> None:
    samples = []
    for _ in range(30):
        started = time.perf_counter()
        client.call("run", argv=["true"])
        samples.append(time.perf_counter() - started)
    samples.sort()
    assert samples[15] < 0.05, f"median run true {samples[15] * 1000:.1f} ms"
