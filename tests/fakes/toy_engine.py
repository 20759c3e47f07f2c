"""The toy engine: a small deterministic :class:`strategies.base.StepEngine` whose next-token
distributions the test chooses (no vLLM), and the distributions the stepwise tests use."""

from __future__ import annotations

import numpy as np

from strategies.distributions import step_result

V = 400
EOS = 399


def dist_with_nucleus(n: int, p: float = 0.9, v: int = V, head: dict[int, float] | None = None) -> np.ndarray:
    """A logprob vector over v tokens whose top-p nucleus has exactly n tokens (n equal head
    tokens: n of them reach p, n - 1 do not; the rest spread thinly)."""
    a = p / (n - 0.05) if n > 0 else 0.0
    probs = np.full(v, (1.0 - n * a) / (v - n))
    probs[:n] = a
    if head:
        probs[:] = 0.0
        rest = 1.0 - sum(head.values())
        others = [t for t in range(v) if t not in head]
        for t, q in head.items():
            probs[t] = q
        probs[others] = rest / len(others)
    return np.log(probs)


class ToyEngine:
    """StepEngine over a function: sequence -> full logprob vector. Counts requests."""

    def __init__(self, fn, vocab: int = V, eos: int = EOS):
        self.fn = fn
        self.vocab_size = vocab
        self.eos_token_ids = frozenset({eos})
        self.calls: list[int] = []  # batch size per call
        self.requests: list[tuple[int, ...]] = []

    def next_token(self, sequences, *, top_k, nucleus_p=None, full=False):
        self.calls.append(len(sequences))
        self.requests += [tuple(s) for s in sequences]
        return [step_result(self.fn(tuple(s)), top_k=top_k, nucleus_p=nucleus_p, full=full,
                            cached_tokens=max(0, len(s) - 1), computed_tokens=1) for s in sequences]

    def decode(self, ids):
        return " ".join(map(str, ids))


def seed_example_engine(n_by_token: dict[int, int], head: dict[int, float], p: float = 0.9):
    """After the prompt, q = head; after prompt + [t], the top-p nucleus has n_by_token[t] tokens."""
    def fn(seq):
        if len(seq) == 1:
            return dist_with_nucleus(0, head=head)
        return dist_with_nucleus(n_by_token.get(seq[-1], 3), p)
    return ToyEngine(fn)


def random_engine(seed: int, v: int = 300):
    """Each sequence gets its own random, peaky distribution (a hash of the sequence)."""
    def fn(seq):
        rng = np.random.default_rng(abs(hash((seed,) + seq)) % (2**32))
        logits = rng.normal(size=v) * rng.uniform(1.0, 4.0)
        return logits - np.log(np.exp(logits).sum())
    return ToyEngine(fn, vocab=v, eos=v - 1)
