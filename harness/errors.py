"""Error types whose messages tell the user what to fix."""


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
