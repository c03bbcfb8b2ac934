"""Image builds check the Debian archive's signatures: debootstrap is told to fail when it
cannot check them, a missing keyring stops the build with the package to install, and apt in
the new root is never told to accept unsigned archives."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import ImageBuildError
from corral.runtime.images._base import _APT, BaseBuilder, archive_keyring, debootstrap_argv
from corral.runtime.images._mirror import Mirror, image_sources, parse_classic, render_deb822
from corral.runtime.images._run import CommandLog

MAIN = "http://mirror.invalid/debian"


def _mirror(signed_by: str | None = None) -> Mirror:
    return Mirror(MAIN, "bookworm", ("main",), signed_by, ())


def test_debootstrap_checks_signatures_against_the_keyring(tmp_path: Path) -> None:
    keyring = tmp_path / "archive.gpg"
    argv = debootstrap_argv(
        "bookworm", "amd64", tmp_path / "debs", tmp_path / "root", MAIN, keyring
    )
    assert argv[0] == "debootstrap"
    assert "--force-check-gpg" in argv
    assert f"--keyring={keyring}" in argv
    assert argv[-3:] == ["bookworm", str(tmp_path / "root"), MAIN]  # options before operands


def test_the_hosts_signed_by_keyring_wins_over_debians(tmp_path: Path) -> None:
    own, default = tmp_path / "own.gpg", tmp_path / "debian.gpg"
    own.write_bytes(b"k")
    default.write_bytes(b"k")
    assert archive_keyring(_mirror(str(own)), default) == own
    assert archive_keyring(_mirror(str(tmp_path / "gone.gpg")), default) == default
    assert archive_keyring(_mirror(), default) == default


def test_a_missing_keyring_stops_the_build_before_any_download(tmp_path: Path) -> None:
    log = CommandLog(tmp_path / "build.log")
    builder = BaseBuilder(
        cache=tmp_path / "cache",
        mirror=_mirror(),
        suite="bookworm",
        arch="amd64",
        log=log,
        step=lambda _: None,
        keyring=tmp_path / "missing.gpg",
    )
    try:
        with pytest.raises(ImageBuildError) as info:
            builder.bootstrap()
    finally:
        log.close()
    assert str(tmp_path / "missing.gpg") in info.value.message
    assert "debian-archive-keyring" in (info.value.hint or "")
    assert (tmp_path / "build.log").read_text() == ""  # debootstrap never ran
    assert not (tmp_path / "cache" / "bootstrap").exists()


def test_apt_in_the_image_never_accepts_unsigned_archives() -> None:
    assert "APT::Get::AllowUnauthenticated=false" in _APT
    assert "Acquire::AllowInsecureRepositories=false" in _APT
    host = parse_classic(f"deb [trusted=yes allow-insecure=yes] {MAIN} bookworm main\n")
    mirror = Mirror(MAIN, "bookworm", ("main",), None, tuple(host))
    rendered = render_deb822(image_sources(mirror, "bookworm", None)).lower()
    assert "trusted" not in rendered
    assert "insecure" not in rendered
