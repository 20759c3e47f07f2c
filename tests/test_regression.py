"""The regression gate: a planted regression (a strategy swapped for a worse one) is flagged,
an identical rerun passes; gate settings are validated."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.metrics import score_rows
from harness.regression import GateConfig, compare, load_gate_config, parse_gate_config, verdict
from harness.report import sample_schema, write_run_json, write_unit

METRICS = ["exact_match", "contains_answer", "rep_2", "eos_share", "length"]
N_PROMPTS = 60


def _rows(label: str, accuracy: float, rng_seed: int, run_id: str, repeat: bool = False, wsp: bool = False):
    """One unit: N_PROMPTS arithmetic questions; the strategy answers right with prob `accuracy`."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for p in range(N_PROMPTS):
        right = rng.random() < accuracy
        answer = str(p + 3) if right else str(p + 4)
        tail = " and so on and so on and so on" if repeat else " because the sum is simple"
        rows.append({
            "run_id": run_id, "unit_id": f"unit-{label}", "model_ref": "fake", "strategy_name": label.split("-")[0],
            "strategy_label": label, "strategy_id": f"id-{label}", "strategy_params": "{}", "prompt_set": "maths",
            "prompt_id": f"maths-{p:03d}", "prompt_hash": "h", "prompt": f"Question: What is {p} + 3?\nAnswer:",
            "reference": str(p + 3), "aliases": [], "sample_index": 0, "seed": 1000 + p, "base_seed": 0,
            "completion": f"{answer}\n{tail}", "prompt_tokens": 12, "completion_tokens": 8 + (p % 5),
            "finish_reason": "eos" if p % 3 else "length", "latency_s": 0.1 + 0.01 * p, "unit_seconds": 2.0,
            "cached_tokens": 0, "engine_requests": 1, "computed_tokens": 20 + (p % 5), "error": None,
            "mean_log_possibilities": (1.5 + 0.01 * p) if wsp else None,
        })
    score_rows(rows, METRICS)
    return rows


def make_report(root: Path, run_id: str, strategies: dict[str, tuple[float, int, bool]], wsp: str | None = None) -> Path:
    """A report written through harness.report like the runner writes it. strategies:
    label -> (accuracy, rng seed, repetitive)."""
    run_dir = root / run_id
    schema = sample_schema(METRICS)
    for label, (acc, seed, repeat) in strategies.items():
        rows = _rows(label, acc, seed, run_id, repeat, wsp == label)
        write_unit(run_dir, f"model=fake/strategy={label}/unit-{label}.parquet", rows, schema, {"unit_id": f"unit-{label}"})
    write_run_json(run_dir, {"run_id": run_id, "status": "complete", "metrics": METRICS, "config": {},
                             "models": {"fake": {"architecture": {"hidden_size": 576, "num_hidden_layers": 30,
                                                                  "vocab_size": 49152}}}})
    return run_dir


GOOD = {"greedy": (0.9, 1, False), "top_p-0.9": (0.6, 2, False)}


@pytest.fixture()
def baseline(tmp_path):
    return make_report(tmp_path, "base", GOOD)


def test_identical_rerun_passes(tmp_path, baseline):
    rerun = make_report(tmp_path, "rerun", GOOD)
    c = compare(baseline, rerun)
    assert c.passed, c.failures
    assert set(c.table["verdict"]) == {"unchanged"}
    assert (c.table["diff"] == 0).all()
    assert main(["compare", str(baseline), str(rerun)]) == 0


def test_planted_regression_is_flagged(tmp_path, baseline, capsys):
    # the nightly's "greedy" now behaves like a much worse, repetitive strategy
    swapped = make_report(tmp_path, "swapped", {"greedy": (0.3, 7, True), "top_p-0.9": (0.6, 2, False)})
    c = compare(baseline, swapped)
    assert not c.passed
    t = c.table.set_index(["strategy", "metric"])
    assert t.loc[("greedy", "exact_match"), "verdict"] == "regressed"
    assert t.loc[("greedy", "exact_match"), "ci_high"] < 0
    assert t.loc[("greedy", "rep_2"), "verdict"] == "regressed"     # lower is better: more repetition
    assert t.loc[("top_p-0.9", "exact_match"), "verdict"] == "unchanged"
    assert any("greedy / exact_match" in f for f in c.failures)
    assert not any("top_p" in f for f in c.failures)
    assert main(["compare", str(baseline), str(swapped)]) == 1
    out = capsys.readouterr().out
    assert "GATE FAILED" in out and "REGRESSED" in out
    # the reverse direction is an improvement and passes
    back = compare(swapped, baseline)
    assert back.passed
    assert back.table.set_index(["strategy", "metric"]).loc[("greedy", "exact_match"), "verdict"] == "improved"


def test_ungated_regression_and_tolerance_do_not_fail(tmp_path, baseline):
    swapped = make_report(tmp_path, "swapped", {"greedy": (0.3, 7, True), "top_p-0.9": (0.6, 2, False)})
    gate = parse_gate_config({"gates": {"eos_share": {"tolerance": 0.0}}})
    c = compare(baseline, swapped, gate)
    assert c.passed  # exact_match and rep_2 regressed, but only eos_share (the same on both) is gated
    assert "regressed" in set(c.table["verdict"])
    loose = parse_gate_config({"regression": {"gates": {"exact_match": {"tolerance": 0.9}}}})
    assert compare(baseline, swapped, loose).passed


def test_missing_strategy_fails_when_configured(tmp_path, baseline):
    partial = make_report(tmp_path, "partial", {"greedy": GOOD["greedy"]})
    c = compare(baseline, partial)
    assert not c.passed and any("top_p-0.9" in f and "missing" in f for f in c.failures)
    assert compare(baseline, partial, parse_gate_config({"fail_on_missing": False})).passed


def test_gate_file_and_run_config_section(tmp_path, baseline):
    f = tmp_path / "gate.yaml"
    f.write_text("regression:\n  confidence: 0.9\n  n_boot: 500\n  gates:\n    exact_match: {tolerance: 0.05}\n")
    g = load_gate_config(f)
    assert (g.confidence, g.n_boot, g.gates) == (0.9, 500, {"exact_match": 0.05})
    g2 = load_gate_config(None, {"config": {"regression": {"gates": ["contains_answer"]}}})
    assert g2.gates == {"contains_answer": 0.0}
    assert load_gate_config(None, {"config": {}}) == GateConfig()


@pytest.mark.parametrize("raw, message", [
    ({"confidence": 1.2}, r"confidence must be in \(0, 1\), got 1.2"),
    ({"n_boot": 5}, r"n_boot must be an integer >= 100, got 5"),
    ({"gates": {"exact_match": {"tolerance": -1}}}, r"gates.exact_match.tolerance must be a number >= 0, got -1"),
    ({"gates": {"exact_mach": {}}}, r"unknown metric 'exact_mach'; did you mean 'exact_match'\?"),
    ({"gates": {"length": {}}}, r"has no direction"),
    ({"treshold": 1}, r"unknown key\(s\) \['treshold'\]"),
])
def test_gate_config_errors_name_field_range_and_value(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_gate_config(raw, source="gate.yaml")


def test_verdict_rules():
    assert verdict(-0.3, -0.1, True, 0.0) == "regressed"
    assert verdict(-0.3, -0.1, True, 0.2) == "unchanged"   # not all of the CI beyond the tolerance
    assert verdict(0.1, 0.3, False, 0.0) == "regressed"    # lower is better
    assert verdict(0.1, 0.3, True, 0.0) == "improved"
    assert verdict(-0.1, 0.2, True, 0.0) == "unchanged"


def test_compare_cli_reports_bad_folder(tmp_path, baseline, capsys):
    assert main(["compare", str(baseline), str(tmp_path / "nope")]) == 2
    assert "run.json not found" in capsys.readouterr().err
    shutil.rmtree(baseline / "samples")
    assert main(["compare", str(baseline), str(baseline)]) == 2
    assert "no samples/ folder" in capsys.readouterr().err
