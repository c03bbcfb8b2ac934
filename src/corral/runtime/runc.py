"""A thin driver for the `runc` binary: the only place that knows its command line."""

from __future__ import annotations

import contextlib
import json
import os
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

    def run_detached(self, cid: str, bundle: Path, pid_file: Path, log: Path) -> None:
        """Create and start container `cid` from `bundle`; its stdio goes to `log`."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The container inherits runc's stdio, so both go to the log file: a pipe would stay
        # open for the container's whole life.
        with open(log, "ab") as out:
            start = out.tell()
            try:
                proc = subprocess.run(
                    self._cmd("run", "--detach", "--pid-file", str(pid_file), cid),
                    cwd=bundle,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    check=False,
                    timeout=60,
                )
            except subprocess.TimeoutExpired:
                raise BootError(f"runc did not start PC {cid} within 60 s") from None
        if proc.returncode != 0:
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


def _cgroup_procs_file(cgroup: str) -> Path | None:
    """The cgroup.procs file listing every process of `cgroup` (v1 pids hierarchy or v2)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        candidate = base / cgroup.lstrip("/") / "cgroup.procs"
        if candidate.exists():
            return candidate
    return None
