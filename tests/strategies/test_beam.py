"""Beam search on the toy engine (no vLLM): vLLM's scoring, EOS and length-penalty rules,
by hand, and width 1 = greedy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import ParamError
from strategies.base import Stops
from strategies.beam import Beam, BeamParams, BeamSearch, beam_search, score
from tests.fakes.toy_engine import EOS, ToyEngine, random_engine


def table_engine(table: dict[tuple[int, ...], dict[int, float]], vocab: int = 400):
    """Next-token probabilities by the generated suffix after prompt (7,); the rest of the
    mass spread thinly."""
    def fn(seq):
        head = table.get(tuple(seq[1:]), {})
        probs = np.full(vocab, (1.0 - sum(head.values())) / (vocab - len(head)))
        for t, q in head.items():
            probs[t] = q
        return np.log(probs)
    return ToyEngine(fn, vocab=vocab)


def test_width_two_finds_what_greedy_misses():
    # greedy takes 1 (0.5) then 0.3 at best; the 0.4 branch continues with 0.9
    eng = table_engine({(): {1: 0.5, 2: 0.4}, (1,): {3: 0.3, 4: 0.3}, (2,): {5: 0.9}})
    one = beam_search(eng, [[7]], width=1, max_tokens=2)[0]
    two = beam_search(eng, [[7]], width=2, max_tokens=2)[0]
    assert one.beams[0].tokens == [7, 1, 3]
    assert two.beams[0].tokens == [7, 2, 5] and two.beams[0].cum_logprob == pytest.approx(math.log(0.4 * 0.9))
    assert len(two.beams) == 2 and two.engine_requests == 1 + 2  # one request per live beam per step


def test_an_eos_candidate_is_completed_and_scored_without_its_eos():
    eng = table_engine({(): {EOS: 0.6, 1: 0.3}, (1,): {2: 0.9}})
    res = beam_search(eng, [[7]], width=1, max_tokens=3, eos=frozenset({EOS}))[0]
    # the EOS beam [7, EOS] scores log 0.6 / 1; the live beam goes on alone
    assert res.beams[0].tokens == [7, EOS]
    b = Beam([7, 1, 2], math.log(0.27))
    assert score(b, frozenset({EOS}), 1.0) == pytest.approx(math.log(0.27) / 3)
    assert score(Beam([7, EOS], -1.0), frozenset({EOS}), 2.0) == pytest.approx(-1.0)  # the prompt counts, EOS not
    assert score(Beam([7, 1], -1.0), frozenset({EOS}), 0.0) == -1.0


def test_width_one_is_greedy_and_the_strategy_fills_rows():
    eng = random_engine(3)
    rows = [{"seed": 0, "prompt_id": "a"}, {"seed": 0, "prompt_id": "b"}]
    BeamSearch(BeamParams(width=1)).run_unit(eng, [(rows[0], [1, 2]), (rows[1], [3])], Stops(6, eng.eos_token_ids))
    for row, prompt in zip(rows, ([1, 2], [3])):
        seq = list(prompt)
        while len(seq) - len(prompt) < 6:
            nxt = int(np.argmax(eng.fn(tuple(seq))))
            seq.append(nxt)
            if nxt in eng.eos_token_ids:
                break
        assert row["completion"] == eng.decode(seq[len(prompt):])
        assert row["engine_requests"] == row["completion_tokens"]


def test_params_validation():
    with pytest.raises(ParamError, match="impl must be one of 'cached', 'vllm', got 'hf'"):
        BeamParams(impl="hf")
    with pytest.raises(ParamError, match="width"):
        BeamParams(width=0)
