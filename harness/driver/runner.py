"""The run path in the driver: config -> prompts -> plan -> pending units -> engine actors
(:mod:`.placement`) -> scheduler -> scored rows in Parquet, and run.json."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from harness.config import RunConfig, check_run_id
from harness.driver.placement import KEPT, Placement, start_pools, start_ray
from harness.driver.scheduler import Scheduler
from harness.errors import ConfigError
from harness.hardware import CpuInfo, cpu_info
from harness.metrics import get_metric, score_rows
from harness.models import BUILTIN_MODELS, model_architecture, resolve_model
from harness.models.capacity import model_capacity
from harness.plan import WorkUnit, make_plan, metric_names, row_columns
from harness.tasks import load_prompt_set
from harness.rows import columns_meta, sample_schema
from harness.report import (
    RunLock,
    git_revision,
    now_iso,
    package_versions,
    run_folder,
    set_aside,
    unit_meta,
    unit_problem,
    write_run_json,
    write_unit,
)

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
    #: per model, per engine process (pid): its start and warm-up seconds, never a unit's
    engine_costs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: files (relpaths) of the units this run generated and wrote (the others were done before)
    units_ran: set[str] = field(default_factory=set)
    #: per unit id: the Ray node whose engine made it (units done before: from their files)
    unit_nodes: dict[str, str | None] = field(default_factory=dict)
    #: the Ray nodes at the start, where each replica was placed, and node losses (run.json "cluster")
    cluster: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.units_failed


def run(cfg: RunConfig, *, address: str | None = None, run_id: str | None = None, out: TextIO = sys.stdout,
        verbose: bool = False, progress: bool = True, keep_engines: bool = False) -> RunOutcome:
    """Run every pending unit of ``cfg``; write the report. ``keep_engines`` keeps the engine
    actors loaded after the run, and reuses those of an earlier run in this process where
    model, engine options and cores match (:class:`KeptEngines`).

    One driver per run folder at a time (:class:`~harness.report.RunLock`). A unit whose
    generation, scoring or writing fails is a failed unit and the run goes on; whatever ends
    the run early (an interrupt, a crash) leaves run.json saying so, with the reason."""
    run_id = check_run_id(run_id, "--resume") if run_id else cfg.run_id
    run_dir = run_folder(cfg.output_dir, run_id)  # a local folder, or a prefix at a URI (s3://...)
    with RunLock(run_dir):
        return _run_locked(cfg, run_id, run_dir, address=address, out=out, verbose=verbose, progress=progress,
                           keep_engines=keep_engines)


@dataclass(frozen=True)
class _Target:
    """Where and how one run writes: the config, the run folder, the row schema, the metrics."""

    cfg: RunConfig
    run_id: str
    run_dir: Path
    schema: Any  # pyarrow.Schema of every unit file
    metrics: list[str]


@dataclass(frozen=True)
class _Options:
    """How the caller wants the run driven (the CLI's flags)."""

    address: str | None
    out: TextIO
    verbose: bool
    progress: bool
    keep_engines: bool


def _run_locked(cfg: RunConfig, run_id: str, run_dir: Path, *, address: str | None, out: TextIO, verbose: bool,
                progress: bool, keep_engines: bool) -> RunOutcome:
    t_start = time.perf_counter()
    started_at = now_iso()
    opts = _Options(address, out, verbose, progress, keep_engines)
    prompt_sets = [load_prompt_set(p) for p in cfg.prompt_sets]
    units = make_plan(cfg, prompt_sets)
    _check_resumable(run_dir, units)
    sample_columns, step_fields = row_columns(cfg)
    target = _Target(cfg, run_id, run_dir, sample_schema(metric_names(cfg), sample_columns, step_fields),
                     metric_names(cfg))

    pending, set_aside_files = _pending_units(target, units)
    skipped = len(units) - len(pending)
    print(f"run {run_id}: {len(cfg.models)} model(s) x {len(cfg.strategies)} strategy config(s) x "
          f"{sum(len(p.prompts) for p in prompt_sets)} prompts -> {len(units)} unit(s)"
          + (f", {skipped} already done (each read back whole)" if skipped else ""), file=out)
    for relpath, problem, aside in set_aside_files:
        print(f"  unit file {relpath} {problem}: moved aside to {aside.name}, redoing it", file=out)
    for ps in prompt_sets:
        own = [s for s in ps.stop if s not in cfg.stop]
        if own:
            print(f"  prompt set {ps.name}: generation also stops at its task's stop strings {own!r} (its units "
                  f"only)", file=out)
    for name in target.metrics:
        problem = get_metric(name).unavailable()
        if problem is not None:
            print(f"  metric {name} is unavailable here, its column stays empty: {problem}", file=out)

    model_paths, architectures = _resolve_models(cfg)
    run_meta = {
        "run_id": run_id, "run_name": cfg.run_name, "description": cfg.description, "config_source": cfg.source,
        "config": cfg.raw, "config_hash": cfg.config_hash, "git_revision": git_revision(),
        "packages": package_versions(), "started_at": started_at, "status": "running",
        "host": {"cpu": cpu_info().as_dict()},
        "models": {m.name: {"ref": m.ref, "path": model_paths[m.name][0], "replicas": m.replicas,
                            "engine": m.engine.model_dump(), "architecture": architectures[m.name],
                            "capacity": model_capacity(architectures[m.name]) if architectures[m.name] else None}
                   for m in cfg.models},
        "prompt_sets": {p.name: {"source": p.source, "prompts": len(p.prompts), "hash": p.hash, "licence": p.licence}
                        for p in prompt_sets},
        "strategies": [{"label": s.label, "name": s.name, "id": s.id, "params": s.params,
                        "samples_per_prompt": s.samples_per_prompt, "max_tokens": s.max_tokens} for s in cfg.strategies],
        "metrics": target.metrics, "columns": columns_meta(sample_columns, step_fields), "units": len(units),
        "set_aside": [{"unit": r, "problem": p, "moved_to": a.name} for r, p, a in set_aside_files],
    }
    write_run_json(run_dir, run_meta)

    outcome = RunOutcome(run_id, run_dir, len(units), skipped, 0)
    try:
        if pending:
            _execute(target, pending, model_paths, outcome, opts)
    except BaseException as exc:
        # Finished units are on disk; run.json must not go on saying "running".
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        run_meta.update(status=status, finished_at=now_iso(), seconds=round(time.perf_counter() - t_start, 2),
                        failed_units=outcome.units_failed, retries=outcome.retries, cluster=outcome.cluster,
                        unit_nodes=outcome.unit_nodes, error=f"{type(exc).__name__}: {exc}"[:2000])
        write_run_json(run_dir, run_meta)
        raise

    outcome.seconds = time.perf_counter() - t_start
    _resolved_engines(run_dir, units, outcome, outcome.units_ran)
    for name, resolved in outcome.engines.items():
        run_meta["models"][name]["resolved"] = resolved
    for name, costs in outcome.engine_costs.items():
        run_meta["models"][name]["engine_costs"] = list(costs.values())
    run_meta.update(status="complete" if outcome.ok else "failed", finished_at=now_iso(),
                    seconds=round(outcome.seconds, 2), failed_units=outcome.units_failed, retries=outcome.retries,
                    cluster=outcome.cluster, unit_nodes={u.id: outcome.unit_nodes.get(u.id) for u in units})
    if not outcome.ok:
        run_meta["error"] = f"{len(outcome.units_failed)} unit(s) failed; see failed_units"
    write_run_json(run_dir, run_meta)
    return outcome


def _pending_units(target: _Target, units: list[WorkUnit]) -> tuple[list[WorkUnit], list[tuple[str, str, Path]]]:
    """The units still to run, and the files set aside because they did not read back whole."""
    pending, set_aside_files = [], []
    for u in units:
        problem = unit_problem(target.run_dir, u.relpath, u.id, u.expected_rows, target.schema)
        if problem is None:
            continue
        if problem != "missing":  # present but not whole: moved out of the dataset, redone
            set_aside_files.append((u.relpath, problem, set_aside(target.run_dir, u.relpath)))
        pending.append(u)
    return pending, set_aside_files


def _resolve_models(cfg: RunConfig) -> tuple[dict[str, tuple[str, bool]], dict[str, Any]]:
    """Per model: (local path, needs a BOS token), and its size facts (None for a hub id)."""
    model_paths: dict[str, tuple[str, bool]] = {}
    architectures: dict[str, Any] = {}
    for m in cfg.models:
        path = resolve_model(m.ref, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        needs_bos = BUILTIN_MODELS[m.ref].needs_bos if m.ref in BUILTIN_MODELS else False
        model_paths[m.name] = (str(path), needs_bos)
        architectures[m.name] = _architecture(path)
    return model_paths, architectures


def engine_summary(info: dict[str, Any]) -> dict[str, Any]:
    """What a unit's engine says of its dtype, CPU and vLLM model runner, as run.json keeps it per model."""
    return {"dtype": info.get("dtype"), "dtype_requested": info.get("dtype_requested"), "cpu": info.get("cpu"),
            "model_runner": info.get("model_runner"), "logits_processors": info.get("logits_processors")}


def _resolved_engines(run_dir: Path, units: list[WorkUnit], outcome: RunOutcome, ran: set[str]) -> None:
    """For the units this run skipped (done before), from their files: ``outcome.engines`` of
    models none of whose units ran now, and the start and warm-up of the engines that made them."""
    for u in units:
        if u.relpath in ran:
            continue
        info = (unit_meta(run_dir / "samples" / u.relpath) or {}).get("engine") or {}
        outcome.unit_nodes.setdefault(u.id, info.get("node_id"))
        if u.model not in outcome.engines and info.get("dtype"):
            outcome.engines[u.model] = engine_summary(info)
        add_engine_costs(outcome, u.model, info)


def add_engine_costs(outcome: RunOutcome, model: str, info: dict[str, Any]) -> None:
    """Count a unit's engine in ``outcome.engine_costs``: its start and its warm-up so far (an
    engine's info is cumulative, so the largest warm-up seen is the engine's)."""
    pid = info.get("pid")
    if pid is None or info.get("load_seconds") is None:
        return
    entry = outcome.engine_costs.setdefault(model, {}).setdefault(pid, {"pid": pid, "units": 0, "warmup_seconds": 0.0})
    warm = float(info.get("warmup_seconds") or 0.0)
    if warm >= entry["warmup_seconds"]:
        entry.update({k: info.get(k) for k in ("load_seconds", "warmup_seconds", "warmups", "cache_resets")})
    entry["units"] += 1


def describe_engines(engines: dict[str, dict[str, Any]]) -> str:
    """One line per model: 'smollm2-135m: bfloat16 (dtype auto) on AMD EPYC (AVX-512, ...)'."""
    lines = []
    for model, e in sorted(engines.items()):
        cpu = e.get("cpu")
        where = "on a GPU"
        if cpu:
            where = "on " + CpuInfo(cpu["model"], frozenset(cpu["flags"]), cpu["cores"], cpu.get("isa_cap")).describe()
        lines.append(f"{model}: {e.get('dtype')} (dtype {e.get('dtype_requested')}) {where}")
    return "\n".join(lines)


def describe_engine_costs(costs: dict[str, dict[int, dict[str, Any]]]) -> str:
    """One line per model: its engines' start and warm-up seconds, which no unit is charged."""
    lines = []
    for model, engines in sorted(costs.items()):
        load = sum(e.get("load_seconds") or 0 for e in engines.values())
        warm = sum(e.get("warmup_seconds") or 0 for e in engines.values())
        lines.append(f"{model}: {len(engines)} engine(s) started in {load:.1f} s, warmed up in {warm:.1f} s "
                     f"(not charged to any unit)")
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
        raise ConfigError(f"{run_dir} holds {len(foreign)} unit file(s) of another plan (e.g. {foreign[0]}): it is a run "
                          f"of a different config. Resume it with its own config, or drop --resume / choose another "
                          f"output.run_id")


def _architecture(path: Any) -> dict[str, Any] | None:
    """Size facts of a local model folder (None for a hub id, which has no local config)."""
    return model_architecture(path) if (Path(str(path)) / "config.json").exists() else None


class _UnitSink:
    """What happens to a unit the scheduler is done with: scored, written and counted, or
    recorded as failed; retries are recorded too. One per run."""

    def __init__(self, target: _Target, outcome: RunOutcome, bar: Any) -> None:
        self.target = target
        self.outcome = outcome
        self.bar = bar  # progress in samples
        self.ran = outcome.units_ran  # ids of the units written by this run

    def on_done(self, unit: WorkUnit, result: Any) -> None:
        t = self.target
        try:
            for row in result.rows:
                row["run_id"] = t.run_id
            score_rows(result.rows, t.metrics)
            write_unit(t.run_dir, unit.relpath, result.rows, t.schema,
                       {"unit_id": unit.id, "rows": len(result.rows), "gen_seconds": result.gen_seconds,
                        "timing_runs": result.timing_runs, "repeats_agree": result.repeats_agree,
                        "warmup_seconds_before": result.warmup_seconds,
                        "generated_tokens": result.generated_tokens, "engine": result.engine_info})
        except Exception as exc:  # noqa: BLE001 - scoring or writing this unit failed: it fails, the run goes on
            log.warning("unit %s (%s / %s) could not be scored or written: %s", unit.id, unit.model,
                        unit.strategy.label, exc)
            self.on_failed(unit, exc, 1, stage="scoring or writing")
            return
        self.outcome.engines.setdefault(unit.model, engine_summary(result.engine_info))
        self.outcome.unit_nodes[unit.id] = result.engine_info.get("node_id")
        add_engine_costs(self.outcome, unit.model, result.engine_info)
        self.ran.add(unit.relpath)
        self.outcome.units_done += 1
        self.bar.update(len(result.rows))

    def on_failed(self, unit: WorkUnit, error: BaseException, attempts: int, stage: str = "generation") -> None:
        self.outcome.units_failed.append({"unit_id": unit.id, "model": unit.model, "strategy": unit.strategy.label,
                                          "attempts": attempts, "stage": stage,
                                          "error": f"{type(error).__name__}: {error}"[:2000]})
        self.bar.update(unit.expected_rows)

    def on_retry(self, unit: WorkUnit, error: BaseException, attempt: int) -> None:
        first = str(error).splitlines()[0] if str(error) else ""
        self.outcome.retries.append({"unit_id": unit.id, "model": unit.model, "strategy": unit.strategy.label,
                                     "attempt": attempt, "at": time.time(),
                                     "error": f"{type(error).__name__}: {first}"[:300]})


def _execute(target: _Target, pending: list[WorkUnit], model_paths: dict[str, tuple[str, bool]],
             outcome: RunOutcome, opts: _Options) -> None:
    start_ray(opts.address, opts.verbose)
    placement = Placement()  # which node holds each replica; a new one for a replica whose node dies
    pools, actors = start_pools(target.cfg, model_paths, {u.model for u in pending}, opts.keep_engines,
                                placement=placement)
    outcome.cluster = {"nodes": placement.nodes, "replicas": placement.describe(), "events": placement.events}
    bar = tqdm(total=sum(u.expected_rows for u in pending), unit="sample", desc="generating",
               disable=not opts.progress, file=opts.out, dynamic_ncols=True)
    sink = _UnitSink(target, outcome, bar)
    try:
        # A unit that runs past this (a hung engine) gets its actor restarted and is retried.
        timeout = float(os.environ.get("DECEVAL_UNIT_TIMEOUT_S", "3600")) or None
        # Two units in flight per actor: the next one waits on the actor, so no actor idles
        # for a dispatch round trip (simulated efficiency at 32 replicas: 0.82 -> 0.96).
        # A replica whose node dies is started again on another node (or the run goes on
        # without it); its units in flight run again (placement.Placement, scheduler.NodeWatch).
        Scheduler(pools, max_in_flight=2, unit_timeout_s=timeout,
                  nodes=placement if placement.replicas else None).run(pending, sink.on_done, sink.on_failed,
                                                                        sink.on_retry)
    finally:
        bar.close()
        if placement.events:
            outcome.cluster["replicas_at_end"] = placement.describe()
        for e in placement.events:
            where = f"started again on node {e['node_id']}" if e["action"] == "re-placed" else \
                f"not started again ({e['reason']}): the run went on with fewer replicas"
            print(f"node {e['lost_node']} died: {e['model']} replica {e['slot']} {where}", file=opts.out)
        KEPT.keep(placement.live_actors() if placement.by_key else actors)
        if not opts.keep_engines:
            KEPT.release()
