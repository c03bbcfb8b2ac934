"""Boot, reset, destroy and find PCs: the host runtime the lifecycle layer drives.

A PC is a runc container whose root is an overlayfs: the image (read-only, idmapped to the PC's
own host uid range) below, a size-limited tmpfs above. Everything the PC may touch on the host is
one small tmpfs folder (its console log). pcd's socket lives in a host-only folder the PC never
sees: the host binds it and hands pcd the listening descriptor. Reset throws the upper layer
away and starts a fresh desktop; destroy removes every mount, cgroup, namespace and folder
the PC had.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from corral.config import paths
from corral.domain.sizes import parse_size
from corral.errors import (
    ActionTimeoutError,
    BootError,
    CorralError,
    InvalidInputError,
    PCMisbehavingError,
    PCNotFoundError,
    PCUnavailableError,
    PermissionDeniedError,
)
from corral.runtime import _linux
from corral.runtime._lxcfs import Lxcfs
from corral.runtime._state import UIDS_PER_PC, PCRecord, StateDir
from corral.runtime.client import PcdClient
from corral.runtime.driver import Health, PCInfo

if TYPE_CHECKING:
    from corral.runtime.driver import PCDriver
from corral.runtime.images import ImageStore
from corral.runtime.oci import PCD_SOCKET, DesktopUser, PCSpec, cgroup_path, oci_config
from corral.runtime.runc import Runc

__all__ = ["DEFAULT_SCREEN", "HEALTH_TIMEOUT_S", "Health", "PCInfo", "PCRuntime"]

DEFAULT_SCREEN = "1280x800x24"
_IO_BYTES = 8 * 1024 * 1024
_READY_TIMEOUT_S = 20.0
HEALTH_TIMEOUT_S = 3.0  # one overall deadline for a health check, connect to last byte
_SCREEN_LIMITS = (320, 200, 7680, 4320)
LXCFS_DIR = "/run/corral-lxcfs"  # default of CORRAL_LXCFS_DIR


def _cpuset(slot: int, cpus: float, host_cpus: Sequence[int]) -> str:
    """The host CPUs a PC runs on: as many as its size has (at most the host's), chosen by its
    uid slot so neighbours spread over the cores. Its quota still caps the time it gets; the
    set makes `nproc`, sched_getaffinity and LXCFS's cpuinfo tell the PC's own CPU count."""
    count = max(1, min(len(host_cpus), math.ceil(cpus)))
    first = slot * count
    return ",".join(str(host_cpus[(first + i) % len(host_cpus)]) for i in range(count))


def _parse_screen(screen: str) -> str:
    try:
        w, h, d = (int(v) for v in screen.lower().split("x"))
    except ValueError:
        raise InvalidInputError(
            f"bad screen {screen!r}", hint="use WIDTHxHEIGHTxDEPTH, for example 1280x800x24"
        ) from None
    min_w, min_h, max_w, max_h = _SCREEN_LIMITS
    if not (min_w <= w <= max_w and min_h <= h <= max_h and d in (16, 24)):
        raise InvalidInputError(
            f"screen {screen!r} is out of range",
            hint=f"width {min_w}..{max_w}, height {min_h}..{max_h}, depth 16 or 24",
        )
    return f"{w}x{h}x{d}"


class PCRuntime:
    """The runc PC driver (`corral.runtime.driver.PCDriver`): all PCs on this host. Every
    method is safe to call from a fresh process: the truth is on disk (state folders) and in
    runc, never only in memory."""

    def __init__(self, state_root: Path | None = None, images: ImageStore | None = None) -> None:
        p = paths()
        root = state_root or p.state
        self.state = StateDir(root / "pcs")
        self.runc = Runc(root / "runc")
        self.images = images or ImageStore()
        # One LXCFS daemon for the whole host (every state folder's PCs): it serves per cgroup.
        self.lxcfs = Lxcfs(Path(os.environ.get("CORRAL_LXCFS_DIR") or LXCFS_DIR))

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise PermissionDeniedError(
                "PC operations need root", hint="run corral pc ... as root (sudo)"
            )

    def _record(self, pc_id: str) -> PCRecord:
        record = self.state.load(pc_id) if "/" not in pc_id and pc_id else None
        if record is None:
            raise PCNotFoundError(
                f"no PC with id {pc_id!r}", hint="`corral pc list` shows the PCs on this host"
            )
        return record

    def _dirs(self, pc_id: str) -> dict[str, Path]:
        base = self.state.pc_dir(pc_id)
        return {name: base / name for name in ("lower", "upperfs", "rootfs", "io")}

    def socket_path(self, pc_id: str) -> Path:
        """pcd's socket: in the PC's host-only `ctl` folder (root, 0700, never mounted in the
        PC), so nothing in the PC, root in its user namespace included, can replace it."""
        return self.state.pc_dir(pc_id) / "ctl" / PCD_SOCKET

    def client(self, pc_id: str, timeout: float = 30.0) -> PcdClient:
        record = self._record(pc_id)
        return PcdClient(self.socket_path(pc_id), timeout=timeout, screen=record.screen)

    def _pid(self, pc_id: str) -> int | None:
        try:
            pid = int((self.state.pc_dir(pc_id) / "init.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    # -- the layers -------------------------------------------------------------------------
    def _mount_upper(self, record: PCRecord) -> None:
        """A fresh writable layer and io folder: what boot and reset both start from."""
        dirs = self._dirs(record.id)
        size = parse_size(record.size)
        uid = record.uid_base
        user_uid = uid + int((record.user or {}).get("uid", 1000))
        user_gid = uid + int((record.user or {}).get("gid", 1000))
        _linux.mount(
            "tmpfs",
            dirs["upperfs"],
            "tmpfs",
            _linux.MS_NOSUID | _linux.MS_NODEV,
            f"size={size.disk_bytes},mode=0700",
        )
        for sub in ("upper", "work"):
            (dirs["upperfs"] / sub).mkdir()
        os.chown(dirs["upperfs"] / "upper", uid, uid)
        os.chmod(dirs["upperfs"] / "upper", 0o755)  # noqa: S103 (the PC's / as in the image)
        # The PC reads its own mount table: the overlay takes its layers as descriptors so
        # that table names no host folder, and it is nosuid,nodev like its image layer.
        _linux.overlay_from_fds(dirs["lower"], dirs["upperfs"], dirs["rootfs"])
        _linux.mount(
            "tmpfs",
            dirs["io"],
            "tmpfs",
            # The PC owns this folder: the host must never follow a symlink it planted there
            # (say pcd.sock -> a host service's socket).
            _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOSYMFOLLOW,
            f"size={_IO_BYTES},mode=0700,uid={user_uid},gid={user_gid}",
        )

    def _unmount_upper(self, pc_id: str) -> None:
        dirs = self._dirs(pc_id)
        for name in ("io", "rootfs", "upperfs"):
            for point in _linux.mounts_under(dirs[name]):
                _linux.umount(point)

    def _start(self, record: PCRecord) -> None:
        """Write the bundle, start the container and wait until its desktop answers."""
        pc_dir = self.state.pc_dir(record.id)
        user = record.user or {}
        size = parse_size(record.size)
        lxcfs_pid = self.lxcfs.ensure()  # started again here if it died: reset heals a PC
        spec = PCSpec(
            pc_id=record.id,
            uid_base=record.uid_base,
            uid_count=UIDS_PER_PC,
            user=DesktopUser(
                str(user.get("name", "user")),
                int(user.get("uid", 1000)),
                int(user.get("gid", 1000)),
                str(user.get("home", "/home/user")),
            ),
            size=size,
            io_dir=str(self._dirs(record.id)["io"]),
            screen=record.screen,
            lxcfs_dir=str(self.lxcfs.mnt),
            cpuset=_cpuset(record.slot, size.cpus, sorted(os.sched_getaffinity(0))),
        )
        (pc_dir / "config.json").write_text(json.dumps(oci_config(spec)))
        (pc_dir / "lxcfs.pid").write_text(str(lxcfs_pid))
        (pc_dir / "init.pid").unlink(missing_ok=True)
        log = self._dirs(record.id)["io"] / "console.log"
        listener = self._bind_pcd_socket(record.id)
        try:
            self.runc.run_detached(
                record.id, pc_dir, pc_dir / "init.pid", log, listen_fd=listener.fileno()
            )
        finally:
            # pcd (and tini) hold it now: once they are gone, a connection is refused at once.
            listener.close()
        self._wait_ready(record.id, log)

    def _bind_pcd_socket(self, pc_id: str) -> socket.socket:
        """Bind and listen on pcd's socket where only the host can reach it.

        1. The `ctl` folder is made by the host (root, 0700) in the PC's state folder, which is
           never mounted into the PC: no id of the PC's range, root in its userns included, can
           even name it, so nothing there can unlink, replace or chmod the socket.
        2. A socket left by an earlier boot (reset) is removed; only the host ever wrote there.
        3. The listening descriptor goes to pcd as fd 3 (runc --preserve-fds); pcd binds nothing.
        """
        ctl = self.socket_path(pc_id).parent
        ctl.mkdir(mode=0o700, exist_ok=True)
        os.chown(ctl, 0, 0)
        os.chmod(ctl, 0o700)
        path = ctl / PCD_SOCKET
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        return sock

    def _wait_ready(self, pc_id: str, log: Path) -> None:
        """Readiness is pcd's first answer: the host's `health` waits in the listener's backlog
        until pcd serves (after Xvfb is up); if the PC dies first, the listener closes and the
        connection is refused or reset at once."""
        try:
            with PcdClient(self.socket_path(pc_id), timeout=_READY_TIMEOUT_S) as client:
                answer = client.health(timeout=_READY_TIMEOUT_S)
        except ActionTimeoutError:
            raise BootError(
                f"PC {pc_id} did not become ready in {_READY_TIMEOUT_S:.0f} s: {_tail(log)}"
            ) from None
        except PCUnavailableError as exc:
            raise BootError(
                f"PC {pc_id} stopped while booting ({exc}): {_tail(log)}",
                hint="check the image with `corral image list`; rebuild it if it is broken",
            ) from None
        if not answer.get("x"):
            raise BootError(f"PC {pc_id} started but its X server does not answer")

    # -- public operations ------------------------------------------------------------------
    def boot(self, image: str, size: str = "small", screen: str = DEFAULT_SCREEN) -> PCInfo:
        """Boot a new PC from `image` and return once its desktop answers."""
        self._require_root()
        parse_size(size)
        screen = _parse_screen(screen)
        img = self.images.get(image)
        pc_id = "pc-" + secrets.token_hex(5)
        now = time.time()
        user = img.user
        with self.state.lock():
            dirs = self._dirs(pc_id)
            for d in dirs.values():
                d.mkdir(parents=True)
            slot = self.state.claim_slot(pc_id)  # after the folder exists: a live claim
            os.chmod(self.state.pc_dir(pc_id), 0o711)  # noqa: S103 (PC users traverse to io)
            record = PCRecord(
                id=pc_id,
                image=img.name,
                image_digest=img.digest,
                image_rootfs=str(img.rootfs),
                size=size,
                screen=screen,
                slot=slot,
                status="booting",
                created_at=now,
                user={"name": user.name, "uid": user.uid, "gid": user.gid, "home": user.home},
            )
            self.state.save(record)
        try:
            _linux.idmapped_bind(img.rootfs, dirs["lower"], record.uid_base, UIDS_PER_PC)
            self._mount_upper(record)
            self._start(record)
        except BaseException as exc:
            self._teardown(pc_id)
            if isinstance(exc, CorralError):
                raise
            if isinstance(exc, OSError):
                raise BootError(f"could not boot a PC from {image!r}: {exc}") from exc
            raise
        record.status = "ready"
        record.booted_at = time.time()
        self.state.save(record)
        return self.info(pc_id)

    def reset(self, pc_id: str) -> PCInfo:
        """Back to exactly the image baseline: all processes killed, upper layer discarded,
        a fresh desktop up."""
        self._require_root()
        record = self._record(pc_id)
        record.status = "resetting"
        record.changed_at = time.time()
        self.state.save(record)
        self.runc.delete(pc_id, cgroup_path(pc_id))
        try:
            self._unmount_upper(pc_id)
            if not _linux.is_mountpoint(self._dirs(pc_id)["lower"]):
                _linux.idmapped_bind(
                    Path(record.image_rootfs),
                    self._dirs(pc_id)["lower"],
                    record.uid_base,
                    UIDS_PER_PC,
                )
            self._mount_upper(record)
            self._start(record)
        except CorralError:
            raise
        except OSError as exc:
            raise BootError(
                f"could not reset PC {pc_id}: {exc}", hint="destroy it with `corral pc destroy`"
            ) from exc
        record.status = "ready"
        record.booted_at = time.time()
        self.state.save(record)
        return self.info(pc_id)

    def destroy(self, pc_id: str) -> None:
        """Remove the PC and everything it held on the host."""
        self._require_root()
        self._record(pc_id)
        self._teardown(pc_id)

    def _teardown(self, pc_id: str) -> None:
        self.runc.delete(pc_id, cgroup_path(pc_id))
        pc_dir = self.state.pc_dir(pc_id)
        for point in _linux.mounts_under(pc_dir):
            _linux.umount(point)
        leftover = _linux.mounts_under(pc_dir)
        if leftover:
            raise PCUnavailableError(f"PC {pc_id}: could not unmount {leftover[0]}")
        record = self.state.load(pc_id)
        with self.state.lock():
            shutil.rmtree(pc_dir, ignore_errors=True)
        if record is not None:
            self.state.release_slot(pc_id, record.slot)

    def info(self, pc_id: str) -> PCInfo:
        record = self._record(pc_id)
        pid = self._pid(pc_id)
        status = record.status if pid is not None or record.status == "booting" else "dead"
        return PCInfo(
            record.id,
            record.image,
            record.image_digest,
            record.size,
            status,
            pid,
            record.created_at,
            self.socket_path(pc_id),
        )

    def list_pcs(self) -> list[PCInfo]:
        return [self.info(i) for i in self.state.ids() if self.state.load(i) is not None]

    def health(self, pc_id: str) -> Health:
        """What the lifecycle uses to quarantine PCs: the container runs, pcd answers, X
        answers."""
        self._record(pc_id)
        if self._pid(pc_id) is None:
            return Health(False, False, False, "the PC's processes are not running")
        if not self._lxcfs_current(pc_id):
            return Health(
                False,
                False,
                False,
                "lxcfs, which serves the PC's /proc view, stopped or was restarted: reset the PC",
            )
        try:
            with PcdClient(self.socket_path(pc_id), timeout=HEALTH_TIMEOUT_S) as client:
                answer = client.health(timeout=HEALTH_TIMEOUT_S)
        except PCMisbehavingError as exc:
            return Health(False, False, False, str(exc), misbehaving=True)
        except CorralError as exc:
            return Health(False, False, False, str(exc))
        x_ok = bool(answer.get("x"))
        return Health(x_ok, True, x_ok, "healthy" if x_ok else "the X server does not answer")

    def _lxcfs_current(self, pc_id: str) -> bool:
        """Whether the LXCFS daemon the PC's /proc files are bound to still serves them (a new
        daemon does not reach a running PC's binds; a reset makes new ones)."""
        try:
            bound = int((self.state.pc_dir(pc_id) / "lxcfs.pid").read_text())
        except (OSError, ValueError):
            return False
        return bound == self.lxcfs.pid()

    def reconcile(self, boot_grace_s: float = 60.0) -> list[str]:
        """Find PCs again after a restart; clean up the dead and the half-made.

        Returns the ids cleaned up. A PC still booting within `boot_grace_s` is left alone
        (another process may be booting it right now).
        """
        self._require_root()
        cleaned: list[str] = []
        now = time.time()
        for pc_id in self.state.ids():
            record = self.state.load(pc_id)
            if record is not None:
                age = now - max(record.created_at, record.changed_at)
            else:  # a folder another process is filling right now, or a leftover
                try:
                    age = now - self.state.pc_dir(pc_id).stat().st_mtime
                except OSError:
                    continue
            if (record is None and age > boot_grace_s) or (
                record is not None
                and self._pid(pc_id) is None
                and not (record.status in ("booting", "resetting") and age < boot_grace_s)
            ):
                self._teardown(pc_id)
                cleaned.append(pc_id)
        known = set(self.state.ids())
        for cid in self.runc.list_ids():  # containers whose state folder vanished
            if cid not in known:
                self.runc.delete(cid, cgroup_path(cid))
                cleaned.append(cid)
        return cleaned


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no console output)"
    return " | ".join(text[-lines:]) or "(no console output)"


if TYPE_CHECKING:  # mypy proves the runc driver implements the interface

    def _is_a_driver(rt: PCRuntime) -> PCDriver:
        return rt
