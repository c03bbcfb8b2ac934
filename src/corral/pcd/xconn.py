"""The persistent python-xlib connection pcd uses for XTEST input, windows and selections.

python-xlib is untyped and not thread-safe: this module is the only place that touches it
directly, it imports it lazily (it costs ~20 ms, which must not delay readiness), and every use
holds `XConn.lock`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import X_ERROR, PcdError

BUTTONS = {"left": 1, "middle": 2, "right": 3}
SCROLL_UP, SCROLL_DOWN, SCROLL_LEFT, SCROLL_RIGHT = 4, 5, 6, 7


class XConn:
    """One lazily opened Display for the daemon's lifetime; all calls are serialized."""

    def __init__(self, display: str) -> None:
        self.display_name = display
        self.lock = threading.RLock()
        self._display: Any = None
        self._errors: list[str] = []

    @contextmanager
    def session(self) -> Iterator[Any]:
        """Hold the lock and yield the Xlib Display; X failures become `x_error`."""
        import Xlib.error  # type: ignore[import-untyped]

        with self.lock:
            try:
                yield self._open()
            except (Xlib.error.ConnectionClosedError, Xlib.error.DisplayError, OSError) as exc:
                self._display = None
                raise PcdError(X_ERROR, f"lost the X connection: {exc}") from None
            except Xlib.error.XError as exc:
                raise PcdError(X_ERROR, f"X error: {exc}") from None

    def _open(self) -> Any:
        if self._display is None:
            import Xlib.display  # type: ignore[import-untyped]
            import Xlib.ext.xtest  # type: ignore[import-untyped]

            display = Xlib.display.Display(self.display_name)
            display.set_error_handler(self._on_error)
            if not display.has_extension("XTEST"):
                display.close()
                raise PcdError(X_ERROR, "the X server has no XTEST extension")
            self._display = display
        return self._display

    def _on_error(self, err: Any, request: Any) -> None:
        self._errors.append(str(err))

    def warm(self) -> None:
        """Import python-xlib and connect now, so the first action does not pay for it."""
        with self.session():
            pass

    def sync(self, display: Any) -> None:
        """Round trip so the server has processed everything; raise deferred X errors."""
        display.sync()
        while display.pending_events():  # e.g. MappingNotify, which cannot be deselected
            display.next_event()
        if self._errors:
            errors, self._errors = self._errors, []
            raise PcdError(X_ERROR, "X error: " + "; ".join(errors[:3]))

    def atom(self, display: Any, name: str) -> int:
        return int(display.intern_atom(name))

    # -- XTEST input: callers hold the input lock, so a gesture is never interleaved. -------
    def motion(self, display: Any, x: int, y: int) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        xtest.fake_input(display, X.MotionNotify, x=x, y=y)

    def button(self, display: Any, button: int, press: bool) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        xtest.fake_input(display, X.ButtonPress if press else X.ButtonRelease, button)

    def pointer(self) -> tuple[int, int]:
        with self.session() as display:
            reply = display.screen().root.query_pointer()
            return int(reply.root_x), int(reply.root_y)
