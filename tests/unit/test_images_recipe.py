"""Recipe parsing and validation: every error names the key and what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import InvalidInputError
from corral.runtime.images import builtin_names, builtin_recipe_path, load_recipe
from corral.runtime.images._recipe import recipe_digest


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_minimal_recipe_defaults(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, 'name = "x"\npackages = ["xvfb", "python3", "xvfb"]\n'))
    assert r.name == "x"
    assert r.suite is None
    assert r.packages == ("python3", "xvfb")  # sorted, unique
    assert (r.user_name, r.user_uid) == ("user", 1000)
    assert r.files == ()


def test_files_content_and_source(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "blob").write_bytes(b"\x00\x01")
    r = load_recipe(
        _write(
            tmp_path,
            """
name = "x"
suite = "trixie"
packages = ["a1"]
[user]
name = "agent"
uid = 2000
[[files]]
path = "/etc/corral/motd"
content = "hi\\n"
[[files]]
path = "/opt//y/./blob"
source = "data/blob"
mode = "0755"
""",
        )
    )
    assert r.suite == "trixie"
    assert (r.user_name, r.user_uid) == ("agent", 2000)
    assert r.files[0].data == b"hi\n" and r.files[0].mode == 0o644
    assert r.files[1].path == "/opt/y/blob" and r.files[1].mode == 0o755
    assert r.files[1].data == b"\x00\x01"


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ('name = "x"\npakages = ["a1"]\n', "unknown key 'pakages'"),
        ('name = "x"\npackages = ["a1"]\n[user]\nuid = 1000\nshell = "zsh"\n', "'user.shell'"),
        ('name = "x"\npackages = []\n', "packages"),
        ('packages = ["a1"]\n', "name: required key is missing"),
        ('name = "X Y"\npackages = ["a1"]\n', "name: must be lowercase"),
        ('name = "x"\npackages = ["Bad_Name"]\n', "not Debian package names: 'Bad_Name'"),
        ('name = "x"\npackages = ["a1"]\n[user]\nuid = 0\n', "user.uid"),
        ('name = "x"\npackages = ["a1"]\n[user]\nname = "root"\n', "user.name"),
        (
            'name = "x"\npackages = ["a1"]\n[[files]]\npath = "etc/x"\ncontent = ""\n',
            "files[0].path: must be an absolute file path",
        ),
        (
            'name = "x"\npackages = ["a1"]\n[[files]]\npath = "/x"\n',
            "files[0]: give exactly one of 'content' or 'source'",
        ),
        (
            'name = "x"\npackages = ["a1"]\n[[files]]\npath = "/x"\ncontent = ""\nmode = "644x"\n',
            "files[0].mode: must be an octal string",
        ),
        ('name = "x"\npackages = ["a1"\n', "not valid TOML"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path: Path, body: str, expect: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        load_recipe(_write(tmp_path, body))
    assert expect in exc.value.message


def test_missing_source_file(tmp_path: Path) -> None:
    p = _write(tmp_path, 'name = "x"\npackages = ["a1"]\n[[files]]\npath = "/x"\nsource = "nope"\n')
    with pytest.raises(InvalidInputError, match=r"files\[0\]\.source"):
        load_recipe(p)


def test_builtins_exist_and_desktop_extends_minimal() -> None:
    assert {"minimal", "desktop"} <= set(builtin_names())
    minimal = load_recipe(builtin_recipe_path("minimal"))
    desktop = load_recipe(builtin_recipe_path("desktop"))
    assert minimal.name == "minimal" and desktop.name == "desktop"
    assert set(minimal.packages) <= set(desktop.packages)
    assert "chromium" in desktop.packages
    for pkg in ("tini", "xvfb", "openbox", "python3-pil", "python3-xlib", "xdotool"):
        assert pkg in minimal.packages


def test_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(InvalidInputError) as exc:
        builtin_recipe_path("nope")
    assert "minimal" in exc.value.message and "desktop" in exc.value.message
    with pytest.raises(InvalidInputError):
        builtin_recipe_path("../etc/passwd")


def test_recipe_digest_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    a = load_recipe(_write(tmp_path, 'name = "x"\npackages = ["b1", "a1"]\n', "a.toml"))
    b = load_recipe(_write(tmp_path, '# comment\nname="x"\npackages=["a1","b1"]\n', "b.toml"))
    c = load_recipe(_write(tmp_path, 'name = "x"\npackages = ["a1"]\n', "c.toml"))
    assert recipe_digest(a, "bookworm") == recipe_digest(b, "bookworm")
    assert recipe_digest(a, "bookworm") != recipe_digest(c, "bookworm")
    assert recipe_digest(a, "bookworm") != recipe_digest(a, "trixie")
    assert recipe_digest(a, "bookworm").startswith("sha256:")
