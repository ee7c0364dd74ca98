"""Settings dataclasses to and from plain dicts: what a model bundle, a checkpoint and
``cellect track --show-config`` store. Used where settings cross a file boundary; inside the
core, settings travel as the dataclasses themselves."""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import TYPE_CHECKING, Any, TypeVar

from napari_cellect.errors import InputError

logger = logging.getLogger(__name__)


if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A (nested) config dataclass as plain dicts, lists and scalars."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def config_from_dict(cls: type[C], values: Any, strict: bool = False) -> C:
    """Rebuild a (nested) config dataclass from :func:`config_to_dict` output.

    Missing fields take their defaults, so configs saved by older versions still load. Unknown
    fields raise :class:`InputError` when ``strict``, else they are logged and ignored (a file
    written by a newer version). Tuple-typed fields are converted back from lists.
    """
    if not isinstance(values, dict):
        raise InputError(f"expected a dict for {cls.__name__}, found {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        if strict:
            raise InputError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        logger.warning("ignoring unknown %s field(s) %s", cls.__name__, unknown)
    kwargs = {}
    for name in known & set(values):
        hint = hints[name]
        value = values[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value, strict)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as error:
        raise InputError(f"invalid {cls.__name__}: {error}") from error
