"""The run path: config -> prompts -> plan -> engine pools -> Parquet -> summary."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.config import RunConfig, check_run_id
from harness.hardware import cpu_info
from harness.plan import WorkUnit, make_plan, metric_names
from harness.prompts import load_prompt_set
from harness.report import (RunLock, git_revision, inside, now_iso, package_versions, read_samples, sample_schema,
                            set_aside, unit_problem, write_run_json, write_unit)

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    units_total: int
    units_skipped: int
    units_done: int
    units_failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: per model: the dtype its engines ran in and the CPU they decided it on (from the units)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: failed attempts that were retried: unit, attempt, error, and when (epoch seconds)
    retries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.units_failed


_RAY_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def start_ray(address: str | None, verbose: bool) -> None:
    import ray
    if ray.is_initialized():
        return
    env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO" if verbose else "WARNING"),
           "TOKENIZERS_PARALLELISM": "false"}
    if address:
        ray.init(address=address, log_to_driver=verbose, runtime_env={"env_vars": env})
    else:
        from harness.hardware import cpu_count
        # Ray turns token auth on for a new local cluster (the token lives in ~/.ray/auth_token)
        # and says so on every start; on an embedded, loopback-only Ray that notice asks the
        # user nothing, so it is dropped (auth stays on).
        logging.getLogger(_RAY_TOKEN_LOGGER).addFilter(_drop_token_notice)
        # address="local": always a fresh embedded instance, never a `ray start` cluster (or a
        # stale /tmp/ray/ray_current_cluster) that happens to be on this machine.
        ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, log_to_driver=verbose,
                 runtime_env={"env_vars": env}, configure_logging=verbose,
                 logging_level=logging.INFO if verbose else logging.WARNING)


class KeptEngines:
    """Engine actors kept loaded after a run, for the next run in this process to reuse
    (``run(..., keep_engines=True)``): the test suite, notebooks and tuning loops run many
    small configs, and an engine start costs 30-50 s on a CPU.

    Invariants: an actor is reused only for the same model folder, engine options, core
    binding and BOS setting (its ``key``), and only within the Ray session that created
    it. When a run starts its pools, kept actors it does not reuse are killed first, so
    their Ray CPU reservations never keep the new actors from being placed; so this holds
    the actors of the last run only. ``release()`` kills them all.
    """

    def __init__(self) -> None:
        self.actors: dict[tuple, Any] = {}  # key -> live actor handle kept from the last run
        self.session: str | None = None  # the Ray session those handles belong to

    @staticmethod
    def _current_session() -> str:
        import ray
        return ray.get_runtime_context().get_node_id()  # new for every Ray start

    def take(self, wanted: list[tuple]) -> dict[tuple, Any]:
        """The kept actors whose keys are wanted (removed from the cache); the rest are killed."""
        if self.session != self._current_session():
            self.actors = {}  # handles of a Ray that was shut down: nothing to kill or reuse
        taken = {k: self.actors.pop(k) for k in wanted if k in self.actors}
        self.release()
        return taken

    def keep(self, actors: dict[tuple, Any]) -> None:
        self.session = self._current_session()
        self.actors.update(actors)

    def release(self) -> None:
        import ray
        for actor in self.actors.values():
            ray.kill(actor)
        self.actors = {}


KEPT = KeptEngines()


def cores_of(binding: str) -> int:
    """Cores in a binding such as '0-1', '2' or '0,2-3'."""
    n = 0
    for part in binding.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def start_pools(cfg: RunConfig, model_paths: dict[str, tuple[str, bool]], models_needed: set[str],
                keep_engines: bool = False) -> tuple[dict[str, list[Any]], dict[tuple, Any]]:
    """One actor per model replica. On CPU nodes each replica is bound to its own share of
    the cores; on GPUs each replica asks Ray for tensor_parallel_size GPUs. Returns the pools
    and every actor by its reuse key (see :class:`KeptEngines`)."""
    import ray

    from harness.engine import core_share
    from harness.engine_actor import EngineActor

    gpus = ray.cluster_resources().get("GPU", 0)
    total_replicas = sum(m.replicas for m in cfg.models if m.name in models_needed)
    node_cpus = ray.cluster_resources().get("CPU", 1)
    plans: list[tuple[str, tuple, dict[str, Any], tuple]] = []  # model, key, actor options, constructor args
    seen: dict[tuple, int] = {}
    index = 0
    for m in cfg.models:
        if m.name not in models_needed:
            continue
        path, needs_bos = model_paths[m.name]
        for _ in range(m.replicas):
            opts: dict[str, Any] = {"max_restarts": 3, "max_task_retries": 0}
            cores = None
            if gpus > 0 and m.engine.device != "cpu":
                tp = m.engine.tensor_parallel_size
                if tp == 1:
                    opts["num_gpus"] = 1
                    opts["num_cpus"] = 1
                else:
                    # TP > 1: vLLM starts one Ray worker per GPU itself, inside the current
                    # placement group; the actor only holds the group (one node, tp GPUs).
                    from ray.util.placement_group import placement_group
                    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
                    pg = placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="STRICT_PACK")
                    opts.update(num_gpus=0, num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(
                        pg, placement_group_capture_child_tasks=True))
            else:
                # vLLM pins its own threads; the Ray CPU count only keeps replicas apart: the
                # cores the replica is bound to, or its share when replicas outnumber cores.
                cores = core_share(index, total_replicas) if not m.engine.cpu_cores else None
                opts["num_cpus"] = max(0.01, min(cores_of(cores or m.engine.cpu_cores), node_cpus / total_replicas))
            # The engine binds options.cpu_cores, else the share given here: the key holds the
            # binding it will really have; a count tells replicas with equal keys apart.
            base = (path, json.dumps(m.engine.model_dump(exclude={"cpu_cores"}), sort_keys=True),
                    m.engine.cpu_cores or cores, needs_bos, gpus > 0)
            seen[base] = seen.get(base, -1) + 1
            key = (*base, seen[base])
            plans.append((m.name, key, opts, (path, m.engine.model_dump(), cores, needs_bos)))
            index += 1
    reused = KEPT.take([key for _, key, _, _ in plans]) if keep_engines else {}
    if not keep_engines:
        KEPT.release()
    pools: dict[str, list[Any]] = {}
    actors: dict[tuple, Any] = {}
    for name, key, opts, args in plans:
        actor = reused.pop(key, None) or EngineActor.options(**opts).remote(*args)
        pools.setdefault(name, []).append(actor)
        actors[key] = actor
    return pools, actors


def run(cfg: RunConfig, *, address: str | None = None, run_id: str | None = None, out: TextIO = sys.stdout,
        verbose: bool = False, progress: bool = True, keep_engines: bool = False) -> RunOutcome:
    """Run every pending unit of ``cfg``; write the report. ``keep_engines`` keeps the engine
    actors loaded after the run, and reuses those of an earlier run in this process where
    model, engine options and cores match (:class:`KeptEngines`).

    One driver per run folder at a time (:class:`~harness.report.RunLock`). A unit whose
    generation, scoring or writing fails is a failed unit and the run goes on; whatever ends
    the run early (an interrupt, a crash) leaves run.json saying so, with the reason."""
    run_id = check_run_id(run_id, "--resume") if run_id else cfg.run_id
    run_dir = inside(Path(cfg.output_dir), Path(cfg.output_dir) / run_id)
    with RunLock(run_dir):
        return _run_locked(cfg, run_id, run_dir, address=address, out=out, verbose=verbose, progress=progress,
                           keep_engines=keep_engines)


def _run_locked(cfg: RunConfig, run_id: str, run_dir: Path, *, address: str | None, out: TextIO, verbose: bool,
                progress: bool, keep_engines: bool) -> RunOutcome:
    t_start = time.perf_counter()
    started_at = now_iso()
    prompt_sets = [load_prompt_set(p) for p in cfg.prompt_sets]
    units = make_plan(cfg, prompt_sets)
    _check_resumable(run_dir, units)
    metrics = metric_names(cfg)
    schema = sample_schema(metrics)

    pending, set_aside_files = [], []
    for u in units:
        problem = unit_problem(run_dir, u.relpath, u.id, u.expected_rows, schema)
        if problem is None:
            continue
        if problem != "missing":  # present but not whole: moved out of the dataset, redone
            set_aside_files.append((u.relpath, problem, set_aside(run_dir, u.relpath)))
        pending.append(u)
    skipped = len(units) - len(pending)
    print(f"run {run_id}: {len(cfg.models)} model(s) x {len(cfg.strategies)} strategy config(s) x "
          f"{sum(len(p.prompts) for p in prompt_sets)} prompts -> {len(units)} unit(s)"
          + (f", {skipped} already done (each read back whole)" if skipped else ""), file=out)
    for relpath, problem, aside in set_aside_files:
        print(f"  unit file {relpath} {problem}: moved aside to {aside.name}, redoing it", file=out)

    from harness.capacity import model_capacity
    from harness.models import BUILTIN_MODELS, resolve_model
    model_paths: dict[str, tuple[str, bool]] = {}
    architectures: dict[str, Any] = {}
    for m in cfg.models:
        path = resolve_model(m.ref, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        needs_bos = BUILTIN_MODELS[m.ref].needs_bos if m.ref in BUILTIN_MODELS else False
        model_paths[m.name] = (str(path), needs_bos)
        architectures[m.name] = _architecture(path)

    run_meta = {
        "run_id": run_id, "run_name": cfg.run_name, "description": cfg.description, "config_source": cfg.source,
        "config": cfg.raw, "config_hash": cfg.config_hash, "git_revision": git_revision(),
        "packages": package_versions(), "started_at": started_at, "status": "running",
        "host": {"cpu": cpu_info().as_dict()},
        "models": {m.name: {"ref": m.ref, "path": model_paths[m.name][0], "replicas": m.replicas,
                            "engine": m.engine.model_dump(), "architecture": architectures[m.name],
                            "capacity": model_capacity(architectures[m.name]) if architectures[m.name] else None}
                   for m in cfg.models},
        "prompt_sets": {p.name: {"source": p.source, "prompts": len(p.prompts), "hash": p.hash} for p in prompt_sets},
        "strategies": [{"label": s.label, "name": s.name, "id": s.id, "params": s.params,
                        "samples_per_prompt": s.samples_per_prompt, "max_tokens": s.max_tokens} for s in cfg.strategies],
        "metrics": metrics, "units": len(units),
        "set_aside": [{"unit": r, "problem": p, "moved_to": a.name} for r, p, a in set_aside_files],
    }
    write_run_json(run_dir, run_meta)

    outcome = RunOutcome(run_id, run_dir, len(units), skipped, 0)
    try:
        if pending:
            _execute(cfg, pending, model_paths, run_dir, run_id, schema, metrics, outcome, address, verbose,
                     progress, out, keep_engines)
    except BaseException as exc:
        # Finished units are on disk; run.json must not go on saying "running".
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        run_meta.update(status=status, finished_at=now_iso(), seconds=round(time.perf_counter() - t_start, 2),
                        failed_units=outcome.units_failed, retries=outcome.retries,
                        error=f"{type(exc).__name__}: {exc}"[:2000])
        write_run_json(run_dir, run_meta)
        raise

    outcome.seconds = time.perf_counter() - t_start
    _resolved_engines(run_dir, units, outcome)
    for name, resolved in outcome.engines.items():
        run_meta["models"][name]["resolved"] = resolved
    run_meta.update(status="complete" if outcome.ok else "failed", finished_at=now_iso(),
                    seconds=round(outcome.seconds, 2), failed_units=outcome.units_failed, retries=outcome.retries)
    if not outcome.ok:
        run_meta["error"] = f"{len(outcome.units_failed)} unit(s) failed; see failed_units"
    write_run_json(run_dir, run_meta)
    return outcome


def engine_summary(info: dict[str, Any]) -> dict[str, Any]:
    """What a unit's engine says of its dtype and CPU, as run.json keeps it per model."""
    return {"dtype": info.get("dtype"), "dtype_requested": info.get("dtype_requested"), "cpu": info.get("cpu")}


def _resolved_engines(run_dir: Path, units: list[WorkUnit], outcome: RunOutcome) -> None:
    """Fill ``outcome.engines`` for models whose units all were skipped, from their files."""
    from harness.report import unit_meta
    for u in units:
        if u.model not in outcome.engines:
            info = (unit_meta(run_dir / "samples" / u.relpath) or {}).get("engine") or {}
            if info.get("dtype"):
                outcome.engines[u.model] = engine_summary(info)


def describe_engines(engines: dict[str, dict[str, Any]]) -> str:
    """One line per model: 'smollm2-135m: bfloat16 (dtype auto) on AMD EPYC (AVX-512, ...)'."""
    from harness.hardware import CpuInfo
    lines = []
    for model, e in sorted(engines.items()):
        cpu = e.get("cpu")
        where = "on a GPU"
        if cpu:
            where = "on " + CpuInfo(cpu["model"], frozenset(cpu["flags"]), cpu["cores"], cpu.get("isa_cap")).describe()
        lines.append(f"{model}: {e.get('dtype')} (dtype {e.get('dtype_requested')}) {where}")
    return "\n".join(lines)


def _check_resumable(run_dir: Path, units: list[WorkUnit]) -> None:
    """Resuming (a rerun, or --resume RUN_ID) must not mix two plans in one folder: unit files
    that this plan does not know would stay beside its own, and rows would be duplicated."""
    samples = run_dir / "samples"
    if not samples.exists():
        return
    known = {u.relpath for u in units}
    foreign = sorted(str(p.relative_to(samples)) for p in samples.rglob("*.parquet")
                     if not p.name.startswith(".") and str(p.relative_to(samples)) not in known)
    if foreign:
        from harness.errors import ConfigError
        raise ConfigError(f"{run_dir} holds {len(foreign)} unit file(s) of another plan (e.g. {foreign[0]}): it is a run "
                          f"of a different config. Resume it with its own config, or drop --resume / choose another "
                          f"output.run_id")


def _architecture(path: Any) -> dict[str, Any] | None:
    """Size facts of a local model folder (None for a hub id, which has no local config)."""
    from harness.models import model_architecture
    return model_architecture(path) if (Path(str(path)) / "config.json").exists() else None


def _execute(cfg: RunConfig, pending: list[WorkUnit], model_paths, run_dir: Path, run_id: str, schema,
             metrics: list[str], outcome: RunOutcome, address: str | None, verbose: bool, progress: bool,
             out: TextIO, keep_engines: bool) -> None:
    from tqdm import tqdm

    from harness.metrics import score_rows
    from harness.scheduler import Scheduler

    start_ray(address, verbose)
    pools, actors = start_pools(cfg, model_paths, {u.model for u in pending}, keep_engines)
    bar = tqdm(total=sum(u.expected_rows for u in pending), unit="sample", desc="generating",
               disable=not progress, file=out, dynamic_ncols=True)

    def on_done(unit: WorkUnit, result) -> None:
        try:
            for row in result.rows:
                row["run_id"] = run_id
            score_rows(result.rows, metrics)
            write_unit(run_dir, unit.relpath, result.rows, schema,
                       {"unit_id": unit.id, "rows": len(result.rows), "gen_seconds": result.gen_seconds,
                        "generated_tokens": result.generated_tokens, "engine": result.engine_info})
        except Exception as exc:  # noqa: BLE001 - scoring or writing this unit failed: it fails, the run goes on
            log.warning("unit %s (%s / %s) could not be scored or written: %s", unit.id, unit.model,
                        unit.strategy.label, exc)
            on_failed(unit, exc, 1, stage="scoring or writing")
            return
        outcome.engines.setdefault(unit.model, engine_summary(result.engine_info))
        outcome.units_done += 1
        bar.update(len(result.rows))

    def on_failed(unit: WorkUnit, error: BaseException, attempts: int, stage: str = "generation") -> None:
        outcome.units_failed.append({"unit_id": unit.id, "model": unit.model, "strategy": unit.strategy.label,
                                     "attempts": attempts, "stage": stage,
                                     "error": f"{type(error).__name__}: {error}"[:2000]})
        bar.update(unit.expected_rows)

    def on_retry(unit: WorkUnit, error: BaseException, attempt: int) -> None:
        outcome.retries.append({"unit_id": unit.id, "model": unit.model, "strategy": unit.strategy.label,
                                "attempt": attempt, "at": time.time(),
                                "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]})

    try:
        # A unit that runs past this (a hung engine) gets its actor restarted and is retried.
        timeout = float(os.environ.get("DECEVAL_UNIT_TIMEOUT_S", "3600")) or None
        # Two units in flight per actor: the next one waits on the actor, so no actor idles
        # for a dispatch round trip (simulated efficiency at 32 replicas: 0.82 -> 0.96).
        Scheduler(pools, max_in_flight=2, unit_timeout_s=timeout).run(pending, on_done, on_failed, on_retry)
    finally:
        bar.close()
        KEPT.keep(actors)
        if not keep_engines:
            KEPT.release()


# ---- summary ------------------------------------------------------------------------------------


def summarize(run_dir: Path) -> "Any":
    """Per model and strategy: samples, errors, mean generated tokens, accuracy, tokens/s."""
    import pandas as pd
    df = read_samples(run_dir)
    rows = []
    for (model, label), g in df.groupby(["model", "strategy_label"], sort=True):
        ok = g[g["error"].isna()]
        unit_time = g.groupby("unit_id")["unit_seconds"].first().sum()
        acc = ok["contains_answer"].dropna() if "contains_answer" in ok else pd.Series(dtype=float)
        rows.append({
            "model": model, "strategy": label, "samples": len(g), "errors": int(g["error"].notna().sum()),
            "mean_gen_tokens": round(float(ok["completion_tokens"].mean()), 1) if len(ok) else None,
            "accuracy": round(float(acc.mean()), 3) if len(acc) else None,
            "gen_tok_per_s": round(float(ok["completion_tokens"].sum() / unit_time), 1) if unit_time else None,
        })
    return pd.DataFrame(rows)


def format_table(df) -> str:
    cols = list(df.columns)
    cells = [[("" if v is None or (isinstance(v, float) and v != v) else str(v)) for v in r] for r in df.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, sep, *body])


def _numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
