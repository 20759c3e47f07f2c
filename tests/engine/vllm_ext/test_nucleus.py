"""The in-engine nucleus counter (a vLLM V1 logits processor) against the numpy rule."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.distributions import nucleus_size


def test_in_engine_nucleus_counter_equals_numpy_rule():
    """The V1 logits processor's count (returned as the greedy token N - 1) equals
    strategies.distributions.nucleus_size on the same logits; unflagged rows are untouched."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")

    from harness.engine.vllm_ext.nucleus import NucleusCountProcessor

    proc = NucleusCountProcessor(None, torch.device("cpu"), False)
    assert not proc.is_argmax_invariant()
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=3000) * s for s in (0.1, 1.0, 3.0, 8.0)]  # flat ones need the full sort
    rows.append(np.r_[np.full(2999, -1e9), [5.0]])
    logits = torch.tensor(np.stack(rows + [rows[1]]), dtype=torch.float32)
    ps = [0.9, 0.5, 0.95, 0.9, 0.9]
    proc.reqs = dict(enumerate(ps))
    out = proc.apply(logits.clone())
    for i, p in enumerate(ps):
        lp = torch.log_softmax(logits[i], -1).numpy()
        assert int(out[i].argmax()) + 1 == nucleus_size(lp, p)
    assert torch.equal(out[5], logits[5])
    proc.reqs = {0: 1.0}
    assert int(proc.apply(logits.clone())[0].argmax()) + 1 == 3000
