"""Error types whose messages tell the user what to fix, and :func:`excerpt`, the one way
a message quotes a piece of the input."""

from __future__ import annotations

import reprlib
from typing import Any

#: Longest excerpt of a given value quoted in an error message.
EXCERPT_CHARS = 80


class DecevalError(Exception):
    """Base class: a user-facing error; the CLI prints its message without a traceback."""


class ConfigError(DecevalError):
    """A config file, key or value is wrong. The message names the file, the key,
    what was expected and what was given."""


class ParamError(DecevalError, ValueError):
    """A strategy parameter is out of range or of the wrong type."""


class PromptError(DecevalError):
    """A prompt file cannot be read or one of its records is malformed."""


class RegistryError(DecevalError, KeyError):
    """Unknown or duplicate name in a registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RunInUseError(DecevalError):
    """Another live driver holds the run folder's lock."""


class UnsafePathError(DecevalError, ValueError):
    """A path to be written lies outside the folder it must stay in."""


def excerpt(value: Any, limit: int = EXCERPT_CHARS, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``quote=False``) cut to ``limit`` characters plus
    "...": an error quotes a short piece of the input, never a whole huge value."""
    if isinstance(value, str):
        text = repr(value[: limit + 1]) if quote else value[: limit + 1]
    else:
        text = _REPR.repr(value)  # bounded work even for huge or self-referencing values
    return text if len(text) <= limit else text[:limit] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, EXCERPT_CHARS, EXCERPT_CHARS, EXCERPT_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8

