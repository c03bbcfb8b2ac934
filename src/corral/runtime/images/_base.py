"""The two cached layers under every image: a debootstrapped root and the root with the
recipe's packages installed.

Both are slow to make (network, dpkg) and depend on few inputs, so each is kept under
`<cache>/{bootstrap,bases}/<key>/` keyed by a digest of exactly those inputs, and made again only
when they change or the cache is gone; a refresh remakes the package layer (its apt-get upgrade
also brings the bootstrapped packages up to date). Downloaded .debs are kept across all builds
in `<cache>/debootstrap` and `<cache>/apt-archives`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from corral.errors import ImageBuildError
from corral.runtime.images._manifest import cache_key
from corral.runtime.images._mirror import Mirror, image_sources, render_deb822
from corral.runtime.images._mounts import chroot_mounts, safe_rmtree
from corral.runtime.images._recipe import Recipe
from corral.runtime.images._run import CommandLog
from corral.runtime.images._steps import configure_apt, trim_rootfs

__all__ = [
    "HOST_KEYRING",
    "BaseBuilder",
    "archive_keyring",
    "copy_tree",
    "debootstrap_argv",
    "sweep_staging",
]

_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
HOST_KEYRING = Path(_KEYRING)  # from the host's debian-archive-keyring package
_META = "layer.json"
_APT = [
    "apt-get",
    "-q",
    "-y",
    # Signatures are checked: nothing in the image's apt configuration may turn that off.
    "-o",
    "Acquire::AllowInsecureRepositories=false",
    "-o",
    "Acquire::AllowDowngradeToInsecureRepositories=false",
    "-o",
    "APT::Get::AllowUnauthenticated=false",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
]


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a root filesystem exactly (owners, modes, links, devices), sharing blocks when the
    filesystem can (reflinks)."""
    done = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(src), str(dst)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ImageBuildError(f"copying {src} to {dst} failed: {done.stderr.strip()[-2000:]}")


def archive_keyring(mirror: Mirror, default: Path = HOST_KEYRING) -> Path:
    """The keyring debootstrap checks the archive's signatures with: the one the host's apt
    uses for this mirror (`Signed-By`), else Debian's. Missing both is an error, never an
    unchecked download."""
    if mirror.signed_by and Path(mirror.signed_by).is_file():
        return Path(mirror.signed_by)
    if default.is_file():
        return default
    raise ImageBuildError(
        f"cannot check the Debian archive's signatures: {default} is missing",
        hint="install the host's debian-archive-keyring package "
        "(scripts/install-system-deps.sh does it)",
    )


def debootstrap_argv(
    suite: str, arch: str, debs: Path, target: Path, mirror_uri: str, keyring: Path
) -> list[str]:
    """debootstrap with the Release file's signature checked against `keyring`, and a failure
    rather than a warning when it cannot be checked (`--force-check-gpg`)."""
    return [
        "debootstrap",
        "--variant=minbase",
        f"--arch={arch}",
        f"--cache-dir={debs}",
        "--force-check-gpg",
        f"--keyring={keyring}",
        suite,
        str(target),
        mirror_uri,
    ]


def sweep_staging(parent: Path) -> None:
    """Remove staging folders a killed build left behind (only call while holding the lock)."""
    if parent.is_dir():
        for p in parent.glob(".staging-*"):
            safe_rmtree(p)


@dataclass
class BaseBuilder:
    cache: Path
    mirror: Mirror
    suite: str
    arch: str
    log: CommandLog
    step: Callable[[str], None]
    refresh: bool = False
    keyring: Path = HOST_KEYRING  # Debian's archive keys, when the host's apt names none

    def bootstrap(self) -> tuple[str, Path]:
        """Key and rootfs of a minimal Debian root (debootstrap --variant=minbase)."""
        key = cache_key(
            kind="bootstrap",
            suite=self.suite,
            arch=self.arch,
            mirror=self.mirror.uri,
            variant="minbase",
        )
        final = self.cache / "bootstrap" / key
        if (final / _META).is_file():  # refresh skips this: apt-get upgrade updates it
            self.step(f"debootstrap {self.suite}: cached")
            return key, final / "rootfs"
        keyring = archive_keyring(self.mirror, self.keyring)
        self.step(f"debootstrap {self.suite} (minbase)")
        debs = self.cache / "debootstrap"
        debs.mkdir(parents=True, exist_ok=True)
        with self._staging(final) as staging:
            argv = debootstrap_argv(
                self.suite, self.arch, debs, staging / "rootfs", self.mirror.uri, keyring
            )
            self.log.run(argv, f"debootstrap of {self.suite}")
            self._commit(staging, final, {"suite": self.suite, "arch": self.arch})
        return key, final / "rootfs"

    def base(self, recipe: Recipe) -> Path:
        """Rootfs with the recipe's packages installed, apt caches and lists removed."""
        boot_key, boot = self.bootstrap()
        keyring = _KEYRING if (boot / _KEYRING.lstrip("/")).is_file() else None
        sources = render_deb822(image_sources(self.mirror, self.suite, keyring))
        key = cache_key(
            kind="base", bootstrap=boot_key, packages=list(recipe.packages), sources=sources
        )
        final = self.cache / "bases" / key
        if (final / _META).is_file() and not self.refresh:
            self.step(f"packages ({len(recipe.packages)} requested): cached base {key[:12]}")
            return final / "rootfs"
        with self._staging(final) as staging:
            rootfs = staging / "rootfs"
            self.step("copying the bootstrapped root")
            copy_tree(boot, rootfs)
            configure_apt(rootfs, sources, Path("/etc/resolv.conf"))
            archives = self.cache / "apt-archives"
            (archives / "partial").mkdir(parents=True, exist_ok=True)
            chroot = ["chroot", str(rootfs)]
            with chroot_mounts(rootfs, {"/var/cache/apt/archives": archives}):
                self.step("apt-get update")
                self.log.run([*chroot, *_APT, "update"], "apt-get update")
                self.step("apt-get upgrade (security and point-release fixes)")
                self.log.run([*chroot, *_APT, "upgrade"], "apt-get upgrade")
                self.step(f"installing {len(recipe.packages)} packages and their dependencies")
                self.log.run(
                    [*chroot, *_APT, "install", "--no-install-recommends", "--", *recipe.packages],
                    "installing the recipe's packages",
                )
            with chroot_mounts(rootfs):  # the shared .deb cache is unmounted: clean only ours
                self.log.run([*chroot, "apt-get", "clean"], "apt-get clean")
            trim_rootfs(rootfs)
            self._commit(staging, final, {"recipe": recipe.name, "packages": list(recipe.packages)})
        self._prune(final, recipe.name)
        return final / "rootfs"

    def _staging(self, final: Path) -> _Staging:
        return _Staging(final.parent / f".staging-{secrets.token_hex(6)}")

    def _commit(self, staging: Path, final: Path, meta: dict[str, object]) -> None:
        meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        (staging / _META).write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            safe_rmtree(final)
        os.rename(staging, final)

    def _prune(self, keep: Path, recipe_name: str) -> None:
        """Old bases of the same recipe are dead weight (often a GiB): drop them."""
        for other in keep.parent.iterdir():
            if other == keep or other.name.startswith("."):
                continue
            try:
                meta = json.loads((other / _META).read_text())
            except (OSError, ValueError):
                continue
            if meta.get("recipe") == recipe_name:
                self.step(f"removing the old cached base {other.name[:12]}")
                safe_rmtree(other)


class _Staging:
    """A fresh staging folder that is always removed (after unmounting) unless committed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True)
        return self.path

    def __exit__(self, *exc: object) -> None:
        safe_rmtree(self.path)
