"""The OCI config is where the sandbox is decided; check each promise it makes."""

from __future__ import annotations

import pytest

from corral.domain.sizes import SIZES, parse_size
from corral.errors import InvalidInputError
from corral.runtime.oci import IO_MOUNT, DesktopUser, PCSpec, oci_config
from corral.runtime.pcs import _cpuset
from corral.runtime.seccomp import ALLOWED_SYSCALLS, DENIED_SYSCALLS, seccomp_profile

USER = DesktopUser("user", 1000, 1000, "/home/user")


LXCFS = "/run/corral-lxcfs/mnt"


def _spec(size: str = "small", cpuset: str | None = None) -> PCSpec:
    return PCSpec(
        "pc-abc",
        2_065_536,
        65536,
        USER,
        parse_size(size),
        "/run/corral/pcs/x/io",
        lxcfs_dir=LXCFS,
        cpuset=cpuset,
    )


def test_runs_as_desktop_user_without_any_capability() -> None:
    proc = oci_config(_spec())["process"]
    assert proc["user"]["uid"] == 1000
    assert proc["noNewPrivileges"] is True
    assert all(caps == [] for caps in proc["capabilities"].values())


def test_every_namespace_is_private() -> None:
    namespaces = {n["type"] for n in oci_config(_spec())["linux"]["namespaces"]}
    assert namespaces == {"pid", "network", "ipc", "uts", "mount", "user", "cgroup"}
    assert all("path" not in n for n in oci_config(_spec())["linux"]["namespaces"])


def test_uid_map_is_the_pcs_own_range() -> None:
    linux = oci_config(_spec())["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 2_065_536, "size": 65536}]
    assert linux["gidMappings"] == linux["uidMappings"]


@pytest.mark.parametrize("size", list(SIZES))
def test_limits_follow_the_size(size: str) -> None:
    res = oci_config(_spec(size))["linux"]["resources"]
    preset = SIZES[size]
    assert res["memory"]["limit"] == preset.memory_bytes
    assert res["pids"]["limit"] == preset.pids
    assert res["cpu"]["quota"] == int(preset.cpus * res["cpu"]["period"])
    assert preset.disk_bytes < preset.memory_bytes  # a full disk is ENOSPC, never an OOM kill


def test_only_host_folder_is_the_io_folder() -> None:
    binds = [
        m
        for m in oci_config(_spec())["mounts"]
        if m["type"] == "bind" and not m["source"].startswith(LXCFS + "/")
    ]
    assert binds == [
        {
            "destination": IO_MOUNT,
            "type": "bind",
            "source": "/run/corral/pcs/x/io",
            "options": ["rbind", "nosuid", "nodev", "noexec", "rw"],
        }
    ]


def test_proc_tells_the_pcs_own_memory_cpus_and_uptime() -> None:
    """LXCFS's files, read-only, over every /proc and /sys file that would tell the host's."""
    lxcfs = {
        m["destination"]: m
        for m in oci_config(_spec())["mounts"]
        if m["source"].startswith(LXCFS + "/")
    }
    assert set(lxcfs) == {
        "/proc/meminfo",
        "/proc/cpuinfo",
        "/proc/stat",
        "/proc/uptime",
        "/proc/loadavg",
        "/proc/diskstats",
        "/proc/swaps",
        "/sys/devices/system/cpu/online",
    }
    for dest, m in lxcfs.items():
        assert m["source"] == LXCFS + dest
        assert m["type"] == "bind"
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(m["options"])
    order = [m["destination"] for m in oci_config(_spec())["mounts"]]
    assert order.index("/proc") < order.index("/proc/meminfo")  # on top of the PC's own /proc
    assert order.index("/sys") < order.index("/sys/devices/system/cpu/online")


def test_cpuset_is_the_pcs_cpus() -> None:
    assert oci_config(_spec(cpuset="1"))["linux"]["resources"]["cpu"]["cpus"] == "1"
    assert "cpus" not in oci_config(_spec())["linux"]["resources"]["cpu"]


@pytest.mark.parametrize(
    ("slot", "cpus", "host", "expected"),
    [
        (0, 1.0, [0, 1], "0"),
        (1, 1.0, [0, 1], "1"),
        (2, 1.0, [0, 1], "0"),
        (3, 2.0, list(range(8)), "6,7"),
        (5, 4.0, [0, 1], "0,1"),  # never more CPUs than the host has
        (0, 0.5, [0, 1, 2, 3], "0"),
        (1, 1.0, [2, 5], "5"),  # only CPUs the host lets Corral use
    ],
)
def test_cpuset_spreads_pcs_over_the_hosts_cpus(
    slot: int, cpus: float, host: list[int], expected: str
) -> None:
    assert _cpuset(slot, cpus, host) == expected


def test_kernel_interfaces_masked_and_read_only() -> None:
    linux = oci_config(_spec())["linux"]
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]
    assert "/proc/sysrq-trigger" in linux["readonlyPaths"]


def test_seccomp_denies_by_default_and_blocks_escape_calls() -> None:
    profile = seccomp_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {
        n
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW"
        for n in rule["names"]
        if "args" not in rule
    }
    for name in (
        "mount",
        "unshare",
        "setns",
        "ptrace",
        "init_module",
        "finit_module",
        "bpf",
        "kexec_load",
        "pivot_root",
        "open_by_handle_at",
        "keyctl",
        "userfaultfd",
    ):
        assert name not in allowed, name
    assert not set(ALLOWED_SYSCALLS) & set(DENIED_SYSCALLS)


def test_clone_allowed_only_without_namespace_flags() -> None:
    rules = [r for r in seccomp_profile()["syscalls"] if "clone" in r["names"]]
    assert len(rules) == 1
    (arg,) = rules[0]["args"]
    assert arg["op"] == "SCMP_CMP_MASKED_EQ" and arg["valueTwo"] == 0
    clone_newuser, clone_newns, clone_newnet = 0x10000000, 0x00020000, 0x40000000
    for flag in (clone_newuser, clone_newns, clone_newnet):
        assert arg["value"] & flag
    clone3 = [r for r in seccomp_profile()["syscalls"] if r["names"] == ["clone3"]]
    assert clone3[0]["errnoRet"] == 38  # ENOSYS: libc falls back to clone, which is filtered


def test_unknown_size_names_the_valid_ones() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_size("huge")
    assert "small" in str(info.value) and "large" in str(info.value)
