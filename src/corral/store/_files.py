"""At start: the data folder and the files in it (database, key files, credentials) are private.

Decision (docs/security-model.md): a folder or file owned by us with wider permissions is fixed
(chmod 0700 / 0600) and reported, since only we could have made it so and tightening takes
nothing away from anyone entitled to it; one owned by another user, a symlink, or anything but
a folder or regular file is refused, since someone else could have read or planted it and no
chmod undoes that.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from corral.errors import StoreSecurityError
from corral.store._engine import sqlite_path

__all__ = ["check_data_files"]

_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def check_data_files(
    data: Path, *, database_url: str | None, report: Callable[[str], None]
) -> None:
    """1. Create the data folder 0700 if missing; 2. the folder: ours, and 0700 (fixed);
    3. every entry directly in it and the SQLite database with its -wal/-shm/-journal files
    wherever they are: a regular file of ours, 0600 (fixed), or a folder of ours (left to the
    data folder's 0700); anything else is refused."""
    data.mkdir(mode=0o700, parents=True, exist_ok=True)  # 1.
    _check(data, os.stat(data), folder=True, report=report)  # 2. (a symlinked folder is fine)
    files = list(data.iterdir())  # 3.
    db = sqlite_path(database_url) if database_url else None
    if db is not None:
        files += [db.with_name(db.name + suffix) for suffix in _SQLITE_COMPANIONS]
    for path in dict.fromkeys(files):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and path.parent == data:
            _check(path, st, folder=True, report=report)
        else:
            _check(path, st, folder=False, report=report)


def _check(path: Path, st: os.stat_result, *, folder: bool, report: Callable[[str], None]) -> None:
    what = "folder" if folder else "file"
    if not (stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular " + what
        raise StoreSecurityError(
            f"refusing to start: {path} is {kind}",
            hint=f"replace it with a regular {what} owned by this user",
        )
    if st.st_uid != os.geteuid():
        raise StoreSecurityError(
            f"refusing to start: {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): someone else could have read or changed it",
            hint=f"check it, then: chown {os.geteuid()} {path}",
        )
    wanted = 0o700 if folder else 0o600
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        os.chmod(path, mode & wanted)
        report(
            f"fixed: {path} was mode {mode:04o}, others could read it; now "
            f"{stat.S_IMODE(os.lstat(path).st_mode):04o}"
        )
