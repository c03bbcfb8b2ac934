"""Window ops through EWMH properties on the persistent Xlib connection (what wmctrl reads,
without a subprocess per call)."""

from __future__ import annotations

import time
from typing import Any

from .args import Args
from .context import Context
from .errors import BAD_REQUEST, NOT_FOUND, PcdError

_WM_READY_WAIT_S = 3.0


def _prop(x: Any, d: Any, window: Any, name: str) -> Any:
    from Xlib import X  # type: ignore[import-untyped]

    reply = window.get_full_property(x.atom(d, name), X.AnyPropertyType)
    return None if reply is None else reply.value


def _wait_for_wm(ctx: Context) -> None:
    """Right after boot the WM may still be starting: wait (briefly) until it manages windows,
    so list_windows sees managed windows rather than an unmanaged or empty list."""
    ctx.desktop.wait_wm(_WM_READY_WAIT_S)


def _client_ids(ctx: Context, d: Any) -> list[int]:
    root = d.screen().root
    managed = _prop(ctx.x, d, root, "_NET_CLIENT_LIST")
    if managed is not None:
        return [int(w) for w in managed]
    # No EWMH window manager: report viewable top-level windows instead.
    from Xlib import X

    ids = []
    for child in root.query_tree().children:
        attrs = child.get_attributes()
        if attrs.map_state == X.IsViewable and not attrs.override_redirect:
            ids.append(int(child.id))
    return ids


def _active(ctx: Context, d: Any) -> int:
    value = _prop(ctx.x, d, d.screen().root, "_NET_ACTIVE_WINDOW")
    if value is not None and len(value):
        return int(value[0])
    focus = d.get_input_focus().focus
    return int(getattr(focus, "id", 0) or 0)


def _describe(ctx: Context, d: Any, wid: int, active: int) -> dict[str, Any]:
    root = d.screen().root
    window = d.create_resource_object("window", wid)
    name = _prop(ctx.x, d, window, "_NET_WM_NAME")
    if name is None:
        name = _prop(ctx.x, d, window, "WM_NAME")
    if isinstance(name, bytes):  # WM_NAME may be Latin-1 (type STRING)
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            name = name.decode("latin-1")
    pid = _prop(ctx.x, d, window, "_NET_WM_PID")
    desktop = _prop(ctx.x, d, window, "_NET_WM_DESKTOP")
    geometry = window.get_geometry()
    origin = root.translate_coords(window, 0, 0)
    from Xlib import X

    viewable = window.get_attributes().map_state == X.IsViewable
    desk = int(desktop[0]) if desktop is not None and len(desktop) else 0
    return {
        "id": f"0x{wid:08x}",
        "title": str(name or ""),
        "pid": int(pid[0]) if pid is not None and len(pid) else None,
        "x": int(origin.x),
        "y": int(origin.y),
        "width": int(geometry.width),
        "height": int(geometry.height),
        "desktop": -1 if desk == 0xFFFFFFFF else desk,
        "focused": wid == active,
        "visible": bool(viewable),
    }


def windows(ctx: Context) -> list[dict[str, Any]]:
    import Xlib.error  # type: ignore[import-untyped]

    _wait_for_wm(ctx)
    out = []
    with ctx.x.session() as d:
        active = _active(ctx, d)
        for wid in _client_ids(ctx, d):
            try:
                out.append(_describe(ctx, d, wid, active))
            except Xlib.error.XError:
                continue  # closed while we looked
    return out


def list_windows(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    return {"windows": windows(ctx)}, b""


def _parse_id(value: object) -> int:
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            return int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        pass
    raise PcdError(
        BAD_REQUEST, "focus_window: 'id' must be a window id like '0x00c00003' (from list_windows)"
    )


def focus_window(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    from Xlib import X
    from Xlib.protocol import event  # type: ignore[import-untyped]

    wid = _parse_id(args.raw("id"))
    _wait_for_wm(ctx)
    with ctx.x.session() as d:
        if wid not in _client_ids(ctx, d):
            raise PcdError(NOT_FOUND, f"no window 0x{wid:08x}; list_windows shows the open ones")
        root = d.screen().root
        window = d.create_resource_object("window", wid)
        if _prop(ctx.x, d, root, "_NET_SUPPORTING_WM_CHECK") is not None:
            # Ask the WM (source indication 2 = pager, which WMs always honour).
            message = event.ClientMessage(
                window=window,
                client_type=ctx.x.atom(d, "_NET_ACTIVE_WINDOW"),
                data=(32, [2, X.CurrentTime, 0, 0, 0]),
            )
            root.send_event(
                message, event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask
            )
        else:
            window.configure(stack_mode=X.Above)
            window.set_input_focus(X.RevertToParent, X.CurrentTime)
        ctx.x.sync(d)
    deadline = time.monotonic() + 1.0
    while True:
        with ctx.x.session() as d:
            focused = _active(ctx, d) == wid
        if focused or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    return {"id": f"0x{wid:08x}", "focused": focused}, b""
