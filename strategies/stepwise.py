"""Samplers beyond vLLM's own: locally typical, eta, epsilon, Mirostat v2 and dynamic top-p.

Each decoding rule is one small pure class over a full next-token log-probability vector
(named after its effect, in the style of HF transformers' ``logits_process.py``), so a
test can compare it with a direct computation. These classes are the reference.

A sampler runs one of two ways (its ``impl`` parameter):

- ``generate`` (the default): inside one batched vLLM ``generate``. The request carries
  its rule in ``extra_args`` (:data:`strategies.base.SAMPLER_ARG`); the engine's sampler
  logits processor (harness.engine.vllm_ext.samplers, torch, vectorised over the batch)
  masks each row to the rule's kept set, and vLLM's seeded sampling draws. No per-step
  trace: ``steps`` and ``mean_candidates`` stay null.
- ``stepwise``: the strategy asks the engine for one full distribution per live sequence
  per step (``StepEngine.next_token(full=True)``), keeps the tokens its rule allows and
  draws one with a numpy Generator seeded from the row's seed (:func:`draw`); it records
  the per-step trace. Several times slower; kept for side-by-side checks.

Numpy only: no vllm, torch or ray imports here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from strategies.base import (SAMPLER_ARG, Column, Decoded, Params, SeqState, StepEngine, Stops, StepwiseStrategy,
                             check_choice, check_range, param)
from strategies.distributions import nucleus_size, probs_of, top_tokens

#: Every sampler's per-sample column: the mean count of tokens its rule allowed per step.
MEAN_CANDIDATES = Column("mean_candidates", "float64", description="mean tokens the rule allowed per step",
                         leaderboard=False)

def draw(token_ids: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token from ``token_ids`` with probability proportional to ``weights``:
    inverse-CDF over the ids in the given order with one ``rng.random()`` (the order is
    part of the contract: every sampler here passes ids sorted by probability descending,
    ties by lower id). Reproducible with one seed; a test can replay it exactly."""
    w = np.asarray(weights, dtype=np.float64)
    c = np.cumsum(w)
    u = rng.random() * c[-1]
    i = int(np.searchsorted(c, u, side="right"))
    return int(token_ids[min(i, len(token_ids) - 1)])


def _sorted_keep(mask: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.flatnonzero(mask)
    order = np.lexsort((idx, -p[idx]))
    idx = idx[order]
    return idx, p[idx]


def _entropy(p: np.ndarray, lp: np.ndarray) -> float:
    nz = p > 0
    return float(-(p[nz] * lp[nz]).sum())


# ---- the rules -------------------------------------------------------------------------------


class TypicalWarper:
    """Locally typical sampling (Meister et al., 2022; HF ``TypicalLogitsWarper``): sort tokens
    by |-log p - H| ascending, keep the shortest such head whose mass reaches ``mass`` (ties at
    the cut kept), and always the first."""

    def __init__(self, mass: float) -> None:
        self.mass = mass

    def keep(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        p = np.exp(lp)
        ent = _entropy(p, lp)
        shifted = np.abs(-lp - ent)
        order = np.argsort(shifted, kind="stable")
        c = np.cumsum(p[order] / p.sum())
        last = min(int((c < self.mass).sum()), lp.size - 1)
        mask = shifted <= shifted[order[last]]
        mask[order[0]] = True
        return mask


class EpsilonWarper:
    """Epsilon sampling (Hewitt et al., 2022; HF ``EpsilonLogitsWarper``): keep tokens with
    p >= epsilon, and always the most likely one."""

    def __init__(self, epsilon: float) -> None:
        self.epsilon = epsilon

    def keep(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        p = np.exp(lp)
        mask = p >= self.epsilon
        mask[lp >= lp.max()] = True
        return mask


class EtaWarper:
    """Eta sampling (Hewitt et al., 2022; HF ``EtaLogitsWarper``): keep tokens with
    p >= eta = min(epsilon, sqrt(epsilon) * exp(-H(p))), and always the most likely one."""

    def __init__(self, epsilon: float) -> None:
        self.epsilon = epsilon

    def threshold(self, logprobs: np.ndarray) -> float:
        lp = np.asarray(logprobs, dtype=np.float64)
        p = np.exp(lp)
        return min(self.epsilon, math.sqrt(self.epsilon) * math.exp(-_entropy(p, lp)))

    def keep(self, logprobs: np.ndarray) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        mask = np.exp(lp) >= self.threshold(lp)
        mask[lp >= lp.max()] = True
        return mask


class MirostatV2:
    """Mirostat v2 (Basu et al., 2021; as in llama.cpp's ``mirostat_v2`` sampler). State: mu,
    starting at 2 * tau. Per step: keep the tokens whose surprise -log2 p is <= mu (at least
    the most likely one), renormalise, draw; then with the drawn token's surprise s under the
    renormalised distribution, mu <- mu - eta * (s - tau)."""

    def __init__(self, tau: float, eta: float) -> None:
        self.tau, self.eta = tau, eta

    def init_state(self) -> float:
        return 2.0 * self.tau

    def keep(self, logprobs: np.ndarray, mu: float) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        mask = (-lp / math.log(2.0)) <= mu
        mask[lp >= lp.max()] = True
        return mask

    def update(self, mu: float, chosen_prob_renormalised: float) -> float:
        s = -math.log2(chosen_prob_renormalised)
        return mu - self.eta * (s - self.tau)


class DynamicTopPWarper:
    """Dynamic top-p (our statement of the seed paper's rule: widen the nucleus while the
    recent output repeats itself, relax back when it does not).

    Rule, per step, before sampling: the output "repeats" when the last ``ngram`` generated
    tokens already occur as a contiguous run earlier within the last ``window`` generated
    tokens. On a repeat the threshold rises, p <- min(max_top_p, p + increase); otherwise it
    falls back, p <- max(top_p, p - decay). The step then samples from the top-p nucleus
    under the current p (sorted by probability descending, ties by lower id; the shortest
    head whose mass reaches p). p starts at ``top_p``.
    """

    def __init__(self, top_p: float, max_top_p: float, increase: float, decay: float, window: int,
                 ngram: int) -> None:
        self.top_p, self.max_top_p, self.increase, self.decay = top_p, max_top_p, increase, decay
        self.window, self.ngram = window, ngram

    def init_state(self) -> float:
        return self.top_p

    def repeats(self, generated: Sequence[int]) -> bool:
        n = self.ngram
        recent = list(generated[-self.window:])
        if len(recent) <= n:
            return False
        tail = recent[-n:]
        return any(recent[i:i + n] == tail for i in range(len(recent) - n))

    def next_p(self, p: float, generated: Sequence[int]) -> float:
        if self.repeats(generated):
            return min(self.max_top_p, p + self.increase)
        return max(self.top_p, p - self.decay)

    @staticmethod
    def keep(logprobs: np.ndarray, p: float) -> np.ndarray:
        lp = np.asarray(logprobs, dtype=np.float64)
        n = nucleus_size(lp, p)
        ids, _ = top_tokens(lp, n)
        mask = np.zeros(lp.size, dtype=bool)
        mask[ids] = True
        return mask


# ---- the shared sampling loop -----------------------------------------------------------------


#: Where a sampler's rule runs (see the module docstring).
IMPLS = ("generate", "stepwise")


@dataclass(frozen=True)
class SamplerParams(Params):
    impl: str = param("generate", "where the rule runs: generate (a logits processor inside vLLM's batched generate, "
                                  "vLLM's seeded draw) or stepwise (the numpy reference, one request per step)")

    def validate(self) -> None:
        check_choice("impl", self.impl, IMPLS)


class SamplerStrategy(StepwiseStrategy):
    """A sampler: its rule (``keep``) picks the allowed tokens. Stepwise, one full-distribution
    request per live sequence per step and :func:`draw` picks one, seeded per row; in
    ``generate``, the engine applies the same rule (``processor_args``) and vLLM draws."""

    sample_columns = (MEAN_CANDIDATES,)
    #: The ``generate`` path needs the engine's sampler logits processor.
    in_engine_rule: ClassVar[bool] = True

    def runs_stepwise(self) -> bool:
        return self.params.impl == "stepwise"

    def processor_args(self) -> dict[str, Any]:
        """The rule and its parameters, as the engine's sampler processor reads them."""
        return {"rule": self.name, **{k: v for k, v in self.params.to_dict().items() if k != "impl"}}

    def sampling_kwargs(self) -> dict[str, Any]:
        """The ``generate`` path: temperature 1, no native truncation, the rule in extra_args."""
        return {"temperature": 1.0, "extra_args": {SAMPLER_ARG: self.processor_args()}}

    def init_state(self) -> Any:
        return None

    def keep(self, logprobs: np.ndarray, state: Any, generated: list[int]) -> tuple[np.ndarray, Any]:
        """(mask of kept tokens, state to use for this step)."""
        raise NotImplementedError

    def after(self, state: Any, chosen_prob_renormalised: float) -> Any:
        return state

    def select(self, logprobs: np.ndarray, state: Any, generated: list[int],
               rng: np.random.Generator) -> tuple[int, Any, dict[str, Any]]:
        """One step for one sequence: (token, next state, trace fields)."""
        mask, state = self.keep(logprobs, state, generated)
        p = probs_of(logprobs)
        ids, w = _sorted_keep(mask, p)
        token = draw(ids, w, rng)
        renorm = float(p[token] / w.sum())
        state = self.after(state, renorm)
        lp = float(logprobs[token])
        rank = int((np.asarray(logprobs) > lp).sum()) + 1
        return token, state, {"token_id": token, "logprob": lp, "rank": rank, "candidates": int(ids.size)}

    def decode(self, engine: StepEngine, prompts: Sequence[Sequence[int]], *, seeds: Sequence[int],
               stops: Stops) -> list[Decoded]:
        seqs = [SeqState(p, s, self.init_state()) for p, s in zip(prompts, seeds)]
        live = list(seqs)
        while live:
            results = engine.next_token([s.ids for s in live], top_k=1, full=True)
            for s, r in zip(live, results):
                s.charge(r)
                token, s.state, trace = self.select(r.full_logprobs, s.state, s.gen, s.rng)
                s.push(token, trace, stops)
            live = [s for s in live if s.finish is None]
        out = []
        for s in seqs:
            cands = [st["candidates"] for st in s.steps]
            out.append(s.decoded({"mean_candidates": float(np.mean(cands)) if cands else None}))
        return out


# ---- the strategies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TypicalParams(SamplerParams):
    typical_p: float = param(0.9, "keep the most typical tokens (|-log p - entropy| smallest) up to this mass")

    def validate(self) -> None:
        super().validate()
        check_range("typical_p", self.typical_p, 0, 1, low_open=True)


class Typical(SamplerStrategy):
    name = "typical"
    description = "Locally typical sampling: tokens whose surprise is closest to the entropy, up to typical_p mass."
    Params = TypicalParams

    def keep(self, logprobs, state, generated):
        return TypicalWarper(self.params.typical_p).keep(logprobs), state


@dataclass(frozen=True)
class EpsilonParams(SamplerParams):
    epsilon: float = param(3e-4, "drop tokens with probability below epsilon (the top token always stays)")

    def validate(self) -> None:
        super().validate()
        check_range("epsilon", self.epsilon, 0, 1, low_open=True, high_open=True)


class Epsilon(SamplerStrategy):
    name = "epsilon"
    description = "Epsilon sampling: drop tokens with probability below a fixed epsilon."
    Params = EpsilonParams

    def keep(self, logprobs, state, generated):
        return EpsilonWarper(self.params.epsilon).keep(logprobs), state


@dataclass(frozen=True)
class EtaParams(SamplerParams):
    epsilon: float = param(3e-4, "eta = min(epsilon, sqrt(epsilon) * exp(-entropy)); drop tokens below eta")

    def validate(self) -> None:
        super().validate()
        check_range("epsilon", self.epsilon, 0, 1, low_open=True, high_open=True)


class Eta(SamplerStrategy):
    name = "eta"
    description = "Eta sampling: an entropy-dependent probability floor min(eps, sqrt(eps)*exp(-H))."
    Params = EtaParams

    def keep(self, logprobs, state, generated):
        return EtaWarper(self.params.epsilon).keep(logprobs), state


@dataclass(frozen=True)
class MirostatParams(SamplerParams):
    tau: float = param(5.0, "target surprise in bits per token")
    eta: float = param(0.1, "learning rate of the surprise controller mu")

    def validate(self) -> None:
        super().validate()
        check_range("tau", self.tau, 0, None, low_open=True)
        check_range("eta", self.eta, 0, None, low_open=True)


class Mirostat(SamplerStrategy):
    name = "mirostat"
    description = "Mirostat v2: truncates tokens whose surprise exceeds mu, steering mu to a target surprise tau."
    Params = MirostatParams

    def _rule(self) -> MirostatV2:
        return MirostatV2(self.params.tau, self.params.eta)

    def init_state(self):
        return self._rule().init_state()

    def keep(self, logprobs, state, generated):
        return self._rule().keep(logprobs, state), state

    def after(self, state, chosen_prob_renormalised):
        return self._rule().update(state, chosen_prob_renormalised)


@dataclass(frozen=True)
class DynamicTopPParams(SamplerParams):
    top_p: float = param(0.9, "base nucleus threshold (the starting and lowest p)")
    max_top_p: float = param(0.99, "highest p the threshold may rise to")
    increase: float = param(0.05, "added to p at each step where the recent output repeats")
    decay: float = param(0.02, "taken from p (down to top_p) at each step that does not repeat")
    window: int = param(32, "how many recent generated tokens the repeat check looks at")
    ngram: int = param(3, "a repeat: the last ngram tokens already occurred within the window")

    def validate(self) -> None:
        super().validate()
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_range("max_top_p", self.max_top_p, self.top_p, 1)
        check_range("increase", self.increase, 0, 1)
        check_range("decay", self.decay, 0, 1)
        check_range("window", self.window, 2, None, integer=True)
        check_range("ngram", self.ngram, 1, self.window - 1, integer=True)


class DynamicTopP(SamplerStrategy):
    __doc__ = "Dynamic top-p. " + (DynamicTopPWarper.__doc__ or "")
    name = "dynamic_top_p"
    description = "Top-p whose threshold rises while recent output repeats (n-gram check) and decays back after."
    Params = DynamicTopPParams

    def _rule(self) -> DynamicTopPWarper:
        p = self.params
        return DynamicTopPWarper(p.top_p, p.max_top_p, p.increase, p.decay, p.window, p.ngram)

    def init_state(self):
        return self.params.top_p

    def keep(self, logprobs, state, generated):
        rule = self._rule()
        p = rule.next_p(state, generated) if generated else state
        return rule.keep(logprobs, p), p
