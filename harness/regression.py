"""The nightly regression gate: compare a candidate run against a baseline run.

For each model, strategy (paired by label) and metric: the paired difference
candidate - baseline over the same prompts and seeds, with its bootstrap CI, and a verdict:

- ``regressed``: the whole CI lies on the worse side, beyond the metric's tolerance;
- ``improved``: the whole CI lies on the better side, beyond the tolerance;
- ``unchanged``: otherwise (the CI reaches into [-tolerance, +tolerance]).

A gated metric that regressed fails the gate (``deceval compare`` exits with status 1),
as does a gated strategy that the candidate lacks (``fail_on_missing``).

Gate settings come from a YAML file (``deceval compare --gate FILE``) holding either a
``regression:`` mapping or the mapping itself, or from the ``regression:`` section of
the candidate's run config; otherwise :data:`DEFAULT_GATES`::

    regression:
      confidence: 0.95       # CI level, in (0, 1)
      n_boot: 2000           # bootstrap resamples, >= 100
      fail_on_missing: true  # a baseline strategy absent from the candidate fails the gate
      gates:                 # metric -> tolerance in the metric's own units (>= 0)
        contains_answer: {tolerance: 0.02}
        rep_4: {tolerance: 1.0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.report import read_run_json, read_samples

#: Gated by default (task quality; cost metrics are machine dependent and not gated).
DEFAULT_GATES: dict[str, float] = {"exact_match": 0.0, "contains_answer": 0.0, "numeric_match": 0.0, "pass_at_1": 0.0}


@dataclass(frozen=True)
class GateConfig:
    gates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GATES))
    confidence: float = 0.95
    n_boot: int = 2000
    fail_on_missing: bool = True
    source: str = "defaults"


def parse_gate_config(raw: Mapping[str, Any] | None, source: str = "regression") -> GateConfig:
    """Validate a ``regression:`` mapping; errors name the key, the allowed range and the value."""
    if raw is None:
        return GateConfig()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: expected a mapping with gates/confidence/n_boot/fail_on_missing, got {type(raw).__name__}")
    if "regression" in raw and isinstance(raw["regression"], Mapping):
        raw = raw["regression"]
    allowed = {"gates", "confidence", "n_boot", "fail_on_missing"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{source}: unknown key(s) {extra}; allowed: {sorted(allowed)}")
    conf = raw.get("confidence", 0.95)
    if not isinstance(conf, (int, float)) or isinstance(conf, bool) or not 0 < conf < 1:
        raise ValueError(f"{source}.confidence must be in (0, 1), got {conf!r}")
    n_boot = raw.get("n_boot", 2000)
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 100:
        raise ValueError(f"{source}.n_boot must be an integer >= 100, got {n_boot!r}")
    fom = raw.get("fail_on_missing", True)
    if not isinstance(fom, bool):
        raise ValueError(f"{source}.fail_on_missing must be true or false, got {fom!r}")
    gates_raw = raw.get("gates", None)
    if gates_raw is None:
        gates = dict(DEFAULT_GATES)
    else:
        if isinstance(gates_raw, list):
            gates_raw = {g: {} for g in gates_raw}
        if not isinstance(gates_raw, Mapping):
            raise ValueError(f"{source}.gates must be a mapping metric -> {{tolerance: x}} or a list of metric names, "
                             f"got {type(gates_raw).__name__}")
        from harness.metrics import METRICS
        gates = {}
        for name, spec in gates_raw.items():
            where = f"{source}.gates.{name}"
            if name not in METRICS:
                import difflib
                close = difflib.get_close_matches(str(name), METRICS.names(), n=1)
                raise ValueError(f"{where}: unknown metric {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            if METRICS.get(name).higher_is_better is None:
                raise ValueError(f"{where}: metric {name!r} has no direction (informational) and cannot be gated")
            if isinstance(spec, (int, float)) and not isinstance(spec, bool):
                spec = {"tolerance": spec}
            spec = spec or {}
            if not isinstance(spec, Mapping) or set(spec) - {"tolerance"}:
                raise ValueError(f"{where}: expected {{tolerance: <number >= 0>}}, got {spec!r}")
            tol = spec.get("tolerance", 0.0)
            if not isinstance(tol, (int, float)) or isinstance(tol, bool) or tol < 0 or math.isnan(tol):
                raise ValueError(f"{where}.tolerance must be a number >= 0, got {tol!r}")
            gates[name] = float(tol)
    return GateConfig(gates=gates, confidence=float(conf), n_boot=n_boot, fail_on_missing=fom, source=source)


def load_gate_config(path: Path | str | None = None, candidate_run: Mapping[str, Any] | None = None) -> GateConfig:
    if path is not None:
        import yaml
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"gate file not found: {p}")
        return parse_gate_config(yaml.safe_load(p.read_text()) or {}, source=str(p))
    section = ((candidate_run or {}).get("config") or {}).get("regression")
    if section is not None:
        return parse_gate_config(section, source="run.json config.regression")
    return GateConfig()


@dataclass
class Comparison:
    table: Any   # one row per model, strategy, metric
    gate: GateConfig
    missing: list[dict[str, str]]

    @property
    def failures(self) -> list[str]:
        out = []
        t = self.table
        bad = t[(t["gated"]) & (t["verdict"] == "regressed")] if len(t) else t
        for r in bad.itertuples(index=False):
            out.append(f"{r.model} / {r.strategy} / {r.metric}: {r.baseline:.4g} -> {r.candidate:.4g} "
                       f"(diff {r.diff:+.4g}, CI [{r.ci_low:+.4g}, {r.ci_high:+.4g}], tolerance {r.tolerance:g})")
        if self.gate.fail_on_missing:
            out += [f"{m['model']} / {m['strategy']}: in the baseline, missing from the candidate" for m in self.missing]
        return out

    @property
    def passed(self) -> bool:
        return not self.failures


def verdict(diff_low: float, diff_high: float, higher_is_better: bool | None, tolerance: float) -> str:
    """regressed / improved / unchanged from the CI of candidate - baseline."""
    if higher_is_better is None or math.isnan(diff_low) or math.isnan(diff_high):
        return "unchanged" if higher_is_better is None else "n/a"
    worse_low, worse_high = (-diff_high, -diff_low) if higher_is_better else (diff_low, diff_high)
    if worse_low > tolerance:
        return "regressed"
    if worse_high < -tolerance:
        return "improved"
    return "unchanged"


def compare(baseline: Path | str, candidate: Path | str, gate: GateConfig | None = None,
            metrics: Sequence[str] | None = None, seed: int = 0) -> Comparison:
    import pandas as pd

    from harness.leaderboard import rescore_missing
    from harness.metrics import METRICS
    from harness.stats import metric_ci, paired_diff_ci

    base_meta, cand_meta = read_run_json(Path(baseline)), read_run_json(Path(candidate))
    gate = gate or load_gate_config(None, cand_meta)
    a, b = read_samples(baseline), read_samples(candidate)
    if metrics is None:
        metrics = [m for m in METRICS.names() if m in a.columns and m in b.columns]
        metrics += [m for m in gate.gates if m not in metrics]
    a, b = rescore_missing(a, metrics), rescore_missing(b, metrics)
    rows, missing = [], []
    base_keys = sorted(set(zip(a["model"], a["strategy_label"])))
    cand_keys = set(zip(b["model"], b["strategy_label"]))
    for model, label in base_keys:
        if (model, label) not in cand_keys:
            missing.append({"model": model, "strategy": label})
            continue
        ga = a[(a["model"] == model) & (a["strategy_label"] == label)]
        gb = b[(b["model"] == model) & (b["strategy_label"] == label)]
        for m in metrics:
            if m not in ga.columns or m not in gb.columns or not ga[m].notna().any():
                continue
            hib = METRICS.get(m).higher_is_better if m in METRICS else None
            d = paired_diff_ci(ga, gb, m, gate.n_boot, gate.confidence, seed)
            if d.n == 0:
                continue
            tol = gate.gates.get(m, 0.0)
            rows.append({"model": model, "strategy": label, "metric": m,
                         "direction": {True: "higher", False: "lower", None: "none"}[hib],
                         "baseline": metric_ci(ga, m, 200, gate.confidence).mean,
                         "candidate": metric_ci(gb, m, 200, gate.confidence).mean,
                         "diff": d.mean, "ci_low": d.low, "ci_high": d.high, "n_prompts": d.n,
                         "verdict": verdict(d.low, d.high, hib, tol), "gated": m in gate.gates, "tolerance": tol})
    cols = ["model", "strategy", "metric", "direction", "baseline", "candidate", "diff", "ci_low", "ci_high",
            "n_prompts", "verdict", "gated", "tolerance"]
    return Comparison(pd.DataFrame(rows, columns=cols), gate, missing)


def format_comparison(c: Comparison) -> str:
    from harness.runner import format_table
    t = c.table.copy()
    if t.empty:
        body = "(no metric in common)"
    else:
        for col in ("baseline", "candidate", "diff", "ci_low", "ci_high"):
            t[col] = t[col].map(lambda v: f"{v:.4g}")
        t["gated"] = t["gated"].map(lambda g: "yes" if g else "")
        t["verdict"] = [v.upper() if (v == "regressed" and g) else v for v, g in zip(t["verdict"], t["gated"])]
        body = format_table(t.drop(columns=["direction"]))
    lines = [f"gate: {c.gate.source}; {int(c.gate.confidence * 100)}% paired bootstrap CI of candidate - baseline "
             f"over prompts ({c.gate.n_boot} resamples)", body]
    if c.missing:
        lines.append("missing from the candidate: " + ", ".join(f"{m['model']}/{m['strategy']}" for m in c.missing))
    fails = c.failures
    lines.append(f"\nGATE FAILED: {len(fails)} problem(s)\n  " + "\n  ".join(fails) if fails else "\ngate passed")
    return "\n".join(lines)
