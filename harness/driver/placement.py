"""Where engine actors run: the Ray start-up, one actor per model replica on a chosen Ray
node, bound to its share of that machine's CPU cores or to its GPUs, the engines kept
loaded between runs, and a new node for a replica whose node died (:class:`Placement`).

Nodes: a replica goes to a live node that can hold it (CPU engines: a node with CPUs, so a
head started with ``--num-cpus=0`` runs none; GPU engines: a node with GPUs), spread so that
every node carries about the same share of its CPUs. Each replica is pinned to its node
(``NodeAffinitySchedulingStrategy``, hard), so the driver knows where every replica lives
before its engine has even started. Ray still restarts an actor whose process died on a live
node; when the node itself is gone the scheduler asks :meth:`Placement.replace` for another.
Replicas of one machine (several Ray nodes may share one) split that machine's cores.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
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
        self.groups: dict[tuple, Any] = {}  # key -> the placement group that actor holds (TP > 1 on GPUs)
        self.session: str | None = None  # the Ray session those handles belong to

    @staticmethod
    def _current_session() -> str:
        import ray
        return ray.get_runtime_context().get_node_id()  # new for every Ray start

    def take(self, wanted: list[tuple]) -> dict[tuple, Any]:
        """The kept actors whose keys are wanted (removed from the cache); the rest are killed."""
        if self.session != self._current_session():
            self.actors, self.groups = {}, {}  # handles of a Ray that was shut down: nothing to kill or reuse
        taken = {k: self.actors.pop(k) for k in wanted if k in self.actors}
        self.release()
        return taken

    def keep(self, actors: dict[tuple, Any]) -> None:
        self.session = self._current_session()
        self.actors.update(actors)

    def release(self) -> None:
        import ray
        for key, actor in self.actors.items():
            ray.kill(actor)
            if self.groups.get(key) is not None:
                ray.util.remove_placement_group(self.groups.pop(key))
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


@dataclass
class Replica:
    """One engine replica: the actor, the node it lives on, and how to start it again."""

    model: str
    slot: int  # its index in the model's pool
    actor: Any
    node_id: str | None  # the Ray node it is pinned to (None: its placement group's node, see ``pg``)
    args: tuple  # the actor's constructor arguments
    options: dict[str, Any]  # Ray actor options, less the scheduling strategy
    demand: dict[str, float] = field(default_factory=dict)  # what it asks of its node ({"CPU": 1})
    cores: str | None = None  # the cores its engine is bound to (CPU engines)
    bundles: list[dict[str, float]] | None = None  # a placement group's bundles (TP > 1 on GPUs), one node
    pg: Any = None  # that placement group
    group_hint: str | None = None  # the live node a group started again should go to (a soft hint)
    cls: Any = None  # the Ray actor class (None: the engine actor, :func:`actor_class`)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "slot": self.slot, "node_id": self.node_id, "cores": self.cores,
                "resources": self.needs(), "placement_group": self.bundles is not None}

    def needs(self) -> dict[str, float]:
        """What the replica takes of one node: its own demand, or its group's bundles together."""
        if self.bundles is None:
            return dict(self.demand)
        total: dict[str, float] = {}
        for b in self.bundles:
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + v
        return total


def alive_nodes() -> dict[str, dict[str, Any]]:
    """The live Ray nodes: node id -> {"address", "resources"} (totals)."""
    import ray
    return {n["NodeID"]: {"address": n.get("NodeManagerAddress"), "resources": dict(n.get("Resources") or {})}
            for n in ray.nodes() if n.get("Alive")}


def host_cores(nodes: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Per machine (node address): the cores a process there may use, asked of one of its nodes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def affinity() -> list[int]:
        return sorted(os.sched_getaffinity(0))

    here = ray.get_runtime_context().get_node_id()
    first: dict[str, str] = {}
    for node_id, info in sorted(nodes.items(), key=lambda kv: (kv[0] != here, kv[0])):
        first.setdefault(info["address"], node_id)
    out = {addr: sorted(os.sched_getaffinity(0)) for addr, nid in first.items() if nid == here}
    refs = {addr: affinity.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote()
            for addr, nid in first.items() if nid != here}
    out.update({addr: ray.get(ref, timeout=120) for addr, ref in refs.items()})
    return out


class Placement:
    """Where every replica of a run lives, and a new home for one whose node is gone.

    The scheduler asks :meth:`dead_slots` (replicas whose node, or whose placement group's
    node, is no longer alive) and :meth:`replace` (the same replica started again on a live
    node with room for it, or None). ``events`` keeps what happened, for run.json."""

    def __init__(self) -> None:
        self.replicas: dict[str, list[Replica]] = {}  # per model, its replicas by slot
        self.nodes: dict[str, dict[str, Any]] = {}  # the nodes alive when the run started
        self.events: list[dict[str, Any]] = []  # node losses, re-placements and replicas given up
        self.by_key: dict[tuple, Replica] = {}  # reuse key (KeptEngines) -> the replica started for it

    def add(self, replica: Replica, key: tuple | None = None) -> None:
        self.replicas.setdefault(replica.model, []).append(replica)
        if key is not None:
            self.by_key[key] = replica

    def live_actors(self) -> dict[tuple, Any]:
        """Every replica's current actor by reuse key, for :data:`KEPT` (one re-placed elsewhere
        keeps its old key, which names its old node, so no later run reuses it by mistake; one
        given up is left out)."""
        return {k: r.actor for k, r in self.by_key.items() if r.actor is not None}

    def pools(self) -> dict[str, list[Any]]:
        return {m: [r.actor for r in reps] for m, reps in self.replicas.items()}

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for reps in self.replicas.values() for r in reps]

    def _node_of(self, rep: Replica) -> list[str]:
        if rep.pg is None:
            return [rep.node_id] if rep.node_id else []
        import ray
        table = ray.util.placement_group_table(rep.pg)
        # a bundle not placed yet (the group pending) has an empty node id: no node, not a dead one
        placed = {n for n in (table.get("bundles_to_node_id") or {}).values() if n}
        return sorted(placed) or ([rep.node_id] if rep.node_id else [])

    def dead_slots(self) -> list[tuple[str, int]]:
        """(model, slot) of each replica whose node is no longer alive."""
        alive = set(alive_nodes())
        dead = []
        for model, reps in self.replicas.items():
            for rep in reps:
                if rep.actor is None:  # given up
                    continue
                nodes = self._node_of(rep)
                if rep.pg is not None and nodes and rep.node_id is None:
                    rep.node_id = nodes[0]  # where the group was first placed
                if (rep.node_id and rep.node_id not in alive) or any(n not in alive for n in nodes):
                    dead.append((model, rep.slot))
        return dead

    def replace(self, model: str, slot: int) -> Any | None:
        """Start replica (model, slot) again on a live node with room for it; its old actor
        (and placement group) are let go. None when no live node can hold it."""
        import ray
        rep = self.replicas[model][slot]
        lost = rep.node_id
        ray.kill(rep.actor, no_restart=True)
        if rep.pg is not None:
            ray.util.remove_placement_group(rep.pg)
            rep.pg = None
        nodes = alive_nodes()
        event = {"at": time.time(), "model": model, "slot": slot, "lost_node": lost}
        target = pick_node(nodes, self._used(nodes, exclude=rep), rep.needs())
        if target is None:
            self.events.append(dict(event, action="dropped", reason="no live node has room for it"))
            rep.actor = None
            return None
        # A group: Ray places it, steered to the live target; without the hint the GCS, whose view of
        # a node just declared dead can lag, may put it back on that node and it would be lost again.
        rep.node_id = target if rep.bundles is None else None
        rep.group_hint = target if rep.bundles is not None else None
        rep.actor = launch(rep)
        for key, r in self.by_key.items():
            if r is rep and rep.pg is not None:
                KEPT.groups[key] = rep.pg
        self.events.append(dict(event, action="re-placed", node_id=target))
        return rep.actor

    def _used(self, nodes: dict[str, dict[str, Any]], exclude: Replica) -> dict[str, dict[str, float]]:
        """Per live node, the resources this run's other live replicas hold there."""
        used: dict[str, dict[str, float]] = {n: {} for n in nodes}
        for reps in self.replicas.values():
            for r in reps:
                if r is exclude or r.actor is None:
                    continue
                for node in self._node_of(r)[:1]:
                    if node in used:
                        for k, v in r.needs().items():
                            used[node][k] = used[node].get(k, 0.0) + v
        return used


def pick_node(nodes: dict[str, dict[str, Any]], used: dict[str, dict[str, float]],
              needs: dict[str, float]) -> str | None:
    """The live node with room for ``needs`` that is least loaded for its size (ties: the
    lowest id), or None."""
    fits = []
    for node_id, info in nodes.items():
        res, taken = info["resources"], used.get(node_id, {})
        if all(res.get(k, 0.0) - taken.get(k, 0.0) >= v - 1e-9 for k, v in needs.items() if v > 0):
            fits.append((max((taken.get(k, 0.0) / res[k] for k in needs if res.get(k)), default=0.0), node_id))
    return min(fits)[1] if fits else None


def launch(rep: Replica) -> Any:
    """Start the replica's actor: pinned to its node, or in its placement group."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
    opts = dict(rep.options)
    if rep.bundles is not None:
        from ray.util.placement_group import placement_group
        rep.pg = placement_group(rep.bundles, strategy="STRICT_PACK", _soft_target_node_id=rep.group_hint)
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(rep.pg, placement_group_capture_child_tasks=True)
    elif rep.node_id is not None:
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(rep.node_id, soft=False)
    return (rep.cls or actor_class()).options(**opts).remote(*rep.args)


def assign_nodes(nodes: dict[str, dict[str, Any]], count: int, resource: str,
                 per_replica: float | None = None) -> list[str | None]:
    """Nodes for ``count`` replicas that need ``resource`` ("CPU" or "GPU"): each to the node
    with the fewest replicas per unit of it so far (ties: the lowest id); with ``per_replica``,
    only to a node with that much of it left. None for a replica no live node can take: it
    is not pinned, and Ray places it where it fits (on a node an autoscaler starts for it)."""
    able = {n: info["resources"].get(resource, 0) for n, info in nodes.items() if info["resources"].get(resource, 0) > 0}
    load = {n: 0 for n in able}
    out: list[str | None] = []
    for _ in range(count):
        room = [n for n in able if per_replica is None or able[n] - load[n] * per_replica >= per_replica]
        node = min(room, key=lambda n: ((load[n] + 1) / able[n], n)) if room else None
        if node is not None:
            load[node] += 1
        out.append(node)
    return out


def start_pools(cfg: RunConfig, model_paths: dict[str, tuple[str, bool]], models_needed: set[str],
                keep_engines: bool = False, placement: Placement | None = None
                ) -> tuple[dict[str, list[Any]], dict[tuple, Any]]:
    """One actor per model replica, each on a chosen live node (see the module's docstring).
    On CPU nodes each replica is bound to its own share of its machine's cores; on GPUs each
    replica asks Ray for tensor_parallel_size GPUs. Returns the pools and every actor by its
    reuse key (see :class:`KeptEngines`); ``placement`` (when given) is filled with where
    each replica lives."""
    import ray

    placement = placement if placement is not None else Placement()
    nodes = alive_nodes()
    placement.nodes = nodes
    gpus = ray.cluster_resources().get("GPU", 0)
    wanted = [m for m in cfg.models if m.name in models_needed]
    on_gpu = [gpus > 0 and m.engine.device != "cpu" for m in wanted]
    cpu_count_ = sum(m.replicas for m, g in zip(wanted, on_gpu) if not g)
    gpu1_count = sum(m.replicas for m, g in zip(wanted, on_gpu) if g and m.engine.tensor_parallel_size == 1)
    cpu_plan = assign_nodes(nodes, cpu_count_, "CPU") if cpu_count_ else []
    cpu_nodes = iter(cpu_plan)
    gpu_nodes = iter(assign_nodes(nodes, gpu1_count, "GPU", per_replica=1.0) if gpu1_count else [])
    # Replicas of one machine split its cores, whichever Ray node of it they are on.
    cores_there = host_cores({n: nodes[n] for n in set(cpu_plan) if n}) if any(cpu_plan) else {}
    per_host: dict[str, int] = {}
    per_node: dict[str, int] = {}
    for n in filter(None, cpu_plan):
        per_host[nodes[n]["address"]] = per_host.get(nodes[n]["address"], 0) + 1
        per_node[n] = per_node.get(n, 0) + 1
    host_index: dict[str, int] = {}
    plans: list[tuple[tuple, Replica]] = []  # reuse key, replica (its actor not started yet)
    seen: dict[tuple, int] = {}
    for m, g in zip(wanted, on_gpu):
        path, needs_bos = model_paths[m.name]
        for _ in range(m.replicas):
            opts: dict[str, Any] = {"max_restarts": 3, "max_task_retries": 0}
            cores, node, bundles, demand = None, None, None, {}
            if g:
                tp = m.engine.tensor_parallel_size
                if tp == 1:
                    node, demand = next(gpu_nodes), {"CPU": 1.0, "GPU": 1.0}
                    opts.update(num_gpus=1, num_cpus=1)
                else:
                    # TP > 1: vLLM starts one Ray worker per GPU itself, inside the current
                    # placement group; the actor only holds the group (one node, tp GPUs).
                    bundles = [{"GPU": 1, "CPU": 1}] * tp
                    opts.update(num_gpus=0, num_cpus=0)
            else:
                # vLLM pins its own threads; the Ray CPU count only keeps replicas apart: the
                # cores the replica is bound to, or its node's share when replicas outnumber them.
                node = next(cpu_nodes)
                if node is None:  # no live node with CPUs yet: one CPU, wherever Ray (or an autoscaler) finds it
                    cores, cpus = None, 1.0
                else:
                    host = nodes[node]["address"]
                    i = host_index[host] = host_index.get(host, -1) + 1
                    cores = core_share(i, per_host[host], cores_there[host]) if not m.engine.cpu_cores else None
                    cpus = max(0.01, min(cores_of(cores or m.engine.cpu_cores),
                                         nodes[node]["resources"].get("CPU", 1) / per_node[node]))
                opts["num_cpus"] = cpus
                demand = {"CPU": cpus}
            # The engine binds options.cpu_cores, else the share given here: the key holds the
            # binding it will really have and its node; a count tells replicas with equal keys apart.
            base = (path, json.dumps(m.engine.model_dump(exclude={"cpu_cores"}), sort_keys=True),
                    m.engine.cpu_cores or cores, needs_bos, gpus > 0, node)
            seen[base] = seen.get(base, -1) + 1
            rep = Replica(m.name, len([1 for _, r in plans if r.model == m.name]), None, node,
                          (path, m.engine.model_dump(), cores, needs_bos), opts, demand, cores, bundles)
            plans.append(((*base, seen[base]), rep))
    reused = KEPT.take([key for key, _ in plans]) if keep_engines else {}
    if not keep_engines:
        KEPT.release()
    actors: dict[tuple, Any] = {}
    for key, rep in plans:
        actor = reused.pop(key, None)
        if actor is not None:
            rep.pg = KEPT.groups.get(key)
        rep.actor = actor or launch(rep)
        if rep.pg is not None:
            KEPT.groups[key] = rep.pg
        placement.add(rep, key)
        actors[key] = rep.actor
    return placement.pools(), actors
