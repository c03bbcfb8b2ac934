"""Typing arbitrary Unicode text through XTEST.

xdotool types a character missing from the keymap by remapping a scratch keycode per
character and restoring it right after; a client that reads its keymap late then decodes the
key with the wrong mapping (typing "héllo" into xterm gave "h日llo"). Here the keymap changes
only between batches:

1. Characters already on the keyboard (at level 1, or level 2 with Shift) use their keys.
2. The others get spare keycodes (ones with no keysyms), all mapped in one request, before
   any key of the batch is sent; a client sees that MappingNotify before the batch's keys.
3. Spare keycodes keep their keysyms afterwards (restoring them is what races), and are reused
   by later texts; when a text needs more of them than exist, it is typed in batches with a
   pause in between so clients finish decoding one batch before the keymap changes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from .xconn import XConn

RESERVED_SPARES = 2  # left empty for xdotool's own scratch keycode (press_keys)
_KEYS_PER_SYNC = 8
_PAUSE_S = 0.002  # after every few keys, like a very fast typist
_REMAP_SETTLE_S = 0.02  # after a keymap change, for clients that refresh asynchronously
_BATCH_GAP_S = 0.15  # before reusing spare keycodes that the previous keys may still need

_SPECIAL = {"\n": 0xFF0D, "\r": 0xFF0D, "\t": 0xFF09, "\b": 0xFF08, "\x1b": 0xFF1B}


def keysym_for(char: str) -> int | None:
    """The keysym that types `char`, or None for characters nobody can type (controls)."""
    if char in _SPECIAL:
        return _SPECIAL[char]
    code = ord(char)
    if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
        return None
    if code < 0x100:
        return code  # Latin-1 keysyms equal their code points
    return 0x1000000 + code


class Typer:
    """Keeps the spare-keycode assignments of one X connection."""

    def __init__(self, x: XConn) -> None:
        self.x = x
        self._lock = threading.Lock()
        self._spares: list[int] = []
        self._assigned: OrderedDict[int, int] = OrderedDict()  # keysym -> keycode, LRU order
        self._keys: dict[int, tuple[int, bool]] = {}  # keysym -> (keycode, needs shift)
        self._last_key_at = 0.0
        self._width = 2

    def _load(self, d: Any) -> None:
        """Read the keymap afresh (another program, such as xdotool or setxkbmap, may have
        changed it; we never read MappingNotify events): which keys type what, which keycodes
        are spare, and which of our earlier assignments still hold."""
        info = d.display.info
        first = info.min_keycode
        rows = d.get_keyboard_mapping(first, info.max_keycode - first + 1)
        self._width = len(rows[0]) if rows else 2
        ours = {keycode: keysym for keysym, keycode in self._assigned.items()}
        empty: list[int] = []
        self._keys = {}
        for offset, row in enumerate(rows):
            keycode = first + offset
            if not any(row):
                empty.append(keycode)
            elif ours.get(keycode) == row[0]:
                continue  # still ours
            else:
                self._assigned.pop(ours.get(keycode, -1), None)
                for index in (1, 0):  # level 1 wins over Shift+level 2
                    if row[index] and (index == 0 or row[index] != row[0]):
                        self._keys[row[index]] = (keycode, index == 1)
        for keysym, keycode in list(self._assigned.items()):
            if keycode in empty:  # someone cleared it
                del self._assigned[keysym]
        self._spares = empty[RESERVED_SPARES:] + list(self._assigned.values())

    def _lookup(self, d: Any, keysym: int) -> tuple[int, bool] | None:
        """(keycode, needs shift) for a keysym on the current keyboard, if any."""
        if keysym in self._assigned:
            return self._assigned[keysym], False
        return self._keys.get(keysym)

    def type(self, text: str) -> int:
        """Type `text`; return the number of characters typed (controls are skipped)."""
        with self._lock, self.x.session() as d:
            self._load(d)
            shift = self._keys.get(0xFFE1, (0, False))[0]  # Shift_L
            plan: list[tuple[int, int]] = []  # (keysym, index into text) for typeable chars
            i = 0
            while i < len(text):
                if text.startswith("\r\n", i):
                    i += 1
                keysym = keysym_for(text[i])
                if keysym is not None:
                    plan.append((keysym, i))
                i += 1
            start = 0
            while start < len(plan):
                start = self._type_batch(d, plan, start, shift)
            return len(plan)

    def _type_batch(self, d: Any, plan: list[tuple[int, int]], start: int, shift: int) -> int:
        """Map what the longest possible run of `plan` from `start` needs, type it; return
        where the next batch starts."""
        spares = self._spares
        needed: dict[int, None] = {}  # keysyms needing a spare, in order of first use
        end = start
        while end < len(plan):
            keysym = plan[end][0]
            if keysym not in needed and self._lookup(d, keysym) is None:
                if len(needed) == len(spares):
                    break
                needed[keysym] = None
            end += 1
        if end == start:  # no spare keycodes at all: skip the character
            return start + 1
        if needed:
            self._map(d, list(needed), {k for k, _ in plan[start:end]})
        for n, (keysym, _) in enumerate(plan[start:end], 1):
            found = self._lookup(d, keysym)
            if found is None:
                continue
            keycode, shifted = found
            self._press(d, keycode, shift if shifted else 0)
            if n % _KEYS_PER_SYNC == 0:
                self.x.sync(d)
                time.sleep(_PAUSE_S)
        self.x.sync(d)
        self._last_key_at = time.monotonic()
        return end

    def _map(self, d: Any, keysyms: list[int], keep: set[int]) -> None:
        """Put `keysyms` on spare keycodes, evicting least recently used ones not in `keep`."""
        spares = self._spares
        free = [k for k in spares if k not in self._assigned.values()]
        victims = [ks for ks in self._assigned if ks not in keep]
        if len(free) < len(keysyms):
            # Reusing keycodes: give clients time to decode keys sent with the old mapping.
            wait = self._last_key_at + _BATCH_GAP_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        for keysym in keysyms:
            keycode = free.pop(0) if free else self._assigned.pop(victims.pop(0))
            self._assigned[keysym] = keycode
            d.change_keyboard_mapping(keycode, [(keysym,) * self._width])
        for keysym in keep:
            if keysym in self._assigned:
                self._assigned.move_to_end(keysym)
        self.x.sync(d)
        time.sleep(_REMAP_SETTLE_S)

    def _press(self, d: Any, keycode: int, modifier: int) -> None:
        from Xlib import X  # type: ignore[import-untyped]
        from Xlib.ext import xtest  # type: ignore[import-untyped]

        if modifier:
            xtest.fake_input(d, X.KeyPress, modifier)
        xtest.fake_input(d, X.KeyPress, keycode)
        xtest.fake_input(d, X.KeyRelease, keycode)
        if modifier:
            xtest.fake_input(d, X.KeyRelease, modifier)
