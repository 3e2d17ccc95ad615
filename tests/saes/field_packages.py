"""The field's own SAE code, read from the projects' PyPI wheels rather than installed or copied.

``dictionary_learning`` 0.1.0 (saprmarks/dictionary_learning) depends on nnsight, wandb and
umap-learn, and ``saev`` 0.1.0 (OSU-NLP-Group/saev) on its own training stack, so neither is a
dependency here. CI downloads both wheels with ``pip download --no-deps`` and unpacks them into the
folder named by ``VSL_FIELD_SAE_SRC`` (see ``.ci/run``). The modules the tests need (the
BatchTopK and Matryoshka trainers, saev's ``nn`` and ``config``) import only torch, einops,
beartype and jaxtyping, so they are loaded from that folder without running the packages'
``__init__`` files, which import the rest.

Without the folder, the tests that need it are skipped with that reason; under
``VSL_REQUIRE_FIELD_SAE_SRC=1`` (CI) they fail instead.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ENV = "VSL_FIELD_SAE_SRC"
HOW = (
    f"set {ENV} to a folder holding the unpacked wheels of dictionary-learning==0.1.0 and saev==0.1.0 "
    "(pip download --no-deps ... && python -m zipfile -e WHEEL FOLDER), as .ci/run does"
)


def _source() -> Path:
    folder = os.environ.get(ENV)
    if folder and Path(folder, "dictionary_learning").is_dir() and Path(folder, "saev").is_dir():
        return Path(folder)
    if os.environ.get("VSL_REQUIRE_FIELD_SAE_SRC"):
        pytest.fail(f"The field's SAE packages are required here: {HOW}.")
    pytest.skip(f"The field's SAE packages are not unpacked: {HOW}.")


def _bare_package(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``name`` as a package rooted at ``folder`` without executing its ``__init__``."""
    module = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(name, None, is_package=True))
    module.__path__ = [str(folder)]
    monkeypatch.setitem(sys.modules, name, module)


def load_modules(monkeypatch: pytest.MonkeyPatch, package: str, *modules: str) -> list[ModuleType]:
    """Import ``package.<module>`` for each of ``modules`` from the unpacked wheel (undone after the test)."""
    root = _source() / package
    _bare_package(package, root, monkeypatch)
    for sub in {m.rsplit(".", 1)[0] for m in modules if "." in m}:
        _bare_package(f"{package}.{sub}", root / sub.replace(".", "/"), monkeypatch)
    loaded = []
    for name in modules:
        before = set(sys.modules)
        loaded.append(importlib.import_module(f"{package}.{name}"))
        for added in set(sys.modules) - before:  # undone after the test: the packages are never installed
            monkeypatch.setitem(sys.modules, added, sys.modules.pop(added))
    return loaded
