"""Spawning and reaping the processes pcd starts for agents, and killing them on shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import IO

from .errors import BAD_REQUEST, NOT_FOUND, PcdError, from_oserror


class Children:
    """Tracks every process group pcd started (runs and launches) so SIGTERM can end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: dict[str, str],
        stdin: int | IO[bytes] | None,
        stdout: int | IO[bytes] | None,
        stderr: int | IO[bytes] | None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in a new session (its own process group); map exec failures.

        Pipes and fds of pcd itself are never inherited (close_fds and O_CLOEXEC sockets).
        """
        if not os.path.isdir(cwd):
            raise PcdError(NOT_FOUND, f"working directory {cwd!r} does not exist")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError:
            raise PcdError(
                NOT_FOUND,
                f"program {argv[0]!r} not found; give an absolute path or a program on PATH",
            ) from None
        except PermissionError:
            raise PcdError(BAD_REQUEST, f"program {argv[0]!r} is not executable") from None
        except OSError as exc:
            raise from_oserror(exc, argv[0]) from None
        with self._lock:
            self._groups.add(proc.pid)
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._groups.discard(proc.pid)

    def reap_in_background(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for a detached process in a thread so it never lingers as a zombie."""

        def wait() -> None:
            proc.wait()
            self.forget(proc)

        threading.Thread(target=wait, name=f"reap-{proc.pid}", daemon=True).start()

    def kill_all(self) -> None:
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            kill_group(pgid)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
