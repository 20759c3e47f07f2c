"""The regression gate: a planted regression (a strategy swapped for a worse one) is flagged,
an identical rerun passes; a candidate cannot fool it with error rows, other prompts, its
own gate settings or missing values; gate settings and bad input are clear errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from harness.analysis.regression import compare, non_inferior, verdict
from harness.analysis.stats import mcnemar_exact, paired_binary_noninferiority_p
from harness.cli import main
from harness.config import GateConfig, load_gate_config, parse_gate_config
from harness.metrics import score_rows
from harness.report import write_run_json
from tests.fakes.reports import (
    GOOD,
    METRICS,
    N_PROMPTS,
    make_report,
    unit_rows,
    write_report,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def baseline(tmp_path):
    return make_report(tmp_path, "base", GOOD)


def test_identical_rerun_passes(tmp_path, baseline, capsys):
    rerun = make_report(tmp_path, "rerun", GOOD)
    c = compare(baseline, rerun)
    assert c.passed, c.failures
    assert set(c.table["verdict"]) == {"unchanged"}
    directed = c.table[c.table["direction"] != "none"]
    assert (c.table["diff"] == 0).all() and (directed["bound"] == 0).all() and directed["non_inferior"].all()
    gated = c.table[c.table["gated"]]
    # tolerance 0: a zero-width interval at 0 is within a zero margin; the exact test has no discordant pair
    assert set(gated["metric"]) == {"exact_match", "contains_answer", "numeric_match"}  # numeric_match: rescored
    assert set(gated["tolerance"]) == {0.0} and gated["non_inferior"].tolist() == [True] * 6 and (gated["ni_p"] == 0).all() and (gated["mcnemar_p"] == 1).all()
    assert main(["compare", str(baseline), str(rerun)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"gate: defaults ({baseline}/run.json has no config.regression)\nrule: non-inferiority")
    assert "gate passed" in out


def test_identical_rerun_passes_the_nightly_gate(tmp_path, baseline):
    # the nightly example (docs/regression-gate.md), gated by configs/nightly.yaml's regression section
    rerun = make_report(tmp_path, "rerun", GOOD)
    assert main(["compare", str(baseline), str(rerun), "--gate", str(REPO / "configs/nightly.yaml")]) == 0
    c = compare(baseline, rerun, load_gate_config(REPO / "configs/nightly.yaml"))
    assert c.passed and {"exact_match", "contains_answer", "numeric_match", "eos_share"} <= set(c.table[c.table["gated"]]["metric"])
    assert any(n.startswith("perplexity: gated, but the baseline has no value") for n in c.notes)


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
    assert math.isnan(t.loc[("greedy", "rep_2"), "mcnemar_p"]) and t.loc[("greedy", "rep_2"), "non_inferior"] is False
    assert t.loc[("greedy", "exact_match"), "mcnemar_p"] < 1e-6  # 0/1 values: the exact test too
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
    assert load_gate_config(None, {"config": {}}) == GateConfig(source="defaults (baseline run.json has no "
                                                                      "config.regression)")
    assert load_gate_config(None, {"config": {}}, "reports/b").source == "defaults (reports/b/run.json has no config.regression)"


@pytest.mark.parametrize("raw, message", [
    ({"confidence": 1.2}, r"confidence must be in \(0.5, 1\) \(the level of a one-sided bound\), got 1.2"),
    ({"confidence": 0.5}, r"confidence must be in \(0.5, 1\)"),
    ({"max_error_share_increase": 1.5}, r"gate.yaml.max_error_share_increase must be a number in \[0, 1\] \(a share\), "
                                        r"got 1.5"),
    ({"max_error_share_increase": True}, r"max_error_share_increase must be a number in \[0, 1\].*got True"),
    ({"max_coverage_drop": -0.1}, r"gate.yaml.max_coverage_drop must be a number in \[0, 1\] \(a share\), got -0.1"),
    ({"max_coverage_drop": "a bit"}, r"max_coverage_drop must be a number in \[0, 1\].*got 'a bit'"),
    ({"regression": 5}, r"gate.yaml.regression: expected a mapping with keys among"),
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


# ---- a candidate cannot fool the gate --------------------------------------------------------------

def test_all_error_candidate_fails(tmp_path, baseline, capsys):
    broken = write_report(tmp_path, "broken", {label: unit_rows(label, acc, seed, "broken", rep, errors=frozenset(range(N_PROMPTS)))
                                               for label, (acc, seed, rep) in GOOD.items()})
    c = compare(baseline, broken)
    assert not c.passed and c.table.empty
    f = "\n".join(c.failures)
    assert "fake / greedy: error rows 0.0% of 60 in the baseline -> 100.0% of 60 in the candidate" in f
    assert "fake / greedy / exact_match: gated, but the candidate has no value for any of the baseline's 60 scored" in f
    assert "no gated metric was compared (gates: ['contains_answer', 'exact_match', 'numeric_match', 'pass_at_1'])" in f
    assert main(["compare", str(baseline), str(broken)]) == 1
    out = capsys.readouterr().out
    assert "GATE FAILED" in out and "gate passed" not in out


def test_seven_of_eight_errored_fails(tmp_path):
    right = [True] * 8
    base = write_report(tmp_path, "base", {"greedy": unit_rows("greedy", 0, 0, "base", right=right)})
    cand = write_report(tmp_path, "cand", {"greedy": unit_rows("greedy", 0, 0, "cand", right=right,
                                                           errors=frozenset(range(1, 8)))})
    c = compare(base, cand)
    assert not c.passed
    f = "\n".join(c.failures)
    assert "fake / greedy: error rows 0.0% of 8 in the baseline -> 87.5% of 8 in the candidate " \
           "(max_error_share_increase 0)" in f
    assert "fake / greedy / exact_match: coverage 100.0% -> 12.5% of the baseline's 8 samples have a value " \
           "(max_coverage_drop 0)" in f
    # the one remaining pair is identical: only the two checks stand between this candidate and a pass
    assert c.table.set_index("metric").loc["exact_match", "non_inferior"] is True
    only_cov = compare(base, cand, parse_gate_config({"max_error_share_increase": 1.0}))
    assert [x for x in only_cov.failures if "error rows" in x] == [] and any("coverage" in x for x in only_cov.failures)
    assert compare(base, cand, parse_gate_config({"max_error_share_increase": 1.0, "max_coverage_drop": 1.0})).passed
    # within the tolerance: one error row in 8 against max 0.125
    one = write_report(tmp_path, "one", {"greedy": unit_rows("greedy", 0, 0, "one", right=right, errors=frozenset({7}))})
    assert compare(base, one, parse_gate_config({"max_error_share_increase": 0.125, "max_coverage_drop": 0.125})).passed
    assert not compare(base, one, parse_gate_config({"max_error_share_increase": 0.12, "max_coverage_drop": 0.125})).passed


def test_other_prompt_sets_under_the_same_labels_fail(tmp_path, baseline):
    other = write_report(tmp_path, "other", {label: unit_rows(label, acc, seed, "other", rep, prompt_set="trivia")
                                             for label, (acc, seed, rep) in GOOD.items()})
    c = compare(baseline, other)
    assert not c.passed
    f = "\n".join(c.failures)
    assert ("fake / greedy: the prompt sets differ: 60 only in the baseline (e.g. maths/maths-000, maths/maths-001, "
            "maths/maths-002, ...); 60 only in the candidate (e.g. trivia/trivia-000") in f
    # same ids, other prompt text: named by id
    units = {label: unit_rows(label, acc, seed, "edited", rep) for label, (acc, seed, rep) in GOOD.items()}
    for r in units["greedy"]:
        if r["prompt_id"] in ("maths-003", "maths-007"):
            r["prompt_hash"] = "edited"
    c = compare(baseline, write_report(tmp_path, "edited", units))
    assert c.failures == ["fake / greedy: the prompt sets differ: 2 with other text (prompt_hash; e.g. maths/maths-003, "
                          "maths/maths-007); a gate compares the same prompts: rerun the candidate on the baseline's config"]
    assert c.checks.set_index("strategy")["prompts"].to_dict() == {"greedy": "differ", "top_p-0.9": "same"}


def test_candidate_cannot_choose_its_own_gate(tmp_path, baseline, capsys):
    worse = {"greedy": (0.3, 7, True), "top_p-0.9": (0.6, 2, False)}
    sneaky = make_report(tmp_path, "sneaky", worse, config={"regression": {"gates": {}}})
    c = compare(baseline, sneaky)
    assert not c.passed and c.gate.source.startswith("defaults") and "exact_match" in c.gate.gates
    assert any("greedy / exact_match: not shown non-inferior" in x for x in c.failures)
    assert any("the candidate's run.json config.regression differs from the gate used; ignored" in n for n in c.notes)
    assert main(["compare", str(baseline), str(sneaky)]) == 1
    assert capsys.readouterr().out.startswith("gate: defaults")
    # the baseline's own section is the gate
    base2 = make_report(tmp_path, "base2", GOOD, config={"regression": {"gates": {"eos_share": {"tolerance": 0.0}}}})
    c = compare(base2, sneaky)
    assert c.gate.source == f"{base2}/run.json config.regression (baseline)" and c.gate.gates == {"eos_share": 0.0}
    assert c.passed  # eos_share is the same on both: the gate that was asked for
    assert main(["compare", str(base2), str(sneaky)]) == 0
    assert capsys.readouterr().out.startswith(f"gate: {base2}/run.json config.regression (baseline)")


def test_no_gated_metric_compared_fails(tmp_path, baseline, capsys):
    rerun = make_report(tmp_path, "rerun", GOOD)
    gate = tmp_path / "gate.yaml"
    gate.write_text("regression:\n  gates:\n    perplexity: {tolerance: 0.5}\n")  # neither report has perplexity
    c = compare(baseline, rerun, load_gate_config(gate))
    assert c.failures == ["no gated metric was compared (gates: ['perplexity']); nothing shows that the candidate is "
                          "not worse"]
    assert "perplexity: gated, but the baseline has no value for it in fake/greedy, fake/top_p-0.9" in c.notes[0]
    assert main(["compare", str(baseline), str(rerun), "--gate", str(gate)]) == 1
    assert "no gated metric was compared" in capsys.readouterr().out
    empty = make_report(tmp_path, "empty", GOOD, config={"regression": {"gates": {}}})
    assert compare(empty, rerun).failures == ["no gated metric was compared (the gate lists no metric); nothing shows "
                                              "that the candidate is not worse"]


def test_gated_metric_the_candidate_lacks_fails(tmp_path):
    metrics = METRICS + ["perplexity"]
    rows = unit_rows("greedy", 0.9, 1, "base", metrics=metrics)
    for i, r in enumerate(rows):
        r["perplexity"] = 2.0 + 0.01 * i
    base = write_report(tmp_path, "base", {"greedy": rows}, metrics=metrics)
    cand = write_report(tmp_path, "cand", {"greedy": unit_rows("greedy", 0.9, 1, "cand")})  # an engine metric: not recomputable
    gate = parse_gate_config({"gates": {"perplexity": 0.5, "exact_match": 0.0}})
    assert compare(base, cand, gate).failures == ["fake / greedy / perplexity: gated, but the candidate report has no "
                                                  "perplexity column"]
    # present but without a value
    nulls = write_report(tmp_path, "nulls", {"greedy": unit_rows("greedy", 0.9, 1, "nulls", metrics=metrics)}, metrics=metrics)
    assert compare(base, nulls, gate).failures == ["fake / greedy / perplexity: gated, but the candidate has no value for "
                                                   "any of the baseline's 60 scored samples (errors, other prompts, seeds "
                                                   "or sample indices?)"]
    # another seed under the same label pairs with nothing
    other_seed = unit_rows("greedy", 0.9, 1, "seed", metrics=metrics)
    for r in other_seed:
        r["base_seed"], r["perplexity"] = 1, 2.0
    c = compare(base, write_report(tmp_path, "seed", {"greedy": other_seed}, metrics=metrics), gate)
    assert [x.split(":")[0] for x in c.failures] == ["fake / greedy / exact_match", "fake / greedy / perplexity",
                                                     "no gated metric was compared (gates"]
    assert all("has no value for any of the baseline's 60" in x for x in c.failures[:2])


def _humaneval_report(root: Path, run_id: str, solve: bool) -> Path:
    from harness.tasks import Prompt, humaneval_problems
    rows = []
    for i in range(4):
        pid = f"HumanEval/{i}"
        prob = humaneval_problems()[pid]
        # a HumanEval row is known by its prompt set and the hash the loader gives its prompt
        prompt_hash = Prompt(pid, "humaneval", prob["prompt"]).hash
        rows.append({"run_id": run_id, "unit_id": "unit-greedy", "model_ref": "fake", "strategy_name": "greedy",
                     "strategy_label": "greedy", "strategy_id": "id-greedy", "strategy_params": "{}",
                     "prompt_set": "humaneval", "prompt_id": pid, "prompt_hash": prompt_hash, "prompt": prob["prompt"],
                     "reference": None, "aliases": [], "sample_index": 0, "seed": i, "base_seed": 0,
                     "completion": prob["canonical_solution"] if solve else "    return None\n", "error": None})
    score_rows(rows, ["length"])
    return write_report(root, run_id, {"greedy": rows}, metrics=["length"])  # written without pass_at_1


def test_code_metric_needs_execute_code(tmp_path, capsys):
    base, same, bad = (_humaneval_report(tmp_path, "base", True), _humaneval_report(tmp_path, "same", True),
                       _humaneval_report(tmp_path, "bad", False))
    c = compare(base, same)  # the default gates hold pass_at_1
    assert c.failures == ["fake / greedy / pass_at_1: gated, but both reports lack it: it runs generated code; add "
                          "--execute-code (compare(..., execute_code=True)) to compute it",
                          "no gated metric was compared (gates: ['contains_answer', 'exact_match', 'numeric_match', "
                          "'pass_at_1']); nothing shows that the candidate is not worse"]
    assert main(["compare", str(base), str(same)]) == 1
    assert "add --execute-code" in capsys.readouterr().out
    ran = compare(base, same, execute_code=True)
    assert ran.passed, ran.failures
    row = ran.table.set_index("metric").loc["pass_at_1"]
    assert (row["baseline"], row["candidate"], row["non_inferior"]) == (1.0, 1.0, True)
    assert main(["compare", str(base), str(bad), "--execute-code"]) == 1
    assert "greedy / pass_at_1: not shown non-inferior: 1 -> 0" in capsys.readouterr().out
    assert main(["compare", str(base), str(same), "--execute-code"]) == 0
    # an id that merely looks like a HumanEval task is no code to run: pass_at_1 is just not in that baseline
    lookalike = unit_rows("greedy", 0, 0, "look", right=[True] * 4)
    for i, r in enumerate(lookalike):
        r["prompt_id"] = f"HumanEval/{i}"
    look = write_report(tmp_path, "look", {"greedy": lookalike})
    c = compare(look, look)
    assert c.passed and any(n.startswith("pass_at_1: gated, but the baseline has no value") for n in c.notes)


# ---- the tests behind the rule -------------------------------------------------------------------

def test_mcnemar_exact_p_matches_hand_computation(tmp_path):
    # 1 pair worse, 9 better: two-sided exact p = 2 * P(Bin(10, 1/2) <= 1) = 2 * (1 + 10) / 2**10
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0) and mcnemar_exact(0, 0) == 1.0
    # non-inferiority, margin 0: the one-sided exact McNemar test, P(Bin(10, 1/2) <= 2)
    assert paired_binary_noninferiority_p(2, 8, 100, 0.0) == pytest.approx((1 + 10 + 45) / 1024, rel=1e-12)
    # margin 0.05 on 100 pairs, 10 discordant: H0 is q >= q0 = (1 + 0.05 * 100 / 10) / 2 = 0.75
    hand = sum(math.comb(10, k) * 0.75 ** k * 0.25 ** (10 - k) for k in range(3))
    assert paired_binary_noninferiority_p(2, 8, 100, 0.05) == pytest.approx(hand, rel=1e-9)
    # 3 discordant pairs cannot take 100 pairs 5 points down
    assert paired_binary_noninferiority_p(3, 0, 100, 0.05) == 0.0
    with pytest.raises(ValueError, match="n_worse \\+ n_better <= n_pairs"):
        paired_binary_noninferiority_p(3, 0, 2, 0.0)
    # through compare: 40 prompts, the candidate fixes 9 and breaks 1
    base_right = [i >= 9 for i in range(40)]
    cand_right = [i != 20 for i in range(40)]
    base = write_report(tmp_path, "base", {"greedy": unit_rows("greedy", 0, 0, "base", right=base_right)})
    cand = write_report(tmp_path, "cand", {"greedy": unit_rows("greedy", 0, 0, "cand", right=cand_right)})
    row = compare(base, cand, parse_gate_config({"gates": ["exact_match"]})).table.set_index("metric").loc["exact_match"]
    assert row["mcnemar_p"] == pytest.approx(22 / 1024, rel=1e-12)
    assert row["ni_p"] == pytest.approx(11 / 1024, rel=1e-12)
    assert row["diff"] == pytest.approx(8 / 40) and row["non_inferior"] is True and row["verdict"] == "improved"
    length = compare(base, cand).table.set_index("metric").loc["length"]  # no direction: no test, no gate
    assert math.isnan(length["bound"]) and math.isnan(length["mcnemar_p"]) and length["non_inferior"] is None


def test_non_inferiority_at_the_margin(tmp_path):
    right = [True] * 60
    worse = [i not in (5, 25, 45) for i in range(60)]
    base = write_report(tmp_path, "base", {"greedy": unit_rows("greedy", 0, 0, "base", right=right)})
    cand = write_report(tmp_path, "cand", {"greedy": unit_rows("greedy", 0, 0, "cand", right=worse)})
    at0 = compare(base, cand, parse_gate_config({"gates": ["exact_match"]}))
    row = at0.table.set_index("metric").loc["exact_match"]
    bound = row["bound"]
    assert row["diff"] == pytest.approx(-3 / 60) and bound < row["diff"]
    assert not at0.passed and at0.failures[0].startswith("fake / greedy / exact_match: not shown non-inferior")
    # the margin exactly at the bound passes (inclusive); a hair less does not
    assert compare(base, cand, parse_gate_config({"gates": {"exact_match": -bound}})).passed
    assert not compare(base, cand, parse_gate_config({"gates": {"exact_match": -bound - 1e-9}})).passed
    assert non_inferior(-0.1, True, 0.1) and not non_inferior(-0.1000001, True, 0.1)
    assert non_inferior(0.1, False, 0.1) and not non_inferior(0.11, False, 0.1) and not non_inferior(math.nan, True, 1)


def test_one_sample_worse_fails_a_zero_margin(tmp_path):
    # tolerance 0 is an exact-reproduction gate: the verdict reads "unchanged", non-inferiority cannot be shown
    base = write_report(tmp_path, "base", {"greedy": unit_rows("greedy", 0, 0, "base", right=[True] * 60)})
    cand = write_report(tmp_path, "cand", {"greedy": unit_rows("greedy", 0, 0, "cand", right=[i != 30 for i in range(60)])})
    c = compare(base, cand, parse_gate_config({"gates": ["exact_match"]}))
    row = c.table.set_index("metric").loc["exact_match"]
    assert row["verdict"] == "unchanged" and row["non_inferior"] is False and row["ni_p"] == 1.0
    assert len(c.failures) == 1 and "exact test p = 1 > 0.05" in c.failures[0]
    # a margin beyond what 60 prompts resolve absorbs it (one pair is 1.7 points; the bootstrap bound is -3/60)
    assert row["bound"] == pytest.approx(-3 / 60)
    assert compare(base, cand, parse_gate_config({"gates": {"exact_match": 0.06}})).passed


# ---- bad input: exit 2 and a one-line message, never a traceback ---------------------------------

def _bad(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    assert "Traceback" not in captured.err and captured.err.startswith("error: ")
    assert "gate passed" not in captured.out and "GATE FAILED" not in captured.out


def test_compare_cli_bad_input_exits_2(tmp_path, baseline, capsys):
    rerun = make_report(tmp_path, "rerun", GOOD)
    b, r = str(baseline), str(rerun)
    broken = make_report(tmp_path, "broken", GOOD)
    (broken / "run.json").write_text("{not json")
    _bad(capsys, ["compare", str(broken), r], f"{broken}/run.json: not a readable run.json (JSONDecodeError")
    (broken / "run.json").write_text("[1, 2]")
    _bad(capsys, ["compare", b, str(broken)], f"{broken}/run.json: expected a JSON object (the run's metadata), got a "
                                              f"JSON list")
    _bad(capsys, ["compare", b, r, "--gate", str(tmp_path / "nope.yaml")], f"gate file not found: {tmp_path}/nope.yaml")
    _bad(capsys, ["compare", b, r, "--gate", str(tmp_path)], f"gate file {tmp_path} is a folder; expected a YAML file")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("regression:\n  gates: [exact_match\n")
    _bad(capsys, ["compare", b, r, "--gate", str(bad_yaml)], f"gate file {bad_yaml}: not valid YAML at line 3")
    bad_yaml.write_text("regression:\n  treshold: 1\n")
    _bad(capsys, ["compare", b, r, "--gate", str(bad_yaml)], f"{bad_yaml}: unknown key(s) ['treshold']")
    _bad(capsys, ["compare", b, r, "--csv", str(tmp_path / "no" / "such" / "c.csv")],
         f"--csv {tmp_path}/no/such/c.csv: the folder {tmp_path}/no/such does not exist")
    _bad(capsys, ["compare", b, r, "--csv", str(tmp_path)], f"--csv {tmp_path} is a folder")
    _bad(capsys, ["compare", str(baseline / "run.json"), r], f"{baseline}/run.json/run.json not found; expected a "
                                                             f"report folder")
    _bad(capsys, ["compare", b, r, "--metrics", "exact_mach"], "--metrics: unknown metric 'exact_mach'; did you mean "
                                                              "'exact_match'?")
    empty = tmp_path / "empty"
    (empty / "samples").mkdir(parents=True)
    write_run_json(empty, {"run_id": "empty", "status": "complete", "config": {}})
    _bad(capsys, ["compare", b, str(empty)], f"candidate {empty}: the report has no sample rows")
    corrupt = make_report(tmp_path, "corrupt", GOOD)
    next((corrupt / "samples").rglob("*.parquet")).write_bytes(b"not parquet at all")
    _bad(capsys, ["compare", b, str(corrupt)], f"candidate {corrupt}: cannot read its samples/ Parquet files")
    assert not list(tmp_path.rglob("*.csv"))
    # and a good --csv is written
    assert main(["compare", b, r, "--csv", str(tmp_path / "c.csv")]) == 0
    assert (tmp_path / "c.csv").read_text().startswith("model,strategy,metric,direction,baseline,candidate,diff")


def test_compare_crash_is_exit_2_not_a_regression(tmp_path, baseline, capsys, monkeypatch):
    import harness.cli.reports

    def boom(*args, **kwargs):
        raise KeyError("prompt_hash")
    monkeypatch.setattr(harness.cli.reports, "compare", boom)
    _bad(capsys, ["compare", str(baseline), str(baseline)], "error: compare failed unexpectedly (KeyError: "
                                                          "'prompt_hash' at test_regression.py:")
