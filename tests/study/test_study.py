"""Studies: the study file's checks, the decision rules (Holm, equivalence, power), the plan,
the report written from study.json alone, and a whole study on toy engine actors (real
runner, Ray, Parquet, Optuna) with a replication, that resumes without running anything
twice."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.errors import ConfigError
from harness.study import load_study_config, parse_study_config, to_markdown
from harness.study.decide import MIN_PAIRS, decide_tests, sign_of, verdict
from harness.study.plan import plan
from harness.study.runner import decide, probe_sign, sign
from harness.tune.tuner import TPE_STARTUP_TRIALS, budget

ROOT = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((ROOT / "configs" / "study-seed.yaml").read_text())


def test_the_seed_study_file_is_whole():
    cfg = load_study_config(ROOT / "configs" / "study-seed.yaml")
    assert set(cfg.models) == {"smollm2-135m"} and set(cfg.parts) == {"accuracy", "open_ended"}
    assert cfg.models["smollm2-135m"]["chat"]
    names = {f.name for f in next(iter(cfg.tunes.values()))[1].families}
    assert {"greedy", "top_p", "dynamic_top_p", "wsp", "wsp_guarded"} <= names
    # real benchmarks, hundreds of prompts, and a replication set per part
    sets = {p: [s["name"] for s in spec["prompt_sets"]] for p, spec in cfg.parts.items()}
    assert sets == {"accuracy": ["rg_syllogism"], "open_ended": ["writingbench_en"]}
    assert all(s["limit"] >= 200 for spec in cfg.parts.values() for s in spec["prompt_sets"])
    assert set(cfg.replicate) == {"accuracy", "open_ended"}
    seeds = set()
    for (model, part), (base, tcfg) in cfg.tunes.items():
        assert base["models"] == [model] and base["chat"] == cfg.models[model]["chat"]
        searched = [budget(tcfg, f) for f in tcfg.families if f.space and (f.grid_size or 99) >= tcfg.trials]
        assert set(searched) == {tcfg.trials} and tcfg.trials >= TPE_STARTUP_TRIALS
        seeds |= {tcfg.sampler_seed(i, f.key) for i, f in enumerate(tcfg.families)}
    assert cfg.search == "random"  # 10 trials are TPE's start-up: a random search, declared
    assert len(seeds) == sum(len(t.families) for _, t in cfg.tunes.values())  # no two parts draw alike
    # every metric a claim tests has a declared smallest effect
    assert {t.metric for c in cfg.claims for t in c.tests} <= set(cfg.smallest_effect)
    assert [c.id for c in cfg.claims] == ["a", "b", "c", "c-guarded", "d"] and cfg.claims[-1].probe


def bad(**over):
    raw = copy.deepcopy(SEED)
    for path, value in over.items():
        node = raw
        *head, last = path.split("__")
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize("over, message", [
    ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ({"models": {"llama-7b": {}}}, r"models.llama-7b: not a built-in model"),
    ({"parts__accuracy__objective": None}, r"parts.accuracy: needs prompt_sets and objective"),
    ({"parts__accuracy__objective": "length"}, r"has no direction"),
    ({"claims__0__tests__0__treatment": "nucleus"}, r"claims\[0\].tests\[0\].treatment: 'nucleus' is not a family"),
    ({"claims__0__tests__0__expect": "better"}, r"expect: expected one of higher, lower"),
    ({"claims__0__tests__0__part": "poetry"}, r"part: 'poetry' is not a part"),
    ({"claims__4__probe": "attention"}, r"the only probe is 'dependency'"),
    ({"probe": {"ks": [1, 400]}}, r"largest k \(400\)"),
    ({"focus": ["nucleus"]}, r"focus: expected a list of families"),
    ({"families__1__temperature": {"low": 2, "high": 1}}, r"temperature"),
    ({"tune__search": None, "tune__trials": 10}, r"tune.trials: with search: tpe the budget must exceed TPE's 10 "
                                                  r"seeded start-up trials .* allowed: 11 or more, got 10"),
    ({"tune__search": "grid"}, r"tune.search: expected one of tpe, random, got 'grid'"),
    ({"tune__trials": 12}, r"tune.trials: with search: random the budget is at most TPE's 10 .* allowed: 1 to 10, "
                           r"got 12"),
    ({"smallest_effect__rep_3": None}, r"smallest_effect.rep_3: claim b tests rep_3; declare"),
    ({"smallest_effect__rep_3": -1}, r"smallest_effect.rep_3: expected a number > 0 .* got -1"),
    ({"smallest_effect__wow": 1}, r"smallest_effect.wow: unknown metric"),
    ({"alpha": 0.7}, r"alpha: expected a number in \(0, 0.5\), got 0.7"),
    ({"power": 1}, r"power: expected a number in \(0.5, 1\), got 1"),
    ({"parts__accuracy__replicate": {"prompt_sets": [{"name": "rg_syllogism"}]}},
     r"parts.accuracy.replicate.prompt_sets: \['rg_syllogism'\] is also tuned on"),
    ({"parts__accuracy__replicate": {"prompt_sets": []}}, r"replicate.prompt_sets: expected a list"),
])
def test_a_bad_study_file_is_one_clear_error(over, message):
    with pytest.raises(ConfigError, match=message):
        parse_study_config(bad(**over), "study.yaml")


def test_cli_dry_run_and_a_bad_file(tmp_path, capsys):
    assert main(["study", str(ROOT / "configs" / "study-seed.yaml"), "--dry-run"]) == 0
    assert "1 model(s) x 2 part(s)" in capsys.readouterr().out
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(bad(claims__0__tests__0__metric="wow")))
    assert main(["study", str(f), "--dry-run"]) == 2
    assert "unknown metric 'wow'" in capsys.readouterr().err


def test_sign_verdict_and_probe_rules():
    # Holm-adjusted p <= alpha: by the side of the difference; else an equivalence; else undecided
    assert sign_of(0.2, 0.01, 0.9, "higher", 0.05, 40) == "+" and sign_of(-0.2, 0.01, 0.9, "higher", 0.05, 40) == "-"
    assert sign_of(-0.2, 0.01, 0.9, "lower", 0.05, 40) == "+" and sign_of(0.2, 0.04, 0.9, "lower", 0.05, 40) == "-"
    assert sign_of(0.001, 0.5, 0.01, "higher", 0.05, 40) == "="
    assert sign_of(0.1, 0.5, 0.3, "higher", 0.05, 40) == "0"
    assert sign_of(0.2, 0.001, 0.9, "higher", 0.05, MIN_PAIRS - 1) == "0"  # too few prompts decide nothing
    assert sign_of(0.2, 0.06, 0.9, "higher", 0.05, 40) == "0"  # raw p may be small; the adjusted one decides
    # the old bootstrap-CI sign, kept for the focus findings
    assert sign(0.1, 0.3, "higher") == "+" and sign(-0.1, 0.1, "higher") == "0"
    assert verdict(["+", "+"]) == "supported" and verdict(["+", "-"]) == "not supported"
    assert verdict(["+", "="]) == "no effect of interest" and verdict(["=", "-"]) == "not supported"
    assert verdict(["+", "0"]) == "inconclusive at this size" and verdict([]) == "inconclusive at this size"
    seeds = {"m=1": 17.6, "m=2": 19.6, "m=4": 21.5}
    assert probe_sign((16.0, 24.0), seeds) == "+" and probe_sign((64.0, float("inf")), seeds) == "-"
    assert probe_sign((2.0, 12.0), seeds) == "-"


def paired(n, a_vals, b_vals, metric="coherence"):
    rows = []
    for label, vals in (("greedy", a_vals), ("top_p", b_vals)):
        rows += [{"prompt_set": "s", "prompt_id": f"p{i}", "base_seed": 0, "sample_index": 0, "strategy_label": label,
                  metric: v, "error": None} for i, v in enumerate(vals[:n])]
    return pd.DataFrame(rows)


def test_decide_applies_holm_across_all_tests_and_classifies():
    from scipy.stats import ttest_rel

    cfg = parse_study_config(SEED, "s.yaml")
    rng = np.random.default_rng(0)
    a = rng.uniform(0.3, 0.7, 60)
    # coherence: top_p clearly higher; diversity: the same within 0.05 on 60 prompts
    df = paired(60, list(a), list(a + 0.05 + rng.normal(0, 0.02, 60)))
    div = paired(60, list(a), list(a + rng.normal(0, 0.01, 60)), "diversity")
    df["diversity"] = div["diversity"]
    tests = decide_tests(cfg.claims, {"smollm2-135m/open_ended": df}, ["smollm2-135m"], cfg.smallest_effect,
                         cfg.alpha, cfg.power)
    rows = tests["a"]
    coh, dv = rows
    live = [r for rs in tests.values() for r in rs if "missing" not in r]
    assert len(live) == 2 and coh["m"] == 2  # the other claims' parts have no rows: left out of m
    raw = ttest_rel(df[df.strategy_label == "top_p"]["coherence"], a).pvalue
    assert coh["p"] == pytest.approx(raw) and coh["p_holm"] == pytest.approx(min(1.0, 2 * raw))
    assert coh["sign"] == "+" and coh["adj_confidence"] == pytest.approx(0.975)
    assert coh["adj_low"] < coh["low"] < coh["diff"] < coh["high"] < coh["adj_high"]
    assert dv["sign"] == "=" and dv["p_equiv_holm"] <= 0.05  # equivalent within the declared 0.05
    assert decide(cfg.claims[0], rows, {}, ["smollm2-135m"])["verdict"] == "no effect of interest"
    # the claims with nothing to test stay undecided, and say why
    assert all(r["sign"] == "0" and r["missing"] for r in tests["b"])
    # a diversity drop significant after Holm is against the claim
    df["diversity"] = list(a) + list(a - 0.2 + rng.normal(0, 0.02, 60))
    tests = decide_tests(cfg.claims, {"smollm2-135m/open_ended": df}, ["smollm2-135m"], cfg.smallest_effect,
                         cfg.alpha, cfg.power)
    assert tests["a"][1]["sign"] == "-" and decide(cfg.claims[0], tests["a"], {}, ["x"])["verdict"] == "not supported"


def test_an_underpowered_test_says_what_it_can_detect():
    cfg = parse_study_config(SEED, "s.yaml")
    rng = np.random.default_rng(1)
    a = rng.uniform(0.3, 0.7, 16)
    df = paired(16, list(a), list(a + rng.normal(0.0, 0.1, 16)))  # 16 prompts, sd 0.1: detects ~0.07+
    df["diversity"] = df["coherence"]
    row = decide_tests(cfg.claims, {"m/open_ended": df}, ["m"], cfg.smallest_effect, 0.05, 0.8)["a"][0]
    assert row["sign"] == "0" and row["mde"] > cfg.smallest_effect["coherence"]
    from harness.analysis.stats import mde_paired_t, sample_size_paired_t
    assert row["mde"] == pytest.approx(mde_paired_t(16, row["sd"], 0.05 / 2, 0.8))
    assert row["n_needed"] == sample_size_paired_t(0.02, row["sd"], 0.05 / 2, 0.8) > 16
    from harness.study.report import sign_word
    assert sign_word(row).startswith("undecided at this size (detectable: ")


def test_plan_from_a_pilot_gives_prompts_and_compute():
    # a pilot with two tests: a continuous one with sd 0.04 (d = 0.02 / 0.04 = 0.5) and a binary
    # one with 30% discordant pairs; m = 2, so each is planned at alpha 0.025
    pilot = {
        "claims": [{"id": "a", "rows": [
            {"model": "m", "part": "open", "treatment": "t", "control": "c", "metric": "coherence", "expect": "higher",
             "n": 20, "diff": 0.01, "sd": 0.04, "binary": False, "n_better": 0, "n_worse": 0},
            {"model": "m", "part": "acc", "treatment": "t", "control": "c", "metric": "exact_match",
             "expect": "higher", "n": 40, "diff": 0.05, "sd": 0.5, "binary": True, "n_better": 8, "n_worse": 4}]}],
        "tunes": {"m/open": {"model": "m", "part": "open", "dev_prompts": 10, "test_prompts": 20},
                  "m/acc": {"model": "m", "part": "acc", "dev_prompts": 10, "test_prompts": 40}},
        "stages": {"m/open": {"seconds": 300.0, "cpu": "CPU X"}, "m/acc": {"seconds": 100.0, "cpu": "CPU X"},
                   "m/acc/replicate": {"seconds": 50.0, "cpu": "CPU X"}, "m/probe": {"seconds": 60.0, "cpu": "CPU X"}},
    }
    from harness.analysis.stats import sample_size_mcnemar, sample_size_paired_t
    p = plan(pilot, {"coherence": 0.02, "exact_match": 0.1}, 0.05, 0.8, {"open": 0.5, "acc": 0.2})
    open_row, acc_row = p["rows"]
    assert p["level"] == 0.025
    assert open_row["n_needed"] == sample_size_paired_t(0.5, 1.0, 0.025, 0.8) == 41
    assert acc_row["n_needed"] == sample_size_mcnemar(0.1, 0.3, 0.025, 0.8)
    parts = {q["part"]: q for q in p["parts"]}
    assert parts["open"]["set_prompts_needed"] == 82  # 41 test prompts at dev fraction 0.5
    assert parts["open"]["estimated_seconds"] == pytest.approx(300.0 / 30 * 82)
    need = parts["acc"]["set_prompts_needed"]
    assert need == math.ceil(acc_row["n_needed"] / 0.8)
    assert parts["acc"]["estimated_seconds"] == pytest.approx(150.0 / 50 * need)  # the replication counts too
    assert p["estimated_seconds"] == pytest.approx(300.0 / 30 * 82 + 150.0 / 50 * need + 60.0)


def results_fixture():
    return {
        "study": "s", "description": "d", "source": "s.yaml", "cpu": "CPU X", "models": ["m"], "alpha": 0.05,
        "power": 0.8, "smallest_effect": {"coherence": 0.02}, "search": "random",
        "parts": {"open_ended": {"metrics": ["coherence"]}},
        "stages": {"m/open_ended": {"seconds": 120.0, "cpu": "CPU X, 2 cores, AVX2", "resumed": False}},
        "claims": [{"id": "a", "text": "A beats B", "verdict": "supported",
                    "rows": [{"model": "m", "part": "open_ended", "treatment": "A", "control": "B", "metric": "coherence",
                              "expect": "higher", "diff": 0.125, "low": 0.05, "high": 0.2, "n": 16, "sign": "+",
                              "sd": 0.1, "binary": False, "p": 0.0004, "p_holm": 0.0008, "p_equiv": 0.99,
                              "p_equiv_holm": 1.0, "m": 2, "adj_low": 0.04, "adj_high": 0.21, "adj_confidence": 0.975,
                              "mde": 0.09, "n_needed": 260, "smallest_effect": 0.02},
                             {"model": "m", "part": "open_ended", "treatment": "A", "control": "B", "metric": "diversity",
                              "expect": "higher", "diff": 0.001, "low": -0.01, "high": 0.012, "n": 16, "sign": "=",
                              "sd": 0.01, "binary": False, "p": 0.7, "p_holm": 0.7, "p_equiv": 0.001,
                              "p_equiv_holm": 0.002, "m": 2, "adj_low": -0.012, "adj_high": 0.014,
                              "adj_confidence": 0.975, "mde": 0.009, "n_needed": 5, "smallest_effect": 0.05}]},
                   {"id": "d", "text": "the formula", "verdict": "not supported",
                    "rows": [{"model": "m", "sign": "-", "effective_length": 8, "effective_length_ci": [8.0, "inf"],
                              "seed_dependency_length": {"m=1": 17.6, "m=2": 19.6, "m=4": 21.5}}]}],
        "probes": {"m": {"config": {"ks": [1, 8], "positions": 2, "context": 32, "threshold": 0.1},
                         "texts": ["t1", "t2"], "curve": [{"k": 1, "mean_kl": 2.5, "ci_low": 2.0, "ci_high": 3.0},
                                                          {"k": 8, "mean_kl": 0.05, "ci_low": 0.01, "ci_high": 0.09}],
                         "effective_length": 8, "effective_length_ci": [8.0, "inf"],
                         "seed_dependency_length": {"m=1": 17.6, "m=2": 19.6, "m=4": 21.5}, "figure": "probe-m.png"}},
        "tunes": {"m/open_ended": {"model": "m", "part": "open_ended", "objective": "coherence", "direction": "maximize",
                                   "budget": 3, "constraints": [], "dev_prompts": 16, "test_prompts": 16,
                                   "families": {"A": {"searched": {"top_p": {"low": 0.5, "high": 1.0}}, "trials": [{}, {}, {}],
                                                      "best_params": {"top_p": 0.75}, "best_dev_value": 0.61,
                                                      "test_value": 0.55, "dev_test_gap": -0.06}},
                                   "leaderboard": [{"strategy": "A", "metric": "coherence", "mean": 0.6, "ci_low": 0.5,
                                                    "ci_high": 0.7, "rank": 1, "direction": "higher"}],
                                   "figures": {"sensitivity": "sensitivity-m-open_ended.png"}}},
        "replication": {"parts": ["open_ended"], "claims": {"a": "inconclusive at this size"},
                        "tests": [{"claim": "a", "model": "m", "part": "open_ended", "treatment": "A", "control": "B",
                                   "metric": "coherence", "sign": "+", "diff": 0.125, "replica_sign": "0",
                                   "replica_diff": 0.01, "replica_n": 40, "agree": False},
                                  {"claim": "a", "model": "m", "part": "open_ended", "treatment": "A", "control": "B",
                                   "metric": "diversity", "sign": "=", "diff": 0.001, "replica_sign": "=",
                                   "replica_diff": 0.0, "replica_n": 40, "agree": True}]},
        "focus": {"A": [{"model": "m", "part": "open_ended", "objective": "coherence", "better_families": [],
                         "most_repetitive": {"prompt": "Write", "completion": "the the `the`", "rep_2": 50.0}}]},
    }


def test_the_report_is_written_from_study_json_alone():
    md = to_markdown(results_fixture(), "figs")
    assert "| (a) A beats B | supported |" in md
    assert ("| m | open_ended: A vs B, coherence (higher predicted) | +0.125 | [+0.050, +0.200] | [+0.040, +0.210] | "
            "<0.001 (<0.001) | 0.990 (1.000) | 16 | 0.09 vs 0.02: underpowered (4.5x; needs 260) | as claimed |") in md
    assert "| 0.009 vs 0.05: powered | equivalent (no effect larger than 0.05) |" in md
    assert "Holm's method adjusts both across all 2 tests" in md and "(0.9750 t interval)" in md
    assert ("Underpowered: 1 of 2 tests cannot detect their declared smallest effect at the size run: m open_ended A "
            "vs B coherence (detects 0.090, declared 0.02, needs 260 test prompts, ran 16).") in md
    assert "| (a) | supported | inconclusive at this size |" in md
    assert "| (a) | m | open_ended: A vs B, coherence | as claimed (0.125) | undecided at this size (0.010, 40 prompts) | no |" in md
    assert "1 of 2 replicated tests agree." in md
    assert "Effective length: 8 tokens [95% CI 8, > 8]" in md and "m=2: 19.60" in md
    assert "| A | top_p in [0.5, 1] | 3 | 0.610 | 0.550 | -0.060 | top_p=0.75 |" in md
    assert "no more than TPE's 10 seeded start-up trials" in md  # a budget of 3 is a random search, and says so
    assert "at k = 8 (nearest to m=2) the mean KL is 0.050 nats" in md
    assert "0.600 [0.500, 0.700] #1" in md and "(figs/sensitivity-m-open_ended.png)" in md and "figs/probe-m.png" in md
    assert "2.0 min in all on CPU X, 2 cores, AVX2" in md
    assert "`the the 'the'`" in md  # a completion never breaks out of its code span


# ---- a whole study on toy engine actors -----------------------------------------------------

TOY = {
    "name": "toy", "models": {"smollm2-135m": {}},
    "tune": {"trials": 2, "seed": 1, "baseline": "typical", "search": "random"},
    "smallest_effect": {"computed_per_generated": 0.5},
    "parts": {"p": {"prompt_sets": [{"name": "facts", "limit": 24}], "generation": {"max_tokens": 4, "seed": 0},
                    "replicate": {"prompt_sets": [{"name": "open_ended", "limit": 12}]},
                    "metrics": ["computed_per_generated", "length"], "objective": "computed_per_generated"}},
    "families": [{"name": "typical", "impl": "stepwise", "typical_p": {"low": 0.3, "high": 0.95}},
                 {"name": "wsp", "max_candidates": [1, 4]}],
    "probe": {"n_texts": 2, "context": 16, "positions": 2, "ks": [1, 4]},
    "focus": ["wsp"],
    "claims": [{"id": "x", "text": "wsp costs more than typical",
                "tests": [{"part": "p", "treatment": "wsp", "control": "typical", "metric": "computed_per_generated",
                           "expect": "higher"}]},
               {"id": "d", "text": "the formula", "probe": "dependency"}],
}


@pytest.fixture()
def toy_study(monkeypatch, ray_local, tmp_path):
    import ray

    import harness.driver.placement as placement
    import harness.study.runner as runner
    from harness.probe import ProbeResult
    from tests.fakes.toy_actor import ToyEngineActor

    monkeypatch.setattr(placement, "_ACTOR_CLASS", ray.remote(ToyEngineActor))
    probes = []

    def fake_probe(cfg, out_root, log=print):  # the real probe is tested on the real model (tests/probe)
        probes.append(cfg)
        d = Path(out_root) / f"probe-{cfg.model}"
        d.mkdir(exist_ok=True)
        return ProbeResult(cfg, d, [{"k": 1, "mean_kl": 1.0, "ci_low": 0.9, "ci_high": 1.1, "n_texts": 2},
                                    {"k": 4, "mean_kl": 0.05, "ci_low": 0.01, "ci_high": 0.09, "n_texts": 2}],
                           4, (4.0, 4.0), {"m=1": 17.6, "m=2": 19.6, "m=4": 21.5}, ["a", "b"], reused=len(probes) > 1)

    monkeypatch.setattr(runner, "run_probe", fake_probe)
    yield parse_study_config({**TOY, "output": {"dir": str(tmp_path)}}, "toy.yaml"), probes
    placement.KEPT.release()


def test_a_study_runs_decides_and_resumes_after_a_crash(toy_study, monkeypatch, tmp_path):
    from harness.study import run_study, write_report
    from harness.tune import tuner

    cfg, probes = toy_study
    real_run, calls = tuner.run, []

    def crash_on_the_test_run(c, **kw):
        calls.append(c.run_id_override)
        if c.run_id_override == "test":
            raise KeyboardInterrupt
        return real_run(c, **kw)

    monkeypatch.setattr(tuner, "run", crash_on_the_test_run)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, out=io.StringIO(), progress=False)
    study_dir = Path(cfg.output_dir) / cfg.name
    killed = json.loads((study_dir / "stages.json").read_text())
    assert killed["running"]["key"] == "smollm2-135m/p" and killed["stages"] == {}  # ended inside its first stage
    # killed again, at the replication stage: the dev rounds and the test run are finished by now
    done = {}

    def crash_on_the_replication(c, **kw):
        if c.run_id_override == "replicate":
            raise KeyboardInterrupt
        oc = real_run(c, **kw)
        done[c.run_id_override] = oc.units_done
        return oc

    monkeypatch.setattr(tuner, "run", crash_on_the_replication)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, out=io.StringIO(), progress=False)
    assert done["test"] > 0 and all(v == 0 for k, v in done.items() if k != "test")  # only the test run was left
    saved = json.loads((study_dir / "stages.json").read_text())
    assert saved["running"]["key"] == "smollm2-135m/p/replicate"
    # the first invocation's time in the tune, up to its last written unit, is charged to it too
    assert saved["stages"]["smollm2-135m/p"]["interrupted"] and saved["stages"]["smollm2-135m/p"]["seconds"] > 0
    done.clear()

    def record(c, **kw):
        oc = real_run(c, **kw)
        done[c.run_id_override] = oc.units_done
        return oc

    monkeypatch.setattr(tuner, "run", record)
    outcome = run_study(cfg, out=io.StringIO(), progress=False)
    assert outcome.ok
    assert done["replicate"] > 0 and all(v == 0 for k, v in done.items() if k != "replicate")  # nothing twice
    (tune_dir,) = (outcome.study_dir).glob("toy-smollm2-135m-p-tune-*")
    state = json.loads((tune_dir / "tune.json").read_text())
    assert state["status"] == "complete"
    # the dev rounds of the first attempt were checked and skipped, not run again
    rounds = sorted((tune_dir / "dev").iterdir())
    assert len(rounds) == 2 and all((r / "run.json").is_file() for r in rounds)
    res = json.loads((outcome.study_dir / "study.json").read_text())
    claim = res["claims"][0]
    assert claim["rows"][0]["n"] >= MIN_PAIRS and claim["rows"][0]["sign"] in "+-=0"
    assert claim["rows"][0]["m"] == 1 and claim["rows"][0]["p_holm"] == pytest.approx(claim["rows"][0]["p"])
    assert claim["verdict"] == verdict([claim["rows"][0]["sign"]])
    rep = res["replication"]["tests"][0]
    assert rep["replica_n"] == 12 and rep["agree"] == (rep["replica_sign"] == rep["sign"])
    assert res["tunes"]["smollm2-135m/p"]["replicate_sets"] == ["open_ended"]
    board = res["tunes"]["smollm2-135m/p"]["replicate_leaderboard"]  # the chosen configs on the replication set
    assert {r["strategy"] for r in board} == set(res["tunes"]["smollm2-135m/p"]["families"])
    fam = res["tunes"]["smollm2-135m/p"]["families"]["wsp"]
    assert fam["dev_test_gap"] == pytest.approx(fam["test_value"] - fam["best_dev_value"])
    assert res["stages"]["smollm2-135m/p/replicate"]["seconds"] > 0
    assert res["claims"][1]["verdict"] == "not supported"  # 4 tokens is outside 17.6..21.5
    assert res["stages"]["smollm2-135m/p"]["seconds"] > 0 and len(probes) == 1
    fams = res["tunes"]["smollm2-135m/p"]["families"]
    assert len(fams["typical"]["trials"]) == 2 and len(fams["wsp"]["trials"]) == 2
    doc = tmp_path / "docs" / "toy.md"
    write_report(res, outcome.study_dir, doc)
    assert "## Verdicts" in doc.read_text() and (tmp_path / "docs" / "toy").is_dir()
    assert "### Replication-set leaderboard (open_ended)" in doc.read_text()
    # a finished study, run again: nothing runs, the same verdicts
    again = run_study(cfg, out=io.StringIO(), progress=False)
    assert [c["verdict"] for c in again.results["claims"]] == [c["verdict"] for c in res["claims"]]
    assert again.results["stages"]["smollm2-135m/p"] == res["stages"]["smollm2-135m/p"]


def test_report_only_rewrites_the_report_from_study_json(tmp_path, capsys):
    f = tmp_path / "toy.yaml"
    f.write_text(yaml.safe_dump({**TOY, "output": {"dir": str(tmp_path / "out")}}))
    assert main(["study", str(f), "--report-only"]) == 2
    assert "no readable" in capsys.readouterr().err
    study_dir = tmp_path / "out" / "toy"
    (study_dir / "figures").mkdir(parents=True)
    (study_dir / "figures" / "probe-m.png").write_bytes(b"\x89PNG fake")
    (study_dir / "study.json").write_text(json.dumps(results_fixture()))
    doc = tmp_path / "docs" / "toy-study.md"
    assert main(["study", str(f), "--report-only", "--doc", str(doc)]) == 0
    assert "(a) supported: A beats B" in capsys.readouterr().out
    assert "(toy-study/probe-m.png)" in doc.read_text() and (doc.parent / "toy-study" / "probe-m.png").is_file()
    assert (study_dir / "study.md").read_text().count("(figures/") >= 2
    assert main(["study", str(f), "--report-only", "--doc", str(tmp_path / "x.txt")]) == 2


def test_cli_pilot_config_and_plan(tmp_path, capsys):
    from harness.study.config import pilot_raw
    raw = pilot_raw(copy.deepcopy(SEED), 40)
    assert raw["name"] == "study-seed-pilot"
    assert raw["parts"]["accuracy"]["prompt_sets"] == [{"name": "rg_syllogism", "limit": 40}]
    assert raw["parts"]["accuracy"]["replicate"]["prompt_sets"] == [{"name": "rg_syllogism_holdout", "limit": 40}]
    assert pilot_raw({"parts": {"p": {"prompt_sets": ["facts"]}}}, 8)["parts"]["p"]["prompt_sets"] == [
        {"name": "facts", "limit": 8}]
    with pytest.raises(ConfigError, match="--pilot: expected a number of prompts per set >= 4, got 2"):
        pilot_raw(SEED, 2)
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({**SEED, "output": {"dir": str(tmp_path / "out")}}))
    assert main(["study", str(f), "--plan"]) == 2
    assert "run the pilot first" in capsys.readouterr().err
    pilot_dir = tmp_path / "out" / "study-seed-pilot"
    pilot_dir.mkdir(parents=True)
    (pilot_dir / "study.json").write_text(json.dumps({
        "claims": [{"id": "a", "rows": [
            {"model": "smollm2-135m", "part": "open_ended", "treatment": "top_p", "control": "greedy",
             "metric": "coherence", "expect": "higher", "n": 30, "diff": 0.01, "sd": 0.04, "binary": False,
             "n_better": 0, "n_worse": 0}]}],
        "tunes": {"smollm2-135m/open_ended": {"model": "smollm2-135m", "part": "open_ended", "dev_prompts": 6,
                                              "test_prompts": 34}},
        "stages": {"smollm2-135m/open_ended": {"seconds": 400.0, "cpu": "CPU X"}}}))
    assert main(["study", str(f), "--plan"]) == 0
    out = capsys.readouterr().out
    # one test: alpha 0.05 / 1, d = 0.02 / 0.04 = 0.5 -> 34 test prompts; 34 / 0.85 -> 40 in the set
    assert "34 test prompts, 40 in its prompt sets" in out and "10.0 s per prompt" in out
    saved = json.loads((tmp_path / "out" / "study-seed" / "plan.json").read_text())
    assert saved["estimated_seconds"] == pytest.approx(400.0)
