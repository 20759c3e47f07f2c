"""Where engine actors run: the Ray start-up, one actor per model replica bound to its
share of the CPU cores or to its GPUs, and the engines kept loaded between runs."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

from harness.config import RunConfig
from harness.engine.actor import EngineActor
from harness.hardware import cpu_count


def core_share(replica_index: int, replicas_on_node: int, cores: Sequence[int] | None = None) -> str:
    """This replica's even, contiguous share of the node's cores, as '0-1' or '2'.

    vLLM's CPU backend pins its OpenMP threads itself and ignores Ray's CPU accounting,
    and by default it runs on one core and reserves the rest. We bind on purpose: one
    replica gets every core, N replicas split them.
    """
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    n = len(cores)
    if replicas_on_node > n:
        # More replicas than cores: they share round-robin (slower, but it runs).
        return str(cores[replica_index % n])
    per, extra = divmod(n, replicas_on_node)
    start = replica_index * per + min(replica_index, extra)
    mine = cores[start:start + per + (1 if replica_index < extra else 0)]
    return str(mine[0]) if len(mine) == 1 else f"{mine[0]}-{mine[-1]}"


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
_ACTOR_CLASS: Any = None


def actor_class() -> Any:
    """:class:`~harness.engine.actor.EngineActor` as a Ray actor class (made once per process)."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray
        _ACTOR_CLASS = ray.remote(EngineActor)
    return _ACTOR_CLASS


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
                    from ray.util.scheduling_strategies import (
                        PlacementGroupSchedulingStrategy,
                    )
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
        actor = reused.pop(key, None) or actor_class().options(**opts).remote(*args)
        pools.setdefault(name, []).append(actor)
        actors[key] = actor
    return pools, actors
