"""Cost figures with honest uncertainty.

What each cost column counts (the worker's rule, harness.engine.worker.execute_unit):

- ``computed_tokens``: positions the model ran a forward pass on for the sample: the prompt
  positions not found in the prefix or tail cache, plus one per decode step (native: the
  prefill yields the first token; stepwise: every request's uncached tail, lookahead
  included). Every unit starts from an empty cache, so this is a count, not a timing, and
  identical work gives identical counts wherever the unit sits in the plan.
- ``unit_seconds``: the unit's generation alone (no warm-up, prompt preparation, scoring or
  queueing), the median of its ``timing_runs``; ``gen_tokens_per_s`` divides the unit's
  generated tokens by it.
- ``latency_s``: one sample, from queueing to its last token (native: vLLM's request
  metrics; stepwise: from the unit's first step to the sample's finish); ``latency_runs``
  holds it per timing repeat.

Noise: the rows of one unit share one timing, so resampling prompts says nothing about how
much a timing moves from run to run. The intervals here come from repeated timings
(``generation.timing_repeats``), a Student t interval over the repeats; with one timing per
unit there is no interval, and the gate refuses to decide on a timing metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from harness.analysis.stats import DEFAULT_CONFIDENCE

#: Metrics whose values are timings: compared through repeats, never through prompts.
TIMING_METRICS = ("gen_tokens_per_s", "sample_latency_s")


@dataclass(frozen=True)
class RepeatCI:
    """A mean over timing repeats with its t interval (NaN bounds with fewer than 2)."""

    mean: float
    low: float
    high: float
    repeats: int
    values: tuple[float, ...] = ()


def t_interval(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> RepeatCI:
    """Mean and two-sided Student t interval of ``values`` (one value: no interval)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return RepeatCI(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if len(v) < 2:
        return RepeatCI(mean, math.nan, math.nan, len(v), tuple(v))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return RepeatCI(mean, mean - half, mean + half, len(v), tuple(v))


def _runs(value: Any, fallback: Any) -> list[float]:
    if value is not None and not (isinstance(value, float) and math.isnan(value)) and len(value):
        return [float(x) for x in value]
    return [] if fallback is None or (isinstance(fallback, float) and math.isnan(fallback)) else [float(fallback)]


def repeat_values(g: Any, metric: str) -> list[float]:
    """One value of ``metric`` per timing repeat for the rows ``g`` of one model and strategy:
    ``gen_tokens_per_s`` = all their generated tokens / the repeat's seconds summed over their
    units; ``sample_latency_s`` = the mean sample latency of the repeat. Only as many repeats
    as every unit has; [] without timings."""
    ok = g[g["error"].isna()] if "error" in g else g
    if ok.empty:
        return []
    if metric == "gen_tokens_per_s":
        per_unit = []
        for _, u in ok.groupby("unit_id", sort=False):
            first = u.iloc[0]
            runs = _runs(first.get("timing_runs"), first.get("unit_seconds"))
            per_unit.append((float(u["completion_tokens"].sum()), runs))
        k = min(len(r) for _, r in per_unit)
        tokens = sum(t for t, _ in per_unit)
        return [tokens / s if s > 0 else math.nan for s in (sum(r[i] for _, r in per_unit) for i in range(k))]
    if metric == "sample_latency_s":
        runs = [_runs(r.get("latency_runs"), r.get("latency_s")) for r in ok.to_dict("records")]
        runs = [r for r in runs if r]
        if not runs:
            return []
        k = min(len(r) for r in runs)
        return [float(np.mean([r[i] for r in runs])) for i in range(k)]
    raise ValueError(f"{metric!r} is not a timing metric; timing metrics: {', '.join(TIMING_METRICS)}")


def latency_percentiles(g: Any, qs: Sequence[float] = (50, 95)) -> dict[str, float]:
    """Per-sample latency percentiles over the good rows ``g`` (first timing)."""
    ok = g[g["error"].isna()] if "error" in g else g
    v = ok["latency_s"].dropna().to_numpy(dtype=float) if "latency_s" in ok else np.array([])
    return {f"latency_p{int(q)}_s": float(np.percentile(v, q)) if len(v) else math.nan for q in qs}


def timing_bound(base: Sequence[float], cand: Sequence[float], side: str,
                 confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float, float]:
    """(diff, two-sided low, two-sided high, one-sided bound on ``side``) of mean(cand) -
    mean(base) by Welch's t over the two runs' repeats; NaNs with fewer than 2 repeats on a side."""
    from scipy import stats

    a, b = np.asarray(base, dtype=float), np.asarray(cand, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return (float(b.mean() - a.mean()) if len(a) and len(b) else math.nan), math.nan, math.nan, math.nan
    diff = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    two = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    one = float(stats.t.ppf(confidence, df)) * se
    return diff, diff - two, diff + two, (diff - one if side == "lower" else diff + one)


def cost_table(df: Any, group: Sequence[str] = ("model", "strategy_label"),
               confidence: float = DEFAULT_CONFIDENCE) -> Any:
    """Per model and strategy: tok/s with its interval over timing repeats, the repeats,
    latency p50/p95 and the mean engine-computed tokens per generated token."""
    import pandas as pd

    rows = []
    for keys, g in df.groupby(list(group), sort=True):
        rate = t_interval(repeat_values(g, "gen_tokens_per_s"), confidence)
        ok = g[g["error"].isna()] if "error" in g else g
        gen = float(ok["completion_tokens"].sum()) if len(ok) else 0.0
        computed = float(ok["computed_tokens"].sum()) if "computed_tokens" in ok and len(ok) else math.nan
        rows.append({**dict(zip(group, keys if isinstance(keys, tuple) else (keys,))),
                     "tok_per_s": rate.mean, "tok_per_s_low": rate.low, "tok_per_s_high": rate.high,
                     "timing_repeats": rate.repeats, **latency_percentiles(g),
                     "computed_per_generated": computed / gen if gen else math.nan})
    return pd.DataFrame(rows)
