"""Studies: the study file's checks, the verdict rules, the report written from study.json
alone, and a whole study on toy engine actors (real runner, Ray, Parquet, Optuna) that
resumes without running anything twice."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.errors import ConfigError
from harness.study import load_study_config, parse_study_config, to_markdown
from harness.study.runner import MIN_PAIRS, decide, probe_sign, sign, verdict
from harness.tune.tuner import budget

ROOT = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((ROOT / "configs" / "study-seed.yaml").read_text())


def test_the_seed_study_file_is_whole():
    cfg = load_study_config(ROOT / "configs" / "study-seed.yaml")
    assert set(cfg.models) == {"smollm2-135m", "gemma3-270m"} and set(cfg.parts) == {"accuracy", "open_ended"}
    assert cfg.models["smollm2-135m"]["chat"] and not cfg.models["gemma3-270m"]["chat"]
    names = {f.name for f in next(iter(cfg.tunes.values()))[1].families}
    assert {"greedy", "temperature", "top_p", "min_p", "typical", "mirostat", "dynamic_top_p", "beam", "wsp",
            "wsp_guarded"} <= names
    for (model, part), (base, tcfg) in cfg.tunes.items():
        assert base["models"] == [model] and base["chat"] == cfg.models[model]["chat"]
        searched = [budget(tcfg, f) for f in tcfg.families if f.space and (f.grid_size or 99) >= tcfg.trials]
        assert set(searched) == {tcfg.trials}  # the same budget for every family that can use it
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
])
def test_a_bad_study_file_is_one_clear_error(over, message):
    with pytest.raises(ConfigError, match=message):
        parse_study_config(bad(**over), "study.yaml")


def test_cli_dry_run_and_a_bad_file(tmp_path, capsys):
    assert main(["study", str(ROOT / "configs" / "study-seed.yaml"), "--dry-run"]) == 0
    assert "2 model(s) x 2 part(s)" in capsys.readouterr().out
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(bad(claims__0__tests__0__metric="wow")))
    assert main(["study", str(f), "--dry-run"]) == 2
    assert "unknown metric 'wow'" in capsys.readouterr().err


def test_sign_verdict_and_probe_rules():
    assert sign(0.1, 0.3, "higher") == "+" and sign(-0.3, -0.1, "higher") == "-" and sign(-0.1, 0.1, "higher") == "0"
    assert sign(-0.3, -0.1, "lower") == "+" and sign(0.1, 0.2, "lower") == "-"
    assert sign(0.1, 0.3, "higher", n=MIN_PAIRS - 1) == "0"  # too few prompts decide nothing
    assert verdict(["+", "+"]) == "supported" and verdict(["+", "-"]) == "not supported"
    assert verdict(["+", "0"]) == "inconclusive at this size" and verdict([]) == "inconclusive at this size"
    seeds = {"m=1": 17.6, "m=2": 19.6, "m=4": 21.5}
    assert probe_sign((16.0, 24.0), seeds) == "+" and probe_sign((64.0, float("inf")), seeds) == "-"
    assert probe_sign((2.0, 12.0), seeds) == "-"


def paired(n, a_vals, b_vals):
    rows = []
    for label, vals in (("greedy", a_vals), ("top_p", b_vals)):
        rows += [{"prompt_set": "s", "prompt_id": f"p{i}", "base_seed": 0, "sample_index": 0, "strategy_label": label,
                  "coherence": v, "error": None} for i, v in enumerate(vals[:n])]
    return pd.DataFrame(rows)


def test_decide_reads_paired_test_rows():
    cfg = parse_study_config(SEED, "s.yaml")
    claim = cfg.claims[0]  # (a): top_p vs greedy on coherence and diversity
    df = paired(20, [0.2] * 20, [0.5 + 0.01 * i for i in range(20)])
    out = decide(claim, {"smollm2-135m/open_ended": df}, {}, ["smollm2-135m"])
    coh = next(r for r in out["rows"] if r["metric"] == "coherence")
    assert coh["sign"] == "+" and coh["n"] == 20 and coh["diff"] == pytest.approx(0.395)
    div = next(r for r in out["rows"] if r["metric"] == "diversity")
    assert div["missing"] and out["verdict"] == "inconclusive at this size"  # no diversity column: not decided
    worse = decide(claim, {"smollm2-135m/open_ended": df.assign(diversity=[0.9] * 20 + [0.1] * 20)}, {},
                   ["smollm2-135m"])
    assert worse["verdict"] == "not supported"


def results_fixture():
    return {
        "study": "s", "description": "d", "source": "s.yaml", "cpu": "CPU X", "models": ["m"],
        "parts": {"open_ended": {"metrics": ["coherence"]}},
        "stages": {"m/open_ended": {"seconds": 120.0, "cpu": "CPU X, 2 cores, AVX2", "resumed": False}},
        "claims": [{"id": "a", "text": "A beats B", "verdict": "supported",
                    "rows": [{"model": "m", "part": "open_ended", "treatment": "A", "control": "B", "metric": "coherence",
                              "expect": "higher", "diff": 0.125, "low": 0.05, "high": 0.2, "n": 16, "sign": "+"}]},
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
                                                      "best_params": {"top_p": 0.75}, "best_dev_value": 0.61}},
                                   "leaderboard": [{"strategy": "A", "metric": "coherence", "mean": 0.6, "ci_low": 0.5,
                                                    "ci_high": 0.7, "rank": 1, "direction": "higher"}],
                                   "figures": {"sensitivity": "sensitivity-m-open_ended.png"}}},
        "focus": {"A": [{"model": "m", "part": "open_ended", "objective": "coherence", "better_families": [],
                         "most_repetitive": {"prompt": "Write", "completion": "the the `the`", "rep_2": 50.0}}]},
    }


def test_the_report_is_written_from_study_json_alone():
    md = to_markdown(results_fixture(), "figs")
    assert "| (a) A beats B | supported |" in md
    assert "| m | open_ended: A vs B, coherence (higher predicted) | +0.125 | [+0.050, +0.200] | 16 | as claimed |" in md
    assert "Effective length: 8 tokens [95% CI 8, > 8]" in md and "m=2: 19.60" in md
    assert "| A | top_p in [0.5, 1] | 3 | 0.610 | top_p=0.75 |" in md
    assert "below TPE's 10 seeded start-up trials" in md  # a budget of 3 is a random search, and says so
    assert "at k = 8 (nearest to m=2) the mean KL is 0.050 nats" in md
    assert "0.600 [0.500, 0.700] #1" in md and "(figs/sensitivity-m-open_ended.png)" in md and "figs/probe-m.png" in md
    assert "2.0 min in all on CPU X, 2 cores, AVX2" in md
    assert "`the the 'the'`" in md  # a completion never breaks out of its code span


# ---- a whole study on toy engine actors -----------------------------------------------------

TOY = {
    "name": "toy", "models": {"smollm2-135m": {}}, "tune": {"trials": 2, "seed": 1, "baseline": "typical"},
    "parts": {"p": {"prompt_sets": [{"name": "facts", "limit": 24}], "generation": {"max_tokens": 4, "seed": 0},
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
    monkeypatch.setattr(tuner, "run", real_run)
    outcome = run_study(cfg, out=io.StringIO(), progress=False)
    assert outcome.ok
    (tune_dir,) = (outcome.study_dir).glob("toy-smollm2-135m-p-tune-*")
    state = json.loads((tune_dir / "tune.json").read_text())
    assert state["status"] == "complete"
    # the dev rounds of the first attempt were checked and skipped, not run again
    rounds = sorted((tune_dir / "dev").iterdir())
    assert len(rounds) == 2 and all((r / "run.json").is_file() for r in rounds)
    res = json.loads((outcome.study_dir / "study.json").read_text())
    claim = res["claims"][0]
    assert claim["rows"][0]["n"] >= MIN_PAIRS and claim["rows"][0]["sign"] in "+-0"
    assert claim["verdict"] == verdict([claim["rows"][0]["sign"]])
    assert res["claims"][1]["verdict"] == "not supported"  # 4 tokens is outside 17.6..21.5
    assert res["stages"]["smollm2-135m/p"]["seconds"] > 0 and len(probes) == 1
    fams = res["tunes"]["smollm2-135m/p"]["families"]
    assert len(fams["typical"]["trials"]) == 2 and len(fams["wsp"]["trials"]) == 2
    doc = tmp_path / "docs" / "toy.md"
    write_report(res, outcome.study_dir, doc)
    assert "## Verdicts" in doc.read_text() and (tmp_path / "docs" / "toy").is_dir()
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
