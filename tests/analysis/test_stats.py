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


# ---- deciding claims: Holm, paired tests, TOST, power and sample size ----

def test_holm_on_a_hand_worked_example():
    from harness.analysis.stats import holm
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a NaN (a test that could not run) is left out of m and stays NaN
    out = holm([0.02, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError, match="p-values must be in"):
        holm([1.5])


def test_sample_size_of_the_paired_t_test_matches_textbook_values():
    from harness.analysis.stats import mde_paired_t, power_paired_t, sample_size_paired_t
    # Cohen's d = 0.5, 0.3, 0.8 at two-sided alpha 0.05 and power 0.8: 34, 90, 15 (G*Power, exact)
    assert sample_size_paired_t(0.5, 1.0) == 34
    assert sample_size_paired_t(0.3, 1.0) == 90
    assert sample_size_paired_t(0.8, 1.0) == 15
    assert sample_size_paired_t(-1.0, 2.0) == 34  # only d = |effect| / sd matters
    assert power_paired_t(33, 0.5, 1.0) < 0.8 <= power_paired_t(34, 0.5, 1.0)
    # the detectable effect at n = 34 is just under 0.5 sd; its inverse
    mde = mde_paired_t(34, 2.0)
    assert 0.98 < mde < 1.0 and power_paired_t(34, mde, 2.0) == pytest.approx(0.8, abs=1e-6)
    assert mde_paired_t(34, 0.0) == 0.0 and np.isnan(mde_paired_t(1, 1.0))
    with pytest.raises(ValueError, match="need effect != 0 and sd > 0"):
        sample_size_paired_t(0.5, 0.0)
    with pytest.raises(ValueError, match="power must be in"):
        sample_size_paired_t(0.5, 1.0, power=1.2)


def test_sample_size_of_mcnemars_test_by_connors_formula():
    from scipy.stats import norm

    from harness.analysis.stats import mde_mcnemar, sample_size_mcnemar
    # delta 0.1, discordant share 0.3: (1.95996 * sqrt(0.3) + 0.84162 * sqrt(0.29))^2 / 0.01
    #   = (1.07351 + 0.45322)^2 / 0.01 = 233.09 -> 234
    za, zb = norm.ppf(0.975), norm.ppf(0.8)
    assert ((za * 0.3 ** 0.5 + zb * 0.29 ** 0.5) ** 2 / 0.01) == pytest.approx(233.09, abs=0.01)
    assert sample_size_mcnemar(0.1, 0.3) == 234
    assert sample_size_mcnemar(-0.1, 0.3) == 234
    # the detectable effect at that n is the declared one, and a smaller n detects less
    assert mde_mcnemar(234, 0.3) == pytest.approx(0.1, abs=5e-4) and mde_mcnemar(100, 0.3) > 0.1
    assert np.isnan(mde_mcnemar(100, 0.0))  # no discordant pair: nothing to plan from
    with pytest.raises(ValueError, match="discordant"):
        sample_size_mcnemar(0.4, 0.3)


def _pairs(a_vals, b_vals):
    return _frame(list(a_vals), label="a"), _frame(list(b_vals), label="b")


def test_paired_test_continuous_is_the_paired_t_test():
    from scipy.stats import ttest_rel

    from harness.analysis.stats import paired_test
    rng = np.random.default_rng(3)
    a = rng.normal(0.5, 0.1, 40)
    b = a + rng.normal(0.03, 0.05, 40)
    pt = paired_test(*_pairs(a, b), "m")
    assert not pt.binary and pt.n == 40
    assert pt.mean == pytest.approx(float(np.mean(b - a))) and pt.sd == pytest.approx(float(np.std(b - a, ddof=1)))
    assert pt.p == pytest.approx(ttest_rel(b, a).pvalue)
    low, high = pt.interval(0.95)
    assert low < pt.mean < high and pt.interval(0.99)[0] < low  # a wider level, a wider interval


def test_paired_test_binary_is_mcnemars_exact_test():
    from scipy.stats import binomtest

    from harness.analysis.stats import paired_test
    # 30 prompts: 9 where only b is right, 2 where only a is, 19 concordant
    a = [0] * 9 + [1] * 2 + [1] * 10 + [0] * 9
    b = [1] * 9 + [0] * 2 + [1] * 10 + [0] * 9
    pt = paired_test(*_pairs(a, b), "m")
    assert pt.binary and (pt.n_better, pt.n_worse, pt.n) == (9, 2, 30)
    assert pt.p == pytest.approx(binomtest(2, 11, 0.5).pvalue) and pt.discordant == pytest.approx(11 / 30)
    assert pt.mean == pytest.approx(7 / 30)


def test_tost_equivalent_and_not_on_constructed_data():
    from scipy.stats import t

    from harness.analysis.stats import paired_test
    # differences of exactly mean 0.01 and sd 0.05 over 100 prompts: within +-0.05 by far
    base = np.tile([-1.0, 1.0], 50)
    d = 0.01 + 0.05 * base / np.std(base, ddof=1)
    a = np.full(100, 0.5)
    pt = paired_test(*_pairs(a, a + d), "m")
    se = 0.05 / 10
    expected = max(t.sf((0.01 + 0.05) / se, 99), t.cdf((0.01 - 0.05) / se, 99))  # the two one-sided tests
    assert pt.equivalence_p(0.05) == pytest.approx(expected) and pt.equivalence_p(0.05) < 1e-10
    # the same spread over 12 prompts and a mean of 0.04: not shown within 0.05
    small = paired_test(*_pairs(a[:12], a[:12] + 0.04 + 0.05 * base[:12] / np.std(base[:12], ddof=1)), "m")
    assert small.equivalence_p(0.05) > 0.05
    # binary, no discordant pair: the p-value is 2 (1 - margin)^n (psi's Clopper-Pearson bound
    # 1 - (a/2)^(1/n) reaches the margin at a = 2 (1 - margin)^n)
    x = [1] * 50 + [0] * 50
    bt = paired_test(*_pairs(x, x), "m")
    assert bt.binary and bt.equivalence_p(0.05) == pytest.approx(2 * 0.95 ** 100, rel=1e-6)  # 0.0118: equivalent
    assert paired_test(*_pairs(x[:32], x[:32]), "m").equivalence_p(0.1) == pytest.approx(2 * 0.9 ** 32, rel=1e-6)
    # 3 discordant of 32 (2 favour the control): the difference seen is -0.031, but psi may be up
    # to 0.26, so a difference of 0.1 is not excluded (a test conditional on D alone would say p = 0)
    x = [1, 1, 0] + [1] * 15 + [0] * 14
    y = [0, 0, 1] + [1] * 15 + [0] * 14
    three = paired_test(*_pairs(x, y), "m")
    assert (three.n_worse, three.n_better, three.n) == (2, 1, 32) and three.equivalence_p(0.1) > 0.5
    # 4 discordant of 400, 2 each way: within 0.05
    x = [1, 0, 1, 0] + [1] * 198 + [0] * 198
    y = [0, 1, 0, 1] + [1] * 198 + [0] * 198
    assert paired_test(*_pairs(x, y), "m").equivalence_p(0.05) < 0.001
    # 60 of 80 discordant, 30 each way (20 or more discordant: the t tests): mean 0, sd sqrt(60/79)
    x = [1] * 30 + [0] * 30 + [1] * 20
    y = [0] * 30 + [1] * 30 + [1] * 20
    se = (60 / 79) ** 0.5 / 80 ** 0.5
    assert paired_test(*_pairs(x, y), "m").equivalence_p(0.05) == pytest.approx(t.sf(0.05 / se, 79))
    with pytest.raises(ValueError, match="margin must be > 0"):
        pt.equivalence_p(0)
