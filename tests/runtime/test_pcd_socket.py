"""From inside a real PC, try to put another listener where the host talks to pcd (issue 9, 1).

The host binds pcd's socket in a host-only folder and hands pcd the listening descriptor, so a
listener the PC plants (as the desktop user, or as root in its user namespace) where the old
socket lived, sending a huge size, trickling a byte a second or sending garbage, must never see
a connection from the host, and the host keeps talking to the real pcd. Each planted listener
is first shown to really listen (a probe from inside the PC reaches it), so the test cannot pass
because the plant failed.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator

import pytest

from corral.runtime.client import PcdClient
from corral.runtime.pcs import PCInfo, PCRuntime

from .conftest import TEST_IMAGE

LISTENER = r"""
import os, socket, sys, threading, time
mode, tag = sys.argv[1], sys.argv[2]
path = "/run/corral/pcd.sock"
log = f"/tmp/hijack-{tag}"
try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(16)
def serve(conn):
    with open(log, "a") as f:
        f.write("x")
    try:
        conn.recv(65536)
        if mode == "huge":
            conn.sendall(b'{"ok": true, "result": {"x": true}, "blob": 1099511627776}\n')
            while True:
                conn.sendall(bytes(1 << 20))
        elif mode == "trickle":
            for byte in b'{"ok": true, "result": {"x": true}, "blob": 0}' + b" " * 10**6:
                conn.sendall(bytes([byte]))
                time.sleep(1)
        else:
            conn.sendall(b"\x00\xff[[[ garbage ]]]\n" * 1000)
            time.sleep(3600)
    except OSError:
        pass
with open(log + ".pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# A probe from inside the PC: connect where the listener sits and read the first bytes.
PROBE = r"""
import json, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect("/run/corral/pcd.sock")
s.sendall(b'{"op": "health", "args": {}}\n')
print(json.dumps(s.recv(1).decode("latin-1")))
"""


@pytest.fixture(scope="module")
def target(rt: PCRuntime) -> Iterator[PCInfo]:
    info = rt.boot(TEST_IMAGE)
    yield info
    rt.destroy(info.id)


def _as_root(rt: PCRuntime, pc_id: str, argv: list[str], detach: bool = False) -> str:
    """Run `argv` in the PC as root of its user namespace (runc exec --user 0:0)."""
    cmd = [rt.runc.binary, "--root", str(rt.runc.root), "exec", "--user", "0:0"]
    if detach:
        cmd.append("--detach")
    # A detached process keeps its stdio: give it none, or reading ours would never end.
    out = subprocess.DEVNULL if detach else subprocess.PIPE
    proc = subprocess.run(
        [*cmd, pc_id, *argv],
        stdout=out,
        stderr=out,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout or ""


def _run(client: PcdClient, argv: list[str]) -> str:
    result = client.run(argv, timeout_s=30)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _wait_file(client: PcdClient, path: str) -> None:
    _run(client, ["sh", "-c", f"while [ ! -s {path} ]; do sleep 0.05; done"])


@pytest.mark.parametrize("as_root", [False, True], ids=["desktop-user", "userns-root"])
@pytest.mark.parametrize("mode", ["garbage", "huge", "trickle"])
def test_a_listener_planted_in_the_pc_never_gets_the_host(
    rt: PCRuntime, target: PCInfo, mode: str, as_root: bool
) -> None:
    tag = f"{mode}-{'root' if as_root else 'user'}"
    program = ["python3", "-c", textwrap.dedent(LISTENER), mode, tag]
    with rt.client(target.id) as client:
        # 1. Plant the listener where the socket used to be, as the desktop user or as root
        #    (root of the userns has no capabilities: the user opens its folder to it first).
        if as_root:
            _run(client, ["chmod", "0777", "/run/corral"])
            _as_root(rt, target.id, program, detach=True)
        else:
            client.launch(program)
        _wait_file(client, f"/tmp/hijack-{tag}.pid")
        # 2. Control: it really listens there (this probe is its first and only connection).
        first = json.loads(_run(client, ["python3", "-c", PROBE]).strip())
        assert first in ("{", "\x00")
        # 3. The host talks to the real pcd, whatever sits in the PC's folder.
        health = rt.health(target.id)
        assert health.ok, health.detail
        shot = client.screenshot()
        assert (shot.screen_width, shot.screen_height) == (1280, 800)
        assert shot.png.startswith(b"\x89PNG")
        assert _run(client, ["echo", "still pcd"]).strip() == "still pcd"
        with rt.client(target.id) as fresh:  # a new connection, as every health check makes
            assert fresh.health()["x"] is True
        # 4. The planted listener saw only the probe's connection, never the host's.
        assert _run(client, ["cat", f"/tmp/hijack-{tag}"]) == "x"
        pid = _run(client, ["cat", f"/tmp/hijack-{tag}.pid"]).strip()
        if as_root:
            _as_root(rt, target.id, ["kill", pid])
        else:
            _run(client, ["kill", pid])


def test_the_host_socket_is_out_of_reach_and_its_descriptor_cannot_be_stolen(
    rt: PCRuntime, target: PCInfo
) -> None:
    """Nothing in the PC can name the host's socket, and no process can take pcd's (or its
    init's) listening descriptor: pidfd_getfd is refused, and a socket cannot be opened
    through /proc/PID/fd."""
    host_socket = rt.socket_path(target.id)
    code = f"""
        import ctypes, errno, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        out = {{"host_path": os.path.exists({str(host_socket)!r}),
                "host_folder": os.path.exists({str(host_socket.parent)!r})}}
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                cmd = open(f"/proc/{{pid}}/cmdline", "rb").read()
            except OSError:
                continue
            if b"pcd" not in cmd and b"tini" not in cmd:
                continue
            pidfd = libc.syscall(434, int(pid), 0)  # pidfd_open
            got = libc.syscall(438, pidfd, 3, 0) if pidfd >= 0 else -1  # pidfd_getfd
            out[f"getfd-{{pid}}"] = "ok" if got >= 0 else errno.errorcode[ctypes.get_errno()]
            try:
                os.close(os.open(f"/proc/{{pid}}/fd/3", os.O_RDWR))
                out[f"open-{{pid}}"] = "ok"
            except OSError as exc:
                out[f"open-{{pid}}"] = errno.errorcode[exc.errno]
        print(json.dumps(out))
    """
    with rt.client(target.id) as client:
        as_user = json.loads(_run(client, ["python3", "-c", textwrap.dedent(code)]).strip())
    as_root = json.loads(_as_root(rt, target.id, ["python3", "-c", textwrap.dedent(code)]).strip())
    for found in (as_user, as_root):
        assert found["host_path"] is False and found["host_folder"] is False
        tries = {k: v for k, v in found.items() if k.startswith(("getfd-", "open-"))}
        assert len(tries) >= 4, found  # tini and pcd, both ways
        assert "ok" not in tries.values(), found
    assert rt.health(target.id).ok


# Open pcd's memory from inside the PC (found by review: agents run as pcd's user).
PEEK = r"""
import json, os
for pid in os.listdir("/proc"):
    if not pid.isdigit() or pid == str(os.getpid()):
        continue
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if b"tini" in argv[0] or not any(b"corral-pcd" in a for a in argv[:3]):
        continue
    try:
        with open(f"/proc/{pid}/mem", "rb") as mem:
            print(json.dumps({"pid": pid, "opened": True}))
    except PermissionError as exc:
        print(json.dumps({"pid": pid, "opened": False, "error": str(exc)}))
"""


def test_pcd_memory_cannot_be_opened_from_inside_the_pc(rt: PCRuntime, target: PCInfo) -> None:
    with rt.client(target.id) as client:
        seen = [json.loads(line) for line in _run(client, ["python3", "-c", PEEK]).splitlines()]
        assert len(seen) == 1, seen  # found pcd (and only it)
        assert seen[0]["opened"] is False, seen
        # control: the agent's own processes stay dumpable, so the check above is not vacuous
        own = _run(client, ["python3", "-c", "open('/proc/self/mem', 'rb'); print('ok')"])
        assert own.strip() == "ok"
