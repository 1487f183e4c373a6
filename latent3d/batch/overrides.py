"""Dotted config overrides (``{"sds.guidance_scale": 50, "render.step_size": 0.02}``) applied to config
dataclasses, with every value checked against the field's type before the dataclass validates it.

A name is a path of field names through nested dataclasses ending at a leaf field; its first part may
instead name a *root* (``export.texture_size`` → the ExportConfig of the job). Each override is applied
on its own with ``dataclasses.replace`` at every level, so a dataclass's own ``__post_init__`` check that
fails is reported against the one key that caused it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

_MISSING = object()


class OverrideError(ValueError):
    """A bad override: names the key, the rule and the value."""


def apply_overrides(configs: dict[str, Any], overrides: dict[str, Any], main: str) -> dict[str, Any]:
    """Return ``configs`` (root name → config dataclass) with ``overrides`` applied.

    Names without a known root prefix go to ``configs[main]``; ``"export.texture_size"`` goes to
    ``configs["export"]`` when there is such a root. Raises OverrideError on the first bad key.
    """
    result = dict(configs)
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise OverrideError(f"override names must be non-empty strings, got {key!r}")
        head, _, rest = key.partition(".")
        root, path = (head, rest) if rest and head in result and head != main else (main, key)
        result[root] = _set(result[root], path.split("."), value, key)
    return result


def _set(config: Any, parts: list[str], value: Any, key: str) -> Any:
    name = parts[0]
    fields = {f.name: f for f in dataclasses.fields(config)}
    if name not in fields:
        raise OverrideError(f"override {key!r}: {type(config).__name__} has no field {name!r} (fields: {', '.join(sorted(fields))})")
    hint = typing.get_type_hints(type(config))[name]
    current = getattr(config, name)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(current):
            raise OverrideError(f"override {key!r}: {name!r} is a single value, not a group of settings")
        new = _set(current, parts[1:], value, key)
    else:
        if dataclasses.is_dataclass(current):
            inner = ", ".join(f"{key}.{f.name}" for f in dataclasses.fields(current))
            raise OverrideError(f"override {key!r} names a group of settings: name one of its fields ({inner})")
        new = check_value(hint, value, key)
    try:
        return dataclasses.replace(config, **{name: new})
    except OverrideError:
        raise
    except (ValueError, TypeError) as e:
        raise OverrideError(f"override {key!r} = {value!r}: {e}") from e


def check_value(hint: Any, value: Any, key: str) -> Any:
    """``value`` converted to the field type ``hint`` (lists → tuples, ints → floats), else OverrideError."""
    converted = _convert(hint, value)
    if converted is _MISSING:
        raise OverrideError(f"override {key!r} must be {describe(hint)}, got {value!r}")
    return converted


def _convert(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value if any(value == a and type(value) is type(a) for a in args) else _MISSING
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            converted = _convert(arm, value)
            if converted is not _MISSING:
                return converted
        return _MISSING
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _MISSING
        arms = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(arms) != len(value):
            return _MISSING
        items = [_convert(arm, item) for arm, item in zip(arms, value)]
        return _MISSING if any(item is _MISSING for item in items) else tuple(items)
    if hint is type(None):
        return None if value is None else _MISSING
    if hint is bool:
        return value if isinstance(value, bool) else _MISSING
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISSING
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else _MISSING
    if hint is str:
        return value if isinstance(value, str) else _MISSING
    return value


def describe(hint: Any) -> str:
    """The words for a field type in an error message ("a number", "one of 'grid', 'exact'", ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}s"
        return f"a list of {len(args)} " + ("numbers" if all(a is float for a in args) else "values")
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(hint, str(hint))
