"""Secrets the store keeps, sealed with AES-256-GCM under a key that lives in a 0600 file, never
in the database: a database file, dump or backup alone reveals no TOTP seed, OIDC client secret
or push authorization header.

A sealed value reads `sealed:v1:<key id>:<base64url(nonce || ciphertext || tag)>`, with a random
96-bit nonce per value and associated data naming the key, table, column and row: a ciphertext
copied into another row (a receiver's authorization header into a receiver whose endpoint an
attacker chose, say) does not open. The key file holds every key still in use; the newest seals,
any opens. `corral store rotate-key` adds a key, reseals every value in one transaction and drops
the keys nothing uses any more (docs/store.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, Connection, Engine, Table, select, update

from corral.errors import StoreSecurityError
from corral.store._tables import oidc_providers, ssf_receivers, users

__all__ = [
    "SEALED_COLUMNS",
    "SealedColumn",
    "StoreKeys",
    "key_ids_in_use",
    "reseal_all",
    "scrub",
    "seal_on_start",
]

PREFIX = "sealed:v1:"
_FORMAT = "corral-store-keys/1"
_NONCE = 12  # 96 bits, random per value: with < 2^32 values per key a repeat is negligible
_ROTATE_HINT = "see docs/store.md, 'Sealed secrets'"


@dataclass(frozen=True)
class SealedColumn:
    """A column holding sealed values; `legacy` is where older versions kept it in plaintext."""

    table: Table
    id_column: str
    column: str
    legacy: str | None = None


SEALED_COLUMNS = (
    SealedColumn(users, "id", "totp_secret_sealed", legacy="totp_secret"),
    SealedColumn(oidc_providers, "name", "client_secret"),
    SealedColumn(ssf_receivers, "id", "auth_header"),
)
TOTP, CLIENT_SECRET, AUTH_HEADER = SEALED_COLUMNS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _aad(kid: str, where: SealedColumn, row_id: str) -> bytes:
    return f"corral-sealed/v1/{kid}/{where.table.name}.{where.column}/{row_id}".encode()


def _label(where: SealedColumn, row_id: str) -> str:
    return f"{where.table.name}.{where.column} of {row_id!r}"


@dataclass(frozen=True)
class _Ring:
    stamp: tuple[int, int, int, int]  # (inode, mtime, ctime, size) of the file it was read from
    keys: dict[str, AESGCM]
    raw: tuple[tuple[str, str, str], ...]  # (id, base64 key, created) in file order
    current: str


class StoreKeys:
    """The store's key file: read on first use and again whenever it changes on disk (a
    rotation by another process), so every process seals with the newest key. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ring: _Ring | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StoreKeys({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.exists()

    # -- sealing ---------------------------------------------------------------------------

    def seal(self, value: str, where: SealedColumn, row_id: str) -> str:
        # Never create the key file here: one that vanished while running must stop writes,
        # not start a new key that leaves every earlier secret unreadable (seal_on_start
        # creates it, at start only).
        ring = self._load(create=False)
        nonce = secrets.token_bytes(_NONCE)
        box = ring.keys[ring.current].encrypt(
            nonce, value.encode("utf-8"), _aad(ring.current, where, row_id)
        )
        return f"{PREFIX}{ring.current}:{_b64(nonce + box)}"

    def open(self, sealed: str, where: SealedColumn, row_id: str) -> str:
        """The plaintext; fails closed on anything but a value sealed for this very row."""
        kid, blob = _parse(sealed, where, row_id)
        key = self._load(create=False).keys.get(kid)
        if key is None:
            raise StoreSecurityError(
                f"the secret in {_label(where, row_id)} is sealed with store key {kid!r}, "
                f"which {self.path} does not hold",
                hint=f"restore the key file that holds it from backup ({_ROTATE_HINT})",
            )
        try:
            return key.decrypt(blob[:_NONCE], blob[_NONCE:], _aad(kid, where, row_id)).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise StoreSecurityError(
                f"the secret in {_label(where, row_id)} does not open: it was altered or "
                "copied from another row",
                hint="set that secret again (re-enrol TOTP, re-add the provider or receiver)",
            ) from None

    @property
    def current(self) -> str:
        return self._load(create=False).current

    def create_if_missing(self) -> str:
        """The current key id, making the key file first if there is none (start only)."""
        return self._load(create=True).current

    def key_ids(self) -> list[str]:
        """Oldest first; the last one seals."""
        return [kid for kid, _, _ in self._load(create=False).raw]

    # -- rotation --------------------------------------------------------------------------

    def add_key(self) -> str:
        """Rotation step 1: a new key, which seals from now on; the old ones still open."""
        with self._lock:
            ring = self._read()
            kid = _new_kid({k for k, _, _ in ring.raw})
            self._write(
                (*ring.raw, (kid, _b64(AESGCM.generate_key(bit_length=256)), _now())),
                replace=True,
            )
            self._ring = None
        return kid

    def retire(self, keep: set[str]) -> list[str]:
        """Drop every key but the current one and those in `keep`; returns the ids dropped."""
        with self._lock:
            ring = self._read()
            kept = tuple(k for k in ring.raw if k[0] in keep or k[0] == ring.current)
            dropped = [k[0] for k in ring.raw if k not in kept]
            if dropped:
                self._write(kept, replace=True)
            self._ring = None
        return dropped

    # -- the file --------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return _stamp_of(st)

    def _load(self, *, create: bool) -> _Ring:
        ring = self._ring
        stamp = self._stamp()
        if ring is not None and ring.stamp == stamp:
            return ring
        with self._lock:
            if stamp is None:
                if not create:
                    raise StoreSecurityError(
                        f"the store key file {self.path} is missing, so the secrets in the "
                        "database cannot be read",
                        hint=f"restore it from backup ({_ROTATE_HINT})",
                    )
                kid = _new_kid(set())
                raw = ((kid, _b64(AESGCM.generate_key(bit_length=256)), _now()),)
                self._write(raw, replace=False)  # a process that raced us wins; we read its key
            self._ring = self._read()
            return self._ring

    def _read(self) -> _Ring:
        """Read the file, refusing one that others may read or write."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise StoreSecurityError(f"the store key file {self.path} is missing") from None
        except OSError as exc:
            raise StoreSecurityError(
                f"cannot open the store key file {self.path}: {exc.strerror}",
                hint="it must be a regular file (not a symlink) owned by this user",
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or st.st_uid != os.geteuid():
                raise StoreSecurityError(
                    f"the store key file {self.path} is accessible to other users or not ours",
                    hint=f"chown $(id -u) {self.path} && chmod 600 {self.path}",
                )
            text = f.read().decode("utf-8", errors="replace")
        try:
            doc = json.loads(text)
            if doc.get("format") != _FORMAT:
                raise ValueError("unknown format")
            raw = tuple((str(e["id"]), str(e["key"]), str(e["created_at"])) for e in doc["keys"])
            keys = {kid: AESGCM(_unb64(key)) for kid, key, _ in raw}
            if not raw or len(keys) != len(raw):
                raise ValueError("no keys, or one id twice")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreSecurityError(
                f"{self.path} is not a Corral store key file ({exc})",
                hint=f"restore it from backup ({_ROTATE_HINT})",
            ) from None
        return _Ring(_stamp_of(st), keys, raw, raw[-1][0])

    def _write(self, raw: tuple[tuple[str, str, str], ...], *, replace: bool) -> None:
        """1. Write a temporary file created 0600 in the same folder, 2. flush it to disk,
        3. link it into place (a new file: fails if one appeared) or rename it over the old
        one (a rotation: readers see the old or the new file whole), 4. drop the temp name."""
        doc = {
            "format": _FORMAT,
            "keys": [{"id": k, "key": v, "created_at": c} for k, v, c in raw],
        }
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".secrets-", suffix=".tmp", dir=self.path.parent)
        tmp = Path(tmp_name)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, self.path)
            else:
                with contextlib.suppress(FileExistsError):  # created meanwhile: theirs wins
                    os.link(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _stamp_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """Changes with any rewrite (new inode), write or chmod (ctime) of the file."""
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_kid(taken: set[str]) -> str:
    while True:
        kid = f"k{secrets.token_hex(4)}"
        if kid not in taken:
            return kid


def _parse(sealed: str, where: SealedColumn, row_id: str) -> tuple[str, bytes]:
    if not sealed.startswith(PREFIX):
        raise StoreSecurityError(
            f"the secret in {_label(where, row_id)} is not sealed",
            hint="start `corral up` (or any host CLI command) once: it seals stored secrets",
        )
    kid, _, body = sealed[len(PREFIX) :].partition(":")
    try:
        blob = _unb64(body)
    except ValueError:
        blob = b""
    if not kid or len(blob) < _NONCE + 16:
        raise StoreSecurityError(f"the secret in {_label(where, row_id)} is malformed")
    return kid, blob


def kid_of(sealed: str) -> str | None:
    """The key id a sealed value names (None for anything else)."""
    if not sealed.startswith(PREFIX):
        return None
    return sealed[len(PREFIX) :].partition(":")[0] or None


# -- whole-database passes (start, rotation) -------------------------------------------------


def _values(conn: Connection, where: SealedColumn) -> Iterator[tuple[str, str | None, str | None]]:
    """(row id, sealed value, legacy plaintext) of every row holding a secret."""
    t = where.table
    cols = [t.c[where.id_column], t.c[where.column]]
    legacy = t.c[where.legacy] if where.legacy else None
    present: ColumnElement[bool] = t.c[where.column].is_not(None)
    if legacy is not None:
        cols.append(legacy)
        present = present | legacy.is_not(None)
    for row in conn.execute(select(*cols).where(present).order_by(t.c[where.id_column])):
        yield str(row[0]), row[1], (row[2] if legacy is not None else None)


def key_ids_in_use(conn: Connection) -> dict[str, int]:
    """How many stored values each key id seals."""
    used: dict[str, int] = {}
    for where in SEALED_COLUMNS:
        for _, value, _ in _values(conn, where):
            kid = kid_of(value) if value is not None else None
            if kid is not None:
                used[kid] = used.get(kid, 0) + 1
    return used


def seal_on_start(conn: Connection, keys: StoreKeys) -> int:
    """Run by every start (Store.migrate), in one transaction; returns how many values it sealed.

    1. With no key file, refuse if any value is already sealed (the key was lost or not copied
       along: going on would leave those secrets unreadable, and sealing new ones under a fresh
       key would hide that); else create the file.
    2. Refuse if a value names a key the file does not hold (a wrong or stale key file).
    3. Seal every plaintext value older versions left (in place, or moved out of the legacy
       plaintext column), so no secret stays readable in the database file.
    """
    used = key_ids_in_use(conn)
    if used and not keys.exists():  # 1.
        raise StoreSecurityError(
            f"the store key file {keys.path} is missing, and {sum(used.values())} secret(s) in "
            "the database are sealed with it",
            hint=f"restore the key file from backup before starting ({_ROTATE_HINT})",
        )
    known = set(keys.key_ids()) if keys.exists() else {keys.create_if_missing()}
    unknown = sorted(set(used) - known)
    if unknown:  # 2.
        raise StoreSecurityError(
            f"secrets in the database are sealed with store key(s) {', '.join(unknown)}, which "
            f"{keys.path} does not hold",
            hint=f"restore the key file that holds them ({_ROTATE_HINT})",
        )
    sealed = 0
    with _zeroing(conn):
        for where in SEALED_COLUMNS:  # 3.
            t = where.table
            for row_id, value, legacy in list(_values(conn, where)):
                plain = legacy if value is None else (value if kid_of(value) is None else None)
                if plain is None and legacy is None:
                    continue
                values: dict[str, str | None] = {}
                if plain is not None:
                    values[where.column] = keys.seal(plain, where, row_id)
                    sealed += 1
                if where.legacy is not None:
                    values[where.legacy] = None
                conn.execute(update(t).where(t.c[where.id_column] == row_id).values(**values))
    return sealed


def reseal_all(conn: Connection, keys: StoreKeys) -> int:
    """Rotation step 2, in one transaction: open every sealed value and seal it again with the
    current key (row locks held until commit). Returns how many it resealed."""
    count = 0
    with _zeroing(conn):
        for where in SEALED_COLUMNS:
            t = where.table
            id_col = t.c[where.id_column]
            rows = conn.execute(
                select(id_col, t.c[where.column])
                .where(t.c[where.column].is_not(None))
                .order_by(id_col)
                .with_for_update()
            ).all()
            for row_id, value in rows:
                plain = keys.open(value, where, str(row_id))
                conn.execute(
                    update(t)
                    .where(id_col == row_id)
                    .values({where.column: keys.seal(plain, where, str(row_id))})
                )
                count += 1
    return count


@contextmanager
def _zeroing(conn: Connection) -> Iterator[None]:
    """SQLite: while sealing, overwrite the bytes each update replaces with zeros, so an old
    plaintext or old-key ciphertext does not linger in the file's free space."""
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        conn.exec_driver_sql("PRAGMA secure_delete=ON")
    try:
        yield
    finally:
        if sqlite:
            conn.exec_driver_sql("PRAGMA secure_delete=OFF")


def scrub(engine: Engine) -> None:
    """After sealing or resealing: drop the old versions of the rows the database still keeps.
    SQLite: copy the WAL into the database and truncate it (its frames hold the old pages).
    PostgreSQL: rewrite the three tables (VACUUM FULL), so the dead row versions go; its own
    WAL segments are recycled by the server in time (docs/store.md)."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            raw.close()
    elif engine.dialect.name == "postgresql":
        names = ", ".join(f'"{w.table.name}"' for w in SEALED_COLUMNS)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM FULL {names}")
