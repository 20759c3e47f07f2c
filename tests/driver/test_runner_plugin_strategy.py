"""Strategies own their columns: a plugin strategy (tests/fakes/plugin_strategy.py) with its
own per-sample metric and step-trace field runs through the real runner, scheduler, Ray
actors and Parquet (on a toy engine), and its columns reach the report, run.json and the
leaderboard, with no harness module naming them."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import harness.driver.placement as placement  # noqa: E402
from harness.analysis.leaderboard import build_leaderboard, plots, to_markdown  # noqa: E402
from harness.config import resolve_config  # noqa: E402
from harness.driver.runner import run  # noqa: E402
from harness.report import read_run_json, read_samples  # noqa: E402
from tests.fakes.plugin_strategy import PLUGIN_NAME  # noqa: E402
from tests.fakes.toy_actor import ToyEngineActor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def toy_actors(monkeypatch, ray_local):
    monkeypatch.setattr(placement, "_ACTOR_CLASS", ray.remote(ToyEngineActor))
    yield
    placement.KEPT.release()


@pytest.fixture()
def plugin_report(toy_actors, tmp_path):
    cfg = resolve_config({
        "run_name": "plugin", "models": ["smollm2-135m"], "prompt_sets": ["tiny"],
        "strategies": [{"name": PLUGIN_NAME}, {"name": "wsp", "max_candidates": 3}],
        "generation": {"max_tokens": 5, "seed": 0}, "metrics": ["length", "eos_share"],
        "output": {"dir": str(tmp_path)}}, "plugin-test")
    outcome = run(cfg, out=io.StringIO(), progress=False)
    assert outcome.ok, outcome.units_failed
    return outcome.run_dir


def test_the_plugins_columns_are_in_the_parquet_rows(plugin_report):
    df = read_samples(plugin_report)
    mine, wsp = df[df["strategy_name"] == PLUGIN_NAME], df[df["strategy_name"] == "wsp"]
    assert len(mine) == 8 and len(wsp) == 8
    for _, row in mine.iterrows():
        steps = list(row["steps"])
        assert len(steps) == row["completion_tokens"] == 5
        assert all(math.isclose(st["surprisal"], -st["logprob"]) for st in steps)
        assert math.isclose(row["mean_surprisal"], sum(st["surprisal"] for st in steps) / 5)
        assert all(st["n_chosen"] is None for st in steps)  # WSP's trace fields: null on the plugin's rows
    assert wsp["mean_surprisal"].isna().all()  # and the plugin's columns null on WSP's
    assert all(st["surprisal"] is None and st["n_chosen"] >= 1 for steps in wsp["steps"] for st in steps)
    assert wsp["mean_log_possibilities"].notna().all()


def test_run_json_records_the_declarations(plugin_report):
    cols = {c["name"]: c for c in read_run_json(plugin_report)["columns"]["sample"]}
    assert cols["mean_surprisal"]["direction"] == "lower" and cols["mean_surprisal"]["type"] == "float64"
    steps = [c["name"] for c in read_run_json(plugin_report)["columns"]["steps"]]
    assert steps[:4] == ["token_id", "logprob", "rank", "candidates"] and "surprisal" in steps


def test_the_leaderboard_ranks_the_plugins_metric_by_its_declared_direction(plugin_report):
    lb = build_leaderboard([plugin_report], metrics=["length"], n_boot=200)
    t = lb.table[lb.table["metric"] == "mean_surprisal"]
    assert len(t) == 1 and t["strategy"].iloc[0] == PLUGIN_NAME  # only the plugin's rows have it
    assert t["direction"].iloc[0] == "lower" and t["rank"].iloc[0] == 1
    assert "mean_surprisal" in to_markdown(lb)
    titles = [title for title, _ in plots(lb, lb.models()[0])]
    assert "mean surprisal of the chosen tokens (nats)" in titles


def test_no_harness_module_names_a_strategy():
    for path in (ROOT / "harness").rglob("*.py"):
        text = path.read_text(encoding="utf-8").lower()
        assert "wsp" not in text and "surprisal" not in text, path
