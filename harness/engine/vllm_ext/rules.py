"""The per-request rules of the in-engine logits processors, written once for both of vLLM's
model runners.

vLLM has two logits-processor interfaces: the V1 model runner's
(:mod:`vllm.v1.sample.logits_processor`, batch rows moved by ``BatchUpdate``s) and the V2
model runner's (:mod:`vllm.v1.worker.gpu.sample.logits_processor`, persistent request slots,
a ``LogitsContext`` per step). Each processor here is two thin adapters over this module:

- :mod:`.nucleus` (V1) and :class:`.v2.NucleusCountProcessorV2` call :func:`apply_nucleus`;
- :mod:`.samplers` (V1) and :class:`.v2.SamplerProcessorV2` call :func:`apply_rules`.

An adapter's only job is to say, for this step, which logits row belongs to which request
(and, for the samplers, to keep each request's :class:`SamplerRequest` with its generated
tokens in ``out``). Everything that decides a mask or a count is below, so the two runners
cannot drift apart. Nothing here imports vLLM; torch is imported by the processors' modules,
which vLLM loads in its model-runner process.

The rules are the ones of :mod:`strategies.stepwise` and :func:`strategies.distributions.nucleus_size`
(the numpy classes stay the reference), vectorised over the rows of one rule with torch and
computed the same way: the row's float32 log-softmax (vLLM's raw logprobs), then float64
probabilities.

Per-request state (Mirostat v2's mu, dynamic top-p's p) moves on when the request's output
list ``out`` has grown since the rule last saw it:

- ``mirostat``: mu <- mu - eta (s - tau), with s the surprise of the token drawn from the
  previous row under that row's renormalised kept set; mu starts at 2 tau;
- ``dynamic_top_p``: p from the request's own output tokens (the n-gram repeat check), once
  per new token.

Both states are a function of the request's token history alone (for a given model), which
is what lets a request that was preempted and re-added get its state back on either runner.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from strategies.base import SAMPLER_ARG
from strategies.stepwise import DynamicTopPWarper

LN2 = math.log(2.0)


# ---- the lookahead nucleus count -----------------------------------------------------------------


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


def apply_nucleus(logits: torch.Tensor, rows: Sequence[int], ps: Sequence[float]) -> torch.Tensor:
    """Replace each listed row by a one-hot at N - 1, N its top-p nucleus size for its p: the
    greedy token of that request is then N - 1. ``rows`` ascending; other rows untouched."""
    if not rows:
        return logits
    idx = torch.tensor(list(rows), dtype=torch.long, device=logits.device)
    p = torch.tensor(list(ps), dtype=torch.float64, device=logits.device)
    n = nucleus_counts(torch.log_softmax(logits[idx].to(torch.float32), dim=-1), p)
    logits[idx] = float("-inf")
    logits[idx, n - 1] = 0.0
    return logits


def nucleus_p_of(extra_args: Mapping[str, Any] | None, key: str) -> float | None:
    """The request's nucleus p (``extra_args[key]``), or None when it asks for no count."""
    p = (extra_args or {}).get(key)
    return None if p is None else float(p)


# ---- the samplers' masks, over a block of rows (float64 logprobs, float64 probabilities) ---------


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


# ---- a sampler request and its state ----------------------------------------------------------


@dataclass
class SamplerRequest:
    """One opted-in request: its rule, the rule's arguments and the rule's state.

    ``out`` is the request's list of generated tokens as its adapter keeps it: on the V1
    runner vLLM's own live list, on the V2 runner a list the adapter extends from the
    runner's token buffer before each step. ``prompt_key`` (V2) tells requests apart when a
    preempted one comes back."""

    rule: str
    args: dict[str, Any]
    out: list[int]
    seen: int = 0  # len(out) when the state last moved on
    state: float = 0.0  # mirostat: mu; dynamic_top_p: p
    prev: torch.Tensor | None = field(default=None, repr=False)  # mirostat: last row's float32 logprobs
    prev_mass: float = 1.0  # mirostat: the kept mass of that row
    warper: DynamicTopPWarper | None = None  # dynamic_top_p: the numpy rule that moves p
    prompt_key: Any = None

    def copy_for(self, out: list[int]) -> "SamplerRequest":
        """This state for another request with the same token history (a re-added one)."""
        twin = copy.copy(self)
        twin.out = out
        return twin


def sampler_spec(extra_args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The request's ``deceval_sampler`` argument, or None when it asks for no rule."""
    return (extra_args or {}).get(SAMPLER_ARG) or None


def validate_sampler_spec(extra_args: Mapping[str, Any] | None) -> None:
    """Refuse an unknown rule when the request arrives (both runners call this)."""
    spec = sampler_spec(extra_args)
    if spec and spec.get("rule") not in RULES:
        raise ValueError(f"{SAMPLER_ARG}: unknown rule {spec.get('rule')!r}; one of {', '.join(RULES)}")


def new_request(extra_args: Mapping[str, Any] | None, out: list[int]) -> SamplerRequest | None:
    """A fresh state for a request that asks for a rule (None for one that does not)."""
    spec = sampler_spec(extra_args)
    if not spec:
        return None
    args = {k: v for k, v in spec.items() if k != "rule"}
    req = SamplerRequest(rule=spec["rule"], args=args, out=out)
    if req.rule == "mirostat":
        req.state = 2.0 * float(args["tau"])
    elif req.rule == "dynamic_top_p":
        req.state = float(args["top_p"])
        req.warper = DynamicTopPWarper(args["top_p"], args["max_top_p"], args["increase"], args["decay"],
                                       args["window"], args["ngram"])
    return req


# ---- one rule over its rows -----------------------------------------------------------------


def _column(reqs: list[SamplerRequest], key: str, device: Any) -> torch.Tensor:
    return torch.tensor([float(r.args[key]) for r in reqs], dtype=torch.float64, device=device)


def _typical(reqs: list[SamplerRequest], lp32: torch.Tensor) -> torch.Tensor:
    lp = lp32.to(torch.float64)
    return typical_keep(lp, torch.exp(lp), _column(reqs, "typical_p", lp.device))


def _epsilon(reqs: list[SamplerRequest], lp32: torch.Tensor) -> torch.Tensor:
    lp = lp32.to(torch.float64)
    return epsilon_keep(lp, torch.exp(lp), _column(reqs, "epsilon", lp.device))


def _eta(reqs: list[SamplerRequest], lp32: torch.Tensor) -> torch.Tensor:
    lp = lp32.to(torch.float64)
    return eta_keep(lp, torch.exp(lp), _column(reqs, "epsilon", lp.device))


def _mirostat(reqs: list[SamplerRequest], lp32: torch.Tensor) -> torch.Tensor:
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


def _dynamic_top_p(reqs: list[SamplerRequest], lp32: torch.Tensor) -> torch.Tensor:
    for r in reqs:
        if len(r.out) > r.seen:
            r.state = r.warper.next_p(r.state, r.out)
            r.seen = len(r.out)
    return nucleus_keep(lp32, torch.tensor([r.state for r in reqs], dtype=torch.float64, device=lp32.device))


#: rule name -> (its requests, their rows' float32 logprobs) -> kept-token mask
RULES: dict[str, Callable[[list[SamplerRequest], torch.Tensor], torch.Tensor]] = {
    "typical": _typical, "epsilon": _epsilon, "eta": _eta, "mirostat": _mirostat, "dynamic_top_p": _dynamic_top_p}


def apply_rules(logits: torch.Tensor, rows: Sequence[int], reqs: Sequence[SamplerRequest]) -> torch.Tensor:
    """Mask each listed row with its request's rule (tokens outside the kept set become
    ``-inf``), rows of one rule in one block, in ascending row order; other rows untouched."""
    by_rule: dict[str, list[tuple[int, SamplerRequest]]] = {}
    for row, req in zip(rows, reqs):
        by_rule.setdefault(req.rule, []).append((row, req))
    for rule, pairs in by_rule.items():
        pairs.sort(key=lambda pr: pr[0])
        idx = torch.tensor([row for row, _ in pairs], dtype=torch.long, device=logits.device)
        lp32 = torch.log_softmax(logits[idx].to(torch.float32), dim=-1)
        keep = RULES[rule]([req for _, req in pairs], lp32)
        logits[idx] = torch.where(keep, logits[idx], torch.full_like(logits[idx], float("-inf")))
    return logits
