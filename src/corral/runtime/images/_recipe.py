"""Image recipes: a small TOML file saying which Debian packages, user and files an image has.

Parsing and validation are pure apart from reading the recipe and the files it names; every error
names the key at fault and what to change, because recipes are written by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corral.errors import InvalidInputError

__all__ = [
    "NAME_RE",
    "Recipe",
    "RecipeFile",
    "builtin_names",
    "builtin_recipe_path",
    "load_recipe",
    "recipe_digest",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9.-]*$")
_MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
_BUILTIN_DIR = Path(__file__).parent / "recipes"


@dataclass(frozen=True)
class RecipeFile:
    """One extra file for the image, its content already read from the recipe or its source."""

    path: str  # absolute, normalised, inside the image
    data: bytes
    mode: int


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; `packages` is sorted and unique so equal recipes compare equal."""

    name: str
    suite: str | None
    packages: tuple[str, ...]
    user_name: str
    user_uid: int
    files: tuple[RecipeFile, ...]
    origin: Path  # the recipe file, for messages and the manifest


class _UserModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "user"
    uid: int = Field(default=1000, ge=1000, le=60000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _USER_RE.match(v) or v == "root":
            raise ValueError("must be a lowercase login name like 'user' (not 'root')")
        return v


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    content: str | None = None
    source: str | None = None
    mode: str = "0644"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        p = PurePosixPath(v)
        if not p.is_absolute() or ".." in p.parts or str(p) == "/":
            raise ValueError("must be an absolute file path inside the image, like '/etc/motd'")
        return str(p)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if not _MODE_RE.match(v):
            raise ValueError('must be an octal string like "0644"')
        return v

    @model_validator(mode="after")
    def _one_source(self) -> _FileModel:
        if (self.content is None) == (self.source is None):
            raise ValueError("give exactly one of 'content' or 'source'")
        return self


class _RecipeModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    suite: str | None = None
    packages: list[str] = Field(min_length=1)
    user: _UserModel = _UserModel()
    files: list[_FileModel] = []

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-' (max 63)")
        return v

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str | None) -> str | None:
        if v is not None and not _SUITE_RE.match(v):
            raise ValueError("must be a Debian suite name like 'bookworm'")
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not _PACKAGE_RE.match(p)]
        if bad:
            raise ValueError(f"not Debian package names: {', '.join(map(repr, bad))}")
        return v


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def _explain(exc: ValidationError) -> str:
    """One line per problem, naming the key; unknown keys also list the allowed ones."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _loc(loc[:-1]) if loc[:-1] else "the recipe"
            model: type[BaseModel] = _RecipeModel
            if loc[:1] == ("user",):
                model = _UserModel
            elif loc[:1] == ("files",):
                model = _FileModel
            allowed = ", ".join(model.model_fields)
            lines.append(f"unknown key {_loc(loc)!r} in {parent} (allowed: {allowed})")
        elif err["type"] == "missing":
            lines.append(f"{_loc(loc)}: required key is missing")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{_loc(loc)}: {msg}")
    return "; ".join(lines)


def _parse(text: str, origin: Path) -> _RecipeModel:
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(
            f"recipe {origin} is not valid TOML: {exc}", hint="fix the syntax at that line"
        ) from None
    try:
        return _RecipeModel.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(
            f"recipe {origin} is invalid: {_explain(exc)}",
            hint="see docs/images.md for the recipe format",
        ) from None


def _file_data(index: int, f: _FileModel, base: Path) -> bytes:
    if f.content is not None:
        return f.content.encode()
    assert f.source is not None
    src = base / f.source
    try:
        return src.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"recipe files[{index}].source: cannot read {src}: {exc.strerror}",
            hint="paths in 'source' are relative to the recipe's folder",
        ) from None


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file; raises InvalidInputError naming the bad key."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInputError(f"cannot read recipe {path}: {exc.strerror}") from None
    model = _parse(text, path)
    files = tuple(
        RecipeFile(path=f.path, data=_file_data(i, f, path.parent), mode=int(f.mode, 8))
        for i, f in enumerate(model.files)
    )
    return Recipe(
        name=model.name,
        suite=model.suite,
        packages=tuple(sorted(set(model.packages))),
        user_name=model.user.name,
        user_uid=model.user.uid,
        files=files,
        origin=path,
    )


def builtin_names() -> list[str]:
    return sorted(p.stem for p in _BUILTIN_DIR.glob("*.toml"))


def builtin_recipe_path(name: str) -> Path:
    """The recipe shipped with Corral under `name`; InvalidInputError lists the built-ins."""
    path = _BUILTIN_DIR / f"{name}.toml"
    if not NAME_RE.match(name) or not path.is_file():
        raise InvalidInputError(
            f"no built-in recipe named {name!r} (built-ins: {', '.join(builtin_names())})",
            hint="pass your own recipe with --recipe FILE",
        )
    return path


def recipe_digest(recipe: Recipe, suite: str) -> str:
    """Digest of what the recipe asks for (not its formatting), with the suite resolved."""
    canonical = {
        "name": recipe.name,
        "suite": suite,
        "packages": list(recipe.packages),
        "user": {"name": recipe.user_name, "uid": recipe.user_uid},
        "files": [
            {"path": f.path, "mode": f.mode, "sha256": hashlib.sha256(f.data).hexdigest()}
            for f in recipe.files
        ],
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()
