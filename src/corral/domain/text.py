"""Untrusted text made safe to show to a human (issue 9, section 4).

Commands, window titles, file names and typed text come from agents and from inside PCs. Shown
as they are, a control character can move the cursor or recolour a terminal (ANSI escapes), a
bidirectional override can make `rm -rf ~ #\u202e` read differently from what runs, and an
invisible format character can hide words. `visible` turns every such character into an escape
that a reader sees (`\\u202e`, `\\x1b`), and leaves all other text as it is. Pure, no I/O: the
CLI and the console both use it (each adds its own markup or HTML escaping on top).
"""

from __future__ import annotations

import unicodedata

__all__ = ["visible"]

# Categories shown as escapes: control (C0, DEL, C1), format (bidi controls, zero-width
# characters, tag characters), surrogates (from undecodable bytes), private use and unassigned
# code points (no agreed glyph), line and paragraph separators, and spaces other than the ASCII
# one (NBSP, the em/en spaces, U+3000: they pass for a plain space).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
# Letters and marks that draw nothing, used to hide or spoof text (Hangul fillers, the combining
# grapheme joiner, the Mongolian vowel separator and free variation selectors, the Khmer
# inherent vowels, the blank Braille pattern).
_INVISIBLE = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180E, 0x180F, 0x2800}
    | {0x3164, 0xFFA0}
    | set(range(0xFE00, 0xFE10))  # variation selectors
    | set(range(0xE0100, 0xE01F0))  # variation selectors supplement
)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control, bidi, format and invisible character written as an escape.

    `keep_newlines` keeps `\\n` (and only `\\n`) for multi-line text shown as a block; tabs and
    carriage returns are escaped either way. Plain printable ASCII is returned at once.
    """
    if text.isascii() and text.isprintable():  # plain printable ASCII: nothing to do
        return text
    out: list[str] = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ord(ch) in _INVISIBLE or (
            ch != " " and unicodedata.category(ch) in _ESCAPED_CATEGORIES
        ):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)
