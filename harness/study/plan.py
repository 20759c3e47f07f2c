"""``deceval study CONFIG --plan``: how many prompts each claim test needs, and what that costs,
from a pilot (``deceval study CONFIG --pilot N``: the same study, every prompt set cut to N).

Per test, from the pilot's paired differences: the test prompts that detect the declared
smallest effect delta with the study's power at two-sided alpha / m (m: the study's tests;
alpha / m is the level of Holm's first step, so the plan is conservative for Holm):

- continuous metrics, the paired t test: the smallest n with power >= target under the
  noncentral t with the pilot's sd of the per-prompt differences (d = delta / sd = 0.5 at
  alpha 0.05 and power 0.8 gives n = 34);
- binary metrics, McNemar's test (Connor 1987), with psi the pilot's share of discordant
  pairs (at least delta): n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2.

A part needs the largest n of its tests on its test split, so its prompt sets need
ceil(n / (1 - dev_fraction)) prompts in all. Compute: each (model, part) stage's measured
seconds in the pilot (tuning, test and replication runs, on the pilot's machine) scaled by
the ratio of prompts, the same trial budget; the probe's seconds as measured (they do not
depend on the prompts).
"""

from __future__ import annotations

import math
from typing import Any

from harness.analysis.stats import sample_size_mcnemar, sample_size_paired_t


def _needed(r: dict[str, Any], delta: float, alpha: float, power: float) -> int | None:
    if r.get("binary"):
        psi = (r["n_better"] + r["n_worse"]) / r["n"] if r["n"] else 0.0
        return sample_size_mcnemar(delta, max(psi, delta), alpha, power) if psi > 0 else None
    sd = r.get("sd")
    return sample_size_paired_t(delta, sd, alpha, power) if sd and sd > 0 and not math.isnan(sd) else None


def plan(pilot: dict[str, Any], smallest: dict[str, float], alpha: float, power: float,
         dev_fraction: dict[str, float]) -> dict[str, Any]:
    """The plan from a pilot's ``study.json`` (``pilot``); ``dev_fraction``: per part."""
    tests = [r for c in pilot["claims"] for r in c["rows"] if "expect" in r and "missing" not in r]
    m = max(1, len(tests))
    level = alpha / m
    rows = []
    for r in tests:
        delta = smallest[r["metric"]]
        spread = ((r["n_better"] + r["n_worse"]) / r["n"]) if r.get("binary") else r.get("sd")
        rows.append({k: r[k] for k in ("model", "part", "treatment", "control", "metric", "n", "diff", "binary")}
                    | {"smallest_effect": delta, "spread": spread, "n_needed": _needed(r, delta, level, power)})
    stages = pilot.get("stages", {})
    parts, total = [], 0.0
    for key, entry in pilot["tunes"].items():
        model, part = entry["model"], entry["part"]
        need = [r["n_needed"] for r in rows if r["model"] == model and r["part"] == part and r["n_needed"]]
        pilot_prompts = (entry.get("dev_prompts") or 0) + (entry.get("test_prompts") or 0)
        seconds = sum(stages.get(k, {}).get("seconds", 0.0) for k in (key, f"{key}/replicate"))
        n_test = max(need) if need else None
        prompts = None if n_test is None else math.ceil(n_test / (1 - dev_fraction[part]))
        est = None if prompts is None or not pilot_prompts else seconds * prompts / pilot_prompts
        total += est or 0.0
        parts.append({"model": model, "part": part, "test_prompts_needed": n_test, "set_prompts_needed": prompts,
                      "pilot_prompts": pilot_prompts, "pilot_seconds": seconds,
                      "seconds_per_prompt": seconds / pilot_prompts if pilot_prompts else None,
                      "estimated_seconds": est})
    probe = sum(v.get("seconds", 0.0) for k, v in stages.items() if k.endswith("/probe"))
    cpus = sorted({v["cpu"] for v in stages.values() if v.get("cpu")})
    return {"alpha": alpha, "power": power, "tests": m, "level": level, "rows": rows, "parts": parts,
            "probe_seconds": probe, "estimated_seconds": total + probe, "cpu": cpus}


def plan_text(p: dict[str, Any]) -> str:
    lines = [f"Prompts needed per test to detect its smallest effect with {p['power']:.0%} power at two-sided "
             f"alpha {p['alpha']:g} / {p['tests']} tests = {p['level']:.4g} (paired t; binary: McNemar):", "",
             f"{'model':<16}{'part':<14}{'test':<44}{'pilot n':>8}  {'spread':>12}  {'delta':>8}  {'needed':>8}"]
    for r in p["rows"]:
        test = f"{r['treatment']} vs {r['control']}, {r['metric']}"
        spread = "n/a" if r["spread"] is None else f"{r['spread']:.3g}{' disc' if r['binary'] else ' sd'}"
        need = "n/a" if r["n_needed"] is None else str(r["n_needed"])
        lines.append(f"{r['model']:<16}{r['part']:<14}{test[:43]:<44}{r['n']:>8}  {spread:>12}  "
                     f"{r['smallest_effect']:>8g}  {need:>8}")
    lines += ["", "Per part: the largest need sets the test split; the prompt sets need that / (1 - dev_fraction):", ""]
    for q in p["parts"]:
        if q["set_prompts_needed"] is None:
            lines.append(f"{q['model']} {q['part']}: no test with spread in the pilot; no estimate")
            continue
        lines.append(f"{q['model']} {q['part']}: {q['test_prompts_needed']} test prompts, {q['set_prompts_needed']} "
                     f"in its prompt sets; pilot {q['pilot_seconds']:.0f} s for {q['pilot_prompts']} prompts "
                     f"({q['seconds_per_prompt']:.1f} s per prompt, every family and trial) -> about "
                     f"{q['estimated_seconds'] / 3600:.2f} h")
    lines += ["", f"Probe: {p['probe_seconds']:.0f} s. Estimated study: {p['estimated_seconds'] / 3600:.2f} h on "
                  f"{'; '.join(p['cpu']) or 'the pilot machine'}."]
    return "\n".join(lines)
