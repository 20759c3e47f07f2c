"""Next-token distribution helpers, shared by both sides of the stepwise contract: the
real engine and the tests' toy engine build their :class:`~strategies.base.StepResult`
with :func:`step_result`, and the strategies count nuclei with :func:`nucleus_size`, so
"the top-p nucleus" means one thing everywhere.

Numpy only: no vllm, torch or ray imports here.
"""

from __future__ import annotations

import numpy as np

from strategies.base import StepResult


def probs_of(logprobs: np.ndarray) -> np.ndarray:
    """exp(logprobs) in float64 (no renormalisation: the engine's raw log-softmax is q)."""
    return np.exp(np.asarray(logprobs, dtype=np.float64))


def nucleus_size(logprobs: np.ndarray, top_p: float) -> int:
    """Exact size of the top-p nucleus: sort tokens by probability descending and count the
    shortest head whose cumulative mass reaches ``top_p`` (>=). No cap below the vocabulary:
    if float round-off keeps the total under ``top_p``, the answer is the vocabulary size.
    Ties do not matter for the count (equal values, equal cumulative sums)."""
    if top_p >= 1.0:
        # "Cumulative mass reaches 1" is at the mercy of round-off: count the whole support
        # (every token with a finite logprob).
        return int(np.isfinite(np.asarray(logprobs)).sum()) or 1
    p = probs_of(logprobs)
    s = np.sort(p)[::-1]
    c = np.cumsum(s)
    n = int(np.searchsorted(c, top_p, side="left")) + 1
    return min(n, p.size)


def top_tokens(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely token ids and their logprobs, sorted by logprob descending,
    ties broken by lower token id (exact even when ties straddle the k-th place)."""
    lp = np.asarray(logprobs)
    v = lp.size
    k = min(k, v)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    if k < v:
        part = np.argpartition(-lp, k - 1)[:k]
        kth = lp[part].min()
        idx = np.flatnonzero(lp >= kth)  # every token tied with the k-th one, too
    else:
        idx = np.arange(v)
    order = np.lexsort((idx, -lp[idx]))
    idx = idx[order][:k]
    return idx.astype(np.int64), lp[idx].astype(np.float64)


def step_result(logprobs: np.ndarray, *, top_k: int, nucleus_p: float | None = None, full: bool = False,
                cached_tokens: int = 0, computed_tokens: int = 0) -> StepResult:
    """A :class:`StepResult` from one full next-token logprob vector."""
    ids, lps = top_tokens(logprobs, top_k)
    return StepResult(token_ids=ids.tolist(), logprobs=lps.tolist(),
                      nucleus_size=None if nucleus_p is None else nucleus_size(logprobs, nucleus_p),
                      cached_tokens=cached_tokens, computed_tokens=computed_tokens,
                      full_logprobs=np.asarray(logprobs) if full else None)
