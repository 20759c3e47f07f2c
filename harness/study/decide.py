"""How a study decides its claims: paired tests over test prompts, Holm across every test of
the study, equivalence against the declared smallest effect, and the power at the size run.

Per test (model, part, treatment vs control, metric), with d_i = treatment - control per test
prompt (a prompt's samples and seeds averaged first), oriented by the direction the claim
predicts:

- p: two-sided paired t test of mean(d) = 0; for binary metrics (one 0/1 value per prompt on
  each side) the exact McNemar test (harness.analysis.stats.paired_test).
- p_equiv: TOST against the declared smallest effect of interest delta (|mean(d)| < delta):
  two one-sided t tests, or for binary metrics with few discordant pairs an exact test that
  also bounds the discordant share (harness.analysis.stats.paired_binary_equivalence_p).
- Holm over all m tests of the study, separately for p and for p_equiv, at the study's alpha.
  The adjusted interval is the Bonferroni one, the t interval at 1 - alpha / m: it holds for
  all m tests at once, and where it excludes 0 Holm rejects too (Holm can reject where it
  still touches 0: Holm is the more powerful; the verdict follows Holm's p).
- mde: the smallest true difference the test detects with the study's power at two-sided
  alpha / m (Bonferroni, the level Holm's first step uses: conservative), with the test's own
  spread; n_needed: the prompts that detect delta so.

A test's sign: "+" *as claimed* (Holm-adjusted p <= alpha, the mean on the predicted side),
"-" *against the claim* (the same, on the other side), "=" *equivalent* (no effect larger than
delta: Holm-adjusted TOST p <= alpha), "0" *undecided at this size* (or fewer than MIN_PAIRS
prompts). A claim is *supported* when every test is "+" on every model, *not supported* when
any is "-", *no effect of interest* when none is "-" and any is "=" (a predicted effect shown
absent), else *inconclusive at this size*.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.analysis.stats import holm, paired_test, sample_size_mcnemar, sample_size_paired_t

#: A paired test over fewer prompts decides nothing.
MIN_PAIRS = 10

VERDICTS = {"supported": "supported", "not": "not supported", "none": "no effect of interest",
            "inconclusive": "inconclusive at this size"}
SIGN_WORDS = {"+": "as claimed", "-": "against the claim", "=": "equivalent", "0": "undecided at this size"}


def paired_row(df: Any, test: Any, model: str, smallest: float) -> dict[str, Any]:
    """One test's figures before the multiplicity adjustment (``df``: the part's test rows)."""
    row: dict[str, Any] = {"model": model, "part": test.part, "treatment": test.treatment, "control": test.control,
                           "metric": test.metric, "expect": test.expect, "smallest_effect": smallest}
    if df is None or test.metric not in df:
        return {**row, "sign": "0", "missing": "no test run or metric"}
    a, b = df[df["strategy_label"] == test.control], df[df["strategy_label"] == test.treatment]
    if a.empty or b.empty:
        return {**row, "sign": "0", "missing": "a family has no test rows (no feasible trial)"}
    pt = paired_test(a, b, test.metric)
    if pt.n < 2:
        return {**row, **pt.as_dict(), "sign": "0", "missing": f"{pt.n} paired prompt(s)"}
    return {**row, **pt.as_dict(), "p_equiv": pt.equivalence_p(smallest), "_test": pt}


def sign_of(diff: float, p_holm: float, p_equiv_holm: float, expect: str, alpha: float, n: int) -> str:
    """'+', '-', '=' or '0' from the Holm-adjusted p-values (see the module docstring)."""
    if n < MIN_PAIRS or math.isnan(p_holm):
        return "0"
    if p_holm <= alpha and diff != 0:
        return "+" if (diff > 0) == (expect == "higher") else "-"
    if not math.isnan(p_equiv_holm) and p_equiv_holm <= alpha:
        return "="
    return "0"


def adjust(rows: list[dict[str, Any]], alpha: float, power: float) -> list[dict[str, Any]]:
    """Holm over every row that has a test, the Bonferroni intervals, the signs, and the
    detectable effect and prompts needed at alpha / m. Rows are updated in place and returned."""
    live = [r for r in rows if "_test" in r]
    m = max(1, len(live))
    p_adj = holm([r["p"] for r in live])
    e_adj = holm([r["p_equiv"] for r in live])
    level = alpha / m
    for r, pa, ea in zip(live, p_adj, e_adj):
        pt = r.pop("_test")
        r["p_holm"], r["p_equiv_holm"], r["m"] = float(pa), float(ea), m
        r["low"], r["high"] = pt.interval(0.95)
        r["adj_low"], r["adj_high"] = pt.interval(1 - level)
        r["adj_confidence"] = 1 - level
        r["mde"] = pt.mde(level, power)
        r["n_needed"] = n_needed(pt, r["smallest_effect"], level, power)
        r["sign"] = sign_of(pt.mean, r["p_holm"], r["p_equiv_holm"], r["expect"], alpha, pt.n)
    return rows


def n_needed(pt: Any, smallest: float, alpha: float, power: float) -> int | None:
    """Test prompts that detect ``smallest`` with ``power`` at two-sided ``alpha``, with the
    spread this test showed; None when it showed none (no discordant pair, or sd 0)."""
    if pt.binary:
        psi = pt.discordant
        if not psi > 0:
            return None
        # a discordant share below the effect cannot carry it: plan with at least the effect
        return sample_size_mcnemar(smallest, max(psi, smallest), alpha, power)
    if not pt.sd > 0 or np.isnan(pt.sd):
        return None
    return sample_size_paired_t(smallest, pt.sd, alpha, power)


def verdict(signs: list[str]) -> str:
    if signs and all(s == "+" for s in signs):
        return VERDICTS["supported"]
    if "-" in signs:
        return VERDICTS["not"]
    if "=" in signs:
        return VERDICTS["none"]
    return VERDICTS["inconclusive"]


def decide_tests(claims: Any, samples: dict[str, Any], models: list[str], smallest: dict[str, float],
                 alpha: float, power: float) -> dict[str, list[dict[str, Any]]]:
    """Every paired test of every (non-probe) claim on ``samples`` ("model/part" -> rows), Holm
    applied across all of them together: claim id -> its rows."""
    out = {}
    for claim in claims:
        if claim.probe:
            continue
        out[claim.id] = [paired_row(samples.get(f"{model}/{t.part}"), t, model, smallest[t.metric])
                         for t in claim.tests for model in models]
    adjust([r for rows in out.values() for r in rows], alpha, power)
    return out


def replication_table(original: dict[str, list[dict[str, Any]]],
                      replica: dict[str, list[dict[str, Any]]], replicated_parts: set[str]) -> list[dict[str, Any]]:
    """Per test, its sign on the test split and on the replication set(s), and whether they
    agree; a test on a part with no replication set says so."""
    table = []
    for cid, rows in original.items():
        for i, r in enumerate(rows):
            entry = {"claim": cid, **{k: r[k] for k in ("model", "part", "treatment", "control", "metric")},
                     "sign": r["sign"], "diff": r.get("diff")}
            if r["part"] not in replicated_parts:
                table.append({**entry, "replica_sign": None, "agree": None})
                continue
            rr = replica[cid][i]
            table.append({**entry, "replica_sign": rr["sign"], "replica_diff": rr.get("diff"),
                          "replica_n": rr.get("n"), "agree": rr["sign"] == r["sign"]})
    return table
