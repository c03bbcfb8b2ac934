"""Session handles: bound to the agent and its DPoP key, unforgeable, shared by every process
holding the keyring, and they rotate with it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from corral.domain.access import Caller, CallerKind
from corral.identity.handles import InvalidSessionHandleError, SessionHandles
from corral.identity.keys import SigningKeyring

NOW = 1_900_000_000.0
AGENT = Caller(CallerKind.AGENT, "agt-1", jkt="key-one")
SID = "ses-0123456789abcdef"


@pytest.fixture
def ring() -> SigningKeyring:
    return SigningKeyring.generate(now=NOW)


def test_a_handle_opens_for_its_caller_and_key(ring: SigningKeyring) -> None:
    handles = SessionHandles.from_keyring(ring)
    handle = handles.mint(SID, AGENT)
    assert handle.startswith(SID + ".") and len(handle) == len(SID) + 23
    assert handles.open(handle, AGENT) == SID
    assert handles.mint(SID, AGENT) == handle  # deterministic: nothing to store


@pytest.mark.parametrize(
    "other",
    [
        Caller(CallerKind.AGENT, "agt-2", jkt="key-one"),  # another agent
        Caller(CallerKind.AGENT, "agt-1", jkt="key-two"),  # the same agent, another key
        Caller(CallerKind.AGENT, "agt-1"),  # the same agent as a bearer
        Caller(CallerKind.USER, "agt-1", jkt="key-one"),  # a user with the agent's id
        None,
    ],
)
def test_another_caller_or_key_is_refused(ring: SigningKeyring, other: Caller | None) -> None:
    handles = SessionHandles.from_keyring(ring)
    with pytest.raises(InvalidSessionHandleError, match="not valid for this caller") as caught:
        handles.open(handles.mint(SID, AGENT), other)
    assert caught.value.code == "invalid_session_handle"
    assert "DPoP key" in (caught.value.hint or "")


def test_altered_and_forged_handles_are_refused(ring: SigningKeyring) -> None:
    handles = SessionHandles.from_keyring(ring)
    handle = handles.mint(SID, AGENT)
    sid, tag = handle.split(".")
    flipped = base64.urlsafe_b64decode(tag + "==")
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    forged = [
        f"ses-0123456789abcdee.{tag}",  # another session, the same tag
        f"{sid}.{base64.urlsafe_b64encode(flipped).rstrip(b'=').decode()}",
        SessionHandles.ephemeral().mint(SID, AGENT),  # another server's key
        SessionHandles.from_keyring(SigningKeyring.generate(now=NOW)).mint(SID, AGENT),
    ]
    for bad in forged:
        with pytest.raises(InvalidSessionHandleError, match="not valid"):
            handles.open(bad, AGENT)
    for malformed in ["", SID, f"{SID}.", f"{SID}.{tag}x", f"a b.{tag}", "x" * 200, 42, None]:
        with pytest.raises(InvalidSessionHandleError, match="malformed"):
            handles.open(malformed, AGENT)


def test_every_process_with_the_keyring_opens_it(ring: SigningKeyring, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring.save(path)
    minted = SessionHandles.from_keyring(ring).mint(SID, AGENT)
    other_process = SessionHandles.from_keyring(SigningKeyring.load(path))
    assert other_process.open(minted, AGENT) == SID


def test_handles_rotate_with_the_keyring(ring: SigningKeyring) -> None:
    handles = SessionHandles.from_keyring(ring)
    before = handles.mint(SID, AGENT)
    ring.rotate(now=NOW + 10, keep_old_for=60)
    after = handles.mint(SID, AGENT)
    assert after != before  # minted under the new key
    assert handles.open(before, AGENT) == handles.open(after, AGENT) == SID
    ring.prune(now=NOW + 100)  # the old key retired: what it minted stops opening
    with pytest.raises(InvalidSessionHandleError):
        handles.open(before, AGENT)
    assert handles.open(after, AGENT) == SID
