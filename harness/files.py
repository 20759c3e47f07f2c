"""Reading user files: bounded, decoded, with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError, excerpt


def read_text_file(path: Path, what: str, max_bytes: int | None = None) -> str:
    """Read a UTF-8 text file or raise a DecevalError naming the file and the fix."""
    try:
        if not path.exists():
            raise ConfigError(f"{what} not found: {excerpt(str(path), quote=False)} (check the path; relative paths "
                              f"are taken from the current directory)")
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a directory; expected a file")
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise ConfigError(f"{what} {path} is {path.stat().st_size:,} bytes, more than the {max_bytes:,} allowed; "
                              f"a {what} is a few kilobytes")
        data = path.read_bytes()
    except (OSError, ValueError) as exc:  # unreadable, a name too long, a NUL byte in the name
        raise ConfigError(f"{what} {excerpt(str(path), quote=False)}: cannot read it ({exc.__class__.__name__}: "
                          f"{excerpt(str(exc), quote=False)}); check the path and its permissions") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                          f"re-save the file as UTF-8") from None
