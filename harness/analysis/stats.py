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


# ---- deciding claims: paired t and exact paired binary tests, Holm, equivalence (TOST), power ----
#
# A claim test is the per-prompt differences d_i = treatment - control over n test prompts.
# Continuous metrics: the paired t test (two-sided p, t interval). Binary metrics (one 0/1
# value per prompt on each side): the exact McNemar test, and for equivalence the exact
# conditional test of the discordant pairs (:func:`paired_binary_noninferiority_p`) both ways.
# Equivalence of binary pairs is unconditional (:func:`paired_binary_equivalence_p`): a test
# conditional on the observed discordant count alone would call 3 discordant pairs of 32
# "within 0.1" whatever the true discordant share. Sample sizes and detectable effects use the same two models: the noncentral t for paired
# t tests, and for binary pairs the normal approximation of McNemar's test (Connor 1987):
#
#     n = (z_{1-a/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2
#
# with psi the share of discordant pairs and delta the difference in proportions.

DEFAULT_ALPHA = 0.05
#: Binary pairs with fewer discordant pairs than this take the exact equivalence test; from it
#: on, the paired t test of the 0/+-1 differences (the Wald test, far more powerful there).
BINARY_EXACT_BELOW = 20
DEFAULT_POWER = 0.8


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: sort the m p-values
    ascending, multiply the i-th smallest (i from 0) by m - i, take the running maximum so the
    adjusted values keep the order, cap at 1. Rejecting where the adjusted p <= alpha controls
    the family-wise error rate at alpha; it is what statsmodels' ``multipletests(method=
    "holm")`` returns. NaN p-values (tests that could not run) are left out of m and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must be in [0, 1], got {p[ok].tolist()}")
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison over prompts: differences treatment - control."""

    n: int  # prompts
    mean: float  # mean difference
    sd: float  # standard deviation of the per-prompt differences (ddof 1)
    binary: bool  # one 0/1 value per prompt on both sides: McNemar's tests
    n_better: int  # binary: prompts where treatment is 1 and control 0
    n_worse: int  # binary: prompts where treatment is 0 and control 1
    p: float  # two-sided p-value of "no difference"

    @property
    def discordant(self) -> float:
        """The share of discordant pairs (binary) or NaN."""
        return (self.n_better + self.n_worse) / self.n if self.binary and self.n else float("nan")

    def interval(self, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
        """The two-sided t interval of the mean difference (NaN below two prompts)."""
        from scipy.stats import t
        if self.n < 2:
            return float("nan"), float("nan")
        half = t.ppf(0.5 + confidence / 2, self.n - 1) * self.sd / np.sqrt(self.n)
        return self.mean - half, self.mean + half

    def equivalence_p(self, margin: float) -> float:
        """TOST (Schuirmann 1987): the larger p-value of the two one-sided tests H0: mean <= -margin
        and H0: mean >= +margin; small when the difference is within +-margin. Binary:
        :func:`paired_binary_equivalence_p` below :data:`BINARY_EXACT_BELOW` discordant pairs;
        otherwise (and for continuous metrics) one-sided paired t tests."""
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        if self.n < 2:
            return float("nan")
        if self.binary and self.n_better + self.n_worse < BINARY_EXACT_BELOW:
            return paired_binary_equivalence_p(self.n_worse, self.n_better, self.n, margin)
        from scipy.stats import t
        if self.sd == 0:
            return 0.0 if abs(self.mean) < margin else 1.0
        se = self.sd / np.sqrt(self.n)
        p_low = t.sf((self.mean + margin) / se, self.n - 1)
        p_high = t.cdf((self.mean - margin) / se, self.n - 1)
        return float(max(p_low, p_high))

    def mde(self, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float:
        """The smallest true difference this many prompts detect with ``power`` at two-sided
        ``alpha``, with this test's spread (sd, or the discordant share for binary)."""
        if self.binary:
            return mde_mcnemar(self.n, self.discordant, alpha, power)
        return mde_paired_t(self.n, self.sd, alpha, power)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "diff": self.mean, "sd": self.sd, "binary": self.binary, "n_better": self.n_better,
                "n_worse": self.n_worse, "p": self.p}


def paired_test(df_a: Any, df_b: Any, metric: str) -> PairedTest:
    """The paired test of B - A on ``metric`` over prompts (pairs as in :func:`paired_diff_ci`:
    a prompt's samples and seeds averaged first)."""
    from scipy.stats import ttest_1samp
    pairs = paired_values(df_a, df_b, metric)
    if len(pairs) == 0:
        return PairedTest(0, float("nan"), float("nan"), False, 0, 0, float("nan"))
    per = pairs.groupby(level=PROMPT_KEY, sort=True).mean()
    a, b = per["a"].to_numpy(dtype=float), per["b"].to_numpy(dtype=float)
    d = b - a
    n = d.size
    binary = bool(np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0))))
    better, worse = int(np.sum(d > 0)), int(np.sum(d < 0))
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    if binary:
        p = mcnemar_exact(worse, better)
    elif n < 2:
        p = float("nan")
    elif sd == 0:
        p = 1.0 if d[0] == 0 else 0.0
    else:
        p = float(ttest_1samp(d, 0.0).pvalue)
    return PairedTest(n, float(d.mean()), sd, binary, better if binary else 0, worse if binary else 0, p)


def _check_alpha_power(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")


def power_paired_t(n: int, effect: float, sd: float, alpha: float = DEFAULT_ALPHA) -> float:
    """Power of the two-sided paired t test with ``n`` prompts when the true mean difference is
    ``effect`` and the differences' sd is ``sd`` (noncentral t, both tails)."""
    from scipy.stats import nct, t
    if n < 2:
        return 0.0
    df = n - 1
    nc = effect / sd * np.sqrt(n)
    crit = t.ppf(1 - alpha / 2, df)
    upper, lower = nct.sf(crit, df, abs(nc)), nct.cdf(-crit, df, abs(nc))
    # far in a tail scipy's noncentral t can return NaN: there the tail is 1 or 0
    upper = (1.0 if abs(nc) > crit else 0.0) if np.isnan(upper) else upper
    lower = 0.0 if np.isnan(lower) else lower
    return float(min(1.0, upper + lower))


def sample_size_paired_t(effect: float, sd: float, alpha: float = DEFAULT_ALPHA,
                         power: float = DEFAULT_POWER) -> int:
    """The fewest prompts for which the two-sided paired t test at ``alpha`` detects a true
    mean difference ``effect`` with at least ``power`` (exact, by the noncentral t).
    Cohen's d = effect / sd of 0.5 at alpha 0.05 and power 0.8 needs 34."""
    _check_alpha_power(alpha, power)
    if effect == 0 or not sd > 0:
        raise ValueError(f"need effect != 0 and sd > 0, got effect={effect!r}, sd={sd!r}")
    from scipy.stats import norm
    n = max(2, int(np.floor(((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / effect) ** 2)))
    while power_paired_t(n, abs(effect), sd, alpha) < power:
        n += 1
    return n


def mde_paired_t(n: int, sd: float, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float:
    """The smallest true mean difference the two-sided paired t test with ``n`` prompts
    detects with ``power`` (0 when sd is 0; NaN below two prompts)."""
    _check_alpha_power(alpha, power)
    if n < 2 or np.isnan(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq
    hi = 40 * sd / np.sqrt(n)  # a noncentrality of 40, raised while the power stays short (tiny n)
    while power_paired_t(n, hi, sd, alpha) < power:
        hi *= 4
        if hi > 1e6 * sd:
            return float("nan")
    return float(brentq(lambda e: power_paired_t(n, e, sd, alpha) - power, 1e-9 * sd, hi, xtol=1e-10 * sd))


def sample_size_mcnemar(effect: float, discordant: float, alpha: float = DEFAULT_ALPHA,
                        power: float = DEFAULT_POWER) -> int:
    """Pairs needed for McNemar's test (two-sided ``alpha``) to detect a difference in
    proportions ``effect`` with ``power`` when a share ``discordant`` of the pairs disagree
    (Connor 1987; see the section comment). Needs discordant >= |effect| (the difference
    cannot exceed the discordant share)."""
    _check_alpha_power(alpha, power)
    e = abs(effect)
    if not 0 < e <= discordant <= 1:
        raise ValueError(f"need 0 < |effect| <= discordant <= 1, got effect={effect!r}, discordant={discordant!r}")
    from scipy.stats import norm
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return int(np.ceil((za * np.sqrt(discordant) + zb * np.sqrt(discordant - e ** 2)) ** 2 / e ** 2))


def mde_mcnemar(n: int, discordant: float, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float:
    """The smallest difference in proportions McNemar's test over ``n`` pairs detects with
    ``power`` (the formula of :func:`sample_size_mcnemar` solved for the effect); NaN when the
    discordant share is 0 or unknown, or no effect up to it is detectable."""
    _check_alpha_power(alpha, power)
    if n < 1 or not discordant > 0:
        return float("nan")
    from scipy.optimize import brentq
    from scipy.stats import norm
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)

    def needed(e: float) -> float:
        return (za * np.sqrt(discordant) + zb * np.sqrt(max(discordant - e ** 2, 0.0))) ** 2 / e ** 2 - n

    if needed(discordant) > 0:
        return float("nan")
    return float(brentq(needed, 1e-9, discordant, xtol=1e-12))


def paired_binary_equivalence_p(n_worse: int, n_better: int, n_pairs: int, margin: float) -> float:
    """Exact equivalence test on paired 0/1 outcomes: H0 |p_better - p_worse| >= margin.

    The difference is psi * (1 - 2q), psi the discordant share and q the share of discordant
    pairs that favour the control. At level a: psi_U, the one-sided Clopper-Pearson upper bound
    of psi at a / 2; reject when psi_U <= margin (the difference cannot reach the margin), or
    when both exact one-sided binomial tests of q, conditional on the D discordant pairs,
    against q0 = (1 + margin / psi_U) / 2 (and its mirror) reject at a / 2. Under H0 either
    psi > psi_U (probability <= a / 2) or |1 - 2q| >= margin / psi_U (the conditional test then
    errs with probability <= a / 2): the test has level a, with no condition on D. The p-value
    is the smallest such a (by bisection; the rejection is monotone in a). With no discordant
    pair it is 2 (1 - margin)^n: 100 concordant pairs are within 0.05 at p = 0.012."""
    from scipy.stats import binom, beta
    d = int(n_worse + n_better)
    if n_pairs <= 0 or not 0 <= n_worse <= d <= n_pairs:
        raise ValueError(f"need 0 <= n_worse, n_better and n_worse + n_better <= n_pairs, "
                         f"got {n_worse}, {n_better}, {n_pairs}")
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), got {margin!r}")
    if d == 0:
        return float(min(1.0, 2 * (1 - margin) ** n_pairs))

    def rejects(a: float) -> bool:
        psi_u = 1.0 if d == n_pairs else float(beta.ppf(1 - a / 2, d + 1, n_pairs - d))
        if psi_u <= margin:
            return True
        q0 = (1 + margin / psi_u) / 2
        # both tails: few pairs favour the control, and few favour the treatment
        return max(binom.cdf(n_worse, d, q0), binom.cdf(n_better, d, q0)) <= a / 2

    if not rejects(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if rejects(mid) else (mid, hi)
    return float(hi)
