"""The V1 logits processor that runs the stepwise samplers inside vLLM's batched ``generate``.

A request whose ``SamplingParams.extra_args`` carry ``deceval_sampler = {"rule": ..., ...}``
(see :data:`strategies.base.SAMPLER_ARG`, built by each sampler's ``processor_args``) gets
its rule applied to its logits row at every step; every other request is untouched. The
processor only masks: tokens outside the rule's kept set become ``-inf``, and vLLM's own
seeded sampling draws from the rest at temperature 1. Nothing leaves the engine per step.

The rules and their per-request state live in :mod:`harness.engine.vllm_ext.rules`, shared
with the V2 model runner's twin (:class:`harness.engine.vllm_ext.v2.SamplerProcessorV2`); this
class only follows vLLM V1's batch rows (``BatchUpdate``: removed, added, moved). The rules
are the ones of :mod:`strategies.stepwise` (the numpy classes stay the reference).

- ``typical``, ``epsilon``, ``eta``: stateless masks;
- ``mirostat`` (v2): mu per request, starting at 2 tau; when the request's output list has
  grown by the token drawn from the previous row, mu <- mu - eta (s - tau) with s that
  token's surprise under the previous step's renormalised kept set;
- ``dynamic_top_p``: the threshold p per request, updated from the request's own output
  tokens (the n-gram repeat check) once per new token, then the top-p nucleus under p.

The output list each request brings in its batch update is vLLM's live list of its
generated tokens, so the state follows the request without any message from the driver.
A request that is preempted and re-added keeps its state (parked by its output list).

Loaded by vLLM by name (:data:`harness.engine.vllm_ext.SAMPLER_PROCESSOR`) in its
model-runner process; nothing else imports this module but its tests.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from harness.engine.vllm_ext.rules import (RULES, SamplerRequest, apply_rules, epsilon_keep, eta_keep, mirostat_keep,
                                           new_request, nucleus_keep, typical_keep, validate_sampler_spec)

__all__ = ["SamplerProcessor", "RULES", "PARKED_MAX", "epsilon_keep", "eta_keep", "mirostat_keep", "nucleus_keep",
           "typical_keep"]

#: Preempted requests whose state is kept for their return (oldest dropped first).
PARKED_MAX = 4096


class SamplerProcessor(LogitsProcessor):
    """Applies each opted-in request's sampling rule to its logits row (see the module doc)."""

    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
        self.device = device
        self.reqs: dict[int, SamplerRequest] = {}  # batch row -> its request's rule and state
        self.parked: OrderedDict[int, SamplerRequest] = OrderedDict()  # id(out) -> state of a removed request

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        validate_sampler_spec(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False  # a mask can remove the top token's rivals only, but mirostat/eta keep it: still, be exact

    def update_state(self, batch_update: Any) -> None:
        if not batch_update:
            return
        for index in batch_update.removed:
            req = self.reqs.pop(index, None)
            if req is not None:
                self._park(req)
        for index, params, _prompt, out in batch_update.added:
            old = self.reqs.pop(index, None)
            if old is not None:
                self._park(old)
            back = self.parked.pop(id(out), None)
            req = back if back is not None and back.out is out else new_request(params.extra_args, out)
            if req is not None:
                self.reqs[index] = req
        for a, b, direction in batch_update.moved:
            ra, rb = self.reqs.pop(a, None), self.reqs.pop(b, None)
            if ra is not None:
                self.reqs[b] = ra
            if rb is not None and direction.name == "SWAP":
                self.reqs[a] = rb

    def _park(self, req: SamplerRequest) -> None:
        self.parked[id(req.out)] = req
        while len(self.parked) > PARKED_MAX:
            self.parked.popitem(last=False)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        rows = sorted(r for r in self.reqs if r < logits.shape[0])
        return apply_rules(logits, rows, [self.reqs[r] for r in rows])
