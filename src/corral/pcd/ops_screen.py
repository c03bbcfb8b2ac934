"""`screenshot`: grab the screen (see capture), scale to fit, encode as PNG at zlib level 1."""

from __future__ import annotations

import io
from typing import Any

from .args import Args
from .context import Context
from .errors import X_ERROR, PcdError

MAX_SIDE = 16384


def fit(
    width: int, height: int, max_width: int | None, max_height: int | None
) -> tuple[int, int, float]:
    """Size that fits inside max_* keeping the aspect ratio, never upscaled; and the scale."""
    scale = 1.0
    if max_width is not None:
        scale = min(scale, max_width / width)
    if max_height is not None:
        scale = min(scale, max_height / height)
    if scale >= 1.0:
        return width, height, 1.0
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def screenshot(ctx: Context, args: Args, blob: bytes) -> tuple[dict[str, Any], bytes]:
    max_width = args.opt_int("max_width", lo=1, hi=MAX_SIDE)
    max_height = args.opt_int("max_height", lo=1, hi=MAX_SIDE)
    from PIL import Image

    try:
        image = ctx.screen.grab()
    except OSError as exc:
        raise PcdError(X_ERROR, f"could not grab the screen: {exc}") from None
    screen_width, screen_height = image.size
    width, height, scale = fit(screen_width, screen_height, max_width, max_height)
    if scale < 1.0:
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return {
        "width": width,
        "height": height,
        "screen_width": screen_width,
        "screen_height": screen_height,
        "scale": scale,
    }, out.getvalue()


def warm_up(ctx: Context) -> None:
    """Import Pillow's pieces and map the framebuffer before the first screenshot."""
    from PIL import Image, PngImagePlugin  # noqa: F401

    ctx.screen.grab()
