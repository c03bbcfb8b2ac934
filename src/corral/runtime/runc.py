"""A thin driver for the `runc` binary: the only place that knows its command line."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from corral.errors import BootError, RuntimeFailureError

__all__ = ["Runc"]


class Runc:
    def __init__(self, root: Path, binary: str = "runc") -> None:
        self.root = root
        found = shutil.which(binary)
        if found is None:
            raise RuntimeFailureError(
                "runc is not installed",
                hint="install it with `apt-get install runc` (make up does)",
            )
        self.binary = found

    def _cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def run_detached(
        self, cid: str, bundle: Path, pid_file: Path, log: Path, listen_fd: int | None = None
    ) -> None:
        """Create and start container `cid` from `bundle`; its stdio goes to `log`.

        `listen_fd`, if given, is handed to the container's first process as fd 3 (runc's
        --preserve-fds): the host binds pcd's socket where the PC cannot reach and pcd only
        serves the descriptor it inherits.
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = self._cmd("run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file))
        if listen_fd is not None:
            argv += ["--preserve-fds", "1"]
        argv.append(cid)
        # The container inherits runc's stdio, so both go to the log file: a pipe would stay
        # open for the container's whole life. posix_spawn rather than subprocess: only it can
        # place the socket at exactly fd 3 in the child without a pre-exec hook.
        with open(log, "ab") as out, open(os.devnull, "rb") as null:
            start = out.tell()
            actions: list[tuple[int, int, int]] = [
                (os.POSIX_SPAWN_DUP2, null.fileno(), 0),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 2),
            ]
            if listen_fd is not None:
                # Above the stdio numbers first, so the dup2s above cannot clobber it and
                # dup2 to 3 always clears close-on-exec (it would not if it were already 3).
                high = fcntl.fcntl(listen_fd, fcntl.F_DUPFD_CLOEXEC, 10)
                actions.append((os.POSIX_SPAWN_DUP2, high, 3))
            try:
                pid = os.posix_spawn(self.binary, argv, dict(os.environ), file_actions=actions)
            finally:
                if listen_fd is not None:
                    os.close(high)
            returncode = _wait(pid, 60)
            if returncode is None:
                raise BootError(f"runc did not start PC {cid} within 60 s")
        if returncode != 0:
            with open(log, "rb") as fh:
                fh.seek(start)
                message = fh.read(4096).decode(errors="replace").strip()
            raise BootError(f"runc could not start PC {cid}: {message}")

    def state(self, cid: str) -> dict[str, Any] | None:
        """runc's view of `cid` (status, pid), or None if runc does not know it."""
        proc = subprocess.run(self._cmd("state", cid), capture_output=True, check=False, timeout=30)
        if proc.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def list_ids(self) -> list[str]:
        if not self.root.exists():
            return []
        proc = subprocess.run(
            self._cmd("list", "--format", "json"), capture_output=True, check=False, timeout=30
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            return []
        return [c["id"] for c in json.loads(proc.stdout) or []]

    def delete(self, cid: str, cgroup: str) -> None:
        """Kill every process of `cid`, wait until they are gone, and remove the container and
        its cgroup; quiet if already gone.

        runc returns once it has sent SIGKILL, while the kernel is still tearing processes
        down; callers (reset, destroy) promise that nothing of the PC runs any more, so wait on
        the cgroup until it is empty.
        """
        procs = _cgroup_procs_file(cgroup)
        subprocess.run(
            self._cmd("kill", "--all", cid, "KILL"), capture_output=True, check=False, timeout=60
        )
        deadline = time.monotonic() + 10
        while procs is not None and time.monotonic() < deadline:
            try:
                pids = procs.read_text().split()
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.002)
        subprocess.run(
            self._cmd("delete", "--force", cid), capture_output=True, check=False, timeout=60
        )


def _wait(pid: int, timeout: float) -> int | None:
    """Reap child `pid`; its exit code, or None (it is killed) if it runs over `timeout`."""
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
    finally:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _cgroup_procs_file(cgroup: str) -> Path | None:
    """The cgroup.procs file listing every process of `cgroup` (v1 pids hierarchy or v2)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        candidate = base / cgroup.lstrip("/") / "cgroup.procs"
        if candidate.exists():
            return candidate
    return None
