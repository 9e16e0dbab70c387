"""One registry pattern for everything the zoo looks up by name: methods, datasets and models.

Each registry maps a lower-case name to a frozen spec with a ``name`` attribute. Registering a taken name is an
error unless ``overwrite=True``; looking up an unknown name is a ``ValueError`` that lists close names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named specs of one kind (``kind`` is used in messages: "SSL method", "dataset", "model")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, spec: T, *, overwrite: bool = False) -> T:
        name = spec.name.lower()
        if name in self._items and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
        self._items[name] = spec
        return spec

    def find(self, name: str) -> T | None:
        """The spec called ``name`` (case-insensitive), or None."""
        return self._items.get(str(name).lower())

    def get(self, name: str) -> T:
        """The spec called ``name``; ``ValueError`` naming the valid (and the closest) names otherwise."""
        spec = self.find(name)
        if spec is None:
            close = difflib.get_close_matches(str(name).lower(), self.names(), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"Unknown {self.kind} {name!r}; valid: {', '.join(self.names())}.{hint}")
        return spec

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[n] for n in self.names())
