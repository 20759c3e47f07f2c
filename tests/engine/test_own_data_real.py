"""A user's own benchmark on the real engine: configs/own-data.yaml's JSONL (its own field
names, a template, the last_number extractor) and its lm-eval task YAML on the same file,
under greedy, top-p and WSP. The extracted answers and exact_match are checked against
rules computed here from the completions: the JSONL's last number, and the lm-eval task's
regex filter (first integer, take_first) with its exact_match (ignore_case)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harness.config import resolve_config
from harness.engine.worker import execute_unit
from harness.metrics import score_rows
from harness.plan import make_plan
from harness.tasks import load_prompt_set

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_data_rows(engine, monkeypatch_module):
    monkeypatch_module.chdir(ROOT)  # the configs name their files from the repository root
    raw = yaml.safe_load((ROOT / "configs/own-data.yaml").read_text())
    for entry in raw["prompt_sets"]:
        entry["limit"] = 4
    raw["generation"]["max_tokens"] = 8
    raw["generation"]["stop"] = []  # the lm-eval task's own until (["\n"]) still stops its set's units
    cfg = resolve_config(raw, "configs/own-data.yaml")
    sets = [load_prompt_set(p) for p in cfg.prompt_sets]
    rows = []
    for unit in make_plan(cfg, sets):
        result = execute_unit(engine, unit)
        score_rows(result.rows, unit.metrics or ())
        rows += result.rows
    return cfg, sets, rows


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_every_strategy_runs_both_sets_with_extracted_answers(own_data_rows):
    cfg, sets, rows = own_data_rows
    assert [s.name for s in sets] == ["arith", "arith_task"]
    assert {r["strategy_label"] for r in rows} == {"greedy", "top_p(top_p=0.9)", "wsp(max_candidates=4)"}
    assert len(rows) == 3 * 2 * 4 and not any(r["error"] for r in rows)
    assert all(isinstance(r["completion"], str) for r in rows)
    assert {r["extractor"] for r in rows if r["prompt_set"] == "arith"} == {"last_number"}
    assert {r["extractor"] for r in rows if r["prompt_set"] == "arith_task"} == {
        "lm_eval:configs/examples/arith_task.yaml"}


def test_the_jsonl_sets_answers_are_the_last_number_and_exact_match_compares_them(own_data_rows):
    _, _, rows = own_data_rows
    for r in (r for r in rows if r["prompt_set"] == "arith"):
        numbers = re.findall(r"-?\d+(?:\.\d+)?", r["completion"].replace(",", ""))
        if not numbers:
            assert r["extracted"] is None and r["exact_match"] == 0.0, r["completion"]
            continue
        assert float(r["extracted"]) == float(numbers[-1]), r["completion"]
        assert r["exact_match"] == float(r["extracted"].rstrip(".") == r["reference"])


def test_the_lm_eval_tasks_rows_follow_its_regex_filter_and_exact_match(own_data_rows):
    _, _, rows = own_data_rows
    lm_rows = [r for r in rows if r["prompt_set"] == "arith_task"]
    for r in lm_rows:
        text = r["completion"].split("\n")[0]  # the task's until: ["\n"]
        m = re.search(r"(-?[0-9]+)", text)
        expected = m.group(1) if m else "[invalid]"
        assert r["extracted"] == expected, r["completion"]
        assert r["exact_match"] == float(expected.lower() == r["reference"].lower())
    # the same prompts as the JSONL set's template: one file, two ways in; generation of the
    # task's rows stopped at its until string, the JSONL set's (no stop strings) went on
    by_id = {r["prompt_id"]: r for r in rows if r["prompt_set"] == "arith" and r["strategy_label"] == "greedy"}
    greedy = [r for r in lm_rows if r["strategy_label"] == "greedy"]
    assert [r["prompt"] for r in greedy] == [by_id[f"arith-{int(r['prompt_id']):02d}"]["prompt"] for r in greedy]
    assert [r["completion"] for r in greedy] == [by_id[f"arith-{int(r['prompt_id']):02d}"]["completion"].split("\n")[0]
                                               for r in greedy]
    assert not any("\n" in r["completion"] for r in lm_rows)
    went_on = [r for r in greedy if "\n" in by_id[f"arith-{int(r['prompt_id']):02d}"]["completion"]]
    assert went_on, "no JSONL completion went past a line break: the test shows nothing"
    assert {r["finish_reason"] for r in went_on} == {"stop"}
