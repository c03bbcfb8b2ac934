"""Running xdotool for keyboard input: it knows how to type any Unicode character by remapping
a spare keycode, which XTEST alone cannot do."""

from __future__ import annotations

import subprocess

from .errors import INTERNAL, TIMEOUT, PcdError


def xdotool(args: list[str], *, env: dict[str, str], stdin: bytes = b"", timeout: float) -> None:
    try:
        proc = subprocess.run(
            ["xdotool", *args],
            input=stdin,
            env=env,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PcdError(TIMEOUT, f"xdotool did not finish in {timeout:.0f} s") from None
    except FileNotFoundError:
        raise PcdError(INTERNAL, "xdotool is missing from this image") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()[-500:]
        raise PcdError(INTERNAL, f"xdotool failed ({proc.returncode}): {message}")
