"""Lazy public names for a package (PEP 562, the idea of transformers' ``_LazyModule``): imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(namespace: dict[str, Any], names: Mapping[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``: ``names`` maps each public
    name to the module that defines it, absolute (``"multimed_hf.api"``) or relative to the package (``".run"``).

    On first use of a name, every public name of its module is bound in the package, so a function named like its
    submodule (``analysis.combos``) wins over the submodule attribute that the import itself sets."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where, package)
        for public, home in names.items():
            if home == where:
                namespace[public] = getattr(module, public)
        return namespace[name]

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
