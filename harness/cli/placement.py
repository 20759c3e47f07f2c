"""``deceval placement``: the data-parallel x tensor-parallel layout of GPU engines on a
cluster, on paper (:mod:`harness.driver.gpu_layout`): which node, GPUs and placement-group
bundles each engine gets. Starts nothing; needs no Ray, vLLM or GPU."""

from __future__ import annotations

import argparse
import json

from harness.driver.gpu_layout import plan_gpu_layout
from harness.errors import DecevalError


def _cmd_placement(args: argparse.Namespace) -> int:
    try:
        layout = plan_gpu_layout(args.nodes, args.gpus_per_node, args.tp, args.replicas)
    except ValueError as exc:
        raise DecevalError(str(exc)) from exc
    print(json.dumps(layout.as_dict(), indent=2) if args.json else layout.render())
    return 0


def add_placement_command(sub: "argparse._SubParsersAction") -> None:
    """Add the ``placement`` subparser."""
    p = sub.add_parser("placement", help="print which node, GPUs and placement-group bundles each GPU engine would get "
                                         "(data parallel x tensor parallel), without starting anything")
    p.add_argument("--nodes", type=int, default=1, help="GPU nodes in the cluster (default 1)")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs on each node")
    p.add_argument("--tp", type=int, default=1, help="tensor_parallel_size of each engine (default 1)")
    p.add_argument("--replicas", type=int, default=None,
                   help="engine replicas (data parallel); default: as many as fit")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_cmd_placement)
