"""A table of kind objects by name (label kinds, metric kinds, output kinds), extendable by plug-ins."""

from __future__ import annotations

from types import MappingProxyType
from typing import Generic, Mapping, TypeVar

__all__ = ["KindTable"]

K = TypeVar("K")


class KindTable(Generic[K]):
    """Kinds of one ``base`` class by ``kind.name``; ``view`` is the read-only mapping a module exports.

    Args:
        base: the class every kind must be an instance of.
        what: how messages name a kind, e.g. ``"output kind"``.
        register_name: the public function that registers one (named in its type error).
        unknown: the message of an unknown name, formatted with ``name`` and ``known``.
    """

    def __init__(self, base: type, what: str, register_name: str, unknown: str):
        self.base, self.what, self.register_name, self.unknown = base, what, register_name, unknown
        self._kinds: dict[str, K] = {}
        self.view: Mapping[str, K] = MappingProxyType(self._kinds)

    def register(self, kind: K, *, replace: bool = False) -> K:
        """Add ``kind``; a name already taken raises unless ``replace``."""
        if not isinstance(kind, self.base) or not kind.name:
            article = "an" if self.base.__name__[0] in "AEIOU" else "a"
            raise TypeError(f"{self.register_name}: expected {article} {self.base.__name__} instance with a name, "
                            f"got {kind!r}")
        if kind.name in self._kinds and not replace:
            raise ValueError(f"{self.what} {kind.name!r} is already registered; pass replace=True to override it")
        self._kinds[kind.name] = kind
        return kind

    def get(self, name: str) -> K:
        """The kind ``name``; an unknown one raises ``ValueError`` naming the known kinds."""
        try:
            return self._kinds[name]
        except (KeyError, TypeError):
            raise ValueError(self.unknown.format(name=name, known=tuple(self._kinds))) from None

    def unregister(self, name: str) -> K:
        """Remove and return the kind ``name``."""
        return self._kinds.pop(self.get(name).name)
