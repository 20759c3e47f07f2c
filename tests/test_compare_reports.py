"""scripts/compare-reports, the equal-outputs check of a refactor: equal reports pass
whatever their timings, and a changed completion, step trace or missing row fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.plan import builtin_columns
from harness.report import write_unit
from harness.rows import sample_schema

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compare-reports"


def _row(i: int, **over):
    row = {"run_id": "r", "unit_id": "u1", "model_name": "m", "strategy_name": "wsp", "strategy_label": "wsp",
           "strategy_id": "s", "prompt_set": "tiny", "prompt_id": f"p{i}", "sample_index": 0, "seed": 0,
           "completion": f"answer {i}", "completion_tokens": 2, "finish_reason": "length", "latency_s": 0.5,
           "unit_seconds": 1.0, "mean_log_possibilities": 0.25,
           "steps": [{"token_id": 5, "logprob": -0.1, "rank": 1, "candidates": 2, "n_chosen": 3}], "length": 2.0}
    row.update(over)
    return row


def _report(tmp: Path, name: str, rows) -> Path:
    run_dir = tmp / name
    write_unit(run_dir, "model=m/strategy=wsp/u1.parquet", rows, sample_schema(["length"], *builtin_columns()),
               {"unit_id": "u1", "rows": len(rows)})
    return run_dir


def _compare(a: Path, b: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), *extra], capture_output=True, text=True,
                          timeout=120)


def test_equal_reports_pass_whatever_their_timings(tmp_path):
    a = _report(tmp_path, "a", [_row(0), _row(1)])
    b = _report(tmp_path, "b", [_row(1, latency_s=9.0, unit_seconds=7.0, run_id="other"), _row(0, latency_s=3.0)])
    res = _compare(a, b)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("equal: 2 rows")


def test_a_changed_completion_or_trace_fails_and_is_named(tmp_path):
    a = _report(tmp_path, "a", [_row(0), _row(1)])
    b = _report(tmp_path, "b", [_row(0, completion="other"),
                                _row(1, steps=[{"token_id": 5, "logprob": -0.1, "rank": 2, "candidates": 2}])])
    res = _compare(a, b)
    assert res.returncode == 1
    assert "completion (1)" in res.stdout and "steps (1)" in res.stdout


def test_a_missing_row_fails(tmp_path):
    res = _compare(_report(tmp_path, "a", [_row(0), _row(1)]), _report(tmp_path, "b", [_row(0)]))
    assert res.returncode == 1 and "row counts differ: 2 before, 1 after" in res.stdout


def test_a_folder_that_is_not_a_report_is_exit_2(tmp_path):
    res = _compare(tmp_path / "nothing", tmp_path / "nothing")
    assert res.returncode == 2 and "no samples/ folder" in res.stderr


def _steps(logprob: float):
    return [{"token_id": 5, "logprob": logprob, "rank": 1, "candidates": 2, "n_chosen": 3}]


def test_float32_jitter_passes_but_a_real_change_or_any_change_at_zero_tolerance_fails(tmp_path):
    a = _report(tmp_path, "a", [_row(0, steps=_steps(-0.1))])
    jitter = _report(tmp_path, "b", [_row(0, steps=_steps(-0.1 + 1.5e-5))])  # same-code run-to-run noise
    res = _compare(a, jitter)
    assert res.returncode == 0, res.stdout
    assert "largest float difference 1.5e-05" in res.stdout
    assert _compare(a, jitter, "--float-tol", "0").returncode == 1
    changed = _report(tmp_path, "c", [_row(0, steps=_steps(-0.2))])
    assert _compare(a, changed).returncode == 1
