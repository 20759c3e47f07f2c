"""``deceval tune`` end to end on toy engine actors (the real runner, scheduler, Ray and
Parquet; no vLLM): the dev/test split, equal budgets, the best trial in the objective's
direction under the constraints, the test run, and a tune killed mid-way that resumes
without running a finished trial again."""

from __future__ import annotations

import io
import json

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("optuna")

import harness.driver.placement as placement  # noqa: E402
from harness.config import parse_tune_config  # noqa: E402
from harness.tasks import PromptSetConfig, load_prompt_set  # noqa: E402
from harness.report import read_samples  # noqa: E402
from harness.tune import tuner  # noqa: E402
from harness.tune.tuner import Trial, best_trial, run_tune  # noqa: E402
from tests.fakes.toy_actor import ToyEngineActor  # noqa: E402

TUNE = {
    "objective": "computed_per_generated", "trials": 3, "dev_fraction": 0.5, "seed": 3,
    "constraints": {"length": {"min": 1}}, "baseline": "typical",
    "families": [{"name": "typical", "impl": "stepwise", "typical_p": {"low": 0.3, "high": 0.95}},
                 {"name": "wsp", "max_candidates": {"low": 1, "high": 6}},
                 {"name": "wsp", "label": "wsp-grid", "max_candidates": [2, 4]}],
}


@pytest.fixture()
def toy_actors(monkeypatch, ray_local):
    monkeypatch.setattr(placement, "_ACTOR_CLASS", ray.remote(ToyEngineActor))
    yield
    placement.KEPT.release()


def base(tmp_path):
    return {"run_name": "tq", "models": ["smollm2-135m"], "prompt_sets": [{"name": "facts", "limit": 12}],
            "generation": {"max_tokens": 4, "seed": 0}, "metrics": ["computed_per_generated", "length"],
            "output": {"dir": str(tmp_path)}}


def tune(tmp_path, **over):
    return run_tune(base(tmp_path), parse_tune_config({**TUNE, **over}, "t.yaml"), "t.yaml", out=io.StringIO(),
                    progress=False)


def test_a_tune_runs_equal_budgets_on_dev_and_the_best_on_test(tmp_path, toy_actors):
    res = tune(tmp_path)
    state = json.loads((res.tune_dir / "tune.json").read_text())
    counts = {k: len(v["trials"]) for k, v in state["families"].items()}
    assert counts == {"typical": 3, "wsp": 3, "wsp-grid": 2}  # a grid smaller than the budget runs whole
    assert sorted(t["params"]["max_candidates"] for t in state["families"]["wsp-grid"]["trials"]) == [2, 4]
    # dev and test: disjoint, together the whole (limited) set, and what each run saw
    everything = {p.id for p in load_prompt_set(PromptSetConfig("facts", None, False, 12)).prompts}
    dev = set(read_samples([r.run_dir for r in res.rounds])["prompt_id"])
    test = set(read_samples(res.test.run_dir)["prompt_id"])
    assert dev and test and not dev & test and dev | test == everything
    # the best: the lowest feasible objective of each family (computed_per_generated: lower is better)
    for key, trials in res.trials.items():
        feasible = [t for t in trials if t.feasible]
        assert res.best[key].value == min(t.value for t in feasible)
        assert state["families"][key]["best"]["number"] == res.best[key].number
    assert set(read_samples(res.test.run_dir)["strategy_label"]) == {"typical", "wsp", "wsp-grid"}
    summary = (res.tune_dir / "tune.md").read_text()
    assert "| wsp-grid | 2 |" in summary and "against `typical`" in summary
    assert (res.tune_dir / "leaderboard").is_dir() and state["status"] == "complete"
    # the sensitivity plots: PNGs linked from tune.md and embedded in the leaderboard's HTML page
    pngs = sorted(p.name for p in (res.tune_dir / "sensitivity").glob("*.png"))
    assert pngs == ["typical-typical_p.png", "wsp-grid-max_candidates.png", "wsp-max_candidates.png"]
    page = (res.tune_dir / "leaderboard" / "leaderboard.html").read_text()
    assert "Sensitivity" in page and page.count("<img") >= len(pngs) + 1
    assert all(f"alt=\"{n[:-4]}: computed_per_generated" in page for n in pngs)
    assert all(f"(sensitivity/{n})" in summary for n in pngs)


def test_an_interrupted_tune_resumes_without_rerunning_finished_trials(tmp_path, toy_actors, monkeypatch):
    real_run, calls = tuner.run, []

    def crash_in_round_three(cfg, **kw):
        calls.append(cfg.run_id_override)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the driver dies in round 3
        return real_run(cfg, **kw)

    monkeypatch.setattr(tuner, "run", crash_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        tune(tmp_path)
    monkeypatch.setattr(tuner, "run", real_run)
    again = tune(tmp_path)
    first_two = again.rounds[:2]
    assert all(r.units_done == 0 and r.units_skipped == r.units_total > 0 for r in first_two)
    assert again.rounds[2].units_done == again.rounds[2].units_total  # the round that died runs now
    fresh = tune(tmp_path / "fresh")  # the same proposals as a tune that never stopped
    assert {k: [t.params for t in v] for k, v in again.trials.items()} == \
           {k: [t.params for t in v] for k, v in fresh.trials.items()}


def test_best_trial_honours_direction_constraints_and_ties():
    ts = [Trial("f", 0, {}, "a", value=0.5, feasible=True), Trial("f", 1, {}, "b", value=0.9, feasible=False),
          Trial("f", 2, {}, "c", value=0.7, feasible=True), Trial("f", 3, {}, "d", value=0.7, feasible=True),
          Trial("f", 4, {}, "e", value=None, feasible=False)]
    assert best_trial(ts, "maximize").number == 2  # 0.9 breaks a constraint; 0.7 twice: the earlier
    assert best_trial(ts, "minimize").number == 0
    assert best_trial([ts[1], ts[4]], "maximize") is None
