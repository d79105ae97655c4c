"""A small named registry, shared by every family (backbones, losses, methods, backends).

``register(name)`` is a decorator; ``get(name)`` raises a ``KeyError`` that lists the valid
names; ``describe()`` maps names to one-line descriptions (the entry's docstring's first
line unless one is given).
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> registered objects (classes or constructors) of one ``kind``."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = getattr(entry, "__doc__", None) or ""
            self._entries[name] = entry
            self._descriptions[name] = description or next(iter(doc.strip().splitlines()), "")
            return entry

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; valid {self.plural}: {valid}") from None

    def describe(self) -> dict[str, str]:
        """Registered names mapped to their one-line descriptions, sorted by name."""
        return {name: self._descriptions[name] for name in sorted(self._entries)}

    def __contains__(self, name: object) -> bool:
        return name in self._entries
