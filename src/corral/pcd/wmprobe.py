"""Knowing when the window manager really manages windows.

Openbox sets its EWMH properties early in its startup but drops map requests that arrive during
the rest of it: an application started ~50 ms after the WM never gets a window on screen. So
pcd maps a tiny probe window and waits until the WM has managed it (set WM_STATE on it),
mapping it again if a request was dropped. Only then do `launch` and `open_url` start programs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .xconn import XConn

_REMAP_AFTER_S = 0.1
_POLL_S = 0.005


def wait_until_managing(x: XConn, wm_alive: Callable[[], bool], timeout: float) -> bool:
    """Map a probe window until the WM manages it; True once it has (the probe is gone
    again by then), False on timeout or if the WM exits."""
    from Xlib import X, Xatom  # type: ignore[import-untyped]

    deadline = time.monotonic() + timeout
    with x.session() as d:
        screen = d.screen()
        window = screen.root.create_window(
            0,
            0,
            1,
            1,
            0,
            screen.root_depth,
            X.InputOutput,
            X.CopyFromParent,
            override_redirect=False,
        )
        window.set_wm_name("pcd-wm-probe")
        window.set_wm_hints(flags=1, input=0)  # InputHint: never take the focus
        window.change_property(
            x.atom(d, "_NET_WM_WINDOW_TYPE"),
            Xatom.ATOM,
            32,
            [x.atom(d, "_NET_WM_WINDOW_TYPE_DOCK")],
        )
        wm_state = x.atom(d, "WM_STATE")
        x.sync(d)
    try:
        while time.monotonic() < deadline and wm_alive():
            with x.session() as d:
                window.map()
                x.sync(d)
            remap_at = time.monotonic() + _REMAP_AFTER_S
            while time.monotonic() < min(remap_at, deadline):
                with x.session() as d:
                    if window.get_full_property(wm_state, X.AnyPropertyType) is not None:
                        return True
                time.sleep(_POLL_S)
            with x.session() as d:  # the map request may have been dropped: ask again
                window.unmap()
                x.sync(d)
        return False
    finally:
        with x.session() as d:
            window.destroy()
            x.sync(d)
