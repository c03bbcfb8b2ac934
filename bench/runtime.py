"""Benchmark the PC runtime: boot, reset, screenshot, click, run_command and idle memory.

Each measure is printed beside its floor, measured in the same run on the same machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._stats import Row, render, summarize, time_ms
from corral.runtime.images import ImageStore
from corral.runtime.pcs import PCRuntime

RUNS = int(os.environ.get("CORRAL_BENCH_RUNS", "20"))
IMAGE = os.environ.get("CORRAL_BENCH_IMAGE", "minimal")
IDLE_PCS = 5
#: "boot": only the boot row, for quick before/after runs
ONLY = os.environ.get("CORRAL_BENCH_ONLY", "")


def _floor_runc_empty(rootfs: Path, runs: int) -> list[float]:
    """`runc run` of a bundle that only runs /bin/true on the image, read-only, no userns."""
    bundle = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "cwd": "/",
            "env": ["PATH=/usr/bin:/bin"],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        # /dev on a tmpfs: runc would otherwise create device nodes inside the image itself
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "mode=755", "size=1m"],
            },
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    root = bundle / "state"
    try:
        return time_ms(
            lambda: subprocess.run(
                ["runc", "--root", str(root), "run", f"floor-{os.getpid()}"],
                cwd=bundle,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            ),
            runs,
        )
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


def _floor_xvfb(runs: int) -> list[float]:
    """A bare Xvfb start on the host, until it announces its display."""
    samples = []
    for _ in range(runs):
        read_fd, write_fd = os.pipe()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                str(write_fd),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ],
            pass_fds=(write_fd,),
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        os.read(read_fd, 16)
        samples.append((time.perf_counter() - start) * 1000)
        os.close(read_fd)
        proc.terminate()
        proc.wait()
    return samples


GRAB_FLOOR = """
import json, time, io
from PIL import ImageGrab
out = []
for _ in range({runs}):
    t = time.perf_counter()
    img = ImageGrab.grab(xdisplay=":0")
    img.save(io.BytesIO(), "PNG", compress_level=1)
    out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"""


def _idle_memory(pc_id: str) -> float:
    usage = Path(f"/sys/fs/cgroup/memory/corral/{pc_id}/memory.usage_in_bytes")
    stat = Path(f"/sys/fs/cgroup/memory/corral/{pc_id}/memory.stat")
    if stat.exists():  # usage minus reclaimable page cache of the image files
        fields = dict(line.split() for line in stat.read_text().splitlines())
        return (int(usage.read_text()) - int(fields.get("total_inactive_file", 0))) / 2**20
    return int(usage.read_text()) / 2**20


def main() -> int:
    if os.geteuid() != 0:
        print("the runtime benchmark needs root", file=sys.stderr)
        return 1
    state = Path(tempfile.mkdtemp(prefix="corral-bench-", dir="/run"))
    rt = PCRuntime(state)
    image = ImageStore().get(IMAGE)
    rows: list[Row] = []
    try:
        print(
            f"measuring with {RUNS} runs each on image {image.name} ({image.digest[:19]})",
            file=sys.stderr,
        )
        floor_boot = [
            r + x
            for r, x in zip(_floor_runc_empty(image.rootfs, RUNS), _floor_xvfb(RUNS), strict=True)
        ]
        booted: list[str] = []
        boot = time_ms(
            lambda: booted.append(rt.boot(IMAGE).id), RUNS, between=lambda: rt.destroy(booted[-1])
        )
        rows.append(
            summarize(
                "boot to desktop-ready",
                boot,
                floor=floor_boot,
                target="<=400 ms and <=2x floor",
                ok=lambda m, p, f: m <= 400 and f is not None and m <= 2 * f,
            )
        )
        if ONLY == "boot":
            print(render(rows))
            return 0
        pc = rt.boot(IMAGE)
        rows.append(
            summarize(
                "reset to desktop-ready",
                time_ms(lambda: rt.reset(pc.id), RUNS),
                target="<=300 ms",
                ok=lambda m, p, f: m <= 300,
            )
        )
        with rt.client(pc.id) as client:
            client.screenshot()
            grab = client.run(["python3", "-c", GRAB_FLOOR.format(runs=RUNS * 2)])
            shot = time_ms(client.screenshot, RUNS * 2)
            rows.append(
                summarize(
                    "screenshot round trip (1280x800)",
                    shot,
                    floor=json.loads(grab.stdout),
                    target="<=40 ms",
                    ok=lambda m, p, f: m <= 40,
                )
            )
            click = time_ms(lambda: client.click(100, 100), RUNS * 5)
            rows.append(
                summarize("click round trip", click, target="<=5 ms", ok=lambda m, p, f: m <= 5)
            )
            run_true = time_ms(lambda: client.run(["true"]), RUNS * 2)
            rows.append(
                summarize(
                    "run_command true", run_true, target="<=15 ms", ok=lambda m, p, f: m <= 15
                )
            )
        rt.destroy(pc.id)
        idle = [rt.boot(IMAGE).id for _ in range(IDLE_PCS)]
        time.sleep(2)  # let the desktops settle before reading memory
        mem = [_idle_memory(pc_id) for pc_id in idle]
        rows.append(
            summarize(
                f"memory of an idle PC ({IDLE_PCS} up)",
                mem,
                unit="MiB",
                target="<=150 MiB",
                ok=lambda m, p, f: m <= 150,
            )
        )
        for pc_id in idle:
            rt.destroy(pc_id)
        print(render(rows))
        avail = (
            int(
                next(
                    line.split()[1]
                    for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemAvailable")
                )
            )
            / 1024
        )
        per_pc = max(mem)
        print(f"memory per idle PC (MiB): {', '.join(f'{m:.1f}' for m in mem)}")
        print(
            f"idle PCs that fit in this machine's available memory ({avail:.0f} MiB at "
            f"{per_pc:.1f} MiB each): {int(avail // per_pc)}"
        )
        return 0
    finally:
        for pc_info in rt.list_pcs():
            rt.destroy(pc_info.id)
        shutil.rmtree(state, ignore_errors=True)
