"""Key names: validate them against real X keysyms and turn them into xdotool key arguments."""

from __future__ import annotations

import contextlib
import re
import threading
from functools import cache

from .errors import bad_request

MAX_KEYS = 200

# Friendly names agents use -> X keysym names (matched case-insensitively).
ALIASES = {
    "ctrl": "Control_L",
    "control": "Control_L",
    "lctrl": "Control_L",
    "rctrl": "Control_R",
    "alt": "Alt_L",
    "lalt": "Alt_L",
    "ralt": "Alt_R",
    "altgr": "ISO_Level3_Shift",
    "option": "Alt_L",
    "shift": "Shift_L",
    "lshift": "Shift_L",
    "rshift": "Shift_R",
    "super": "Super_L",
    "win": "Super_L",
    "windows": "Super_L",
    "meta": "Super_L",
    "cmd": "Super_L",
    "command": "Super_L",
    "enter": "Return",
    "return": "Return",
    "esc": "Escape",
    "escape": "Escape",
    "tab": "Tab",
    "space": "space",
    "backspace": "BackSpace",
    "bksp": "BackSpace",
    "del": "Delete",
    "delete": "Delete",
    "ins": "Insert",
    "insert": "Insert",
    "home": "Home",
    "end": "End",
    "pageup": "Prior",
    "page_up": "Prior",
    "pgup": "Prior",
    "pagedown": "Next",
    "page_down": "Next",
    "pgdn": "Next",
    "up": "Up",
    "down": "Down",
    "left": "Left",
    "right": "Right",
    "capslock": "Caps_Lock",
    "caps_lock": "Caps_Lock",
    "numlock": "Num_Lock",
    "scrolllock": "Scroll_Lock",
    "printscreen": "Print",
    "print": "Print",
    "prtsc": "Print",
    "menu": "Menu",
    "pause": "Pause",
    "break": "Break",
    "plus": "plus",
    "minus": "minus",
}

_GROUPS = (
    "latin2",
    "latin3",
    "latin4",
    "latin9",
    "katakana",
    "arabic",
    "cyrillic",
    "greek",
    "technical",
    "special",
    "publishing",
    "apl",
    "hebrew",
    "thai",
    "korean",
    "xkb",
    "xf86",
    "currency",
)
_load_lock = threading.Lock()


@cache
def _keysyms() -> tuple[dict[str, int], dict[str, str]]:
    """All keysym names python-xlib knows: exact names, and lower-case -> name when unique."""
    import Xlib.XK  # type: ignore[import-untyped]

    with _load_lock:
        for group in _GROUPS:
            with contextlib.suppress(ImportError):
                Xlib.XK.load_keysym_group(group)
        names: dict[str, int] = {}
        for attr, value in vars(Xlib.XK).items():
            if attr.startswith("XK_") and isinstance(value, int):
                name = attr[3:]
                # python-xlib spells XF86 keys "XF86_AudioMute"; X spells them "XF86AudioMute".
                if name.startswith("XF86_"):
                    name = "XF86" + name[5:]
                names[name] = value
    lower: dict[str, str] = {}
    clashes: set[str] = set()
    for name in names:
        key = name.lower()
        if key in lower:
            clashes.add(key)
        lower[key] = name
    for key in clashes:
        del lower[key]
    return names, lower


def resolve_key(name: str) -> str:
    """One key name -> an argument X's XStringToKeysym (hence xdotool) understands."""
    names, lower = _keysyms()
    if name in names:
        return name
    alias = ALIASES.get(name.lower())
    if alias:
        return alias
    if len(name) == 1:
        # A literal character: its keysym name if it has one, else the Unicode keysym.
        code = ord(name)
        if 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xFF:
            for kname, value in names.items():
                if value == code and len(kname) > 1:
                    return kname
            return name
        return f"0x{0x1000000 + code:x}"
    unicode = re.fullmatch(r"[Uu]([0-9A-Fa-f]{4,6})", name)
    if unicode and int(unicode[1], 16) <= 0x10FFFF:
        return f"0x{0x1000000 + int(unicode[1], 16):x}"
    hexa = re.fullmatch(r"0[xX]([0-9A-Fa-f]{1,8})", name)
    if hexa and 0 < int(hexa[1], 16) <= 0x1FFFFFFF:
        return f"0x{int(hexa[1], 16):x}"
    if name.lower().startswith("xf86_") and "XF86" + name[5:] in names:
        return "XF86" + name[5:]
    if name.lower() in lower:
        return lower[name.lower()]
    raise bad_request(
        f"press_keys: unknown key {name!r}; use X keysym names like 'Return', "
        "'ctrl', 'alt', 'shift', 'super', 'Escape', 'Tab', 'F5', 'a', 'Left'"
    )


def split_combo(combo: str) -> list[str]:
    """ "ctrl+shift+t" -> ["ctrl", "shift", "t"]; a literal plus is "ctrl++" or "plus"."""
    if combo == "+":
        return ["+"]
    if combo.endswith("++"):
        return [*combo[:-2].split("+"), "+"]
    return combo.split("+")


def parse_keys(value: object) -> list[str]:
    """The `keys` arg (a string, or a list of strings; each may hold several space-separated
    combos) -> xdotool key arguments like "Control_L+t"."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise bad_request("press_keys: 'keys' must be a string like 'ctrl+c' or a list of them")
    combos: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise bad_request("press_keys: every item of 'keys' must be a string")
        for combo in item.split():
            parts = split_combo(combo)
            if any(not part for part in parts):
                raise bad_request(
                    f"press_keys: malformed key combination {combo!r}; write "
                    "keys joined by '+', like 'ctrl+shift+t'"
                )
            combos.append("+".join(resolve_key(part) for part in parts))
    if not combos:
        raise bad_request("press_keys: 'keys' is empty")
    if len(combos) > MAX_KEYS:
        raise bad_request(f"press_keys: at most {MAX_KEYS} key combinations per request")
    return combos
