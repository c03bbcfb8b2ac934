"""The data folder at start, through the real `corral` command in a child process: created
private; what others could read is fixed and said so; what someone else owns is refused."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.cli.main import app

NOBODY = 65534


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """The usual umask: files would be created readable by everyone."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _corral(data: Path, *args: str) -> Result:
    """The `corral` command in this process (a child process costs seconds of imports)."""
    env = {"CORRAL_DATA_DIR": str(data), "CORRAL_DATABASE_URL": None, "COLUMNS": "250"}
    return CliRunner().invoke(app, list(args), env=env)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _started(data: Path) -> None:
    done = _corral(data, "user", "list")
    assert done.exit_code == 0, done.stderr


def test_first_start_creates_everything_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _started(data)
    assert _mode(data) == 0o700
    files = {p.name: _mode(p) for p in data.iterdir()}
    assert {"corral.db", "secrets.key"} <= set(files)
    assert set(files.values()) == {0o600}, files  # the -wal and -shm files too


def test_a_readable_data_folder_is_fixed_and_said(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _started(data)
    data.chmod(0o755)
    for name in ("corral.db", "secrets.key"):
        (data / name).chmod(0o644)
    (data / "admin.json").write_text("{}")
    (data / "admin.json").chmod(0o666)
    done = _corral(data, "user", "list")
    assert done.exit_code == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert f"fixed: {data} was mode 0755" in said
    for name, mode in (("corral.db", "0644"), ("secrets.key", "0644"), ("admin.json", "0666")):
        assert f"fixed: {data / name} was mode {mode}" in said
    assert _mode(data) == 0o700
    assert {_mode(p) for p in data.iterdir()} == {0o600}
    assert "fixed" not in _corral(data, "user", "list").stderr  # said once, when it was so


@pytest.mark.parametrize("name", ["corral.db", "secrets.key", "corral.db-wal"])
def test_a_file_someone_else_owns_is_refused(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    _started(data)
    target = data / name
    target.touch()
    os.chown(target, NOBODY, NOBODY)
    target.chmod(0o644)
    done = _corral(data, "user", "list")
    assert done.exit_code == 10
    said = " ".join(done.stderr.split())
    assert f"refusing to start: {target} belongs to uid {NOBODY}" in said
    assert _mode(target) == 0o644  # left as found, for the operator to look at


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _started(data)
    elsewhere = tmp_path / "elsewhere.key"
    (data / "secrets.key").rename(elsewhere)
    (data / "secrets.key").symlink_to(elsewhere)
    done = _corral(data, "user", "list")
    assert done.exit_code == 10
    assert f"refusing to start: {data / 'secrets.key'} is a symlink" in " ".join(
        done.stderr.split()
    )


def test_a_data_folder_someone_else_owns_is_refused_by_corral_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _started(data)
    os.chown(data, NOBODY, NOBODY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the real server command, in a child process of its own
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "corral", "up", "--no-default-pool", "--port", str(port)],
        env={**env, "CORRAL_DATA_DIR": str(data), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 10
    assert f"refusing to start: {data} belongs to uid {NOBODY}" in " ".join(done.stderr.split())
