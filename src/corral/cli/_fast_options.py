"""Typer 0.29 coerces every option value through a pydantic `TypeAdapter`, and builds that
adapter even for a value that needs no coercion: an option left out (None) or a text option
given text. Building the first adapter imports pydantic (about half a second), so every
command paid it, `--help` included, because the root command's own options are processed
before a subcommand's help. This skips the adapter exactly where its answer is known: None
(what Typer's coercion returns for it: `()` for multi-value options, else None) and a `str`
option given a plain `str` with no custom `parser=` (an identity: Typer has no string
constraints). Every other value goes through
Typer's coercion unchanged. `tests/unit/test_cli_startup.py` holds both the semantics and the
start-up budget; the patch refuses to install on a Typer whose internals it does not know.
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from typer import core as _core

__all__ = ["install"]


def _needs_no_coercion(param: Any, value: Any) -> tuple[bool, Any]:
    if value is None:
        multi = param.multiple or param.nargs == -1
        return True, (() if multi else None)
    descriptor = param.type_descriptor
    parser = getattr(descriptor.parameter_info, "parser", None)
    if type(value) is str and parser is None and _is_text(descriptor.annotation):
        return True, value
    if isinstance(value, bool) and descriptor.annotation is bool:
        return True, value
    return False, value


def _is_text(annotation: Any) -> bool:
    """`str`, `str | None` or `Optional[str]`."""
    if annotation is str:
        return True
    union = get_origin(annotation) in (Union, types.UnionType)
    return union and set(get_args(annotation)) == {str, type(None)}


def install() -> None:
    cls = getattr(_core, "_TyperParameter", None)
    original = getattr(cls, "process_value", None)
    if cls is None or original is None or getattr(original, "_corral_fast", False):
        return
    if not hasattr(cls, "get_runtime_param") or not hasattr(cls, "value_is_missing"):
        return  # a Typer whose internals changed: keep its own behaviour

    def process_value(self: Any, ctx: Any, value: Any) -> Any:
        skip, coerced = _needs_no_coercion(self, value)
        if not skip:
            return original(self, ctx, value)
        if self.required and self.value_is_missing(coerced):
            from typer._click.exceptions import MissingParameter

            raise MissingParameter(ctx=ctx, param=self)
        if self.callback is not None:
            coerced = self.callback(ctx, self, coerced)
        return coerced

    process_value._corral_fast = True  # type: ignore[attr-defined]
    cls.process_value = process_value
