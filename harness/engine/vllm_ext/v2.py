"""The two logits processors for vLLM's model runner V2 (the default on CUDA): twins of
:mod:`.nucleus` and :mod:`.samplers` on V2's interface
(:mod:`vllm.v1.worker.gpu.sample.logits_processor`). The counts and masks are computed by
:mod:`.rules`, the code the V1 processors call; only the bookkeeping differs.

V2's model of a batch (``interface.py``), and what these classes assume of it:

- A request lives in a persistent slot (``req_idx``) from ``add_request`` until the slot is
  handed to another request; V2 says nothing when a request finishes or is preempted, so a
  slot's previous occupant is dropped (or, for the samplers, parked) at the next
  ``add_request`` of that slot.
- Every step, ``apply(logits, ctx)`` gets the whole batch; logits row ``i`` belongs to slot
  ``ctx.expanded_idx_mapping[i]`` (``ctx.idx_mapping_np`` on the host when there is one row
  per request, i.e. without speculative decoding, which the harness never turns on). Rows
  are reordered from step to step; the slot is the identity.
- A slot's committed tokens are ``req_states.all_token_ids[slot, :total_len[slot]]``, its
  prompt the first ``prompt_len[slot]`` of them (valid once the runner has flushed its staged
  writes, before ``apply``). The token sampled from a row is appended there before the next
  step's ``apply``.
- A preempted request comes back through ``add_request`` in a new (or the same) slot with
  its partial output already in its tokens.

Guarantees under these assumptions (the tests in ``tests/engine/vllm_ext/test_v2.py`` drive
vLLM's own ``RequestState`` and V2 ``Sampler`` to check them):

- a row's count or mask equals the V1 processor's and the numpy reference's on the same
  logits;
- a sampler request's ``out`` equals its generated tokens at every ``apply``, so Mirostat's
  mu and dynamic top-p's p follow the same tokens as on V1;
- a re-added request whose history (prompt and output) matches a state seen before gets a
  copy of that state (the state is a function of the history), so preemption does not reset
  mu; a new request with no output always starts fresh.

Reading ``total_len`` and the new tokens costs one small device-to-host copy per step for
the rows that carry a sampler rule (none for the nucleus counter, none when no row asks).

vLLM loads these classes by name in its model-runner process (and in the front end, to
validate request arguments): :data:`harness.engine.vllm_ext.NUCLEUS_PROCESSOR_V2`,
:data:`harness.engine.vllm_ext.SAMPLER_PROCESSOR_V2`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

from harness.engine.vllm_ext import NUCLEUS_ARG
from harness.engine.vllm_ext.rules import (SamplerRequest, apply_nucleus, apply_rules, new_request, nucleus_p_of,
                                           sampler_spec, validate_sampler_spec)

#: States of requests whose slot was handed on, kept for their return (oldest dropped first).
PARKED_MAX = 4096


def _row_slots(logits: Any, ctx: Any) -> np.ndarray:
    """The slot of each logits row, on the host (a copy of the device mapping only when rows
    are expanded, i.e. under speculative decoding)."""
    if logits.shape[0] == len(ctx.idx_mapping_np):
        return np.asarray(ctx.idx_mapping_np)
    return ctx.expanded_idx_mapping.cpu().numpy()


class NucleusCountProcessorV2(LogitsProcessor):
    """:class:`harness.engine.vllm_ext.nucleus.NucleusCountProcessor` on the V2 runner: the row of a
    request that carries ``deceval_nucleus_p`` becomes a one-hot at N - 1."""

    def __init__(self, vllm_config: Any, req_states: Any) -> None:
        self.ps = np.full(req_states.max_num_reqs, np.nan)  # slot -> its request's nucleus p (nan: none)

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        p = nucleus_p_of(sampling_params.extra_args, NUCLEUS_ARG)
        self.ps[req_idx] = np.nan if p is None else p
        return p is not None

    def apply(self, logits: Any, ctx: Any) -> Any:
        if np.isnan(self.ps[ctx.idx_mapping_np]).all():
            return logits  # no row asks: no device work, no copy
        ps = self.ps[_row_slots(logits, ctx)]
        rows = np.flatnonzero(~np.isnan(ps))
        return apply_nucleus(logits, rows.tolist(), ps[rows].tolist())


class SamplerProcessorV2(LogitsProcessor):
    """:class:`harness.engine.vllm_ext.samplers.SamplerProcessor` on the V2 runner (see the module doc)."""

    def __init__(self, vllm_config: Any, req_states: Any) -> None:
        self.req_states = req_states  # the runner's token buffers (read only)
        self.reqs: dict[int, SamplerRequest] = {}  # slot -> its request's rule and state
        self.pending: set[int] = set()  # slots added since their last apply: state found at first apply
        self.parked: OrderedDict[int, SamplerRequest] = OrderedDict()  # id -> state of a request whose slot moved on

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        validate_sampler_spec(sampling_params.extra_args)

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        old = self.reqs.pop(req_idx, None)
        if old is not None and req_idx not in self.pending:
            self._park(old)
        self.pending.discard(req_idx)
        req = new_request(sampling_params.extra_args, [])
        if req is None:
            return False
        self.reqs[req_idx] = req
        self.pending.add(req_idx)
        return True

    def _park(self, req: SamplerRequest) -> None:
        self.parked[id(req)] = req
        while len(self.parked) > PARKED_MAX:
            self.parked.popitem(last=False)

    def apply(self, logits: Any, ctx: Any) -> Any:
        if not self.reqs:
            return logits
        slots = _row_slots(logits, ctx)
        rows = [i for i, s in enumerate(slots.tolist()) if s in self.reqs]
        if not rows:
            return logits
        mine = [int(slots[i]) for i in rows]
        self._sync_outputs(sorted(set(mine)))
        return apply_rules(logits, rows, [self.reqs[s] for s in mine])

    # ---- the requests' generated tokens, from the runner's buffers ---------------------------

    def _sync_outputs(self, slots: list[int]) -> None:
        """Bring each slot's ``out`` up to its committed tokens: one copy of the slots' total
        lengths and last tokens; a longer read only for a slot's first step or a jump."""
        rs = self.req_states
        idx = np.asarray(slots, dtype=np.int64)
        idx_dev = torch.as_tensor(idx, device=rs.total_len.gpu.device)
        total_dev = rs.total_len.gpu[idx_dev]
        last_dev = rs.all_token_ids.gpu[idx_dev.to(rs.all_token_ids.gpu.device), (total_dev.long() - 1).clamp(min=0).to(rs.all_token_ids.gpu.device)]
        total = total_dev.cpu().numpy()
        last = last_dev.cpu().numpy()
        prompt = rs.prompt_len.np[idx]
        for j, slot in enumerate(slots):
            req = self.reqs[slot]
            n_out = int(total[j] - prompt[j])
            if slot in self.pending:
                self.pending.discard(slot)
                self.reqs[slot] = self._first_step(req, slot, int(prompt[j]), int(total[j]))
            elif n_out == len(req.out) + 1:
                req.out.append(int(last[j]))
            elif n_out != len(req.out):
                tokens = rs.all_token_ids.gpu[slot, int(prompt[j]):int(total[j])].cpu().tolist()
                req.out[:] = [int(t) for t in tokens]

    def _first_step(self, req: SamplerRequest, slot: int, prompt_len: int, total: int) -> SamplerRequest:
        """A just-added request: its prompt's key, its output so far (a re-added request has
        some), and, for a re-added one, the state of an earlier request with its history."""
        tokens = [int(t) for t in self.req_states.all_token_ids.gpu[slot, :total].cpu().tolist()]
        req.prompt_key = hash(tuple(tokens[:prompt_len]))
        req.out = tokens[prompt_len:]
        if not req.out:
            return req
        found = self._match(req)
        return req if found is None else found

    def _match(self, req: SamplerRequest) -> SamplerRequest | None:
        """A state for ``req`` from a request with the same rule, arguments and history: seen
        up to the last token (the one drawn from its last row) or up to the end."""
        for other in [*self.parked.values(), *self.reqs.values()]:
            if other is req or other.prompt_key != req.prompt_key or other.rule != req.rule or other.args != req.args:
                continue
            if other.out[:other.seen] == req.out[:other.seen] and other.seen in (len(req.out) - 1, len(req.out)):
                return other.copy_for(list(req.out))
        return None


__all__ = ["NucleusCountProcessorV2", "SamplerProcessorV2", "sampler_spec"]
