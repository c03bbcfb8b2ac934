"""PC images: built from a recipe with debootstrap and apt, stored read-only, content-addressed.

An image is a Debian root filesystem plus a manifest. PCs use the rootfs only as the read-only
lower layer of an overlayfs, so an image never changes once registered; see docs/images.md.
"""

from __future__ import annotations

from corral.runtime.images._build import build_image
from corral.runtime.images._recipe import Recipe, builtin_names, builtin_recipe_path, load_recipe
from corral.runtime.images._store import DesktopUser, Image, ImageStore

__all__ = [
    "DesktopUser",
    "Image",
    "ImageStore",
    "Recipe",
    "build_image",
    "builtin_names",
    "builtin_recipe_path",
    "load_recipe",
]
