"""The cost rule of harness.engine.worker on the toy engine (tests/fakes/toy_actor.py, whose
prefix cache and one-off set-up cost are modelled like vLLM's):

- the warm-up pays the engine's one-off cost before the first timed unit, and its seconds go
  to the engine, never to the unit;
- every unit starts from an empty cache, so the same unit costs the same computed tokens
  wherever it runs; ``share_prefix_cache: true`` shows what that rule prevents;
- timing repeats give one timing (and one latency per sample) per repeat, rows from the first.
"""

from __future__ import annotations

import pytest

from harness.config import StrategyConfig
from harness.engine.worker import execute_unit, warm_key
from harness.plan import WorkUnit
from harness.tasks import Prompt
from strategies import get_strategy
from tests.fakes.toy_actor import ColdToyEngine, ToyEngine

COLD = ColdToyEngine.cold_seconds
PROMPTS = tuple(Prompt(id=f"p{i}", set="t", text=f"prompt number {i} here") for i in range(4))


def unit(name: str, params: dict, *, label: str | None = None, max_tokens: int = 6, repeats: int = 1) -> WorkUnit:
    full = get_strategy(name).from_dict(params).params.to_dict()
    sc = StrategyConfig(name=name, label=label or name, params=full, samples_per_prompt=2, max_tokens=max_tokens)
    return WorkUnit(id=f"u-{label or name}", model="toy", model_ref="toy", strategy=sc, prompts=PROMPTS, seed=3,
                    shard=0, stop=(), metrics=(), timing_repeats=repeats)


WSP = ("wsp", {"max_candidates": 3})
TYPICAL = ("typical", {"typical_p": 0.9})  # the toy engine has no sampler processor: stepwise


def test_warm_up_pays_the_one_off_cost_and_the_unit_is_not_charged():
    eng = ColdToyEngine({})
    res = execute_unit(eng, unit(*WSP))
    assert res.warmup_seconds >= COLD and eng.warm.seconds >= COLD and eng.warm.count == 1
    assert res.gen_seconds < COLD  # the one-off cost is not in the unit's own seconds
    assert all(r["unit_seconds"] == res.gen_seconds for r in res.rows)
    # Warm for this strategy and batch bucket: the next unit runs no warm-up.
    again = execute_unit(eng, unit(*WSP, label="again"))
    assert again.warmup_seconds == 0.0 and eng.warm.count == 1
    # Another strategy is warmed on its own; so is a bigger batch.
    assert execute_unit(eng, unit(*TYPICAL)).warmup_seconds > 0 and eng.warm.count == 2
    assert warm_key(eng, get_strategy("wsp").from_dict({}), 8) != warm_key(eng, get_strategy("wsp").from_dict({}), 9)


def test_without_the_warm_up_the_first_unit_pays_the_one_off_cost():
    eng = ColdToyEngine({"warmup_tokens": 0})
    res = execute_unit(eng, unit(*WSP))
    assert res.warmup_seconds == 0.0 and eng.warm.count == 0
    assert res.gen_seconds >= COLD


def test_the_warm_up_leaves_no_cached_prompt_behind():
    warmed, cold = ToyEngine({}), ToyEngine({"warmup_tokens": 0})
    a, b = execute_unit(warmed, unit(*WSP)), execute_unit(cold, unit(*WSP))
    assert [r["computed_tokens"] for r in a.rows] == [r["computed_tokens"] for r in b.rows]
    assert [r["completion"] for r in a.rows] == [r["completion"] for r in b.rows]


@pytest.mark.parametrize("first,middle", [(WSP, TYPICAL), (TYPICAL, WSP)])
def test_the_same_unit_costs_the_same_first_or_last(first, middle):
    eng = ToyEngine({})
    runs = [execute_unit(eng, unit(*first, label="first")), execute_unit(eng, unit(*middle)),
            execute_unit(eng, unit(*first, label="last"))]
    head, tail = runs[0].rows, runs[2].rows
    assert [r["completion"] for r in head] == [r["completion"] for r in tail]
    assert [r["computed_tokens"] for r in head] == [r["computed_tokens"] for r in tail]
    assert [r["cached_tokens"] for r in head] == [r["cached_tokens"] for r in tail]
    assert eng.warm.cache_resets >= 3  # one before each unit, besides the warm-ups'


def test_sharing_the_cache_across_units_is_what_the_rule_prevents():
    eng = ToyEngine({"share_prefix_cache": True})
    head = execute_unit(eng, unit(*WSP, label="first")).rows
    tail = execute_unit(eng, unit(*WSP, label="last")).rows
    assert [r["completion"] for r in head] == [r["completion"] for r in tail]
    # The second unit finds the first one's prompts cached: the cost depends on the order.
    assert sum(r["computed_tokens"] for r in tail) < sum(r["computed_tokens"] for r in head)
    assert sum(r["cached_tokens"] for r in tail) > sum(r["cached_tokens"] for r in head)


def test_timing_repeats_time_the_unit_again_from_the_same_empty_cache():
    eng = ToyEngine({})
    res = execute_unit(eng, unit(*WSP, repeats=3))
    assert len(res.timing_runs) == 3 and res.repeats_agree
    assert sorted(res.timing_runs)[1] == res.gen_seconds  # the median
    for r in res.rows:
        assert r["timing_runs"] == res.timing_runs and len(r["latency_runs"]) == 3
        assert r["latency_runs"][0] == r["latency_s"]
    once = execute_unit(ToyEngine({}), unit(*WSP, repeats=1))
    assert [r["computed_tokens"] for r in once.rows] == [r["computed_tokens"] for r in res.rows]
    assert [r["completion"] for r in once.rows] == [r["completion"] for r in res.rows]


def test_the_warm_up_runs_the_units_prompts_cut_short_not_its_whole_prefill():
    from harness.engine.worker import WARMUP_PROMPT_TOKENS

    eng = ToyEngine({})
    eng.encode = lambda text, chat=False: [1 + (i * 5 + len(text)) % 40 for i in range(100)]  # 100-token prompts
    lengths: list[list[int]] = []
    step = eng.next_token

    def recording(sequences, **kw):
        lengths.append([len(s) for s in sequences])
        return step(sequences, **kw)

    eng.next_token = recording
    res = execute_unit(eng, unit(*WSP))
    assert res.warmup_seconds > 0 and eng.warm.count == 1
    assert min(lengths[0]) == WARMUP_PROMPT_TOKENS and max(lengths[0]) <= WARMUP_PROMPT_TOKENS
    warm_calls = [ls for ls in lengths if max(ls) < 100]
    assert warm_calls and all(max(ls) <= WARMUP_PROMPT_TOKENS + 4 for ls in warm_calls)  # warmup_tokens: 4
    assert any(min(ls) >= 100 for ls in lengths)  # the timed unit ran the whole prompts
    assert all(r["prompt_tokens"] == 100 for r in res.rows)
