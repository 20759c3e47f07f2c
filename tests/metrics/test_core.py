"""harness.metrics.core: the metric registry, aggregation, error rows and engine-side scoring."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from harness import metrics as M
from harness.metrics.core import NEEDS
from tests.fakes.rows import row, score


def test_every_metric_has_direction_aggregation_and_needs():
    for name in M.METRICS.names():
        m = M.METRICS.get(name)
        assert m.higher_is_better in (True, False, None), name
        assert m.aggregation in M.AGGREGATIONS, name
        assert m.needs <= NEEDS, name
    assert M.METRICS.get("rep_2").higher_is_better is False
    assert M.METRICS.get("diversity").higher_is_better is True
    assert M.METRICS.get("length").higher_is_better is None
    assert M.METRICS.get("self_bleu").needs == {"samples"}
    assert M.METRICS.get("perplexity").needs == {"scorer"} and M.METRICS.get("perplexity").stage == "engine"
    assert "reference" in M.METRICS.get("exact_match").needs


def test_defaults_exclude_metrics_needing_many_samples():
    d = M.default_metrics()
    assert {"exact_match", "rep_2", "diversity", "eos_share", "gen_tokens_per_s", "pass_at_1"} <= set(d)
    assert "pass_at_5" not in d and "pass_at_10" not in d
    assert "coherence" not in d  # opt-in: loading the embedder costs the most
    assert "perplexity" in d  # free with generation: the raw logprob of each sampled token


def test_register_metric_rejects_bad_settings_naming_the_value():
    with pytest.raises(ValueError, match=r"aggregation must be one of .*got 'avg'"):
        M.register_metric("bad_agg", higher_is_better=True, description="x", aggregation="avg")
    with pytest.raises(ValueError, match=r"needs must be among .*\['gpu'\]"):
        M.register_metric("bad_needs", higher_is_better=True, description="x", needs=["gpu"])


def test_aggregate_skips_missing():
    m = M.METRICS.get("rep_2")
    assert m.aggregate([10.0, None, 20.0, float("nan")]) == 15.0
    assert m.aggregate([None]) is None


def test_metrics_module_is_import_light():
    code = ("import sys, harness.metrics, harness.analysis.stats, harness.analysis.leaderboard, harness.analysis.regression, "
            "harness.models.capacity;"
            "bad=[m for m in ('vllm','torch','ray','sacrebleu','sentence_transformers','matplotlib') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_error_rows_get_none():
    rows = [row("a b a b a", error="engine rejected"), row("a b a b a")]
    M.score_rows(rows, ["rep_2", "gen_tokens_per_s", "eos_share"])
    assert rows[0]["rep_2"] is None and rows[0]["eos_share"] is None and rows[0]["gen_tokens_per_s"] is None
    assert rows[1]["rep_2"] == pytest.approx(50.0)


def test_nan_error_from_pandas_counts_as_no_error():
    rows = [row("a b a b a", error=float("nan"))]
    assert score("rep_2", rows) == [pytest.approx(50.0)]


class FakeTokenizer:
    def __call__(self, text, add_special_tokens=True):
        class Enc:
            input_ids = [len(w) for w in text.split()]
        return Enc()


class FakeEngine:
    tokenizer = FakeTokenizer()

    def __init__(self):
        self.calls = []

    def completion_logprobs(self, prompts, completions):
        self.calls.append((prompts, completions))
        return [[-1.0] * len(c) if c[0] != 9 else [-2.0, None] for c in completions]


def test_score_on_engine_perplexity():
    rows = [row("ab cd"), row("abcdefghi x"), row("oops", error="bad"), row("abc")]
    eng = FakeEngine()
    M.score_on_engine(eng, rows, {id(rows[0]): [1, 2], id(rows[1]): [3], id(rows[2]): [4]}, ["perplexity"])
    assert rows[0]["perplexity"] == pytest.approx(math.e)          # exp(-mean(-1, -1))
    assert rows[1]["perplexity"] == pytest.approx(math.exp(2.0))   # the None logprob is skipped
    assert rows[2]["perplexity"] is None and rows[3]["perplexity"] is None  # error row; no prompt ids
    assert eng.calls == [([[1, 2], [3]], [[2, 2], [9, 1]])]
    # score_rows keeps what the engine computed
    M.score_rows(rows, ["perplexity"])
    assert rows[0]["perplexity"] == pytest.approx(math.e)
    # logprobs returned at generation time: used as they are, no engine call
    given = [row("x y", _token_logprobs=[-0.5, -1.5])]
    eng3 = FakeEngine()
    M.score_on_engine(eng3, given, [[1]], ["perplexity"])
    assert given[0]["perplexity"] == pytest.approx(math.exp(1.0)) and eng3.calls == []
    # not selected: the engine is not asked
    eng2 = FakeEngine()
    M.score_on_engine(eng2, rows, [[1]] * 4, ["rep_2"])
    assert eng2.calls == []
