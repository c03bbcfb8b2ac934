"""Typed, validated access to a request's "args", with error messages that say what to send.

JSON null is treated as "not given" everywhere, so clients may send optional fields as null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import bad_request


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


class Args:
    """The args of one request for op `op`."""

    def __init__(self, op: str, raw: Mapping[str, Any]) -> None:
        self.op = op
        self._raw = raw

    def has(self, name: str) -> bool:
        return self._raw.get(name) is not None

    def raw(self, name: str) -> Any:
        return self._raw.get(name)

    def _fail(self, name: str, want: str, value: object) -> Exception:
        return bad_request(f"{self.op}: {name!r} must be {want}, got {_kind(value)}")

    def get_int(
        self, name: str, *, default: int | None = None, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self._raw.get(name)
        if value is None:
            if default is None:
                raise bad_request(f"{self.op}: missing required integer {name!r}")
            return default
        return self.check_int(name, value, lo=lo, hi=hi)

    def opt_int(self, name: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
        value = self._raw.get(name)
        return None if value is None else self.check_int(name, value, lo=lo, hi=hi)

    def check_int(
        self, name: str, value: object, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        """Accept ints (and floats with no fraction, as some JSON encoders send them)."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(name, "an integer", value)
        if lo is not None and value < lo:
            raise bad_request(f"{self.op}: {name!r} is {value}; it must be >= {lo}")
        if hi is not None and value > hi:
            raise bad_request(f"{self.op}: {name!r} is {value}; it must be <= {hi}")
        return value

    def get_float(self, name: str, *, default: float, lo: float, hi: float) -> float:
        value = self._raw.get(name)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._fail(name, "a number", value)
        number = float(value)
        if not math.isfinite(number) or not lo <= number <= hi:
            raise bad_request(f"{self.op}: {name!r} is {value}; it must be in {lo}..{hi}")
        return number

    def get_str(self, name: str, *, max_len: int, allow_empty: bool = True) -> str:
        value = self._raw.get(name)
        if value is None:
            raise bad_request(f"{self.op}: missing required string {name!r}")
        return self.check_str(name, value, max_len=max_len, allow_empty=allow_empty)

    def opt_str(self, name: str, *, max_len: int) -> str | None:
        value = self._raw.get(name)
        return None if value is None else self.check_str(name, value, max_len=max_len)

    def check_str(self, name: str, value: object, *, max_len: int, allow_empty: bool = True) -> str:
        if not isinstance(value, str):
            raise self._fail(name, "a string", value)
        if len(value) > max_len:
            raise bad_request(
                f"{self.op}: {name!r} has {len(value)} characters; the limit is {max_len}"
            )
        if not value and not allow_empty:
            raise bad_request(f"{self.op}: {name!r} must not be empty")
        return value

    def get_bool(self, name: str, *, default: bool) -> bool:
        value = self._raw.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(name, "true or false", value)
        return value

    def opt_str_list(self, name: str, *, max_items: int, max_len: int) -> list[str] | None:
        """A non-empty list of strings without NUL characters (an argv)."""
        value = self._raw.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise self._fail(name, "a non-empty list of strings", value)
        if len(value) > max_items:
            raise bad_request(
                f"{self.op}: {name!r} has {len(value)} items; the limit is {max_items}"
            )
        for item in value:
            if not isinstance(item, str):
                raise bad_request(
                    f"{self.op}: every item of {name!r} must be a string, got {_kind(item)}"
                )
            if "\0" in item:
                raise bad_request(f"{self.op}: items of {name!r} must not contain NUL")
            if len(item) > max_len:
                raise bad_request(f"{self.op}: an item of {name!r} is over {max_len} characters")
        return list(value)

    def opt_str_map(self, name: str, *, max_items: int) -> dict[str, str] | None:
        value = self._raw.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._fail(name, "an object of string to string", value)
        if len(value) > max_items:
            raise bad_request(f"{self.op}: {name!r} has too many entries (max {max_items})")
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(item, str):
                raise bad_request(f"{self.op}: {name}[{key!r}] must be a string")
            if not key or "=" in key or "\0" in key or "\0" in item:
                raise bad_request(f"{self.op}: {name} has an invalid entry {key!r}")
            out[key] = item
        return out
