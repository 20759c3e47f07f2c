"""Statistics over report rows: means with bootstrap CIs over prompts, and paired
bootstrap CIs of the difference between two strategies (or two runs) on the same prompts
and seeds.

The unit of resampling is the prompt: a prompt's samples and seeds are averaged first
(they are not independent draws of the prompt population), then prompts are resampled
with replacement (percentile bootstrap). Import-light: numpy and pandas only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from harness.metrics import METRICS, direction_word

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
    diffs = prompt_diffs(paired_values(df_a, df_b, metric))
    if diffs.size == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0)
    return bootstrap_ci(diffs, n_boot, confidence, seed)


def summary(df: Any, metrics: Sequence[str], group: Sequence[str] = ("model", "strategy_label"),
            n_boot: int = DEFAULT_N_BOOT, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
            directions: Mapping[str, str] | None = None) -> Any:
    """One row per group and metric: mean, ci_low, ci_high, n_prompts, direction. A
    registered metric's direction comes from the registry; another column's from
    ``directions`` (a strategy's declaration), else "none"."""
    import pandas as pd

    rows = []
    for key, g in df.groupby(list(group), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            if m not in g.columns:
                continue
            ci = metric_ci(g, m, n_boot, confidence, seed)
            if ci.n == 0:
                continue
            direction = (direction_word(METRICS.get(m).higher_is_better) if m in METRICS
                         else (directions or {}).get(m, "none"))
            rows.append({**dict(zip(group, key)), "metric": m, **ci.as_dict(), "direction": direction})
    return pd.DataFrame(rows, columns=[*group, "metric", "mean", "ci_low", "ci_high", "n_prompts", "direction"])


# ---- the regression gate's tests: paired pairs, one-sided bounds, exact paired binary tests ----

def paired_values(df_a: Any, df_b: Any, metric: str) -> Any:
    """The pairs :func:`paired_diff_ci` uses: a DataFrame with columns ``a`` and ``b``
    indexed by :data:`PAIR_KEY`, one row per (prompt, seed, sample) scored on both sides
    (error rows and None dropped; duplicates of a key averaged)."""
    cols = PAIR_KEY + [metric]
    a = df_a[df_a[metric].notna() & (df_a["error"].isna() if "error" in df_a else True)][cols]
    b = df_b[df_b[metric].notna() & (df_b["error"].isna() if "error" in df_b else True)][cols]
    a = a.groupby(PAIR_KEY, sort=False)[metric].mean()
    b = b.groupby(PAIR_KEY, sort=False)[metric].mean()
    return a.to_frame("a").join(b.to_frame("b"), how="inner")


def prompt_diffs(pairs: Any) -> np.ndarray:
    """Per prompt, the mean of b - a over its pairs (the values :func:`paired_diff_ci`
    resamples), sorted by prompt."""
    if len(pairs) == 0:
        return np.empty(0)
    return (pairs["b"] - pairs["a"]).groupby(level=PROMPT_KEY, sort=True).mean().to_numpy()


def bootstrap_bound(values: Sequence[float] | np.ndarray, side: str, n_boot: int = DEFAULT_N_BOOT,
                    confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> float:
    """The one-sided percentile-bootstrap bound of the mean at level ``confidence``:
    ``side="lower"`` gives L with P(mean >= L) ~ confidence, ``"upper"`` the mirror. It is
    the matching end of the two-sided interval at level 2 * confidence - 1, so with the same
    ``seed`` it comes from the very resamples :func:`bootstrap_ci` draws. NaN for no value."""
    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"a one-sided bound needs confidence in (0.5, 1), got {confidence!r}")
    ci = bootstrap_ci(values, n_boot, 2 * confidence - 1, seed)
    return ci.low if side == "lower" else ci.high


def mcnemar_exact(n_worse: int, n_better: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of the discordant pairs against
    p = 1/2 (scipy's ``binomtest``). 1.0 when there is no discordant pair."""
    from scipy.stats import binomtest
    if n_worse + n_better == 0:
        return 1.0
    return float(binomtest(int(n_worse), int(n_worse + n_better), 0.5).pvalue)


def paired_binary_noninferiority_p(n_worse: int, n_better: int, n_pairs: int, margin: float) -> float:
    """Exact conditional test that a candidate is not worse than a baseline by ``margin`` on
    paired 0/1 outcomes (the one-sided exact McNemar test when ``margin`` is 0).

    Of the ``n_pairs`` pairs, D = n_worse + n_better are discordant; given D, n_worse is
    Binomial(D, q) and the difference in proportions is (D / n_pairs) * (1 - 2q). H0
    "candidate worse by margin or more" is q >= q0 = (1 + margin * n_pairs / D) / 2; the
    p-value is P(Binomial(D, q0) <= n_worse). When margin * n_pairs >= D the discordant
    pairs cannot reach the margin at all and the p-value is 0 (with D = 0 the difference
    is exactly 0)."""
    from scipy.stats import binomtest
    d = int(n_worse + n_better)
    if n_pairs <= 0 or not 0 <= n_worse <= d <= n_pairs:
        raise ValueError(f"need 0 <= n_worse, n_better and n_worse + n_better <= n_pairs, "
                         f"got {n_worse}, {n_better}, {n_pairs}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    if margin * n_pairs > d or d == 0:
        return 0.0
    q0 = min(1.0, (1 + margin * n_pairs / d) / 2)
    return float(binomtest(int(n_worse), d, q0, alternative="less").pvalue)
