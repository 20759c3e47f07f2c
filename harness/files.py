"""Reading user files: bounded, decoded, with errors that name the file and the fix; and the
plain-string rules for the URIs a report may live at (``s3://bucket/prefix``)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

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


# ---- URIs of object storage and other filesystems (s3://bucket/prefix) ----------------------

#: ``scheme://`` at the start of a string: a URI, not a local path (a Windows drive has one '/').
_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: Query keys of a pyarrow filesystem URI that carry a credential: never accepted, so no config,
#: report or job request ever holds a secret (the credentials come from the environment).
CREDENTIAL_QUERY_KEYS = frozenset({"access_key", "secret_key", "session_token", "password", "token", "sas_token",
                                   "account_key", "client_secret", "credential", "credentials"})
#: Where the credentials of object storage go instead (pyarrow's S3FileSystem reads them).
CREDENTIAL_HINT = ("put credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), "
                   "an AWS profile (AWS_PROFILE, ~/.aws/credentials) or the machine's role, never in the URI")


def uri_scheme(text: str | Path) -> str | None:
    """The scheme of a URI (``"s3"`` for ``s3://bucket/run``), None for a local path."""
    m = _URI_RE.match(str(text))
    return m.group(1).lower() if m else None


def is_uri(text: str | Path) -> bool:
    """True for ``scheme://...`` (object storage, or any filesystem pyarrow or fsspec knows)."""
    return uri_scheme(text) is not None


def uri_problem(text: str) -> str | None:
    """What is wrong with a report URI, or None: credentials in it (user info or a query key
    such as ``secret_key``), no bucket/host, or a ``.``/``..`` path segment."""
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return f"it carries credentials before '@'; {CREDENTIAL_HINT}"
    keys = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if keys & CREDENTIAL_QUERY_KEYS:
        return f"its query holds {sorted(keys & CREDENTIAL_QUERY_KEYS)[0]!r}; {CREDENTIAL_HINT}"
    if not parts.netloc and parts.scheme.lower() not in ("file", "memory"):
        return f"it names no bucket or host; expected {parts.scheme}://BUCKET/PREFIX"
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        return "a path segment is '.' or '..'; give the prefix plainly"
    return None


def display_uri(text: str) -> str:
    """A URI fit to print and record: scheme, bucket and path, without a query (filesystem
    options) or user info."""
    parts = urlsplit(text)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"
