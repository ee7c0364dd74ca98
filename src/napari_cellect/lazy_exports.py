"""Names of a package imported on first use (PEP 562), so importing the package stays cheap:
``napari_cellect._napari`` does not import Qt, ``napari_cellect.data.synthetic`` not scipy."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import import_module
from typing import Any


class LazyExports:
    """The package ``package``'s names, each from the module ``exports`` maps it to (relative
    to the package). The package sets ``__getattr__ = exports.load`` and
    ``__dir__ = exports.names``."""

    def __init__(self, package: str, exports: Mapping[str, str]):
        self._package = package
        self._exports = dict(exports)

    @property
    def public(self) -> list[str]:
        """The exported names, sorted: the package's ``__all__``."""
        return sorted(self._exports)

    def load(self, name: str) -> Any:
        """Import ``name`` and keep it in the package, so later look-ups skip ``__getattr__``."""
        if name not in self._exports:
            raise AttributeError(f"module {self._package!r} has no attribute {name!r}")
        value = getattr(import_module(self._exports[name], self._package), name)
        setattr(sys.modules[self._package], name, value)
        return value

    def names(self) -> list[str]:
        """What ``dir(package)`` lists: what it holds now and what it would load."""
        return sorted(set(vars(sys.modules[self._package])) | set(self._exports))
