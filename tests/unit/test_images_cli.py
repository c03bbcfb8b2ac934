"""`corral image list` on a fake store, and build's error path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.image import app
from corral.runtime.images import ImageStore


def test_list_shows_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_IMAGE_DIR", str(tmp_path))
    staging = tmp_path / ".staging-1"
    (staging / "rootfs").mkdir(parents=True)
    ImageStore(tmp_path).publish(
        "minimal",
        staging,
        {
            "name": "minimal",
            "digest": "sha256:" + "c" * 64,
            "packages": [{"name": "a", "version": "1"}] * 3,
            "size_bytes": 3 * 1024 * 1024,
            "built_at": "2000-01-01T00:00:00Z",
            "user": {"name": "user", "uid": 1000, "gid": 1000, "home": "/home/user"},
        },
    )
    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "minimal" in line)
    assert "cccccccccccc" in row and "3.0 MiB" in row and "d ago" in row and " 3 " in row


def test_list_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_IMAGE_DIR", str(tmp_path / "none"))
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    assert "no images yet" in result.output


def test_build_unknown_builtin_is_an_input_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["build", "no-such-image"])
    assert result.exit_code == 2
    assert "built-ins: desktop, minimal" in result.output


def test_build_with_bad_recipe_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text('name = "x"\npackages = ["a1"]\nshell = "zsh"\n')
    result = CliRunner().invoke(app, ["build", "x", "--recipe", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'shell'" in result.output
    assert os.path.exists(bad)
