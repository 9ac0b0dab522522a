"""One small registry helper used by every plug-in kind (models, data sets, attacks, trainers)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from ticketsearch.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named dict filled by a decorator; an unknown name fails listing the known ones.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("resnet20")
    ... def resnet20(...): ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, field: str | None = None) -> T:
        if name not in self._entries:
            where = f"{field}: " if field else ""
            raise UserError(
                f"{where}unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
