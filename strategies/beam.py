"""Beam search, two ways (``impl``):

- ``cached`` (the default): vLLM's beam search algorithm on the step driver. Each step asks
  the engine for the top ``2 * width`` next tokens of every live beam in one batched call
  (``StepEngine.next_token``); a beam's request extends the previous step's by one token,
  so prefix caching and the engine's tail cache leave about one new token to compute.
  Scoring, length penalty and EOS handling are those of ``LLM.beam_search``
  (vllm/entrypoints/generate/beam_search): candidates in beam order, each beam's tokens by
  rank; a candidate ending in EOS is completed, the rest sorted (stably) by
  cum_logprob / len ** length_penalty, where len counts the prompt and not a final EOS,
  and the best ``width`` go on; at the end the completed and live beams are sorted the
  same way and the best is the completion.
- ``vllm``: vLLM's own ``LLM.beam_search`` (an outer loop of one-token generates that
  recomputes each beam's partial last block), for comparison.

Neither knows stop strings: a completion is cut at the first stop string afterwards
(finish reason "stop").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from strategies.base import Params, StepEngine, Stops, StepwiseStrategy, check_choice, check_range, param

IMPLS = ("cached", "vllm")


@dataclass(frozen=True)
class BeamParams(Params):
    width: int = param(4, "beam width: how many partial sequences are kept per step")
    length_penalty: float = param(1.0, "vLLM's length penalty: beams ranked by logprob / length ** length_penalty")
    impl: str = param("cached", "cached: vLLM's algorithm on the step driver and the tail cache; vllm: LLM.beam_search")

    def validate(self) -> None:
        check_range("width", self.width, 1, None, integer=True)
        check_range("length_penalty", self.length_penalty, None, None)
        check_choice("impl", self.impl, IMPLS)


@dataclass
class Beam:
    tokens: list[int]  # prompt + generated, as vLLM's BeamSearchSequence
    cum_logprob: float = 0.0


@dataclass
class SearchResult:
    """One prompt's search: its final beams, best first, and what they cost."""
    beams: list[Beam]
    prompt_len: int
    engine_requests: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0


def score(beam: Beam, eos: frozenset[int], length_penalty: float) -> float:
    """vLLM's get_beam_search_score: a final EOS does not count towards the length."""
    n = len(beam.tokens) - (1 if beam.tokens[-1] in eos else 0)
    return beam.cum_logprob / (max(n, 1) ** length_penalty)


def beam_search(engine: StepEngine, prompts: Sequence[Sequence[int]], *, width: int, max_tokens: int,
                length_penalty: float = 1.0, eos: frozenset[int] = frozenset()) -> list[SearchResult]:
    """vLLM's beam search over ``engine.next_token``, every prompt's beams in one call per step."""
    results = [SearchResult([Beam(list(p))], len(p)) for p in prompts]
    live = [list(r.beams) for r in results]
    done: list[list[Beam]] = [[] for _ in prompts]

    def key(b: Beam) -> float:
        return score(b, eos, length_penalty)

    for _ in range(max_tokens):
        flat = [(i, b) for i, beams in enumerate(live) for b in beams]
        if not flat:
            break
        steps = engine.next_token([b.tokens for _, b in flat], top_k=2 * width)
        new: list[list[Beam]] = [[] for _ in prompts]
        for (i, beam), r in zip(flat, steps):
            res = results[i]
            res.engine_requests += 1
            res.cached_tokens += r.cached_tokens
            res.computed_tokens += r.computed_tokens
            for tok, lp in zip(r.token_ids, r.logprobs):
                nb = Beam(beam.tokens + [tok], beam.cum_logprob + lp)
                (done[i] if tok in eos else new[i]).append(nb)
        live = [sorted(n, key=key, reverse=True)[:width] for n in new]
    for i, res in enumerate(results):
        res.beams = sorted(done[i] + live[i], key=key, reverse=True)[:width]
    return results


class BeamSearch(StepwiseStrategy):
    name = "beam"
    description = "Beam search (vLLM's algorithm); on the step driver and tail cache, or with impl: vllm, LLM.beam_search."
    Params = BeamParams
    deterministic = True
    step_fields = ()  # no per-step trace

    def run_unit(self, engine: Any, todo: list[tuple[dict[str, Any], list[int]]], stops: Stops) -> None:
        """Search every (row, prompt ids) of ``todo`` and fill the rows."""
        t0 = time.perf_counter()
        p = self.params
        prompts = [ids for _, ids in todo]
        try:
            if p.impl == "vllm":
                outs = [(o["token_ids"], None) for o in engine.beam_search(
                    prompts, beam_width=p.width, max_tokens=stops.max_tokens, length_penalty=p.length_penalty)]
            else:
                outs = [(r.beams[0].tokens[r.prompt_len:], r) for r in beam_search(
                    engine, prompts, width=p.width, max_tokens=stops.max_tokens, length_penalty=p.length_penalty,
                    eos=stops.token_ids)]
        except Exception as exc:  # noqa: BLE001
            for row, _ in todo:
                row["error"] = f"beam search failed: {type(exc).__name__}: {exc}"
            return
        latency = time.perf_counter() - t0
        for (row, _), (ids, res) in zip(todo, outs):
            text = engine.decode(ids)
            finish = "eos" if ids and ids[-1] in stops.token_ids else "length"
            cut = stops.cut(text)
            if cut != text:
                text, finish = cut, "stop"
            row.update(completion=text, completion_tokens=len(ids), finish_reason=finish, latency_s=latency)
            if res is not None:
                row.update(engine_requests=res.engine_requests, cached_tokens=res.cached_tokens,
                           computed_tokens=res.computed_tokens)
