"""The continuation task: documents cut into prompt (prefix) and reference (the human
continuation), stable ids, bad documents refused by name, and the packaged
``pydoc_continuation`` task."""

from __future__ import annotations

import gzip
import json

import pytest

from harness.errors import PromptError
from harness.tasks import PromptSetConfig, load_prompt_set
from harness.tasks.catalogue import TASKS
from harness.tasks.continuation import (
    PREFIX_WORDS,
    REFERENCE_WORDS,
    continuation_records,
    topic_prose,
)


def _doc(doc_id: str, n_words: int, word: str = "w") -> tuple[str, dict]:
    return (f"docs.jsonl:{doc_id}", {"id": doc_id, "text": " ".join(f"{word}{i}" for i in range(n_words))})


def test_each_window_is_a_prefix_prompt_and_the_words_after_it_as_reference():
    recs = continuation_records([_doc("a", 23)], set_name="cont", prefix_words=3, reference_words=4)
    # 23 words -> 3 windows of 7 (21 words), the 2-word tail dropped
    assert [r["id"] for r in recs] == ["cont-a-00", "cont-a-01", "cont-a-02"]
    assert recs[0]["prompt"] == "w0 w1 w2" and recs[0]["reference"] == "w3 w4 w5 w6"
    assert recs[1]["prompt"] == "w7 w8 w9" and recs[1]["reference"] == "w10 w11 w12 w13"
    assert recs[2]["reference"] == "w17 w18 w19 w20"
    assert all(r["document"] == "a" and r["aliases"] == [] for r in recs)


def test_whitespace_and_line_breaks_become_single_spaces():
    doc = ("d", {"id": "x", "text": "one  two\nthree\n\n four\tfive six"})
    (rec,) = continuation_records([doc], set_name="s", prefix_words=2, reference_words=4)
    assert rec["prompt"] == "one two" and rec["reference"] == "three four five six"


def test_ids_depend_only_on_the_document_not_on_the_others_or_their_order():
    alone = continuation_records([_doc("b", 30)], set_name="s", prefix_words=5, reference_words=5)
    both = continuation_records([_doc("a", 50, "v"), _doc("b", 30)], set_name="s", prefix_words=5, reference_words=5)
    flipped = continuation_records([_doc("b", 30), _doc("a", 50, "v")], set_name="s", prefix_words=5,
                                   reference_words=5)
    by_id = {r["id"]: r for r in both}
    assert all(by_id[r["id"]] == r for r in alone)
    assert sorted(r["id"] for r in both) == sorted(r["id"] for r in flipped)


@pytest.mark.parametrize("doc,message", [
    ("a text", "expected a JSON object with 'id' and 'text', got str"),
    ({"text": "a b c"}, "field 'id' must be a non-empty string, got None"),
    ({"id": "  ", "text": "a b c"}, "field 'id' must be a non-empty string"),
    ({"id": 7, "text": "a b c"}, "field 'id' must be a non-empty string, got 7"),
    ({"id": "a", "text": ["a", "b"]}, "field 'text' must be a non-empty string"),
])
def test_a_bad_document_is_refused_with_where_it_is_and_the_field(doc, message):
    with pytest.raises(PromptError, match=r"^docs.jsonl:3: " + message.replace("(", r"\(").replace(")", r"\)")):
        continuation_records([("docs.jsonl:3", doc)], set_name="s", prefix_words=1, reference_words=1)


def test_duplicate_document_ids_and_sizes_that_cut_nothing_are_refused():
    with pytest.raises(PromptError, match=r"docs.jsonl:b: document id 'a' was already used at docs.jsonl:a"):
        continuation_records([_doc("a", 10), ("docs.jsonl:b", {"id": "a", "text": "x y"})], set_name="s",
                             prefix_words=1, reference_words=1)
    with pytest.raises(PromptError, match=r"no document has 112 words \(48 prefix \+ 64 reference\)"):
        continuation_records([_doc("a", 111)], set_name="s")
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(PromptError, match=r"prefix_words must be an integer >= 1, got"):
            continuation_records([_doc("a", 10)], set_name="s", prefix_words=bad)
    with pytest.raises(PromptError, match=r"reference_words must be an integer >= 1, got 0"):
        continuation_records([_doc("a", 10)], set_name="s", reference_words=0)


def test_topic_prose_keeps_paragraphs_and_leaves_out_headings_code_and_tables():
    topic = ("The \"assert\" statement\n**********************\n\nAssert statements are a\nconvenient way:\n\n"
             "   assert_stmt ::= \"assert\" expression\n\nThe simple form is\nequivalent to\n\n"
             "+-----+-----+\n| a   | b   |\n+-----+-----+\n\nSub heading\n===========\n\nLast words.\n")
    assert topic_prose(topic) == "Assert statements are a convenient way:\n\nThe simple form is equivalent to\n\nLast words."


def test_the_packaged_task_cuts_python_documentation_prose_with_stable_ids():
    task = TASKS["pydoc_continuation"]
    assert task.problem() is None and "PSF-2.0" in task.licence and "mauve" in task.metrics
    ps = load_prompt_set(PromptSetConfig(name="pydoc_continuation", path=None, chat=False, limit=None))
    assert len(ps.prompts) == task.size == 253 and ps.licence == task.licence
    with gzip.open(task.data.path, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    first = docs[0]
    words = first["text"].split()
    p = ps.prompts[0]
    assert p.id == f"pydoc_continuation-{first['id']}-00"
    assert p.text == " ".join(words[:PREFIX_WORDS])
    assert p.reference == " ".join(words[PREFIX_WORDS:PREFIX_WORDS + REFERENCE_WORDS])
    assert all(len(q.text.split()) == PREFIX_WORDS and len(q.reference.split()) == REFERENCE_WORDS for q in ps.prompts)
    # the same set, prompt for prompt, on every load: ids and hashes are stable
    again = load_prompt_set(PromptSetConfig(name="pydoc_continuation", path=None, chat=False, limit=10))
    assert [(q.id, q.hash) for q in again.prompts] == [(q.id, q.hash) for q in ps.prompts[:10]]
    assert ps.hash == "0aeedbf563aae794"
