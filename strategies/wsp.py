"""The weighted strength/possibility decoder (WSP), exactly as DESIGN.md specifies.

At each step, with q = p(. | x) the model's raw next-token distribution (temperature 1):

1. Candidates C: tokens sorted by q descending (ties: lower token id first), the shortest
   head whose cumulative mass reaches ``top_p``, at most the first ``max_candidates`` (K).
2. Possibilities N(c): the exact size of the top-p nucleus (same rule, no cap below the
   vocabulary) of p(. | x + c).
3. Strength S(c) = q(c).
4. Score(c) = w * log S(c) - log N(c)  (= log(S^w / N)).
5. ``argmax``: the highest score; ties: higher q, then lower token id. ``sample``: draw c with
   probability proportional to exp(Score(c) / temperature) with a numpy Generator seeded
   from the row's seed (see :func:`choose`).
6. The chosen candidate's lookahead distribution is the next step's q: no extra request.

End-of-sequence candidates: a candidate in the stop-token set (EOS) would end its sequence,
so it opens no further possibilities: N(EOS) = 1 (log N = 0) and no lookahead request is
sent for it. If it is chosen, the sample ends with finish reason "eos".

Engine cost: one request per prompt at step 0 (the first q); then per step one request per
(live sequence, non-EOS candidate), all in ONE batched ``next_token`` call. A step with a
single candidate costs one request, like a greedy step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from strategies.base import (STEP_BASICS, Column, Decoded, Params, SeqState, StepEngine, StepResult, Stops,
                             StepwiseStrategy, check_choice, check_range, param)


@dataclass(frozen=True)
class WSPParams(Params):
    top_p: float = param(0.9, "nucleus threshold p for the candidates and for the possibility count N")
    max_candidates: int = param(8, "K: at most this many candidates (the head of the nucleus)")
    weight: float = param(1.0, "w >= 0: score = w * log q(c) - log N(c); large w -> greedy, 0 -> fewest possibilities")
    mode: str = param("argmax", "'argmax' (deterministic) or 'sample' (draw ~ exp(score / temperature), seeded)")
    temperature: float = param(1.0, "sample mode only: softmax temperature over the scores")

    def validate(self) -> None:
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_range("max_candidates", self.max_candidates, 1, None, integer=True)
        check_range("weight", self.weight, 0, None)
        check_choice("mode", self.mode, ("argmax", "sample"))
        check_range("temperature", self.temperature, 0, None, low_open=True)


def candidates(q: StepResult, max_candidates: int) -> tuple[list[int], list[float]]:
    """Step 1: the nucleus head of q capped at K, as (token ids, logprobs), q-descending.
    ``q`` must carry its exact ``nucleus_size`` and at least K sorted top tokens."""
    if q.nucleus_size is None:
        raise ValueError("WSP needs the exact nucleus size of q (next_token(..., nucleus_p=top_p))")
    n = min(q.nucleus_size, max_candidates)
    if len(q.token_ids) < n:
        raise ValueError(f"engine returned {len(q.token_ids)} top tokens, WSP needs {n}")
    return list(q.token_ids[:n]), list(q.logprobs[:n])


def scores(logq: Sequence[float], n: Sequence[int], weight: float) -> list[float]:
    """Step 4: w * log q(c) - log N(c). With w = 0 the strength term is 0 (even for q = 0)."""
    return [(weight * lq if weight else 0.0) - math.log(nc) for lq, nc in zip(logq, n)]


def choose(token_ids: Sequence[int], logq: Sequence[float], score: Sequence[float], mode: str,
           temperature: float = 1.0, rng: np.random.Generator | None = None) -> int:
    """Step 5: the index (into the candidate list) of the chosen candidate.

    argmax: highest score, ties by higher q, then lower token id. sample: softmax of
    score / temperature over the candidates in their given order (q-descending, ties by lower
    id), one ``rng.random()`` draw by inverse CDF."""
    if mode == "argmax":
        return min(range(len(token_ids)), key=lambda i: (-score[i], -logq[i], token_ids[i]))
    s = np.asarray(score, dtype=np.float64) / temperature
    w = np.exp(s - s.max())
    c = np.cumsum(w)
    u = rng.random() * c[-1]
    return min(int(np.searchsorted(c, u, side="right")), len(token_ids) - 1)


class WSP(StepwiseStrategy):
    __doc__ = __doc__
    name = "wsp"
    description = "Weighted strength/possibility: prefer likely tokens that open the fewest next-step possibilities."
    Params = WSPParams
    sample_columns = (
        Column("mean_log_possibilities", "float64",
               description="WSP possibilities consumed (mean log N of the chosen tokens)"),
        Column("left_greedy_share", "float64", description="share of steps where WSP did not take the greedy token"),
        Column("mean_candidates", "float64", description="mean candidates per step", leaderboard=False),
    )
    step_fields = STEP_BASICS + (
        Column("n_chosen", "int64", description="N of the chosen candidate: its lookahead's nucleus size"),
        Column("n_min", "int64", description="the smallest N among the step's candidates"),
        Column("n_max", "int64", description="the largest N among the step's candidates"),
        Column("score", "float64", description="the chosen candidate's score w log q - log N"),
    )

    #: Seeded as a class (``mode: sample`` uses the seed); an argmax instance is deterministic.
    deterministic = False
    asks_nucleus_counts = True

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params)
        self.deterministic = self.params.mode == "argmax"  # type: ignore[misc]

    @property
    def lookahead_width(self) -> int:
        return self.params.max_candidates

    def decode(self, engine: StepEngine, prompts: Sequence[Sequence[int]], *, seeds: Sequence[int],
               stops: Stops) -> list[Decoded]:
        p = self.params
        k = p.max_candidates
        seqs = [SeqState(pr, s) for pr, s in zip(prompts, seeds)]
        # Step 0: the first q of every prompt, one batched call.
        for s, r in zip(seqs, engine.next_token([s.prompt for s in seqs], top_k=k, nucleus_p=p.top_p)):
            s.charge(r)
            s.q = r
        live = list(seqs)
        while live:
            # One batched call: the lookahead of every (live sequence, non-EOS candidate).
            plan: list[tuple[SeqState, list[int], list[float]]] = []
            batch: list[list[int]] = []
            owners: list[tuple[int, int]] = []  # (plan index, candidate index)
            for s in live:
                ids, lqs = self._candidates(s, k)
                plan.append((s, ids, lqs))
                base = s.ids
                for j, c in enumerate(ids):
                    if c not in stops.token_ids:
                        owners.append((len(plan) - 1, j))
                        batch.append(base + [c])
            results = engine.next_token(batch, top_k=k, nucleus_p=p.top_p) if batch else []
            looks: list[dict[int, StepResult]] = [{} for _ in plan]
            for (pi, j), r in zip(owners, results):
                looks[pi][j] = r
                plan[pi][0].charge(r)
            for pi, (s, ids, lqs) in enumerate(plan):
                ns = [looks[pi][j].nucleus_size if j in looks[pi] else 1 for j in range(len(ids))]
                sc = scores(lqs, ns, p.weight)
                i = choose(ids, lqs, sc, p.mode, p.temperature, s.rng)
                rank = list(s.q.token_ids).index(ids[i]) + 1  # in q: the guarded variant's candidates may skip some
                s.q = looks[pi].get(i)
                s.push(ids[i], {"token_id": ids[i], "logprob": float(lqs[i]), "rank": rank, "candidates": len(ids),
                                "n_chosen": int(ns[i]), "n_min": int(min(ns)), "n_max": int(max(ns)),
                                "score": float(sc[i])}, stops)
            live = [s for s in live if s.finish is None]
        return [self._decoded(s) for s in seqs]

    def _candidates(self, s: SeqState, k: int) -> tuple[list[int], list[float]]:
        return candidates(s.q, k)

    def _metrics(self, s: SeqState) -> dict[str, float | None]:
        st = s.steps
        return {
            "mean_log_possibilities": float(np.mean([math.log(x["n_chosen"]) for x in st])) if st else None,
            "left_greedy_share": float(np.mean([x["rank"] != 1 for x in st])) if st else None,
            "mean_candidates": float(np.mean([x["candidates"] for x in st])) if st else None,
        }

    def _decoded(self, s: SeqState) -> Decoded:
        return s.decoded(self._metrics(s))


@dataclass(frozen=True)
class GuardedWSPParams(WSPParams):
    guard_n: int = param(3, "n of the repetition guard: no candidate may repeat an n-gram the sample already has")

    def validate(self) -> None:
        super().validate()
        check_range("guard_n", self.guard_n, 1, None, integer=True)


def repeats_ngram(generated: Sequence[int], token: int, n: int) -> bool:
    """True when generated + [token] ends in an n-gram that ``generated`` already contains."""
    if len(generated) < n - 1:
        return False
    tail = tuple(generated[len(generated) - n + 1:]) + (token,)
    return any(tuple(generated[i:i + n]) == tail for i in range(len(generated) - n + 1))


class GuardedWSP(WSP):
    """WSP with a repetition guard: WSP's rule, on a candidate set that never repeats itself.

    The guard: a candidate c that would complete an n-gram (n = ``guard_n``) the sample's
    generated tokens already contain is dropped from WSP's candidates. When every
    nucleus-head candidate would repeat, the candidates become the tokens of q's top K that
    do not (q-descending): a low-entropy loop is where the nucleus holds one token, so the
    guard must be able to leave the nucleus. When all K repeat, WSP's own candidates stand:
    the guard never ends or stalls a sample. Scores, choice and cost are WSP's; each
    lookahead is for a candidate actually scored.
    """

    name = "wsp_guarded"
    description = "WSP with a repetition guard: candidates that would repeat an n-gram of the sample are dropped."
    Params = GuardedWSPParams
    sample_columns = WSP.sample_columns + (
        Column("guard_share", "float64", description="share of steps where the repetition guard changed the candidates",
               leaderboard=False),
    )

    def _candidates(self, s: SeqState, k: int) -> tuple[list[int], list[float]]:
        ids, lqs = candidates(s.q, k)
        n = self.params.guard_n  # type: ignore[attr-defined]
        keep = [j for j, c in enumerate(ids) if not repeats_ngram(s.gen, c, n)]
        if len(keep) < len(ids):
            if not keep:  # leave the nucleus: q's top K, in q order, without the repeating ones
                top = list(zip(s.q.token_ids[:k], s.q.logprobs[:k]))
                fresh = [(c, lq) for c, lq in top if not repeats_ngram(s.gen, c, n)]
                if not fresh:
                    return ids, lqs
                s.state = (s.state or 0) + 1
                return [c for c, _ in fresh], [float(lq) for _, lq in fresh]
            s.state = (s.state or 0) + 1
            return [ids[j] for j in keep], [lqs[j] for j in keep]
        return ids, lqs

    def _metrics(self, s: SeqState) -> dict[str, float | None]:
        out = super()._metrics(s)
        out["guard_share"] = (s.state or 0) / len(s.steps) if s.steps else None
        return out
