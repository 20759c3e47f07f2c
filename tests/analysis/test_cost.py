"""harness.analysis.cost and its users: timing intervals come from timing repeats, never
from prompts; the leaderboard says "no CI" for a single timing; the gate refuses to decide
a gated timing metric without repeats, passes noise inside the margin and fails a real drop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.analysis.cost import cost_table, repeat_values, t_interval, timing_bound
from harness.analysis.leaderboard import build_leaderboard, cost_view, to_markdown
from harness.analysis.regression import compare
from harness.config import GateConfig
from harness.metrics import score_rows
from tests.fakes.reports import METRICS, unit_rows, write_report

TIMED = METRICS + ["gen_tokens_per_s", "sample_latency_s", "computed_per_generated"]


def timed_rows(label: str, run_id: str, runs: list[float] | None, *, scale: float = 1.0, units: int = 1):
    """Rows of ``units`` units of one strategy, each timed ``runs`` (seconds per repeat x scale)."""
    rows = unit_rows(label, 0.8, 1, run_id, metrics=METRICS)
    for i, r in enumerate(rows):
        r["unit_id"] = f"unit-{label}-{i % units}"
        if runs is not None:
            r["timing_runs"] = [s * scale for s in runs]
            r["unit_seconds"] = float(np.median(r["timing_runs"]))
            r["latency_runs"] = [r["latency_s"] * s / runs[0] * scale for s in runs]
    score_rows(rows, ["gen_tokens_per_s", "sample_latency_s", "computed_per_generated"])
    return rows


def test_t_interval_matches_scipy():
    v = [10.0, 12.0, 11.0, 13.0]
    ci = t_interval(v, 0.9)
    low, high = stats.t.interval(0.9, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert ci.mean == pytest.approx(11.5) and ci.low == pytest.approx(low) and ci.high == pytest.approx(high)
    one = t_interval([5.0])
    assert one.mean == 5.0 and math.isnan(one.low) and math.isnan(one.high) and one.repeats == 1


def test_repeat_values_by_hand():
    rows = timed_rows("greedy", "r", [2.0, 4.0], units=2)
    import pandas as pd
    df = pd.DataFrame(rows)
    tokens = sum(r["completion_tokens"] for r in rows)
    # Each repeat: all tokens over the repeat's seconds summed over the two units.
    assert repeat_values(df, "gen_tokens_per_s") == [pytest.approx(tokens / 4.0), pytest.approx(tokens / 8.0)]
    lat = [r["latency_s"] for r in rows]
    assert repeat_values(df, "sample_latency_s") == [pytest.approx(np.mean(lat)), pytest.approx(2 * np.mean(lat))]
    # Without timing_runs (a report of an older version): one timing, the unit's seconds.
    old = pd.DataFrame(timed_rows("greedy", "r", None))
    assert repeat_values(old, "gen_tokens_per_s") == [pytest.approx(tokens / 2.0)]
    table = cost_table(df.assign(model="fake"))
    assert table.loc[0, "timing_repeats"] == 2
    assert table.loc[0, "latency_p50_s"] == pytest.approx(np.percentile(lat, 50))
    assert table.loc[0, "latency_p95_s"] == pytest.approx(np.percentile(lat, 95))
    assert table.loc[0, "computed_per_generated"] == pytest.approx(
        sum(r["computed_tokens"] for r in rows) / tokens)


def test_leaderboard_timing_interval_comes_from_repeats(tmp_path):
    once = write_report(tmp_path, "once", {"greedy": timed_rows("greedy", "once", [2.0])}, metrics=TIMED)
    lb = build_leaderboard([once])
    row = lb.table[lb.table["metric"] == "gen_tokens_per_s"].iloc[0]
    assert math.isnan(row["ci_low"]) and row["ci"] == "timing repeats (1)"  # not a zero-width interval
    assert "[no CI]" in to_markdown(lb) and "### Cost" in to_markdown(lb)
    thrice = write_report(tmp_path, "thrice", {"greedy": timed_rows("greedy", "thrice", [2.0, 2.2, 1.9])},
                          metrics=TIMED)
    lb = build_leaderboard([thrice])
    row = lb.table[lb.table["metric"] == "gen_tokens_per_s"].iloc[0]
    tokens = sum(r["completion_tokens"] for r in timed_rows("greedy", "x", [1.0]))
    expected = t_interval([tokens / s for s in (2.0, 2.2, 1.9)])
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((expected.mean, expected.low, expected.high))
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    view = cost_view(lb, "fake")
    assert view.loc["greedy", "timings"] == 3 and "[no CI]" not in view.loc["greedy", "tok/s [CI over repeats]"]
    # Quality metrics keep their interval over prompts.
    assert (lb.table[lb.table["metric"] == "exact_match"]["ci"] == "prompts").all()


GATE = {"gen_tokens_per_s": 5.0, "exact_match": 0.0}


def test_gate_refuses_a_timing_metric_timed_once(tmp_path):
    base = write_report(tmp_path, "b", {"greedy": timed_rows("greedy", "b", [2.0])}, metrics=TIMED)
    cand = write_report(tmp_path, "c", {"greedy": timed_rows("greedy", "c", [2.02])}, metrics=TIMED)
    result = compare(base, cand, GateConfig(gates=GATE))
    assert not result.passed
    assert any("timing_repeats >= 2" in f for f in result.failures), result.failures
    row = result.table[result.table["metric"] == "gen_tokens_per_s"].iloc[0]
    assert math.isnan(row["bound"]) and row["verdict"] == "n/a"
    # Not gated: shown, decided nothing, no failure.
    ungated = compare(base, cand, GateConfig(gates={"exact_match": 0.0}))
    assert ungated.passed


def test_gate_passes_noise_inside_the_margin_and_fails_a_real_drop(tmp_path):
    runs = [2.0, 2.1, 1.95, 2.05, 2.0]
    base = write_report(tmp_path, "b", {"greedy": timed_rows("greedy", "b", runs)}, metrics=TIMED)
    noisy = write_report(tmp_path, "n", {"greedy": timed_rows("greedy", "n", runs[::-1], scale=1.01)}, metrics=TIMED)
    slow = write_report(tmp_path, "s", {"greedy": timed_rows("greedy", "s", runs, scale=2.0)}, metrics=TIMED)
    tokens = sum(r["completion_tokens"] for r in timed_rows("greedy", "x", [1.0]))
    margin = 0.1 * tokens / 2.0  # 10% of the baseline's tok/s
    gate = GateConfig(gates={"gen_tokens_per_s": margin, "exact_match": 0.0})
    ok = compare(base, noisy, gate)
    assert ok.passed, ok.failures
    bad = compare(base, slow, gate)
    assert not bad.passed
    row = bad.table[bad.table["metric"] == "gen_tokens_per_s"].iloc[0]
    assert row["verdict"] == "regressed" and row["bound"] < -margin
    base_rates = [tokens / s for s in runs]
    slow_rates = [tokens / (2 * s) for s in runs]
    diff, low, high, bound = timing_bound(base_rates, slow_rates, "lower")
    assert row["diff"] == pytest.approx(diff) and row["bound"] == pytest.approx(bound)
    welch = stats.ttest_ind(slow_rates, base_rates, equal_var=False)
    assert diff / ((high - low) / 2 / stats.t.ppf(0.975, welch.df)) == pytest.approx(welch.statistic)
