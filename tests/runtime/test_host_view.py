"""What a PC can learn about its host: its mount table names no host folder, and /proc tells
the PC's own memory, CPUs and uptime (LXCFS), not the host's. The image layer is nosuid,nodev.

Every probe runs inside a real PC as its desktop user.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.domain.sizes import MiB, parse_size
from corral.errors import PCNotFoundError
from corral.runtime._lxcfs import Lxcfs
from corral.runtime.pcs import PCInfo, PCRuntime

from .conftest import TEST_IMAGE


def _run(rt: PCRuntime, pc: PCInfo, *argv: str) -> str:
    with rt.client(pc.id) as client:
        result = client.run(list(argv))
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_mount_table_names_no_host_folder(rt: PCRuntime, pc: PCInfo, state_root: Path) -> None:
    seen = _run(rt, pc, "cat", "/proc/self/mountinfo", "/proc/1/mountinfo")
    image = rt.images.get(TEST_IMAGE)
    host_table = Path("/proc/self/mountinfo").read_text()
    # Control: on the host, the PC's root really lives under these folders.
    assert f"{state_root}/pcs/{pc.id}/rootfs" in host_table
    for leak in (
        str(state_root),
        "/run/corral/pcs",
        pc.id,
        str(image.rootfs),
        str(image.rootfs.parent.parent),  # the image store's folder
        str(rt.lxcfs.root),
    ):
        assert leak not in seen, f"{leak} shows in the PC's mount table"
    root = next(line for line in seen.splitlines() if line.split()[4] == "/")
    assert " - overlay " in root
    options = dict(o.partition("=")[::2] for o in root.split()[-1].split(","))
    for layer in ("lowerdir", "upperdir", "workdir"):
        assert options[layer].startswith("/proc/self/fd/"), root


def test_image_layer_is_nosuid_and_nodev(rt: PCRuntime, pc: PCInfo) -> None:
    seen = _run(
        rt,
        pc,
        "python3",
        "-c",
        "import os; f = os.statvfs('/usr/bin/su').f_flag; "
        "print(bool(f & os.ST_NOSUID), bool(f & os.ST_NODEV), os.stat('/usr/bin/su').st_mode)",
    ).split()
    assert seen[:2] == ["True", "True"], "setuid bits and device nodes of the image would count"
    assert int(seen[2]) & 0o4000  # control: the image does carry a setuid binary there
    root = next(
        line.split()[5]
        for line in _run(rt, pc, "cat", "/proc/self/mountinfo").splitlines()
        if line.split()[4] == "/"
    )
    assert {"nosuid", "nodev"} <= set(root.split(","))


def test_proc_tells_the_pcs_own_memory_cpus_and_uptime(rt: PCRuntime) -> None:
    size = parse_size("small")
    started = time.monotonic()
    pc = rt.boot(TEST_IMAGE, size="small")
    try:
        meminfo = dict(
            line.split(":", 1) for line in _run(rt, pc, "cat", "/proc/meminfo").splitlines()
        )
        assert int(meminfo["MemTotal"].split()[0]) * 1024 == size.memory_bytes
        free = _run(rt, pc, "free", "-m").splitlines()[1].split()
        assert free[0] == "Mem:" and int(free[1]) == size.memory_bytes // MiB
        cpus = min(int(size.cpus), len(os.sched_getaffinity(0)))
        assert int(_run(rt, pc, "nproc")) == cpus
        assert _run(rt, pc, "grep", "-c", "^processor", "/proc/cpuinfo").strip() == str(cpus)
        assert int(_run(rt, pc, "python3", "-c", "import os; print(os.cpu_count())")) == cpus
        uptime = float(_run(rt, pc, "cat", "/proc/uptime").split()[0])
        host_uptime = float(Path("/proc/uptime").read_text().split()[0])
        alive = time.monotonic() - started
        assert uptime <= alive + 0.05 < host_uptime, (uptime, alive, host_uptime)
    finally:
        rt.destroy(pc.id)


def _wait_gone(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


@pytest.fixture
def own_lxcfs(state_root: Path) -> Iterator[PCRuntime]:
    """A runtime with a private LXCFS daemon, so killing it touches no other PC."""
    runtime = PCRuntime(state_root)
    runtime.lxcfs = Lxcfs(state_root / "lxcfs-private")
    yield runtime
    runtime.lxcfs.stop()
    shutil.rmtree(runtime.lxcfs.root, ignore_errors=True)


def test_a_dead_lxcfs_is_reported_and_a_reset_heals_the_pc(own_lxcfs: PCRuntime) -> None:
    rt = own_lxcfs
    pc = rt.boot(TEST_IMAGE)
    try:
        assert rt.health(pc.id).ok
        pid = rt.lxcfs.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        with rt.client(pc.id) as client:
            broken = client.run(["cat", "/proc/meminfo"])
        assert broken.exit_code != 0  # the PC's view is gone, not silently the host's
        health = rt.health(pc.id)
        assert not health.ok and "lxcfs" in health.detail
        rt.reset(pc.id)  # starts a new daemon and binds the PC to it
        assert rt.lxcfs.pid() not in (None, pid)
        assert "MemTotal" in _run(rt, pc, "cat", "/proc/meminfo")
        assert rt.health(pc.id).ok
    finally:
        with contextlib.suppress(PCNotFoundError):
            rt.destroy(pc.id)
