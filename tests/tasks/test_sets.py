from __future__ import annotations

import json

import pytest

from harness.config import PromptSetConfig
from harness.errors import DecevalError, PromptError
from harness.tasks import BUILTIN_SETS, load_prompt_set


def cfg(name="s", path=None, chat=False, limit=None):
    return PromptSetConfig(name=name, path=None if path is None else str(path), chat=chat, limit=limit)


def test_builtin_sets_sizes_and_ids():
    facts = load_prompt_set(cfg("facts"))
    open_ended = load_prompt_set(cfg("open_ended"))
    assert len(facts.prompts) >= 50 and all(p.reference for p in facts.prompts)
    assert len(open_ended.prompts) >= 30 and not open_ended.has_references
    assert facts.prompts[0].reference == "Paris"
    for ps in (facts, open_ended, load_prompt_set(cfg("tiny"))):
        assert len({p.id for p in ps.prompts}) == len(ps.prompts)
        assert all(p.text.strip() and p.error is None for p in ps.prompts)
    assert set(BUILTIN_SETS) >= {"facts", "open_ended", "tiny"}


def test_hashes_are_stable_and_content_addressed(tmp_path):
    a = load_prompt_set(cfg("facts"))
    b = load_prompt_set(cfg("facts"))
    assert a.hash == b.hash and a.prompts[0].hash == b.prompts[0].hash
    p = tmp_path / "x.jsonl"
    p.write_text('{"prompt": "hello"}\n')
    h1 = load_prompt_set(cfg(path=p)).hash
    p.write_text('{"prompt": "hello!"}\n')
    assert load_prompt_set(cfg(path=p)).hash != h1


def test_user_jsonl_with_and_without_ids(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text('{"prompt": "a", "reference": "x"}\n\n{"id": "q2", "prompt": "b", "aliases": ["y"]}\n')
    ps = load_prompt_set(cfg("mine", p, chat=True))
    assert [x.id for x in ps.prompts] == ["mine-0000", "q2"]
    assert ps.prompts[0].reference == "x" and ps.prompts[1].aliases == ("y",) and ps.prompts[0].chat


def test_user_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["one", "two"], "reference": ["1", None]}), p)
    ps = load_prompt_set(cfg("mine", p))
    assert [(x.id, x.text, x.reference) for x in ps.prompts] == [("a", "one", "1"), ("b", "two", None)]


def test_limit(tmp_path):
    assert len(load_prompt_set(cfg("facts", limit=3)).prompts) == 3


def test_missing_prompt_file(tmp_path):
    with pytest.raises(DecevalError) as e:
        load_prompt_set(cfg(path=tmp_path / "missing.jsonl"))
    assert "not found" in str(e.value) and "missing.jsonl" in str(e.value)


def test_non_utf8_prompt_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DecevalError) as e:
        load_prompt_set(cfg(path=p))
    assert "bad.jsonl" in str(e.value) and "line 2" in str(e.value) and "UTF-8" in str(e.value)


def test_invalid_json_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path=p))
    assert f"{p}:2" in str(e.value) and "not valid JSON" in str(e.value)


def test_missing_prompt_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(PromptError, match="missing required field 'prompt'"):
        load_prompt_set(cfg(path=p))


def test_empty_prompt_becomes_an_error_not_a_crash(tmp_path):
    p = tmp_path / "some.jsonl"
    p.write_text('{"id": "good", "prompt": "fine"}\n{"id": "blank", "prompt": "   "}\n')
    ps = load_prompt_set(cfg(path=p))
    blank = ps.prompts[1]
    assert ps.prompts[0].error is None
    assert blank.error and "'blank'" in blank.error and "empty" in blank.error


def test_duplicate_ids(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(PromptError, match="duplicate ids"):
        load_prompt_set(cfg(path=p))


def test_unknown_builtin_did_you_mean():
    with pytest.raises(PromptError, match="did you mean 'facts'"):
        load_prompt_set(cfg("fact"))


# ---- line splitting and Unicode ---------------------------------------------------------------


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])  # str.splitlines splits at each
def test_unicode_line_separators_inside_a_string_are_text(tmp_path, separator):
    p = tmp_path / "sep.jsonl"
    p.write_text(json.dumps({"id": "a", "prompt": f"one{separator}two"}, ensure_ascii=False) + "\n"
                 + json.dumps({"id": "b", "prompt": "three"}) + "\n", encoding="utf-8")
    ps = load_prompt_set(cfg("sep", p))
    assert [(x.id, x.text) for x in ps.prompts] == [("a", f"one{separator}two"), ("b", "three")]


def test_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "crlf.jsonl"
    p.write_bytes(b'{"prompt": "a"}\r\n\r\n  \r\n{"prompt": "b\\r"}\r\n{"prompt": "c"}')
    ps = load_prompt_set(cfg("crlf", p))
    assert [x.text for x in ps.prompts] == ["a", "b\r", "c"]


def test_a_lone_surrogate_is_an_error_naming_file_line_and_id(tmp_path):
    p = tmp_path / "sur.jsonl"
    p.write_text('{"id": "fine", "prompt": "ok"}\n\n{"id": "q7", "prompt": "bad \\ud800 here"}\n')
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path=p))
    msg = str(e.value)
    assert f"{p}:3:" in msg and "prompt 'q7'" in msg and "field 'prompt'" in msg and "UTF-8" in msg
    p.write_text('{"id": "q8", "prompt": "ok", "aliases": ["\\udfff"]}\n')
    with pytest.raises(PromptError, match="prompt 'q8': field 'aliases' is not valid Unicode"):
        load_prompt_set(cfg(path=p))


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "a", "reference": NaN}', "NaN is not a JSON number"),
    ('{"prompt": "a", "prompt": "b"}', "duplicate key 'prompt'"),
    ('{"prompt": "a", "id": ["x"]}', "field 'id' must be a string or an integer, got ['x']"),
    ('{"prompt": ' + "1" * 5000 + "}", "Exceeds the limit (4300 digits)"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
])
def test_json_a_prompt_file_cannot_hold(tmp_path, line, message):
    p = tmp_path / "odd.jsonl"
    p.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(PromptError) as e:
        load_prompt_set(cfg(path=p))
    assert f"{p}:2:" in str(e.value) and message in str(e.value) and len(str(e.value)) < 500


def test_dev_and_test_splits_are_stable_disjoint_and_cover_the_set():
    from harness.tasks import in_dev_split

    whole = load_prompt_set(PromptSetConfig(name="facts", path=None, chat=False, limit=None)).prompts
    dev = load_prompt_set(PromptSetConfig("facts", None, False, None, split="dev", dev_fraction=0.5)).prompts
    test = load_prompt_set(PromptSetConfig("facts", None, False, None, split="test", dev_fraction=0.5)).prompts
    ids = [p.id for p in whole]
    assert {p.id for p in dev}.isdisjoint(p.id for p in test)
    assert sorted(p.id for p in dev + test) == sorted(ids) and 0.3 < len(dev) / len(ids) < 0.7
    # membership depends on the prompt alone: not on the other prompts, their order or a limit
    assert [in_dev_split("facts", i, 0.5) for i in ids] == [in_dev_split("facts", i, 0.5) for i in ids[::-1]][::-1]
    limited = load_prompt_set(PromptSetConfig("facts", None, False, 10, split="dev", dev_fraction=0.5)).prompts
    assert {p.id for p in limited} == {p.id for p in dev} & set(ids[:10])
    # a larger fraction only adds prompts to dev
    more = load_prompt_set(PromptSetConfig("facts", None, False, None, split="dev", dev_fraction=0.8)).prompts
    assert {p.id for p in dev} < {p.id for p in more}
