"""Build the OCI runtime config (config.json) of a PC. Pure: inputs in, a dict out.

Everything that makes a PC a sandbox is decided here, in one place: namespaces, the user id
mapping, capabilities (none), no_new_privileges, seccomp, masked and read-only kernel paths,
cgroup limits from the size, and the mounts (the only host folder a PC sees is its own io folder;
LXCFS's files stand in for the /proc files that would tell the host's memory, CPUs and uptime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.domain.sizes import PCSize
from corral.runtime._lxcfs import LXCFS_PROC_FILES, LXCFS_SYS_FILES
from corral.runtime.seccomp import seccomp_profile

__all__ = [
    "IO_MOUNT",
    "PCD_LISTEN_FD",
    "PCD_SOCKET",
    "DesktopUser",
    "PCSpec",
    "cgroup_path",
    "oci_config",
]

IO_MOUNT = "/run/corral"  # where the per-PC host folder appears inside the PC
PCD_SOCKET = "pcd.sock"  # name of pcd's unix socket in the host-only folder (never in the PC)
PCD_LISTEN_FD = 3  # the host-bound listening socket, handed to pcd by runc --preserve-fds
_CPU_PERIOD_US = 100_000

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/debug",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True)
class DesktopUser:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class PCSpec:
    pc_id: str
    uid_base: int  # first host uid of this PC's private range
    uid_count: int
    user: DesktopUser
    size: PCSize
    io_dir: str  # host folder bind-mounted at IO_MOUNT
    screen: str = "1280x800x24"
    # LXCFS mount whose files replace /proc/meminfo, ... (required: no PC without its view)
    lxcfs_dir: str = field(kw_only=True)
    cpuset: str | None = None  # host CPUs the PC runs on ("0", "0-1"): what nproc counts


def cgroup_path(pc_id: str) -> str:
    return f"/corral/{pc_id}"


def _init_args(spec: PCSpec) -> list[str]:
    return [
        "/usr/bin/tini",
        "-g",
        "--",
        "/usr/local/bin/corral-pcd",
        "--listen-fd",
        str(PCD_LISTEN_FD),
        "--display",
        ":0",
        "--geometry",
        spec.screen,
    ]


def _mounts(spec: PCSpec) -> list[dict[str, Any]]:
    nosuid_nodev = ["nosuid", "nodev"]
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": [*nosuid_nodev, "noexec"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": [*nosuid_nodev, "noexec", "mode=1777", f"size={spec.size.shm_bytes}"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": [*nosuid_nodev, "noexec"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": [*nosuid_nodev, "noexec", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": [*nosuid_nodev, "noexec", "relatime", "ro"],
        },
        {
            "destination": IO_MOUNT,
            "type": "bind",
            "source": spec.io_dir,
            "options": ["rbind", *nosuid_nodev, "noexec", "rw"],
        },
        *_lxcfs_mounts(spec),
    ]


def _lxcfs_mounts(spec: PCSpec) -> list[dict[str, Any]]:
    """LXCFS's answers bound read-only over the kernel's /proc and /sys files that would tell
    the host's memory, CPUs, load and uptime; LXCFS answers them for the reader's cgroup."""
    options = ["bind", "ro", "nosuid", "nodev", "noexec"]
    files = [f"proc/{name}" for name in LXCFS_PROC_FILES]
    files += [f"sys/{name}" for name in LXCFS_SYS_FILES]
    return [
        {
            "destination": f"/{name}",
            "type": "bind",
            "source": f"{spec.lxcfs_dir}/{name}",
            "options": options,
        }
        for name in files
    ]


def oci_config(spec: PCSpec) -> dict[str, Any]:
    """The complete config.json for `spec` (OCI runtime spec 1.0)."""
    user = spec.user
    idmap = [{"containerID": 0, "hostID": spec.uid_base, "size": spec.uid_count}]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": [user.gid]},
            "args": _init_args(spec),
            "env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                f"HOME={user.home}",
                f"USER={user.name}",
                f"LOGNAME={user.name}",
                "DISPLAY=:0",
                "LANG=C.UTF-8",
                "TERM=xterm-256color",
            ],
            "cwd": user.home,
            "capabilities": {
                "bounding": [],
                "effective": [],
                "inheritable": [],
                "permitted": [],
                "ambient": [],
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
            ],
            "noNewPrivileges": True,
            "oomScoreAdj": 500,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "pc",
        "mounts": _mounts(spec),
        "linux": {
            "uidMappings": idmap,
            "gidMappings": idmap,
            "namespaces": [
                {"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user", "cgroup")
            ],
            "cgroupsPath": cgroup_path(spec.pc_id),
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": spec.size.memory_bytes, "disableOOMKiller": False},
                "cpu": {
                    "quota": int(spec.size.cpus * _CPU_PERIOD_US),
                    "period": _CPU_PERIOD_US,
                    **({"cpus": spec.cpuset} if spec.cpuset else {}),
                },
                "pids": {"limit": spec.size.pids},
            },
            "seccomp": seccomp_profile(),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
