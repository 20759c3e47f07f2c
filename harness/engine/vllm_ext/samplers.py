"""The V1 logits processor that runs the stepwise samplers inside vLLM's batched ``generate``.

A request whose ``SamplingParams.extra_args`` carry ``deceval_sampler = {"rule": ..., ...}``
(see :data:`strategies.base.SAMPLER_ARG`, built by each sampler's ``processor_args``) gets
its rule applied to its logits row at every step; every other request is untouched. The
processor only masks: tokens outside the rule's kept set become ``-inf``, and vLLM's own
seeded sampling draws from the rest at temperature 1. Nothing leaves the engine per step.

The rules are the ones of :mod:`strategies.stepwise` (the numpy classes stay the
reference), vectorised over the rows of one rule with torch, computed the same way: the
row's float32 log-softmax (vLLM's raw logprobs), then float64 probabilities.

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

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from harness.engine.vllm_ext.nucleus import nucleus_counts
from strategies.base import SAMPLER_ARG
from strategies.stepwise import DynamicTopPWarper

LN2 = math.log(2.0)
#: Preempted requests whose state is kept for their return (oldest dropped first).
PARKED_MAX = 4096


@dataclass
class _Request:
    rule: str
    args: dict[str, Any]
    out: list[int]  # vLLM's live list of this request's generated tokens
    seen: int = 0  # len(out) when the state last moved on
    state: float = 0.0  # mirostat: mu; dynamic_top_p: p
    prev: torch.Tensor | None = field(default=None, repr=False)  # mirostat: last row's float32 logprobs
    prev_mass: float = 1.0  # mirostat: the kept mass of that row
    warper: DynamicTopPWarper | None = None  # dynamic_top_p: the numpy rule that moves p


def _new_request(params: Any, out: list[int]) -> _Request | None:
    spec = (params.extra_args or {}).get(SAMPLER_ARG)
    if not spec:
        return None
    args = {k: v for k, v in spec.items() if k != "rule"}
    req = _Request(rule=spec["rule"], args=args, out=out)
    if req.rule == "mirostat":
        req.state = 2.0 * float(args["tau"])
    elif req.rule == "dynamic_top_p":
        req.state = float(args["top_p"])
        req.warper = DynamicTopPWarper(args["top_p"], args["max_top_p"], args["increase"], args["decay"],
                                       args["window"], args["ngram"])
    return req


# ---- the rules, over a block of rows (float64 logprobs, float64 probabilities) --------------


def _entropy(lp: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # p log p over p > 0: a banned token (p = 0, log p = -inf) gives NaN, counted as 0
    return -torch.nan_to_num_(p * lp, nan=0.0).sum(dim=-1)


def _with_top(mask: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
    return mask | (lp >= lp.max(dim=-1, keepdim=True).values)  # the most likely token always stays


def epsilon_keep(lp: torch.Tensor, p: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return _with_top(p >= eps[:, None], lp)


def eta_keep(lp: torch.Tensor, p: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    thr = torch.minimum(eps, torch.sqrt(eps) * torch.exp(-_entropy(lp, p)))
    return _with_top(p >= thr[:, None], lp)


def mirostat_keep(lp: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return _with_top((-lp / LN2) <= mu[:, None], lp)


def _heads(vocab: int) -> tuple[int, ...]:
    # Growing top-k heads: a top-k's values are the first k of the full sort, and a top-8192
    # costs about a quarter of a full sort of SmolLM2's 49152 logits.
    return tuple(h for h in (64, 1024, 8192) if h < vocab) + (vocab,)


def typical_keep(lp: torch.Tensor, p: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Sort by |-log p - H| ascending, keep the shortest head reaching ``mass`` (ties at the
    cut kept). The head is found with growing top-k heads: exact, since a top-k's values
    are the first k of the full sort."""
    rows, vocab = lp.shape
    shifted = torch.abs(-lp - _entropy(lp, p)[:, None])
    total = p.sum(dim=-1, keepdim=True)  # q = p / total, divided on the head only: the same values
    thr = torch.empty(rows, dtype=lp.dtype, device=lp.device)
    todo = torch.arange(rows, device=lp.device)
    for head in _heads(vocab):
        if not todo.numel():
            break
        vals, idx = torch.topk(shifted[todo], head, dim=-1, largest=False, sorted=True)
        c = torch.cumsum(torch.gather(p[todo], 1, idx) / total[todo], dim=-1)
        done = (c[:, -1] >= mass[todo]) | (head == vocab)
        last = torch.clamp((c[done] < mass[todo][done, None]).sum(dim=-1), max=vocab - 1)
        thr[todo[done]] = torch.gather(vals[done], 1, torch.clamp(last, max=head - 1)[:, None])[:, 0]
        todo = todo[~done]
    return shifted <= thr[:, None]  # holds the most typical token too: thr is at least its value


def nucleus_keep(lp: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """The top-p nucleus of float32 logprobs (its size counted as the nucleus counter counts
    it), ties at the cut broken by lower token id, as :func:`strategies.distributions.top_tokens`."""
    n = nucleus_counts(lp, top_p)
    kth = torch.gather(torch.sort(lp, dim=-1, descending=True).values if (n > 1024).any() else
                       torch.topk(lp, int(n.max()), dim=-1, sorted=True).values, 1, (n - 1)[:, None])
    above = lp > kth
    ties = lp == kth
    need = n - above.sum(dim=-1)
    return above | (ties & (torch.cumsum(ties.to(torch.long), dim=-1) <= need[:, None]))


class SamplerProcessor(LogitsProcessor):
    """Applies each opted-in request's sampling rule to its logits row (see the module doc)."""

    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
        self.device = device
        self.reqs: dict[int, _Request] = {}  # batch row -> its request's rule and state
        self.parked: OrderedDict[int, _Request] = OrderedDict()  # id(out) -> state of a removed request

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        spec = (sampling_params.extra_args or {}).get(SAMPLER_ARG)
        if spec and spec.get("rule") not in RULES:
            raise ValueError(f"{SAMPLER_ARG}: unknown rule {spec.get('rule')!r}; one of {', '.join(RULES)}")

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
            req = back if back is not None and back.out is out else _new_request(params, out)
            if req is not None:
                self.reqs[index] = req
        for a, b, direction in batch_update.moved:
            ra, rb = self.reqs.pop(a, None), self.reqs.pop(b, None)
            if ra is not None:
                self.reqs[b] = ra
            if rb is not None and direction.name == "SWAP":
                self.reqs[a] = rb

    def _park(self, req: _Request) -> None:
        self.parked[id(req.out)] = req
        while len(self.parked) > PARKED_MAX:
            self.parked.popitem(last=False)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.reqs:
            return logits
        by_rule: dict[str, list[int]] = {}
        for row, req in self.reqs.items():
            if row < logits.shape[0]:
                by_rule.setdefault(req.rule, []).append(row)
        for rule, rows in by_rule.items():
            rows.sort()
            idx = torch.tensor(rows, dtype=torch.long, device=logits.device)
            lp32 = torch.log_softmax(logits[idx].to(torch.float32), dim=-1)
            reqs = [self.reqs[r] for r in rows]
            keep = RULES[rule](self, reqs, lp32)
            logits[idx] = torch.where(keep, logits[idx], torch.full_like(logits[idx], float("-inf")))
        return logits

    # ---- one rule over its rows --------------------------------------------------------------

    def _column(self, reqs: list[_Request], key: str) -> torch.Tensor:
        return torch.tensor([float(r.args[key]) for r in reqs], dtype=torch.float64, device=self.device)

    def _typical(self, reqs: list[_Request], lp32: torch.Tensor) -> torch.Tensor:
        lp = lp32.to(torch.float64)
        return typical_keep(lp, torch.exp(lp), self._column(reqs, "typical_p"))

    def _epsilon(self, reqs: list[_Request], lp32: torch.Tensor) -> torch.Tensor:
        lp = lp32.to(torch.float64)
        return epsilon_keep(lp, torch.exp(lp), self._column(reqs, "epsilon"))

    def _eta(self, reqs: list[_Request], lp32: torch.Tensor) -> torch.Tensor:
        lp = lp32.to(torch.float64)
        return eta_keep(lp, torch.exp(lp), self._column(reqs, "epsilon"))

    def _mirostat(self, reqs: list[_Request], lp32: torch.Tensor) -> torch.Tensor:
        for r in reqs:
            if len(r.out) > r.seen and r.prev is not None:  # the token drawn from the previous row
                tok = r.out[r.seen]
                renorm = math.exp(float(r.prev[tok])) / r.prev_mass
                r.state -= float(r.args["eta"]) * (-math.log2(renorm) - float(r.args["tau"]))
            r.seen = len(r.out)
        lp = lp32.to(torch.float64)
        keep = mirostat_keep(lp, torch.tensor([r.state for r in reqs], dtype=torch.float64, device=lp.device))
        mass = torch.where(keep, torch.exp(lp), torch.zeros_like(lp)).sum(dim=-1)
        for i, r in enumerate(reqs):
            r.prev, r.prev_mass = lp32[i].clone(), float(mass[i])
        return keep

    def _dynamic_top_p(self, reqs: list[_Request], lp32: torch.Tensor) -> torch.Tensor:
        for r in reqs:
            if len(r.out) > r.seen:
                r.state = r.warper.next_p(r.state, r.out)
                r.seen = len(r.out)
        return nucleus_keep(lp32, torch.tensor([r.state for r in reqs], dtype=torch.float64, device=lp32.device))


RULES = {"typical": SamplerProcessor._typical, "epsilon": SamplerProcessor._epsilon, "eta": SamplerProcessor._eta,
         "mirostat": SamplerProcessor._mirostat, "dynamic_top_p": SamplerProcessor._dynamic_top_p}
