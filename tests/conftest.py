"""Shared test setup: tests under tests/runtime and tests/e2e are marked `runtime`."""

from __future__ import annotations

from pathlib import Path

import pytest

_RUNTIME_DIRS = ("runtime", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(part in _RUNTIME_DIRS for part in Path(str(item.fspath)).parts):
            item.add_marker(pytest.mark.runtime)


@pytest.fixture(autouse=True)
def _private_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each test gets its own data folder (the store key file lives there), never the
    operator's `~/.local/share/corral`; tests that need a particular one set it themselves."""
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path_factory.mktemp("data")))
