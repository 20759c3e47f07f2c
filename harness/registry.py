"""One generic registry for pluggable parts (strategies, metrics).

Entries are classes or lazy ``"module:attr"`` placeholders, resolved on first use, so
registering a built-in costs no import. Third-party entries come from an entry-point
group or from a ``module:Class`` string given wherever a name is accepted.

Plugin references given by users (a config's ``module:attr``) follow one rule
(:func:`check_plugin_ref`): dotted Python names only, never a standard-library module
(no plugin lives there; ``this`` and ``antigravity`` act on import), and
:meth:`Registry.check` confirms such a module exists without running any of its code.
Only :meth:`Registry.get` imports it, and the registry's ``validate`` then checks what
it got. Placeholders registered by code and entry points are trusted as given.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import re
import sys
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import RegistryError

T = TypeVar("T")

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters."""
    shown = repr(text[: limit + 1])
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _split_ref(ref: str) -> tuple[str, str]:
    module_name, sep, attr = ref.partition(":")
    if not sep or not _DOTTED.fullmatch(module_name) or not _DOTTED.fullmatch(attr):
        raise RegistryError(f"expected 'package.module:attr' (dotted Python names), got {_shown(ref)}")
    return module_name, attr


def load_object(ref: str) -> Any:
    """Import ``"package.module:attr"`` (attr may be dotted)."""
    module_name, attr = _split_ref(ref)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # a plugin's import may fail in any way; say which and why
        raise RegistryError(f"cannot import module {_shown(module_name)} for {_shown(ref)}: "
                            f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"module {_shown(module_name)} has no attribute {_shown(attr)} (from {_shown(ref)})") from None
    return obj


def module_exists(module_name: str) -> bool:
    """Whether ``module_name`` can be imported, found without running its code or any of
    its parent packages' (``importlib.util.find_spec`` would import the parents)."""
    parts = module_name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: no import
    except (ImportError, ValueError):
        return False
    for i in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            return False
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        spec = loaded.__spec__ if loaded is not None and getattr(loaded, "__spec__", None) else \
            importlib.machinery.PathFinder.find_spec(name, list(spec.submodule_search_locations))
    return spec is not None


def check_plugin_ref(ref: str, kind: str = "plugin") -> tuple[str, str]:
    """(module, attr) of a user-given ``module:attr`` plugin reference, or RegistryError.
    Imports nothing: the module must exist on the path and lie outside the standard library."""
    module_name, attr = _split_ref(ref)
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        raise RegistryError(f"{kind} {_shown(ref)}: {_shown(top)} is a standard-library module, not a {kind} plugin; "
                            f"name a registered {kind} or a class in your own package ('my_pkg.module:Name')")
    if not module_exists(module_name):
        raise RegistryError(f"{kind} {_shown(ref)}: no module {_shown(module_name)} on the Python path; install the "
                            f"package that provides it or fix the name")
    return module_name, attr


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

    def _unknown(self, name: str) -> RegistryError:
        close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5) if len(name) <= 200 else []
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return RegistryError(f"unknown {self.kind} {_shown(name)}{hint} Known: {', '.join(sorted(self._entries))}. "
                             f"A plugin can also be given as 'module:Class'.")

    def check(self, name: str) -> None:
        """Raise RegistryError unless ``name`` is registered or a plugin reference that
        passes :func:`check_plugin_ref`. Runs no plugin code: safe on untrusted configs."""
        self._load_entry_points()
        if name in self._entries:
            return
        if ":" not in name:
            raise self._unknown(name)
        check_plugin_ref(name, self.kind)

    def get(self, name: str) -> T:
        """Resolve a registered name, or a ``module:attr`` string for an unregistered plugin."""
        self._load_entry_points()
        if name not in self._entries:
            if ":" not in name:
                raise self._unknown(name)
            check_plugin_ref(name, self.kind)
            obj = load_object(name)
            if self._validate:
                self._validate(name, obj)
            return obj
        obj = self._entries[name]
        if isinstance(obj, str):
            obj = load_object(obj)
            if self._validate:
                self._validate(name, obj)
            self._entries[name] = obj
        return obj
