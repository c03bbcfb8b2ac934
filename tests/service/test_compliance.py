"""The PC compliance facts policies see: `image_current` compares the digest a PC booted from
with the image's current build, and fails closed when either is unknown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.errors import NotFoundError
from corral.lifecycle import manager as manager_module
from corral.lifecycle.control import ControlPlane
from corral.store import Store


@dataclass
class _Image:
    digest: str


@dataclass
class _Info:
    image: str
    image_digest: str


class _Runtime:
    """Just what the compliance check reads: PC records and the image registry."""

    def __init__(self) -> None:
        self.current = {"desktop": "sha256:one"}
        self.pcs = {"pc-1": _Info("desktop", "sha256:one")}
        self.images = self

    def get(self, name: str) -> _Image:
        if name not in self.current:
            raise NotFoundError(f"no image {name}")
        return _Image(self.current[name])

    def info(self, pc_id: str) -> _Info:
        if pc_id not in self.pcs:
            raise NotFoundError(f"no PC {pc_id}")
        return self.pcs[pc_id]


def test_image_current_follows_rebuilds_and_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _Runtime()
    control = ControlPlane(Store(f"sqlite:///{tmp_path}/c.db"), runtime)  # type: ignore[arg-type]
    assert control.manager.compliance("pc-1").image_current is True
    runtime.current["desktop"] = "sha256:two"  # the image was rebuilt
    assert (
        control.manager.compliance("pc-1").image_current is True
    )  # within the cache's few seconds
    monkeypatch.setattr(manager_module, "IMAGE_DIGEST_TTL_S", 0.0)
    assert control.manager.compliance("pc-1").image_current is False
    assert control.manager.compliance("pc-unknown").image_current is False
    del runtime.current["desktop"]
    assert control.manager.compliance("pc-1").image_current is False
    assert control.manager.compliance("pc-1").healthy is True
