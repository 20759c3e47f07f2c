"""An lm-evaluation-harness task as a prompt set: a local-data task YAML of lm-eval's gives
the prompts lm-eval's own evaluator sends (zero-shot and with few-shot examples drawn by
its seeded sampler), and hand-written completions get the filtered answers and the
exact_match lm-eval's own evaluator gives them; wrong entries and tasks fail with a message
naming them; through the runner (a stand-in scheduler deciding each strategy's text) the
rows carry lm-eval's answer and exact_match into Parquet for greedy, top_p and wsp."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from harness.config import resolve_config
from harness.driver import runner
from harness.errors import ConfigError, PromptError
from harness.metrics import score_rows
from harness.plan import make_plan
from harness.tasks import PromptSetConfig, load_prompt_set
from harness.tasks import lm_eval_bridge
from harness.tasks.lm_eval_bridge import lm_eval_records, lm_eval_score
from tests.fakes.scripted_runner import use_scripted_runner

TEST = [{"question": "2+3", "answer": "5"}, {"question": "10-4", "answer": "6"},
        {"question": "7*6", "answer": "42"}, {"question": "9+9", "answer": "18"}]
TRAIN = [{"question": "1+1", "answer": "2"}, {"question": "3+4", "answer": "7"}, {"question": "8-5", "answer": "3"},
         {"question": "6*2", "answer": "12"}, {"question": "5+5", "answer": "10"}]
#: Hand-written completions, by doc: cut at the task's until ("\n") before the regex filter,
#: the last one has no number before its newline.
COMPLETIONS = [" 5\nQuestion: 1+1", " The answer is 6.", " 41", " I think\n18"]
#: Worked out by hand: the regex (-?[0-9]+) on the cut completion, its first match, lm-eval's
#: "[invalid]" fallback when none; exact_match against the answer.
ANSWERS = ["5", "6", "41", "[invalid]"]
SCORES = [1.0, 1.0, 0.0, 0.0]


@pytest.fixture()
def lm_eval():
    return pytest.importorskip("lm_eval", reason="the 'lmeval' extra (pip install -e '.[lmeval]')")


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def task_yaml(folder: Path, name: str = "my_arith", **extra) -> Path:
    """A task YAML on local JSONL files, the way a user writes one for lm-eval."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"test": str(write_jsonl(folder / "test.jsonl", TEST))}
    if extra.get("fewshot_split"):
        files["train"] = str(write_jsonl(folder / "train.jsonl", TRAIN))
    cfg = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files}, "test_split": "test",
           "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
           "doc_to_target": "{{answer}}", "generation_kwargs": {"until": ["\n"]},
           "filter_list": [{"name": "get-number", "filter": [{"function": "regex", "regex_pattern": "(-?[0-9]+)"},
                                                             {"function": "take_first"}]}],
           "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                            "ignore_case": True}], **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def lm_eval_itself(lm_eval, monkeypatch, path: Path, num_fewshot: int | None) -> list[dict]:
    """lm-eval's own evaluator over the task, with a model whose outputs are COMPLETIONS
    (cut at the request's until strings, as lm-eval's models cut theirs): its logged samples."""
    from lm_eval import evaluator
    from lm_eval.api.model import LM
    from lm_eval.models.utils import postprocess_generated_text
    from lm_eval.tasks import TaskManager

    class Scripted(LM):
        def generate_until(self, requests, disable_tqdm=False):
            return [postprocess_generated_text(COMPLETIONS[r.doc_id], r.args[1]["until"], None) for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    monkeypatch.setattr(evaluator, "add_env_info", lambda results: None)  # torch's environment report: slow
    out = evaluator.simple_evaluate(
        model=Scripted(), tasks=[str(path)], num_fewshot=num_fewshot, bootstrap_iters=0, log_samples=True,
        task_manager=TaskManager(include_defaults=False), random_seed=None, numpy_random_seed=None,
        torch_random_seed=None)
    return sorted(out["samples"][path.stem], key=lambda s: s["doc_id"])


# ---- prompts ------------------------------------------------------------------------------------


def test_zero_shot_prompts_are_lm_evals(lm_eval, tmp_path, monkeypatch):
    path = task_yaml(tmp_path / "tasks")
    records = lm_eval_records(str(path))
    assert [r["prompt"] for _, r in records] == [f"Question: {d['question']}\nAnswer:" for d in TEST]
    assert [(r["id"], r["reference"], r["aliases"], r["stop"]) for _, r in records] == \
        [(str(i), d["answer"], [], ["\n"]) for i, d in enumerate(TEST)]
    samples = lm_eval_itself(lm_eval, monkeypatch, path, None)
    assert [r["prompt"] for _, r in records] == [s["arguments"][0][0] for s in samples]


def test_few_shot_prompts_are_lm_evals_seeded_draws(lm_eval, tmp_path, monkeypatch):
    path = task_yaml(tmp_path / "tasks", fewshot_split="train", num_fewshot=2)
    prompts = [r["prompt"] for _, r in lm_eval_records(str(path))]
    # by hand: the sampler draws 2 of the train docs per test doc, in doc order, from one
    # random.Random seeded with lm-eval's fewshot seed 1234; "question answer" examples, blank lines between
    rnd = random.Random(1234)
    by_hand = []
    for d in TEST:
        shots = rnd.sample(TRAIN, 2)
        by_hand.append("".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
                       + f"Question: {d['question']}\nAnswer:")
    assert prompts == by_hand
    samples = lm_eval_itself(lm_eval, monkeypatch, path, None)
    assert prompts == [s["arguments"][0][0] for s in samples]
    # the entry's num_fewshot overrides the task's, as lm-eval's --num_fewshot does
    one_shot = [r["prompt"] for _, r in lm_eval_records(str(path), num_fewshot=1, limit=2)]
    assert one_shot == [s["arguments"][0][0] for s in lm_eval_itself(lm_eval, monkeypatch, path, 1)][:2]
    assert all(p.count("Question: ") == 2 for p in one_shot)
    # and building the prompts again draws the same examples
    assert [r["prompt"] for _, r in lm_eval_records(str(path))] == prompts


def test_a_prompt_set_of_an_lm_eval_task(lm_eval, tmp_path):
    path = task_yaml(tmp_path / "tasks", fewshot_split="train", num_fewshot=2)
    ps = load_prompt_set(PromptSetConfig(name="arith", path=None, chat=False, limit=3, lm_eval_task=str(path)))
    assert [p.id for p in ps.prompts] == ["0", "1", "2"] and ps.source == f"lm_eval:{path}"
    assert [p.reference for p in ps.prompts] == ["5", "6", "42"] and ps.stop == ("\n",)
    assert all(p.extractor == f"lm_eval:{path}" for p in ps.prompts)
    assert ps.prompts[0].text == lm_eval_records(str(path))[0][1]["prompt"]


# ---- scoring ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fewshot", [{}, {"fewshot_split": "train", "num_fewshot": 2}])
def test_scores_are_lm_evals_own(lm_eval, tmp_path, monkeypatch, fewshot):
    path = task_yaml(tmp_path / "tasks", **fewshot)
    lm_eval_records(str(path))
    scores = lm_eval_score(str(path), None, list(enumerate(COMPLETIONS)))
    assert [s.answer for s in scores] == ANSWERS
    assert [s.metrics["exact_match"] for s in scores] == SCORES
    assert {s.filter for s in scores} == {"get-number"}
    samples = lm_eval_itself(lm_eval, monkeypatch, path, None)
    assert [s.answer for s in scores] == [smp["filtered_resps"][0] for smp in samples]
    assert [s.metrics["exact_match"] for s in scores] == [smp["exact_match"] for smp in samples]


def test_scoring_without_building_the_prompts_first_and_in_any_order(lm_eval, tmp_path):
    path = task_yaml(tmp_path / "tasks")
    scores = lm_eval_score(str(path), 0, [(3, " 18"), (0, COMPLETIONS[0]), (3, COMPLETIONS[3])])
    assert [(s.answer, s.metrics["exact_match"]) for s in scores] == [("18", 1.0), ("5", 1.0), ("[invalid]", 0.0)]


def test_the_tasks_metric_settings_apply(lm_eval, tmp_path):
    # no filter_list: lm-eval's take_first, exact_match on the whole cut completion, ignore_case from the YAML
    path = task_yaml(tmp_path / "tasks", filter_list=None, doc_to_target="{{answer}} apples")
    scores = lm_eval_score(str(path), None, [(0, "5 APPLES\nmore"), (0, " 5 apples"), (1, "6 apples.")])
    assert [(s.filter, s.answer) for s in scores] == [("none", "5 APPLES"), ("none", " 5 apples"),
                                                      ("none", "6 apples.")]
    assert [s.metrics["exact_match"] for s in scores] == [1.0, 0.0, 0.0]  # no stripping, no punctuation removal


def test_score_rows_fills_extracted_and_lm_evals_exact_match(lm_eval, tmp_path):
    path = task_yaml(tmp_path / "tasks")
    marker = f"lm_eval:{path}"
    rows = [{"prompt_id": str(i), "extractor": marker, "completion": c, "reference": TEST[i]["answer"],
             "aliases": [], "error": None} for i, c in enumerate(COMPLETIONS)]
    rows.append({"prompt_id": "2", "extractor": marker, "completion": None, "reference": "42", "aliases": [],
                 "error": "boom"})
    rows.append({"prompt_id": "p9", "extractor": None, "completion": "Paris", "reference": "Paris", "aliases": [],
                 "error": None})
    score_rows(rows, ["exact_match"])
    assert [r["extracted"] for r in rows] == [*ANSWERS, None, None]
    assert [r["exact_match"] for r in rows] == [*SCORES, None, 1.0]


# ---- errors -------------------------------------------------------------------------------------


def test_a_missing_yaml_names_the_path(lm_eval, tmp_path):
    with pytest.raises(PromptError) as e:
        lm_eval_records(str(tmp_path / "nope.yaml"))
    assert str(e.value).startswith(f"lm-eval task YAML '{tmp_path / 'nope.yaml'}': no such file")


def test_an_unreadable_yaml_names_the_path(lm_eval, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: [unclosed\n")
    with pytest.raises(PromptError, match=r"lm-eval task YAML '.*bad.yaml': cannot read it as an lm-eval task"):
        lm_eval_records(str(path))


def test_a_task_that_is_not_generate_until_is_refused_before_its_data_loads(lm_eval, tmp_path):
    path = task_yaml(tmp_path / "tasks", name="my_choice", output_type="multiple_choice",
                     dataset_kwargs={"data_files": {"test": str(tmp_path / "absent.jsonl")}})
    with pytest.raises(PromptError) as e:
        lm_eval_records(str(path))
    assert "only generate_until tasks run under decoding strategies; my_choice is multiple_choice" in str(e.value)


def test_a_dataset_not_available_offline_says_how_to_fix_it(lm_eval, tmp_path):
    path = task_yaml(tmp_path / "tasks", dataset_kwargs={"data_files": {"test": str(tmp_path / "absent.jsonl")}})
    with pytest.raises(PromptError) as e:
        lm_eval_records(str(path))
    msg = str(e.value)
    assert msg.startswith(f"lm-eval task YAML '{path}': lm-eval cannot build the task")
    assert "HF_DATASETS_OFFLINE=1" in msg and "dataset_path: json" in msg


def test_an_unknown_task_name_says_did_you_mean(lm_eval, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager
    task_yaml(tmp_path / "tasks")
    # the names lm-eval knows, here: the tasks of one folder (indexing all of lm-eval's takes seconds)
    monkeypatch.setitem(lm_eval_bridge._MANAGERS, True,
                        TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False))
    with pytest.raises(PromptError) as e:
        lm_eval_records("my_arihm")
    assert str(e.value).startswith("unknown lm-eval task 'my_arihm'; did you mean 'my_arith'?")
    assert [r["reference"] for _, r in lm_eval_records("my_arith")] == ["5", "6", "42", "18"]  # found by name


def test_without_lm_eval_the_error_names_the_extra(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)
    with pytest.raises(PromptError, match=r"lm-eval task 'gsm8k' needs lm-evaluation-harness.*pip install -e "
                                          r"'.\[lmeval\]'"):
        lm_eval_records("gsm8k")


# ---- the config -----------------------------------------------------------------------------------


def base(tmp_path: Path, *entries, strategies=({"name": "greedy"},)) -> dict:
    model = tmp_path / "tiny-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 32}))
    return {"run_name": "lmeval", "models": [{"model": str(model), "name": "tiny"}], "prompt_sets": list(entries),
            "strategies": list(strategies), "generation": {"max_tokens": 8}, "metrics": ["exact_match"],
            "output": {"dir": str(tmp_path / "reports")}}


def test_resolve_config_accepts_an_lm_eval_task_entry(tmp_path):
    cfg = resolve_config(base(tmp_path, {"lm_eval_task": "tasks/my_arith.yaml", "num_fewshot": 3, "limit": 10},
                              {"lm_eval_task": "gsm8k", "name": "g"}), "own.yaml")
    a, b = cfg.prompt_sets
    assert (a.name, a.lm_eval_task, a.num_fewshot, a.limit) == ("my_arith", "tasks/my_arith.yaml", 3, 10)
    assert (b.name, b.lm_eval_task, b.num_fewshot, b.path, b.extractor) == ("g", "gsm8k", None, None, None)


@pytest.mark.parametrize("entry,message", [
    ({"lm_eval_task": "gsm8k", "path": "x.jsonl"}, "prompt_sets[0]: lm_eval_task builds its prompts, few-shot "
                                                   "examples and answers with the lm-eval task itself; drop 'path'"),
    ({"lm_eval_task": "gsm8k", "template": "Q: {q}", "extractor": "gsm8k_strict"}, "drop 'template', 'extractor'"),
    ({"lm_eval_task": "gsm8k", "fewshot": 5}, "drop 'fewshot' (they belong in the task YAML"),
    ({"lm_eval_task": "gsm8k", "hf_dataset": {"path": "json"}}, "drop 'hf_dataset'"),
    ({"lm_eval_task": "gsm8k", "fields": {"reference": "a"}}, "drop 'fields'"),
    ({"path": "x.jsonl", "num_fewshot": 2}, "prompt_sets[0].num_fewshot: only for an lm_eval_task entry; for your "
                                            "own data give fewshot: N"),
    ({"lm_eval_task": "gsm8k", "num_fewshot": 65}, "prompt_sets[0].num_fewshot: must be in [0, 64], got 65"),
    ({"lm_eval_task": ""}, "prompt_sets[0].lm_eval_task"),
])
def test_bad_lm_eval_entries_are_config_errors(tmp_path, entry, message):
    with pytest.raises(ConfigError) as e:
        resolve_config(base(tmp_path, entry), "own.yaml")
    assert message in str(e.value)


# ---- end to end: the runner writes lm-eval's answer and score ----------------------------------------


#: What each strategy "generates" for each doc (the stand-in engine decides the text).
TEXTS = {"greedy": [" 5\n", " 6", " 42", " 18"], "top_p": [" 4", " 6\n7", " 42", " eighteen"],
         "wsp": [" 5", " 60", " -42", " 18 apples"]}


def test_a_run_writes_lm_evals_answers_and_exact_match_to_parquet(lm_eval, tmp_path, monkeypatch):
    # each strategy's text from TEXTS, rows made the way the worker makes them
    use_scripted_runner(monkeypatch, lambda unit, p: TEXTS[unit.strategy.name][int(p.id)], completion_tokens=2)
    path = task_yaml(tmp_path / "tasks", fewshot_split="train", num_fewshot=2)
    raw = base(tmp_path, {"lm_eval_task": str(path), "name": "arith"},
               strategies=[{"name": "greedy"}, {"name": "top_p", "top_p": 0.9}, {"name": "wsp"}])
    out = io.StringIO()
    outcome = runner.run(resolve_config(raw, str(tmp_path / "own.yaml")), out=out, progress=False)
    assert outcome.ok and outcome.units_done == 3
    assert "prompt set arith: generation also stops at its task's stop strings ['\\n'] (its units only)" in \
        out.getvalue()
    got = {}
    for f in (outcome.run_dir / "samples").rglob("*.parquet"):
        t = pq.read_table(f).sort_by("prompt_id").to_pydict()
        (name,) = set(t["strategy_name"])
        assert t["prompt_id"] == ["0", "1", "2", "3"] and set(t["extractor"]) == {f"lm_eval:{path}"}
        got[name] = (t["extracted"], t["exact_match"])
    assert got == {"greedy": (["5", "6", "42", "18"], [1.0, 1.0, 1.0, 1.0]),
                   "top_p": (["4", "6", "42", "[invalid]"], [0.0, 1.0, 1.0, 0.0]),
                   "wsp": (["5", "60", "-42", "18"], [1.0, 0.0, 0.0, 1.0])}
    # and they are what lm-eval gives the same texts
    for name, texts in TEXTS.items():
        assert [(s.answer, s.metrics["exact_match"]) for s in lm_eval_score(str(path), None, list(enumerate(texts)))] \
            == list(zip(*got[name]))


def test_an_lm_eval_tasks_until_strings_stop_generation_of_its_own_units_only(lm_eval, tmp_path, monkeypatch):
    stops: dict[str, set] = {}

    def script(unit, p):  # the stop strings each prompt was generated under
        stops.setdefault(p.set, set()).add(unit.stop)
        return " 5"

    use_scripted_runner(monkeypatch, script, completion_tokens=2)
    own = write_jsonl(tmp_path / "own.jsonl", [{"prompt": f"Q{i}", "reference": "5"} for i in range(3)])
    raw = base(tmp_path, {"path": str(own), "name": "own"}, {"lm_eval_task": str(task_yaml(tmp_path / "t")),
                                                            "name": "arith"}, {"name": "tiny", "limit": 2})
    raw["generation"]["stop"] = ["###"]
    cfg = resolve_config(raw, str(tmp_path / "own.yaml"))
    sets = [load_prompt_set(p) for p in cfg.prompt_sets]
    units = make_plan(cfg, sets)
    # the sets without stop strings of their own share units, sharded across sets as before
    assert [(sorted({p.set for p in u.prompts}), u.stop) for u in units] == [
        (["own", "tiny"], ("###",)), (["arith"], ("###", "\n"))]
    outcome = runner.run(cfg, out=io.StringIO(), progress=False)
    assert outcome.ok and outcome.units_done == 2
    assert stops == {"own": {("###",)}, "tiny": {("###",)}, "arith": {("###", "\n")}}
    # until strings already in generation.stop add nothing: one unit, generation.stop as it is
    raw["generation"]["stop"] = ["\n", "###"]
    units = make_plan(resolve_config(raw, str(tmp_path / "own.yaml")), sets)
    assert [u.stop for u in units] == [("\n", "###")]
