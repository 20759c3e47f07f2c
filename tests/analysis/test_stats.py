"""Bootstrap CIs: coverage at about the nominal rate in a seeded simulation; pairing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.analysis.stats import bootstrap_ci, metric_ci, paired_diff_ci, summary


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    rng = np.random.default_rng(12345)
    true_mean, reps, n = 0.6, 400, 80
    covered = 0
    for i in range(reps):
        x = rng.binomial(1, true_mean, size=n).astype(float)  # an accuracy-like metric
        ci = bootstrap_ci(x, n_boot=1000, seed=i)
        covered += ci.low <= true_mean <= ci.high
    rate = covered / reps
    # nominal 0.95; with 400 reps the binomial s.e. is ~0.011; percentile bootstrap runs slightly low
    assert 0.90 <= rate <= 0.985, rate


def test_bootstrap_ci_coverage_on_a_skewed_metric():
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(300):
        x = rng.exponential(2.0, size=100)
        ci = bootstrap_ci(x, n_boot=1000, seed=i)
        covered += ci.low <= 2.0 <= ci.high
    assert 0.89 <= covered / 300 <= 0.99


def test_bootstrap_ci_edge_cases_and_errors():
    assert bootstrap_ci([]).n == 0 and np.isnan(bootstrap_ci([]).mean)
    c = bootstrap_ci([3.0])
    assert (c.mean, c.low, c.high, c.n) == (3.0, 3.0, 3.0, 1)
    c = bootstrap_ci([1.0, np.nan, 3.0], n_boot=500)
    assert c.n == 2 and c.mean == 2.0 and 1.0 <= c.low <= 2.0 <= c.high <= 3.0
    with pytest.raises(ValueError, match="confidence must be in \\(0, 1\\), got 1.5"):
        bootstrap_ci([1, 2], confidence=1.5)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 100, got 10"):
        bootstrap_ci([1, 2], n_boot=10)


def _frame(values_by_prompt, samples=1, label="s", metric="m"):
    rows = []
    for p, vals in enumerate(values_by_prompt):
        for s in range(samples):
            rows.append({"model": "x", "strategy_label": label, "prompt_set": "set", "prompt_id": f"p{p}",
                         "base_seed": 0, "sample_index": s, metric: vals[s] if isinstance(vals, list) else vals,
                         "error": None})
    return pd.DataFrame(rows)


def test_metric_ci_averages_samples_within_a_prompt_first():
    df = _frame([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], samples=4)
    ci = metric_ci(df, "m", n_boot=500)
    assert ci.n == 2 and ci.mean == pytest.approx((0.25 + 1.0) / 2)


def test_paired_diff_ci_covers_true_difference():
    rng = np.random.default_rng(3)
    covered, reps = 0, 300
    for i in range(reps):
        base = rng.normal(0, 1, size=60)            # prompt difficulty, shared by both strategies
        a = base + rng.normal(0, 0.3, size=60)
        b = base + 0.2 + rng.normal(0, 0.3, size=60)
        ci = paired_diff_ci(_frame(list(a)), _frame(list(b)), "m", n_boot=1000, seed=i)
        covered += ci.low <= 0.2 <= ci.high
    assert 0.90 <= covered / reps <= 0.985


def test_paired_diff_uses_only_shared_prompts_and_is_narrower_than_unpaired():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 5, size=50)
    a, b = _frame(list(base)), _frame(list(base + 1.0))
    ci = paired_diff_ci(a, b, "m")
    assert ci.mean == pytest.approx(1.0) and ci.low == pytest.approx(1.0) and ci.n == 50
    b_extra = pd.concat([b, _frame([100.0]).assign(prompt_id="only-in-b")])
    assert paired_diff_ci(a, b_extra, "m").mean == pytest.approx(1.0)
    assert paired_diff_ci(a, _frame([1.0]).assign(prompt_id="zzz"), "m").n == 0


def test_summary_has_direction_and_ci():
    df = pd.concat([_frame([1.0, 0.0, 1.0], label="a", metric="exact_match"),
                    _frame([0.0, 0.0, 1.0], label="b", metric="exact_match")])
    out = summary(df, ["exact_match", "absent"], n_boot=200)
    assert list(out["strategy_label"]) == ["a", "b"]
    assert list(out["direction"]) == ["higher", "higher"]
    assert out["mean"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert (out["ci_low"] <= out["mean"]).all() and (out["mean"] <= out["ci_high"]).all()
