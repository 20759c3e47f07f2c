"""The answer extractors on completions as models write them, and exact_match against
lm-eval's (and HF evaluate's) documented examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import RegistryError
from harness.tasks import (
    ANSWER_NORMALISATION,
    EXTRACTORS,
    Extractor,
    describe_extractors,
    exact_match,
    get_extractor,
    row_answer,
)

BUILTINS = ("answer_is", "choice_letter", "gsm8k_flexible", "gsm8k_strict", "last_number", "yes_no")

GSM_COT = ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
           "#### 72")


def ex(name: str, text: str) -> str | None:
    return get_extractor(name)(text)


def test_the_registry_holds_the_builtins_with_descriptions():
    assert set(BUILTINS) <= set(EXTRACTORS.names())
    assert all(d["description"] for d in describe_extractors())
    with pytest.raises(RegistryError, match="did you mean 'yes_no'"):
        EXTRACTORS.get("yes_on")


@pytest.mark.parametrize("text,want", [
    (GSM_COT, "72"),
    ("She has 5 apples.\n#### 1,234", "1,234"),
    ("#### -3.5\nQuestion: next\n#### 9", "-3.5"),           # the first '#### ', as lm-eval's take_first
    ("#### 18.", "18."),                                       # the final '.' is left to exact_match
    ("The answer is 72.", None),                               # strict: no '#### ', no answer
    ("####72", None),                                          # the space is part of the pattern
    ("#### $18", None),                                        # '$' is not in the strict character class
    ("", None),
])
def test_gsm8k_strict(text, want):
    assert ex("gsm8k_strict", text) == want


@pytest.mark.parametrize("text,want", [
    (GSM_COT, "72"),
    ("Janet makes 16 - 3 - 4 = 9 eggs; 9 * $2 = $18.", "$18."),   # the last match, '$' and '.' kept
    ("So the total is 1,200 dollars", "1,200"),
    ("It takes 3 bolts of blue and 1.5 of white: 4.5", "4.5"),
    ("x = 7", "7"),                                              # one digit: the second alternative
    ("The result is -5 overall", "-5"),
    ("no digits at all", None),
    ("...", "..."),                                              # as lm-eval: two or more of [$0-9.,] match
])
def test_gsm8k_flexible(text, want):
    assert ex("gsm8k_flexible", text) == want


@pytest.mark.parametrize("text,want", [
    ("3 + 4 = 7, so she has 7 apples.", "7"),
    ("The total is 1,234.50 dollars.", "1234.50"),
    ("It dropped to -12 degrees", "-12"),
    ("about .5 of it", ".5"),
    ("version2 of x3", None),                                    # digits inside words are not numbers
    ("nothing", None),
])
def test_last_number(text, want):
    assert ex("last_number", text) == want


@pytest.mark.parametrize("text,want", [
    ("Let's think. 2 + 2 = 4. The answer is 4.", "4"),
    ("THE ANSWER IS Paris!", "Paris"),
    ("So the final answer is **42**.", "42"),
    ("Answer: (B).\nQuestion: next", "(B)"),
    ("answer:  \"blue whale\"", "blue whale"),
    ("The answer is 3. The answer is 5.", "3"),                 # the first one, to the end of its sentence
    ("The answer is 3.5 metres", "3.5 metres"),
    ("The answer is Washington, D.C. Next question", "Washington, D.C"),
    ("The answer is", None),
    ("I have no idea", None),
])
def test_answer_is(text, want):
    assert ex("answer_is", text) == want


@pytest.mark.parametrize("text,want", [
    ("Answer: C", "C"),
    ("The answer is (b).", "B"),
    ("I think (D) is right", "D"),
    ("B. Because water boils at 100 C", "B"),
    ("A good choice would be E", "E"),                           # "A good": the article, skipped
    ("A", "A"),
    ("A. Paris", "A"),
    ("Both options are wrong", None),                            # capitals inside words do not count
    ("I'd pick F", None),
    ("", None),
])
def test_choice_letter(text, want):
    assert ex("choice_letter", text) == want


@pytest.mark.parametrize("text,want", [
    ("Yes, it is.", "yes"),
    ("NO.", "no"),
    ("Not really; no.", "no"),
    ("Well... yes and no", "yes"),
    ("Nobody knows, eyes open", None),                           # whole words only
    ("maybe", None),
])
def test_yes_no(text, want):
    assert ex("yes_no", text) == want


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_extractor_raises_on_any_text(text):
    for name in BUILTINS:
        got = ex(name, text)
        assert got is None or isinstance(got, str)


# ---- exact match --------------------------------------------------------------------------------

REFS = ["the cat", "theater", "YELLING", "agent007"]
PREDS = ["cat?", "theater", "yelling", "agent"]


@pytest.mark.parametrize("kwargs,want", [
    ({}, 0.25),
    ({"regexes_to_ignore": ["the ", "yell"], "ignore_case": True, "ignore_punctuation": True}, 0.5),
    ({"regexes_to_ignore": ["the ", "yell", "YELL"], "ignore_case": True, "ignore_punctuation": True}, 0.75),
    ({"regexes_to_ignore": ["the ", "yell", "YELL"], "ignore_case": True, "ignore_punctuation": True,
      "ignore_numbers": True}, 1.0),
])
def test_exact_match_gives_the_documented_scores(kwargs, want):
    """The examples of HF evaluate's exact_match card, which lm-eval's exact_match_hf_evaluate ports."""
    scores = [exact_match(p, r, **kwargs) for p, r in zip(PREDS, REFS)]
    assert sum(scores) / len(scores) == want


def test_exact_match_steps_and_their_order():
    # regexes go before case folding: "yell" does not remove "YELL"
    assert exact_match("yelling", "YELLING", regexes_to_ignore=["yell"], ignore_case=True) == 0.0
    # white space is compared as it is, as in lm-eval
    assert exact_match(" 72", "72") == 0.0
    assert exact_match(None, "72") == 0.0
    assert exact_match("b", ["a", "B"], ignore_case=True) == 1.0   # any of several references


@pytest.mark.parametrize("pred,ref", [
    ("72", GSM_COT),                   # the reference's solution up to '#### ' is ignored
    ("$1,234", "1234"),
    ("18.", "18"),
    ("1,200.", "#### 1,200"),
])
def test_exact_match_under_the_gsm8k_settings(pred, ref):
    assert exact_match(pred, ref, **ANSWER_NORMALISATION) == 1.0
    assert exact_match(pred, "73", **ANSWER_NORMALISATION) == 0.0


def test_row_answer_reads_the_rows_extractor():
    assert row_answer({"extractor": "gsm8k_strict", "completion": GSM_COT}) == "72"
    assert row_answer({"extractor": None, "completion": GSM_COT}) is None
    assert row_answer({"extractor": float("nan"), "completion": GSM_COT}) is None  # pandas' null
    assert row_answer({"extractor": "yes_no", "completion": None}) is None


class Shout(Extractor):
    description = "the completion in capitals"

    def __call__(self, text):
        return text.upper() or None


def test_a_plugin_extractor_by_module_and_class():
    assert get_extractor("tests.tasks.test_extract:Shout")("ok") == "OK"
    with pytest.raises(RegistryError, match="not a harness.tasks.extract.Extractor"):
        EXTRACTORS.get("tests.tasks.test_extract:BUILTINS")
