"""C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): a log's signed tree head as the
text of a signed note: origin, tree size, base64 root hash, optional extension lines."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from corral.audit.tlog.merkle import HASH_SIZE
from corral.audit.tlog.note import NoteError, b64decode_strict

__all__ = ["Checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("a checkpoint's origin is one non-empty line")
        if self.size < 0:
            raise NoteError("a tree size is not negative")
        if len(self.root) != HASH_SIZE:
            raise NoteError(f"a root hash is {HASH_SIZE} bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise NoteError("extension lines are non-empty single lines")

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The checkpoint in a note's text (already opened: see `note.open_note`)."""
        if not text.endswith("\n"):
            raise NoteError("a checkpoint's text ends in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a size and a root hash line")
        origin, size, root, *extensions = lines
        if (
            len(size) > 19
            or not size.isdigit()
            or not size.isascii()
            or (size != "0" and size.startswith("0"))
        ):
            raise NoteError(f"bad tree size {size[:30]!r}: decimal, no leading zeros")
        return cls(origin, int(size), b64decode_strict(root), tuple(extensions))
