"""harness.metrics.cost: cost metrics against values computed by hand."""

from __future__ import annotations

import pytest

from tests.fakes.rows import row, score


def test_cost_metrics_by_hand():
    rows = [row("x", unit_id="u1", completion_tokens=10, unit_seconds=3.0, computed_tokens=30, latency_s=1.5),
            row("y", unit_id="u1", completion_tokens=20, unit_seconds=3.0, computed_tokens=25, latency_s=2.5),
            row("z", unit_id="u2", completion_tokens=8, unit_seconds=2.0, computed_tokens=8, latency_s=None)]
    assert score("gen_tokens_per_s", rows) == [pytest.approx(10.0), pytest.approx(10.0), pytest.approx(4.0)]
    assert score("computed_per_generated", rows) == [pytest.approx(3.0), pytest.approx(1.25), pytest.approx(1.0)]
    assert score("sample_latency_s", rows) == [1.5, 2.5, None]
