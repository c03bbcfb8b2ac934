"""A thin driver for the `runc` binary: the only place that knows its command line."""

from __future__ import annotations

import json
import shutil
import subprocess
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
                    cwd=bundle, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    check=False, timeout=60,
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
        proc = subprocess.run(self._cmd("state", cid), capture_output=True, check=False,
                              timeout=30)
        if proc.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def list_ids(self) -> list[str]:
        if not self.root.exists():
            return []
        proc = subprocess.run(self._cmd("list", "--format", "json"), capture_output=True,
                              check=False, timeout=30)
        if proc.returncode != 0 or not proc.stdout.strip():
            return []
        return [c["id"] for c in json.loads(proc.stdout) or []]

    def delete(self, cid: str) -> None:
        """Kill every process of `cid` and remove it (and its cgroup); quiet if already gone."""
        subprocess.run(self._cmd("delete", "--force", cid), capture_output=True, check=False,
                       timeout=60)
