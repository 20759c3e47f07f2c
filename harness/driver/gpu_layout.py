"""The data-parallel x tensor-parallel layout of GPU engines, on paper: which node, GPUs,
placement group and bundles each engine replica gets, before anyone pays for a cluster
(``deceval placement``).

It follows the rules :func:`harness.driver.placement.start_pools` applies on a live cluster:

- tensor_parallel_size 1: the engine actor asks Ray for one GPU and one CPU (no placement
  group); replicas go to the node with the fewest replicas per GPU so far (ties: the lower
  node), i.e. they spread over the nodes;
- tensor_parallel_size tp > 1: the actor holds a placement group of tp bundles
  ``{"GPU": 1, "CPU": 1}`` with strategy ``STRICT_PACK`` (all on one node), and vLLM starts
  one Ray worker per bundle inside it (``distributed_executor_backend="ray"``). A TP group
  never spans nodes, so tp must divide into one node's GPUs. Ray picks the node; the plan
  puts each group on the node with the most free GPUs (ties: the lower node), which is
  where an empty cluster of equal nodes has room.

Data parallelism is the number of replicas: by default as many as fit
(``nodes * (gpus_per_node // tp)``). GPU numbers are positions on the node, in the order
the plan hands them out; Ray sets each worker's ``CUDA_VISIBLE_DEVICES`` itself.
Plain Python: no Ray, no vLLM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EngineSlot:
    """Where one engine replica goes."""

    replica: int  # data-parallel index of the engine
    node: int  # node index, 0-based
    gpus: tuple[int, ...]  # GPU positions on that node, one per tensor-parallel rank
    placement_group: int | None  # index of its placement group (None: tp 1, the actor asks for a GPU itself)
    bundles: tuple[int, ...]  # bundle indices in that group, rank order (empty for tp 1)
    strategy: str | None  # the group's strategy ("STRICT_PACK"), None for tp 1


@dataclass(frozen=True)
class GpuLayout:
    nodes: int
    gpus_per_node: int
    tp: int
    slots: tuple[EngineSlot, ...]

    @property
    def used(self) -> int:
        return sum(len(s.gpus) for s in self.slots)

    def as_dict(self) -> dict:
        return {"nodes": self.nodes, "gpus_per_node": self.gpus_per_node, "tensor_parallel_size": self.tp,
                "data_parallel_size": len(self.slots), "gpus_used": self.used,
                "gpus_total": self.nodes * self.gpus_per_node, "engines": [asdict(s) for s in self.slots]}

    def render(self) -> str:
        total = self.nodes * self.gpus_per_node
        head = (f"{self.nodes} node(s) x {self.gpus_per_node} GPU(s), tensor_parallel_size {self.tp}: "
                f"{len(self.slots)} engine(s) (data parallel {len(self.slots)} x tensor parallel {self.tp}), "
                f"{self.used} of {total} GPUs used")
        lines = [head, ""]
        rows = [("engine", "node", "GPUs on node", "placement group", "bundles", "Ray resources")]
        for s in self.slots:
            if s.placement_group is None:
                rows.append((str(s.replica), str(s.node), ",".join(map(str, s.gpus)), "none", "-",
                             "actor: GPU 1, CPU 1"))
            else:
                rows.append((str(s.replica), str(s.node), ",".join(map(str, s.gpus)),
                             f"pg{s.placement_group} {s.strategy}", ",".join(map(str, s.bundles)),
                             f"{self.tp} x {{GPU 1, CPU 1}}; actor GPU 0, CPU 0; vLLM: 1 worker per bundle"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        idle = total - self.used
        if idle:
            lines += ["", f"{idle} GPU(s) left idle"]
        return "\n".join(lines)


def plan_gpu_layout(nodes: int, gpus_per_node: int, tp: int = 1, replicas: int | None = None) -> GpuLayout:
    """The layout of ``replicas`` engines of ``tp`` GPUs each on ``nodes`` equal nodes (see the
    module doc); ``ValueError`` naming the setting when it cannot fit."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes and gpus_per_node must be at least 1, got {nodes} and {gpus_per_node}")
    if tp < 1:
        raise ValueError(f"tensor_parallel_size must be at least 1, got {tp}")
    if tp > gpus_per_node:
        raise ValueError(f"tensor_parallel_size {tp} > {gpus_per_node} GPUs per node: a tensor-parallel group is one "
                         f"STRICT_PACK placement group on one node; lower tensor_parallel_size")
    fit = nodes * (gpus_per_node // tp)
    count = fit if replicas is None else replicas
    if count < 1 or count > fit:
        raise ValueError(f"{count} replica(s) of tensor_parallel_size {tp} do not fit {nodes} node(s) x "
                         f"{gpus_per_node} GPUs: at most {fit}")
    free = [list(range(gpus_per_node)) for _ in range(nodes)]  # free GPU positions per node
    load = [0] * nodes  # replicas per node so far
    slots = []
    for r in range(count):
        if tp == 1:
            node = min((n for n in range(nodes) if free[n]), key=lambda n: ((load[n] + 1) / gpus_per_node, n))
        else:
            node = min((n for n in range(nodes) if len(free[n]) >= tp), key=lambda n: (-len(free[n]), n))
        gpus = tuple(free[node][:tp])
        del free[node][:tp]
        load[node] += 1
        if tp == 1:
            slots.append(EngineSlot(r, node, gpus, None, (), None))
        else:
            slots.append(EngineSlot(r, node, gpus, r, tuple(range(tp)), "STRICT_PACK"))
    return GpuLayout(nodes, gpus_per_node, tp, tuple(slots))
