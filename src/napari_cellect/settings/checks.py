"""Validation helpers of the settings dataclasses: each raises :class:`InputError` naming the
field, what was expected and what was found."""

from __future__ import annotations

import math
import numbers
from typing import Any

from napari_cellect.errors import InputError


def int_triple(value: Any, name: str) -> tuple[int, int, int]:
    """``value`` as three ints (Z, Y, X); one integer is repeated. ``name`` is for the error."""
    if isinstance(value, numbers.Integral):
        return (int(value),) * 3
    try:
        items = tuple(int(v) for v in value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be 3 integers (Z, Y, X), found {value!r}") from error
    if len(items) != 3:
        raise InputError(f"{name} must be 3 integers (Z, Y, X), found {value!r}")
    return items


def check_choice(obj: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        quoted = [repr(c) for c in choices]
        allowed = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
        raise InputError(f"{type(obj).__name__}.{name} must be {allowed}, found {value!r}")


def check_probability(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{type(obj).__name__}.{name} must be in [0, 1], found {value}")


def check_non_negative(obj: object, *names: str, finite: bool = False) -> None:
    """Every field is a number >= 0 (never NaN); with ``finite``, also not infinite."""
    for name in names:
        value = getattr(obj, name)
        if not value >= 0 or (finite and not math.isfinite(value)):
            what = "a finite number >= 0" if finite else ">= 0"
            raise InputError(f"{type(obj).__name__}.{name} must be {what}, found {value}")


def check_positive_int(obj: object, *names: str) -> None:
    """Every field is an integer >= 1 (numpy integers are stored as int; bools are refused)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(
                f"{type(obj).__name__}.{name} must be an integer >= 1, found {value!r}"
            )
        object.__setattr__(obj, name, int(value))
