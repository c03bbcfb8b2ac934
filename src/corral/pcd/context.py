"""What every op handler may use: the screen, the user's home, locks and helpers."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .capture import Screen
from .children import Children
from .desktop import Desktop
from .typer import Typer
from .xconn import XConn


@dataclass
class Context:
    desktop: Desktop
    home: str
    env: dict[str, str]  # base environment of every child (DISPLAY, HOME, LANG, ...)
    x: XConn
    screen: Screen
    typer: Typer
    children: Children = field(default_factory=Children)
    # Serializes input gestures (pointer, keys, typing) so two connections never interleave.
    input_lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)
    stopping: bool = False
    # Set once the first answer is sent: background warm-up waits for it so that it does not
    # compete (for the GIL) with the host's first `health` right after boot.
    answered: threading.Event = field(default_factory=threading.Event)

    @property
    def display(self) -> str:
        return self.desktop.display

    @property
    def width(self) -> int:
        return self.desktop.width

    @property
    def height(self) -> int:
        return self.desktop.height
