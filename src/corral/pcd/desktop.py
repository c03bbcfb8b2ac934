"""Watching the desktop: Xvfb (already spawned by xvfb.py) and the window manager, which is
started without being waited for so it does not delay readiness."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

_WM_RESTARTS = 5


def log(message: str) -> None:
    print(f"pcd: {message}", file=sys.stderr, flush=True)


class Desktop:
    """Owns the Xvfb and window manager processes."""

    def __init__(
        self,
        xvfb_pid: int,
        display: str,
        geometry: tuple[int, int, int],
        wm: str,
        fbdir: str | None,
    ) -> None:
        self.xvfb_pid = xvfb_pid
        self.display = display
        self.width, self.height, self.depth = geometry
        self.wm = wm
        self.fbdir = fbdir
        self._wm_ready = threading.Event()  # set while the WM manages new windows
        self._xvfb_code: int | None = None
        self._xvfb_gone = threading.Event()
        self._wm_proc: subprocess.Popen[bytes] | None = None
        self._stopping = False

    @property
    def framebuffer(self) -> str | None:
        return f"{self.fbdir}/Xvfb_screen0" if self.fbdir else None

    def watch_xvfb(self, on_exit: Callable[[int], None]) -> None:
        """Reap Xvfb in a thread (the only waiter for its pid) and report its exit."""

        def watch() -> None:
            _, status = os.waitpid(self.xvfb_pid, 0)
            self._xvfb_code = os.waitstatus_to_exitcode(status)
            self._xvfb_gone.set()
            on_exit(self._xvfb_code)

        threading.Thread(target=watch, name="xvfb-watch", daemon=True).start()

    def start_wm(
        self,
        env: dict[str, str],
        probe: Callable[[], bool],
        after: threading.Event | None = None,
        after_s: float = 0.0,
    ) -> None:
        """Start the window manager without waiting for it; a thread then runs `probe` (which
        returns once the WM manages windows) and restarts the WM a few times if it dies.

        `after`: the thread first waits (at most `after_s`) for this event, so the WM's start
        does not compete with pcd's first answer (the host's readiness check) for the PC's CPU.
        """
        if self.wm == "none":
            self._wm_ready.set()
            return

        def supervise() -> None:
            if after is not None:
                after.wait(after_s)
            for attempt in range(_WM_RESTARTS + 1):
                try:
                    proc = subprocess.Popen(
                        [self.wm],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        cwd=env.get("HOME", "/"),
                    )
                except OSError as exc:
                    log(f"cannot start window manager {self.wm!r}: {exc}")
                    break
                self._wm_proc = proc
                try:
                    if probe():
                        self._wm_ready.set()
                except Exception as exc:  # the X server went away: pcd is exiting anyway
                    log(f"window manager probe failed: {exc}")
                code = proc.wait()
                self._wm_ready.clear()
                if self._stopping:
                    return
                log(f"window manager exited with {code} (attempt {attempt + 1})")
                time.sleep(0.2)
            self._wm_ready.set()  # no WM: do not make callers wait for one

        threading.Thread(target=supervise, name="wm", daemon=True).start()

    def wm_ready(self) -> bool:
        return self._wm_ready.is_set() and self.wm_running()

    def wait_wm(self, timeout: float = 5.0) -> bool:
        """Wait until the WM manages new windows (immediately true without a WM)."""
        return self._wm_ready.wait(timeout)

    def wm_running(self) -> bool:
        proc = self._wm_proc
        return proc is not None and proc.poll() is None

    def stop(self) -> None:
        """Terminate the window manager and Xvfb, killing them if they linger."""
        self._stopping = True
        wm = self._wm_proc
        if wm is not None and wm.poll() is None:
            wm.terminate()
        if not self._xvfb_gone.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.xvfb_pid, signal.SIGTERM)
            if not self._xvfb_gone.wait(1.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.xvfb_pid, signal.SIGKILL)
                self._xvfb_gone.wait(1.0)
        if wm is not None:
            try:
                wm.wait(0.5)
            except subprocess.TimeoutExpired:
                wm.kill()
                wm.wait()
        if self.fbdir:
            shutil.rmtree(self.fbdir, ignore_errors=True)
