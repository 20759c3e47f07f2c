"""One generic registry for pluggable parts (strategies, metrics).

Entries are classes or lazy ``"module:attr"`` placeholders, resolved on first use, so
registering a built-in costs no import. Third-party entries come from an entry-point
group or from a ``module:Class`` string given wherever a name is accepted.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import RegistryError

T = TypeVar("T")


def load_object(ref: str) -> Any:
    """Import ``"package.module:attr"`` (attr may be dotted)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"expected 'module:attr', got {ref!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import module {module_name!r} for {ref!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"module {module_name!r} has no attribute {attr!r} (from {ref!r})") from None
    return obj


class Registry(Generic[T]):
    """Name -> object, with lazy placeholders, duplicate checks and "did you mean"."""

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 validate: Callable[[str, Any], None] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._validate = validate
        self._entries: dict[str, Any] = {}  # name -> object or "module:attr" placeholder
        self._entry_points_loaded = False

    def register(self, name: str, obj: T | str | None = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a class decorator."""
        if obj is None:
            def decorator(o: T) -> T:
                self.register(name, o)
                return o
            return decorator
        if name in self._entries and self._entries[name] is not obj:
            existing = self._entries[name]
            where = existing if isinstance(existing, str) else f"{existing.__module__}:{getattr(existing, '__qualname__', existing)}"
            raise RegistryError(f"duplicate {self.kind} name {name!r}: already registered by {where}")
        self._entries[name] = obj
        return obj

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            self.register(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """Resolve a registered name, or a ``module:attr`` string for an unregistered plugin."""
        self._load_entry_points()
        if name not in self._entries:
            if ":" in name:
                obj = load_object(name)
                if self._validate:
                    self._validate(name, obj)
                return obj
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint} Known: {', '.join(sorted(self._entries))}. "
                f"A plugin can also be given as 'module:Class'.")
        obj = self._entries[name]
        if isinstance(obj, str):
            obj = load_object(obj)
            if self._validate:
                self._validate(name, obj)
            self._entries[name] = obj
        return obj
