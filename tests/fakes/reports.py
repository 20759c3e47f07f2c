"""Simulated reports, written through harness.report as the runner writes them: arithmetic
questions answered by strategies of a chosen accuracy, for the regression gate and the
leaderboard tests (no engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.metrics import score_rows
from harness.plan import builtin_columns
from harness.report import write_run_json, write_unit
from harness.rows import sample_schema

METRICS = ["exact_match", "contains_answer", "rep_2", "eos_share", "length"]
N_PROMPTS = 60


def unit_rows(label: str, accuracy: float, rng_seed: int, run_id: str, repeat: bool = False, wsp: bool = False, *,
              right: list[bool] | None = None, prompt_set: str = "maths", errors: frozenset[int] = frozenset(),
              metrics: list[str] = METRICS):
    """One unit: arithmetic questions; the strategy answers right with prob `accuracy`, or as
    `right` says (one entry per prompt); the prompts in `errors` are error rows."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for p in range(N_PROMPTS if right is None else len(right)):
        ok = rng.random() < accuracy if right is None else right[p]
        answer = str(p + 3) if ok else str(p + 4)
        tail = " and so on and so on and so on" if repeat else " because the sum is simple"
        rows.append({
            "run_id": run_id, "unit_id": f"unit-{label}", "model_ref": "fake", "strategy_name": label.split("-")[0],
            "strategy_label": label, "strategy_id": f"id-{label}", "strategy_params": "{}", "prompt_set": prompt_set,
            "prompt_id": f"{prompt_set}-{p:03d}", "prompt_hash": "h", "prompt": f"Question: What is {p} + 3?\nAnswer:",
            "reference": str(p + 3), "aliases": [], "sample_index": 0, "seed": 1000 + p, "base_seed": 0,
            "completion": "" if p in errors else f"{answer}\n{tail}", "prompt_tokens": 12,
            "completion_tokens": 8 + (p % 5), "finish_reason": "eos" if p % 3 else "length",
            "latency_s": 0.1 + 0.01 * p, "unit_seconds": 2.0, "cached_tokens": 0, "engine_requests": 1,
            "computed_tokens": 20 + (p % 5), "error": "EngineDeadError: engine died" if p in errors else None,
            "mean_log_possibilities": (1.5 + 0.01 * p) if wsp else None,
        })
    score_rows(rows, metrics)
    return rows


def write_report(root: Path, run_id: str, units: dict[str, list[dict]], config: dict | None = None,
                 metrics: list[str] = METRICS) -> Path:
    """A report written through harness.report like the runner writes it: label -> rows."""
    run_dir = root / run_id
    schema = sample_schema(metrics, *builtin_columns())
    for label, rows in units.items():
        write_unit(run_dir, f"model=fake/strategy={label}/unit-{label}.parquet", rows, schema, {"unit_id": f"unit-{label}"})
    write_run_json(run_dir, {"run_id": run_id, "status": "complete", "metrics": metrics, "config": config or {},
                             "models": {"fake": {"architecture": {"hidden_size": 576, "num_hidden_layers": 30,
                                                                  "vocab_size": 49152}}}})
    return run_dir


def make_report(root: Path, run_id: str, strategies: dict[str, tuple[float, int, bool]], wsp: str | None = None,
                config: dict | None = None) -> Path:
    """A report of simulated strategies. strategies: label -> (accuracy, rng seed, repetitive)."""
    units = {label: unit_rows(label, acc, seed, run_id, repeat, wsp == label)
             for label, (acc, seed, repeat) in strategies.items()}
    return write_report(root, run_id, units, config)


GOOD = {"greedy": (0.9, 1, False), "top_p-0.9": (0.6, 2, False)}
