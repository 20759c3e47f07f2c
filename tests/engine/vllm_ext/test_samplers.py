"""The in-engine sampler rules (harness.engine.vllm_ext.samplers) against the numpy
reference classes of strategies.stepwise: the same kept token set on the same logits
(random, tied, bf16-rounded and real rows), the per-request state of Mirostat v2 and
dynamic top-p followed from the request's own output tokens, and, on the real engine,
seeded reproducibility and draws that follow the reference distribution (chi-square)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from strategies import get_strategy
from strategies.base import SAMPLER_ARG
from strategies.stepwise import DynamicTopPWarper, EpsilonWarper, EtaWarper, MirostatV2, TypicalWarper

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from harness.engine.vllm_ext.samplers import SamplerProcessor  # noqa: E402

#: (rule, its processor args) for every sampler, at a few settings.
CASES = [
    ("typical", {"typical_p": 0.9}), ("typical", {"typical_p": 0.2}), ("typical", {"typical_p": 0.999}),
    ("epsilon", {"epsilon": 3e-4}), ("epsilon", {"epsilon": 0.02}),
    ("eta", {"epsilon": 3e-4}), ("eta", {"epsilon": 0.05}),
    ("mirostat", {"tau": 5.0, "eta": 0.1}), ("mirostat", {"tau": 1.0, "eta": 0.1}),
    ("dynamic_top_p", {"top_p": 0.9, "max_top_p": 0.99, "increase": 0.05, "decay": 0.02, "window": 32, "ngram": 3}),
    ("dynamic_top_p", {"top_p": 0.5, "max_top_p": 0.99, "increase": 0.05, "decay": 0.02, "window": 32, "ngram": 3}),
    ("dynamic_top_p", {"top_p": 1.0, "max_top_p": 1.0, "increase": 0.0, "decay": 0.0, "window": 32, "ngram": 3}),
]


def reference_keep(rule: str, args: dict, lp: np.ndarray, state: float | None = None) -> np.ndarray:
    """The numpy rule's kept set at the request's first step (or at ``state``)."""
    if rule == "typical":
        return TypicalWarper(args["typical_p"]).keep(lp)
    if rule == "epsilon":
        return EpsilonWarper(args["epsilon"]).keep(lp)
    if rule == "eta":
        return EtaWarper(args["epsilon"]).keep(lp)
    if rule == "mirostat":
        return MirostatV2(args["tau"], args["eta"]).keep(lp, 2 * args["tau"] if state is None else state)
    return DynamicTopPWarper.keep(lp, args["top_p"] if state is None else state)


def request(rule: str | None, args: dict | None = None):
    extra = {SAMPLER_ARG: {"rule": rule, **(args or {})}} if rule else None
    return SimpleNamespace(extra_args=extra)


def batch(added=(), removed=(), moved=()):
    return SimpleNamespace(added=list(added), removed=list(removed), moved=list(moved), batch_size=0)


def processor_masks(rule: str, args: dict, logits: torch.Tensor) -> np.ndarray:
    """Every row one new request with this rule; the kept set of each row."""
    proc = SamplerProcessor(None, torch.device("cpu"), False)
    proc.update_state(batch(added=[(i, request(rule, args), None, []) for i in range(logits.shape[0])]))
    out = proc.apply(logits.clone())
    return torch.isfinite(out).numpy()


def assert_same_sets(rule: str, args: dict, logits: torch.Tensor) -> int:
    lp32 = torch.log_softmax(logits.to(torch.float32), dim=-1).numpy()  # what both sides see: raw logprobs
    got = processor_masks(rule, args, logits)
    for i in range(logits.shape[0]):
        want = reference_keep(rule, args, lp32[i])
        assert np.array_equal(got[i], want), (rule, args, i, int(got[i].sum()), int(want.sum()),
                                              np.flatnonzero(got[i] != want)[:10])
    return int(got.sum())


def random_rows(seed: int, rows: int = 24, vocab: int = 3000) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    scales = rng.choice([0.3, 1.0, 3.0, 8.0], size=rows)
    x = rng.normal(size=(rows, vocab)) * scales[:, None]
    if rows >= 4:
        x[0, : vocab // 2] = -np.inf  # a row with banned tokens
        x[1] = np.round(x[1] * 2) / 2  # heavy ties
        x[2] = 0.0  # a flat row: every token tied
        x[3, 10] = 40.0  # one dominant token
    return torch.tensor(x, dtype=torch.float32)


@pytest.mark.parametrize("rule,args", CASES, ids=[f"{r}-{'-'.join(map(str, a.values()))}" for r, a in CASES])
def test_processor_keeps_the_reference_token_set_on_random_tied_and_bf16_rows(rule, args):
    kept = 0
    for seed in range(4):
        rows = random_rows(seed)
        kept += assert_same_sets(rule, args, rows)
        kept += assert_same_sets(rule, args, rows.to(torch.bfloat16).to(torch.float32))  # bf16 logits: many ties
    big = torch.tensor(np.random.default_rng(9).normal(size=(3, 49152)) * 2.5, dtype=torch.float32)
    kept += assert_same_sets(rule, args, big)  # SmolLM2's vocabulary size: the longer heads
    assert kept > 0


def test_rows_without_the_argument_are_untouched_and_rows_follow_moves():
    proc = SamplerProcessor(None, torch.device("cpu"), False)
    proc.update_state(batch(added=[(0, request(None), None, []), (1, request("epsilon", {"epsilon": 0.01}), None, [])]))
    logits = random_rows(3, rows=3)  # plain random rows
    out = proc.apply(logits.clone())
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])  # no arg; no request at row 2
    assert not torch.isfinite(out[1]).all()
    # swap rows 0 and 1: the masked request is now row 0
    proc.update_state(batch(moved=[(0, 1, SimpleNamespace(name="SWAP"))]))
    out = proc.apply(logits.clone())
    assert torch.equal(out[1], logits[1]) and not torch.isfinite(out[0]).all()
    proc.update_state(batch(removed=[0]))
    assert torch.equal(proc.apply(logits.clone()), logits)


def _draw(mask: np.ndarray, lp: np.ndarray, rng) -> int:
    p = np.where(mask, np.exp(lp.astype(np.float64)), 0.0)
    return int(rng.choice(lp.size, p=p / p.sum()))


def test_mirostat_mu_follows_the_requests_own_output_tokens():
    tau, eta = 3.0, 0.3
    proc = SamplerProcessor(None, torch.device("cpu"), False)
    out: list[int] = []
    proc.update_state(batch(added=[(0, request("mirostat", {"tau": tau, "eta": eta}), None, out)]))
    ref, mu, rng = MirostatV2(tau, eta), 2 * tau, np.random.default_rng(0)
    for step in range(25):
        logits = random_rows(100 + step, rows=1)
        lp = torch.log_softmax(logits, dim=-1).numpy()[0]
        got = torch.isfinite(proc.apply(logits.clone())).numpy()[0]
        want = ref.keep(lp, mu)
        assert np.array_equal(got, want), step
        tok = _draw(want, lp, rng)
        p = np.exp(lp.astype(np.float64))
        mu = ref.update(mu, p[tok] / p[want].sum())
        out.append(tok)  # vLLM appends the drawn token to the live output list
        if step == 10:  # preempted and re-added at another row: the state comes back with it
            proc.update_state(batch(removed=[0]))
            proc.update_state(batch(added=[(3, request("mirostat", {"tau": tau, "eta": eta}), None, out)]))
            proc.update_state(batch(moved=[(3, 0, SimpleNamespace(name="UNIDIRECTIONAL"))]))
    proc.apply(random_rows(999, rows=1))  # the last token's update
    assert proc.reqs[0].state == pytest.approx(mu, abs=1e-9)


def test_dynamic_top_p_threshold_follows_the_requests_own_output_tokens():
    args = {"top_p": 0.6, "max_top_p": 0.95, "increase": 0.1, "decay": 0.05, "window": 16, "ngram": 2}
    rule = DynamicTopPWarper(**args)
    proc = SamplerProcessor(None, torch.device("cpu"), False)
    out: list[int] = []
    proc.update_state(batch(added=[(0, request("dynamic_top_p", args), None, out)]))
    tokens = [5, 6, 5, 6, 5, 6, 5, 6, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12]  # repeats, then fresh tokens
    p, seen, ps = args["top_p"], [], []
    for step, tok in enumerate(tokens):
        logits = random_rows(200 + step, rows=1)
        lp = torch.log_softmax(logits, dim=-1).numpy()[0]
        p = rule.next_p(p, seen) if seen else p
        got = torch.isfinite(proc.apply(logits.clone())).numpy()[0]
        assert proc.reqs[0].state == pytest.approx(p) and np.array_equal(got, rule.keep(lp, p)), step
        out.append(tok)
        seen.append(tok)
        ps.append(p)
    assert max(ps) > args["top_p"] and ps[-1] < max(ps)  # the repeats raised it; fresh tokens let it fall


def test_an_unknown_rule_is_refused_when_the_request_arrives():
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        SamplerProcessor.validate_params(request("nope"))
    SamplerProcessor.validate_params(request(None))


# ---- on the real engine -----------------------------------------------------------------------

PROMPTS = ["Write one sentence about the sea.", "The capital of France is", "My favourite food is",
           "Once upon a time, in a small village,", "List three colours:", "The best way to learn is",
           "def add(a, b):", "Tomorrow the weather will be"]
SAMPLERS = [("typical", {"typical_p": 0.9}), ("epsilon", {"epsilon": 3e-4}), ("eta", {"epsilon": 3e-4}),
            ("mirostat", {"tau": 3.0, "eta": 0.1}), ("dynamic_top_p", {"top_p": 0.8})]


@pytest.mark.engine
def test_real_rows_keep_the_reference_token_set(engine):
    seqs = [engine.encode(t) for t in PROMPTS]
    greedy = engine.generate(seqs, [engine.sampling_params(max_tokens=4, temperature=0.0)] * len(seqs))
    seqs += [s + g.token_ids[:k] for s, g in zip(seqs, greedy) for k in (2, 4)]
    rows = torch.tensor(np.stack([r.full_logprobs for r in engine.next_token(seqs, top_k=1, full=True)]))
    for rule, args in CASES:
        assert_same_sets(rule, args, rows)
        assert_same_sets(rule, args, rows.to(torch.bfloat16).to(torch.float32))


def _generate(engine, name: str, params: dict, prompts, seeds, max_tokens: int = 12):
    strategy = get_strategy(name).from_dict(params)
    kw = strategy.sampling_kwargs()
    sps = [engine.sampling_params(max_tokens=max_tokens, seed=s, ignore_eos=True, **kw) for s in seeds]
    return strategy, [o.token_ids for o in engine.generate(prompts, sps)]


@pytest.mark.engine
@pytest.mark.parametrize("name,params", SAMPLERS)
def test_generate_is_seeded_and_every_token_is_in_the_replayed_reference_set(engine, name, params):
    assert engine.samplers_in_engine
    prompts = [engine.encode(t) for t in PROMPTS[:4]]
    strategy, a = _generate(engine, name, params, prompts, [1, 2, 3, 4])
    _, b = _generate(engine, name, params, prompts, [1, 2, 3, 4])
    _, c = _generate(engine, name, params, prompts, [11, 12, 13, 14])
    assert a == b and a != c
    # Replay each sample with the reference rule and its state: every drawn token was allowed.
    for prompt, toks in zip(prompts, a):
        state = strategy.init_state()
        steps = engine.next_token([prompt + toks[:i] for i in range(len(toks))], top_k=1, full=True)
        for i, (tok, r) in enumerate(zip(toks, steps)):
            mask, state = strategy.keep(r.full_logprobs, state, toks[:i])
            assert mask[tok], (name, i, tok)
            p = np.exp(r.full_logprobs.astype(np.float64))
            state = strategy.after(state, p[tok] / p[mask].sum())


FARM = ("Animals you can find on a farm include the cow, the pig, the sheep, the goat, the horse, the chicken, "
        "the duck, the goose, the turkey, the donkey, the llama, the rabbit, the alpaca, the cat, the dog, the mule, "
        "the ox, the quail, the pheasant, the pigeon, the bee, the")


def _open_list_prompt(engine) -> list[int]:
    """A prompt cut right after a "the" of an open list (a spread next-token distribution),
    at a length just over a whole number of KV blocks: after the first request only its
    last token or two are computed, so thousands of draws cost seconds."""
    ids = engine.encode(FARM)
    block = engine.options.block_size
    cuts = [i + 1 for i in range(len(ids)) if engine.decode([ids[i]]).strip() == "the" and (i + 1) % block in (1, 2, 3)]
    assert cuts, "no cut point in the prompt text"
    return ids[:cuts[-1]]


@pytest.mark.engine
@pytest.mark.parametrize("name,params", SAMPLERS)
def test_first_token_draws_follow_the_reference_distribution(engine, name, params):
    """4000 seeded one-token draws on one prompt against the reference rule's renormalised
    distribution (chi-square, bins of expected count >= 5, the rest pooled). The same counts
    reject a distribution with 5% of the mass moved between the two likeliest tokens."""
    from scipy.stats import chisquare

    n = 4000
    prompt = _open_list_prompt(engine)
    lp = engine.next_token([prompt], top_k=1, full=True)[0].full_logprobs  # also caches the prompt's blocks
    strategy, draws = _generate(engine, name, params, [prompt] * n, range(n), max_tokens=1)
    mask, _ = strategy.keep(lp, strategy.init_state(), [])
    q = np.where(mask, np.exp(lp.astype(np.float64)), 0.0)
    q /= q.sum()
    counts = np.bincount([d[0] for d in draws], minlength=q.size)
    assert counts[~mask].sum() == 0  # nothing outside the kept set
    big = np.flatnonzero(q * n >= 5)
    big = big[np.argsort(-q[big])]
    rest = np.setdiff1d(np.flatnonzero(mask), big)

    def binned(v):
        return np.r_[v[big], v[rest].sum()] if rest.size else v[big]

    obs, exp = binned(counts.astype(float)), binned(q * n)
    assert len(big) >= 2, "the prompt's kept set is too narrow for a distribution test"
    p_value = chisquare(obs, exp).pvalue
    assert p_value > 1e-3, (name, p_value, obs[:8], exp[:8].round(1))
    shifted = q.copy()
    moved = min(0.05, shifted[big[0]])
    shifted[big[0]] -= moved
    shifted[big[1]] += moved
    assert chisquare(obs, binned(shifted * n)).pvalue < 1e-3, "too few draws to see a 5% shift"
    assert math.isclose(exp.sum(), n)


@pytest.mark.engine
def test_native_requests_in_the_same_batch_are_unaffected(engine):
    prompts = [engine.encode(t) for t in PROMPTS[:4]]
    native = [engine.sampling_params(max_tokens=12, seed=7, temperature=1.0, top_p=0.9, ignore_eos=True)] * 4
    alone = [o.token_ids for o in engine.generate(prompts, native)]
    kw = get_strategy("mirostat").from_dict({"tau": 1.0}).sampling_kwargs()  # a tight mask on its rows
    mixed = engine.generate(prompts * 2, native + [engine.sampling_params(max_tokens=12, seed=s, ignore_eos=True, **kw)
                                                   for s in range(4)])
    assert [o.token_ids for o in mixed[:4]] == alone
