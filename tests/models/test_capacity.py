"""harness.models.capacity: the seed's capacity formulas against values computed by hand."""

from __future__ import annotations

import math

import pytest

from harness.models.capacity import capacity, model_capacity


def test_capacity_by_hand():
    c = capacity(576, 30, 49152, m=2)   # SmolLM2-135M
    assert c["ln_possibilities"] == pytest.approx(30 * math.log(1152))
    assert c["log10_possibilities"] == pytest.approx(30 * math.log10(1152))
    assert c["dependency_length"] == pytest.approx(30 * math.log(1152) / math.log(49152))
    assert c["dependency_length"] == pytest.approx(19.577, abs=1e-3)
    assert model_capacity({"hidden_size": 640, "num_hidden_layers": 18, "vocab_size": 262144}, m=1)[
        "dependency_length"] == pytest.approx(18 * math.log(640) / math.log(262144))
    assert model_capacity(None) is None and model_capacity({"hidden_size": 576}) is None
    with pytest.raises(ValueError, match="vocab_size must be a number >= 2, got 1"):
        capacity(576, 30, 1)
    with pytest.raises(ValueError, match="m must be > 0"):
        capacity(576, 30, 100, m=0)
