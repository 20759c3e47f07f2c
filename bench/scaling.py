"""Scaling benchmark for the engine pool and the scheduler.

(a) real: SmolLM2-135M engines in Ray actors on this machine, greedy on both built-in
    sets through the chat template, the same four work units each time (batches large
    enough to be compute-bound; small ones measure per-step overhead, not cores). Three set-ups: one engine bound to core 0; one engine bound to every core;
    one engine per core. Targets (2-core machine): per-core replicas >= 1.6x the single-core
    engine, and >= 0.9x the engine bound to both cores.
(b) simulated: engine actors that sleep for a modelled step time per generated token
    (16-48 tokens per unit), from 1 to 32 replicas. Scheduler efficiency = ideal time /
    measured time, with ideal time = the same units dispatched to the next idle replica
    with zero overhead (list schedule); the looser work/replicas bound is shown beside it.
    Target: >= 0.9 at 32 replicas. 256 replicas: 256 actor processes do not fit a small
    machine's memory, so replicas are lanes of 16 sleeping actors (16 lanes each, one unit at
    a time per lane, the same two in flight per replica): the scheduler sees 256 replicas.
(c) nodes: 1, 2 and 3 Ray worker nodes on this machine (``ray.cluster_utils.Cluster``, a
    head with no CPUs for engines, 1 CPU per worker), one SmolLM2 replica per worker node,
    the runner's placement (pinned to nodes, the machine's cores split) and scheduler, the
    same units each time. Units per minute, and the scheduling overhead: wall time minus
    the list-schedule makespan of the engines' own per-unit seconds (generation and warm-up
    as each unit reports them). The nodes share this machine's cores, so more nodes do not
    add compute beyond the cores: the figure shows what dispatch over nodes costs, not a
    speed-up a real cluster would give.
(d) node loss detection: seconds from a worker node's SIGKILL until Ray lists it as dead
    (when the scheduler notices), with Ray's default health checks and the cluster tests'.

    .venv/bin/python bench/scaling.py --quick            # (a) and (b), small
    .venv/bin/python bench/scaling.py --sim-only         # no model, seconds
    .venv/bin/python bench/scaling.py --nodes-only       # (c) and (d) only
    .venv/bin/python bench/scaling.py --json out.json

Timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---- (b) simulated -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SleepUnit:
    id: str
    model: str
    tokens: int
    step_s: float

    @property
    def seconds(self) -> float:
        return self.tokens * self.step_s


def list_schedule_makespan(durations: list[float], replicas: int) -> float:
    """The ideal time: the same units, in the same order, each going to the next idle
    replica with zero dispatch overhead. (work / replicas is a looser lower bound: whole
    units cannot be split, so the last ones leave some replicas idle.)"""
    import heapq
    free = [0.0] * replicas
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def _sleep_actor_class():
    import ray

    @ray.remote(num_cpus=0)
    class SleepEngine:
        """Stands in for an engine actor: a unit takes tokens x step time."""

        def ping(self) -> int:
            return os.getpid()

        def run_unit(self, unit: SleepUnit) -> float:
            time.sleep(unit.seconds)
            return unit.seconds

    return SleepEngine


def simulate(replica_counts: list[int], units_per_replica: int, step_s: float, seed: int = 0,
             max_in_flight: int = 2) -> list[dict]:
    import ray

    from harness.driver.scheduler import Scheduler

    SleepEngine = _sleep_actor_class()
    rng = random.Random(seed)
    actors = [SleepEngine.remote() for _ in range(max(replica_counts))]
    ray.get([a.ping.remote() for a in actors])  # every actor up before the clock starts
    rows = []
    try:
        for n in replica_counts:
            units = [SleepUnit(f"u{i}", "m", rng.randint(16, 48), step_s) for i in range(n * units_per_replica)]
            work = sum(u.seconds for u in units)
            bound = max(work / n, max(u.seconds for u in units))
            ideal = list_schedule_makespan([u.seconds for u in units], n)
            done: list = []
            t0 = time.perf_counter()
            stats = Scheduler({"m": actors[:n]}, max_in_flight=max_in_flight).run(units, lambda u, r: done.append(r), lambda u, e, k: None)
            measured = time.perf_counter() - t0
            assert stats["done"] == len(units), stats
            rows.append({"replicas": n, "max_in_flight": max_in_flight, "units": len(units), "work_s": round(work, 2), "ideal_s": round(ideal, 3),
                         "bound_s": round(bound, 3), "measured_s": round(measured, 3),
                         "efficiency": round(ideal / measured, 3), "efficiency_vs_bound": round(bound / measured, 3)})
            print(f"  sim {n:>2} replicas: {len(units):>4} units  ideal {ideal:6.2f} s  measured {measured:6.2f} s  "
                  f"efficiency {ideal / measured:.3f}  (vs work/replicas bound {bound:5.2f} s: {bound / measured:.3f})",
                  flush=True)
    finally:
        for a in actors:
            ray.kill(a)
    return rows


def _lane_actor_class():
    import threading

    import ray

    @ray.remote(num_cpus=0)
    class LaneEngine:
        """Several simulated replicas in one process: each lane runs one unit at a time."""

        def __init__(self, lanes: int) -> None:
            self.locks = [threading.Lock() for _ in range(lanes)]

        def ping(self) -> int:
            return os.getpid()

        def run_lane(self, lane: int, unit: SleepUnit) -> float:
            with self.locks[lane]:
                time.sleep(unit.seconds)
            return unit.seconds

    return LaneEngine


class _LaneMethod:
    def __init__(self, actor, lane: int) -> None:
        self.actor, self.lane = actor, lane

    def remote(self, unit):
        return self.actor.run_lane.remote(self.lane, unit)


class Lane:
    """One simulated replica as the scheduler sees it: ``run_unit.remote(unit)`` and
    ``__ray_ready__.remote()``, served by one lane of a shared :class:`LaneEngine` process."""

    def __init__(self, actor, lane: int) -> None:
        self.actor, self.run_unit, self.__ray_ready__ = actor, _LaneMethod(actor, lane), actor.__ray_ready__


def simulate_lanes(replicas: int, processes: int, units_per_replica: int, step_s: float, seed: int = 0,
                   max_in_flight: int = 2) -> dict:
    import ray

    from harness.driver.scheduler import Scheduler

    lanes = replicas // processes
    LaneEngine = _lane_actor_class()
    actors = [LaneEngine.options(max_concurrency=lanes * max_in_flight + 1).remote(lanes) for _ in range(processes)]
    ray.get([a.ping.remote() for a in actors])
    pool = [Lane(a, i) for a in actors for i in range(lanes)]
    rng = random.Random(seed)
    units = [SleepUnit(f"u{i}", "m", rng.randint(16, 48), step_s) for i in range(replicas * units_per_replica)]
    ideal = list_schedule_makespan([u.seconds for u in units], replicas)
    try:
        t0 = time.perf_counter()
        stats = Scheduler({"m": pool}, max_in_flight=max_in_flight).run(units, lambda u, r: None,
                                                                       lambda u, e, k: None)
        measured = time.perf_counter() - t0
    finally:
        for a in actors:
            ray.kill(a)
    assert stats["done"] == len(units), stats
    row = {"replicas": replicas, "processes": processes, "max_in_flight": max_in_flight, "units": len(units),
           "step_s": step_s, "ideal_s": round(ideal, 3), "measured_s": round(measured, 3),
           "efficiency": round(ideal / measured, 3)}
    print(f"  sim {replicas:>3} replicas ({processes} processes x {lanes} lanes): {len(units):>5} units  ideal "
          f"{ideal:6.2f} s  measured {measured:6.2f} s  efficiency {ideal / measured:.3f}", flush=True)
    return row


# ---- (c) nodes -----------------------------------------------------------------------------------


def nodes_case(workers: int, prompts: int, max_tokens: int, shard: int) -> dict:
    """One replica per worker node on a fresh local cluster; the same units each time."""
    import ray
    from ray.cluster_utils import Cluster

    from harness.driver.placement import Placement, start_pools, start_ray
    from harness.driver.scheduler import Scheduler

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        start_ray(cluster.address, verbose=False)
        cfg = _real_config(prompts, max_tokens, shard, workers, None)
        units, path, needs_bos = _plan_and_model(cfg)
        placement = Placement()
        pools, _ = start_pools(cfg, {cfg.models[0].name: (str(path), needs_bos)}, {cfg.models[0].name},
                               placement=placement)
        actors = pools[cfg.models[0].name]
        ray.get([a.run_unit.remote(units[0]) for a in actors])  # start and warm every engine, untimed
        results: list = []
        t0 = time.perf_counter()
        stats = Scheduler(pools, max_in_flight=2, nodes=placement).run(
            units, lambda u, r: results.append(r), lambda u, e, k: print("failed", u.id, e))
        wall = time.perf_counter() - t0
        for a in actors:
            ray.kill(a)
    finally:
        ray.shutdown()
        cluster.shutdown()
    busy = [sum(r.timing_runs) + r.warmup_seconds for r in results]
    ideal = list_schedule_makespan(busy, workers)
    row = {"worker_nodes": workers, "replicas": workers, "cores": [r["cores"] for r in placement.describe()],
           "units": len(units), "done": stats["done"], "wall_s": round(wall, 2),
           "units_per_min": round(60 * len(results) / wall, 1), "engine_busy_s": round(sum(busy), 2),
           "ideal_s": round(ideal, 2), "overhead_s": round(wall - ideal, 2),
           "overhead_per_unit_ms": round(1000 * (wall - ideal) / max(1, len(results)), 1),
           "nodes_used": len({n for n in (r.engine_info.get("node_id") for r in results) if n})}
    print(f"  {workers} worker node(s), cores {row['cores']}: {len(results)} units in {wall:.2f} s = "
          f"{row['units_per_min']} units/min; engines busy {sum(busy):.2f} s, ideal {ideal:.2f} s, overhead "
          f"{wall - ideal:.2f} s ({row['overhead_per_unit_ms']} ms/unit), nodes used {row['nodes_used']}", flush=True)
    return row


def detection(label: str, system_config: dict | None) -> dict:
    """Seconds from a worker node's SIGKILL (raylet, object store, workers) until Ray lists it
    as dead, which is when the scheduler notices (it asks every second)."""
    import ray
    from ray.cluster_utils import Cluster

    from harness.driver.placement import alive_nodes, start_ray

    args = {"num_cpus": 0, "include_dashboard": False}
    if system_config:
        args["_system_config"] = system_config
    cluster = Cluster(initialize_head=True, head_node_args=args)
    try:
        node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        start_ray(cluster.address, verbose=False)
        time.sleep(2)  # past the health checks' initial delay of a new node
        t0 = time.perf_counter()
        cluster.remove_node(node, allow_graceful=False)
        while node.node_id in alive_nodes():
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"  node loss noticed after {seconds:.1f} s ({label})", flush=True)
    return {"settings": label, "system_config": system_config or {}, "seconds": round(seconds, 2)}


# ---- (a) real ------------------------------------------------------------------------------------


def _real_config(prompts: int, max_tokens: int, shard: int, replicas: int, cores: str | None):
    from harness.config import resolve_config
    engine = {"dtype": "bfloat16", "max_model_len": 1024, "kv_cache_gib": 1, "block_size": 32}
    if cores:
        engine["cpu_cores"] = cores
    return resolve_config({
        "run_name": "bench-scaling", "models": [{"model": "smollm2-135m", "replicas": replicas}],
        # Both built-in sets through the chat template (real answers, not an early EOS), in
        # four units of equal size: batches big enough to be compute-bound, and an even split
        # over one or two replicas.
        "engine": engine, "chat": True,
        "prompt_sets": [{"name": "open_ended", "limit": prompts}, {"name": "facts", "limit": prompts}],
        "strategies": [{"name": "greedy"}], "generation": {"max_tokens": max_tokens, "seed": 0},
        "shard_size": shard,
    }, "<bench>")


def _plan_and_model(cfg) -> tuple[list, object, bool]:
    """The config's units, its (one) model's folder and whether that model needs a BOS token."""
    from harness.models import BUILTIN_MODELS, resolve_model
    from harness.plan import make_plan
    from harness.tasks import load_prompt_set

    units = make_plan(cfg, [load_prompt_set(p) for p in cfg.prompt_sets])
    ref = cfg.models[0].ref
    resolved = resolve_model(ref)
    path = resolved[0] if isinstance(resolved, tuple) else resolved
    return units, path, BUILTIN_MODELS[ref].needs_bos if ref in BUILTIN_MODELS else False


def real_case(label: str, prompts: int, max_tokens: int, shard: int, replicas: int, cores: str | None) -> dict:
    import ray

    from harness.driver.placement import start_pools
    from harness.driver.scheduler import Scheduler

    cfg = _real_config(prompts, max_tokens, shard, replicas, cores)
    units, path, needs_bos = _plan_and_model(cfg)
    t_load = time.perf_counter()
    pools, _ = start_pools(cfg, {cfg.models[0].name: (str(path), needs_bos)}, {cfg.models[0].name})
    actors = pools[cfg.models[0].name]
    try:
        infos = ray.get([a.info.remote() for a in actors])
        load_s = time.perf_counter() - t_load
        # Warm-up: one unit on every actor, not timed.
        ray.get([a.run_unit.remote(units[0]) for a in actors])
        results: list = []
        t0 = time.perf_counter()
        # As the runner dispatches: two units in flight per actor.
        stats = Scheduler(pools, max_in_flight=2).run(units, lambda u, r: results.append(r),
                                                      lambda u, e, k: print("failed", u.id, e))
        wall = time.perf_counter() - t0
    finally:
        for a in actors:
            ray.kill(a)
    tokens = sum(r.generated_tokens for r in results)
    row = {"case": label, "replicas": replicas, "cores": [i["cpu_cores"] for i in infos], "units": len(units),
           "done": stats["done"], "tokens": tokens, "wall_s": round(wall, 2), "tok_per_s": round(tokens / wall, 1),
           "load_s": round(load_s, 1)}
    print(f"  real {label:<22} cores {row['cores']}: {tokens} tokens in {wall:.2f} s = {row['tok_per_s']} tok/s "
          f"(engine start {load_s:.0f} s)", flush=True)
    return row


def real(prompts: int, max_tokens: int, shard: int) -> dict:
    from harness.hardware import cpu_count
    n = cpu_count()
    if n < 2:
        print("  real: needs at least 2 cores; skipped")
        return {}
    one_core = real_case("1 engine, 1 core", prompts, max_tokens, shard, 1, "0")
    all_cores = real_case(f"1 engine, {n} cores", prompts, max_tokens, shard, 1, None)
    per_core = real_case(f"{n} engines, 1 core each", prompts, max_tokens, shard, n, None)
    vs_one = per_core["tok_per_s"] / one_core["tok_per_s"]
    vs_all = per_core["tok_per_s"] / all_cores["tok_per_s"]
    print(f"  real: {n} replicas vs 1 engine on 1 core: {vs_one:.2f}x (target >= 1.6); "
          f"vs 1 engine on {n} cores: {vs_all:.2f}x (target >= 0.9)")
    return {"cases": [one_core, all_cores, per_core], "speedup_vs_one_core": round(vs_one, 3),
            "ratio_vs_all_cores": round(vs_all, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    ap.add_argument("--sim-only", action="store_true", help="only the simulated part (no model)")
    ap.add_argument("--real-only", action="store_true", help="only the real-engine part")
    ap.add_argument("--nodes-only", action="store_true", help="only the worker-nodes part (c)")
    ap.add_argument("--nodes", default="1,2,3", help="(c): worker node counts (default 1,2,3)")
    ap.add_argument("--sim-replicas", default="32,256", help="(b): replica counts run as lanes (default 32,256)")
    ap.add_argument("--in-flight", type=int, default=2,
                    help="simulated part: units in flight per actor (2 hides the dispatch round trip)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import ray

    from harness.hardware import cpu_count
    out: dict = {"quick": args.quick, "cpus": cpu_count()}
    ok = True
    only = args.sim_only or args.real_only or args.nodes_only
    if not args.nodes_only:
        ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False,
                 runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        if args.sim_only or not only:
            counts = [1, 4, 16, 32] if args.quick else [1, 2, 4, 8, 16, 32]
            print("(b) simulated scheduler scaling", flush=True)
            sim = simulate(counts, units_per_replica=8, step_s=0.005 if args.quick else 0.01,
                           max_in_flight=args.in_flight)
            eff32 = next(r["efficiency"] for r in sim if r["replicas"] == 32)
            print(f"  efficiency at 32 replicas: {eff32:.3f} (target >= 0.9) -> {'PASS' if eff32 >= 0.9 else 'MISS'}")
            out["simulated"] = sim
            ok &= eff32 >= 0.9
            # Many replicas as lanes of shared processes; units of 0.8-2.4 s (step 0.05 s).
            out["simulated_lanes"] = [simulate_lanes(int(n), max(1, int(n) // 16), 4 if args.quick else 8, 0.05,
                                                     max_in_flight=args.in_flight)
                                      for n in args.sim_replicas.split(",")]
        if args.real_only or not only:
            print("(a) real engines", flush=True)
            # 4 units each time: 32 prompts in units of 8 (quick), or all 121 in units of 31.
            r = real(prompts=16, max_tokens=48, shard=8) if args.quick else real(prompts=77, max_tokens=64, shard=31)
            out["real"] = r
            if r:
                passed = r["speedup_vs_one_core"] >= 1.6 and r["ratio_vs_all_cores"] >= 0.9
                print(f"  -> {'PASS' if passed else 'MISS'} (indicative: the machine is shared)")
    finally:
        ray.shutdown()
    if args.nodes_only or not only:
        print("(d) node loss detection", flush=True)
        out["detection"] = [detection("Ray's defaults", None), detection("the cluster tests' settings", {
            "health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 1000,
            "health_check_failure_threshold": 4})]
        print("(c) worker nodes on this machine (cores shared)", flush=True)
        # 12 units of 4 prompts x 32 tokens, greedy, chat template.
        out["nodes"] = [nodes_case(int(n), prompts=24, max_tokens=32, shard=4) for n in args.nodes.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
