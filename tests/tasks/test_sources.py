"""The user's own data as a prompt set: each loader (JSONL, Parquet, CSV, a Hugging Face
dataset from local files), the field mapping, the restricted template, few-shot examples,
the extractor carried on each prompt, and bad input, each error naming the file, the
line or row and the field."""

from __future__ import annotations

import csv
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.errors import DecevalError, PromptError
from harness.tasks import Prompt, PromptSetConfig, load_prompt_set
from harness.tasks import HFDataset, Template, records_from_hf

GSM = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
     "answer": "In May she sold 48/2 = 24.\n48+24 = 72\n#### 72", "qid": "g1"},
    {"question": "Weng earns $12 an hour. How much for 50 minutes?", "answer": "12/60*50 = 10\n#### 10", "qid": "g2"},
    {"question": "Betty needs $100 and has half. Her parents give $15, grandparents twice that. How much more?",
     "answer": "100/2 = 50; 15*2 = 30; 100-50-15-30 = 5\n#### 5", "qid": "g3"},
]
TEMPLATE = "Question: {question}\nAnswer:"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_csv(path, records):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    return path


def cfg(path=None, name="gsm", **kw):
    return PromptSetConfig(name=name, path=None if path is None else str(path), chat=False, limit=kw.pop("limit", None),
                           **kw)


GSM_KEYS = {"fields": {"reference": "answer", "id": "qid"}, "template": TEMPLATE}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_each_file_format_gives_the_same_prompts(tmp_path, fmt):
    path = tmp_path / f"gsm.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, GSM)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(GSM), path)
    else:
        write_csv(path, GSM)
    ps = load_prompt_set(cfg(path, extractor="gsm8k_strict", **GSM_KEYS))
    assert [p.id for p in ps.prompts] == ["g1", "g2", "g3"]
    first = ps.prompts[0]
    assert first.text == f"Question: {GSM[0]['question']}\nAnswer:"
    assert first.reference == GSM[0]["answer"] and first.extractor == "gsm8k_strict"
    assert ps.source == str(path)


def test_the_hash_takes_the_extractor_only_when_there_is_one():
    plain = Prompt(id="a", set="s", text="t", reference="r")
    before = hashlib.sha256(json.dumps(["t", "r", [], False]).encode()).hexdigest()[:16]
    assert plain.hash == before  # the hash prompts had before extractors existed
    assert Prompt(id="a", set="s", text="t", reference="r", extractor="yes_no").hash != plain.hash


def test_the_plain_prompt_file_format_is_unchanged(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "hi", "reference": "x", "extra": 1}])
    (p,) = load_prompt_set(cfg(path, name="mine")).prompts
    assert (p.id, p.text, p.reference, p.extractor) == ("mine-0000", "hi", "x", None)


def test_fields_map_every_prompt_field(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Capital of France?", "a": "Paris", "key": 7, "alt": ["paris"]},
                                              {"q": "Capital of Peru?", "a": "Lima", "key": 8, "alt": "lima"}])
    ps = load_prompt_set(cfg(path, fields={"prompt": "q", "reference": "a", "id": "key", "aliases": "alt"}))
    assert [(p.id, p.text, p.reference, p.aliases) for p in ps.prompts] == [
        ("7", "Capital of France?", "Paris", ("paris",)), ("8", "Capital of Peru?", "Lima", ("lima",))]


def test_a_mapped_field_missing_from_a_record_lists_the_fields_found(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": "a?", "a": "1"}, {"question": "b?", "a": "2"}])
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path, fields={"prompt": "q", "reference": "a"}))
    msg = str(e.value)
    assert f"{path}:2" in msg and "missing field 'q'" in msg and "fields.prompt" in msg
    assert "fields found: a, question" in msg


def test_the_template_may_name_any_field_and_fills_none_as_empty(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"ctx": None, "q": "Why?", "n": 3, "reference": "because"}])
    (p,) = load_prompt_set(cfg(path, template="{ctx}Q{n}: {q} {{literal}}")).prompts
    assert p.text == "Q3: Why? {literal}" and p.reference == "because"


@pytest.mark.parametrize("template,shown,problem", [
    ("Q: {a.b}", "{a.b}", "attribute access or indexing"),
    ("Q: {a[0]}", "{a[0]}", "attribute access or indexing"),
    ("Q: {a!r}", "{a!r}", "a conversion"),
    ("Q: {a:>10}", "{a:>10}", "a format spec"),
    ("Q: {}", "{}", "positional"),
    ("Q: {0}", "{0}", "positional"),
    ("Q: {a.__class__}", "{a.__class__}", "attribute access"),
])
def test_the_template_rejects_all_but_plain_placeholders(template, shown, problem):
    with pytest.raises(PromptError) as e:
        Template(template)
    msg = str(e.value)
    assert repr(template) in msg and f"placeholder {shown}" in msg and problem in msg


def test_a_malformed_template_says_how_to_write_braces():
    with pytest.raises(PromptError, match=r"template 'Q: \{a': .*literal braces"):
        Template("Q: {a")


def test_a_template_field_a_record_lacks_names_the_line_and_the_fields(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", GSM[:1] + [{"query": "x", "answer": "1"}])
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path, **GSM_KEYS))
    msg = str(e.value)
    assert f"{path}:2" in msg and "field 'question'" in msg and "fields found: answer, query" in msg


def test_fewshot_from_the_same_file_leaves_the_set(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    ps = load_prompt_set(cfg(path, fewshot=2, **GSM_KEYS))
    assert [p.id for p in ps.prompts] == ["g3"]
    shots = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in GSM[:2]]
    assert ps.prompts[0].text == "\n\n".join([*shots, f"Question: {GSM[2]['question']}\nAnswer:"])


def test_fewshot_from_a_file_of_its_own(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", [{"question": "2+2?", "answer": "4"}])
    shots = write_csv(tmp_path / "train.csv", [{"question": "1+1?", "answer": "2"}, {"question": "3+3?", "answer": "6"}])
    (p,) = load_prompt_set(cfg(path, name="t", fewshot=1, fewshot_path=str(shots), fields={"reference": "answer"},
                               template=TEMPLATE)).prompts
    assert p.id == "t-0000"
    assert p.text == "Question: 1+1?\nAnswer: 2\n\nQuestion: 2+2?\nAnswer:"


def test_fewshot_errors_name_the_file_and_the_fix(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    with pytest.raises(PromptError, match=r"fewshot: 3 takes the first 3 records .* leaves no prompts"):
        load_prompt_set(cfg(path, fewshot=3, **GSM_KEYS))
    with pytest.raises(PromptError, match=r"fewshot is 4, but it has only 3 records"):
        load_prompt_set(cfg(path, fewshot=4, **GSM_KEYS))
    shots = write_jsonl(tmp_path / "shots.jsonl", [{"question": "q?", "answer": "1"}, {"question": "r?", "answer": None}])
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path, fewshot=2, fewshot_path=str(shots), **GSM_KEYS))
    assert f"{shots}:2" in str(e.value) and "a few-shot example needs a reference" in str(e.value)
    write_jsonl(shots, [{"question": "q?"}])
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path, fewshot=1, fewshot_path=str(shots), **GSM_KEYS))
    assert f"{shots}:1" in str(e.value) and "missing field 'answer'" in str(e.value)


def test_csv_values_are_text_and_empty_cells_none(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('id,prompt,reference\nq1,"Say ""hi"", twice",\nq2,"two\nlines",2\n')
    ps = load_prompt_set(cfg(path, name="qa"))
    assert [(p.id, p.text, p.reference) for p in ps.prompts] == [("q1", 'Say "hi", twice', None),
                                                                  ("q2", "two\nlines", "2")]


def test_a_csv_without_a_header_says_so(tmp_path):
    path = tmp_path / "noheader.csv"
    path.write_text("What is 2+2?,4\nWhat is 3+3?,6\n")
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path))
    msg = str(e.value)  # the first line was taken for the header: the prompt column is not there
    assert f"{path}:2" in msg and "'prompt'" in msg and "fields found: 4, What is 2+2?" in msg
    empty = tmp_path / "empty_first_line.csv"
    empty.write_text("\nprompt\nhi\n")
    with pytest.raises(PromptError, match=r"empty_first_line.csv: line 1: expected a header naming the columns"):
        load_prompt_set(cfg(empty))


@pytest.mark.parametrize("text,message", [
    ("prompt,reference\nhi,1,extra\n", r"bad.csv:2: 3 values, but the header has 2 columns \(prompt, reference\)"),
    ("prompt,prompt\nhi,ho\n", r"bad.csv: line 1: the header has duplicate column names \['prompt'\]"),
    ("prompt,\nhi,ho\n", r"bad.csv: line 1: the header has an empty column name"),
    ('prompt\n"unclosed\n', r"bad.csv:\d+: not valid CSV"),
])
def test_malformed_csv_names_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PromptError, match=message):
        load_prompt_set(cfg(path))


def test_unreadable_parquet_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(PromptError, match=r"broken.parquet: cannot read as Parquet"):
        load_prompt_set(cfg(path))


def test_a_parquet_row_missing_a_mapped_field_names_the_row(tmp_path):
    path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"question": ["a?", "b?"], "label": ["x", "y"]}), path)
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path, fields={"prompt": "question", "reference": "answer"}))
    assert f"{path}: row 0" in str(e.value) and "missing field 'answer'" in str(e.value)
    assert "fields found: label, question" in str(e.value)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "qa.tsv"
    path.write_text("prompt\nhi\n")
    with pytest.raises(PromptError, match=r"unsupported extension '.tsv'; expected .jsonl, .jsonl.gz, .parquet or .csv"):
        load_prompt_set(cfg(path))


# ---- Hugging Face datasets ------------------------------------------------------------------------


def test_hf_dataset_from_local_json_files(tmp_path, monkeypatch):
    pytest.importorskip("datasets", reason="the 'tasks' extra (pip install -e '.[tasks]')")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    data = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    spec = HFDataset(path="json", data_files={"test": str(data)}, split="test")
    ps = load_prompt_set(cfg(hf_dataset=spec, extractor="gsm8k_flexible", **GSM_KEYS))
    assert [p.id for p in ps.prompts] == ["g1", "g2", "g3"] and ps.source == "hf:json"
    assert ps.prompts[1].text == f"Question: {GSM[1]['question']}\nAnswer:"
    import os
    assert "HF_DATASETS_OFFLINE" not in os.environ  # offline for the call only


def test_hf_dataset_not_available_offline_says_how_to_fix_it(tmp_path, monkeypatch):
    pytest.importorskip("datasets", reason="the 'tasks' extra (pip install -e '.[tasks]')")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    with pytest.raises(PromptError) as e:
        records_from_hf(HFDataset(path="no-such-user/no-such-dataset", name="main", split="test"))
    msg = str(e.value)
    assert "hf_dataset 'no-such-user/no-such-dataset' (main) split 'test' is not available offline" in msg
    assert "HF_DATASETS_OFFLINE=1" in msg and "load_dataset('no-such-user/no-such-dataset', 'main'" in msg
    assert "give 'path:'" in msg
    with pytest.raises(PromptError, match=r"hf_dataset 'json' split 'train': cannot load its data_files .*absent"):
        records_from_hf(HFDataset(path="json", data_files=str(tmp_path / "absent.jsonl")))


def test_hf_dataset_without_the_package_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(PromptError, match=r"needs the 'datasets' package: pip install -e '.\[tasks\]'"):
        records_from_hf(HFDataset(path="gsm8k", split="test"))


def test_every_error_is_a_deceval_error(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a"}])
    with pytest.raises(DecevalError):
        load_prompt_set(cfg(path, template="{missing}"))
