"""C2SP tlog-tiles (https://c2sp.org/tlog-tiles): tile and entry-bundle paths, which tiles a
tree of a given size has, and the entry bundle format (big-endian uint16 length prefixes, so
an entry is at most 65,535 bytes)."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_ENTRY",
    "TILE_WIDTH",
    "Tile",
    "TileError",
    "bundle",
    "parse_tile_path",
    "tiles_for",
    "unbundle",
]

TILE_WIDTH = 256
MAX_ENTRY = 0xFFFF
_ELEMENT = re.compile(r"\d{3}")


class TileError(ValueError):
    """A tile path or entry bundle not in the C2SP form."""


@dataclass(frozen=True)
class Tile:
    """Tile `index` of `level` (level -1: the entry bundle), `width` hashes wide (256: full)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def path(self) -> str:
        n, parts = self.index, [f"{self.index % 1000:03d}"]
        while n >= 1000:
            n //= 1000
            parts.insert(0, f"x{n % 1000:03d}")
        head = "tile/entries" if self.level < 0 else f"tile/{self.level}"
        tail = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return f"{head}/{'/'.join(parts)}{tail}"

    @property
    def start(self) -> int:
        """The first leaf this tile covers."""
        return int(self.index * TILE_WIDTH ** (max(self.level, 0) + 1))


def parse_tile_path(path: str) -> Tile:
    """`tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`, canonical forms only."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileError(f"not a tile path: {path[:80]!r}")
    if parts[1] == "entries":
        level = -1
    elif parts[1].isdigit() and parts[1].isascii() and str(int(parts[1])) == parts[1]:
        level = int(parts[1])
        if level > 63:
            raise TileError("a tile level is 0 to 63")
    else:
        raise TileError(f"bad tile level {parts[1][:10]!r}")
    rest = parts[2:]
    if len(rest) > 8:  # 6 index groups (an index below 10^18) and a partial suffix at most
        raise TileError("a tile index has at most 6 groups")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not (w.isdigit() and w.isascii() and str(int(w)) == w and 1 <= int(w) <= 255):
            raise TileError("a partial tile's width is 1 to 255, no leading zeros")
        width = int(w)
        rest = [*rest[:-2], rest[-2][:-2]]
    *upper, last = rest
    if not _ELEMENT.fullmatch(last) or any(
        not (p.startswith("x") and _ELEMENT.fullmatch(p[1:])) for p in upper
    ):
        raise TileError("a tile index is 3-digit groups, all but the last prefixed with x")
    index = 0
    for p in [*(u[1:] for u in upper), last]:
        index = index * 1000 + int(p)
    tile = Tile(level, index, width)
    if tile.path != path:  # e.g. a leading x000 group
        raise TileError(f"non-canonical tile path {path[:80]!r}")
    return tile


def tiles_for(size: int) -> Iterator[Tile]:
    """Every hash tile a tree of `size` leaves has, full and partial, level by level."""
    level = 0
    while size >= TILE_WIDTH**level:
        hashes = size // TILE_WIDTH**level  # hashes at this level (full subtrees below)
        for index in range(hashes // TILE_WIDTH):
            yield Tile(level, index)
        if hashes % TILE_WIDTH:
            yield Tile(level, hashes // TILE_WIDTH, hashes % TILE_WIDTH)
        if hashes < TILE_WIDTH:
            break
        level += 1


def bundle(entries: Sequence[bytes]) -> bytes:
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY:
            raise TileError(f"an entry is at most {MAX_ENTRY} bytes, not {len(e)}")
        out += struct.pack(">H", len(e)) + e
    return bytes(out)


def unbundle(data: bytes) -> list[bytes]:
    entries, at = [], 0
    while at < len(data):
        if at + 2 > len(data):
            raise TileError("an entry bundle ends inside a length prefix")
        (n,) = struct.unpack(">H", data[at : at + 2])
        if at + 2 + n > len(data):
            raise TileError("an entry bundle ends inside an entry")
        entries.append(data[at + 2 : at + 2 + n])
        at += 2 + n
    return entries
