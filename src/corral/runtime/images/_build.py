"""`build_image`: recipe in, registered read-only image out, or nothing at all.

A build either registers a complete image or leaves no trace but its log: every step works in a
staging folder next to the store (same filesystem, so registering is a rename), and any failure,
Ctrl-C or SIGTERM stops the running command, unmounts and deletes that folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import corral
from corral.config import paths
from corral.errors import (
    ImageBuildError,
    ImageNotFoundError,
    InvalidInputError,
    PermissionDeniedError,
)
from corral.runtime.images._base import BaseBuilder, copy_tree, sweep_staging
from corral.runtime.images._digest import files_digest, tree_digest
from corral.runtime.images._manifest import BuildInputs, is_up_to_date, make_manifest
from corral.runtime.images._mirror import Mirror, host_mirror
from corral.runtime.images._mounts import safe_rmtree
from corral.runtime.images._recipe import Recipe, builtin_recipe_path, load_recipe, recipe_digest
from corral.runtime.images._rootfs import installed_packages, parse_passwd, resolve_in_root
from corral.runtime.images._run import CommandLog
from corral.runtime.images._signals import Interrupted, signals_blocked, sigterm_raises
from corral.runtime.images._steps import PCD_ROOT, finish_rootfs, install_pcd, pcd_files
from corral.runtime.images._store import Image, ImageStore

__all__ = ["build_image", "pcd_source_dir"]


def pcd_source_dir() -> Path:
    import corral.pcd

    return Path(corral.pcd.__file__).parent


def _host_arch() -> str:
    done = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError("cannot tell the host's Debian architecture (dpkg missing?)")
    return done.stdout.strip()


@contextlib.contextmanager
def _build_lock(cache: Path, step: Callable[[str], None]) -> Iterator[None]:
    """One build at a time per cache: they share the .deb cache and the cached layers."""
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / "build.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            step("waiting for another image build to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Clock:
    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.start = time.monotonic()
        self._progress = progress

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def step(self, msg: str) -> None:
        if self._progress is not None:
            self._progress(f"[{self.elapsed():6.1f}s] {msg}")


def _compile_pcd(rootfs: Path, log: CommandLog) -> None:
    """Byte-compile pcd with the image's python3, so it never writes caches at run time (the
    image is read-only) and starts faster. Hash-based .pyc files keep the digest reproducible."""
    if not resolve_in_root(rootfs, "/usr/bin/python3").exists():
        raise InvalidInputError(
            "the recipe does not install python3, which pcd (the in-PC daemon) needs",
            hint="add python3, python3-pil and python3-xlib to the recipe's packages",
        )
    log.run(
        [
            "chroot",
            str(rootfs),
            "/usr/bin/python3",
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "checked-hash",
            f"{PCD_ROOT}/pcd",
        ],
        "compiling pcd",
    )


def _prune_logs(logs: Path, keep: int = 50) -> None:
    """Build logs are for diagnosing recent failures; keep the newest few."""
    if logs.is_dir():
        old = sorted(logs.glob("build-*.log"), key=lambda p: p.stat().st_mtime)[:-keep]
        for p in old:
            p.unlink(missing_ok=True)


def _fresh_image(store: ImageStore, inputs: BuildInputs) -> Image | None:
    """The current image if it was built from exactly these inputs."""
    try:
        current = store.get(inputs.name)
    except ImageNotFoundError:
        return None
    return current if is_up_to_date(current.manifest, inputs) else None


def _resolve_recipe(name: str, recipe: Path | None) -> Recipe:
    loaded = load_recipe(recipe if recipe is not None else builtin_recipe_path(name))
    if loaded.name != name:
        raise InvalidInputError(
            f"recipe {loaded.origin} is named {loaded.name!r}, not {name!r}",
            hint=f"build it as `corral image build {loaded.name} --recipe {loaded.origin}`",
        )
    return loaded


def build_image(
    name: str,
    recipe: Path | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
    store: ImageStore | None = None,
    refresh: bool = False,
) -> Image:
    """Build image `name` from `recipe` (default: the built-in recipe of that name).

    Returns the current image untouched when it was built from the same recipe and pcd (unless
    `force`). `refresh` also remakes the cached package layers to pick up new package versions.
    """
    clock = _Clock(progress)
    store = store if store is not None else ImageStore()
    rec = _resolve_recipe(name, recipe)
    mirror = host_mirror()
    suite = rec.suite or mirror.suite
    pcd_src = pcd_source_dir()
    inputs = BuildInputs(
        name=name,
        suite=suite,
        arch=_host_arch(),
        recipe_path=str(rec.origin),
        recipe_digest=recipe_digest(rec, suite),
        pcd_version=corral.__version__,
        pcd_digest=files_digest(pcd_src, pcd_files(pcd_src)),
    )
    fresh = None if (force or refresh) else _fresh_image(store, inputs)
    if fresh is not None:
        clock.step(f"{name} is up to date ({fresh.digest[:19]})")
        return fresh
    if os.geteuid() != 0:
        raise PermissionDeniedError(
            "building an image needs root (debootstrap, chroot and mounts)",
            hint=f"run it as root, e.g. `sudo corral image build {name}`",
        )
    cache = paths().cache
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    _prune_logs(cache / "logs")
    log = CommandLog(cache / "logs" / f"build-{name}-{stamp}.log")
    clock.step(f"building {name} ({suite}/{inputs.arch}); log: {log.path}")
    try:
        with sigterm_raises(), _build_lock(cache, clock.step):
            # Someone may have built it while we waited for the lock.
            fresh = None if (force or refresh) else _fresh_image(store, inputs)
            if fresh is not None:
                clock.step(f"{name} was just built by another build: up to date")
                return fresh
            return _build_locked(rec, inputs, store, log, clock, refresh, mirror)
    except Interrupted as exc:
        raise ImageBuildError(
            f"building {name} was interrupted by signal {exc.args[0]}; nothing was registered",
            hint=f"log: {log.path}",
        ) from None
    except OSError as exc:
        raise ImageBuildError(f"building {name} failed: {exc}", hint=f"log: {log.path}") from exc
    finally:
        log.close()


def _build_locked(
    rec: Recipe,
    inputs: BuildInputs,
    store: ImageStore,
    log: CommandLog,
    clock: _Clock,
    refresh: bool,
    mirror: Mirror,
) -> Image:
    cache = paths().cache
    store.root.mkdir(parents=True, exist_ok=True)
    with signals_blocked():
        for parent in (store.root, cache / "bootstrap", cache / "bases"):
            sweep_staging(parent)
    builder = BaseBuilder(
        cache=cache,
        mirror=mirror,
        suite=inputs.suite,
        arch=inputs.arch,
        log=log,
        step=clock.step,
        refresh=refresh,
    )
    staging = store.root / f".staging-{secrets.token_hex(6)}"
    try:
        base = builder.base(rec)
        staging.mkdir()
        rootfs = staging / "rootfs"
        clock.step("copying the base into staging")
        copy_tree(base, rootfs)
        clock.step(f"creating user {rec.user_name} (uid {rec.user_uid})")
        log.run(
            [
                "chroot",
                str(rootfs),
                "useradd",
                "-m",
                "-u",
                str(rec.user_uid),
                "-U",
                "-s",
                "/bin/bash",
                rec.user_name,
            ],
            f"creating user {rec.user_name}",
        )
        user = parse_passwd(resolve_in_root(rootfs, "/etc/passwd").read_text(), rec.user_name)
        if user is None:
            raise log.failure(f"user {rec.user_name} is missing after useradd")
        clock.step("installing pcd and the recipe's files")
        install_pcd(rootfs, pcd_source_dir())
        _compile_pcd(rootfs, log)
        finish_rootfs(rootfs, rec)
        packages = installed_packages(rootfs)
        clock.step("hashing the root filesystem")
        tree = tree_digest(rootfs)
        manifest = make_manifest(
            inputs,
            digest=tree.digest,
            size_bytes=tree.size_bytes,
            packages=packages,
            user={"name": rec.user_name, "uid": user[0], "gid": user[1], "home": user[2]},
            build_seconds=clock.elapsed(),
        )
        with signals_blocked():
            image = store.publish(rec.name, staging, manifest)
        clock.step(f"registered {rec.name} {tree.digest[:19]} ({len(packages)} packages)")
        return image
    finally:
        with signals_blocked():
            safe_rmtree(staging)
