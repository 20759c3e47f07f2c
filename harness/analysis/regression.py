"""The nightly regression gate: compare a candidate run against a baseline run.

For each model, strategy (paired by label) and metric, the rows are paired on prompt, seed
and sample index, and the paired difference candidate - baseline is averaged per prompt.

The gate's rule is non-inferiority, with the metric's tolerance as the margin: a gated
metric passes only when the candidate is shown not worse than baseline - tolerance:

- the one-sided ``confidence`` paired-bootstrap bound of the difference on the worse side
  (the lower bound when higher is better) lies within the margin (bound >= -tolerance;
  the upper bound <= +tolerance when lower is better);
- a binary metric (every paired value 0 or 1: exact_match, contains_answer, numeric_match,
  pass_at_1) must also pass the exact conditional McNemar test of "worse by the margin"
  (:func:`harness.analysis.stats.paired_binary_noninferiority_p`) at p <= 1 - confidence. The
  table also gives the two-sided exact McNemar p-value (no margin), for information.

Guarantees under that rule: identical runs pass at any tolerance, 0 included (every
difference is exactly 0, so the bound is 0). With tolerance 0 a candidate one sample worse
on a few prompts fails: its worse-side bound is below 0 and non-inferiority cannot be
shown; tolerance 0 is therefore an exact-reproduction gate, and a metric that may move by
noise needs a margin. The ``verdict`` column (regressed / improved / unchanged: the whole
two-sided CI beyond the tolerance on one side, or not) is informational; ``regressed``
implies "not non-inferior", not the reverse.

The gate also fails, whatever the metric tests say, when

- a baseline (model, strategy) is missing from the candidate (``fail_on_missing``);
- the (prompt_set, prompt_id, prompt_hash) set of a (model, strategy) differs between the
  two runs (other prompts, or other prompt text, under the same labels);
- the candidate's share of error rows exceeds the baseline's by more than
  ``max_error_share_increase``;
- a gated metric's coverage (the share of the baseline's samples, keyed by prompt, seed and
  sample index, that have a value) is lower in the candidate by more than
  ``max_coverage_drop``;
- a gated metric the baseline has a value for cannot be compared: the candidate lacks the
  column or has no value for any of the baseline's samples, or the metric runs generated
  code (pass@k) that the report lacks and ``execute_code`` was not given;
- no gated metric was compared at all.

A gated metric the baseline has no value for (for a model, strategy) is not compared there
and is listed as a note. Gate settings come from a YAML file (``deceval compare --gate
FILE``) holding either a ``regression:`` mapping or the mapping itself, or else from the
``regression:`` section of the BASELINE's run config (``run.json`` ``config.regression``),
never from the candidate's; otherwise :data:`DEFAULT_GATES` with the defaults below::

    regression:
      confidence: 0.95       # level of the one-sided bounds and the two-sided CI, in (0.5, 1)
      n_boot: 2000           # bootstrap resamples, >= 100
      fail_on_missing: true  # a baseline strategy absent from the candidate fails the gate
      max_error_share_increase: 0.0  # candidate error-row share - baseline's, in [0, 1]
      max_coverage_drop: 0.0         # baseline coverage - candidate coverage, in [0, 1]
      gates:                 # metric -> tolerance (the margin) in the metric's own units (>= 0)
        contains_answer: {tolerance: 0.02}
        rep_4: {tolerance: 1.0}
"""

from __future__ import annotations

import difflib
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from harness.analysis.cost import TIMING_METRICS, repeat_values, timing_bound
from harness.analysis.leaderboard import rescore_missing
from harness.analysis.stats import (
    PAIR_KEY,
    bootstrap_bound,
    bootstrap_ci,
    mcnemar_exact,
    paired_binary_noninferiority_p,
    paired_values,
    per_prompt,
    prompt_diffs,
)
from harness.analysis.tables import format_table
from harness.config import GateConfig, load_gate_config
from harness.metrics import METRICS, direction_word
from harness.metrics.sandbox import humaneval_task
from harness.tasks import HUMANEVAL_SET
from harness.report import locate, read_run_json, read_samples

#: Columns every report row must carry for the pairing and the prompt-set check.
REQUIRED_COLUMNS = ("model", "strategy_label", "prompt_set", "prompt_id", "prompt_hash", "base_seed", "sample_index")
#: The columns that name a prompt and its text, compared between the two runs.
PROMPT_IDENTITY = ["prompt_set", "prompt_id", "prompt_hash"]
#: Slack for comparing shares computed from counts (floating point only, not a tolerance).
_EPS = 1e-12
_SHOWN = 3  # differing prompt ids named per message

@dataclass
class Comparison:
    #: one row per model, strategy, metric: means, paired diff and CI, bound, tests, verdict
    table: Any
    gate: GateConfig
    #: baseline (model, strategy) pairs absent from the candidate
    missing: list[dict[str, str]]
    #: one row per baseline model, strategy: row counts, error-row shares, prompt-set match
    checks: Any = None
    #: gate failures that are not a metric's test (values, coverage, errors, prompt sets, ...)
    problems: list[str] = field(default_factory=list)
    #: informational lines (a gated metric the baseline lacks, an ignored candidate gate, ...)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        out = []
        t = self.table
        bad = t[t["gated"] & (t["non_inferior"] == False)] if len(t) else t  # noqa: E712 - a column of objects
        alpha = 1 - self.gate.confidence
        for r in bad.itertuples(index=False):
            side = "lower" if r.direction == "higher" else "upper"
            margin = -r.tolerance if r.direction == "higher" else r.tolerance
            msg = (f"{r.model} / {r.strategy} / {r.metric}: not shown non-inferior: {r.baseline:.4g} -> "
                   f"{r.candidate:.4g} (diff {r.diff:+.4g}; one-sided {self.gate.confidence:.0%} {side} bound "
                   f"{r.bound:+.4g}, margin {margin:+g}")
            if not math.isnan(r.ni_p):
                msg += f"; exact test p = {r.ni_p:.3g}" + (f" > {alpha:g}" if r.ni_p > alpha else "")
            out.append(msg + (")" if r.verdict != "regressed" else "; regressed)"))
        out += self.problems
        if self.gate.fail_on_missing:
            out += [f"{m['model']} / {m['strategy']}: in the baseline, missing from the candidate" for m in self.missing]
        return out

    @property
    def passed(self) -> bool:
        return not self.failures


def verdict(diff_low: float, diff_high: float, higher_is_better: bool | None, tolerance: float) -> str:
    """regressed / improved / unchanged from the two-sided CI of candidate - baseline (informational)."""
    if higher_is_better is None or math.isnan(diff_low) or math.isnan(diff_high):
        return "unchanged" if higher_is_better is None else "n/a"
    worse_low, worse_high = (-diff_high, -diff_low) if higher_is_better else (diff_low, diff_high)
    if worse_low > tolerance:
        return "regressed"
    if worse_high < -tolerance:
        return "improved"
    return "unchanged"


def non_inferior(bound: float, higher_is_better: bool, tolerance: float) -> bool:
    """The bootstrap half of the rule: the worse-side bound lies within the margin (inclusive,
    so a zero-width interval at 0 passes a zero margin)."""
    if math.isnan(bound):
        return False
    return bound >= -tolerance if higher_is_better else bound <= tolerance


def _error_mask(df: Any) -> Any:
    """Error rows, as :func:`harness.metrics.is_error` sees them (a non-empty error)."""
    import pandas as pd
    if "error" not in df:
        return pd.Series(False, index=df.index)
    return df["error"].notna() & (df["error"].astype(str) != "")


def _read(run_dir: Path, role: str) -> Any:
    try:
        df = read_samples(run_dir)
    except pa.ArrowException as exc:
        raise ValueError(f"{role} {run_dir}: cannot read its samples/ Parquet files ({str(exc)[:200]})") from None
    lacking = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if len(df) == 0 or lacking:
        what = "no sample rows" if len(df) == 0 else f"rows without the column(s) {lacking}"
        raise ValueError(f"{role} {run_dir}: the report has {what}; expected a report written by 'deceval run' "
                         f"(is the run finished?)")
    df = df.copy()
    df["_error"] = _error_mask(df)
    return df


def _check_metric_names(names: Sequence[str], columns: Any) -> None:
    for n in names:
        if n not in METRICS and n not in columns:
            close = difflib.get_close_matches(n, [*METRICS.names(), *map(str, columns)], n=1)
            raise ValueError(f"--metrics: unknown metric {n!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                             + "; 'deceval metrics' lists them")


def _needs_code(metric: str) -> bool:
    return metric in METRICS and METRICS.get(metric).runs_code


def _runs_code_here(metric: str, rows: Any) -> bool:
    """Whether a code metric (pass@k) would have a value on some of ``rows``: rows that
    answer a HumanEval task, by the rule the metric itself scores them with."""
    if not _needs_code(metric):
        return False
    candidates = rows[rows["prompt_set"] == HUMANEVAL_SET]
    try:
        return any(humaneval_task(r) is not None for r in candidates.to_dict("records"))
    except ImportError:  # the humaneval extra is absent: the rows claim the set, so computing it needs the code
        return len(candidates) > 0


def _has_gate(meta: Mapping[str, Any]) -> bool:
    config = meta.get("config")
    return isinstance(config, Mapping) and config.get("regression") is not None


def _settings(g: GateConfig) -> tuple[Any, ...]:
    return (g.gates, g.confidence, g.n_boot, g.fail_on_missing, g.max_error_share_increase, g.max_coverage_drop)


def _prompt_problem(model: str, label: str, ga: Any, gb: Any) -> str | None:
    """A message when the two runs' (prompt_set, prompt_id, prompt_hash) sets differ."""
    def ids(df: Any) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for s, i, h in df[PROMPT_IDENTITY].astype(object).itertuples(index=False):
            out.setdefault((str(s), str(i)), set()).add("" if h is None else str(h))
        return out
    a, b = ids(ga), ids(gb)
    if a == b:
        return None
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])

    def show(keys: list[tuple[str, str]]) -> str:
        return ", ".join(f"{s}/{i}" for s, i in keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")
    parts = [f"{len(only_a)} only in the baseline (e.g. {show(only_a)})" if only_a else "",
             f"{len(only_b)} only in the candidate (e.g. {show(only_b)})" if only_b else "",
             f"{len(changed)} with other text (prompt_hash; e.g. {show(changed)})" if changed else ""]
    return (f"{model} / {label}: the prompt sets differ: " + "; ".join(p for p in parts if p)
            + "; a gate compares the same prompts: rerun the candidate on the baseline's config")


#: The comparison table's columns.
TABLE_COLUMNS = ["model", "strategy", "metric", "direction", "baseline", "candidate", "diff", "ci_low", "ci_high",
                 "n_prompts", "n_pairs", "coverage_baseline", "coverage_candidate", "verdict", "bound", "mcnemar_p",
                 "ni_p", "non_inferior", "gated", "tolerance"]


def _strategy_checks(model: str, label: str, ga: Any, gb: Any, gate: GateConfig) -> tuple[dict, list[str], list[str]]:
    """The per-strategy checks: prompt sets and error-row shares -> (checks row, problems, notes)."""
    problems, notes = [], []
    err_a, err_b = float(ga["_error"].mean()), float(gb["_error"].mean())
    prompt_msg = _prompt_problem(model, label, ga, gb)
    if prompt_msg:
        problems.append(prompt_msg)
    if err_b - err_a > gate.max_error_share_increase + _EPS:
        problems.append(f"{model} / {label}: error rows {err_a:.1%} of {len(ga)} in the baseline -> {err_b:.1%} "
                        f"of {len(gb)} in the candidate (max_error_share_increase {gate.max_error_share_increase:g})")
    ids_a, ids_b = ([sorted(map(str, set(g["strategy_id"]))) if "strategy_id" in g else [] for g in (ga, gb)])
    if ids_a != ids_b:
        notes.append(f"{model} / {label}: another strategy config under the same label (strategy_id {ids_a} -> {ids_b})")
    row = {"model": model, "strategy": label, "rows_baseline": len(ga), "rows_candidate": len(gb),
           "errors_baseline": err_a, "errors_candidate": err_b, "prompts": "differ" if prompt_msg else "same"}
    return row, problems, notes


def _paired_tests(pairs: Any, hib: bool | None, tol: float, gate: GateConfig, seed: int) -> dict[str, Any]:
    """The paired CI, the worse-side bound and, for 0/1 values, the exact tests; the rule's verdict."""

    diffs = prompt_diffs(pairs)
    d = bootstrap_ci(diffs, gate.n_boot, gate.confidence, seed)
    out = {"diff": d.mean, "ci_low": d.low, "ci_high": d.high, "n_prompts": d.n, "n_pairs": len(pairs),
           "verdict": verdict(d.low, d.high, hib, tol), "bound": float("nan"), "mcnemar_p": float("nan"),
           "ni_p": float("nan"), "non_inferior": None}
    if hib is None:
        return out
    out["bound"] = bootstrap_bound(diffs, "lower" if hib else "upper", gate.n_boot, gate.confidence, seed)
    out["non_inferior"] = non_inferior(out["bound"], hib, tol)
    if np.isin(pairs.to_numpy(), (0.0, 1.0)).all():
        worse, better = (pairs["a"] > pairs["b"]), (pairs["b"] > pairs["a"])
        n_worse, n_better = (int(worse.sum()), int(better.sum())) if hib else (int(better.sum()), int(worse.sum()))
        out["mcnemar_p"] = mcnemar_exact(n_worse, n_better)
        out["ni_p"] = paired_binary_noninferiority_p(n_worse, n_better, len(pairs), tol)
        out["non_inferior"] = out["non_inferior"] and out["ni_p"] <= 1 - gate.confidence
    return out


def _compare_metric(m: str, ga: Any, gb: Any, gate: GateConfig, execute_code: bool,
                    seed: int) -> tuple[dict[str, Any] | None, str | None, bool]:
    """One metric of one strategy -> (table row or None, gate problem or None, whether
    the baseline has no value for it)."""
    import pandas as pd

    gated = m in gate.gates
    code_hint = (": it runs generated code; add --execute-code (compare(..., execute_code=True)) to compute it"
                 if _needs_code(m) and not execute_code else "")
    if m not in ga.columns or not (ga[m].notna() & ~ga["_error"]).any():
        if gated and code_hint and m not in ga.columns and _runs_code_here(m, ga):
            lacking = "both reports lack it" if m not in gb.columns else "the baseline report lacks it"
            return None, f"gated, but {lacking}{code_hint}", False
        return None, None, True
    if m not in gb.columns:
        return None, (f"gated, but the candidate report has no {m} column{code_hint}" if gated else None), False
    if m in TIMING_METRICS:
        return _compare_timing(m, ga, gb, gate)
    if m in METRICS and METRICS.get(m).per_unit:
        return _compare_per_unit(m, ga, gb, gate)
    pairs = paired_values(ga, gb, m)
    base_keys = pd.MultiIndex.from_frame(ga[PAIR_KEY]).unique()
    scored_a, scored_b = ga[ga[m].notna() & ~ga["_error"]], gb[gb[m].notna() & ~gb["_error"]]
    cov_a = len(pd.MultiIndex.from_frame(scored_a[PAIR_KEY]).unique()) / len(base_keys)
    cov_b = len(base_keys.intersection(pd.MultiIndex.from_frame(scored_b[PAIR_KEY]).unique())) / len(base_keys)
    if len(pairs) == 0:
        return None, (f"gated, but the candidate has no value for any of the baseline's {len(scored_a)} scored "
                      f"samples (errors, other prompts, seeds or sample indices?)" if gated else None), False
    problem = None
    if gated and cov_a - cov_b > gate.max_coverage_drop + _EPS:
        problem = (f"coverage {cov_a:.1%} -> {cov_b:.1%} of the baseline's {len(base_keys)} samples have a value "
                   f"(max_coverage_drop {gate.max_coverage_drop:g})")
    hib = METRICS.get(m).higher_is_better if m in METRICS else None
    tol = gate.gates.get(m, 0.0)
    row = {"metric": m, "direction": direction_word(hib),
           "baseline": float(per_prompt(ga, m).mean()), "candidate": float(per_prompt(gb, m).mean()),
           "coverage_baseline": cov_a, "coverage_candidate": cov_b, "gated": gated, "tolerance": tol,
           **_paired_tests(pairs, hib, tol, gate, seed)}
    return row, problem, False


def _compare_timing(m: str, ga: Any, gb: Any, gate: GateConfig) -> tuple[dict[str, Any] | None, str | None, bool]:
    """A timing metric (harness.analysis.cost): the rows of a unit share one timing, so
    pairing prompts would measure nothing of the run-to-run noise. The two runs' timing
    repeats are compared instead (Welch's t, the tolerance as the margin); with fewer than 2
    repeats on a side there is no noise estimate, and the gate decides nothing on it."""
    hib = METRICS.get(m).higher_is_better
    tol = gate.gates.get(m, 0.0)
    gated = m in gate.gates
    base, cand = repeat_values(ga, m), repeat_values(gb, m)
    side = "lower" if hib else "upper"
    diff, low, high, bound = timing_bound(base, cand, side, gate.confidence)
    row = {"metric": m, "direction": direction_word(hib),
           "baseline": float(np.mean(base)) if base else math.nan,
           "candidate": float(np.mean(cand)) if cand else math.nan,
           "diff": diff, "ci_low": low, "ci_high": high, "n_prompts": 0, "n_pairs": min(len(base), len(cand)),
           "coverage_baseline": math.nan, "coverage_candidate": math.nan, "gated": gated, "tolerance": tol,
           "verdict": verdict(low, high, hib, tol), "bound": bound, "mcnemar_p": math.nan, "ni_p": math.nan,
           "non_inferior": None if math.isnan(bound) else non_inferior(bound, hib, tol)}
    problem = None
    if gated and math.isnan(bound):
        problem = (f"gated, but timed {len(base)} time(s) in the baseline and {len(cand)} in the candidate: a timing "
                   f"needs generation.timing_repeats >= 2 in both runs to tell a change from noise")
        row["non_inferior"] = None
    return row, problem, False


def _compare_per_unit(m: str, ga: Any, gb: Any, gate: GateConfig) -> tuple[dict[str, Any] | None, str | None, bool]:
    """A metric with one value per unit (``Metric.per_unit``: MAUVE): a unit's rows repeat
    its value, so pairing prompts would give a zero-width interval around one draw. The
    two runs' values are shown side by side and the gate decides nothing on it; gated, it
    is a metric the gate cannot compare."""
    hib = METRICS.get(m).higher_is_better
    tol = gate.gates.get(m, 0.0)
    gated = m in gate.gates
    base = ga.loc[ga[m].notna() & ~ga["_error"], m]
    cand = gb.loc[gb[m].notna() & ~gb["_error"], m]
    row = {"metric": m, "direction": direction_word(hib),
           "baseline": float(base.mean()) if len(base) else math.nan,
           "candidate": float(cand.mean()) if len(cand) else math.nan,
           "diff": float(cand.mean() - base.mean()) if len(base) and len(cand) else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "n_prompts": 0, "n_pairs": 0,
           "coverage_baseline": math.nan, "coverage_candidate": math.nan, "gated": gated, "tolerance": tol,
           "verdict": "n/a", "bound": math.nan, "mcnemar_p": math.nan, "ni_p": math.nan, "non_inferior": None}
    problem = (f"gated, but {m} has one value per unit (a set-level metric): there is no interval over prompts to "
               f"tell a change from noise; compare it on the leaderboard across runs or seeds, and gate a per-sample "
               f"metric") if gated else None
    return row, problem, False


def compare(baseline: Path | str, candidate: Path | str, gate: GateConfig | None = None,
            metrics: Sequence[str] | None = None, seed: int = 0, execute_code: bool = False) -> Comparison:
    """Gate ``candidate`` against ``baseline`` (report folders). ``gate`` None: the
    baseline's ``config.regression``, else the defaults. ``metrics`` adds informational
    metrics; gated metrics are always compared. ``execute_code`` lets a code metric (pass@k)
    that a report lacks be computed by running the generated code."""
    import pandas as pd


    base_dir, cand_dir = locate(baseline, "BASELINE"), locate(candidate, "CANDIDATE")  # folders or URIs
    base_meta, cand_meta = read_run_json(base_dir), read_run_json(cand_dir)
    gate = gate or load_gate_config(None, base_meta, base_dir)
    notes = _meta_notes(base_meta, cand_meta, gate)
    a, b = _read(base_dir, "baseline"), _read(cand_dir, "candidate")
    if metrics is None:
        metrics = [m for m in METRICS.names() if m in a.columns and m in b.columns]
    else:
        _check_metric_names(metrics, a.columns)
        metrics = list(dict.fromkeys(metrics))
    metrics += [m for m in gate.gates if m not in metrics]
    a = rescore_missing(a, metrics, execute_code=execute_code)
    b = rescore_missing(b, metrics, execute_code=execute_code)

    rows, checks, problems, missing = [], [], [], []
    not_in_baseline: dict[str, list[str]] = {}  # gated metric -> the model/strategy the baseline has no value for
    cand_keys = set(zip(b["model"], b["strategy_label"]))
    for model, label in sorted(set(zip(a["model"], a["strategy_label"]))):
        if (model, label) not in cand_keys:
            missing.append({"model": model, "strategy": label})
            continue
        ga = a[(a["model"] == model) & (a["strategy_label"] == label)]
        gb = b[(b["model"] == model) & (b["strategy_label"] == label)]
        check, strategy_problems, strategy_notes = _strategy_checks(model, label, ga, gb, gate)
        checks.append(check)
        problems += strategy_problems
        notes += strategy_notes
        for m in metrics:
            row, problem, absent = _compare_metric(m, ga, gb, gate, execute_code, seed)
            if row is not None:
                rows.append({"model": model, "strategy": label, **row})
            if problem is not None:
                problems.append(f"{model} / {label} / {m}: {problem}")
            if absent and m in gate.gates:
                not_in_baseline.setdefault(m, []).append(f"{model}/{label}")
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    notes += [f"{m}: gated, but the baseline has no value for it in {', '.join(where)}; not compared there"
              for m, where in not_in_baseline.items()]
    if not (len(table) and table["gated"].any()):
        problems.append("no gated metric was compared " + (f"(gates: {sorted(gate.gates)})" if gate.gates else
                                                           "(the gate lists no metric)")
                        + "; nothing shows that the candidate is not worse")
    return Comparison(table, gate, missing, pd.DataFrame(checks), problems, notes)


def _meta_notes(base_meta: Mapping[str, Any], cand_meta: Mapping[str, Any], gate: GateConfig) -> list[str]:
    """Notes from the two run.json files: an ignored candidate gate, an unfinished run."""
    notes = []
    try:
        own = load_gate_config(None, cand_meta) if _has_gate(cand_meta) else None
    except ValueError:  # not ours to validate: it is ignored either way
        own = GateConfig(gates={})
    if own is not None and _settings(own) != _settings(gate):
        notes.append("the candidate's run.json config.regression differs from the gate used; ignored "
                     "(the gate comes from --gate or the baseline, never the candidate)")
    for role, meta in (("baseline", base_meta), ("candidate", cand_meta)):
        if meta.get("status", "complete") != "complete":
            notes.append(f"the {role} run's status is {meta.get('status')!r}, not 'complete'")
    return notes


def rule_text(gate: GateConfig) -> str:
    """The gate's rule in words (the header of ``deceval compare``)."""
    c, alpha = f"{gate.confidence:.0%}", f"{1 - gate.confidence:.2g}"
    rule = (f"rule: non-inferiority, the tolerance as margin: a gated metric passes when the one-sided {c} "
            f"paired-bootstrap bound of candidate - baseline on the worse side ({gate.n_boot} resamples of prompts) "
            f"is within the margin (bound), and for a 0/1 metric the exact test of 'worse by the margin' gives "
            f"p <= {alpha} (ni_p); verdict (the two-sided {c} CI against the tolerance) and mcnemar_p (exact, "
            f"two-sided, no margin) are informational.")
    also = (f"also fails: other prompts under a label; error-row share up by more than "
            f"{gate.max_error_share_increase:g}; a gated metric's coverage down by more than "
            f"{gate.max_coverage_drop:g}; a gated metric the baseline has that cannot be compared; no gated metric "
            f"compared" + ("; a baseline strategy missing from the candidate." if gate.fail_on_missing else "."))
    return "\n".join(textwrap.fill(t, 110, subsequent_indent="  ") for t in (rule, also))


def format_comparison(c: Comparison) -> str:
    t = c.table.copy()
    if t.empty:
        body = "(no metric compared)"
    else:
        def num(v: float, fmt: str = ".4g") -> str:
            return "" if v is None or math.isnan(v) else format(v, fmt)
        t["coverage"] = [f"{x:.0%}->{y:.0%}" for x, y in zip(t["coverage_baseline"], t["coverage_candidate"])]
        for col in ("baseline", "candidate", "diff", "ci_low", "ci_high", "bound"):
            t[col] = t[col].map(num)
        for col in ("mcnemar_p", "ni_p"):
            t[col] = t[col].map(lambda v: num(v, ".3g"))
        t["non_inferior"] = [("" if ni is None else "yes" if ni else "NO" if g else "no")
                             for ni, g in zip(t["non_inferior"], t["gated"])]
        t["verdict"] = [v.upper() if (v == "regressed" and g) else v for v, g in zip(t["verdict"], t["gated"])]
        t["tolerance"] = [f"{x:g}" if g else "" for x, g in zip(t["tolerance"], t["gated"])]
        t["gated"] = t["gated"].map(lambda g: "yes" if g else "")
        body = format_table(t[["model", "strategy", "metric", "baseline", "candidate", "diff", "ci_low", "ci_high",
                               "bound", "n_prompts", "coverage", "mcnemar_p", "ni_p", "non_inferior", "verdict",
                               "gated", "tolerance"]])
    lines = [f"gate: {c.gate.source}", rule_text(c.gate), "", body]
    if c.checks is not None and len(c.checks):
        k = c.checks.copy()
        for col in ("errors_baseline", "errors_candidate"):
            k[col] = k[col].map(lambda v: f"{v:.1%}")
        lines += ["", format_table(k)]
    if c.missing:
        lines.append("missing from the candidate: " + ", ".join(f"{m['model']}/{m['strategy']}" for m in c.missing))
    lines += [f"note: {n}" for n in c.notes]
    fails = c.failures
    lines.append(f"\nGATE FAILED: {len(fails)} problem(s)\n  " + "\n  ".join(fails) if fails else "\ngate passed")
    return "\n".join(lines)
