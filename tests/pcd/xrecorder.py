"""An X client that records what it receives, run by the tests with /usr/bin/python3.

It maps a window titled by argv[1] at the top-left of the screen (WIDTH x HEIGHT, argv[2] and
argv[3]) and prints one line per event: "ready", "press BUTTON X Y", "release BUTTON X Y",
"motion X Y" (window coordinates), "key KEYSYM_NAME". The tests drive pcd and read these lines,
so they check what an application actually gets.
"""

from __future__ import annotations

import sys

from Xlib import XK, X, display  # type: ignore[import-untyped]


def main() -> None:
    title, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    d = display.Display()
    screen = d.screen()
    window = screen.root.create_window(
        0,
        0,
        width,
        height,
        0,
        screen.root_depth,
        X.InputOutput,
        X.CopyFromParent,
        background_pixel=screen.white_pixel,
        event_mask=(
            X.ButtonPressMask
            | X.ButtonReleaseMask
            | X.PointerMotionMask
            | X.KeyPressMask
            | X.ExposureMask
            | X.StructureNotifyMask
        ),
    )
    window.set_wm_name(title)
    window.set_wm_normal_hints(flags=1 | 4, x=0, y=0)  # USPosition | PPosition
    window.map()
    d.flush()
    names: dict[int, str] = {}
    for attr, value in vars(XK).items():
        if attr.startswith("XK_"):
            names.setdefault(value, attr[3:])
    ready = False
    while True:
        event = d.next_event()
        if event.type == X.Expose and not ready:
            ready = True
            out = "ready"
        elif event.type == X.ButtonPress:
            out = f"press {event.detail} {event.event_x} {event.event_y}"
        elif event.type == X.ButtonRelease:
            out = f"release {event.detail} {event.event_x} {event.event_y}"
        elif event.type == X.MotionNotify:
            out = f"motion {event.event_x} {event.event_y}"
        elif event.type == X.KeyPress:
            keysym = d.keycode_to_keysym(event.detail, 1 if event.state & X.ShiftMask else 0)
            out = f"key {names.get(keysym, hex(keysym))}"
        elif event.type == X.MappingNotify:
            d.refresh_keyboard_mapping(event)
            continue
        else:
            continue
        print(out, flush=True)


if __name__ == "__main__":
    main()
