"""A benchmark of the user's own, without code: a ``prompt_sets`` entry with a file, a
field mapping, a template, few-shot examples and an answer extractor is accepted (and a
wrong one rejected with a message naming the entry, the value and the fix); its rows carry
the extractor and the extracted answer, and exact_match scores that answer, through the
runner into Parquet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.config import resolve_config
from harness.driver import runner
from harness.errors import ConfigError
from harness.metrics import score_rows
from harness.tasks import load_prompt_set
from harness.rows import sample_schema
from harness.tasks import HFDataset
from tests.fakes.rows import row
from tests.fakes.scripted_runner import use_scripted_runner

GSM = [
    {"qid": "g1", "question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
     "answer": "48/2 = 24; 48+24 = 72\n#### 72"},
    {"qid": "g2", "question": "Weng earns $12 an hour. How much for 50 minutes?", "answer": "12/60*50 = 10\n#### 10"},
    {"qid": "g3", "question": "A robe takes 2 bolts of blue and half that of white. How many bolts?",
     "answer": "2/2 = 1; 2+1 = 3\n#### 3"},
    {"qid": "g4", "question": "Josh buys a house for $80,000 and adds $50,000. What did it cost?",
     "answer": "80,000+50,000 = 130,000\n#### 130,000"},
]


def base(tmp_path: Path, **entry) -> dict:
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GSM))
    model = tmp_path / "tiny-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 32}))
    return {"run_name": "own", "models": [{"model": str(model), "name": "tiny"}],
            "prompt_sets": [{"path": str(data), **entry}], "strategies": [{"name": "greedy"}],
            "generation": {"max_tokens": 8}, "metrics": ["exact_match"], "output": {"dir": str(tmp_path / "reports")}}


GSM_ENTRY = {"name": "gsm", "fields": {"reference": "answer", "id": "qid"}, "template": "Question: {question}\nAnswer:",
             "fewshot": 1, "extractor": "gsm8k_strict"}


# ---- the config ---------------------------------------------------------------------------------


def test_resolve_config_accepts_a_task_entry(tmp_path):
    cfg = resolve_config(base(tmp_path, **GSM_ENTRY), "own.yaml")
    (ps,) = cfg.prompt_sets
    assert (ps.name, ps.fields, ps.fewshot, ps.extractor) == ("gsm", {"reference": "answer", "id": "qid"}, 1,
                                                              "gsm8k_strict")
    prompts = load_prompt_set(ps).prompts
    assert [p.id for p in prompts] == ["g2", "g3", "g4"] and all(p.extractor == "gsm8k_strict" for p in prompts)
    assert prompts[0].text.startswith(f"Question: {GSM[0]['question']}\nAnswer: {GSM[0]['answer']}\n\nQuestion: ")


def test_an_hf_dataset_entry_and_a_csv_path(tmp_path):
    raw = base(tmp_path)
    raw["prompt_sets"] = [{"hf_dataset": {"path": "openai/gsm8k", "name": "main", "split": "test"},
                           "extractor": "gsm8k_flexible"},
                          {"hf_dataset": {"path": "json", "data_files": {"test": ["a.jsonl", "b.jsonl"]}, "split": "test"},
                           "name": "local"},
                          "my/qa.csv"]
    a, b, c = resolve_config(raw, "own.yaml").prompt_sets
    assert a.name == "gsm8k" and a.hf_dataset == HFDataset(path="openai/gsm8k", split="test", name="main")
    assert b.hf_dataset.data_files == {"test": ["a.jsonl", "b.jsonl"]}
    assert (c.name, c.path, c.hf_dataset) == ("qa", "my/qa.csv", None)


def test_an_unknown_extractor_names_the_entry_the_value_and_the_choices(tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve_config(base(tmp_path, extractor="gsm8k_strikt"), "own.yaml")
    msg = str(e.value)
    assert msg.startswith("own.yaml: prompt_sets[0].extractor: unknown answer extractor 'gsm8k_strikt'")
    assert "did you mean 'gsm8k_strict'" in msg
    assert "Known: answer_is, choice_letter, gsm8k_flexible, gsm8k_strict, last_number, yes_no" in msg


@pytest.mark.parametrize("entry,message", [
    ({"template": "Q: {q!r}"}, "own.yaml: prompt_sets[0].template: template 'Q: {q!r}': placeholder {q!r} has a "
                               "conversion"),
    ({"template": "Q: {q}", "fields": {"prompt": "q"}}, "fields.prompt and template both say where the prompt comes"),
    ({"fewshot_path": "shots.jsonl"}, "prompt_sets[0].fewshot_path: given, but fewshot is 0"),
    ({"hf_dataset": {"path": "gsm8k"}}, "prompt_sets[0]: give 'path' (a file) or 'hf_dataset', not both"),
    ({"fewshot": 65}, "prompt_sets[0].fewshot: must be in [0, 64], got 65"),
    ({"fields": {"answer": "a"}}, "prompt_sets[0].fields.answer: unknown key"),
    ({"hf_dataset": {"split": "test"}, "path": None}, "prompt_sets[0].hf_dataset.path: required key is missing"),
])
def test_bad_task_keys_are_config_errors(tmp_path, entry, message):
    with pytest.raises(ConfigError) as e:
        resolve_config(base(tmp_path, **entry), "own.yaml")
    assert message in str(e.value)


# ---- rows and metrics ---------------------------------------------------------------------------


def test_score_rows_fills_extracted_and_exact_match_scores_it():
    rows = [row("48+24 = 72\n#### 72", extractor="gsm8k_strict", reference="...#### 72"),
            row("so #### $1,234.", extractor="gsm8k_flexible", reference="1234"),
            row("The answer is 71.", extractor="gsm8k_strict", reference="72"),
            row("Paris", reference="Paris"),
            row("#### 72", extractor="gsm8k_strict", reference="72", error="boom")]
    score_rows(rows, ["exact_match"])
    assert [r["extracted"] for r in rows] == ["72", "$1,234.", None, None, None]
    assert [r["exact_match"] for r in rows] == [1.0, 1.0, 0.0, 1.0, None]


def test_exact_match_without_an_extractor_is_unchanged():
    rows = [row("  The Eiffel Tower!\nmore", reference="eiffel tower"), row("The answer is 72", reference="72")]
    score_rows(rows, ["exact_match"])
    assert [r["exact_match"] for r in rows] == [1.0, 0.0]


def test_the_schema_has_the_extractor_and_extracted_columns():
    schema = sample_schema([])
    assert schema.field("extractor").type == schema.field("extracted").type == "string"
    names = schema.names
    assert names.index("extractor") == names.index("aliases") + 1
    assert names.index("extracted") == names.index("completion") + 1


# ---- end to end: the runner writes them ----------------------------------------------------------


ANSWERS = {"g2": " 12/60*50 = 10\n#### 10", "g3": " 2+1 = 3\n#### 4", "g4": " It cost $130,000.\n"}


@pytest.mark.parametrize("extractor,extracted,scores", [
    ("gsm8k_strict", ["10", "4", None], [1.0, 0.0, 0.0]),
    ("gsm8k_flexible", ["10", "4", "$130,000."], [1.0, 0.0, 1.0]),
])
def test_a_run_writes_extracted_and_exact_match_to_parquet(tmp_path, monkeypatch, extractor, extracted, scores):
    # each prompt answered from ANSWERS, rows made the way the worker makes them
    use_scripted_runner(monkeypatch, lambda unit, p: ANSWERS[p.id], completion_tokens=4)
    cfg = resolve_config(base(tmp_path, **{**GSM_ENTRY, "extractor": extractor}), str(tmp_path / "own.yaml"))
    outcome = runner.run(cfg, out=io.StringIO(), progress=False)
    assert outcome.ok and outcome.units_done == 1
    (path,) = (outcome.run_dir / "samples").rglob("*.parquet")
    table = pq.read_table(path).sort_by("prompt_id").to_pydict()
    assert table["prompt_id"] == ["g2", "g3", "g4"]
    assert table["extractor"] == [extractor] * 3
    assert table["extracted"] == extracted
    assert table["exact_match"] == scores
