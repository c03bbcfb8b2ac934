"""A PC whose daemon misbehaves is quarantined, and it cannot starve the rest (issue 9, sect. 1).

The control plane runs on a real store (SQLite) and the fake runtime of test_control, except
that a "hostile" PC's client and health check are the real PcdClient talking to a real unix
socket whose peer misbehaves (trickles, holds, sends garbage), as anything inside a PC may.
The real socket cannot be hijacked from inside a PC (tests/runtime/test_pcd_socket.py); this
covers what the host does when the PC's own daemon is the one misbehaving.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from corral.domain.models import PCState, PoolSpec, SessionState
from corral.errors import CorralError, PCMisbehavingError
from corral.lifecycle import manager as manager_module
from corral.lifecycle.control import ControlPlane
from corral.lifecycle.manager import HEALTH_THREADS, RUNTIME_THREADS
from corral.runtime.client import PcdClient
from corral.runtime.pcs import Health, PCInfo
from corral.store import Store
from tests.support.fakes import FakeDriver

from .test_control import ADMIN

pytestmark = pytest.mark.anyio

Behaviour = Callable[[socket.socket, threading.Event], None]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Peers:
    """Hostile peers on real unix sockets; each accepted connection runs `behaviour`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stop = threading.Event()
        self.connected = 0
        self.lock = threading.Lock()
        self._servers: list[socket.socket] = []

    def start(self, name: str, behaviour: Behaviour) -> Path:
        path = self.root / f"{name}.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(64)
        server.settimeout(0.1)
        self._servers.append(server)

        def serve(conn: socket.socket) -> None:
            with conn:
                try:
                    conn.recv(65536)  # the request line
                    with self.lock:
                        self.connected += 1
                    behaviour(conn, self.stop)
                except OSError:
                    return

        def accept() -> None:
            while not self.stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return path

    def close(self) -> None:
        self.stop.set()
        for server in self._servers:
            server.close()


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    """A byte every 50 ms: every single recv is answered in time, the answer never ends."""
    while not stop.wait(0.05):
        conn.sendall(b" ")


def hold(conn: socket.socket, stop: threading.Event) -> None:
    """Answer nothing until the test lets go."""
    stop.wait(60)


def garbage(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"\x00\xff[[[ not an answer\n")
    stop.wait(60)


class HostileRuntime(FakeDriver):
    """FakeDriver whose PCs listed in `hostile` are reached through the real client."""

    def __init__(self, peers: Peers) -> None:
        super().__init__()
        self.peers = peers
        self.hostile: dict[str, Path] = {}
        self.resets = 0

    def reset(self, pc_id: str) -> PCInfo:
        with self.lock:
            self.resets += 1
        return super().reset(pc_id)

    # The point of this fake: hostile PCs get the real PcdClient (others the in-memory pcd).
    def client(self, pc_id: str, timeout: float = 30.0) -> PcdClient:
        path = self.hostile.get(pc_id)
        if path is None:
            return super().client(pc_id, timeout)
        return PcdClient(path, timeout=1.0, screen="1280x800x24")

    def health(self, pc_id: str) -> Health:
        """What PCRuntime.health does with the client's answer."""
        path = self.hostile.get(pc_id)
        if path is None:
            return super().health(pc_id)
        try:
            with PcdClient(path, timeout=30.0) as client:
                client.health(timeout=30.0)
        except PCMisbehavingError as exc:
            return Health(False, False, False, str(exc), misbehaving=True)
        except CorralError as exc:
            return Health(False, False, False, str(exc))
        return Health(True, True, True, "healthy")


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    found = Peers(tmp_path)
    yield found
    found.close()


@pytest.fixture
async def plane(
    tmp_path: Path, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ControlPlane, HostileRuntime]]:
    monkeypatch.setattr(manager_module, "HEALTH_EVERY_S", 0.1)
    runtime = HostileRuntime(peers)
    control = ControlPlane(Store(f"sqlite:///{tmp_path}/c.db"), runtime)
    await control.start()
    manager = asyncio.create_task(control.run())
    yield control, runtime
    peers.close()
    manager.cancel()
    with pytest.raises(asyncio.CancelledError):
        await manager
    await control.stop()


async def _wait_for(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


async def _cycle(control: ControlPlane, runtime: HostileRuntime, pool: str) -> None:
    """Acquire a PC of `pool`, release it, and wait until it is reset and lendable again."""
    session = await control.acquire(pool, wait_s=10, principal=ADMIN)
    resets = runtime.resets
    await control.release(session.id, principal=ADMIN)
    await _wait_for(
        lambda: (
            runtime.resets > resets and control.get_pool(pool, principal=ADMIN).counts["ready"] >= 1
        )
    )


@pytest.mark.parametrize("behaviour", [trickle, garbage], ids=["trickle", "garbage"])
async def test_an_action_on_a_misbehaving_pc_quarantines_it_and_ends_the_session(
    plane: tuple[ControlPlane, HostileRuntime], peers: Peers, behaviour: Behaviour
) -> None:
    control, runtime = plane
    await control.create_pool(PoolSpec("bad", "minimal", warm=1, max=2), principal=ADMIN)
    await control.create_pool(PoolSpec("good", "minimal", warm=1, max=1), principal=ADMIN)
    session = await control.acquire("bad", wait_s=10, principal=ADMIN)
    runtime.hostile[session.pc_id] = peers.start(session.pc_id, behaviour)
    act = asyncio.create_task(
        control.act(session.id, "screenshot", {}, principal=ADMIN),
    )
    await _wait_for(lambda: peers.connected >= 1)
    # While the PC misbehaves, another pool keeps acquiring and resetting.
    await _cycle(control, runtime, "good")
    with pytest.raises(PCMisbehavingError):
        await act
    pcs = {pc.id: pc for pc in control.list_pool_pcs("bad", principal=ADMIN)}
    bad = pcs[session.pc_id]
    assert bad.state is PCState.QUARANTINED
    assert "misbehaving" in bad.detail
    ended = control.store.get_session(session.id)
    assert ended.state is SessionState.RELEASED and ended.release_reason == "pc_misbehaving"
    # The pool replaces it, and the other pool is still fine.
    await _wait_for(lambda: control.get_pool("bad", principal=ADMIN).counts["ready"] >= 1)
    await _cycle(control, runtime, "good")


async def test_a_misbehaving_health_answer_quarantines_at_once(
    plane: tuple[ControlPlane, HostileRuntime], peers: Peers
) -> None:
    control, runtime = plane
    await control.create_pool(PoolSpec("bad", "minimal", warm=1, max=2), principal=ADMIN)
    session = await control.acquire("bad", wait_s=10, principal=ADMIN)
    runtime.hostile[session.pc_id] = peers.start(session.pc_id, garbage)
    await _wait_for(lambda: control.store.get_session(session.id).state is SessionState.RELEASED)
    assert control.store.get_session(session.id).release_reason == "pc_misbehaving"
    assert control.store.get_pc(session.pc_id).state is PCState.QUARANTINED


async def test_health_checks_held_by_pcs_never_block_boots_and_resets(
    plane: tuple[ControlPlane, HostileRuntime], peers: Peers
) -> None:
    """As many hostile PCs as the runtime has threads each hold their health check open; a
    reset and a boot in another pool still go through while every one of them is held."""
    control, runtime = plane
    count = RUNTIME_THREADS
    await control.create_pool(PoolSpec("bad", "minimal", warm=count, max=count), principal=ADMIN)
    await control.create_pool(PoolSpec("good", "minimal", warm=1, max=2), principal=ADMIN)
    await _wait_for(lambda: control.get_pool("bad", principal=ADMIN).counts["ready"] == count)
    for pc in control.list_pool_pcs("bad", principal=ADMIN):
        runtime.hostile[pc.id] = peers.start(pc.id, hold)
    await _wait_for(lambda: peers.connected >= min(HEALTH_THREADS, count))
    await _cycle(control, runtime, "good")
    await control.acquire("good", wait_s=10, principal=ADMIN)
    await _wait_for(lambda: control.get_pool("good", principal=ADMIN).counts["ready"] >= 1)
    assert not peers.stop.is_set()  # every hostile check was still held all along
