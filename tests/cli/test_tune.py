"""``deceval tune`` on the command line: the dry run lists families and budgets; a bad
tune section is one clear line and exit 2."""

from __future__ import annotations

from pathlib import Path

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_lists_families_and_budgets(capsys):
    assert main(["tune", str(ROOT / "configs" / "tune-quick.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "objective contains_answer (maximize), budget 4 trial(s)" in out
    assert "  greedy: 1 trial(s); searches nothing to search" in out and "  wsp: 3 trial(s)" in out


def test_a_bad_tune_section_is_one_clear_error(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("models: [smollm2-135m]\nprompt_sets: [facts]\n"
                   "tune: {objective: exact_match, families: [{name: top_p, top_p: {low: 0.5, high: 2}}]}\n")
    assert main(["tune", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg}: tune.families[0].top_p: 2.0 is not a valid value") and "Traceback" not in err
    assert main(["validate", str(cfg)]) == 2
    assert "a tune config" in capsys.readouterr().err
