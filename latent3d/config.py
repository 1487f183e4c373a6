"""Config dataclasses to and from plain JSON-able dicts (nested dataclasses, tuples restored)."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild dataclass ``cls`` from ``data``; unknown keys raise ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_RULES = {
    "positive_ints": (lambda v: is_int(v) and v > 0, "a positive integer"),
    "non_negative_ints": (lambda v: is_int(v) and v >= 0, "a non-negative integer"),
    "positive_numbers": (lambda v: is_number(v) and v > 0, "a positive finite number"),
    "non_negative_numbers": (lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
    "integers": (is_int, "an integer"),
    "booleans": (lambda v: isinstance(v, bool), "True or False"),
}


def check_fields(config: Any, **rules: tuple[str, ...]) -> None:
    """Raise ValueError "<Class>.<field> must be <rule>, got <value>" for the first field breaking its rule.

    ``rules`` maps a rule name of ``_RULES`` (positive_ints, non_negative_ints, positive_numbers,
    non_negative_numbers, integers, booleans) to the fields it applies to; ``choices={field: options}``
    checks membership. The stage configs (Latent-NeRF, Latent-Paint, refinement) share these rules.
    """
    name = type(config).__name__
    choices = rules.pop("choices", {})
    for rule, fields in rules.items():
        accept, words = _RULES[rule]
        for field in fields:
            value = getattr(config, field)
            if not accept(value):
                raise ValueError(f"{name}.{field} must be {words}, got {value!r}")
    for field, options in choices.items():
        if getattr(config, field) not in options:
            raise ValueError(f"{name}.{field} must be one of {list(options)}, got {getattr(config, field)!r}")
