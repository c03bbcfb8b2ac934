"""Running build commands: output to one log file, failures as ImageBuildError with its tail.

debootstrap and apt print thousands of lines; the user needs them only when something fails, and
then mostly the last few. Each command runs in its own session so an interrupted build can stop
the whole process group (apt's dpkg children included) before it deletes the staging folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections import deque
from pathlib import Path
from typing import IO

from corral.errors import ImageBuildError

__all__ = ["CommandLog", "explain_failure"]

_TAIL_LINES = 20
_ENV_PASS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
_MISSING_RE = re.compile(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation")


def explain_failure(tail: list[str]) -> str | None:
    """Say what went wrong in words when the log shows a known cause (a missing package)."""
    missing = []
    for line in tail:
        m = _MISSING_RE.search(line)
        if m:
            name = m.group(1) or m.group(2)
            if name not in missing:
                missing.append(name)
    if missing:
        return f"apt could not find package(s): {', '.join(missing)}"
    return None


class CommandLog:
    """Runs argv lists with their output appended to `path`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] = path.open("ab")

    def close(self) -> None:
        self._file.close()

    def note(self, text: str) -> None:
        self._file.write(f"==> {text}\n".encode())
        self._file.flush()

    def env(self) -> dict[str, str]:
        """A clean environment for tools running in or on the new root."""
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LC_ALL": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            "DEBCONF_NONINTERACTIVE_SEEN": "true",
        }
        env.update({k: os.environ[k] for k in _ENV_PASS if k in os.environ})
        return env

    def run(self, argv: list[str], what: str) -> None:
        """Run one step; on a non-zero exit raise ImageBuildError naming `what`."""
        self.note(" ".join(argv))
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        try:
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
        if rc != 0:
            self.note(f"exit status {rc}")
            raise self.failure(f"{what} failed (exit status {rc})")

    def tail(self, n: int = _TAIL_LINES) -> list[str]:
        self._file.flush()
        with self.path.open("rb") as f:
            lines: deque[bytes] = deque(f, maxlen=n)
        return [b.decode(errors="replace").rstrip("\n") for b in lines]

    def failure(self, message: str) -> ImageBuildError:
        """An ImageBuildError carrying the log's last lines and where the full log is."""
        tail = self.tail()
        cause = explain_failure(tail)
        head = f"{message}: {cause}" if cause else message
        body = "\n".join("    " + line for line in tail)
        return ImageBuildError(
            f"{head}\n  last lines of the build log:\n{body}", hint=f"full log: {self.path}"
        )


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the command and everything it started: TERM first, then KILL for stragglers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
