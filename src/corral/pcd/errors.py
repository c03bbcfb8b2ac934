"""The one error type handlers raise; its code is part of the wire contract."""

from __future__ import annotations

import errno
from typing import Final

BAD_REQUEST: Final = "bad_request"
PATH_NOT_ALLOWED: Final = "path_not_allowed"
NOT_FOUND: Final = "not_found"
IS_DIRECTORY: Final = "is_directory"
NOT_DIRECTORY: Final = "not_directory"
TOO_LARGE: Final = "too_large"
DISK_FULL: Final = "disk_full"
TIMEOUT: Final = "timeout"
UNSUPPORTED: Final = "unsupported"
X_ERROR: Final = "x_error"
INTERNAL: Final = "internal"


class PcdError(Exception):
    """An expected failure, answered as {"ok": false, "error": {"code", "message"}}.

    `fatal` marks framing errors after which the byte stream cannot be trusted, so the
    connection is closed once the error is sent.
    """

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


def bad_request(message: str) -> PcdError:
    return PcdError(BAD_REQUEST, message)


def from_oserror(exc: OSError, what: str) -> PcdError:
    """Map an OSError about `what` (a path or program) to the protocol's error codes."""
    code = {
        errno.ENOENT: NOT_FOUND,
        errno.EISDIR: IS_DIRECTORY,
        errno.ENOTDIR: NOT_DIRECTORY,
        errno.ENOSPC: DISK_FULL,
        errno.EDQUOT: DISK_FULL,
        errno.EFBIG: TOO_LARGE,
        errno.EACCES: PATH_NOT_ALLOWED,
        errno.EPERM: PATH_NOT_ALLOWED,
        errno.ELOOP: PATH_NOT_ALLOWED,
        errno.ENAMETOOLONG: BAD_REQUEST,
    }.get(exc.errno or 0, INTERNAL)
    reason = exc.strerror or str(exc)
    hints = {
        NOT_FOUND: "check the path",
        DISK_FULL: "free some space in the PC (or reset it) and retry",
        PATH_NOT_ALLOWED: "use a path you may access inside $HOME or /tmp",
    }
    hint = hints.get(code)
    return PcdError(code, f"{what}: {reason}" + (f"; {hint}" if hint else ""))
