"""`run`: one command in its own session and process group, with a deadline and bounded output.

Output beyond the cap is read and thrown away so the child never blocks on a full pipe. When
the command itself exits, pcd stops reading shortly after, even if a background grandchild still
holds the pipes open; on timeout the whole process group is killed.
"""

from __future__ import annotations

import errno
import os
import selectors
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from .args import Args
from .children import Children, kill_group
from .context import Context
from .errors import bad_request

DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600.0
DEFAULT_OUTPUT = 1 << 20
MAX_OUTPUT = 16 << 20
MAX_STDIN = 16 << 20
_LINGER_S = 0.1  # after the command exits, how long to wait for pipes still held open
_CHUNK = 1 << 16


@dataclass
class Stream:
    cap: int
    data: bytearray
    total: int = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        if self.truncated:
            out += f"\n[corral: output cut at {self.cap} bytes]"
        return out


@dataclass
class Outcome:
    exit_code: int | None
    stdout: Stream
    stderr: Stream
    timed_out: bool
    duration_ms: float


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:  # old kernel or seccomp: fall back to polling
        return None


class _Feeder:
    """Writes stdin without blocking; closes it when done or when the child stops reading."""

    def __init__(self, fd: int, data: bytes) -> None:
        self.fd: int | None = fd
        self.pending = memoryview(data)
        os.set_blocking(fd, False)

    def write(self, sel: selectors.BaseSelector) -> None:
        assert self.fd is not None
        try:
            written = os.write(self.fd, self.pending[:_CHUNK])
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EINVAL):
                raise
            written = len(self.pending)
        self.pending = self.pending[written:]
        if not self.pending:
            sel.unregister(self.fd)
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def execute(
    children: Children,
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    stdin: bytes | None,
    timeout: float,
    cap: int,
) -> Outcome:
    """Run argv to completion or timeout; never holds more than `cap` bytes per stream."""
    started = time.monotonic()
    deadline = started + timeout
    proc = children.spawn(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Stream(cap, bytearray()), Stream(cap, bytearray())
    open_streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    pidfd = _pidfd(proc.pid)
    timed_out = False
    exited_at: float | None = None
    feeder: _Feeder | None = None
    try:
        with selectors.DefaultSelector() as sel:
            for fd in open_streams:
                sel.register(fd, selectors.EVENT_READ)
            if pidfd is not None:
                sel.register(pidfd, selectors.EVENT_READ)
            if proc.stdin is not None:
                # Feed stdin from this loop (not a thread), through our own copy of its fd.
                stdin_fd = os.dup(proc.stdin.fileno())
                proc.stdin.close()
                proc.stdin = None
                feeder = _Feeder(stdin_fd, stdin or b"")
                sel.register(stdin_fd, selectors.EVENT_WRITE)
            while open_streams:
                now = time.monotonic()
                if exited_at is None and pidfd is None and proc.poll() is not None:
                    exited_at = now
                if now >= deadline:
                    timed_out = exited_at is None
                    break
                if exited_at is not None and now >= exited_at + _LINGER_S:
                    break
                wait = deadline - now
                if exited_at is not None:
                    wait = min(wait, exited_at + _LINGER_S - now)
                elif pidfd is None:
                    wait = min(wait, 0.01)
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    if fd == pidfd:
                        sel.unregister(fd)
                        exited_at = time.monotonic()
                    elif fd in open_streams:
                        chunk = os.read(fd, _CHUNK)
                        if chunk:
                            open_streams[fd].feed(chunk)
                        else:
                            sel.unregister(fd)
                            del open_streams[fd]
                    elif feeder is not None:
                        feeder.write(sel)
        if not timed_out:
            try:
                # The command may have closed its output and still be running.
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if feeder is not None:
            feeder.close()
        if timed_out:
            kill_group(proc.pid)
        proc.wait()
        children.forget(proc)
        proc.stdout.close()
        proc.stderr.close()
    return Outcome(
        None if timed_out else proc.returncode,
        out,
        err,
        timed_out,
        (time.monotonic() - started) * 1000,
    )


def run(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    argv = args.opt_str_list("argv", max_items=10_000, max_len=1 << 20)
    shell = args.opt_str("shell", max_len=1 << 20)
    if (argv is None) == (shell is None):
        raise bad_request(
            "run: give exactly one of 'argv' (a list of strings) or 'shell' "
            "(a string run by /bin/sh -c)"
        )
    if shell is not None:
        if "\0" in shell:
            raise bad_request("run: 'shell' must not contain NUL")
        argv = ["/bin/sh", "-c", shell]
    assert argv is not None
    timeout = args.get_float("timeout_s", default=DEFAULT_TIMEOUT_S, lo=0.001, hi=MAX_TIMEOUT_S)
    cap = args.get_int("max_output", default=DEFAULT_OUTPUT, lo=0, hi=MAX_OUTPUT)
    cwd = args.opt_str("cwd", max_len=4096) or ctx.home
    if not os.path.isabs(cwd):
        cwd = os.path.join(ctx.home, cwd)
    env = dict(ctx.env)
    env.update(args.opt_str_map("env", max_items=1000) or {})
    stdin = args.opt_str("stdin", max_len=MAX_STDIN)
    outcome = execute(
        ctx.children,
        argv,
        cwd=cwd,
        env=env,
        stdin=stdin.encode(errors="replace") if stdin else None,
        timeout=timeout,
        cap=cap,
    )
    return {
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout.text(),
        "stderr": outcome.stderr.text(),
        "stdout_truncated": outcome.stdout.truncated,
        "stderr_truncated": outcome.stderr.truncated,
        "timed_out": outcome.timed_out,
        "duration_ms": round(outcome.duration_ms, 3),
    }, b""
