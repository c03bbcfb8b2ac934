"""Reading the host's apt sources: deb822 and classic, main suite and its companions."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import ImageBuildError
from corral.runtime.images._mirror import (
    AptSource,
    choose_mirror,
    host_mirror,
    image_sources,
    parse_classic,
    parse_deb822,
    render_deb822,
)

MAIN = "http://mirror.invalid/debian"
SEC = "http://mirror.invalid/debian-security"

DEB822 = f"""Types: deb
# a comment line
URIs: {MAIN}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: {MAIN}
Suites: bookworm
Components: main

Types: deb
URIs: {SEC}
Suites: bookworm-security
Components: main

Types: deb
URIs: http://other.invalid/repo
Suites: bookworm
Components: stable
Enabled: no
"""

CLASSIC = f"""# comment
deb [arch=amd64 signed-by=/k.gpg] {MAIN} bookworm main contrib
deb {MAIN} bookworm-updates main
deb-src {MAIN} bookworm main
deb {SEC} bookworm-security main # trailing comment
deb http://third.invalid/docker bookworm stable
deb {MAIN} bookworm-backports main
"""


def test_parse_deb822() -> None:
    srcs = parse_deb822(DEB822)
    assert srcs == [
        AptSource(
            MAIN,
            ("bookworm", "bookworm-updates"),
            ("main",),
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ),
        AptSource(SEC, ("bookworm-security",), ("main",)),
    ]


def test_parse_classic() -> None:
    srcs = parse_classic(CLASSIC)
    assert srcs[0] == AptSource(MAIN, ("bookworm",), ("main", "contrib"), "/k.gpg")
    assert [s.suites[0] for s in srcs] == [
        "bookworm",
        "bookworm-updates",
        "bookworm-security",
        "bookworm",
        "bookworm-backports",
    ]


@pytest.mark.parametrize("text", [DEB822, CLASSIC])
def test_choose_mirror_keeps_main_updates_security_only(text: str) -> None:
    srcs = parse_deb822(text) if text is DEB822 else parse_classic(text)
    m = choose_mirror(srcs)
    assert (m.uri, m.suite) == (MAIN, "bookworm")
    suites = sorted(s for src in m.sources for s in src.suites)
    assert suites == ["bookworm", "bookworm-security", "bookworm-updates"]
    assert all("invalid/docker" not in s.uri for s in m.sources)


def test_security_listed_first_still_picks_main() -> None:
    srcs = parse_classic(f"deb {SEC} bookworm-security main\ndeb {MAIN} bookworm main\n")
    assert choose_mirror(srcs).uri == MAIN


def test_no_debian_source_is_a_clear_error() -> None:
    with pytest.raises(ImageBuildError, match="Debian mirror"):
        choose_mirror(parse_classic("deb http://x.invalid/ nodistro stable\n"))


def test_image_sources_follow_the_recipe_suite() -> None:
    m = choose_mirror(parse_deb822(DEB822))
    out = image_sources(m, "trixie", "/usr/share/keyrings/debian-archive-keyring.gpg")
    assert [s.suites for s in out] == [("trixie", "trixie-updates"), ("trixie-security",)]
    text = render_deb822(out)
    assert "Suites: trixie trixie-updates\n" in text
    assert text.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg") == 2
    assert parse_deb822(text) == out  # round trip


def test_host_mirror_reads_both_styles(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing here\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "extra.list").write_text("deb http://x.invalid/ y stable\n")
    (tmp_path / "sources.list.d" / "old.sources.disabled").write_text("garbage")
    assert host_mirror(tmp_path).uri == MAIN
