"""The V1 logits processor that counts exact top-p nucleus sizes in the engine.

For each request whose ``extra_args`` carry ``deceval_nucleus_p = p``, it computes the
raw log-softmax of the row (float32, as vLLM's ``raw_logprobs``), sorts the
probabilities (float64) descending and counts the shortest head whose cumulative mass
reaches p: N, exact, over the whole vocabulary. It then rewrites that row's logits to a
one-hot at token id N - 1, so a greedy request "samples" N - 1: the count comes back as
the sampled token, and only ``top_k`` logprobs cross the process boundary instead of
the whole vocabulary. Returned logprobs stay raw (vLLM takes them before logits
processors in ``raw_logprobs`` mode). Other requests are untouched.

The count itself is :func:`harness.engine.vllm_ext.rules.apply_nucleus`, shared with the V2
model runner's twin (:class:`harness.engine.vllm_ext.v2.NucleusCountProcessorV2`); this class
only follows vLLM V1's batch rows. The engine registers the twin that matches the model
runner vLLM chose (``harness.engine.engine.Engine``): V1 on the CPU build, V2 by default on
CUDA. ``apply`` itself is plain torch and gave the same counts on an H200 as on the CPU and
in numpy (``scripts/cuda_tensor_check.py``).

vLLM loads this class in its model-runner process by its name
(``harness.engine.vllm_ext.NUCLEUS_PROCESSOR``); nothing else imports this module.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from harness.engine.vllm_ext import NUCLEUS_ARG
from harness.engine.vllm_ext.rules import apply_nucleus, nucleus_counts, nucleus_p_of

__all__ = ["NucleusCountProcessor", "nucleus_counts"]


class NucleusCountProcessor(LogitsProcessor):
    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
        self.device = device
        self.reqs: dict[int, float] = {}  # batch row -> its request's nucleus p

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the greedy token of the rows it counts

    def update_state(self, batch_update: Any) -> None:
        process_dict_updates(self.reqs, batch_update, lambda params, _p, _o: nucleus_p_of(params.extra_args, NUCLEUS_ARG))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        rows = sorted(r for r in self.reqs if r < logits.shape[0])
        return apply_nucleus(logits, rows, [self.reqs[r] for r in rows])
