"""Stepwise strategies on the real vLLM engine (slow: ``-m engine``).

On the session's one float32 engine (conftest ``engine``): exactness needs float32 on both
sides.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.config import load_config
from harness.engine.stepdriver import CANDIDATE_TOKENS, run_stepwise, waves
from harness.engine.worker import execute_unit
from harness.plan import make_plan, row_columns
from harness.tasks import load_prompt_set
from harness.report import write_unit
from harness.rows import sample_schema
from strategies import get_strategy
from strategies.base import Stops
from strategies.beam import BeamParams, BeamSearch, beam_search
from strategies.stepwise import draw
from strategies.wsp import WSP, WSPParams

pytestmark = pytest.mark.engine

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "def fibonacci(n):",
    "The best way to learn a new language is",
]
MAX_TOKENS = 16


# ---- WSP == a plain transformers float32 implementation of DESIGN.md -----------------------------


def reference_wsp(model, prompt_ids, *, max_tokens, top_p, k, w, eos):
    """DESIGN.md's algorithm, written out plainly with transformers in float32 (with its
    KV cache: the prefix is computed once, each lookahead branch adds one token to a copy)."""
    import copy

    import torch

    def dist(ids, cache):
        with torch.no_grad():
            out = model(torch.tensor(ids), past_key_values=cache, use_cache=True)
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).double().numpy(), out.past_key_values

    def nucleus(lp):  # sort by q descending, ties lower id; shortest head reaching top_p
        order = np.lexsort((np.arange(lp.size), -lp))
        c = np.cumsum(np.exp(lp[order]))
        return order, int(np.searchsorted(c, top_p, side="left")) + 1

    lps, cache = dist([list(prompt_ids)], None)
    q = lps[0]
    out = []
    for _ in range(max_tokens):
        order, n_q = nucleus(q)
        cands = [int(t) for t in order[:min(n_q, k)]]
        look = [c for c in cands if c not in eos]
        ns = {c: 1 for c in cands}
        if look:
            branch = copy.deepcopy(cache)
            branch.batch_repeat_interleave(len(look))
            for c, lp in zip(look, dist([[c] for c in look], branch)[0]):
                ns[c] = nucleus(lp)[1]
        best = max(cands, key=lambda c: (w * q[c] - math.log(ns[c]), q[c], -c))
        out.append(best)
        if best in eos:
            break
        lps, cache = dist([[best]], cache)
        q = lps[0]
    return out


def test_wsp_matches_transformers_reference(engine, smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM


    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    prompts = [engine.encode(t) for t in PROMPTS]
    unit = SimpleNamespace(stop=(), strategy=SimpleNamespace(max_tokens=MAX_TOKENS))
    rows = [{"seed": i, "prompt_id": str(i)} for i in range(len(prompts))]
    run_stepwise(engine, unit, WSP(WSPParams()), list(zip(rows, prompts)))
    checked = 0
    for row, ids in zip(rows, prompts):
        assert row.get("error") is None, row.get("error")
        got = [s["token_id"] for s in row["steps"]]
        want = reference_wsp(model, ids, max_tokens=MAX_TOKENS, top_p=0.9, k=8, w=1.0,
                             eos=engine.eos_token_ids)
        assert got == want, (PROMPTS[rows.index(row)], got, want)
        checked += len(got)
        assert row["completion"] == engine.decode(got)
    assert checked >= 5 * 8  # at least 5 prompts; most run the full 16 tokens


def test_wsp_engine_cost_accounting(engine):
    assert engine.tail_cache_slots > 0  # on by default on the CPU
    # Prompts longer than one 32-token block, so the prefix cache has full blocks to reuse.
    long = " Answer in one short sentence, please, and keep it plain and simple for a child to read."
    prompts = [engine.encode(t + long * 2) for t in PROMPTS[:3]]
    assert all(len(p) > 40 for p in prompts)

    def decode(tail: bool):
        engine.use_tail_cache = tail
        try:
            return WSP(WSPParams(max_candidates=4)).decode(engine, prompts, seeds=[0, 1, 2], stops=Stops(12))
        finally:
            engine.use_tail_cache = True

    plain, tail = decode(False), decode(True)
    for d, p in zip(tail, prompts):
        cands = sum(s["candidates"] for s in d.steps)
        assert d.engine_requests == 1 + cands  # one per candidate per step, plus the first q
        # Nothing recomputed: the first request computes (at most) the prompt, every lookahead
        # request exactly its one new token; the rest comes from the prefix and tail caches.
        first = d.computed_tokens - cands
        assert 1 <= first <= len(p)
        assert d.cached_tokens > 0
    for d, p in zip(plain, prompts):
        # Without the tail cache each lookahead request recomputes the partial last block.
        cands = sum(s["candidates"] for s in d.steps)
        assert d.computed_tokens > len(p) + 4 * cands
    # The same choices, step by step, with and without the tail cache.
    for a, b in zip(plain, tail):
        assert a.token_ids == b.token_ids
        assert [(s["candidates"], s["n_chosen"], s["n_min"], s["n_max"]) for s in a.steps] == \
            [(s["candidates"], s["n_chosen"], s["n_min"], s["n_max"]) for s in b.steps]
        assert [s["logprob"] for s in a.steps] == pytest.approx([s["logprob"] for s in b.steps], abs=1e-4)


def test_next_token_matches_vllm_top_logprobs(engine):
    from vllm import SamplingParams
    ids = engine.encode(PROMPTS[0])
    r = engine.next_token([ids], top_k=5, nucleus_p=0.9, full=True)[0]
    out = engine.llm.generate([{"prompt_token_ids": ids}],
                                  SamplingParams(max_tokens=1, temperature=0.0, logprobs=5, detokenize=False),
                                  use_tqdm=False)[0]
    ref = out.outputs[0].logprobs[0]
    assert r.token_ids[0] == out.outputs[0].token_ids[0]
    for t, lp in zip(r.token_ids, r.logprobs):
        assert ref[t].logprob == pytest.approx(lp, abs=1e-5)
    assert np.exp(r.full_logprobs.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-3)
    assert 1 <= r.nucleus_size <= engine.vocab_size


# ---- samplers == direct computations on the same distributions -----------------------------------


class Recorder:
    """Wraps the engine; remembers each full distribution the strategy was given."""

    def __init__(self, engine):
        self.engine = engine
        self.vocab_size = engine.vocab_size
        self.eos_token_ids = engine.eos_token_ids
        self.seen: dict[tuple[int, ...], np.ndarray] = {}

    def next_token(self, sequences, **kw):
        res = self.engine.next_token(sequences, **kw)
        for s, r in zip(sequences, res):
            self.seen[tuple(s)] = r.full_logprobs
        return res

    def decode(self, ids):
        return self.engine.decode(ids)


def _hf_mask(warper, lp):
    import torch
    out = warper(torch.zeros((1, 1), dtype=torch.long), torch.tensor(lp, dtype=torch.float32)[None])
    return torch.isfinite(out[0]).numpy()


def _replay(name, lp, rng, mu, p):
    """Direct computation of one step: the rule's kept set from transformers' warpers (or
    llama.cpp's Mirostat v2 written out), then the same inverse-CDF draw."""
    import transformers as tr

    pr = np.exp(lp.astype(np.float64))
    if name == "typical":
        mask = _hf_mask(tr.TypicalLogitsWarper(mass=p["typical_p"]), lp)
    elif name == "epsilon":
        mask = _hf_mask(tr.EpsilonLogitsWarper(epsilon=p["epsilon"]), lp)
    elif name == "eta":
        mask = _hf_mask(tr.EtaLogitsWarper(epsilon=p["epsilon"]), lp)
    else:  # mirostat v2: surprise -log2 p <= mu, at least the top token
        mask = -np.log2(pr) <= mu
        mask[np.argmax(pr)] = True
    idx = np.flatnonzero(mask)
    idx = idx[np.lexsort((idx, -pr[idx]))]
    tok = draw(idx, pr[idx], rng)
    if name == "mirostat":
        mu -= p["eta"] * (-math.log2(pr[tok] / pr[idx].sum()) - p["tau"])
    return tok, mu


@pytest.mark.parametrize("name,params", [("typical", {"typical_p": 0.9}), ("epsilon", {"epsilon": 3e-4}),
                                         ("eta", {"epsilon": 3e-4}), ("mirostat", {"tau": 3.0, "eta": 0.1})])
def test_sampler_matches_direct_computation(engine, name, params):

    rec = Recorder(engine)
    prompts = [engine.encode(t) for t in PROMPTS[:3]]
    rows = [{"seed": 100 + i, "prompt_id": str(i)} for i in range(3)]
    unit = SimpleNamespace(stop=(), strategy=SimpleNamespace(max_tokens=12))
    run_stepwise(rec, unit, get_strategy(name).from_dict(params), list(zip(rows, prompts)))
    for row, ids in zip(rows, prompts):
        assert row.get("error") is None
        rng = np.random.default_rng(row["seed"])
        mu = 2 * params.get("tau", 0.0)
        seq = list(ids)
        for step in row["steps"]:
            tok, mu = _replay(name, rec.seen[tuple(seq)], rng, mu, params)
            assert step["token_id"] == tok
            seq.append(tok)


def test_cached_beam_search_returns_vllms_beams_token_for_token(engine):
    """float32, 8 prompts x 32 tokens, widths 2 and 4: every returned beam of the cached
    search equals LLM.beam_search's, token for token, best first; the cumulative logprobs
    agree to float32 round-off."""
    assert engine.eos_token_ids == {engine.tokenizer.eos_token_id}  # vLLM's beam search stops on this one id
    texts = PROMPTS + ["Explain what a rainbow is.", "Give me a tip for cooking rice.", "Name two planets."]
    prompts = [engine.encode(t, chat=True) for t in texts[:8]]
    for width in (2, 4):
        ours = beam_search(engine, prompts, width=width, max_tokens=32, eos=engine.eos_token_ids)
        theirs = engine.beam_search(prompts, beam_width=width, max_tokens=32)
        for p, o, v in zip(prompts, ours, theirs):
            assert [b.tokens[len(p):] for b in o.beams] == [b["token_ids"] for b in v["beams"]], (width, p)
            assert [b.cum_logprob for b in o.beams] == pytest.approx([b["cum_logprob"] for b in v["beams"]], abs=1e-3)
        assert sum(len(b.tokens) - len(p) for p, o in zip(prompts, ours) for b in o.beams[:1]) >= 8 * 8


# ---- beam search, the config and the report --------------------------------------------------------


@pytest.mark.parametrize("impl", ["cached", "vllm"])
def test_beam_search_through_the_step_driver(engine, impl):
    prompts = [engine.encode(t) for t in PROMPTS[:2]]
    rows = [{"seed": 0, "prompt_id": "a"}, {"seed": 0, "prompt_id": "b"}]
    unit = SimpleNamespace(stop=(), strategy=SimpleNamespace(max_tokens=8))
    run_stepwise(engine, unit, BeamSearch(BeamParams(width=2, impl=impl)), list(zip(rows, prompts)))
    for r in rows:
        assert r["completion_tokens"] >= 1 and r["finish_reason"] in ("eos", "length") and r["completion"]
        if impl == "cached":  # one request per live beam per step, each computing about one token
            assert r["engine_requests"] >= r["completion_tokens"] and r["computed_tokens"] <= 4 * r["engine_requests"]
    # width 1 is greedy
    rows1 = [{"seed": 0, "prompt_id": "a"}]
    run_stepwise(engine, unit, BeamSearch(BeamParams(width=1, impl=impl)), [(rows1[0], prompts[0])])
    greedy = engine.generate([prompts[0]], [engine.sampling_params(max_tokens=8, temperature=0.0)])[0]
    assert rows1[0]["completion"].strip() == greedy.text.strip()


def test_config_runs_every_strategy_and_writes_report(engine, tmp_path):
    """Every strategy of configs/strategies.yaml, one small unit each, through the worker
    and the Parquet writer (no Ray: execute_unit is what the actor calls)."""



    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "strategies.yaml")
    names = {s.name for s in cfg.strategies}
    assert {"greedy", "top_p", "beam", "typical", "eta", "epsilon", "mirostat", "dynamic_top_p", "wsp"} <= names
    units = make_plan(cfg, [load_prompt_set(p) for p in cfg.prompt_sets])
    seen = set()
    for unit in units:
        if unit.strategy.label in seen:
            continue
        seen.add(unit.strategy.label)
        small = replace(unit, prompts=unit.prompts[:2], strategy=replace(unit.strategy, max_tokens=6))
        res = execute_unit(engine, small)
        for r in res.rows:
            assert r["error"] is None, r["error"]
            assert r["completion_tokens"] >= 1
        path = write_unit(tmp_path, small.relpath, res.rows, sample_schema([], *row_columns(cfg)), {"unit_id": small.id})
        t = pq.read_table(path)
        if unit.strategy.name == "wsp":
            assert t.column("steps").to_pylist()[0][0]["candidates"] >= 1
            assert t.column("mean_log_possibilities").null_count == 0
            for req, n in zip(t.column("engine_requests").to_pylist(), t.column("completion_tokens").to_pylist()):
                assert req >= 1 + n  # the first q, then at least one lookahead per step


class SmallCache:
    """The session's engine, but telling the step driver its KV cache holds ``tokens``."""

    def __init__(self, engine, tokens: int) -> None:
        self._engine, self.kv_capacity_tokens = engine, tokens
        self.calls: list[int] = []

    def next_token(self, sequences, **kw):
        self.calls.append(len(sequences))
        return self._engine.next_token(sequences, **kw)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def test_a_unit_larger_than_the_kv_cache_runs_in_waves_with_the_same_tokens(engine):
    """The real engine reports its cache; a unit that would not fit is decoded in waves, and
    in float32 every prompt gets the tokens it gets in one batch."""
    capacity = engine.kv_capacity_tokens
    assert isinstance(capacity, int) and capacity >= engine.options.max_model_len
    prompts = [engine.encode(t) for t in PROMPTS]
    unit = SimpleNamespace(stop=(), strategy=SimpleNamespace(max_tokens=MAX_TOKENS))

    def run(eng):
        rows = [{"seed": i, "prompt_id": str(i)} for i in range(len(prompts))]
        run_stepwise(eng, unit, WSP(WSPParams(max_candidates=4)), list(zip(rows, prompts)))
        assert all(r.get("error") is None for r in rows)
        return rows

    tokens = 2 * (max(map(len, prompts)) + MAX_TOKENS + 4 * CANDIDATE_TOKENS)
    cut = waves([len(p) for p in prompts], MAX_TOKENS, 4, tokens)
    assert len(cut) > 2
    small = SmallCache(engine, tokens)
    whole, waved = run(SmallCache(engine, capacity)), run(small)
    assert small.calls[0] == cut[0][1] - cut[0][0] < len(prompts)
    assert [r["completion"] for r in whole] == [r["completion"] for r in waved]
    assert [[s["token_id"] for s in r["steps"]] for r in whole] == [[s["token_id"] for s in r["steps"]] for r in waved]
