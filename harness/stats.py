"""Statistics over report rows: means with bootstrap CIs over prompts, and paired
bootstrap CIs of the difference between two strategies (or two runs) on the same prompts
and seeds.

The unit of resampling is the prompt: a prompt's samples and seeds are averaged first
(they are not independent draws of the prompt population), then prompts are resampled
with replacement (percentile bootstrap). Import-light: numpy and pandas only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_CONFIDENCE = 0.95
#: The columns that identify a prompt across strategies and runs.
PROMPT_KEY = ["prompt_set", "prompt_id"]
#: The columns that pair two samples: same prompt, same seed, same sample index.
PAIR_KEY = ["prompt_set", "prompt_id", "base_seed", "sample_index"]


@dataclass(frozen=True)
class CI:
    mean: float
    low: float
    high: float
    n: int  # prompts

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}mean": self.mean, f"{prefix}ci_low": self.low, f"{prefix}ci_high": self.high,
                f"{prefix}n_prompts": self.n}


def _check(n_boot: int, confidence: float) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = DEFAULT_N_BOOT,
                 confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> CI:
    """Mean of ``values`` with a percentile bootstrap CI (NaNs dropped). One value: a
    zero-width interval; none: NaN."""
    _check(n_boot, confidence)
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if n == 1 or np.all(v == v[0]):
        return CI(mean, mean, mean, n)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bounded memory for large n
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        means[start:start + k] = v[rng.integers(0, n, size=(k, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return CI(mean, float(min(lo, mean)), float(max(hi, mean)), n)


def per_prompt(df: Any, metric: str) -> Any:
    """The metric averaged over each prompt's samples and seeds (error rows and None dropped):
    a Series indexed by (prompt_set, prompt_id)."""
    d = df[df[metric].notna()] if "error" not in df else df[df["error"].isna() & df[metric].notna()]
    return d.groupby(PROMPT_KEY, sort=True)[metric].mean()


def metric_ci(df: Any, metric: str, n_boot: int = DEFAULT_N_BOOT, confidence: float = DEFAULT_CONFIDENCE,
              seed: int = 0) -> CI:
    """Mean over prompts with its bootstrap CI, for the rows of one model and strategy."""
    return bootstrap_ci(per_prompt(df, metric).to_numpy(), n_boot, confidence, seed)


def paired_diff_ci(df_a: Any, df_b: Any, metric: str, n_boot: int = DEFAULT_N_BOOT,
                   confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> CI:
    """CI of mean(B - A) over prompts, pairing rows on prompt, seed and sample index.
    Only pairs present (and scored) on both sides count; the differences are averaged per
    prompt, then prompts are resampled."""
    cols = PAIR_KEY + [metric]
    a = df_a[df_a[metric].notna() & (df_a["error"].isna() if "error" in df_a else True)][cols]
    b = df_b[df_b[metric].notna() & (df_b["error"].isna() if "error" in df_b else True)][cols]
    a = a.groupby(PAIR_KEY, sort=False)[metric].mean()
    b = b.groupby(PAIR_KEY, sort=False)[metric].mean()
    joined = a.to_frame("a").join(b.to_frame("b"), how="inner")
    if joined.empty:
        return CI(float("nan"), float("nan"), float("nan"), 0)
    diff = (joined["b"] - joined["a"]).groupby(level=PROMPT_KEY, sort=True).mean()
    return bootstrap_ci(diff.to_numpy(), n_boot, confidence, seed)


def summary(df: Any, metrics: Sequence[str], group: Sequence[str] = ("model", "strategy_label"),
            n_boot: int = DEFAULT_N_BOOT, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> Any:
    """One row per group and metric: mean, ci_low, ci_high, n_prompts, direction."""
    import pandas as pd

    from harness.metrics import METRICS
    rows = []
    for key, g in df.groupby(list(group), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            if m not in g.columns:
                continue
            ci = metric_ci(g, m, n_boot, confidence, seed)
            if ci.n == 0:
                continue
            hib = METRICS.get(m).higher_is_better if m in METRICS else None
            rows.append({**dict(zip(group, key)), "metric": m, **ci.as_dict(),
                         "direction": {True: "higher", False: "lower", None: "none"}[hib]})
    return pd.DataFrame(rows, columns=[*group, "metric", "mean", "ci_low", "ci_high", "n_prompts", "direction"])
