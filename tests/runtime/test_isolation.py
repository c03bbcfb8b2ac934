"""The isolation suite: from inside a PC, as the desktop user, try to break out.

Every attempt must fail or stay contained, and the host and a neighbour PC must stay healthy.
Each probe is a small Python program run inside the PC that prints one JSON verdict; each check
is paired with a control that shows the probe could have succeeded (the host really listens,
the file really exists), so a broken probe cannot pass by accident.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.domain.sizes import parse_size
from corral.runtime.client import PcdClient
from corral.runtime.pcs import PCInfo, PCRuntime

from .conftest import TEST_IMAGE


def probe(client: PcdClient, code: str, timeout: float = 60) -> Any:
    """Run Python `code` in the PC; it must print one JSON value as its last line."""
    result = client.run(["python3", "-c", textwrap.dedent(code)], timeout_s=timeout)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


SYSCALL = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def call(*args):
    rc = libc.syscall(*args)
    return "ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()]
"""


@pytest.fixture(scope="module")
def pair(rt: PCRuntime) -> Iterator[tuple[PCInfo, PCInfo]]:
    a = rt.boot(TEST_IMAGE)
    b = rt.boot(TEST_IMAGE)
    yield a, b
    rt.destroy(a.id)
    rt.destroy(b.id)


@pytest.fixture(scope="module")
def host_listeners() -> Iterator[dict[str, tuple[str, int]]]:
    """TCP servers on the host that a PC must not reach: loopback, the host's own address,
    and the control-plane port."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    host_ip = out[out.index("inet") + 1].split("/")[0]
    servers: dict[str, socket.socket] = {}
    for name, addr in (
        ("loopback", ("127.0.0.1", 0)),
        ("host", (host_ip, 0)),
        ("control_plane", ("127.0.0.1", 8420)),
    ):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind(addr)
        except OSError:  # a running Corral holds 8420: it is then the target itself
            srv.close()
            continue
        srv.listen(8)
        servers[name] = srv
    stop = threading.Event()

    def accept(srv: socket.socket) -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                srv.accept()[0].close()
            except OSError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in servers.values()]
    for t in threads:
        t.start()
    yield {name: s.getsockname() for name, s in servers.items()}
    stop.set()
    for t in threads:
        t.join()
    for s in servers.values():
        s.close()


def test_host_files_are_out_of_reach(
    rt: PCRuntime, pair: tuple[PCInfo, PCInfo], tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret.txt"
    token = secrets.token_hex(16)
    secret.write_text(token)
    a, _ = pair
    with rt.client(a.id) as client:
        verdict = probe(
            client,
            f"""
            import json, os
            out = {{}}
            for p in [{str(secret)!r}, "/root/.bashrc", "/etc/shadow", "/proc/1/root/etc/shadow"]:
                try:
                    out[p] = open(p).read()[:20]
                except OSError as e:
                    out[p] = type(e).__name__
            for p in ["/etc/passwd", "/usr/bin/python3", "/run/corral/../../x"]:
                try:
                    open(p, "a").close(); out["w:" + p] = "wrote"
                except OSError as e:
                    out["w:" + p] = type(e).__name__
            print(json.dumps(out))
        """,
        )
    assert token not in json.dumps(verdict)
    assert verdict[str(secret)] == "FileNotFoundError"
    assert verdict["/etc/shadow"] == "PermissionError"
    assert all(v != "wrote" for k, v in verdict.items() if k.startswith("w:")), verdict
    assert Path("/etc/passwd").read_text().startswith("root:")


def test_host_and_neighbour_processes_are_invisible(
    rt: PCRuntime, pair: tuple[PCInfo, PCInfo]
) -> None:
    marker = subprocess.Popen(["sleep", "4242.5"])
    try:
        a, b = pair
        with rt.client(a.id) as client:
            cmdlines = probe(
                client,
                """
                import json, os
                out = []
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        out.append(open(f"/proc/{pid}/cmdline").read().replace("\\0", " "))
                    except OSError:
                        pass
                print(json.dumps(out))
            """,
            )
        with rt.client(b.id) as client:
            b_pids = [p["pid"] for p in client.processes()]
        assert not any("4242.5" in c for c in cmdlines)
        assert any("Xvfb" in c for c in cmdlines)  # control: it does see its own desktop
        assert len(cmdlines) < 20
        assert len(b_pids) >= 2
    finally:
        marker.kill()
        marker.wait()


def test_network_reaches_nothing(
    rt: PCRuntime, pair: tuple[PCInfo, PCInfo], host_listeners: dict[str, tuple[str, int]]
) -> None:
    for addr in host_listeners.values():  # control: the host side really listens
        socket.create_connection(addr, timeout=2).close()
    targets = {
        **{k: list(v) for k, v in host_listeners.items()},
        "metadata": ["169.254.169.254", 80],
        "control_plane_any": ["127.0.0.1", 8420],
        "public": ["1.1.1.1", 443],
    }
    a, _ = pair
    with rt.client(a.id) as client:
        verdict = probe(
            client,
            f"""
            import json, socket
            out = {{}}
            for name, (host, port) in {targets!r}.items():
                s = socket.socket(); s.settimeout(2)
                try:
                    s.connect((host, port)); out[name] = "connected"
                except OSError as e:
                    out[name] = type(e).__name__
                s.close()
            out["links"] = sorted(open("/proc/net/dev").read().split("\\n")[2:])
            print(json.dumps(out))
        """,
        )
    links = [line.split(":")[0].strip() for line in verdict.pop("links") if line.strip()]
    assert links == ["lo"]
    assert all(v != "connected" for v in verdict.values()), verdict


def test_privileged_operations_fail(rt: PCRuntime, pair: tuple[PCInfo, PCInfo]) -> None:
    a, _ = pair
    with rt.client(a.id) as client:
        pcd_pid = next(p["pid"] for p in client.processes() if "corral-pcd" in p["cmd"])
        verdict = probe(
            client,
            SYSCALL
            + f"""
import socket, subprocess
out = {{}}
out["mount"] = "ok" if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 else "denied"
out["unshare_user"] = call(272, 0x10000000)
out["unshare_net"] = call(272, 0x40000000)
out["unshare_cmd"] = subprocess.run(["unshare", "-Ur", "id", "-u"],
                                    capture_output=True).returncode
out["ptrace"] = call(101, 16, {pcd_pid}, 0, 0)  # PTRACE_ATTACH to pcd
out["init_module"] = call(175, 0, 0, b"")
out["finit_module"] = call(313, 0, b"", 0)
out["bpf"] = call(321, 0, 0, 0)
out["setns"] = call(308, os.open("/proc/self/ns/net", os.O_RDONLY), 0)
try:
    open("/proc/sys/kernel/hostname", "w").write("evil"); out["sysctl"] = "wrote"
except OSError as e:
    out["sysctl"] = type(e).__name__
try:
    open("/proc/sysrq-trigger", "w").write("b"); out["sysrq"] = "wrote"
except OSError as e:
    out["sysrq"] = type(e).__name__
for name, fam, kind, proto in (("raw", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                               ("packet", socket.AF_PACKET, socket.SOCK_RAW, 0)):
    try:
        socket.socket(fam, kind, proto); out[name] = "opened"
    except OSError as e:
        out[name] = type(e).__name__
su = subprocess.run(["su", "-c", "id -u", "root"], input=b"\\n", capture_output=True)
out["su_root"] = su.stdout.decode().strip()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out["nonewprivs"] = status["NoNewPrivs"].strip()
out["capeff"] = status["CapEff"].strip()
out["uid"] = os.getuid()
print(json.dumps(out))
""",
        )
    assert verdict["mount"] == "denied"
    for key in (
        "unshare_user",
        "unshare_net",
        "ptrace",
        "init_module",
        "finit_module",
        "bpf",
        "setns",
    ):
        assert verdict[key] == "EPERM", (key, verdict)
    assert verdict["unshare_cmd"] != 0
    assert verdict["sysctl"] in ("OSError", "PermissionError")
    assert verdict["sysrq"] in ("OSError", "PermissionError", "FileNotFoundError")
    assert verdict["raw"] == verdict["packet"] == "PermissionError"
    assert verdict["su_root"] != "0"
    assert verdict["nonewprivs"] == "1" and int(verdict["capeff"], 16) == 0
    assert verdict["uid"] == 1000


def test_fork_bomb_memory_hog_and_disk_fill_stay_contained(
    rt: PCRuntime, pair: tuple[PCInfo, PCInfo]
) -> None:
    a, b = pair
    limits = parse_size("small")
    with rt.client(a.id) as client:
        bomb = probe(
            client,
            """
            import json, os, time
            n = 0
            kids = []
            try:
                while n < 100000:
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(30); os._exit(0)
                    kids.append(pid); n += 1
            except OSError as e:
                err = type(e).__name__
            for k in kids:
                os.kill(k, 9)
            for k in kids:
                os.waitpid(k, 0)
            print(json.dumps({"forked": n, "error": err}))
        """,
            timeout=120,
        )
        assert bomb["error"] == "BlockingIOError" and bomb["forked"] < limits.pids
        hog = client.run(
            ["python3", "-c", "x = []\nwhile True: x.append(bytearray(1 << 26))"], timeout_s=120
        )
        assert hog.exit_code != 0  # killed by the PC's own memory limit (or MemoryError)
        fill = client.run(["dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M"], timeout_s=120)
        assert "No space left" in fill.stderr
        used = client.run(["df", "-B1", "--output=used", "/"]).stdout.split()[-1]
        assert int(used) <= limits.disk_bytes
        assert client.health()["x"]
    assert rt.health(a.id).ok and rt.health(b.id).ok
    host_fork = subprocess.run(["true"], check=False)
    assert host_fork.returncode == 0
    assert os.statvfs("/").f_bavail > 0


def test_host_never_follows_a_symlink_planted_in_the_io_folder(
    rt: PCRuntime, pair: tuple[PCInfo, PCInfo], tmp_path: Path
) -> None:
    """The PC owns its io folder: if it plants pcd.sock there as a symlink to a host service's
    socket, the host must never talk to that service (it talks to pcd through a socket in a
    host-only folder the PC cannot name)."""
    victim_path = tmp_path / "host-service.sock"
    victim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    victim.bind(str(victim_path))
    victim.listen(4)
    victim.settimeout(0.5)
    probe_client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe_client.connect(str(victim_path))  # control: the host service really accepts
    victim.accept()[0].close()
    probe_client.close()
    a, _ = pair
    with rt.client(a.id) as client:
        planted = client.run(
            [
                "sh",
                "-c",
                f"rm -f /run/corral/pcd.sock && "
                f"ln -s {victim_path} /run/corral/pcd.sock && echo planted",
            ]
        )
        assert planted.stdout.strip() == "planted", planted.stderr
    health = rt.health(a.id)
    assert health.ok, health.detail
    with pytest.raises(socket.timeout):
        victim.accept()
    victim.close()
    rt.reset(a.id)  # the PC gets a fresh io folder and works again
    assert rt.health(a.id).ok
