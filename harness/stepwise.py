"""The stepwise driver: runs a stepwise strategy over one work unit, in the engine's process
(inside the Ray actor, so no per-step RPC).

The strategy's ``decode`` does the token loop over the :class:`strategies.base.StepEngine`
interface (``Engine.next_token``): every live sequence and candidate of the unit goes into
one batched engine call per token step, as token-id prompts with prefix caching, and
nothing is detokenized until the end. This module supplies the unit's stop conditions
(EOS ids, stop strings, ``max_tokens``), detokenizes the finished samples once, and turns
each :class:`strategies.base.Decoded` into report columns (per-step ``steps`` traces,
WSP's possibility metrics, engine requests and cached/computed token counts).

Strategies that run a whole unit themselves (beam search through vLLM's
``LLM.beam_search``) define ``run_unit(engine, unit, todo)`` and are handed the unit.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

Todo = list[tuple[dict[str, Any], list[int]]]


def make_stop_check(decode: Callable[[Sequence[int]], str], stops: Sequence[str]) -> Callable[[list[int]], bool] | None:
    """A per-step stop-string test that detokenizes only a short tail of the generated ids
    (enough tokens to hold the longest stop string even at one byte per token)."""
    stops = [s for s in stops if s]
    if not stops:
        return None
    span = 4 * max(len(s.encode()) for s in stops) + 4

    def check(generated: list[int]) -> bool:
        tail = decode(generated[-span:])
        return any(s in tail for s in stops)

    return check


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The completion up to (not including) the earliest stop string, as vLLM returns it."""
    cut = len(text)
    for s in stops:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def apply_decoded(row: dict[str, Any], dec: Any, text: str) -> None:
    m = dec.metrics
    row.update(
        completion=text, completion_tokens=len(dec.token_ids), finish_reason=dec.finish_reason,
        latency_s=m.get("latency_s"), engine_requests=dec.engine_requests, cached_tokens=dec.cached_tokens,
        computed_tokens=dec.computed_tokens, steps=dec.steps or None,
        mean_log_possibilities=m.get("mean_log_possibilities"), left_greedy_share=m.get("left_greedy_share"),
        mean_candidates=m.get("mean_candidates"),
    )


def run_stepwise(engine: Any, unit: Any, strategy: Any, todo: Todo) -> None:
    """Decode every (row, prompt ids) of ``todo`` with ``strategy`` and fill the rows."""
    if not todo:
        return
    if hasattr(strategy, "run_unit"):
        strategy.run_unit(engine, unit, todo)
        return
    stops = list(getattr(unit, "stop", ()) or ())
    stop_check = make_stop_check(engine.decode, stops)
    t0 = time.perf_counter()
    try:
        decoded = strategy.decode(engine, [ids for _, ids in todo], max_tokens=unit.strategy.max_tokens,
                                  seeds=[row["seed"] for row, _ in todo],
                                  stop_token_ids=frozenset(engine.eos_token_ids), stop_check=stop_check)
    except Exception as exc:  # noqa: BLE001 - a failed unit becomes error rows, not a dead actor
        msg = f"stepwise strategy {strategy.name!r} failed: {type(exc).__name__}: {exc}"
        for row, _ in todo:
            row["error"] = msg
        return
    for (row, _), dec in zip(todo, decoded):
        text = engine.decode(dec.token_ids)
        if dec.finish_reason == "stop":
            text = cut_at_stop(text, stops)
        apply_decoded(row, dec, text)
        if row.get("latency_s") is None:
            row["latency_s"] = time.perf_counter() - t0


# ---- exact nucleus counts inside the engine ------------------------------------------------------

#: ``SamplingParams.extra_args`` key: the request wants its top-p nucleus size counted.
NUCLEUS_ARG = "deceval_nucleus_p"
#: The V1 logits processor's FQCN, for ``LLM(logits_processors=[...])``.
NUCLEUS_PROCESSOR = "harness.stepwise:NucleusCountProcessor"


def _build_nucleus_processor():
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
    """
    import torch
    from vllm.v1.sample.logits_processor import LogitsProcessor
    from vllm.v1.sample.logits_processor.builtin import process_dict_updates

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
            lp = torch.log_softmax(logits[idx].to(torch.float32), dim=-1)
            vocab = lp.shape[1]
            # Sorted probabilities are exp(sorted logprobs): sort in float32 (cheap), exp and sum
            # in float64. Short heads first (exact: the top-k values are the first k of the
            # full sort); only rows whose head does not reach p go on to a longer one.
            n = torch.full((len(rows),), vocab, dtype=torch.long, device=logits.device)
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
            n = n.clamp(1, logits.shape[1])
            logits[idx] = float("-inf")
            logits[idx, n - 1] = 0.0
            return logits

    NucleusCountProcessor.__module__ = __name__
    NucleusCountProcessor.__qualname__ = "NucleusCountProcessor"
    return NucleusCountProcessor


_NUCLEUS_CLASS = None


def __getattr__(name: str) -> Any:
    # Built on first access, so importing this module needs neither vllm nor torch.
    global _NUCLEUS_CLASS
    if name == "NucleusCountProcessor":
        if _NUCLEUS_CLASS is None:
            _NUCLEUS_CLASS = _build_nucleus_processor()
        return _NUCLEUS_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
