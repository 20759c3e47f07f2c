"""strategies.distributions: the nucleus rule, the top-token tie rule, step results."""

from __future__ import annotations

import numpy as np

from strategies.base import StepResult
from strategies.distributions import nucleus_size, step_result, top_tokens
from tests.fakes.toy_engine import V, dist_with_nucleus


def test_nucleus_size_exact_and_uncapped():
    for n in (1, 2, 50, 300):
        assert nucleus_size(dist_with_nucleus(n), 0.9) == n
    big = np.log(np.full(50000, 1 / 50000))
    assert nucleus_size(big, 0.9) == 45000  # far above any top-k cap
    # "reaches p": cumulative mass exactly p stops there
    lp = np.log(np.array([0.5, 0.4, 0.1]))
    assert nucleus_size(lp, 0.9) in (2, 3)  # float round-off at the boundary is allowed either way
    assert nucleus_size(np.log(np.array([0.5, 0.3, 0.2])), 0.8) == 2


def test_top_tokens_tie_rule_lower_id_first():
    lp = np.log(np.array([0.1, 0.3, 0.1, 0.3, 0.2]))
    ids, _ = top_tokens(lp, 3)
    assert ids.tolist() == [1, 3, 4]
    ids, _ = top_tokens(lp, 4)
    assert ids.tolist() == [1, 3, 4, 0]  # the tie at the 4th place goes to the lower id


def test_step_result_carries_full_on_request():
    r = step_result(dist_with_nucleus(3), top_k=2, nucleus_p=0.9, full=True)
    assert isinstance(r, StepResult) and r.nucleus_size == 3 and r.full_logprobs.shape == (V,)
    assert r.token_ids == [0, 1]
