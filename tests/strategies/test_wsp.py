"""WSP on a toy engine whose distributions the test chooses (no vLLM)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import ParamError
from strategies.base import Stops
from strategies.wsp import WSP, GuardedWSP, GuardedWSPParams, WSPParams, choose, repeats_ngram, scores
from tests.fakes.toy_engine import (
    EOS,
    ToyEngine,
    dist_with_nucleus,
    random_engine,
    seed_example_engine,
)


def run(engine, params, prompts=((7,),), max_tokens=1, seeds=None, stop=True):
    wsp = WSP(WSPParams(**params))
    stops = Stops(max_tokens, engine.eos_token_ids if stop else frozenset())
    return wsp.decode(engine, [list(p) for p in prompts], seeds=seeds or [0] * len(prompts), stops=stops)


def test_seed_example_equal_strength_picks_smallest_n():
    # Three candidates A=10, B=11, C=12 with equal strength, N = 100, 120, 50 -> C.
    head = {10: 0.31, 11: 0.31, 12: 0.31}
    eng = seed_example_engine({10: 100, 11: 120, 12: 50}, head)
    out = run(eng, {"top_p": 0.9, "max_candidates": 8})[0]
    assert out.token_ids == [12]
    st = out.steps[0]
    assert (st["candidates"], st["n_chosen"], st["n_min"], st["n_max"]) == (3, 50, 50, 120)
    assert st["rank"] == 3 and st["score"] == pytest.approx(math.log(0.31) - math.log(50))
    assert out.metrics["left_greedy_share"] == 1.0
    assert out.metrics["mean_log_possibilities"] == pytest.approx(math.log(50))


def test_w0_picks_smallest_n_and_large_w_and_k1_are_greedy():
    head = {10: 0.5, 11: 0.3, 12: 0.16}
    ns = {10: 200, 11: 90, 12: 20}
    assert run(seed_example_engine(ns, head, 0.95), {"weight": 0.0, "top_p": 0.95})[0].token_ids == [12]
    assert run(seed_example_engine(ns, head, 0.95), {"weight": 1.0, "top_p": 0.95})[0].token_ids == [12]  # .16/20
    assert run(seed_example_engine(ns, head, 0.95), {"weight": 1e6, "top_p": 0.95})[0].token_ids == [10]
    assert run(seed_example_engine(ns, head, 0.95), {"max_candidates": 1, "weight": 0.0,
                                                     "top_p": 0.95})[0].token_ids == [10]


@pytest.mark.parametrize("params", [{"weight": 1e9}, {"max_candidates": 1}])
def test_greedy_limits_over_many_steps(params):
    eng = random_engine(1)
    out = run(eng, params, prompts=((1, 2), (3,), (4, 5, 6)), max_tokens=12, stop=False)
    for prompt, dec in zip(((1, 2), (3,), (4, 5, 6)), out):
        seq = list(prompt)
        for t in dec.token_ids:
            assert t == int(np.argmax(eng.fn(tuple(seq))))
            seq.append(t)
        assert dec.metrics["left_greedy_share"] == 0.0


def test_tie_rules():
    # equal score: higher q wins
    assert choose([5, 6], [math.log(0.2), math.log(0.4)], [-1.0, -1.0], "argmax") == 1
    # equal score and q: lower token id wins
    assert choose([9, 4], [math.log(0.3)] * 2, [-2.0, -2.0], "argmax") == 1
    # end to end: candidates 10 (q .4, N 4) and 11 (q .2, N 2) tie at w=1 (0.1 each) -> higher q, 10
    eng = seed_example_engine({10: 4, 11: 2}, {10: 0.4, 11: 0.2, 12: 0.1}, 0.55)
    assert run(eng, {"top_p": 0.55})[0].token_ids == [10]
    # equal q and N: lower id
    eng = seed_example_engine({20: 7, 21: 7}, {21: 0.45, 20: 0.45})
    assert run(eng, {"top_p": 0.9})[0].token_ids == [20]


def test_sample_mode_reproducible_and_seed_dependent():
    def go(seed):
        return run(random_engine(3), {"mode": "sample", "temperature": 2.0, "weight": 0.5},
                   prompts=((1,), (2,)), max_tokens=16, seeds=[seed, seed + 1], stop=False)
    a, b, c = go(0), go(0), go(12345)
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert [d.token_ids for d in a] != [d.token_ids for d in c]


def test_sample_mode_distribution():
    rng = np.random.default_rng(0)
    sc = [math.log(0.5), math.log(0.25), math.log(0.25)]
    picks = [choose([1, 2, 3], [0, 0, 0], sc, "sample", 1.0, rng) for _ in range(4000)]
    share = np.bincount(picks, minlength=3) / len(picks)
    assert share == pytest.approx([0.5, 0.25, 0.25], abs=0.03)


def test_one_request_per_candidate_and_no_extra_base_request():
    eng = random_engine(5)
    out = run(eng, {"max_candidates": 4}, prompts=((1,), (2,), (3,)), max_tokens=6, stop=False)
    cands = sum(s["candidates"] for d in out for s in d.steps)
    assert len(eng.requests) == cands + 3  # step-0 q per prompt + one lookahead per candidate
    assert sum(d.engine_requests for d in out) == len(eng.requests)
    assert len(eng.calls) == 1 + 6  # one batched call per token step (all live sequences together)
    # the chosen lookahead becomes the next q: no sequence is requested twice
    assert len(set(eng.requests)) == len(eng.requests)


def test_single_candidate_step_costs_one_request():
    eng = ToyEngine(lambda seq: dist_with_nucleus(1))  # nucleus of 1 -> one candidate every step
    out = run(eng, {}, prompts=((1,),), max_tokens=5, stop=False)[0]
    assert [s["candidates"] for s in out.steps] == [1] * 5
    assert out.engine_requests == 1 + 5 and eng.calls == [1] * 6


def test_eos_candidate_has_n1_and_no_request():
    head = {EOS: 0.4, 10: 0.5}
    eng = seed_example_engine({10: 3}, head)
    out = run(eng, {"top_p": 0.85})[0]
    assert out.token_ids == [EOS] and out.finish_reason == "eos"  # .4/1 > .5/3
    assert (EOS,) not in [r[-1:] for r in eng.requests[1:]] and len(eng.requests) == 2
    assert out.steps[0]["n_chosen"] == 1


def test_stops_length_and_stop_check():
    eng = ToyEngine(lambda seq: dist_with_nucleus(1))  # always token 0
    # a stop string that appears in the text once three tokens are out
    stops = Stops(10, frozenset({EOS}), ("|",), decode=lambda ids: "0 " * len(ids) + ("|" if len(ids) == 3 else ""))
    out = WSP().decode(eng, [[5]], seeds=[0], stops=stops)[0]
    assert out.finish_reason == "stop" and out.token_ids == [0, 0, 0]
    out = WSP().decode(eng, [[5]], seeds=[0], stops=Stops(4, frozenset({EOS})))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 4


def test_params_validation():
    with pytest.raises(ParamError, match="top_p must be in \\(0, 1\\], got 1.5"):
        WSPParams(top_p=1.5)
    with pytest.raises(ParamError, match="mode"):
        WSPParams(mode="beam")
    with pytest.raises(ParamError, match="weight"):
        WSPParams(weight=-1.0)
    assert WSP(WSPParams()).deterministic and not WSP(WSPParams(mode="sample")).deterministic


def test_scores_formula():
    assert scores([math.log(0.5)], [10], 2.0) == [pytest.approx(2 * math.log(0.5) - math.log(10))]
    assert scores([-math.inf], [3], 0.0) == [pytest.approx(-math.log(3))]


def test_driver_fills_report_columns():
    from types import SimpleNamespace

    import pyarrow as pa

    from harness.engine.stepdriver import run_stepwise
    from harness.plan import declared_columns
    from harness.rows import sample_schema

    eng = random_engine(7)
    unit = SimpleNamespace(stop=(), strategy=SimpleNamespace(max_tokens=5))
    rows = [{"seed": 1, "prompt_id": "a"}, {"seed": 2, "prompt_id": "b"}]
    run_stepwise(eng, unit, WSP(), [(rows[0], [1, 2]), (rows[1], [3])])
    for r in rows:
        assert r["completion_tokens"] == len(r["steps"]) <= 5
        assert r["finish_reason"] in ("eos", "stop", "length")
        assert r["engine_requests"] >= 1 + len(r["steps"])
        assert r["mean_candidates"] >= 1 and 0 <= r["left_greedy_share"] <= 1
        assert r["mean_log_possibilities"] >= 0 and r["latency_s"] >= 0
    full = sample_schema([], *declared_columns([WSP]))  # the schema from WSP's own declarations
    assert {"mean_log_possibilities", "left_greedy_share", "mean_candidates"} <= set(full.names)
    schema = pa.schema([f for f in full if f.name in rows[0]])
    pa.Table.from_pylist(rows, schema=schema)  # ... accepts the rows the driver filled


def test_driver_stop_strings_cut_completion():
    from types import SimpleNamespace

    from harness.engine.stepdriver import run_stepwise

    eng = ToyEngine(lambda seq: dist_with_nucleus(1))  # always 0; decode joins with spaces
    unit = SimpleNamespace(stop=("0 0",), strategy=SimpleNamespace(max_tokens=10))
    row = {"seed": 0, "prompt_id": "x"}
    run_stepwise(eng, unit, WSP(), [(row, [4])])
    assert row["finish_reason"] == "stop" and row["completion_tokens"] == 2 and row["completion"] == ""


# ---- the guarded variant ------------------------------------------------------------------

def loop_engine(v: int = 40):
    """A low-entropy loop: after any sequence the model puts 0.97 on (last token + 1) % 3, so
    plain WSP (and greedy) cycle 0 1 2 0 1 2 ...; the other tokens share the rest, the
    next-most-likely being 20 + the last token."""
    def fn(seq):
        p = np.full(v, 0.0)
        last = seq[-1] % 20
        p[(last + 1) % 3] = 0.97
        p[20 + last] = 0.02
        rest = [t for t in range(v) if p[t] == 0.0 and t != v - 1]
        p[rest] = 0.01 / len(rest)
        return np.log(p + 1e-30)
    return ToyEngine(fn, vocab=v, eos=v - 1)


def test_repeats_ngram():
    assert repeats_ngram([1, 2, 3, 1, 2], 3, 3) and not repeats_ngram([1, 2, 3, 1, 2], 4, 3)
    assert not repeats_ngram([1], 1, 3) and repeats_ngram([5, 5], 5, 2) and repeats_ngram([7], 7, 1)


def test_guard_breaks_a_low_entropy_loop_and_plain_wsp_loops():
    prompts, n = ((0,),), 3
    plain = run(loop_engine(), {"top_p": 0.9, "max_candidates": 4}, prompts=prompts, max_tokens=12, stop=False)[0]
    assert plain.token_ids == [1, 2, 0] * 4  # the loop
    eng = loop_engine()
    guarded = GuardedWSP(GuardedWSPParams(top_p=0.9, max_candidates=4, guard_n=n)).decode(
        eng, [[0]], seeds=[0], stops=Stops(12, frozenset()))[0]
    ids = guarded.token_ids
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    assert len(grams) == len(set(grams))  # no n-gram of the sample repeats
    assert guarded.metrics["guard_share"] > 0 and guarded.metrics["left_greedy_share"] > 0
    # every chosen token that left the nucleus is a top-K token of its step (the guard stays in q's head)
    seq = [0]
    for t in ids:
        assert t in np.argsort(-eng.fn(tuple(seq)))[:4]
        seq.append(t)


def test_guard_keeps_plain_wsp_when_nothing_repeats():
    eng = random_engine(3)
    prompts = ((1, 2), (3,))
    plain = run(eng, {"max_candidates": 4}, prompts=prompts, max_tokens=6, stop=False)
    guarded = GuardedWSP(GuardedWSPParams(max_candidates=4, guard_n=6)).decode(
        eng, [list(p) for p in prompts], seeds=[0, 0], stops=Stops(6, frozenset()))
    assert [d.token_ids for d in guarded] == [d.token_ids for d in plain]  # no 6-gram can repeat in 6 tokens
    assert all(d.metrics["guard_share"] == 0 for d in guarded)
    with pytest.raises(ParamError, match="guard_n"):
        GuardedWSPParams(guard_n=0).validate()


# ---- waves: a unit larger than the KV cache ---------------------------------------------------

def test_waves_fit_the_cache_in_order_and_cover_every_prompt():
    from harness.engine.stepdriver import CANDIDATE_TOKENS, WAVE_FILL, waves

    lengths = [100, 300, 50, 400, 20, 1000, 10]
    assert waves(lengths, 20, 4, None) == [(0, 7)]  # capacity unknown: one wave
    assert waves(lengths, 20, 4, 10**6) == [(0, 7)]  # everything fits
    assert waves([], 20, 4, 100) == [(0, 0)]
    cut = waves(lengths, 20, 4, 1000)
    assert cut[0][0] == 0 and cut[-1][1] == len(lengths)
    assert all(a < b for a, b in cut) and all(b == a2 for (_, b), (a2, _) in zip(cut, cut[1:]))
    need = [n + 20 + 4 * CANDIDATE_TOKENS for n in lengths]
    for a, b in cut:  # a wave fits, or is one prompt too long to share
        assert sum(need[a:b]) <= 1000 * WAVE_FILL or b - a == 1
        assert b == len(lengths) or sum(need[a:b + 1]) > 1000 * WAVE_FILL  # and takes all that fits
    assert (5, 6) in cut  # the 1000-token prompt alone


def test_a_unit_decoded_in_waves_gives_the_rows_of_one_batch():
    from types import SimpleNamespace

    from harness.engine.stepdriver import run_stepwise

    prompts = [[i % 7, 3, 1 + i % 5] * (1 + i % 4) for i in range(12)]

    def run(capacity):
        eng = random_engine(11)
        eng.kv_capacity_tokens = capacity
        rows = [{"seed": i, "prompt_id": str(i)} for i in range(len(prompts))]
        run_stepwise(eng, SimpleNamespace(stop=(), strategy=SimpleNamespace(max_tokens=6)),
                     WSP(WSPParams(max_candidates=3, mode="sample")), list(zip(rows, prompts)))
        return eng, rows

    whole, one = run(None)
    waved, many = run(120)
    assert max(whole.calls) > max(waved.calls)  # no step of a wave batches the whole unit
    assert whole.calls[0] == len(prompts) > waved.calls[0]  # the first step: every prompt, or the first wave's
    keep = ["completion", "finish_reason", "steps", "engine_requests", "seed"]
    assert [{k: r[k] for k in keep} for r in one] == [{k: r[k] for k in keep} for r in many]
