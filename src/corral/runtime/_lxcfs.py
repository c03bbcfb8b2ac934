"""The host's LXCFS daemon: what makes a PC's /proc/meminfo, cpuinfo, stat, uptime, ... tell the
PC's own limits instead of the host's.

A PC's /proc is the kernel's, and the kernel answers /proc/meminfo with the host's memory: `free`
would tell an agent it has 24 GiB when its cgroup kills it at 2 GiB, and the host's size and
uptime leak. LXCFS (Debian's `lxcfs`) is a FUSE file system that answers those files per cgroup of
the reading process; oci_config binds its files over the PC's. One daemon serves every PC. It is
started on demand (every boot and reset checks it) and started again if it died: PCs that were
bound to a dead daemon get errors reading those files, so `PCRuntime.health` reports them and a
reset binds them to the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from corral.errors import BootError
from corral.runtime import _linux

__all__ = ["LXCFS_PROC_FILES", "LXCFS_SYS_FILES", "Lxcfs"]

# The files LXCFS virtualizes that a PC's tools read (runc allows binds on exactly these /proc
# files). /proc/slabinfo is left out: only root may read it.
LXCFS_PROC_FILES = ("cpuinfo", "diskstats", "loadavg", "meminfo", "stat", "swaps", "uptime")
LXCFS_SYS_FILES = ("devices/system/cpu/online",)
_START_TIMEOUT_S = 10.0


class Lxcfs:
    """One LXCFS daemon mounted at `<root>/mnt`, its pid in `<root>/lxcfs.pid`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mnt = root / "mnt"
        self.pidfile = root / "lxcfs.pid"

    def pid(self) -> int | None:
        """The daemon's pid if it runs and answers, else None.

        Cheap (tens of microseconds) but exact: the process is an lxcfs that has not exited
        (a zombie or a recycled pid does not count), and its mount answers an open(), which,
        unlike stat(), FUSE never serves from a cache.
        """
        try:
            pid = int(self.pidfile.read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
            name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1]
            if name != "lxcfs" or state.split()[0] in ("Z", "X"):
                return None
            os.close(os.open(self.mnt / "proc" / "uptime", os.O_RDONLY | os.O_CLOEXEC))
        except (OSError, ValueError):
            return None
        return pid

    def ensure(self) -> int:
        """Return the pid of a running daemon, starting one if there is none (or a dead one).

        1. Fast path: the daemon answers.
        2. Under a host-wide lock (two control planes, the CLI): look again, then clear what a
           dead daemon left (its mount answers ENOTCONN) and start a new one in its own session
           so it outlives the process that started it.
        3. Wait for its mount, or fail with its own words.
        """
        pid = self.pid()
        if pid is not None:
            return pid
        binary = shutil.which("lxcfs")
        if binary is None:
            raise BootError(
                "lxcfs is not installed: PCs would see the host's memory, CPUs and uptime",
                hint="install Debian's lxcfs package (scripts/install-system-deps.sh does it)",
            )
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # noqa: S103 (runc's init, a PC's root, resolves the files)
        with open(self.root / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pid = self.pid()
            if pid is not None:
                return pid
            for point in _linux.mounts_under(self.mnt):
                _linux.umount(point, lazy=True)
            self.mnt.mkdir(exist_ok=True)
            self.pidfile.unlink(missing_ok=True)
            log = self.root / "lxcfs.log"
            with open(log, "wb") as out:
                subprocess.run(
                    [
                        "setsid",
                        "--fork",
                        binary,
                        "--foreground",
                        "--enable-cfs",  # CPU count from the cgroup's quota as well as cpuset
                        "--enable-loadavg",
                        f"--pidfile={self.pidfile}",
                        str(self.mnt),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    check=True,
                    close_fds=True,
                    cwd="/",  # the daemon outlives us: it must hold no folder busy
                )
            deadline = time.monotonic() + _START_TIMEOUT_S
            while (pid := self.pid()) is None:
                if time.monotonic() > deadline:
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                    raise BootError(
                        f"lxcfs did not start at {self.mnt}: {' | '.join(tail) or 'no output'}",
                        hint="check that /dev/fuse exists and the fuse module is loaded",
                    )
                time.sleep(0.005)
            return pid

    def stop(self) -> None:
        """Stop the daemon and unmount it (tests and operators; PCs bound to it lose the view)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for point in _linux.mounts_under(self.mnt):
            _linux.umount(point, lazy=True)
