"""uid ranges are claimed host-wide, so no two PCs share host uids across state folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.runtime import _state
from corral.runtime._state import StateDir


def test_claims_are_host_wide_and_stale_ones_are_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_state, "SLOTS_DIR", tmp_path / "slots")
    one, two = StateDir(tmp_path / "a"), StateDir(tmp_path / "b")
    for state, pc in ((one, "pc-1"), (two, "pc-2")):
        state.pc_dir(pc).mkdir(parents=True)
    first, second = one.claim_slot("pc-1"), two.claim_slot("pc-2")
    assert first != second
    two.release_slot("pc-2", second)
    one.pc_dir("pc-3").mkdir()
    assert one.claim_slot("pc-3") == second  # released ranges are reused
    # a claim whose PC folder vanished without releasing it is stale and taken over
    import shutil

    shutil.rmtree(one.pc_dir("pc-1"))
    two.pc_dir("pc-4").mkdir()
    assert two.claim_slot("pc-4") == first
    one.release_slot("pc-1", first)  # a stale owner cannot release the new holder's claim
    assert (tmp_path / "slots" / str(first)).read_text() == str(two.pc_dir("pc-4"))
