"""Fixtures for tests on real PCs: root, runc and the built `minimal` image are required.

CI runs as root and `make test` builds the image first, so these never skip; run them
elsewhere with `sudo make test`, or leave them out with `-m "not runtime"`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import PCNotFoundError
from corral.runtime.pcs import PCInfo, PCRuntime

TEST_IMAGE = os.environ.get("CORRAL_TEST_IMAGE", "minimal")


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail(
            "runtime tests need root (CI is root): run `sudo make test`, "
            "or deselect them with -m 'not runtime'"
        )
    clean_stale_test_states()
    root = Path(f"/run/corral-test-{os.getpid()}")
    root.mkdir(parents=True, exist_ok=True)
    yield root
    rt = PCRuntime(root)
    for pc in rt.list_pcs():
        rt.destroy(pc.id)
    rt.reconcile(boot_grace_s=0)
    shutil.rmtree(root, ignore_errors=True)


def clean_stale_test_states() -> None:
    """Destroy what earlier test runs that were killed (no teardown) left running."""
    for stale in [*Path("/run").glob("corral-test-*"), *Path("/run").glob("corral-e2e-*")]:
        pid = stale.name.split("-")[2]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue  # a test run still going on
        rt = PCRuntime(stale)
        for pc in rt.list_pcs():
            rt.destroy(pc.id)
        rt.reconcile(boot_grace_s=0)
        shutil.rmtree(stale, ignore_errors=True)


@pytest.fixture(scope="session")
def rt(state_root: Path) -> PCRuntime:
    runtime = PCRuntime(state_root)
    runtime.lxcfs.ensure()  # the host's daemon, up before any snapshot of the host is taken
    return runtime


@pytest.fixture
def pc(rt: PCRuntime) -> Iterator[PCInfo]:
    info = rt.boot(TEST_IMAGE)
    yield info
    with contextlib.suppress(PCNotFoundError):
        rt.destroy(info.id)


@pytest.fixture
def corral_cli(state_root: Path) -> CorralCLI:
    return CorralCLI(state_root)


class CorralCLI:
    """Runs the real `corral` command in a child process against the test state folder."""

    def __init__(self, state_root: Path) -> None:
        self.env = {**os.environ, "CORRAL_STATE_DIR": str(state_root), "COLUMNS": "200"}

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
