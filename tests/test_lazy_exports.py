"""Names a package imports on first use (``lazy_exports.py``), as ``_napari`` and
``data.synthetic`` declare them."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``lazypkg`` whose ``heavy`` submodule counts its imports."""
    root = tmp_path / "lazypkg"
    root.mkdir()
    (root / "__init__.py").write_text(
        "from napari_cellect.lazy_exports import LazyExports\n"
        "_LAZY = LazyExports(__name__, {'answer': '.heavy'})\n"
        "__all__ = _LAZY.public\n"
        "__getattr__ = _LAZY.load\n"
        "__dir__ = _LAZY.names\n"
    )
    (root / "heavy.py").write_text("import builtins\nbuiltins.heavy_imports += 1\nanswer = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("builtins.heavy_imports", 0, raising=False)
    yield importlib.import_module("lazypkg")
    for name in ("lazypkg", "lazypkg.heavy"):
        sys.modules.pop(name, None)


def test_a_name_is_imported_on_first_use_and_kept(package):
    import builtins

    assert package.__all__ == ["answer"] and "lazypkg.heavy" not in sys.modules
    assert "answer" in dir(package) and builtins.heavy_imports == 0
    assert package.answer == 42 and builtins.heavy_imports == 1
    assert vars(package)["answer"] == 42  # kept: later look-ups skip __getattr__
    from lazypkg import answer

    assert answer == 42 and builtins.heavy_imports == 1


def test_an_unknown_name_says_which_module_lacks_it(package):
    with pytest.raises(AttributeError, match="module 'lazypkg' has no attribute 'question'"):
        _ = package.question
    assert "lazypkg.heavy" not in sys.modules
