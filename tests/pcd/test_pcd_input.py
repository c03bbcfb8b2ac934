"""Screenshots, pointer and keyboard: checked against what a real X client receives."""

from __future__ import annotations

import io
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from pcd_harness import Client, Daemon, Recorder, find_window, wait_for
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    (crc,) = struct.unpack(">I", data[29:33])
    assert crc == zlib.crc32(data[12:29])
    return width, height


def origin(client: Client, recorder_title: str) -> tuple[int, int]:
    window = find_window(client, recorder_title)
    return window["x"], window["y"]


def pointer(pcd: Daemon) -> tuple[int, int]:
    out = subprocess.run(
        ["xdotool", "getmouselocation", "--shell"],
        env=pcd.x_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["X"]), int(values["Y"])


# -- screenshot ---------------------------------------------------------------------------------


def test_screenshot_is_a_png_of_the_screen(
    client: Client, recorder: Recorder, request: pytest.FixtureRequest
) -> None:
    x0, y0 = origin(client, f"recorder-{request.node.name}")
    meta, png = client.call_blob("screenshot")
    assert png_size(png) == (1280, 800)
    assert meta == {
        "width": 1280,
        "height": 800,
        "screen_width": 1280,
        "screen_height": 800,
        "scale": 1.0,
    }
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.mode == "RGB"
    # The recorder's window is white: the screenshot shows it where X says it is.
    assert image.getpixel((x0 + 300, y0 + 200)) == (255, 255, 255)
    assert image.getpixel((x0 + 599, y0 + 399)) == (255, 255, 255)


def test_screenshot_matches_what_x_returns(client: Client, pcd: Daemon, recorder: Recorder) -> None:
    """pcd reads Xvfb's framebuffer directly; it must equal a GetImage of the screen, except
    for the pointer, which Xvfb draws into its framebuffer."""
    from PIL import ImageChops, ImageGrab

    client.call("mouse_move", x=1200, y=700)

    def stable_pair() -> tuple[Image.Image, Image.Image] | None:
        # Other windows may still be drawing: compare only when pcd's screenshots taken
        # before and after X's own capture agree.
        before = client.call_blob("screenshot")[1]
        theirs = ImageGrab.grab(xdisplay=pcd.display).convert("RGB")
        after = client.call_blob("screenshot")[1]
        if before != after:
            return None
        return Image.open(io.BytesIO(before)).convert("RGB"), theirs

    ours, theirs = wait_for(stable_pair, timeout=10)
    box = ImageChops.difference(ours, theirs).getbbox()
    if box is not None:
        left, top, right, bottom = box
        assert left >= 1200 - 16 and right <= 1200 + 32 and top >= 700 - 16 and bottom <= 732


@pytest.mark.parametrize(
    ("limits", "size", "scale"),
    [
        ({"max_width": 640}, (640, 400), 0.5),
        ({"max_height": 200}, (320, 200), 0.25),
        ({"max_width": 1000, "max_height": 1000}, (1000, 625), 1000 / 1280),
        ({"max_width": 5000, "max_height": 5000}, (1280, 800), 1.0),  # never upscaled
        ({"max_width": 1}, (1, 1), 1 / 1280),
    ],
)
def test_screenshot_scales_to_fit(
    client: Client, limits: dict[str, int], size: tuple[int, int], scale: float
) -> None:
    meta, png = client.call_blob("screenshot", b"", **limits)
    assert png_size(png) == size
    assert (meta["width"], meta["height"]) == size
    assert (meta["screen_width"], meta["screen_height"]) == (1280, 800)
    assert meta["scale"] == pytest.approx(scale)


@pytest.mark.parametrize(
    "args",
    [
        {"max_width": 0},
        {"max_height": -5},
        {"max_width": "big"},
        {"max_width": True},
        {"quality": 3},
    ],
)
def test_screenshot_rejects_bad_limits(client: Client, args: dict[str, Any]) -> None:
    assert client.error("screenshot", **args).code == "bad_request"


# -- pointer --------------------------------------------------------------------------------


def test_mouse_move_moves_the_pointer(client: Client, pcd: Daemon) -> None:
    for x, y in ((0, 0), (1279, 799), (640, 400), (17, 501)):
        client.call("mouse_move", x=x, y=y)
        assert pointer(pcd) == (x, y)


def test_click_reaches_the_application(
    client: Client, pcd: Daemon, recorder: Recorder, request: pytest.FixtureRequest
) -> None:
    x0, y0 = origin(client, f"recorder-{request.node.name}")
    result = client.call("click", x=x0 + 50, y=y0 + 60)
    assert (result["x"], result["y"]) == (x0 + 50, y0 + 60)
    assert pointer(pcd) == (x0 + 50, y0 + 60)
    assert recorder.expect("press") == "press 1 50 60"
    assert recorder.expect("release") == "release 1 50 60"

    client.call("click", x=x0 + 10, y=y0 + 20, button="right")
    assert recorder.expect("press") == "press 3 10 20"
    client.call("click", button="middle")  # where the pointer is
    assert recorder.expect("press") == "press 2 10 20"
    assert recorder.expect("release") == "release 2 10 20"

    client.call("click", x=x0 + 5, y=y0 + 5, count=3)
    events = [line for line in recorder.drain() if not line.startswith("motion")]
    assert events == ["press 1 5 5", "release 1 5 5"] * 3


def test_scroll_sends_wheel_buttons(
    client: Client, recorder: Recorder, request: pytest.FixtureRequest
) -> None:
    x0, y0 = origin(client, f"recorder-{request.node.name}")
    client.call("scroll", x=x0 + 100, y=y0 + 100, dy=3)
    client.call("scroll", dy=-2)
    client.call("scroll", dx=1, dy=0)
    client.call("scroll", dx=-1)
    presses = [line.split()[1] for line in recorder.drain() if line.startswith("press")]
    assert presses == ["5", "5", "5", "4", "4", "7", "6"]


def test_drag_presses_moves_and_releases(
    client: Client, recorder: Recorder, request: pytest.FixtureRequest
) -> None:
    x0, y0 = origin(client, f"recorder-{request.node.name}")
    path = [[x0 + 10, y0 + 10], [x0 + 100, y0 + 50], [x0 + 200, y0 + 150]]
    client.call("drag", path=path)
    events = recorder.drain()
    press = events.index("press 1 10 10")
    release = events.index("release 1 200 150")
    assert press < events.index("motion 100 50") < release
    assert "motion 200 150" in events[press:release]


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("mouse_move", {"x": 1280, "y": 0}),
        ("mouse_move", {"x": 0, "y": 800}),
        ("mouse_move", {"x": -1, "y": 0}),
        ("mouse_move", {"x": 10}),
        ("mouse_move", {}),
        ("mouse_move", {"x": 1.5, "y": 2}),
        ("click", {"x": 5}),
        ("click", {"button": "fourth"}),
        ("click", {"button": ["left"]}),
        ("click", {"count": 4}),
        ("click", {"count": 0}),
        ("scroll", {"dy": 51}),
        ("scroll", {"dx": "1"}),
        ("drag", {"path": [[1, 1]]}),
        ("drag", {"path": [[1, 1], [2000, 1]]}),
        ("drag", {"path": [[1, 1], [2]]}),
        ("drag", {"path": "1,1 2,2"}),
    ],
)
def test_pointer_ops_reject_bad_args(client: Client, op: str, args: dict[str, Any]) -> None:
    assert client.error(op, **args).code == "bad_request"


# -- keyboard -------------------------------------------------------------------------------


def test_press_keys_reach_the_application(
    client: Client, recorder: Recorder, request: pytest.FixtureRequest
) -> None:
    find_window(client, f"recorder-{request.node.name}")
    client.call("press_keys", keys="ctrl+a")
    client.call("press_keys", keys=["Return", "shift+b", "esc"])
    keys = [line.split()[1] for line in recorder.drain() if line.startswith("key")]
    assert keys == ["Control_L", "a", "Return", "Shift_L", "B", "Escape"]


@pytest.mark.parametrize(
    "keys", ["ctrl+nosuchkey", ["Return", "Retrun"], "ctrl+", [], "", ["a", 5], 7]
)
def test_press_keys_rejects_unknown_keys(client: Client, keys: Any) -> None:
    err = client.error("press_keys", keys=keys)
    assert err.code == "bad_request"
    if keys == "ctrl+nosuchkey":
        assert "nosuchkey" in err.message
    if keys == ["Return", "Retrun"]:
        assert "Retrun" in err.message


def _xterm(client: Client, title: str, command: str) -> dict[str, Any]:
    client.call("launch", argv=["xterm", "-T", title, "-e", "sh", "-c", command])
    window = find_window(client, title, with_pid=True)
    assert client.call("focus_window", id=window["id"])["focused"] is True
    return window


def test_type_text_types_unicode_into_xterm(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "typed.txt"
    _xterm(client, "type-test", f'read line; printf %s "$line" > {out}')
    text = "héllo ✓ 日本 Grüße — ÀÉÎ ~|<>{}"
    assert client.call("type_text", text=text + "\n")["chars"] == len(text) + 1
    wait_for(out.exists)
    assert wait_for(lambda: out.read_text(encoding="utf-8")) == text


def test_type_text_handles_more_new_characters_than_spare_keys(
    client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "typed.txt"
    _xterm(client, "type-many", f"cat > {out}")
    # 80 distinct CJK characters, more than the keymap has free keycodes, over several lines.
    text = "".join(chr(0x4E00 + i * 7) for i in range(80))
    text = "\n".join(text[i : i + 20] for i in range(0, 80, 20)) + "\n"
    client.call("type_text", text=text)
    client.call("press_keys", keys="ctrl+d")
    wait_for(lambda: out.exists() and not _running("type-many", client))
    assert out.read_text(encoding="utf-8") == text


def _running(title: str, client: Client) -> bool:
    return any(w["title"] == title for w in client.call("list_windows")["windows"])


def test_type_text_limits(client: Client) -> None:
    assert client.call("type_text", text="")["chars"] == 0
    assert client.error("type_text", text="a" * 100_001).code == "bad_request"
    assert client.error("type_text").code == "bad_request"
    assert client.error("type_text", text=["a"]).code == "bad_request"


def test_x_input_is_fast(client: Client) -> None:
    samples = []
    for i in range(50):
        started = time.perf_counter()
        client.call("click", x=700 + i, y=700)
        samples.append(time.perf_counter() - started)
    samples.sort()
    assert samples[len(samples) // 2] < 0.02, f"median click {samples[25] * 1000:.1f} ms"
