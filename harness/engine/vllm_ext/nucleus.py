"""The V1 logits processor that counts exact top-p nucleus sizes in the engine.

For each request whose ``extra_args`` carry ``deceval_nucleus_p = p``, it computes the
raw log-softmax of the row (float32, as vLLM's ``raw_logprobs``), sorts the
probabilities (float64) descending and counts the shortest head whose cumulative mass
reaches p: N, exact, over the whole vocabulary. It then rewrites that row's logits to a
one-hot at token id N - 1, so a greedy request "samples" N - 1: the count comes back as
the sampled token, and only ``top_k`` logprobs cross the process boundary instead of
the whole vocabulary. Returned logprobs stay raw (vLLM takes them before logits
processors in ``raw_logprobs`` mode). Other requests are untouched.

Only the V1 model runner runs V1 logits processors: the CPU build does; the CUDA
build's default "model runner V2" rejects them unless ``VLLM_USE_V2_MODEL_RUNNER=0``
(vLLM's CUDA build was not available to test); the engine falls back to
full-vocabulary flat logprobs there. ``apply`` itself is plain torch and gave the same
counts on an H200 as on the CPU and in numpy (``scripts/cuda_tensor_check.py``).

vLLM loads this class in its model-runner process by its name
(``harness.engine.vllm_ext.NUCLEUS_PROCESSOR``); nothing else imports this module.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from harness.engine.vllm_ext import NUCLEUS_ARG


def nucleus_counts(lp: torch.Tensor, ps: torch.Tensor) -> torch.Tensor:
    """The exact top-p nucleus size of each row of float32 logprobs ``lp`` for its ``ps``
    (float64): :func:`strategies.distributions.nucleus_size`, row by row; also used by the
    sampler processor's dynamic top-p."""
    vocab = lp.shape[1]
    # Sorted probabilities are exp(sorted logprobs): sort in float32 (cheap), exp and sum
    # in float64. Short heads first (exact: the top-k values are the first k of the
    # full sort); only rows whose head does not reach p go on to a longer one.
    n = torch.full((lp.shape[0],), vocab, dtype=torch.long, device=lp.device)
    whole = ps >= 1.0  # p = 1: the whole support
    if whole.any():
        n[whole] = torch.isfinite(lp[whole]).sum(dim=-1)
    todo = (~whole).nonzero().flatten()
    for head in (64, 1024, vocab):
        if not todo.numel():
            break
        head = min(head, vocab)
        sub = lp[todo]
        vals = (torch.topk(sub, head, dim=-1, sorted=True).values if head < vocab
                else torch.sort(sub, dim=-1, descending=True).values)
        c = torch.cumsum(torch.exp(vals.to(torch.float64)), dim=-1)
        hit = c[:, -1] >= ps[todo]
        if hit.any():
            n[todo[hit]] = torch.searchsorted(c[hit], ps[todo][hit, None].contiguous(), right=False)[:, 0] + 1
        todo = todo[~hit]  # left over after the full sort (rounding): the whole vocabulary
    return n.clamp(1, vocab)


class NucleusCountProcessor(LogitsProcessor):
    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
        self.device = device
        self.reqs: dict[int, float] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the greedy token of the rows it counts

    def update_state(self, batch_update: Any) -> None:
        process_dict_updates(self.reqs, batch_update,
                             lambda params, _p, _o: (params.extra_args or {}).get(NUCLEUS_ARG))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.reqs:
            return logits
        rows = sorted(r for r in self.reqs if r < logits.shape[0])
        if not rows:
            return logits
        idx = torch.tensor(rows, dtype=torch.long, device=logits.device)
        ps = torch.tensor([self.reqs[r] for r in rows], dtype=torch.float64, device=logits.device)
        n = nucleus_counts(torch.log_softmax(logits[idx].to(torch.float32), dim=-1), ps)
        logits[idx] = float("-inf")
        logits[idx, n - 1] = 0.0
        return logits
