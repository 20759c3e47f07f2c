"""The built-in tasks: sizes as declared, licences in the set and the report, packaged data
checked against its SHA-256, GSM8K in lm-eval's shape, and ``deceval tasks``."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace

import pytest

from harness.cli import main
from harness.errors import PromptError
from harness.metrics.task import exact_match
from harness.tasks import PromptSetConfig, load_prompt_set
from harness.tasks.catalogue import TASKS, USER_LICENCE, TaskData, check_task


def _load(name: str, **kw) -> object:
    return load_prompt_set(PromptSetConfig(name=name, path=None, chat=False, limit=None, **kw))


#: tasks whose package archive the registry still serves (the rest: tests/tasks/test_archive.py)
SERVED = sorted(n for n, t in TASKS.items() if t.archive is None or not t.archive.withdrawn)


@pytest.mark.parametrize("name", SERVED)
def test_every_built_in_task_is_ready_and_has_the_size_it_declares(name):
    task = TASKS[name]
    assert task.problem() is None, task.problem()
    ps = _load(name)
    assert len(ps.prompts) == task.size
    assert ps.licence == task.licence and task.licence
    assert len({p.id for p in ps.prompts}) == task.size


def test_gsm8k_is_five_shot_from_train_in_lm_evals_format_with_the_strict_extractor():
    ps = _load("gsm8k")
    first = ps.prompts[0]
    with gzip.open(TASKS["gsm8k"].data.path, "rt", encoding="utf-8") as f:
        doc = json.loads(f.readline())
    with gzip.open(TASKS["gsm8k"].fewshot_data.path, "rt", encoding="utf-8") as f:
        shots = [json.loads(line) for line in f][:5]
    expected = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    assert first.text == expected + f"Question: {doc['question']}\nAnswer:"
    assert first.reference == doc["answer"] and first.reference.endswith("#### 18")
    assert first.extractor == "gsm8k_strict"
    # no test problem is its own example: the shots are train problems
    assert not any(s["question"] in (p.text.rsplit("Question: ", 1)[-1]) for s in shots for p in ps.prompts[:50])


@pytest.mark.parametrize("completion,score", [
    (" She sells 9 eggs, 9 * 2 = 18.\n#### 18", 1.0),
    (" 9 * 2 = 18.\n#### 18.", 1.0),  # a final '.' is ignored (lm-eval's regexes_to_ignore)
    (" 9 * 2 = 18\n#### $18", 0.0),  # as in lm-eval: its strict regex takes no '$'
    (" 9 * 2 = 18\n#### 18\n\nQuestion: next one\n#### 7", 1.0),  # the first '#### ' counts
    (" The answer is 18.", 0.0),  # strict: no '#### ', nothing extracted
    (" 9 * 2 = 18\n#### 17", 0.0),
])
def test_gsm8k_exact_match_reads_the_strict_answer_against_the_solutions_final_number(completion, score):
    p = _load("gsm8k").prompts[0]
    row = {"completion": completion, "reference": p.reference, "aliases": list(p.aliases), "extractor": p.extractor}
    assert exact_match(row) == score


def test_an_entry_may_override_the_tasks_extractor():
    ps = load_prompt_set(PromptSetConfig(name="gsm8k", path=None, chat=False, limit=3, extractor="gsm8k_flexible"))
    assert {p.extractor for p in ps.prompts} == {"gsm8k_flexible"}


def test_packaged_data_with_another_checksum_or_unreadable_is_refused_by_name(tmp_path, monkeypatch):
    bad = replace(TASKS["gsm8k"], data=TaskData("tasks/gsm8k_test.jsonl.gz", "0" * 64))
    monkeypatch.setitem(TASKS, "gsm8k", bad)
    with pytest.raises(PromptError, match=r"task 'gsm8k': .*gsm8k_test.jsonl.gz: SHA-256 3730d312.*expected 00000000"):
        check_task("gsm8k")
    with pytest.raises(PromptError, match="SHA-256"):
        _load("gsm8k")
    missing = replace(TASKS["gsm8k"], data=TaskData("tasks/absent.jsonl.gz", "0" * 64))
    assert "absent.jsonl.gz: cannot read it" in missing.problem()


def test_user_data_licence_is_what_the_entry_states_else_not_stated(tmp_path):
    f = tmp_path / "mine.jsonl.gz"
    f.write_bytes(gzip.compress(b'{"prompt": "Q: 2+2?\\nA:", "reference": "4"}\n'))
    plain = load_prompt_set(PromptSetConfig(name="mine", path=str(f), chat=False, limit=None))
    assert plain.licence == USER_LICENCE and plain.prompts[0].reference == "4"
    stated = load_prompt_set(PromptSetConfig(name="facts", path=str(f), chat=False, limit=None, licence="CC-BY-4.0"))
    assert stated.licence == "CC-BY-4.0"
    # a user's file named like a built-in is still the user's data
    named = load_prompt_set(PromptSetConfig(name="facts", path=str(f), chat=False, limit=None))
    assert named.licence == USER_LICENCE


def test_a_corrupt_gzip_file_is_an_error_naming_it(tmp_path):
    f = tmp_path / "broken.jsonl.gz"
    f.write_bytes(b"not gzip at all")
    with pytest.raises(PromptError, match=r"broken.jsonl.gz: cannot gunzip it"):
        load_prompt_set(PromptSetConfig(name="b", path=str(f), chat=False, limit=None))


def test_deceval_tasks_lists_sizes_licences_and_readiness(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("gsm8k "))
    assert "1319" in line and "MIT" in line and " yes " in line
    assert all(any(x.startswith(n + " ") for x in out.splitlines()) for n in TASKS)


def test_deceval_tasks_prepare_checks_each_and_fails_on_an_unknown_one(capsys):
    assert main(["tasks", "prepare", "gsm8k", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k: ready (1319 prompts" in out and "tiny: ready (8 prompts" in out
    assert main(["tasks", "prepare", "gsm9k"]) == 1
    assert "unknown task 'gsm9k'" in capsys.readouterr().out


def test_deceval_tasks_prepare_archive_is_only_for_archived_tasks_and_checks_the_copy(tmp_path, capsys):
    assert main(["tasks", "prepare", "gsm8k", "--archive", str(tmp_path / "x.tar.gz")]) == 1
    assert "--archive is for tasks taken out of a package archive; 'gsm8k' is not one" in capsys.readouterr().out
    wrong = tmp_path / "bigbench-1.0.0.tar.gz"
    wrong.write_bytes(b"not the archive")
    if TASKS["strategyqa"].problem() is not None:
        assert main(["tasks", "prepare", "strategyqa", "--archive", str(wrong)]) == 1
        assert "has SHA-256" in capsys.readouterr().out and TASKS["strategyqa"].problem() is not None


def test_rg_syllogism_is_yes_no_with_the_generators_answer():
    ps = _load("rg_syllogism")
    assert {p.reference for p in ps.prompts} == {"yes", "no"} and {p.extractor for p in ps.prompts} == {"yes_no"}
    first = ps.prompts[0]  # all ants are students, all students are mortals: some students are ants -> Yes
    assert "Some students are ants?" in first.text and first.reference == "yes"
    row = {"completion": " Yes, it follows.", "reference": first.reference, "aliases": [], "extractor": first.extractor}
    assert exact_match(row) == 1.0 and exact_match({**row, "completion": " No."}) == 0.0
    assert 0.6 < sum(p.reference == "yes" for p in ps.prompts) / len(ps.prompts) < 0.8


def test_rg_syllogism_holdout_shares_no_prompt_with_rg_syllogism():
    tuned, holdout = _load("rg_syllogism"), _load("rg_syllogism_holdout")
    assert len(holdout.prompts) == 600 and not {p.text for p in tuned.prompts} & {p.text for p in holdout.prompts}
    assert {p.reference for p in holdout.prompts} == {"yes", "no"}
